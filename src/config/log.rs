//! `[log]`: the log filter and line format.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::fields::{self, keyword_parse};
use super::ConfigError;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line, fields at the top level (for log shippers).
    Json,
}
keyword_parse!(LogFormat);

/// `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Filter such as `info` or `warn,sipwake=debug`.
    pub level: String,
    /// Line format.
    #[serde(deserialize_with = "fields::one")]
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Human,
        }
    }
}

impl LogSettings {
    pub(super) fn validate(mut self) -> Result<Self, ConfigError> {
        let level = self.level.trim();
        if level.is_empty() {
            return Err(ConfigError::invalid(
                "log.level",
                level,
                "empty filter (use `off` to silence logging)",
            ));
        }
        tracing_subscriber::filter::Targets::from_str(level)
            .map_err(|e| ConfigError::invalid("log.level", level, e.to_string()))?;
        self.level = level.to_owned();
        Ok(self)
    }
}
