//! Settings: the TOML file plus `SIPWAKE__SECTION__KEY` environment overrides,
//! validated into typed values. Every error names the key it is about.
//!
//! Loading happens in two steps. The `config` crate merges the sources (file, then
//! environment) into raw serde structs that mirror the TOML one to one, with a default
//! for every key and `deny_unknown_fields` so that a typo is an error rather than a
//! silently ignored setting. [`RawSettings::validate`] then turns strings into
//! addresses, networks, URIs and durations, checking ranges and cross-key rules.
//!
//! Environment overrides take the form `SIPWAKE__<SECTION>__<KEY>` (upper case, double
//! underscores), e.g. `SIPWAKE__SIP__LISTEN=127.0.0.1:5090,[::1]:5090`. List keys are
//! comma-separated; blank entries are dropped, so `SIPWAKE__PROXY__DOMAINS=` clears a
//! list.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// All validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
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
    pub push: PushSettings,
    /// `[relay]`: relaying registrations to the upstream (`registrar.mode = "relay"`).
    pub relay: RelaySettings,
    /// `[server]`: graceful shutdown and dialog tracking.
    pub server: ServerSettings,
    /// `[auth]`: digest authentication of phones in local registrar mode.
    pub auth: AuthSettings,
    /// `[admin]`: the admin HTTP API and `/metrics`.
    pub admin: AdminSettings,
    /// `[limits]`: rate limits and connection caps against floods.
    pub limits: LimitsSettings,
    /// `[tls]`: SIP over TLS listeners and their certificate.
    pub tls: TlsSettings,
}

/// `[relay]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// Expiry asked of the upstream registrar for relayed registrations, seconds.
    pub upstream_expires: u32,
    /// A refresh that changes nothing is answered by sipwake itself when the binding
    /// was relayed less than this long ago (0: every REGISTER is relayed).
    pub refresh_throttle: Duration,
    /// Send push parameters (`X-Token`, `pn-*`, `xToken`) to the upstream too.
    pub forward_push_params: bool,
    /// Contact rewriting for upstreams without Path support: the upstream gets a
    /// Contact of sipwake's own naming the phone's flow, and no Path.
    pub contact_rewrite: bool,
}

/// When an INVITE for a binding with a push token sends a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushPolicy {
    /// Every initial INVITE pushes (PushKit apps report calls to CallKit from the push).
    Always,
    /// Only bindings whose flow showed no life within `flow_timeout` are pushed.
    WhenUnreachable,
}

/// Provider assumed for tokens that arrive without one (`X-Token`, `xToken`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultProvider {
    /// 64 hex digits: APNs; anything else: FCM.
    Auto,
    /// APNs.
    Apns,
    /// FCM.
    Fcm,
    /// The webhook.
    Webhook,
}

/// `[push]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// When to push.
    pub policy: PushPolicy,
    /// How long a parked INVITE waits for the phone's REGISTER.
    pub wake_timeout: Duration,
    /// Header carrying the per-call hint on the forwarded INVITE.
    pub hint_header: String,
    /// REGISTER header carrying a bare token.
    pub token_header: String,
    /// Contact URI parameter carrying a bare token.
    pub token_param: String,
    /// Provider of bare tokens.
    pub default_provider: DefaultProvider,
    /// How long a token binding stays callable by push after its SIP expiry.
    pub binding_ttl: Duration,
    /// Longest registration a token binding may ask for.
    pub max_expires: u32,
    /// A binding counts as reachable if its flow showed life this recently.
    pub flow_timeout: Duration,
    /// Most INVITEs parked at once.
    pub max_parked: usize,
    /// Most INVITEs parked for one AOR.
    pub max_parked_per_aor: usize,
    /// `[push.apns]`, if APNs is configured.
    pub apns: Option<ApnsSettings>,
    /// `[push.fcm]`, if FCM is configured.
    pub fcm: Option<FcmSettings>,
    /// `[push.webhook]`, if a webhook is configured.
    pub webhook: Option<WebhookSettings>,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            policy: PushPolicy::Always,
            wake_timeout: Duration::from_secs(10),
            hint_header: "X-PushHint".into(),
            token_header: "X-Token".into(),
            token_param: "xToken".into(),
            default_provider: DefaultProvider::Auto,
            binding_ttl: Duration::from_secs(7 * 86400),
            max_expires: 7 * 86400,
            flow_timeout: Duration::from_secs(120),
            max_parked: 10_000,
            max_parked_per_aor: 10,
            apns: None,
            fcm: None,
            webhook: None,
        }
    }
}

/// `[push.apns]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsSettings {
    /// Token auth: the `.p8` signing key file.
    pub key_file: Option<PathBuf>,
    /// Token auth: the key id (`kid`).
    pub key_id: Option<String>,
    /// Token auth: the team id (`iss`).
    pub team_id: Option<String>,
    /// Certificate auth: PEM file with certificate and key.
    pub cert_file: Option<PathBuf>,
    /// Bundle id used for bare tokens (topic is `<bundle>.voip`).
    pub bundle_id: Option<String>,
    /// Bare tokens go to the sandbox environment.
    pub sandbox: bool,
    /// Production base URL (a stand-in in tests and staging).
    pub production_url: String,
    /// Sandbox base URL.
    pub sandbox_url: String,
    /// Extra CA certificate (PEM) to trust, for stand-ins.
    pub ca_file: Option<PathBuf>,
    /// JSON file reshaping the VoIP payload; `None`: the Siprix-compatible default.
    pub payload_template: Option<PathBuf>,
}

/// `[push.fcm]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmSettings {
    /// Service-account JSON file.
    pub service_account_file: PathBuf,
    /// Project id (default: from the service account).
    pub project_id: Option<String>,
    /// FCM API base URL.
    pub base_url: String,
    /// OAuth token endpoint (default: from the service account).
    pub token_uri: Option<String>,
    /// Extra CA certificate (PEM) to trust, for stand-ins.
    pub ca_file: Option<PathBuf>,
}

/// `[push.webhook]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where the JSON documents are POSTed.
    pub url: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// `[sip]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSettings {
    /// Addresses to listen on; each gets UDP and/or TCP per `transports`.
    pub listen: Vec<SocketAddr>,
    /// Listen on UDP.
    pub udp: bool,
    /// Listen on TCP.
    pub tcp: bool,
    /// Host written into Via and Record-Route instead of the listen IP: a lower-case
    /// name, an IPv4 address, or an IPv6 address in brackets (`[2001:db8::1]`).
    pub advertised_host: Option<String>,
    /// Largest message accepted on any transport, in bytes.
    pub max_message_size: usize,
    /// TCP connections without traffic for this long are closed.
    pub tcp_idle_timeout: Duration,
    /// RFC 3261 timer T1 (RTT estimate).
    pub t1: Duration,
    /// RFC 3261 timer T2 (maximum retransmit interval for non-INVITE).
    pub t2: Duration,
    /// RFC 3261 timer T4 (maximum time a message stays in the network).
    pub t4: Duration,
    /// RFC 3261 timer C (proxy INVITE branch timeout). RFC 3261 §16.6 asks for more
    /// than 3 minutes; shorter values are accepted so that tests can run quickly.
    pub timer_c: Duration,
}

/// An IP network in CIDR form, e.g. `127.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
}

/// `[proxy]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// Domains served locally (lower case). Empty: every domain is local.
    pub domains: Vec<String>,
    /// Sources allowed to send requests toward the upstream and to assert identity.
    pub trusted_networks: Vec<IpNet>,
    /// Secret for flow tokens; `None`: generated once and kept in the store.
    pub flow_token_secret: Option<Vec<u8>>,
}

/// Transport named by a URI's `transport` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (`transport=tls`, or a `sips:` URI).
    Tls,
}

/// `[upstream]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// The upstream as a SIP URI, if any.
    pub uri: Option<UpstreamTarget>,
}

/// A parsed `upstream.uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// The URI as configured.
    pub uri: String,
    /// Host part: a lower-case name or an IP literal; IPv6 without brackets (see
    /// [`UpstreamTarget::host_port`] for the bracketed form).
    pub host: String,
    /// Port (5060 when absent).
    pub port: u16,
    /// Transport (`transport` param; UDP when absent).
    pub transport: TransportKind,
}

/// How REGISTERs are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrarMode {
    /// sipwake is the registrar.
    Local,
    /// REGISTERs are relayed to the upstream registrar.
    Relay,
}

/// `[registrar]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarSettings {
    /// Local registrar or relay to upstream.
    pub mode: RegistrarMode,
    /// Shorter requested expiry gets 423 with Min-Expires.
    pub min_expires: u32,
    /// Longer requested expiry is lowered to this.
    pub max_expires: u32,
    /// Expiry when the REGISTER names none.
    pub default_expires: u32,
    /// Most bindings one AOR may have.
    pub max_contacts: usize,
}

/// Which store keeps bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    /// Embedded SQLite database (durable).
    Sqlite,
    /// In memory only (lost on restart).
    Memory,
}

/// `[store]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Backend.
    pub backend: StoreBackend,
    /// Database file for `sqlite`.
    pub path: PathBuf,
    /// `synchronous=FULL` (survives power loss) instead of `NORMAL` (survives process death).
    pub sync_full: bool,
    /// A pure refresh of a binding whose stored version stays live is answered before
    /// its write, which follows within this time (zero: every write before the 200).
    pub refresh_write_behind: Duration,
}

/// `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Filter such as `info` or `warn,sipwake=debug`.
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

/// A digest algorithm (RFC 7616 / RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `SHA-256`.
    Sha256,
    /// `MD5`, for the many phones that know nothing else.
    Md5,
}

