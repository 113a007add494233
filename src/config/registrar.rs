//! `[registrar]`: local registrar or relay to the upstream, and the expiry rules.

use serde::{Deserialize, Serialize};

use super::fields::{self, in_range, keyword_parse};
use super::ConfigError;

/// How REGISTERs are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrarMode {
    /// sipwake is the registrar.
    Local,
    /// REGISTERs are relayed to the upstream registrar.
    Relay,
}
keyword_parse!(RegistrarMode);

/// `[registrar]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarSettings {
    /// Local registrar or relay to upstream.
    #[serde(deserialize_with = "fields::one")]
    pub mode: RegistrarMode,
    /// Shorter requested expiry gets 423 with Min-Expires, seconds.
    pub min_expires: u32,
    /// Longer requested expiry is lowered to this, seconds.
    pub max_expires: u32,
    /// Expiry when the REGISTER names none, seconds.
    pub default_expires: u32,
    /// Most bindings one AOR may have.
    pub max_contacts: usize,
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        Self {
            mode: RegistrarMode::Local,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        }
    }
}

impl RegistrarSettings {
    pub(super) fn validate(self, has_upstream: bool) -> Result<Self, ConfigError> {
        if self.mode == RegistrarMode::Relay && !has_upstream {
            return Err(ConfigError::invalid(
                "registrar.mode",
                "relay",
                "relay needs upstream.uri to be set",
            ));
        }
        let max = u64::from(u32::MAX);
        let (min_expires, max_expires) = (self.min_expires, self.max_expires);
        in_range(
            "registrar.min_expires",
            min_expires.into(),
            1,
            max,
            "seconds",
        )?;
        in_range(
            "registrar.max_expires",
            max_expires.into(),
            1,
            max,
            "seconds",
        )?;
        if max_expires < min_expires {
            return Err(ConfigError::invalid(
                "registrar.max_expires",
                max_expires.to_string(),
                format!("must not be less than registrar.min_expires ({min_expires})"),
            ));
        }
        if !(min_expires..=max_expires).contains(&self.default_expires) {
            return Err(ConfigError::invalid(
                "registrar.default_expires",
                self.default_expires.to_string(),
                format!(
                    "must be between registrar.min_expires ({min_expires}) and \
                     registrar.max_expires ({max_expires})"
                ),
            ));
        }
        if self.max_contacts == 0 {
            return Err(ConfigError::invalid(
                "registrar.max_contacts",
                "0",
                "must be at least 1",
            ));
        }
        Ok(self)
    }
}
