//! `[tls]`: SIP over TLS listeners and their certificate (RFC 3261 §26).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fields;
use super::{ConfigError, SipSettings};

/// `[tls]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// TLS listen addresses; empty: no TLS listener.
    #[serde(deserialize_with = "fields::list")]
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain, leaf first; set whenever `listen` is not empty.
    #[serde(with = "fields::opt")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate; set whenever `listen` is not empty.
    #[serde(with = "fields::opt")]
    pub key_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for outgoing TLS connections (the
    /// upstream, `sips:` next hops) besides the built-in web roots.
    #[serde(with = "fields::opt")]
    pub ca_file: Option<PathBuf>,
}

impl TlsSettings {
    pub(super) fn validate(self, sip: &SipSettings) -> Result<Self, ConfigError> {
        fields::no_repeats("tls.listen", &self.listen)?;
        for addr in &self.listen {
            if sip.tcp && addr.port() != 0 && sip.listen.contains(addr) {
                return Err(ConfigError::invalid(
                    "tls.listen",
                    addr.to_string(),
                    "already a TCP listener in sip.listen; TLS needs its own port (usually 5061)",
                ));
            }
        }
        let needed = !self.listen.is_empty() || self.cert_file.is_some() || self.key_file.is_some();
        if needed && self.cert_file.is_none() {
            return Err(ConfigError::invalid(
                "tls.cert_file",
                "",
                "required with tls.listen and tls.key_file (PEM certificate chain)",
            ));
        }
        if needed && self.key_file.is_none() {
            return Err(ConfigError::invalid(
                "tls.key_file",
                "",
                "required with tls.listen and tls.cert_file (PEM private key)",
            ));
        }
        Ok(self)
    }
}
