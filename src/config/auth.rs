//! `[auth]`: digest authentication of phones in local registrar mode.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::fields::{self, in_range, Parse};
use super::{ConfigError, ProxySettings, RegistrarMode, SipSettings};

/// A digest algorithm (RFC 7616 / RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `SHA-256`.
    Sha256,
    /// `MD5`, for the many phones that know nothing else.
    Md5,
}

/// `[auth]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Digest authentication of phones is on (local registrar mode only).
    pub enabled: bool,
    /// The users file (HA1 hashes); always set when `enabled`.
    #[serde(with = "fields::opt")]
    pub users_file: Option<PathBuf>,
    /// The realm. As written, `""` means derived; validated, it is resolved:
    /// `auth.realm`, else the first of `proxy.domains`, else `sip.advertised_host`, else
    /// `sipwake`.
    #[serde(deserialize_with = "fields::one")]
    pub realm: String,
    /// How long a nonce is accepted; afterwards `stale=true`.
    #[serde(rename = "nonce_ttl_secs", with = "fields::secs")]
    pub nonce_ttl: Duration,
    /// Algorithms offered, in order (one challenge header each).
    #[serde(deserialize_with = "fields::list")]
    pub algorithms: Vec<DigestAlgorithm>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            users_file: None,
            realm: String::new(),
            nonce_ttl: Duration::from_secs(300),
            // one challenge: many phones answer only the first (README, Authentication)
            algorithms: vec![DigestAlgorithm::Md5],
        }
    }
}

impl AuthSettings {
    pub(super) fn validate(
        mut self,
        sip: &SipSettings,
        proxy: &ProxySettings,
        mode: RegistrarMode,
    ) -> Result<Self, ConfigError> {
        if self.enabled && self.users_file.is_none() {
            return Err(ConfigError::invalid(
                "auth.users_file",
                "",
                "auth.enabled needs a users file (HA1 hashes; see sipwake --hash-user)",
            ));
        }
        if self.enabled && mode == RegistrarMode::Relay {
            return Err(ConfigError::invalid(
                "auth.enabled",
                "true",
                "in relay mode the upstream registrar authenticates; sipwake stays transparent",
            ));
        }
        // quoted in challenges and a field of the users file
        let bad = |c: char| c == '"' || c == '\\' || c == ':' || c.is_control();
        if self.realm.chars().any(bad) {
            return Err(ConfigError::invalid(
                "auth.realm",
                self.realm,
                "must not contain quotes, backslashes, colons or control characters",
            ));
        }
        if self.realm.is_empty() {
            self.realm = proxy
                .domains
                .first()
                .cloned()
                .or_else(|| sip.advertised_host.clone())
                .unwrap_or_else(|| "sipwake".to_owned());
        }
        in_range(
            "auth.nonce_ttl_secs",
            self.nonce_ttl.as_secs(),
            1,
            86_400,
            "seconds",
        )?;
        for (i, a) in self.algorithms.iter().enumerate() {
            if self.algorithms[..i].contains(a) {
                return Err(ConfigError::invalid(
                    "auth.algorithms",
                    a.as_str(),
                    "listed twice",
                ));
            }
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::invalid(
                "auth.algorithms",
                "",
                "at least one of SHA-256, MD5 is needed",
            ));
        }
        Ok(self)
    }
}

impl DigestAlgorithm {
    /// The name as written in `algorithm=` (`SHA-256`, `MD5`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA-256",
            Self::Md5 => "MD5",
        }
    }

    /// Parses an `algorithm=` value, case-insensitively; `-sess` variants are not
    /// supported.
    pub fn parse(s: &str) -> Option<DigestAlgorithm> {
        if s.eq_ignore_ascii_case("SHA-256") {
            Some(Self::Sha256)
        } else if s.eq_ignore_ascii_case("MD5") {
            Some(Self::Md5)
        } else {
            None
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Parse for DigestAlgorithm {
    fn parse_value(s: &str) -> Result<Self, String> {
        DigestAlgorithm::parse(s).ok_or_else(|| "expected SHA-256 or MD5".to_owned())
    }
}

impl Serialize for DigestAlgorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DigestAlgorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fields::one(d)
    }
}