impl DigestAlgorithm {
    /// The name as written in `algorithm=` (`SHA-256`, `MD5`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA-256",
            Self::Md5 => "MD5",
        }
    }

    /// Parses an `algorithm=` value, case-insensitively; `-sess` variants are not
    /// supported.
    pub fn parse(s: &str) -> Option<DigestAlgorithm> {
        if s.eq_ignore_ascii_case("SHA-256") {
            Some(Self::Sha256)
        } else if s.eq_ignore_ascii_case("MD5") {
            Some(Self::Md5)
        } else {
            None
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[auth]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Digest authentication of phones is on (local registrar mode only).
    pub enabled: bool,
    /// The users file (HA1 hashes); always set when `enabled`.
    pub users_file: Option<PathBuf>,
    /// The realm, resolved: `auth.realm`, else the first of `proxy.domains`, else
    /// `sip.advertised_host`, else `sipwake`.
    pub realm: String,
    /// How long a nonce is accepted; afterwards `stale=true`.
    pub nonce_ttl: Duration,
    /// Algorithms offered, in order (one challenge header each).
    pub algorithms: Vec<DigestAlgorithm>,
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why settings could not be loaded. Every variant that is about one setting names its
/// full key (`section.key`), so the operator knows which line to fix.
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
    #[error("{key}: unknown key ({expected})")]
    UnknownKey {
        /// Full key as written, e.g. `sip.lisen`.
        key: String,
        /// The keys that are allowed at that place.
        expected: String,
    },
    /// A value of the wrong type, e.g. a string where a number belongs.
    #[error("{key}: invalid type: {found}, expected {expected}{}", origin_suffix(.origin.as_deref()))]
    Type {
        /// Full key, e.g. `registrar.min_expires` (list elements as `sip.listen[1]`).
        key: String,
        /// What was found.
        found: String,
        /// What was expected.
        expected: String,
        /// Where the value came from, when known (e.g. the environment variable).
        origin: Option<String>,
    },
    /// A value of the right type that is not acceptable.
    #[error("{key}: invalid value {value:?}: {reason}")]
    Invalid {
        /// Full key, e.g. `sip.listen`.
        key: String,
        /// The offending value (secrets are not repeated here).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value the deserializer rejected for another reason.
    #[error("{key}: {message}")]
    Message {
        /// Full key.
        key: String,
        /// What the deserializer said.
        message: String,
    },
    /// Any other error reported by the `config` crate.
    #[error(transparent)]
    Other(config::ConfigError),
}

impl ConfigError {
    /// The full key this error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::UnknownKey { key, .. }
            | Self::Type { key, .. }
            | Self::Invalid { key, .. }
            | Self::Message { key, .. } => Some(key),
            Self::Read { .. } | Self::Syntax { .. } | Self::Other(_) => None,
        }
    }

    fn invalid(key: &str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Translates a `config` crate error, pulling the key out of wherever that crate
    /// put it so that every message starts with the key.
    fn from_config(err: config::ConfigError, origin: &str) -> Self {
        match err {
            config::ConfigError::Type {
                origin: source,
                unexpected,
                expected,
                key,
            } => {
                let key = key.unwrap_or_default();
                let origin = describe_source(source.as_deref(), &key);
                Self::Type {
                    key,
                    found: unexpected.to_string(),
                    expected: expected.to_owned(),
                    origin,
                }
            }
            config::ConfigError::At {
                error,
                key,
                origin: source,
            } => {
                let prefix = key.unwrap_or_default();
                match *error {
                    config::ConfigError::Message(ref msg) => match unknown_field(msg) {
                        Some((field, expected)) => Self::UnknownKey {
                            key: join_key(&prefix, field),
                            expected: expected.to_owned(),
                        },
                        None => match invalid_type(msg) {
                            Some((found, expected)) => Self::Type {
                                origin: describe_source(source.as_deref(), &prefix),
                                key: prefix,
                                found: found.to_owned(),
                                expected: expected.to_owned(),
                            },
                            None => Self::Message {
                                key: prefix,
                                message: msg.clone(),
                            },
                        },
                    },
                    other => Self::Other(config::ConfigError::At {
                        error: Box::new(other),
                        key: Some(prefix),
                        origin: source,
                    }),
                }
            }
            config::ConfigError::Message(msg) => match unknown_field(&msg) {
                Some((field, expected)) => Self::UnknownKey {
                    key: field.to_owned(),
                    expected: expected.to_owned(),
                },
                None => Self::Other(config::ConfigError::Message(msg)),
            },
            config::ConfigError::FileParse { cause, .. } => Self::Syntax {
                origin: origin.to_owned(),
                message: cause.to_string().trim_end().to_owned(),
            },
            other => Self::Other(other),
        }
    }
}

fn origin_suffix(origin: Option<&str>) -> String {
    origin.map(|o| format!(" (from {o})")).unwrap_or_default()
}

/// The `config` crate marks values from the environment with this origin; we turn it
/// into the variable's name because that is what the operator has to fix.
fn describe_source(source: Option<&str>, key: &str) -> Option<String> {
    match source {
        Some("the environment") => {
            let base = key.split('[').next().unwrap_or(key);
            Some(format!(
                "environment variable {ENV_PREFIX}__{}",
                base.replace('.', "__").to_uppercase()
            ))
        }
        Some(other) => Some(other.to_owned()),
        None => None,
    }
}

/// Picks the field name out of serde's "unknown field `x`, expected …" message: serde
/// reports it while reading the map key, where the `config` crate cannot attach a path.
fn unknown_field(msg: &str) -> Option<(&str, &str)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    let expected = rest[end + 1..].trim_start_matches(',').trim();
    Some((&rest[..end], expected))
}

/// Splits serde's "invalid type: X, expected Y" message (raised by visitors, e.g. a
/// string where a list belongs) into its two parts.
fn invalid_type(msg: &str) -> Option<(&str, &str)> {
    msg.strip_prefix("invalid type: ")?
        .split_once(", expected ")
}

fn join_key(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

// ---------------------------------------------------------------------------------------
// Raw settings: the TOML as written
// ---------------------------------------------------------------------------------------

/// The settings as written in TOML / the environment, before validation. Field names
/// are the TOML keys; every field has a default, so an empty file is a valid file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSettings {
    /// `[sip]`.
    pub sip: RawSip,
    /// `[proxy]`.
    pub proxy: RawProxy,
    /// `[upstream]`.
    pub upstream: RawUpstream,
    /// `[registrar]`.
    pub registrar: RawRegistrar,
    /// `[store]`.
    pub store: RawStore,
    /// `[log]`.
    pub log: RawLog,
    /// `[push]`.
    pub push: RawPush,
    /// `[relay]`.
    pub relay: RawRelay,
    /// `[server]`.
    pub server: RawServer,
    /// `[auth]`.
    pub auth: RawAuth,
    /// `[admin]`.
    pub admin: RawAdmin,
    /// `[limits]`.
    pub limits: RawLimits,
    /// `[tls]`.
    pub tls: RawTls,
}

/// Raw `[relay]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRelay {
    /// Seconds.
    pub upstream_expires: u64,
    /// Seconds.
    pub refresh_throttle_secs: u64,
    /// Keep push parameters in what goes upstream.
    pub forward_push_params: bool,
    /// Rewrite contacts instead of adding Path.
    pub contact_rewrite: bool,
}

impl Default for RawRelay {
    fn default() -> Self {
        Self {
            upstream_expires: 3600,
            refresh_throttle_secs: 600,
            forward_push_params: false,
            contact_rewrite: false,
        }
    }
}

impl RawRelay {
    fn validate(self) -> Result<RelaySettings, ConfigError> {
        let max = u64::from(u32::MAX);
        let upstream_expires = in_range(
            "relay.upstream_expires",
            self.upstream_expires,
            60,
            max,
            "seconds",
        )?;
        if self.refresh_throttle_secs >= upstream_expires {
            return Err(ConfigError::invalid(
                "relay.refresh_throttle_secs",
                self.refresh_throttle_secs.to_string(),
                format!("must be less than relay.upstream_expires ({upstream_expires})"),
            ));
        }
        Ok(RelaySettings {
            upstream_expires: u32::try_from(upstream_expires).unwrap_or(u32::MAX),
            refresh_throttle: Duration::from_secs(self.refresh_throttle_secs),
            forward_push_params: self.forward_push_params,
            contact_rewrite: self.contact_rewrite,
        })
    }
}

/// Raw `[sip]` section. Numbers are `u64` so that out-of-range values reach our own
/// range checks (which name the key) rather than failing as an overflow.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSip {
    /// Socket addresses, IPv6 in brackets.
    pub listen: Vec<String>,
    /// Subset of `udp`, `tcp`.
    pub transports: Vec<String>,
    /// Empty: none.
    pub advertised_host: String,
    /// Bytes, 1024..=1048576.
    pub max_message_size: u64,
    /// Seconds.
    pub tcp_idle_timeout_secs: u64,
    /// Milliseconds.
    pub t1_ms: u64,
    /// Milliseconds.
    pub t2_ms: u64,
    /// Milliseconds.
    pub t4_ms: u64,
    /// Seconds.
    pub timer_c_secs: u64,
}

impl Default for RawSip {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:5060".to_owned()],
            transports: vec!["udp".to_owned(), "tcp".to_owned()],
            advertised_host: String::new(),
            max_message_size: 65535,
            tcp_idle_timeout_secs: 3600,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            timer_c_secs: 180,
        }
    }
}

/// Raw `[proxy]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawProxy {
    /// Domains served locally; empty: all.
    pub domains: Vec<String>,
    /// CIDR networks or bare addresses.
    pub trusted_networks: Vec<String>,
    /// Hex; empty: none.
    pub flow_token_secret: String,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            domains: Vec::new(),
            trusted_networks: vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()],
            flow_token_secret: String::new(),
        }
    }
}

/// Raw `[upstream]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawUpstream {
    /// `sip:host[:port][;transport=udp|tcp]`; empty: none.
    pub uri: String,
}

/// Raw `[registrar]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRegistrar {
    /// `local` or `relay`.
    pub mode: String,
    /// Seconds.
    pub min_expires: u64,
    /// Seconds.
    pub max_expires: u64,
    /// Seconds.
    pub default_expires: u64,
    /// Bindings per AOR.
    pub max_contacts: u64,
}

impl Default for RawRegistrar {
    fn default() -> Self {
        Self {
            mode: "local".to_owned(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        }
    }
}

/// Raw `[store]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawStore {
    /// `sqlite` or `memory`.
    pub backend: String,
    /// Database file (relative paths are relative to the working directory).
    pub path: String,
    /// `normal` or `full`.
    pub synchronous: String,
    /// Longest a pure refresh's write waits behind its 200 OK, ms (0: none waits).
    pub refresh_write_behind_ms: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            backend: "sqlite".to_owned(),
            path: "data/sipwake.db".to_owned(),
            synchronous: "normal".to_owned(),
            refresh_write_behind_ms: 1000,
        }
    }
}

/// Raw `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    /// Filter directives, e.g. `info,sipwake=debug`.
    pub level: String,
    /// `human` or `json`.
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: "human".to_owned(),
        }
    }
}

/// Raw `[push]` section. A provider counts as configured when its credentials (or, for
/// the webhook, its URL) are set; with none configured, tokens are still stored but no
/// push is sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPush {
    /// `always` or `when_unreachable`.
    pub policy: String,
    /// Milliseconds.
    pub wake_timeout_ms: u64,
    /// Header name.
    pub hint_header: String,
    /// Header name.
    pub token_header: String,
    /// Contact URI parameter name.
    pub token_param: String,
    /// `auto`, `apns`, `fcm` or `webhook`.
    pub default_provider: String,
    /// Seconds.
    pub binding_ttl_secs: u64,
    /// Seconds.
    pub max_expires: u64,
    /// Seconds.
    pub flow_timeout_secs: u64,
    /// Parked INVITEs in total.
    pub max_parked: u64,
    /// Parked INVITEs per AOR.
    pub max_parked_per_aor: u64,
    /// `[push.apns]`.
    pub apns: RawApns,
    /// `[push.fcm]`.
    pub fcm: RawFcm,
    /// `[push.webhook]`.
    pub webhook: RawWebhook,
}

impl Default for RawPush {
    fn default() -> Self {
        Self {
            policy: "always".to_owned(),
            wake_timeout_ms: 10_000,
            hint_header: "X-PushHint".to_owned(),
            token_header: "X-Token".to_owned(),
            token_param: "xToken".to_owned(),
            default_provider: "auto".to_owned(),
            binding_ttl_secs: 7 * 86_400,
            max_expires: 7 * 86_400,
            flow_timeout_secs: 120,
            max_parked: 10_000,
            max_parked_per_aor: 10,
            apns: RawApns::default(),
            fcm: RawFcm::default(),
            webhook: RawWebhook::default(),
        }
    }
}

/// Raw `[push.apns]` section; empty strings mean "not set".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawApns {
    /// Token auth: `.p8` key file.
    pub key_file: String,
    /// Token auth: key id.
    pub key_id: String,
    /// Token auth: team id.
    pub team_id: String,
    /// Certificate auth: PEM with certificate and key.
    pub cert_file: String,
    /// Bundle id for bare tokens.
    pub bundle_id: String,
    /// Bare tokens go to the sandbox.
    pub sandbox: bool,
    /// Production base URL.
    pub production_url: String,
    /// Sandbox base URL.
    pub sandbox_url: String,
    /// Extra CA (PEM).
    pub ca_file: String,
    /// JSON file reshaping the VoIP payload (`{{pushHint}}`… placeholders).
    pub payload_template: String,
}

