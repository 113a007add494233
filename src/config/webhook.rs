//! `[push.webhook]`: pushes as JSON documents POSTed to a URL of the operator's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields::{self, http_url, in_range};
use super::ConfigError;

/// `[push.webhook]` section, validated: present when a URL is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where the JSON documents are POSTed.
    pub url: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// `[push.webhook]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWebhook {
    /// URL; empty: no webhook.
    pub url: String,
    /// Written in milliseconds.
    #[serde(rename = "timeout_ms", with = "fields::millis")]
    pub timeout: Duration,
}

impl Default for RawWebhook {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

impl RawWebhook {
    /// The section validated: `None` when no URL is set.
    pub(super) fn validate(self) -> Result<Option<WebhookSettings>, ConfigError> {
        in_range(
            "push.webhook.timeout_ms",
            u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            1,
            60_000,
            "milliseconds",
        )?;
        if self.url.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(WebhookSettings {
            url: http_url("push.webhook.url", &self.url, false)?,
            timeout: self.timeout,
        }))
    }
}
