//! `[limits]`: rate limits and connection caps against floods. Sources are IPv4
//! addresses and IPv6 /64 prefixes; trusted networks (`proxy.trusted_networks`) are
//! exempt from the per-source limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields::{self, in_range, keyword_parse};
use super::ConfigError;

/// What happens to a request over a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OverLimit {
    /// Answer `503 Service Unavailable` with `Retry-After` (stateless, sent once).
    Reject,
    /// Drop it without an answer.
    Drop,
}
keyword_parse!(OverLimit);

/// A token bucket: `rate` requests per second on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second; 0 turns the limit off.
    pub rate: u32,
    /// Bucket size.
    pub burst: u32,
}

/// `[limits]` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsSettings {
    /// Reject (503) or drop requests over a limit.
    pub action: OverLimit,
    /// REGISTERs per source.
    pub register_per_source: RateLimit,
    /// INVITEs per source.
    pub invite_per_source: RateLimit,
    /// REGISTERs per address of record.
    pub register_per_aor: RateLimit,
    /// Buckets per rate limiter (memory is fixed, whatever the number of sources).
    pub table_size: usize,
    /// Open inbound TCP/TLS connections in total.
    pub max_connections: usize,
    /// Open inbound TCP/TLS connections per source.
    pub max_connections_per_source: usize,
    /// An inbound connection that has not delivered a whole message this long after
    /// it was accepted is closed.
    pub first_message_timeout: Duration,
}

/// `[limits]` as written: each rate limit is two keys, `…_rate` and `…_burst`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    /// `reject` or `drop`.
    #[serde(deserialize_with = "fields::one")]
    pub action: OverLimit,
    /// Per second; 0: off.
    pub register_per_source_rate: u64,
    /// Requests.
    pub register_per_source_burst: u64,
    /// Per second; 0: off.
    pub invite_per_source_rate: u64,
    /// Requests.
    pub invite_per_source_burst: u64,
    /// Per second; 0: off.
    pub register_per_aor_rate: u64,
    /// Requests.
    pub register_per_aor_burst: u64,
    /// Buckets per limiter.
    pub table_size: u64,
    /// Connections.
    pub max_connections: u64,
    /// Connections.
    pub max_connections_per_source: u64,
    /// Written in seconds.
    #[serde(rename = "first_message_timeout_secs", with = "fields::secs")]
    pub first_message_timeout: Duration,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            action: OverLimit::Reject,
            register_per_source_rate: 200,
            register_per_source_burst: 1000,
            invite_per_source_rate: 100,
            invite_per_source_burst: 500,
            register_per_aor_rate: 5,
            register_per_aor_burst: 50,
            table_size: 16_384,
            max_connections: 10_000,
            max_connections_per_source: 1000,
            first_message_timeout: Duration::from_secs(30),
        }
    }
}

impl RawLimits {
    pub(super) fn validate(self) -> Result<LimitsSettings, ConfigError> {
        let rate = |name: &str, rate: u64, burst: u64| -> Result<RateLimit, ConfigError> {
            let rate = in_range(
                &format!("limits.{name}_rate"),
                rate,
                0,
                1_000_000,
                "requests per second (0: off)",
            )?;
            let burst = in_range(
                &format!("limits.{name}_burst"),
                burst,
                u64::from(rate > 0),
                10_000_000,
                "requests",
            )?;
            Ok(RateLimit {
                rate: u32::try_from(rate).unwrap_or(u32::MAX),
                burst: u32::try_from(burst).unwrap_or(u32::MAX),
            })
        };
        let register_per_source = rate(
            "register_per_source",
            self.register_per_source_rate,
            self.register_per_source_burst,
        )?;
        let invite_per_source = rate(
            "invite_per_source",
            self.invite_per_source_rate,
            self.invite_per_source_burst,
        )?;
        let register_per_aor = rate(
            "register_per_aor",
            self.register_per_aor_rate,
            self.register_per_aor_burst,
        )?;
        let table_size = in_range(
            "limits.table_size",
            self.table_size,
            2,
            16_777_216,
            "buckets",
        )?;
        let max_connections = in_range(
            "limits.max_connections",
            self.max_connections,
            1,
            10_000_000,
            "connections",
        )?;
        let max_connections_per_source = in_range(
            "limits.max_connections_per_source",
            self.max_connections_per_source,
            1,
            max_connections,
            "connections (at most limits.max_connections)",
        )?;
        in_range(
            "limits.first_message_timeout_secs",
            self.first_message_timeout.as_secs(),
            1,
            3600,
            "seconds",
        )?;
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Ok(LimitsSettings {
            action: self.action,
            register_per_source,
            invite_per_source,
            register_per_aor,
            table_size: size(table_size),
            max_connections: size(max_connections),
            max_connections_per_source: size(max_connections_per_source),
            first_message_timeout: self.first_message_timeout,
        })
    }
}