impl Default for RawApns {
    fn default() -> Self {
        Self {
            key_file: String::new(),
            key_id: String::new(),
            team_id: String::new(),
            cert_file: String::new(),
            bundle_id: String::new(),
            sandbox: false,
            production_url: "https://api.push.apple.com".to_owned(),
            sandbox_url: "https://api.sandbox.push.apple.com".to_owned(),
            ca_file: String::new(),
            payload_template: String::new(),
        }
    }
}

/// Raw `[push.fcm]` section; empty strings mean "not set".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFcm {
    /// Service-account JSON file.
    pub service_account_file: String,
    /// Project id; empty: from the service account.
    pub project_id: String,
    /// API base URL.
    pub base_url: String,
    /// OAuth token endpoint; empty: from the service account.
    pub token_uri: String,
    /// Extra CA (PEM).
    pub ca_file: String,
}

impl Default for RawFcm {
    fn default() -> Self {
        Self {
            service_account_file: String::new(),
            project_id: String::new(),
            base_url: "https://fcm.googleapis.com".to_owned(),
            token_uri: String::new(),
            ca_file: String::new(),
        }
    }
}

/// Raw `[push.webhook]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWebhook {
    /// URL; empty: no webhook.
    pub url: String,
    /// Milliseconds.
    pub timeout_ms: u64,
}

impl Default for RawWebhook {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout_ms: 2000,
        }
    }
}

/// Raw `[auth]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    /// Digest authentication on.
    pub enabled: bool,
    /// Users file; empty: none.
    pub users_file: String,
    /// Realm; empty: derived.
    pub realm: String,
    /// Seconds.
    pub nonce_ttl_secs: u64,
    /// `SHA-256`, `MD5`, in the order offered.
    pub algorithms: Vec<String>,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            enabled: false,
            users_file: String::new(),
            realm: String::new(),
            nonce_ttl_secs: 300,
            algorithms: vec!["SHA-256".to_owned(), "MD5".to_owned()],
        }
    }
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Prefix of environment overrides (`SIPWAKE__SECTION__KEY`).
pub const ENV_PREFIX: &str = "SIPWAKE";

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: [&str; 6] = [
    "sip.listen",
    "sip.transports",
    "proxy.domains",
    "proxy.trusted_networks",
    "auth.algorithms",
    "tls.listen",
];

/// Loads settings from `path` (or the built-in defaults when `None`), then applies
/// `SIPWAKE__SECTION__KEY` environment overrides, then validates.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    load_raw_settings(path)?.validate()
}

/// Like [`load`], but stops before validation: the raw settings (file, then
/// environment) as written, e.g. to tell which keys a reload changed. Validate them
/// with [`RawSettings::validate`].
pub fn load_raw_settings(path: Option<&Path>) -> Result<RawSettings, ConfigError> {
    let file = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            Some((text, path.display().to_string()))
        }
        None => None,
    };
    let env = env_overrides(std::env::vars_os())?;
    let file = file
        .as_ref()
        .map(|(text, origin)| (text.as_str(), origin.as_str()));
    load_raw(file, Some(env))
}

/// Parses settings from TOML text alone (no environment), e.g. for tests.
pub fn from_toml_str(s: &str) -> Result<Settings, ConfigError> {
    load_raw(Some((s, "built-in text")), None)?.validate()
}

/// Merges the sources into raw settings. `env` holds `SIPWAKE__…` variables already
/// split by [`env_overrides`]; taking them as a value lets tests avoid the process
/// environment, which parallel tests share.
fn load_raw(
    file: Option<(&str, &str)>,
    env: Option<EnvOverrides>,
) -> Result<RawSettings, ConfigError> {
    let origin = file.map_or("defaults", |(_, origin)| origin);
    let mut builder = config::Config::builder();
    if let Some((text, _)) = file {
        builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
    }
    if let Some(env) = env {
        // Scalars are read as strings and converted by the deserializer: the crate's
        // `try_parsing` would turn an all-digit hex secret into a number and lose its
        // leading zeros.
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .separator("__")
                .source(Some(env.scalars)),
        );
        let mut lists = config::Environment::with_prefix(ENV_PREFIX)
            .separator("__")
            .try_parsing(true)
            .list_separator(",");
        for key in LIST_KEYS {
            lists = lists.with_list_parse_key(key);
        }
        builder = builder.add_source(lists.source(Some(env.lists)));
    }
    let merged = builder
        .build()
        .map_err(|e| ConfigError::from_config(e, origin))?;
    merged
        .try_deserialize()
        .map_err(|e| ConfigError::from_config(e, origin))
}

/// `SIPWAKE__…` environment variables, split by whether the key holds a list.
#[derive(Debug, Default)]
struct EnvOverrides {
    scalars: config::Map<String, String>,
    lists: config::Map<String, String>,
}

fn env_overrides<I>(vars: I) -> Result<EnvOverrides, ConfigError>
where
    I: IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
{
    let prefix = format!("{}__", ENV_PREFIX.to_lowercase());
    let mut out = EnvOverrides::default();
    for (name, value) in vars {
        // Variables of other programs may hold anything; only ours must be UTF-8.
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
        if LIST_KEYS.contains(&key.as_str()) {
            out.lists.insert(name, value);
        } else {
            out.scalars.insert(name, value);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

impl RawSettings {
    /// Checks every value and converts the raw settings into typed [`Settings`].
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let sip = self.sip.validate()?;
        let proxy = self.proxy.validate()?;
        let upstream = self.upstream.validate()?;
        let registrar = self.registrar.validate(upstream.uri.is_some())?;
        let store = self.store.validate()?;
        let log = self.log.validate()?;
        let push = self.push.validate()?;
        let relay = self.relay.validate()?;
        let server = self.server.validate()?;
        let auth = self.auth.validate(&sip, &proxy, registrar.mode)?;
        let admin = self.admin.validate()?;
        let limits = self.limits.validate()?;
        let tls = self.tls.validate(&sip)?;
        Ok(Settings {
            sip,
            proxy,
            upstream,
            registrar,
            store,
            log,
            push,
            relay,
            server,
            auth,
            admin,
            limits,
            tls,
        })
    }
}

/// Entries of a list with surrounding blanks trimmed and blank entries dropped.
fn entries(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter().map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn in_range(key: &str, value: u64, min: u64, max: u64, unit: &str) -> Result<u64, ConfigError> {
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

impl RawSip {
    fn validate(self) -> Result<SipSettings, ConfigError> {
        let mut listen: Vec<SocketAddr> = Vec::new();
        for entry in entries(&self.listen) {
            let addr: SocketAddr = entry.parse().map_err(|_| {
                ConfigError::invalid(
                    "sip.listen",
                    entry,
                    "not a socket address (write 127.0.0.1:5060 or [::1]:5060)",
                )
            })?;
            if listen.contains(&addr) {
                return Err(ConfigError::invalid("sip.listen", entry, "listed twice"));
            }
            listen.push(addr);
        }
        if listen.is_empty() {
            return Err(ConfigError::invalid(
                "sip.listen",
                self.listen.join(","),
                "at least one address is needed",
            ));
        }

        let (mut udp, mut tcp) = (false, false);
        for entry in entries(&self.transports) {
            match entry.to_ascii_lowercase().as_str() {
                "udp" => udp = true,
                "tcp" => tcp = true,
                "tls" => {
                    return Err(ConfigError::invalid(
                        "sip.transports",
                        entry,
                        "TLS listens on addresses of its own: set tls.listen",
                    ))
                }
                _ => {
                    return Err(ConfigError::invalid(
                        "sip.transports",
                        entry,
                        "unsupported transport (expected udp or tcp)",
                    ))
                }
            }
        }
        if !udp && !tcp {
            return Err(ConfigError::invalid(
                "sip.transports",
                self.transports.join(","),
                "at least one of udp, tcp is needed",
            ));
        }

        let advertised_host = match self.advertised_host.trim() {
            "" => None,
            host => Some(
                normalize_host(host)
                    .map_err(|reason| ConfigError::invalid("sip.advertised_host", host, reason))?,
            ),
        };

        let max_message_size = in_range(
            "sip.max_message_size",
            self.max_message_size,
            1024,
            1_048_576,
            "bytes",
        )?;
        // Upper bounds keep later timer arithmetic (64*T1, Instant + timeout) far from
        // overflow; they are well beyond any sensible setting.
        let tcp_idle = in_range(
            "sip.tcp_idle_timeout_secs",
            self.tcp_idle_timeout_secs,
            1,
            7 * 86_400,
            "seconds",
        )?;
        let t1 = in_range("sip.t1_ms", self.t1_ms, 1, 60_000, "milliseconds")?;
        let t2 = in_range("sip.t2_ms", self.t2_ms, 1, 600_000, "milliseconds")?;
        if t2 < t1 {
            return Err(ConfigError::invalid(
                "sip.t2_ms",
                t2.to_string(),
                format!("must not be less than sip.t1_ms ({t1})"),
            ));
        }
        let t4 = in_range("sip.t4_ms", self.t4_ms, 1, 600_000, "milliseconds")?;
        let timer_c = in_range("sip.timer_c_secs", self.timer_c_secs, 1, 86_400, "seconds")?;

        Ok(SipSettings {
            listen,
            udp,
            tcp,
            advertised_host,
            max_message_size: usize::try_from(max_message_size).unwrap_or(usize::MAX),
            tcp_idle_timeout: Duration::from_secs(tcp_idle),
            t1: Duration::from_millis(t1),
            t2: Duration::from_millis(t2),
            t4: Duration::from_millis(t4),
            timer_c: Duration::from_secs(timer_c),
        })
    }
}

impl RawProxy {
    fn validate(self) -> Result<ProxySettings, ConfigError> {
        let mut domains: Vec<String> = Vec::new();
        for entry in entries(&self.domains) {
            let domain = normalize_host(entry)
                .map_err(|reason| ConfigError::invalid("proxy.domains", entry, reason))?;
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }

        let trusted_networks = entries(&self.trusted_networks)
            .map(|entry| {
                IpNet::parse(entry)
                    .map_err(|reason| ConfigError::invalid("proxy.trusted_networks", entry, reason))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let secret = self.flow_token_secret.trim();
        let flow_token_secret = if secret.is_empty() {
            None
        } else {
            // The secret itself must not end up in logs, so the error only gives its size.
            let shown = format!("<{} characters>", secret.len());
            let bytes = decode_hex(secret).map_err(|reason| {
                ConfigError::invalid("proxy.flow_token_secret", &shown, reason)
            })?;
            if bytes.len() < 16 {
                return Err(ConfigError::invalid(
                    "proxy.flow_token_secret",
                    shown,
                    "too short: at least 16 bytes (32 hex digits) are needed",
                ));
            }
            Some(bytes)
        };

        Ok(ProxySettings {
            domains,
            trusted_networks,
            flow_token_secret,
        })
    }
}

impl RawUpstream {
    fn validate(self) -> Result<UpstreamSettings, ConfigError> {
        let uri = match self.uri.trim() {
            "" => None,
            uri => Some(
                UpstreamTarget::parse(uri)
                    .map_err(|reason| ConfigError::invalid("upstream.uri", uri, reason))?,
            ),
        };
        Ok(UpstreamSettings { uri })
    }
}

impl RawRegistrar {
    fn validate(self, has_upstream: bool) -> Result<RegistrarSettings, ConfigError> {
        let mode = match self.mode.trim().to_ascii_lowercase().as_str() {
            "local" => RegistrarMode::Local,
            "relay" => RegistrarMode::Relay,
            _ => {
                return Err(ConfigError::invalid(
                    "registrar.mode",
                    self.mode,
                    "expected local or relay",
                ))
            }
        };
        if mode == RegistrarMode::Relay && !has_upstream {
            return Err(ConfigError::invalid(
                "registrar.mode",
                self.mode,
                "relay needs upstream.uri to be set",
            ));
        }

        let max = u64::from(u32::MAX);
        let min_expires = in_range("registrar.min_expires", self.min_expires, 1, max, "seconds")?;
        let max_expires = in_range("registrar.max_expires", self.max_expires, 1, max, "seconds")?;
        if max_expires < min_expires {
            return Err(ConfigError::invalid(
                "registrar.max_expires",
                max_expires.to_string(),
                format!("must not be less than registrar.min_expires ({min_expires})"),
            ));
        }
        let default_expires = self.default_expires;
        if !(min_expires..=max_expires).contains(&default_expires) {
            return Err(ConfigError::invalid(
                "registrar.default_expires",
                default_expires.to_string(),
                format!(
                    "must be between registrar.min_expires ({min_expires}) and \
                     registrar.max_expires ({max_expires})"
                ),
            ));
        }
        let max_contacts = usize::try_from(self.max_contacts)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ConfigError::invalid(
                    "registrar.max_contacts",
                    self.max_contacts.to_string(),
                    "must be at least 1",
                )
            })?;

        // The three values were checked against u32::MAX above.
        let to_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(RegistrarSettings {
            mode,
            min_expires: to_u32(min_expires),
            max_expires: to_u32(max_expires),
            default_expires: to_u32(default_expires),
            max_contacts,
        })
    }
}

impl RawStore {
    fn validate(self) -> Result<StoreSettings, ConfigError> {
        let backend = match self.backend.trim().to_ascii_lowercase().as_str() {
            "sqlite" => StoreBackend::Sqlite,
            "memory" => StoreBackend::Memory,
            _ => {
                return Err(ConfigError::invalid(
                    "store.backend",
                    self.backend,
                    "expected sqlite or memory",
                ))
            }
        };
        let path = self.path.trim();
        if backend == StoreBackend::Sqlite && path.is_empty() {
            return Err(ConfigError::invalid(
                "store.path",
                self.path,
                "the sqlite backend needs a file name",
            ));
        }
        let sync_full = match self.synchronous.trim().to_ascii_lowercase().as_str() {
            "normal" => false,
            "full" => true,
            _ => {
                return Err(ConfigError::invalid(
                    "store.synchronous",
                    self.synchronous,
                    "expected normal or full",
                ))
            }
        };
        let behind = in_range(
            "store.refresh_write_behind_ms",
            self.refresh_write_behind_ms,
            0,
            10_000,
            "milliseconds",
        )?;
        Ok(StoreSettings {
            backend,
            path: PathBuf::from(path),
            sync_full,
            refresh_write_behind: Duration::from_millis(behind),
        })
    }
}

impl RawLog {
    fn validate(self) -> Result<LogSettings, ConfigError> {
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
        let format = match self.format.trim().to_ascii_lowercase().as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::invalid(
                    "log.format",
                    self.format,
                    "expected human or json",
                ))
            }
        };
        Ok(LogSettings {
            level: level.to_owned(),
            format,
        })
    }
}

/// `s` trimmed, or `None` when blank.
fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// An RFC 3261 `token` (header names, URI parameter names).
fn is_sip_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c))
}

