//! How setting values are read and written: serde helpers for the shapes the TOML
//! uses (durations in a unit named by the key, `""` for "not set", lists whose blank
//! entries are dropped, keywords in any case) and the checks several sections share.
//! Each helper's error is the reason only; the loader adds the key and the value.

use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde::de::{DeserializeOwned, Error as _, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConfigError;

/// A value written as one string in the TOML, parsed with a reason on failure.
pub trait Parse: Sized {
    /// Parses a trimmed, non-blank string.
    fn parse_value(s: &str) -> Result<Self, String>;
}

impl Parse for SocketAddr {
    fn parse_value(s: &str) -> Result<Self, String> {
        s.parse()
            .map_err(|_| "not a socket address (write 127.0.0.1:5060 or [::1]:5060)".to_owned())
    }
}

impl Parse for String {
    fn parse_value(s: &str) -> Result<Self, String> {
        Ok(s.to_owned())
    }
}

impl Parse for PathBuf {
    fn parse_value(s: &str) -> Result<Self, String> {
        Ok(PathBuf::from(s))
    }
}

/// A keyword of a serde enum (`rename_all`), matched in any case.
pub fn keyword<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    T::deserialize(s.to_ascii_lowercase().into_deserializer())
        .map_err(|e: serde::de::value::Error| e.to_string())
}

/// Implements [`Parse`] for serde enums named by lower-case keywords.
macro_rules! keyword_parse {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::config::fields::Parse for $t {
            fn parse_value(s: &str) -> Result<Self, String> {
                $crate::config::fields::keyword(s)
            }
        }
    )*};
}
pub(crate) use keyword_parse;

/// One list entry: `None` when blank.
struct Entry<T>(Option<T>);

impl<'de, T: Parse> Deserialize<'de> for Entry<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "" => Ok(Entry(None)),
            s => T::parse_value(s)
                .map(|v| Entry(Some(v)))
                .map_err(D::Error::custom),
        }
    }
}

/// One required value (`deserialize_with`).
pub fn one<'de, D: Deserializer<'de>, T: Parse>(d: D) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    T::parse_value(s.trim()).map_err(D::Error::custom)
}

/// A list whose blank entries are dropped (`deserialize_with`).
pub fn list<'de, D: Deserializer<'de>, T: Parse>(d: D) -> Result<Vec<T>, D::Error> {
    struct Visit<T>(PhantomData<T>);
    impl<'de, T: Parse> serde::de::Visitor<'de> for Visit<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(Entry(v)) = seq.next_element::<Entry<T>>()? {
                out.extend(v);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Visit(PhantomData))
}

/// An optional value written `""` when not set (`with`).
pub mod opt {
    use super::*;

    /// Reads `""` (or blanks) as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>, T: Parse>(d: D) -> Result<Option<T>, D::Error> {
        Ok(Entry::<T>::deserialize(d)?.0)
    }

    /// Writes `None` as `""`.
    pub fn serialize<S: Serializer, T: Serialize>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }
}

/// A duration written in whole seconds (`with`).
pub mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }

    /// Writes seconds.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.as_secs())
    }
}

/// A duration written in whole milliseconds (`with`).
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    /// Writes milliseconds.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(v.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Checks that `value` (of `key`) lies in `min..=max`.
pub fn in_range(key: &str, value: u64, min: u64, max: u64, unit: &str) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::invalid(
            key,
            value.to_string(),
            format!("must be between {min} and {max} {unit}"),
        ))
    }
}

/// Checks a list of addresses for repeats.
pub fn no_repeats(key: &str, addrs: &[SocketAddr]) -> Result<(), ConfigError> {
    for (i, a) in addrs.iter().enumerate() {
        if addrs[..i].contains(a) {
            return Err(ConfigError::invalid(key, a.to_string(), "listed twice"));
        }
    }
    Ok(())
}

/// An RFC 3261 `token` (header names, URI parameter names).
pub fn is_sip_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c))
}

/// An absolute `http://` or `https://` URL with a host and no query or fragment. Base
/// URLs (`base`) come back without a trailing slash, ready for `{base}/path`.
pub fn http_url(key: &str, value: &str, base: bool) -> Result<String, ConfigError> {
    let v = value.trim();
    let url = reqwest::Url::parse(v)
        .map_err(|e| ConfigError::invalid(key, v, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::invalid(
            key,
            v,
            "expected an http:// or https:// URL with a host",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::invalid(
            key,
            v,
            "a query or fragment is not allowed",
        ));
    }
    Ok(if base {
        v.trim_end_matches('/').to_owned()
    } else {
        v.to_owned()
    })
}

/// The hosts of list `key` normalized ([`normalize_host`]), repeats dropped.
pub fn hosts(key: &str, list: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for entry in list {
        let host =
            normalize_host(entry).map_err(|reason| ConfigError::invalid(key, entry, reason))?;
        if !out.contains(&host) {
            out.push(host);
        }
    }
    Ok(out)
}

/// Checks a host (name or IP literal) and returns it lower-cased, IPv6 in brackets.
pub fn normalize_host(host: &str) -> Result<String, String> {
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(v6) = inner.parse::<Ipv6Addr>() {
        return Ok(format!("[{v6}]"));
    }
    if let Ok(v4) = inner.parse::<Ipv4Addr>() {
        return Ok(v4.to_string());
    }
    let name = host.to_ascii_lowercase();
    // Underscores are not valid in DNS host names but do occur in container service
    // names, which is where an upstream PBX often lives.
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is not a host name or IP address (no port, scheme or spaces)"
        ));
    }
    Ok(name)
}
