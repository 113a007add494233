//! `[push.webhook]`: pushes as JSON documents POSTed to a URL of the operator's, which
//! may also be the operator's push gateway for APNs and FCM tokens (`providers`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields::{self, http_url, in_range, keyword_parse};
use super::ConfigError;

/// A provider `push.webhook.providers` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayProvider {
    /// APNs tokens go to the webhook.
    Apns,
    /// FCM tokens go to the webhook.
    Fcm,
    /// Both.
    All,
}
keyword_parse!(GatewayProvider);

/// `[push.webhook]` section, validated: present when a URL is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where the JSON documents are POSTed.
    pub url: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// APNs tokens are pushed through the webhook (the operator's push gateway), not
    /// by sipwake's own APNs client.
    pub gateway_apns: bool,
    /// FCM tokens are pushed through the webhook.
    pub gateway_fcm: bool,
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
    /// Providers whose tokens go to the webhook: `apns`, `fcm`, `all`.
    #[serde(deserialize_with = "fields::list")]
    pub providers: Vec<GatewayProvider>,
}

impl Default for RawWebhook {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout: Duration::from_secs(2),
            providers: Vec::new(),
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
        let has = |p| self.providers.contains(&p) || self.providers.contains(&GatewayProvider::All);
        let (gateway_apns, gateway_fcm) = (has(GatewayProvider::Apns), has(GatewayProvider::Fcm));
        if self.url.trim().is_empty() {
            if gateway_apns || gateway_fcm {
                return Err(ConfigError::invalid(
                    "push.webhook.providers",
                    format!("{:?}", self.providers).to_ascii_lowercase(),
                    "providers go to the webhook only when push.webhook.url is set",
                ));
            }
            return Ok(None);
        }
        Ok(Some(WebhookSettings {
            url: http_url("push.webhook.url", &self.url, false)?,
            timeout: self.timeout,
            gateway_apns,
            gateway_fcm,
        }))
    }
}
