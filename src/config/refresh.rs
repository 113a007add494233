//! `[push.refresh]`: before a sleeping push binding runs out (its SIP expiry plus
//! `push.binding_ttl_secs`), ask the app by a background push to register again —
//! whether, how long before, and how many such pushes per second at most.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields::{self, in_range};
use super::ConfigError;

/// `[push.refresh]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefreshSettings {
    /// Send refresh pushes.
    pub enabled: bool,
    /// How long before a push binding runs out it gets its refresh push; written in
    /// seconds.
    #[serde(rename = "before_secs", with = "fields::secs")]
    pub before: Duration,
    /// Most refresh pushes per second (Apple throttles background pushes).
    pub max_per_second: u32,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            enabled: true,
            before: Duration::from_secs(86_400),
            max_per_second: 10,
        }
    }
}

impl RefreshSettings {
    /// Checks the ranges.
    pub(super) fn validate(self) -> Result<RefreshSettings, ConfigError> {
        in_range(
            "push.refresh.before_secs",
            self.before.as_secs(),
            1,
            365 * 86_400,
            "seconds",
        )?;
        in_range(
            "push.refresh.max_per_second",
            self.max_per_second.into(),
            1,
            10_000,
            "pushes",
        )?;
        Ok(self)
    }
}
