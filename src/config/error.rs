//! The one error type of loading settings. Every variant that is about one setting
//! names its full key (`section.key`), so the operator knows which line to fix, and
//! the environment variable when the value came from there.

use std::path::PathBuf;

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{origin}: not valid TOML: {message}")]
    Syntax {
        /// Where the text came from (file name or "built-in text").
        origin: String,
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// A key sipwake does not know; usually a typo.
    #[error("{key}: unknown key (expected one of: {expected}){}", origin_suffix(.origin.as_deref()))]
    UnknownKey {
        /// Full key as written, e.g. `sip.lisen`.
        key: String,
        /// The keys that are allowed at that place.
        expected: String,
        /// Where the key came from, when not the file (the environment variable).
        origin: Option<String>,
    },
    /// A value of the wrong type, or of the right type but not acceptable.
    #[error("{key}: invalid value {value:?}: {reason}{}", origin_suffix(.origin.as_deref()))]
    Invalid {
        /// Full key, e.g. `sip.listen` (without the index of a list element).
        key: String,
        /// The offending value (secrets are not repeated here).
        value: String,
        /// What is wrong with it.
        reason: String,
        /// Where the value came from, when not the file (the environment variable).
        origin: Option<String>,
    },
}

/// Keys whose values are never repeated in an error.
const SECRET_KEYS: [&str; 2] = ["proxy.flow_token_secret", "admin.token"];

impl ConfigError {
    /// The full key this error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::UnknownKey { key, .. } | Self::Invalid { key, .. } => Some(key),
            Self::Read { .. } | Self::Syntax { .. } => None,
        }
    }

    /// An invalid value of `key`; the value of a secret key is replaced.
    pub(crate) fn invalid(key: &str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        let value = if SECRET_KEYS.contains(&key) {
            "(hidden)".to_owned()
        } else {
            value.into()
        };
        Self::Invalid {
            key: key.to_owned(),
            value,
            reason: reason.into(),
            origin: None,
        }
    }

    /// Names the environment variable the key's value came from, if it did.
    pub(crate) fn with_origin(mut self, from_env: impl Fn(&str) -> Option<String>) -> Self {
        if let Self::UnknownKey { key, origin, .. } | Self::Invalid { key, origin, .. } = &mut self
        {
            if origin.is_none() {
                *origin = from_env(key);
            }
        }
        self
    }
}

fn origin_suffix(origin: Option<&str>) -> String {
    origin.map(|o| format!(" (from {o})")).unwrap_or_default()
}