/// An absolute `http://` or `https://` URL with a host and no query or fragment. Base
/// URLs (`base`) come back without a trailing slash, ready for `{base}/path`.
fn http_url(key: &str, value: &str, base: bool) -> Result<String, ConfigError> {
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

impl RawPush {
    fn validate(self) -> Result<PushSettings, ConfigError> {
        let policy = match self.policy.trim().to_ascii_lowercase().as_str() {
            "always" => PushPolicy::Always,
            "when_unreachable" => PushPolicy::WhenUnreachable,
            _ => {
                return Err(ConfigError::invalid(
                    "push.policy",
                    self.policy,
                    "expected always or when_unreachable",
                ))
            }
        };
        let wake = in_range(
            "push.wake_timeout_ms",
            self.wake_timeout_ms,
            100,
            300_000,
            "milliseconds",
        )?;
        let mut names = Vec::new();
        for (key, value) in [
            ("push.hint_header", &self.hint_header),
            ("push.token_header", &self.token_header),
            ("push.token_param", &self.token_param),
        ] {
            let v = value.trim();
            if !is_sip_token(v) {
                return Err(ConfigError::invalid(
                    key,
                    v,
                    "not a header / parameter name (letters, digits, - . ! % * _ + ` ' ~)",
                ));
            }
            names.push(v.to_owned());
        }
        let default_provider = match self.default_provider.trim().to_ascii_lowercase().as_str() {
            "auto" => DefaultProvider::Auto,
            "apns" => DefaultProvider::Apns,
            "fcm" => DefaultProvider::Fcm,
            "webhook" => DefaultProvider::Webhook,
            _ => {
                return Err(ConfigError::invalid(
                    "push.default_provider",
                    self.default_provider,
                    "expected auto, apns, fcm or webhook",
                ))
            }
        };
        let binding_ttl = in_range(
            "push.binding_ttl_secs",
            self.binding_ttl_secs,
            0,
            365 * 86_400,
            "seconds",
        )?;
        let max_expires = in_range(
            "push.max_expires",
            self.max_expires,
            1,
            u64::from(u32::MAX),
            "seconds",
        )?;
        let flow_timeout = in_range(
            "push.flow_timeout_secs",
            self.flow_timeout_secs,
            1,
            86_400,
            "seconds",
        )?;
        let max_parked = in_range("push.max_parked", self.max_parked, 1, 1_000_000, "calls")?;
        let max_parked_per_aor = in_range(
            "push.max_parked_per_aor",
            self.max_parked_per_aor,
            1,
            max_parked,
            "calls (at most push.max_parked)",
        )?;
        let [hint_header, token_header, token_param]: [String; 3] =
            names.try_into().unwrap_or_default();
        Ok(PushSettings {
            policy,
            wake_timeout: Duration::from_millis(wake),
            hint_header,
            token_header,
            token_param,
            default_provider,
            binding_ttl: Duration::from_secs(binding_ttl),
            max_expires: u32::try_from(max_expires).unwrap_or(u32::MAX),
            flow_timeout: Duration::from_secs(flow_timeout),
            max_parked: usize::try_from(max_parked).unwrap_or(usize::MAX),
            max_parked_per_aor: usize::try_from(max_parked_per_aor).unwrap_or(usize::MAX),
            apns: self.apns.validate()?,
            fcm: self.fcm.validate()?,
            webhook: self.webhook.validate()?,
        })
    }
}

impl RawApns {
    fn validate(self) -> Result<Option<ApnsSettings>, ConfigError> {
        let key_file = non_empty(&self.key_file);
        let key_id = non_empty(&self.key_id);
        let team_id = non_empty(&self.team_id);
        let cert_file = non_empty(&self.cert_file);
        let production_url = http_url("push.apns.production_url", &self.production_url, true)?;
        let sandbox_url = http_url("push.apns.sandbox_url", &self.sandbox_url, true)?;
        let bundle_id = non_empty(&self.bundle_id);
        if let Some(b) = &bundle_id {
            if b.ends_with(".voip") || b.contains(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    "push.apns.bundle_id",
                    b,
                    "give the bundle id without .voip (the VoIP topic is <bundle_id>.voip)",
                ));
            }
        }
        match (&key_file, &cert_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "push.apns.cert_file",
                    self.cert_file,
                    "set either key_file (token auth) or cert_file (certificate auth), not both",
                ))
            }
            (None, None) => {
                for (key, v) in [
                    ("push.apns.key_id", &key_id),
                    ("push.apns.team_id", &team_id),
                ] {
                    if let Some(v) = v {
                        return Err(ConfigError::invalid(
                            key,
                            v,
                            "token auth needs push.apns.key_file too",
                        ));
                    }
                }
                // APNs is not configured.
                return Ok(None);
            }
            (Some(_), None) => {
                for (key, v) in [
                    ("push.apns.key_id", &key_id),
                    ("push.apns.team_id", &team_id),
                ] {
                    match v {
                        None => {
                            return Err(ConfigError::invalid(
                                key,
                                "",
                                "token auth (push.apns.key_file) needs push.apns.key_id and push.apns.team_id",
                            ))
                        }
                        Some(v) if !v.bytes().all(|c| c.is_ascii_alphanumeric()) => {
                            return Err(ConfigError::invalid(key, v, "expected letters and digits"))
                        }
                        Some(_) => {}
                    }
                }
            }
            (None, Some(_)) => {}
        }
        Ok(Some(ApnsSettings {
            key_file: key_file.map(PathBuf::from),
            key_id,
            team_id,
            cert_file: cert_file.map(PathBuf::from),
            bundle_id,
            sandbox: self.sandbox,
            production_url,
            sandbox_url,
            ca_file: non_empty(&self.ca_file).map(PathBuf::from),
            payload_template: non_empty(&self.payload_template).map(PathBuf::from),
        }))
    }
}

impl RawFcm {
    fn validate(self) -> Result<Option<FcmSettings>, ConfigError> {
        let base_url = http_url("push.fcm.base_url", &self.base_url, true)?;
        let token_uri = match non_empty(&self.token_uri) {
            Some(t) => Some(http_url("push.fcm.token_uri", &t, false)?),
            None => None,
        };
        let project_id = non_empty(&self.project_id);
        let Some(file) = non_empty(&self.service_account_file) else {
            return Ok(None);
        };
        Ok(Some(FcmSettings {
            service_account_file: PathBuf::from(file),
            project_id,
            base_url,
            token_uri,
            ca_file: non_empty(&self.ca_file).map(PathBuf::from),
        }))
    }
}

impl RawWebhook {
    fn validate(self) -> Result<Option<WebhookSettings>, ConfigError> {
        let timeout = in_range(
            "push.webhook.timeout_ms",
            self.timeout_ms,
            1,
            60_000,
            "milliseconds",
        )?;
        let Some(url) = non_empty(&self.url) else {
            return Ok(None);
        };
        let url = http_url("push.webhook.url", &url, false)?;
        Ok(Some(WebhookSettings {
            url,
            timeout: Duration::from_millis(timeout),
        }))
    }
}

