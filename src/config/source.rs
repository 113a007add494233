//! Where settings come from: the TOML text, then `SIPWAKE__SECTION__KEY` environment
//! variables laid over it, then serde into [`RawSettings`].
//!
//! The built-in defaults, serialized, are the schema: a key they lack is unknown (an
//! error listing the keys allowed there), and the type of the default decides how an
//! environment value is read (a list is split at commas, a number or boolean parsed,
//! anything else kept as text). Deserialization runs through `serde_path_to_error`, so
//! a rejected value is reported at its key with the value as written, never by reading
//! serde's message.

use std::collections::BTreeMap;
use std::ffi::OsString;

use toml::{Table, Value};

use super::{ConfigError, RawSettings, ENV_PREFIX};

/// `SIPWAKE__…` environment variables: dotted key, variable name, value.
#[derive(Debug, Default)]
pub(super) struct EnvOverrides {
    vars: Vec<(String, String, String)>,
}

/// Picks our variables out of `vars`; only they must be UTF-8.
pub(super) fn env_overrides<I>(vars: I) -> Result<EnvOverrides, ConfigError>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let prefix = format!("{}__", ENV_PREFIX.to_lowercase());
    let mut out = EnvOverrides::default();
    for (name, value) in vars {
        let Ok(name) = name.into_string() else {
            continue;
        };
        let lower = name.to_lowercase();
        let Some(rest) = lower.strip_prefix(&prefix) else {
            continue;
        };
        let key = rest.replace("__", ".");
        let value = value.into_string().map_err(|v| {
            ConfigError::invalid(
                &key,
                v.to_string_lossy(),
                format!("environment variable {name} is not valid UTF-8"),
            )
        })?;
        out.vars.push((key, name, value));
    }
    // the same order whatever the environment's
    out.vars.sort();
    Ok(out)
}

/// The built-in defaults as a TOML table: every key, with a value of its type.
pub(super) fn defaults_table() -> Table {
    // plain strings, numbers, booleans and lists: serializing cannot fail
    Table::try_from(RawSettings::default()).unwrap_or_default()
}

/// Reads the TOML text (`text`, `origin`), lays `env` over it and deserializes.
pub(super) fn load_raw(
    file: Option<(&str, &str)>,
    env: Option<EnvOverrides>,
) -> Result<RawSettings, ConfigError> {
    let mut tree = match file {
        Some((text, origin)) => text.parse::<Table>().map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?,
        None => Table::new(),
    };
    let defaults = defaults_table();
    unknown_keys("", &tree, &defaults)?;
    let mut from_env = BTreeMap::new();
    for (key, var, value) in env.map(|e| e.vars).unwrap_or_default() {
        let origin = format!("environment variable {var}");
        let value = env_value(&key, &value, &defaults)
            .map_err(|e| e.with_origin(|_| Some(origin.clone())))?;
        insert(&mut tree, &key, value);
        from_env.insert(key, origin);
    }
    let raw: Result<RawSettings, _> = serde_path_to_error::deserialize(Value::Table(tree.clone()));
    raw.map_err(|e| {
        let mut key = String::new();
        let mut at = Some(&Value::Table(tree.clone()));
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Map { key: k } => {
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(k);
                    at = at.and_then(|v| v.get(k.as_str()));
                }
                serde_path_to_error::Segment::Seq { index } => {
                    at = at.and_then(|v| v.get(*index));
                }
                _ => at = None,
            }
        }
        ConfigError::invalid(&key, at.map(show).unwrap_or_default(), e.inner().message())
    })
    .map_err(|e| e.with_origin(|k| from_env.get(k).cloned()))
}

/// A value as the operator wrote it: strings without quotes.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(", ")),
        Value::Table(_) => "{…}".to_owned(),
    }
}

/// Fails on the first key of `tree` that `defaults` lacks.
fn unknown_keys(prefix: &str, tree: &Table, defaults: &Table) -> Result<(), ConfigError> {
    for (k, v) in tree {
        let key = join_key(prefix, k);
        match (defaults.get(k), v) {
            (None, _) => {
                return Err(ConfigError::UnknownKey {
                    key,
                    expected: defaults.keys().cloned().collect::<Vec<_>>().join(", "),
                    origin: None,
                })
            }
            (Some(Value::Table(d)), Value::Table(t)) => unknown_keys(&key, t, d)?,
            _ => {}
        }
    }
    Ok(())
}

/// An environment value read as the type of the key's default.
fn env_value(key: &str, value: &str, defaults: &Table) -> Result<Value, ConfigError> {
    let mut parts = key.split('.').peekable();
    let mut table = defaults;
    let mut prefix = String::new();
    while let Some(part) = parts.next() {
        let unknown = || ConfigError::UnknownKey {
            key: key.to_owned(),
            expected: table.keys().cloned().collect::<Vec<_>>().join(", "),
            origin: None,
        };
        let default = table.get(part).ok_or_else(unknown)?;
        prefix = join_key(&prefix, part);
        match (default, parts.peek()) {
            (Value::Table(t), Some(_)) => table = t,
            (Value::Table(_), None) => {
                return Err(ConfigError::invalid(
                    key,
                    value,
                    "is a section: set its keys one by one",
                ))
            }
            (_, Some(_)) => return Err(unknown()),
            (Value::Array(_), None) => {
                return Ok(Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_owned()))
                        .collect(),
                ))
            }
            // Text that does not read as the default's type is left as text, for serde
            // to reject at this key.
            (Value::Integer(_), None) => {
                return Ok(value
                    .trim()
                    .parse::<i64>()
                    .map_or_else(|_| Value::String(value.to_owned()), Value::Integer))
            }
            (Value::Boolean(_), None) => {
                return Ok(match value.trim().to_ascii_lowercase().as_str() {
                    "true" => Value::Boolean(true),
                    "false" => Value::Boolean(false),
                    _ => Value::String(value.to_owned()),
                })
            }
            (_, None) => return Ok(Value::String(value.to_owned())),
        }
    }
    Err(ConfigError::invalid(key, value, "not a key"))
}

/// Sets the dotted `key` in `tree`, making the tables on the way.
fn insert(tree: &mut Table, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else {
        return;
    };
    let mut table = tree;
    for part in parts {
        let entry = table
            .entry(part.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        match entry {
            Value::Table(t) => table = t,
            // the file has a value where a section belongs: serde reports it
            _ => return,
        }
    }
    table.insert(last.to_owned(), value);
}

/// `prefix.field`, or `field` at the top.
pub(super) fn join_key(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}
