//! `[upstream]`: the PBX or next hop that non-local requests go to, as a SIP URI.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize, Serializer};

use super::fields::{self, normalize_host, Parse};

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    /// The upstream as a SIP URI, if any.
    #[serde(with = "fields::opt")]
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

impl Parse for UpstreamTarget {
    fn parse_value(s: &str) -> Result<Self, String> {
        UpstreamTarget::parse(s)
    }
}

impl Serialize for UpstreamTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.uri)
    }
}
