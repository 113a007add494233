//! `[relay]`: relaying registrations to the upstream (`registrar.mode = "relay"`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields::{self, in_range};
use super::ConfigError;

/// `[relay]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Expiry asked of the upstream registrar for relayed registrations, seconds.
    pub upstream_expires: u32,
    /// A refresh that changes nothing is answered by sipwake itself when the binding
    /// was relayed less than this long ago (0: every REGISTER is relayed).
    #[serde(rename = "refresh_throttle_secs", with = "fields::secs")]
    pub refresh_throttle: Duration,
    /// Send push parameters (`X-Token`, `pn-*`, `xToken`) to the upstream too.
    pub forward_push_params: bool,
    /// Contact rewriting for upstreams without Path support: the upstream gets a
    /// Contact of sipwake's own naming the phone's flow, and no Path.
    pub contact_rewrite: bool,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            upstream_expires: 3600,
            refresh_throttle: Duration::from_secs(600),
            forward_push_params: false,
            contact_rewrite: false,
        }
    }
}

impl RelaySettings {
    pub(super) fn validate(self) -> Result<Self, ConfigError> {
        let upstream_expires = in_range(
            "relay.upstream_expires",
            self.upstream_expires.into(),
            10,
            u64::from(u32::MAX),
            "seconds",
        )?;
        if self.refresh_throttle.as_secs() >= upstream_expires {
            return Err(ConfigError::invalid(
                "relay.refresh_throttle_secs",
                self.refresh_throttle.as_secs().to_string(),
                format!("must be less than relay.upstream_expires ({upstream_expires})"),
            ));
        }
        Ok(self)
    }
}
