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
    /// In memory only (lost on restart).
    Memory,
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
    /// Database file for `sqlite` (relative paths are relative to the working
    /// directory).
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
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sqlite,
            path: PathBuf::from("data/sipwake.db"),
            sync_full: false,
            refresh_write_behind: Duration::from_secs(1),
        }
    }
}

impl StoreSettings {
    pub(super) fn validate(self) -> Result<Self, ConfigError> {
        if self.backend == StoreBackend::Sqlite && self.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "store.path",
                "",
                "the sqlite backend needs a file name",
            ));
        }
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
