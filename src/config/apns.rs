//! `[push.apns]`: Apple Push Notification service, by token (`.p8` key) or by
//! certificate.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fields::{self, http_url};
use super::ConfigError;

/// `[push.apns]` section. As written every key is there (`None` written `""`); the
/// validated [`PushSettings::apns`](super::PushSettings::apns) is `None` unless a key
/// file or certificate is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApnsSettings {
    /// Token auth: the `.p8` signing key file.
    #[serde(with = "fields::opt")]
    pub key_file: Option<PathBuf>,
    /// Token auth: the key id (`kid`).
    #[serde(with = "fields::opt")]
    pub key_id: Option<String>,
    /// Token auth: the team id (`iss`).
    #[serde(with = "fields::opt")]
    pub team_id: Option<String>,
    /// Certificate auth: PEM file with certificate and key.
    #[serde(with = "fields::opt")]
    pub cert_file: Option<PathBuf>,
    /// Bundle id used for bare tokens (topic is `<bundle>.voip`).
    #[serde(with = "fields::opt")]
    pub bundle_id: Option<String>,
    /// Bare tokens go to the sandbox environment.
    pub sandbox: bool,
    /// Production base URL (a stand-in in tests and staging).
    pub production_url: String,
    /// Sandbox base URL.
    pub sandbox_url: String,
    /// Extra CA certificate (PEM) to trust, for stand-ins.
    #[serde(with = "fields::opt")]
    pub ca_file: Option<PathBuf>,
    /// JSON file reshaping the VoIP payload; `None`: the Siprix-compatible default.
    #[serde(with = "fields::opt")]
    pub payload_template: Option<PathBuf>,
}

/// `[push.apns]` as written.
pub type RawApns = ApnsSettings;

impl Default for ApnsSettings {
    fn default() -> Self {
        Self {
            key_file: None,
            key_id: None,
            team_id: None,
            cert_file: None,
            bundle_id: None,
            sandbox: false,
            production_url: "https://api.push.apple.com".to_owned(),
            sandbox_url: "https://api.sandbox.push.apple.com".to_owned(),
            ca_file: None,
            payload_template: None,
        }
    }
}

impl ApnsSettings {
    /// The section validated: `None` when APNs is not configured.
    pub(super) fn validate(mut self) -> Result<Option<ApnsSettings>, ConfigError> {
        self.production_url = http_url("push.apns.production_url", &self.production_url, true)?;
        self.sandbox_url = http_url("push.apns.sandbox_url", &self.sandbox_url, true)?;
        if let Some(b) = &self.bundle_id {
            if b.ends_with(".voip") || b.contains(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    "push.apns.bundle_id",
                    b,
                    "give the bundle id without .voip (the VoIP topic is <bundle_id>.voip)",
                ));
            }
        }
        let ids = [
            ("push.apns.key_id", &self.key_id),
            ("push.apns.team_id", &self.team_id),
        ];
        match (&self.key_file, &self.cert_file) {
            (Some(_), Some(cert)) => {
                return Err(ConfigError::invalid(
                    "push.apns.cert_file",
                    cert.display().to_string(),
                    "set either key_file (token auth) or cert_file (certificate auth), not both",
                ))
            }
            (None, None) => {
                if let Some((key, Some(v))) = ids.iter().find(|(_, v)| v.is_some()) {
                    return Err(ConfigError::invalid(
                        key,
                        v.as_str(),
                        "token auth needs push.apns.key_file too",
                    ));
                }
                // APNs is not configured.
                return Ok(None);
            }
            (Some(_), None) => {
                for (key, v) in ids {
                    match v {
                        None => {
                            return Err(ConfigError::invalid(
                                key,
                                "",
                                "token auth (push.apns.key_file) needs push.apns.key_id and push.apns.team_id",
                            ))
                        }
                        Some(v) if !v.bytes().all(|c| c.is_ascii_alphanumeric()) => {
                            return Err(ConfigError::invalid(key, v, "expected letters and digits"))
                        }
                        Some(_) => {}
                    }
                }
            }
            (None, Some(_)) => {}
        }
        Ok(Some(self))
    }
}
