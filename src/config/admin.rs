//! `[admin]`: the admin HTTP API and `/metrics`.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::fields;
use super::ConfigError;

/// `[admin]` section. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Where the admin HTTP API listens; `None` (written `""`): no admin API.
    #[serde(with = "fields::opt")]
    pub listen: Option<SocketAddr>,
    /// Bearer token every endpoint but `/healthz` requires; `None` (`""`): no auth.
    #[serde(with = "fields::opt")]
    pub token: Option<String>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8060))),
            token: None,
        }
    }
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// Shortest admin token accepted: long enough not to be guessed.
const MIN_ADMIN_TOKEN: usize = 16;

impl AdminSettings {
    pub(super) fn validate(self) -> Result<Self, ConfigError> {
        if let Some(token) = &self.token {
            if token.len() < MIN_ADMIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                // the value is a secret: never repeated in the error
                return Err(ConfigError::invalid(
                    "admin.token",
                    "",
                    format!("at least {MIN_ADMIN_TOKEN} printable ASCII characters without spaces"),
                ));
            }
        }
        Ok(self)
    }
}
