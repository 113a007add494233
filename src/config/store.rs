//! `[store]`: where bindings are kept.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields::{self, in_range, keyword_parse};
use super::ConfigError;

/// Which store keeps bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded SQLite database (durable).
    Sqlite,
    /// Append-only binding journal with snapshots (durable; cheaper per write).
    Journal,
    /// In memory only (lost on restart).
    Memory,
    /// Shared by several nodes in Redis (or Valkey).
    Redis,
}
keyword_parse!(StoreBackend);

/// SQLite's `synchronous` setting as written in `store.synchronous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Synchronous {
    Normal,
    Full,
}
keyword_parse!(Synchronous);

/// `[store]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// Backend.
    #[serde(deserialize_with = "fields::one")]
    pub backend: StoreBackend,
    /// Database file for `sqlite`; for `journal`, the name its files start with
    /// (`<path>.<n>.log`, `<path>.<n>.snap`). Relative paths are relative to the
    /// working directory.
    #[serde(deserialize_with = "fields::one")]
    pub path: PathBuf,
    /// `synchronous=FULL` (survives power loss) instead of `NORMAL` (survives process
    /// death); written `store.synchronous = "full"` or `"normal"`.
    #[serde(rename = "synchronous", with = "sync_full")]
    pub sync_full: bool,
    /// A pure refresh of a binding whose stored copy stays live is answered before
    /// its write, which follows within this time (zero: every write before the 200).
    /// Written in milliseconds.
    #[serde(rename = "refresh_write_behind_ms", with = "fields::millis")]
    pub refresh_write_behind: Duration,
    /// `[store.redis]`, for the `redis` backend.
    pub redis: RedisSettings,
}

/// `[store.redis]`: how to reach the Redis that several nodes share.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user[:password]@]host[:port][/db]` or `rediss://…` (TLS); may carry
    /// credentials, so it is shown only through [`redact_url`].
    pub url: String,
    /// User name, overriding the URL's.
    #[serde(with = "fields::opt")]
    pub username: Option<String>,
    /// Password, overriding the URL's.
    #[serde(with = "fields::opt")]
    pub password: Option<String>,
    /// Longest wait for one Redis command before the request it serves gets a 503.
    #[serde(rename = "timeout_ms", with = "fields::millis")]
    pub timeout: Duration,
    /// Prefix of every key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// `url` is a node of a Redis Cluster (7 or later, or Valkey): keys are spread over
    /// its shards by their hash tag and binding events go on sharded channels.
    pub cluster: bool,
    /// More nodes of the cluster to learn its layout from when `url`'s node is down;
    /// same scheme as `url`, whose user and password they share.
    #[serde(deserialize_with = "fields::list")]
    pub cluster_urls: Vec<String>,
    /// PEM file of the certificate authorities trusted for `rediss://` (empty: the
    /// usual public roots).
    #[serde(with = "fields::opt")]
    pub ca_file: Option<PathBuf>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            username: None,
            password: None,
            timeout: Duration::from_millis(1000),
            key_prefix: "sipwake".to_owned(),
            cluster: false,
            cluster_urls: Vec::new(),
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the URL and the password may carry credentials
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("key_prefix", &self.key_prefix)
            .field("cluster", &self.cluster)
            .field(
                "cluster_urls",
                &self
                    .cluster_urls
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Checks that `url` is a Redis URL the client can use.
fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok {
        return Err(ConfigError::invalid(
            key,
            redact_url(url),
            "expected redis://host[:port][/db] or rediss://… (TLS)",
        ));
    }
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url) {
        return Err(ConfigError::invalid(key, redact_url(url), e.to_string()));
    }
    Ok(())
}

/// `url` with the password part of its user info replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.split_once('@') {
        Some((a, h)) if !a.contains('/') => (a, h),
        _ => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl RedisSettings {
    fn validate(mut self, used: bool) -> Result<Self, ConfigError> {
        self.url = self.url.trim().to_owned();
        if used || !self.url.is_empty() {
            check_url("store.redis.url", &self.url)?;
        }
        let tls = self.url.starts_with("rediss://");
        for u in &mut self.cluster_urls {
            *u = u.trim().to_owned();
            check_url("store.redis.cluster_urls", u)?;
            if !self.cluster {
                return Err(ConfigError::invalid(
                    "store.redis.cluster_urls",
                    redact_url(u),
                    "seed nodes are for a Redis Cluster: set store.redis.cluster = true",
                ));
            }
            if u.starts_with("rediss://") != tls {
                return Err(ConfigError::invalid(
                    "store.redis.cluster_urls",
                    redact_url(u),
                    "every node is reached the same way: use the scheme of store.redis.url",
                ));
            }
        }
        if self.cluster && self.url.contains('/') {
            // the database number: a cluster has database 0 only
            let db = self.url.splitn(4, '/').nth(3).unwrap_or("");
            if !db.is_empty() && db != "0" {
                return Err(ConfigError::invalid(
                    "store.redis.url",
                    redact_url(&self.url),
                    "a Redis Cluster has database 0 only: drop the /db part",
                ));
            }
        }
        if let Some(ca) = &self.ca_file {
            if !tls {
                return Err(ConfigError::invalid(
                    "store.redis.ca_file",
                    ca.display().to_string(),
                    "only used with TLS: store.redis.url must be rediss://…",
                ));
            }
        }
        let ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        in_range("store.redis.timeout_ms", ms, 10, 60_000, "milliseconds")?;
        self.key_prefix = self.key_prefix.trim().to_owned();
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}', ' ', '*']) {
            return Err(ConfigError::invalid(
                "store.redis.key_prefix",
                self.key_prefix,
                "must be a non-empty word without braces, spaces or '*'",
            ));
        }
        Ok(self)
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sqlite,
            path: PathBuf::from("data/sipwake.db"),
            sync_full: false,
            redis: RedisSettings::default(),
            refresh_write_behind: Duration::from_secs(1),
        }
    }
}

impl StoreSettings {
    pub(super) fn validate(mut self) -> Result<Self, ConfigError> {
        let on_disk = matches!(self.backend, StoreBackend::Sqlite | StoreBackend::Journal);
        if on_disk && self.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "store.path",
                "",
                "the sqlite and journal backends need a file name",
            ));
        }
        self.redis = self.redis.validate(self.backend == StoreBackend::Redis)?;
        in_range(
            "store.refresh_write_behind_ms",
            u64::try_from(self.refresh_write_behind.as_millis()).unwrap_or(u64::MAX),
            0,
            10_000,
            "milliseconds",
        )?;
        Ok(self)
    }
}

mod sync_full {
    use serde::{Deserializer, Serialize, Serializer};

    use super::Synchronous;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        super::fields::one(d).map(|s: Synchronous| s == Synchronous::Full)
    }

    pub fn serialize<S: Serializer>(full: &bool, s: S) -> Result<S::Ok, S::Error> {
        if *full {
            Synchronous::Full
        } else {
            Synchronous::Normal
        }
        .serialize(s)
    }
}
