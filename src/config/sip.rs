//! `[sip]`: where sipwake listens and the RFC 3261 timers.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields::{self, in_range, keyword_parse, normalize_host};
use super::ConfigError;

/// A transport `sip.transports` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// Not valid here (TLS has `tls.listen`); named so the error can say so.
    Tls,
}
keyword_parse!(SipTransport);

/// `[sip]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSettings {
    /// Addresses to listen on; each gets UDP and/or TCP per `transports`.
    #[serde(deserialize_with = "fields::list")]
    pub listen: Vec<SocketAddr>,
    /// The transports as written; validation sets [`udp`](Self::udp) and
    /// [`tcp`](Self::tcp) from them.
    #[serde(deserialize_with = "fields::list")]
    pub transports: Vec<SipTransport>,
    /// Listen on UDP (from `transports`).
    #[serde(skip)]
    pub udp: bool,
    /// Listen on TCP (from `transports`).
    #[serde(skip)]
    pub tcp: bool,
    /// Host written into Via and Record-Route instead of the listen IP: a lower-case
    /// name, an IPv4 address, or an IPv6 address in brackets (`[2001:db8::1]`).
    #[serde(with = "fields::opt")]
    pub advertised_host: Option<String>,
    /// Other names of this sipwake (lower case, as `advertised_host`): a Route or
    /// Request-URI naming one of them on our port is ours.
    #[serde(deserialize_with = "fields::list")]
    pub aliases: Vec<String>,
    /// Largest message accepted on any transport, in bytes.
    pub max_message_size: usize,
    /// TCP connections without traffic for this long are closed.
    #[serde(rename = "tcp_idle_timeout_secs", with = "fields::secs")]
    pub tcp_idle_timeout: Duration,
    /// RFC 3261 timer T1 (RTT estimate).
    #[serde(rename = "t1_ms", with = "fields::millis")]
    pub t1: Duration,
    /// RFC 3261 timer T2 (maximum retransmit interval for non-INVITE).
    #[serde(rename = "t2_ms", with = "fields::millis")]
    pub t2: Duration,
    /// RFC 3261 timer T4 (maximum time a message stays in the network).
    #[serde(rename = "t4_ms", with = "fields::millis")]
    pub t4: Duration,
    /// RFC 3261 timer C (proxy INVITE branch timeout). RFC 3261 §16.6 asks for more
    /// than 3 minutes; shorter values are accepted so that tests can run quickly.
    #[serde(rename = "timer_c_secs", with = "fields::secs")]
    pub timer_c: Duration,
}

impl Default for SipSettings {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            transports: vec![SipTransport::Udp, SipTransport::Tcp],
            udp: true,
            tcp: true,
            advertised_host: None,
            aliases: Vec::new(),
            max_message_size: 65535,
            tcp_idle_timeout: Duration::from_secs(3600),
            t1: Duration::from_millis(500),
            t2: Duration::from_millis(4000),
            t4: Duration::from_millis(5000),
            timer_c: Duration::from_secs(180),
        }
    }
}

impl SipSettings {
    pub(super) fn validate(mut self) -> Result<Self, ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::invalid(
                "sip.listen",
                "",
                "at least one address is needed",
            ));
        }
        fields::no_repeats("sip.listen", &self.listen)?;
        if self.transports.contains(&SipTransport::Tls) {
            return Err(ConfigError::invalid(
                "sip.transports",
                "tls",
                "TLS listens on addresses of its own: set tls.listen",
            ));
        }
        self.udp = self.transports.contains(&SipTransport::Udp);
        self.tcp = self.transports.contains(&SipTransport::Tcp);
        if !self.udp && !self.tcp {
            return Err(ConfigError::invalid(
                "sip.transports",
                "",
                "at least one of udp, tcp is needed",
            ));
        }
        if let Some(host) = &self.advertised_host {
            self.advertised_host = Some(
                normalize_host(host)
                    .map_err(|reason| ConfigError::invalid("sip.advertised_host", host, reason))?,
            );
        }
        self.aliases = fields::hosts("sip.aliases", &self.aliases)?;
        in_range(
            "sip.max_message_size",
            self.max_message_size as u64,
            1024,
            1_048_576,
            "bytes",
        )?;
        // Upper bounds keep later timer arithmetic (64*T1, Instant + timeout) far from
        // overflow; they are well beyond any sensible setting.
        in_range(
            "sip.tcp_idle_timeout_secs",
            self.tcp_idle_timeout.as_secs(),
            1,
            7 * 86_400,
            "seconds",
        )?;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let t1 = in_range("sip.t1_ms", ms(self.t1), 1, 60_000, "milliseconds")?;
        let t2 = in_range("sip.t2_ms", ms(self.t2), 1, 600_000, "milliseconds")?;
        if t2 < t1 {
            return Err(ConfigError::invalid(
                "sip.t2_ms",
                t2.to_string(),
                format!("must not be less than sip.t1_ms ({t1})"),
            ));
        }
        in_range("sip.t4_ms", ms(self.t4), 1, 600_000, "milliseconds")?;
        in_range(
            "sip.timer_c_secs",
            self.timer_c.as_secs(),
            1,
            86_400,
            "seconds",
        )?;
        Ok(self)
    }
}
