//! `[push.fcm]`: Firebase Cloud Messaging (HTTP v1 API, service-account OAuth).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fields::{self, http_url};
use super::ConfigError;

/// `[push.fcm]` section, validated: present when a service account is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmSettings {
    /// Service-account JSON file.
    pub service_account_file: PathBuf,
    /// Project id (default: from the service account).
    pub project_id: Option<String>,
    /// FCM API base URL.
    pub base_url: String,
    /// OAuth token endpoint (default: from the service account).
    pub token_uri: Option<String>,
    /// Extra CA certificate (PEM) to trust, for stand-ins.
    pub ca_file: Option<PathBuf>,
}

/// `[push.fcm]` as written (`None` written `""`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFcm {
    /// Service-account JSON file; setting it turns FCM on.
    #[serde(with = "fields::opt")]
    pub service_account_file: Option<PathBuf>,
    /// Project id; `None`: from the service account.
    #[serde(with = "fields::opt")]
    pub project_id: Option<String>,
    /// API base URL.
    pub base_url: String,
    /// OAuth token endpoint; `None`: from the service account.
    #[serde(with = "fields::opt")]
    pub token_uri: Option<String>,
    /// Extra CA (PEM).
    #[serde(with = "fields::opt")]
    pub ca_file: Option<PathBuf>,
}

impl Default for RawFcm {
    fn default() -> Self {
        Self {
            service_account_file: None,
            project_id: None,
            base_url: "https://fcm.googleapis.com".to_owned(),
            token_uri: None,
            ca_file: None,
        }
    }
}

impl RawFcm {
    /// The section validated: `None` when FCM is not configured.
    pub(super) fn validate(self) -> Result<Option<FcmSettings>, ConfigError> {
        let base_url = http_url("push.fcm.base_url", &self.base_url, true)?;
        let token_uri = match &self.token_uri {
            Some(t) => Some(http_url("push.fcm.token_uri", t, false)?),
            None => None,
        };
        Ok(self.service_account_file.map(|file| FcmSettings {
            service_account_file: file,
            project_id: self.project_id,
            base_url,
            token_uri,
            ca_file: self.ca_file,
        }))
    }
}
