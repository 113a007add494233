//! Settings: the TOML file plus `SIPWAKE__SECTION__KEY` environment overrides,
//! validated into typed values. Every error names the key it is about.
//!
//! Each section has a file of its own holding its struct, its defaults (one
//! `Default` impl, the only place a default is written) and its checks. Serde reads
//! the TOML straight into typed fields: keywords into enums (`rename_all`), socket
//! addresses, networks ([`IpNet`], on the `ipnet` crate), durations in the unit the
//! key names (`_secs`, `_ms`), `""` as "not set". Where the running code wants a
//! shape other than the file's (the push providers present or not, a rate limit from
//! two keys) a `Raw…` struct holds the section as written. Loading
//! ([`source`]) lays the environment over the file and deserializes through
//! `serde_path_to_error`, so a rejected value is reported at its key; then
//! [`RawSettings::validate`] checks ranges and the rules across keys.
//!
//! Environment overrides take the form `SIPWAKE__<SECTION>__<KEY>` (upper case, double
//! underscores), e.g. `SIPWAKE__SIP__LISTEN=127.0.0.1:5090,[::1]:5090`. List keys are
//! comma-separated; blank entries are dropped, so `SIPWAKE__PROXY__DOMAINS=` clears a
//! list.

mod admin;
mod apns;
mod auth;
mod cluster;
mod error;
mod fcm;
pub(crate) mod fields;
mod limits;
mod log;
mod messages;
mod proxy;
mod push;
mod refresh;
mod registrar;
mod relay;
mod server;
mod sip;
mod source;
mod store;
mod tls;
mod upstream;
mod webhook;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use admin::AdminSettings;
pub use apns::{ApnsSettings, RawApns};
pub use auth::{AuthSettings, DigestAlgorithm};
pub use cluster::ClusterSettings;
pub use error::ConfigError;
pub use fcm::{FcmSettings, RawFcm};
pub use limits::{LimitsSettings, OverLimit, RateLimit, RawLimits};
pub use log::{LogFormat, LogSettings};
pub use messages::MessageSettings;
pub use proxy::{IpNet, ProxySettings};
pub use push::{DefaultProvider, PushPolicy, PushSection, PushSettings, RawPush};
pub use refresh::RefreshSettings;
pub use registrar::{RegistrarMode, RegistrarSettings};
pub use relay::RelaySettings;
pub use server::ServerSettings;
pub use sip::{SipSettings, SipTransport};
pub use store::{redact_url, RedisSettings, StoreBackend, StoreSettings};
pub use tls::TlsSettings;
pub use upstream::{TransportKind, UpstreamSettings, UpstreamTarget};
pub use webhook::{GatewayProvider, RawWebhook, WebhookSettings};

/// Every section, generic over the two whose running shape differs from the file's:
/// [`RawSettings`] is the file as written, [`Settings`] the validated values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sections<Push, Limits> {
    /// `[sip]`: listeners and protocol timers.
    pub sip: SipSettings,
    /// `[proxy]`: served domains and trust.
    pub proxy: ProxySettings,
    /// `[upstream]`: the PBX / next hop for non-local requests.
    pub upstream: UpstreamSettings,
    /// `[registrar]`: expiry rules and caps.
    pub registrar: RegistrarSettings,
    /// `[store]`: where bindings are kept.
    pub store: StoreSettings,
    /// `[log]`: log filter.
    pub log: LogSettings,
    /// `[push]`: waking sleeping phones.
    pub push: Push,
    /// `[relay]`: relaying registrations to the upstream (`registrar.mode = "relay"`).
    pub relay: RelaySettings,
    /// `[server]`: graceful shutdown and dialog tracking.
    pub server: ServerSettings,
    /// `[auth]`: digest authentication of phones in local registrar mode.
    pub auth: AuthSettings,
    /// `[admin]`: the admin HTTP API and `/metrics`.
    pub admin: AdminSettings,
    /// `[limits]`: rate limits and connection caps against floods.
    pub limits: Limits,
    /// `[tls]`: SIP over TLS listeners and their certificate.
    pub tls: TlsSettings,
    /// `[cluster]`: this node among several (`store.backend = "redis"`).
    pub cluster: ClusterSettings,
}

/// All validated settings.
pub type Settings = Sections<PushSettings, LimitsSettings>;

/// The settings as written in TOML / the environment, before validation. Field names
/// are the TOML keys; every field has a default, so an empty file is a valid file.
pub type RawSettings = Sections<RawPush, RawLimits>;

/// Prefix of environment overrides (`SIPWAKE__SECTION__KEY`).
pub const ENV_PREFIX: &str = "SIPWAKE";

/// Loads settings from `path` (or the built-in defaults when `None`), then applies
/// `SIPWAKE__SECTION__KEY` environment overrides, then validates.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    load_raw_settings(path)?.validate()
}

/// Like [`load`], but stops before validation: the raw settings (file, then
/// environment) as written, e.g. to tell which keys a reload changed. Validate them
/// with [`RawSettings::validate`].
pub fn load_raw_settings(path: Option<&Path>) -> Result<RawSettings, ConfigError> {
    let text = match path {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
        ),
        None => None,
    };
    let origin = path.map(|p| p.display().to_string());
    let env = source::env_overrides(std::env::vars_os())?;
    source::load_raw(text.as_deref().zip(origin.as_deref()), Some(env))
}

/// Parses settings from TOML text alone (no environment), e.g. for tests.
pub fn from_toml_str(s: &str) -> Result<Settings, ConfigError> {
    source::load_raw(Some((s, "built-in text")), None)?.validate()
}

impl RawSettings {
    /// Checks every value and the rules across keys, and gives the typed [`Settings`].
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let sip = self.sip.validate()?;
        let proxy = self.proxy.validate()?;
        let upstream = self.upstream;
        let registrar = self.registrar.validate(upstream.uri.is_some())?;
        let auth = self.auth.validate(&sip, &proxy, registrar.mode)?;
        let tls = self.tls.validate(&sip)?;
        let store = self.store.validate()?;
        let cluster = self.cluster.validate(&sip, &store)?;
        Ok(Settings {
            store,
            cluster,
            log: self.log.validate()?,
            push: self.push.validate()?,
            relay: self.relay.validate()?,
            server: self.server.validate()?,
            admin: self.admin.validate()?,
            limits: self.limits.validate()?,
            sip,
            proxy,
            upstream,
            registrar,
            auth,
            tls,
        })
    }
}

impl Settings {
    /// Whether `ip` lies in one of `proxy.trusted_networks`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.proxy
            .trusted_networks
            .iter()
            .any(|net| net.contains(ip))
    }
}
