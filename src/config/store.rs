//! `[store]`: where bindings are kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fields::{self, keyword_parse};
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
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sqlite,
            path: PathBuf::from("data/sipwake.db"),
            sync_full: false,
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