impl RawAuth {
    fn validate(
        self,
        sip: &SipSettings,
        proxy: &ProxySettings,
        mode: RegistrarMode,
    ) -> Result<AuthSettings, ConfigError> {
        let users_file = non_empty(&self.users_file).map(PathBuf::from);
        if self.enabled && users_file.is_none() {
            return Err(ConfigError::invalid(
                "auth.users_file",
                "",
                "auth.enabled needs a users file (HA1 hashes; see sipwake --hash-user)",
            ));
        }
        if self.enabled && mode == RegistrarMode::Relay {
            return Err(ConfigError::invalid(
                "auth.enabled",
                "true",
                "in relay mode the upstream registrar authenticates; sipwake stays transparent",
            ));
        }
        let realm = match non_empty(&self.realm) {
            Some(r) => {
                // quoted in challenges and a field of the users file
                let bad = |c: char| c == '"' || c == '\\' || c == ':' || c.is_control();
                if r.chars().any(bad) {
                    return Err(ConfigError::invalid(
                        "auth.realm",
                        r,
                        "must not contain quotes, backslashes, colons or control characters",
                    ));
                }
                r
            }
            None => proxy
                .domains
                .first()
                .cloned()
                .or_else(|| sip.advertised_host.clone())
                .unwrap_or_else(|| "sipwake".to_owned()),
        };
        let ttl = in_range(
            "auth.nonce_ttl_secs",
            self.nonce_ttl_secs,
            1,
            86_400,
            "seconds",
        )?;
        let mut algorithms = Vec::new();
        for entry in entries(&self.algorithms) {
            let a = DigestAlgorithm::parse(entry).ok_or_else(|| {
                ConfigError::invalid("auth.algorithms", entry, "expected SHA-256 or MD5")
            })?;
            if algorithms.contains(&a) {
                return Err(ConfigError::invalid(
                    "auth.algorithms",
                    entry,
                    "listed twice",
                ));
            }
            algorithms.push(a);
        }
        if algorithms.is_empty() {
            return Err(ConfigError::invalid(
                "auth.algorithms",
                self.algorithms.join(","),
                "at least one of SHA-256, MD5 is needed",
            ));
        }
        Ok(AuthSettings {
            enabled: self.enabled,
            users_file,
            realm,
            nonce_ttl: Duration::from_secs(ttl),
            algorithms,
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

// ---------------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------------

impl IpNet {
    /// Parses `addr/prefix` or a bare address (a single host: /32 or /128). Host bits
    /// below the prefix are cleared, so `10.1.2.3/8` means `10.0.0.0/8`.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (addr_part, prefix_part) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr_part = addr_part
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr_part);
        let addr: IpAddr = addr_part
            .parse()
            .map_err(|_| format!("{addr_part:?} is not an IP address"))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix =
            match prefix_part {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                    format!("prefix length {p:?} is not a number from 0 to {max}")
                })?,
            };
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as
    /// seen on dual-stack sockets) match IPv4 networks, and IPv4 addresses match
    /// networks written in the mapped form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(net) == u32::from(ip) & mask32(self.prefix)
            }
            (IpAddr::V4(net), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|ip| u32::from(net) == u32::from(ip) & mask32(self.prefix)),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(net) == u128::from(ip) & mask128(self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                u128::from(net) == u128::from(ip.to_ipv6_mapped()) & mask128(self.prefix)
            }
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TransportKind {
    /// Lower-case name as used in URIs (`udp`, `tcp`, `tls`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl UpstreamTarget {
    /// Parses `sip:host[:port][;transport=udp|tcp]`. The host is a name, an IPv4
    /// address or an IPv6 address in brackets; `;lr` is accepted and ignored because
    /// outbound-proxy URIs often carry it.
    pub fn parse(uri: &str) -> Result<UpstreamTarget, String> {
        let uri = uri.trim();
        let (scheme, rest) = uri
            .split_once(':')
            .ok_or("not a SIP URI (write sip:host[:port][;transport=udp|tcp|tls])")?;
        let sips = match scheme.to_ascii_lowercase().as_str() {
            "sip" => false,
            "sips" => true,
            _ => {
                return Err(format!(
                    "scheme {scheme:?} is not supported; use sip: or sips:"
                ))
            }
        };
        let (hostport, params) = match rest.split_once(';') {
            Some((hp, params)) => (hp, Some(params)),
            None => (rest, None),
        };
        if hostport.contains('@') {
            return Err("a user part is not allowed; give only host[:port]".to_owned());
        }
        if hostport.contains(['?', '>', '<', ' ']) {
            return Err("headers and angle brackets are not allowed".to_owned());
        }
        let (host, mut port) = split_host_port(hostport)?;

        let mut transport = TransportKind::Udp;
        let mut transport_given = false;
        for param in params.into_iter().flat_map(|p| p.split(';')) {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "transport" => {
                    transport_given = true;
                    transport = match value.trim().to_ascii_lowercase().as_str() {
                        "udp" => TransportKind::Udp,
                        "tcp" => TransportKind::Tcp,
                        "tls" => TransportKind::Tls,
                        other => {
                            return Err(format!(
                                "transport {other:?} is not supported (expected udp, tcp or tls)"
                            ))
                        }
                    }
                }
                "lr" => {}
                other => return Err(format!("URI parameter {other:?} is not supported")),
            }
        }
        if sips {
            // RFC 3261 §26.2.2: sips means TLS, over TCP whatever transport says
            if transport_given && transport == TransportKind::Udp {
                return Err("sips: needs TLS over TCP, not transport=udp".to_owned());
            }
            transport = TransportKind::Tls;
        }
        if transport == TransportKind::Tls && !has_port(hostport) {
            port = 5061;
        }
        Ok(UpstreamTarget {
            uri: uri.to_owned(),
            host,
            port,
            transport,
        })
    }

    /// `host:port` with an IPv6 host in brackets, as written in Route and Via.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The host as an IP address, when it is a literal (no DNS needed).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// True if `host[:port]` / `[v6][:port]` names a port.
fn has_port(s: &str) -> bool {
    match s.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .is_some_and(|(_, after)| after.starts_with(':')),
        None => s.contains(':'),
    }
}

/// Splits `host[:port]` / `[v6][:port]`; the host comes back without brackets.
fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("IPv6 address without closing bracket")?;
        let v6: Ipv6Addr = v6
            .parse()
            .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after the IPv6 address")?),
        };
        (v6.to_string(), port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err("an IPv6 address must be written in brackets".to_owned());
        }
        (normalize_host(host)?, port)
    };
    let port = match port {
        None => 5060,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
    };
    Ok((host, port))
}

/// Checks a host (name or IP literal) and returns it lower-cased, IPv6 in brackets.
fn normalize_host(host: &str) -> Result<String, String> {
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

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits".to_owned());
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => Ok((hi << 4) | lo),
            _ => Err("not hexadecimal".to_owned()),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Logging format, [server]: graceful shutdown
// ---------------------------------------------------------------------------------------

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line, fields at the top level (for log shippers).
    Json,
}

/// `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// On SIGTERM, how long calls in progress may go on before sipwake stops anyway.
    pub drain_timeout: Duration,
    /// A dialog whose BYE sipwake never saw is forgotten after this long.
    pub dialog_max_age: Duration,
}

/// Raw `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    /// Seconds.
    pub drain_timeout_secs: u64,
    /// Seconds.
    pub dialog_max_age_secs: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            drain_timeout_secs: 30,
            dialog_max_age_secs: 14_400,
        }
    }
}

// ---------------------------------------------------------------------------------------
// [limits]
// ---------------------------------------------------------------------------------------

/// What happens to a request over a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// Answer `503 Service Unavailable` with `Retry-After` (stateless, sent once).
    Reject,
    /// Drop it without an answer.
    Drop,
}

/// A token bucket: `rate` requests per second on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens added per second; 0 turns the limit off.
    pub rate: u32,
    /// Bucket size.
    pub burst: u32,
}

/// `[limits]` section. Sources are IPv4 addresses and IPv6 /64 prefixes; trusted
/// networks (`proxy.trusted_networks`) are exempt from the per-source limits.
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

/// Raw `[limits]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLimits {
    /// `reject` or `drop`.
    pub action: String,
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
    /// Seconds.
    pub first_message_timeout_secs: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            action: "reject".to_owned(),
            register_per_source_rate: 200,
            register_per_source_burst: 1000,
            invite_per_source_rate: 100,
            invite_per_source_burst: 500,
            register_per_aor_rate: 5,
            register_per_aor_burst: 50,
            table_size: 16_384,
            max_connections: 10_000,
            max_connections_per_source: 1000,
            first_message_timeout_secs: 30,
        }
    }
}

impl RawServer {
    fn validate(self) -> Result<ServerSettings, ConfigError> {
        let drain = in_range(
            "server.drain_timeout_secs",
            self.drain_timeout_secs,
            0,
            86_400,
            "seconds",
        )?;
        let max_age = in_range(
            "server.dialog_max_age_secs",
            self.dialog_max_age_secs,
            60,
            30 * 86_400,
            "seconds",
        )?;
        Ok(ServerSettings {
            drain_timeout: Duration::from_secs(drain),
            dialog_max_age: Duration::from_secs(max_age),
        })
    }
}

// ---------------------------------------------------------------------------------------
// [admin]
// ---------------------------------------------------------------------------------------

/// `[admin]` section. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where the admin HTTP API listens; `None`: no admin API.
    pub listen: Option<SocketAddr>,
    /// Bearer token every endpoint but `/healthz` requires; `None`: no auth.
    pub token: Option<String>,
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// Raw `[admin]` section.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    /// Socket address; empty: disabled.
    pub listen: String,
    /// Bearer token; empty: none.
    pub token: String,
}

impl fmt::Debug for RawAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAdmin")
            .field("listen", &self.listen)
            .field("token", &(!self.token.is_empty()).then_some("(hidden)"))
            .finish()
    }
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8060".to_owned(),
            token: String::new(),
        }
    }
}

/// Shortest admin token accepted: long enough not to be guessed.
const MIN_ADMIN_TOKEN: usize = 16;

impl RawAdmin {
    fn validate(self) -> Result<AdminSettings, ConfigError> {
        let listen = self.listen.trim();
        let listen = if listen.is_empty() {
            None
        } else {
            Some(SocketAddr::from_str(listen).map_err(|_| {
                ConfigError::invalid(
                    "admin.listen",
                    listen,
                    "not a socket address (e.g. 127.0.0.1:8060 or [::1]:8060; \"\" disables)",
                )
            })?)
        };
        let token = self.token.trim();
        let token = if token.is_empty() {
            None
        } else if token.len() < MIN_ADMIN_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            // the value is a secret: never repeated in the error
            return Err(ConfigError::invalid(
                "admin.token",
                "(hidden)",
                format!("at least {MIN_ADMIN_TOKEN} printable ASCII characters without spaces"),
            ));
        } else {
            Some(token.to_owned())
        };
        Ok(AdminSettings { listen, token })
    }
}

impl RawLimits {
    fn validate(self) -> Result<LimitsSettings, ConfigError> {
        let action = match self.action.trim().to_ascii_lowercase().as_str() {
            "reject" => OverLimit::Reject,
            "drop" => OverLimit::Drop,
            _ => {
                return Err(ConfigError::invalid(
                    "limits.action",
                    self.action,
                    "expected reject or drop",
                ))
            }
        };
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
        let first_message = in_range(
            "limits.first_message_timeout_secs",
            self.first_message_timeout_secs,
            1,
            3600,
            "seconds",
        )?;
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Ok(LimitsSettings {
            action,
            register_per_source,
            invite_per_source,
            register_per_aor,
            table_size: size(table_size),
            max_connections: size(max_connections),
            max_connections_per_source: size(max_connections_per_source),
            first_message_timeout: Duration::from_secs(first_message),
        })
    }
}

// ---------------------------------------------------------------------------------------
// [tls]
// ---------------------------------------------------------------------------------------

/// `[tls]` section: SIP over TLS (RFC 3261 §26).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// TLS listen addresses; empty: no TLS listener.
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain, leaf first; set whenever `listen` is not empty.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate; set whenever `listen` is not empty.
    pub key_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for outgoing TLS connections (the
    /// upstream, `sips:` next hops) besides the built-in web roots.
    pub ca_file: Option<PathBuf>,
}

/// Raw `[tls]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    /// Socket addresses, IPv6 in brackets; empty: no TLS listener.
    pub listen: Vec<String>,
    /// Path; empty: none.
    pub cert_file: String,
    /// Path; empty: none.
    pub key_file: String,
    /// Path; empty: none.
    pub ca_file: String,
}

