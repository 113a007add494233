//! `[server]`: graceful shutdown and dialog tracking.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields::{self, in_range};
use super::ConfigError;

/// `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// On SIGTERM, how long calls in progress may go on before sipwake stops anyway.
    #[serde(rename = "drain_timeout_secs", with = "fields::secs")]
    pub drain_timeout: Duration,
    /// A dialog whose BYE sipwake never saw is forgotten after this long.
    #[serde(rename = "dialog_max_age_secs", with = "fields::secs")]
    pub dialog_max_age: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            dialog_max_age: Duration::from_secs(14_400),
        }
    }
}

impl ServerSettings {
    pub(super) fn validate(self) -> Result<Self, ConfigError> {
        in_range(
            "server.drain_timeout_secs",
            self.drain_timeout.as_secs(),
            0,
            86_400,
            "seconds",
        )?;
        in_range(
            "server.dialog_max_age_secs",
            self.dialog_max_age.as_secs(),
            60,
            30 * 86_400,
            "seconds",
        )?;
        Ok(self)
    }
}
