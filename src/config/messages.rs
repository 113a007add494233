//! `[push.messages]`: MESSAGEs (RFC 3428) kept for sleeping push phones until they
//! register again — whether, for how long, how many, how large, and whether the
//! message notice carries the text.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields::{self, in_range};
use super::ConfigError;

/// `[push.messages]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessageSettings {
    /// Keep MESSAGEs for sleeping push phones (else they get `480`).
    pub enabled: bool,
    /// How long a message waits for its phone; written in seconds.
    #[serde(rename = "ttl_secs", with = "fields::secs")]
    pub ttl: Duration,
    /// Most messages waiting for one user.
    pub max_per_aor: usize,
    /// Most messages waiting in total.
    pub max_total: usize,
    /// Largest body kept, in bytes.
    pub max_body_bytes: usize,
    /// The message notice carries the text (else only the sender).
    pub notice_text: bool,
}

impl Default for MessageSettings {
    fn default() -> Self {
        MessageSettings {
            enabled: true,
            ttl: Duration::from_secs(7 * 86_400),
            max_per_aor: 100,
            max_total: 100_000,
            max_body_bytes: 8192,
            notice_text: false,
        }
    }
}

impl MessageSettings {
    /// Checks the ranges.
    pub(super) fn validate(self) -> Result<MessageSettings, ConfigError> {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        in_range(
            "push.messages.ttl_secs",
            self.ttl.as_secs(),
            1,
            365 * 86_400,
            "seconds",
        )?;
        in_range(
            "push.messages.max_per_aor",
            n(self.max_per_aor),
            1,
            10_000,
            "messages",
        )?;
        in_range(
            "push.messages.max_total",
            n(self.max_total),
            1,
            10_000_000,
            "messages",
        )?;
        in_range(
            "push.messages.max_body_bytes",
            n(self.max_body_bytes),
            1,
            65_535,
            "bytes",
        )?;
        Ok(self)
    }
}