impl RawTls {
    fn validate(self, sip: &SipSettings) -> Result<TlsSettings, ConfigError> {
        let mut listen: Vec<SocketAddr> = Vec::new();
        for entry in entries(&self.listen) {
            let addr: SocketAddr = entry.parse().map_err(|_| {
                ConfigError::invalid(
                    "tls.listen",
                    entry,
                    "not a socket address (write 127.0.0.1:5061 or [::1]:5061)",
                )
            })?;
            if listen.contains(&addr) {
                return Err(ConfigError::invalid("tls.listen", entry, "listed twice"));
            }
            if sip.tcp && addr.port() != 0 && sip.listen.contains(&addr) {
                return Err(ConfigError::invalid(
                    "tls.listen",
                    entry,
                    "already a TCP listener in sip.listen; TLS needs its own port (usually 5061)",
                ));
            }
            listen.push(addr);
        }
        let cert_file = non_empty(&self.cert_file).map(PathBuf::from);
        let key_file = non_empty(&self.key_file).map(PathBuf::from);
        let needed = !listen.is_empty() || cert_file.is_some() || key_file.is_some();
        if needed && cert_file.is_none() {
            return Err(ConfigError::invalid(
                "tls.cert_file",
                "",
                "required with tls.listen and tls.key_file (PEM certificate chain)",
            ));
        }
        if needed && key_file.is_none() {
            return Err(ConfigError::invalid(
                "tls.key_file",
                "",
                "required with tls.listen and tls.cert_file (PEM private key)",
            ));
        }
        Ok(TlsSettings {
            listen,
            cert_file,
            key_file,
            ca_file: non_empty(&self.ca_file).map(PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(toml: &str) -> ConfigError {
        match from_toml_str(toml) {
            Ok(s) => panic!("expected an error for {toml:?}, got {s:?}"),
            Err(e) => e,
        }
    }

    fn env(vars: &[(&str, &str)]) -> EnvOverrides {
        env_overrides(vars.iter().map(|(k, v)| ((*k).into(), (*v).into()))).expect("utf-8")
    }

    fn with_env(toml: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        load_raw(Some((toml, "test")), Some(env(vars)))?.validate()
    }

    #[test]
    fn defaults() {
        let s = from_toml_str("").expect("defaults are valid");
        assert_eq!(
            s.sip.listen,
            vec!["127.0.0.1:5060".parse::<SocketAddr>().unwrap()]
        );
        assert!(s.sip.udp && s.sip.tcp);
        assert_eq!(s.sip.advertised_host, None);
        assert_eq!(s.sip.max_message_size, 65535);
        assert_eq!(s.sip.tcp_idle_timeout, Duration::from_secs(3600));
        assert_eq!(s.sip.t1, Duration::from_millis(500));
        assert_eq!(s.sip.t2, Duration::from_millis(4000));
        assert_eq!(s.sip.t4, Duration::from_millis(5000));
        assert_eq!(s.sip.timer_c, Duration::from_secs(180));
        assert!(s.proxy.domains.is_empty());
        assert_eq!(
            s.proxy.trusted_networks,
            vec![
                IpNet::parse("127.0.0.0/8").unwrap(),
                IpNet::parse("::1/128").unwrap()
            ]
        );
        assert_eq!(s.proxy.flow_token_secret, None);
        assert!(s.upstream.uri.is_none());
        assert_eq!(s.registrar.mode, RegistrarMode::Local);
        assert_eq!(
            (
                s.registrar.min_expires,
                s.registrar.max_expires,
                s.registrar.default_expires
            ),
            (60, 3600, 3600)
        );
        assert_eq!(s.registrar.max_contacts, 10);
        assert_eq!(s.store.backend, StoreBackend::Sqlite);
        assert_eq!(s.store.path, PathBuf::from("data/sipwake.db"));
        assert!(!s.store.sync_full);
        assert_eq!(s.log.level, "info");
    }

    /// Flattens a `config` table into dotted keys.
    fn keys(prefix: &str, table: config::Map<String, config::Value>, out: &mut Vec<String>) {
        for (k, v) in table {
            let key = join_key(prefix, &k);
            match v.kind {
                config::ValueKind::Table(t) => keys(&key, t, out),
                _ => out.push(key),
            }
        }
    }

    #[test]
    fn shipped_config_is_the_defaults_with_every_key() {
        use config::Source;
        let text = include_str!("../conf/sipwake.toml");
        let raw = load_raw(Some((text, "conf/sipwake.toml")), None).expect("parses");
        assert_eq!(raw, RawSettings::default());
        assert_eq!(
            from_toml_str(text).expect("valid"),
            from_toml_str("").expect("valid")
        );

        let mut written = Vec::new();
        let file = config::File::from_str(text, config::FileFormat::Toml);
        keys("", file.collect().expect("parses"), &mut written);
        let mut all = Vec::new();
        // The serializer drops empty lists, so give every list an entry.
        let mut every = RawSettings::default();
        every.proxy.domains.push("example.com".to_owned());
        every.tls.listen.push("127.0.0.1:5061".to_owned());
        let defaults = config::Config::try_from(&every).expect("serializes");
        keys("", defaults.collect().expect("collects"), &mut all);
        written.sort();
        all.sort();
        assert_eq!(written, all, "conf/sipwake.toml must set every key");
    }

    #[test]
    fn production_example_is_valid_and_locked_down() {
        let text = include_str!("../conf/sipwake.production.toml");
        let s = from_toml_str(text).expect("conf/sipwake.production.toml is valid");
        assert!(s.auth.enabled, "auth on");
        assert!(!s.tls.listen.is_empty(), "TLS on");
        assert!(s.admin.token.is_some(), "admin API behind a token");
        assert!(s.admin.listen.is_some_and(|a| a.ip().is_loopback()));
        assert!(s.sip.listen.iter().any(|a| !a.ip().is_loopback()), "public");
        assert_eq!(s.log.format, LogFormat::Json);
    }

    #[test]
    fn parses_a_full_file() {
        let s = from_toml_str(
            r#"
            [sip]
            listen = ["0.0.0.0:5070", "[::]:5070"]
            transports = ["TCP"]
            advertised_host = "SIP.Example.com"
            timer_c_secs = 1
            [proxy]
            domains = ["Example.COM", "example.com", " "]
            trusted_networks = ["10.0.0.0/8", "192.168.1.7"]
            flow_token_secret = "000102030405060708090a0b0c0d0e0f"
            [upstream]
            uri = "sip:[2001:db8::1]:5080;transport=tcp;lr"
            [registrar]
            mode = "relay"
            [relay]
            contact_rewrite = true
            [store]
            backend = "memory"
            synchronous = "full"
            [log]
            level = "warn,sipwake=debug"
            "#,
        )
        .expect("valid");
        assert_eq!(s.sip.listen.len(), 2);
        assert!(!s.sip.udp && s.sip.tcp);
        assert_eq!(s.sip.advertised_host.as_deref(), Some("sip.example.com"));
        assert_eq!(s.sip.timer_c, Duration::from_secs(1));
        assert_eq!(s.proxy.domains, vec!["example.com"]);
        assert_eq!(
            s.proxy.flow_token_secret,
            Some((0u8..16).collect::<Vec<_>>())
        );
        let up = s.upstream.uri.as_ref().expect("upstream");
        assert_eq!(
            (up.host.as_str(), up.port, up.transport),
            ("2001:db8::1", 5080, TransportKind::Tcp)
        );
        assert_eq!(up.host_port(), "[2001:db8::1]:5080");
        assert_eq!(s.registrar.mode, RegistrarMode::Relay);
        assert!(s.relay.contact_rewrite);
        assert_eq!(s.store.backend, StoreBackend::Memory);
        assert!(s.store.sync_full);
        assert!(s.is_trusted("192.168.1.7".parse().unwrap()));
        assert!(s.is_trusted("10.200.0.1".parse().unwrap()));
        assert!(!s.is_trusted("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn each_validation_error_names_its_key() {
        let cases: &[(&str, &str)] = &[
            ("[sip]\nlisten = []", "sip.listen"),
            ("[sip]\nlisten = [\"127.0.0.1\"]", "sip.listen"),
            ("[sip]\nlisten = [\"::1:5060\"]", "sip.listen"),
            (
                "[sip]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]",
                "sip.listen",
            ),
            ("[sip]\ntransports = [\"tls\"]", "sip.transports"),
            ("[sip]\ntransports = []", "sip.transports"),
            (
                "[sip]\nadvertised_host = \"host:5060\"",
                "sip.advertised_host",
            ),
            ("[sip]\nmax_message_size = 1023", "sip.max_message_size"),
            ("[sip]\nmax_message_size = 1048577", "sip.max_message_size"),
            (
                "[sip]\ntcp_idle_timeout_secs = 0",
                "sip.tcp_idle_timeout_secs",
            ),
            ("[sip]\nt1_ms = 0", "sip.t1_ms"),
            ("[sip]\nt2_ms = 100", "sip.t2_ms"),
            ("[sip]\nt4_ms = 0", "sip.t4_ms"),
            ("[sip]\ntimer_c_secs = 0", "sip.timer_c_secs"),
            ("[proxy]\ndomains = [\"exa mple.com\"]", "proxy.domains"),
            (
                "[proxy]\ntrusted_networks = [\"10.0.0.0/33\"]",
                "proxy.trusted_networks",
            ),
            (
                "[proxy]\ntrusted_networks = [\"localhost\"]",
                "proxy.trusted_networks",
            ),
            (
                "[proxy]\nflow_token_secret = \"abcd\"",
                "proxy.flow_token_secret",
            ),
            (
                "[proxy]\nflow_token_secret = \"zz\"",
                "proxy.flow_token_secret",
            ),
            ("[upstream]\nuri = \"pbx.example.com\"", "upstream.uri"),
            ("[upstream]\nuri = \"http://pbx\"", "upstream.uri"),
            (
                "[upstream]\nuri = \"sips:pbx;transport=udp\"",
                "upstream.uri",
            ),
            ("[upstream]\nuri = \"sip:alice@pbx\"", "upstream.uri"),
            ("[upstream]\nuri = \"sip:2001:db8::1\"", "upstream.uri"),
            ("[upstream]\nuri = \"sip:pbx:0\"", "upstream.uri"),
            (
                "[upstream]\nuri = \"sip:pbx;transport=sctp\"",
                "upstream.uri",
            ),
            ("[registrar]\nmode = \"proxy\"", "registrar.mode"),
            ("[registrar]\nmode = \"relay\"", "registrar.mode"),
            ("[registrar]\nmin_expires = 0", "registrar.min_expires"),
            ("[registrar]\nmin_expires = 4000", "registrar.max_expires"),
            (
                "[registrar]\ndefault_expires = 30",
                "registrar.default_expires",
            ),
            (
                "[registrar]\nmax_expires = 4294967296",
                "registrar.max_expires",
            ),
            ("[registrar]\nmax_contacts = 0", "registrar.max_contacts"),
            ("[store]\nbackend = \"redis\"", "store.backend"),
            ("[store]\npath = \"\"", "store.path"),
            ("[store]\nsynchronous = \"off\"", "store.synchronous"),
            ("[log]\nlevel = \"\"", "log.level"),
            ("[log]\nlevel = \"sipwake=loud\"", "log.level"),
        ];
        for (toml, key) in cases {
            let e = err(toml);
            assert_eq!(e.key(), Some(*key), "{toml:?} gave {e}");
            assert!(
                e.to_string().starts_with(&format!("{key}: ")),
                "{toml:?} gave {e}"
            );
            assert!(
                matches!(e, ConfigError::Invalid { .. }),
                "{toml:?} gave {e:?}"
            );
        }
    }

    #[test]
    fn invalid_error_display() {
        let e = err("[sip]\nlisten = [\"nonsense\"]");
        assert_eq!(
            e.to_string(),
            "sip.listen: invalid value \"nonsense\": not a socket address (write 127.0.0.1:5060 or [::1]:5060)"
        );
    }

    #[test]
    fn admin_section() {
        let s = from_toml_str("").unwrap();
        assert_eq!(s.admin.listen, Some("127.0.0.1:8060".parse().unwrap()));
        assert_eq!(s.admin.token, None);
        let s = from_toml_str("[admin]\nlisten = \"\"\ntoken = \"0123456789abcdefX\"").unwrap();
        assert_eq!(s.admin.listen, None);
        assert_eq!(s.admin.token.as_deref(), Some("0123456789abcdefX"));
        assert!(
            !format!("{s:?}").contains("0123456789abcdefX"),
            "Debug hides it"
        );
        let e = err("[admin]\nlisten = \"localhost\"");
        assert_eq!(e.key(), Some("admin.listen"), "{e}");
        let e = err("[admin]\ntoken = \"shortsecret\"");
        assert_eq!(e.key(), Some("admin.token"), "{e}");
        assert!(!e.to_string().contains("shortsecret"), "{e}");
        let s = with_env("", &[("SIPWAKE__ADMIN__LISTEN", "[::1]:9000")]).unwrap();
        assert_eq!(s.admin.listen, Some("[::1]:9000".parse().unwrap()));
    }

    #[test]
    fn secret_is_not_repeated_in_errors() {
        let e = err("[proxy]\nflow_token_secret = \"deadbeefdeadbeef\"");
        assert!(!e.to_string().contains("deadbeef"), "{e}");
    }

    #[test]
    fn type_errors_name_the_key() {
        let e = err("[registrar]\nmin_expires = \"abc\"");
        assert_eq!(e.key(), Some("registrar.min_expires"), "{e}");
        assert!(e.to_string().contains("registrar.min_expires"), "{e}");

        let e = err("[sip]\nlisten = \"127.0.0.1:5060\"");
        assert_eq!(e.key(), Some("sip.listen"), "{e}");
        assert!(matches!(e, ConfigError::Type { .. }), "{e:?}");
        assert!(e.to_string().ends_with("expected a sequence"), "{e}");

        let e = err("[sip]\nlisten = [\"127.0.0.1:5060\", 7]");
        assert!(e.to_string().contains("sip.listen"), "{e}");

        let e = err("[registrar]\nmax_contacts = -1");
        assert_eq!(e.key(), Some("registrar.max_contacts"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let e = err("[sip]\nlisen = [\"127.0.0.1:5060\"]");
        assert_eq!(e.key(), Some("sip.lisen"), "{e}");
        assert!(
            e.to_string().contains("listen"),
            "should list the valid keys: {e}"
        );

        let e = err("[sipp]\nlisten = []");
        assert_eq!(e.key(), Some("sipp"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_origin() {
        let e = err("[sip\nlisten = 1");
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
        assert!(e.to_string().starts_with("built-in text: "), "{e}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = load(Some(Path::new("/nonexistent/sipwake.toml"))).expect_err("no file");
        assert!(
            e.to_string()
                .starts_with("/nonexistent/sipwake.toml: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn environment_overrides() {
        let s = with_env(
            "[sip]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]",
            &[
                ("SIPWAKE__SIP__LISTEN", "127.0.0.1:5090,[::1]:5090"),
                ("SIPWAKE__SIP__TRANSPORTS", "udp"),
                ("SIPWAKE__STORE__BACKEND", "memory"),
                ("SIPWAKE__REGISTRAR__MIN_EXPIRES", "30"),
                ("SIPWAKE__PROXY__DOMAINS", "a.example, b.example"),
                // All digits: must stay a string, leading zeros and all.
                (
                    "SIPWAKE__PROXY__FLOW_TOKEN_SECRET",
                    "00000000000000000000000000000001",
                ),
                ("sipwake__log__level", "debug"),
                ("SIPWAKE_LOG", "trace"),
                ("PATH", "/usr/bin"),
            ],
        )
        .expect("valid");
        assert_eq!(
            s.sip.listen,
            vec![
                "127.0.0.1:5090".parse::<SocketAddr>().unwrap(),
                "[::1]:5090".parse().unwrap()
            ]
        );
        assert!(s.sip.udp && !s.sip.tcp);
        assert_eq!(s.store.backend, StoreBackend::Memory);
        assert_eq!(s.registrar.min_expires, 30);
        assert_eq!(s.proxy.domains, vec!["a.example", "b.example"]);
        let mut secret = vec![0u8; 16];
        secret[15] = 1;
        assert_eq!(s.proxy.flow_token_secret, Some(secret));
        assert_eq!(s.log.level, "debug");

        // An empty list variable clears the list.
        let s = with_env(
            "[proxy]\ndomains = [\"x.example\"]",
            &[("SIPWAKE__PROXY__DOMAINS", "")],
        )
        .expect("valid");
        assert!(s.proxy.domains.is_empty());

        // Errors from the environment name the key and the variable.
        let e = with_env("", &[("SIPWAKE__REGISTRAR__MIN_EXPIRES", "abc")]).expect_err("bad");
        assert_eq!(e.key(), Some("registrar.min_expires"), "{e}");
        assert!(
            e.to_string().contains("SIPWAKE__REGISTRAR__MIN_EXPIRES"),
            "{e}"
        );
        let e = with_env("", &[("SIPWAKE__SIP__LISTN", "x")]).expect_err("unknown");
        assert_eq!(e.key(), Some("sip.listn"), "{e}");
        let e = with_env("", &[("SIPWAKE__SIP__LISTEN", "localhost")]).expect_err("bad");
        assert_eq!(e.key(), Some("sip.listen"), "{e}");

        // The real process environment, through the public entry point. One variable
        // with a name no other test uses, and harmless for any test that loads
        // settings concurrently; removed again right after.
        let var = "SIPWAKE__LOG__LEVEL";
        let level = "info,sipwake_env_override_test=debug";
        std::env::set_var(var, level);
        let loaded = load(None);
        std::env::remove_var(var);
        assert_eq!(loaded.expect("valid").log.level, level);
    }

    #[test]
    fn push_defaults_and_full_section() {
        let s = from_toml_str("").expect("defaults");
        assert_eq!(s.push, PushSettings::default());

        let s = from_toml_str(
            r#"
            [push]
            policy = "when_unreachable"
            wake_timeout_ms = 2500
            hint_header = "X-Call-Hint"
            token_header = "X-Push-Token"
            token_param = "pushToken"
            default_provider = "webhook"
            binding_ttl_secs = 0
            max_expires = 86400
            flow_timeout_secs = 30
            max_parked = 100
            max_parked_per_aor = 100
            [push.apns]
            key_file = "/etc/sipwake/AuthKey.p8"
            key_id = "ABC123DEFG"
            team_id = "TEAM123456"
            bundle_id = "com.example.phone"
            sandbox = true
            production_url = "https://127.0.0.1:8443/"
            sandbox_url = "https://localhost:8444"
            ca_file = "/tmp/ca.pem"
            [push.fcm]
            service_account_file = "sa.json"
            base_url = "http://127.0.0.1:9000"
            token_uri = "http://127.0.0.1:9000/token"
            [push.webhook]
            url = "http://127.0.0.1:9001/push/"
            timeout_ms = 500
            "#,
        )
        .expect("valid");
        let p = &s.push;
        assert_eq!(p.policy, PushPolicy::WhenUnreachable);
        assert_eq!(p.wake_timeout, Duration::from_millis(2500));
        assert_eq!(
            (
                p.hint_header.as_str(),
                p.token_header.as_str(),
                p.token_param.as_str()
            ),
            ("X-Call-Hint", "X-Push-Token", "pushToken")
        );
        assert_eq!(p.default_provider, DefaultProvider::Webhook);
        assert_eq!(p.binding_ttl, Duration::ZERO);
        assert_eq!(p.max_expires, 86400);
        assert_eq!(p.flow_timeout, Duration::from_secs(30));
        assert_eq!((p.max_parked, p.max_parked_per_aor), (100, 100));
        let a = p.apns.as_ref().expect("apns");
        assert_eq!(
            a.key_file.as_deref(),
            Some(Path::new("/etc/sipwake/AuthKey.p8"))
        );
        assert_eq!(a.key_id.as_deref(), Some("ABC123DEFG"));
        assert_eq!(a.team_id.as_deref(), Some("TEAM123456"));
        assert_eq!(a.cert_file, None);
        assert_eq!(a.bundle_id.as_deref(), Some("com.example.phone"));
        assert!(a.sandbox);
        assert_eq!(a.production_url, "https://127.0.0.1:8443");
        assert_eq!(a.sandbox_url, "https://localhost:8444");
        assert_eq!(a.ca_file.as_deref(), Some(Path::new("/tmp/ca.pem")));
        let f = p.fcm.as_ref().expect("fcm");
        assert_eq!(f.service_account_file, PathBuf::from("sa.json"));
        assert_eq!(f.project_id, None);
        assert_eq!(f.token_uri.as_deref(), Some("http://127.0.0.1:9000/token"));
        let w = p.webhook.as_ref().expect("webhook");
        assert_eq!(w.url, "http://127.0.0.1:9001/push/");
        assert_eq!(w.timeout, Duration::from_millis(500));

        // Certificate auth alone configures APNs.
        let s = from_toml_str("[push.apns]\ncert_file = \"apns.pem\"").expect("valid");
        let a = s.push.apns.expect("apns");
        assert_eq!(a.cert_file.as_deref(), Some(Path::new("apns.pem")));
        assert_eq!(a.production_url, "https://api.push.apple.com");

        // Environment overrides reach the nested sections.
        let s = with_env(
            "",
            &[
                ("SIPWAKE__PUSH__WEBHOOK__URL", "http://127.0.0.1:1/x"),
                ("SIPWAKE__PUSH__APNS__CERT_FILE", "c.pem"),
                ("SIPWAKE__PUSH__APNS__SANDBOX", "true"),
                ("SIPWAKE__PUSH__WAKE_TIMEOUT_MS", "700"),
            ],
        )
        .expect("valid");
        assert_eq!(s.push.webhook.expect("webhook").url, "http://127.0.0.1:1/x");
        assert!(s.push.apns.expect("apns").sandbox);
        assert_eq!(s.push.wake_timeout, Duration::from_millis(700));
    }

    #[test]
    fn push_errors_name_their_key() {
        let cases: &[(&str, &str)] = &[
            ("[push]\npolicy = \"never\"", "push.policy"),
            ("[push]\nwake_timeout_ms = 99", "push.wake_timeout_ms"),
            ("[push]\nhint_header = \"X Hint\"", "push.hint_header"),
            ("[push]\ntoken_header = \"\"", "push.token_header"),
            ("[push]\ntoken_param = \"a=b\"", "push.token_param"),
            (
                "[push]\ndefault_provider = \"gcm\"",
                "push.default_provider",
            ),
            ("[push]\nmax_expires = 0", "push.max_expires"),
            ("[push]\nflow_timeout_secs = 0", "push.flow_timeout_secs"),
            ("[push]\nmax_parked = 0", "push.max_parked"),
            (
                "[push]\nmax_parked_per_aor = 20000",
                "push.max_parked_per_aor",
            ),
            ("[push.apns]\nkey_file = \"k.p8\"", "push.apns.key_id"),
            (
                "[push.apns]\nkey_file = \"k.p8\"\nkey_id = \"K\"",
                "push.apns.team_id",
            ),
            ("[push.apns]\nteam_id = \"T\"", "push.apns.team_id"),
            (
                "[push.apns]\nkey_file = \"k\"\nkey_id = \"K\"\nteam_id = \"T\"\ncert_file = \"c\"",
                "push.apns.cert_file",
            ),
            (
                "[push.apns]\nbundle_id = \"com.x.voip\"",
                "push.apns.bundle_id",
            ),
            (
                "[push.apns]\nproduction_url = \"api.push.apple.com\"",
                "push.apns.production_url",
            ),
            (
                "[push.apns]\nsandbox_url = \"ftp://x\"",
                "push.apns.sandbox_url",
            ),
            (
                "[push.fcm]\nbase_url = \"http://x/?a=b\"",
                "push.fcm.base_url",
            ),
            ("[push.fcm]\ntoken_uri = \"nope\"", "push.fcm.token_uri"),
            ("[push.webhook]\nurl = \"localhost:80\"", "push.webhook.url"),
            ("[push.webhook]\ntimeout_ms = 0", "push.webhook.timeout_ms"),
        ];
        for (toml, key) in cases {
            let e = err(toml);
            assert_eq!(e.key(), Some(*key), "{toml:?} gave {e}");
            assert!(
                matches!(e, ConfigError::Invalid { .. }),
                "{toml:?} gave {e:?}"
            );
        }
        let e = err("[push.apns]\nkey_fil = \"x\"");
        assert_eq!(e.key(), Some("push.apns.key_fil"), "{e}");
    }

    #[test]
    fn ipnet_parse() {
        let n = IpNet::parse("10.1.2.3/8").unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert_eq!(IpNet::parse("192.0.2.1").unwrap().prefix, 32);
        assert_eq!(IpNet::parse("2001:db8::1").unwrap().prefix, 128);
        assert_eq!(
            IpNet::parse("[::1]").unwrap(),
            IpNet::parse("::1/128").unwrap()
        );
        assert_eq!(
            IpNet::parse("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(IpNet::parse("0.0.0.0/0").unwrap().prefix, 0);
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("::/129").is_err());
        assert!(IpNet::parse("10.0.0.0/").is_err());
        assert!(IpNet::parse("10.0.0/8").is_err());
        assert!(IpNet::parse("").is_err());
    }

    #[test]
    fn ipnet_contains() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let lo = IpNet::parse("127.0.0.0/8").unwrap();
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(lo.contains(ip("127.255.255.255")));
        assert!(!lo.contains(ip("128.0.0.1")));
        assert!(
            lo.contains(ip("::ffff:127.0.0.1")),
            "IPv4-mapped matches IPv4 nets"
        );
        assert!(!lo.contains(ip("::1")));
        assert!(
            !lo.contains(ip("::127.0.0.1")),
            "IPv4-compatible is not mapped"
        );

        let all4 = IpNet::parse("0.0.0.0/0").unwrap();
        assert!(all4.contains(ip("203.0.113.9")));
        assert!(!all4.contains(ip("2001:db8::1")));

        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));

        let mapped = IpNet::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains(ip("10.9.8.7")));
        assert!(!mapped.contains(ip("11.0.0.1")));

        let host = IpNet::parse("192.0.2.1").unwrap();
        assert!(host.contains(ip("192.0.2.1")));
        assert!(!host.contains(ip("192.0.2.2")));
    }

    #[test]
    fn upstream_uri() {
        let t = UpstreamTarget::parse("sip:PBX.example.com").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.transport),
            ("pbx.example.com", 5060, TransportKind::Udp)
        );
        assert_eq!(t.ip(), None);
        let t = UpstreamTarget::parse("SIP:127.0.0.1:5080;transport=TCP").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.transport),
            ("127.0.0.1", 5080, TransportKind::Tcp)
        );
        assert_eq!(t.ip(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(t.uri, "SIP:127.0.0.1:5080;transport=TCP");
        let t = UpstreamTarget::parse("sip:[::1]").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 5060));
        assert_eq!(t.host_port(), "[::1]:5060");
        let t = UpstreamTarget::parse("sip:asterisk_1:5060;lr").unwrap();
        assert_eq!(t.host, "asterisk_1");
        let t = UpstreamTarget::parse("sip:pbx.example.com;transport=TLS").unwrap();
        assert_eq!((t.port, t.transport), (5061, TransportKind::Tls));
        let t = UpstreamTarget::parse("sips:[2001:db8::1]").unwrap();
        assert_eq!((t.port, t.transport), (5061, TransportKind::Tls));
        let t = UpstreamTarget::parse("sips:pbx:5071;transport=tcp;lr").unwrap();
        assert_eq!((t.port, t.transport), (5071, TransportKind::Tls));
        for bad in [
            "sip:",
            "sip:[::1",
            "sip:[::1]x",
            "sip:host:abc",
            "sip:host:70000",
            "sip:a..b",
            "sip:pbx;maddr=x",
            "sips:pbx;transport=udp",
            "sip:pbx;transport=sctp",
        ] {
            assert!(UpstreamTarget::parse(bad).is_err(), "{bad}");
        }
    }
    #[test]
    fn auth_section() {
        let s = from_toml_str("").expect("defaults");
        assert!(!s.auth.enabled);
        assert_eq!(s.auth.realm, "sipwake");
        assert_eq!(s.auth.nonce_ttl, Duration::from_secs(300));
        assert_eq!(
            s.auth.algorithms,
            vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
        );
        // the realm defaults to the first served domain, then the advertised host
        let s = from_toml_str("[proxy]\ndomains = [\"b.example\", \"a.example\"]").unwrap();
        assert_eq!(s.auth.realm, "b.example");
        let s = from_toml_str("[sip]\nadvertised_host = \"sip.example\"").unwrap();
        assert_eq!(s.auth.realm, "sip.example");
        let s = from_toml_str(
            "[auth]\nenabled = true\nusers_file = \"users\"\nrealm = \"Example Realm\"\nnonce_ttl_secs = 30\nalgorithms = [\"md5\"]",
        )
        .unwrap();
        assert_eq!(s.auth.users_file.as_deref(), Some(Path::new("users")));
        assert_eq!(s.auth.realm, "Example Realm");
        assert_eq!(s.auth.nonce_ttl, Duration::from_secs(30));
        assert_eq!(s.auth.algorithms, vec![DigestAlgorithm::Md5]);
        let s = with_env("", &[("SIPWAKE__AUTH__ALGORITHMS", "MD5,SHA-256")]).unwrap();
        assert_eq!(
            s.auth.algorithms,
            vec![DigestAlgorithm::Md5, DigestAlgorithm::Sha256]
        );

        let cases: &[(&str, &str)] = &[
            ("[auth]\nenabled = true", "auth.users_file"),
            ("[auth]\nrealm = \"a\\\"b\"", "auth.realm"),
            ("[auth]\nrealm = \"a:b\"", "auth.realm"),
            ("[auth]\nnonce_ttl_secs = 0", "auth.nonce_ttl_secs"),
            ("[auth]\nalgorithms = []", "auth.algorithms"),
            ("[auth]\nalgorithms = [\"MD5-sess\"]", "auth.algorithms"),
            ("[auth]\nalgorithms = [\"MD5\", \"md5\"]", "auth.algorithms"),
            (
                "[upstream]\nuri = \"sip:127.0.0.1\"\n[registrar]\nmode = \"relay\"\n[auth]\nenabled = true\nusers_file = \"u\"",
                "auth.enabled",
            ),
        ];
        for (toml, key) in cases {
            let e = err(toml);
            assert_eq!(e.key(), Some(*key), "{toml:?} gave {e}");
        }
    }

    #[test]
    fn limits_defaults_env_and_errors() {
        let s = from_toml_str("").expect("defaults");
        let l = &s.limits;
        assert_eq!(l.action, OverLimit::Reject);
        assert_eq!(
            l.register_per_source,
            RateLimit {
                rate: 200,
                burst: 1000
            }
        );
        assert_eq!(l.invite_per_source.rate, 100);
        assert_eq!(l.register_per_aor.burst, 50);
        assert_eq!(
            (l.max_connections, l.max_connections_per_source),
            (10_000, 1000)
        );
        let s = with_env(
            "",
            &[
                ("SIPWAKE__LIMITS__ACTION", "drop"),
                ("SIPWAKE__LIMITS__INVITE_PER_SOURCE_RATE", "0"),
                ("SIPWAKE__LIMITS__INVITE_PER_SOURCE_BURST", "0"),
                ("SIPWAKE__LIMITS__MAX_CONNECTIONS_PER_SOURCE", "7"),
            ],
        )
        .expect("valid");
        assert_eq!(s.limits.action, OverLimit::Drop);
        assert_eq!(s.limits.invite_per_source.rate, 0);
        assert_eq!(s.limits.max_connections_per_source, 7);
        for (toml, key) in [
            ("[limits]\naction = \"503\"", "limits.action"),
            (
                "[limits]\nregister_per_source_burst = 0",
                "limits.register_per_source_burst",
            ),
            (
                "[limits]\ninvite_per_source_rate = 2000000",
                "limits.invite_per_source_rate",
            ),
            (
                "[limits]\nregister_per_aor_burst = 0",
                "limits.register_per_aor_burst",
            ),
            ("[limits]\ntable_size = 1", "limits.table_size"),
            (
                "[limits]\nfirst_message_timeout_secs = 0",
                "limits.first_message_timeout_secs",
            ),
            ("[limits]\nmax_connections = 0", "limits.max_connections"),
            (
                "[limits]\nmax_connections = 10\nmax_connections_per_source = 11",
                "limits.max_connections_per_source",
            ),
        ] {
            let e = err(toml);
            assert_eq!(e.key(), Some(key), "{toml:?} gave {e}");
            assert!(e.to_string().starts_with(&format!("{key}: ")), "{e}");
        }
    }

    #[test]
    fn tls_section() {
        let s = from_toml_str("").unwrap();
        assert!(s.tls.listen.is_empty() && s.tls.cert_file.is_none());
        let s = with_env(
            "[tls]\ncert_file = \"/etc/sipwake/cert.pem\"\nkey_file = \"/etc/sipwake/key.pem\"",
            &[("SIPWAKE__TLS__LISTEN", "127.0.0.1:5061,[::1]:5061")],
        )
        .expect("valid");
        assert_eq!(
            s.tls.listen,
            vec![
                "127.0.0.1:5061".parse::<SocketAddr>().unwrap(),
                "[::1]:5061".parse().unwrap()
            ]
        );
        assert_eq!(
            s.tls.cert_file,
            Some(PathBuf::from("/etc/sipwake/cert.pem"))
        );
        assert_eq!(s.tls.key_file, Some(PathBuf::from("/etc/sipwake/key.pem")));
        for (toml, key) in [
            ("[tls]\nlisten = [\"127.0.0.1:5061\"]", "tls.cert_file"),
            (
                "[tls]\nlisten = [\"127.0.0.1:5061\"]\ncert_file = \"c.pem\"",
                "tls.key_file",
            ),
            ("[tls]\nkey_file = \"k.pem\"", "tls.cert_file"),
            ("[tls]\nlisten = [\"127.0.0.1\"]", "tls.listen"),
            (
                "[tls]\nlisten = [\"127.0.0.1:5060\"]\ncert_file = \"c\"\nkey_file = \"k\"",
                "tls.listen",
            ),
            ("[tls]\nlisen = []", "tls.lisen"),
        ] {
            assert_eq!(err(toml).key(), Some(key), "{toml}");
        }
    }
}
