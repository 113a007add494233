//! Flows: where a peer really is. For UDP the remote address plus the local socket
//! it talks to; for TCP (and TLS over TCP) the connection itself. Requests for a phone go back over its
//! flow, never to the (often private) address its Contact names.
//!
//! Flow tokens (RFC 5626 §5.2) carry flows inside Record-Route and Path URIs, signed
//! with HMAC-SHA256 so that a peer cannot make sipwake send to a flow of its choosing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// A UDP peer: remote address and the index of our socket it talks to.
    Udp {
        /// Index of the local UDP socket.
        socket: u8,
        /// Remote address.
        remote: SocketAddr,
    },
    /// A TCP connection, or a TLS session over one (RFC 3261 §26): both are one
    /// connection-oriented flow, framed, kept alive and timed out the same way.
    Tcp {
        /// Connection id, unique across restarts.
        conn: u64,
        /// Remote address (informational; the connection is the flow).
        remote: SocketAddr,
        /// The peer connected to us: never reconnect toward it (it is likely NATed).
        inbound: bool,
        /// The connection carries TLS (Via `SIP/2.0/TLS`; the only way to send a
        /// `sips:` request).
        tls: bool,
    },
}

impl Flow {
    /// The peer's address.
    pub fn remote(&self) -> SocketAddr {
        match *self {
            Flow::Udp { remote, .. } | Flow::Tcp { remote, .. } => remote,
        }
    }

    /// True for UDP: retransmissions are ours to do, and messages are datagrams.
    pub fn is_udp(&self) -> bool {
        matches!(self, Flow::Udp { .. })
    }

    /// True for a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Flow::Tcp { tls: true, .. })
    }

    /// Transport token for Via headers.
    pub fn via_transport(&self) -> &'static str {
        match self {
            Flow::Udp { .. } => "UDP",
            Flow::Tcp { tls: false, .. } => "TCP",
            Flow::Tcp { tls: true, .. } => "TLS",
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let (kind, extra, remote): (u8, u64, SocketAddr) = match *self {
            Flow::Udp { socket, remote } => (1, socket as u64, remote),
            // TLS kinds are new numbers, so tokens made before TLS existed still decode
            Flow::Tcp {
                conn,
                remote,
                inbound,
                tls,
            } => (
                match (tls, inbound) {
                    (false, true) => 2,
                    (false, false) => 3,
                    (true, true) => 4,
                    (true, false) => 5,
                },
                conn,
                remote,
            ),
        };
        out.push(kind);
        if kind == 1 {
            out.push(extra as u8);
        } else {
            out.extend_from_slice(&extra.to_be_bytes());
        }
        match remote.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&remote.port().to_be_bytes());
    }

    fn decode(b: &mut &[u8]) -> Option<Flow> {
        let kind = take(b, 1)?[0];
        let extra = if kind == 1 {
            take(b, 1)?[0] as u64
        } else {
            u64::from_be_bytes(take(b, 8)?.try_into().ok()?)
        };
        let ip = match take(b, 1)?[0] {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(take(b, 4)?).ok()?)),
            6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(take(b, 16)?).ok()?)),
            _ => return None,
        };
        let port = u16::from_be_bytes(take(b, 2)?.try_into().ok()?);
        let remote = SocketAddr::new(ip, port);
        match kind {
            1 => Some(Flow::Udp {
                socket: extra as u8,
                remote,
            }),
            2..=5 => Some(Flow::Tcp {
                conn: extra,
                remote,
                inbound: kind == 2 || kind == 4,
                tls: kind >= 4,
            }),
            _ => None,
        }
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Some(h)
}

/// Text form kept in the binding store: `udp/0/127.0.0.1:5060`, `tcp/42/in/[::1]:5060`,
/// `tls/43/in/127.0.0.1:40000`.
impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Flow::Udp { socket, remote } => write!(f, "udp/{socket}/{remote}"),
            Flow::Tcp {
                conn,
                remote,
                inbound,
                tls,
            } => write!(
                f,
                "{}/{conn}/{}/{remote}",
                if tls { "tls" } else { "tcp" },
                if inbound { "in" } else { "out" }
            ),
        }
    }
}

/// A flow string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed flow descriptor")]
pub struct BadFlow;

impl FromStr for Flow {
    type Err = BadFlow;

    fn from_str(s: &str) -> Result<Flow, BadFlow> {
        let mut it = s.splitn(4, '/');
        match it.next() {
            Some("udp") => {
                let socket = it.next().and_then(|v| v.parse().ok()).ok_or(BadFlow)?;
                let remote = it.next().and_then(|v| v.parse().ok()).ok_or(BadFlow)?;
                Ok(Flow::Udp { socket, remote })
            }
            Some(kind @ ("tcp" | "tls")) => {
                let conn = it.next().and_then(|v| v.parse().ok()).ok_or(BadFlow)?;
                let inbound = match it.next() {
                    Some("in") => true,
                    Some("out") => false,
                    _ => return Err(BadFlow),
                };
                let remote = it.next().and_then(|v| v.parse().ok()).ok_or(BadFlow)?;
                Ok(Flow::Tcp {
                    conn,
                    remote,
                    inbound,
                    tls: kind == "tls",
                })
            }
            _ => Err(BadFlow),
        }
    }
}

const MAC_LEN: usize = 10;

/// Signs and checks flow tokens.
#[derive(Clone)]
pub struct FlowTokens {
    key: Hmac<Sha256>,
}

impl fmt::Debug for FlowTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlowTokens(..)")
    }
}

impl FlowTokens {
    /// A signer with this secret.
    pub fn new(secret: &[u8]) -> FlowTokens {
        // HMAC accepts keys of any length; this cannot fail.
        let key = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        FlowTokens { key }
    }

    /// Encodes up to two flows (the two legs of a dialog) as a URI-safe token.
    pub fn encode(&self, a: Option<Flow>, b: Option<Flow>) -> String {
        let mut raw = Vec::with_capacity(64);
        raw.push(1u8);
        for f in [a, b] {
            match f {
                Some(f) => f.encode(&mut raw),
                None => raw.push(0),
            }
        }
        let mut mac = self.key.clone();
        mac.update(&raw);
        let tag = mac.finalize().into_bytes();
        raw.extend_from_slice(&tag[..MAC_LEN]);
        base64url(&raw)
    }

    /// Checks and decodes a token made by [`FlowTokens::encode`].
    pub fn decode(&self, token: &str) -> Option<(Option<Flow>, Option<Flow>)> {
        let raw = unbase64url(token)?;
        if raw.len() < 1 + MAC_LEN || raw[0] != 1 {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - MAC_LEN);
        let mut mac = self.key.clone();
        mac.update(body);
        mac.verify_truncated_left(tag).ok()?;
        let mut b = &body[1..];
        let mut flows = [None, None];
        for slot in flows.iter_mut() {
            if b.first() == Some(&0) {
                b = &b[1..];
            } else {
                *slot = Some(Flow::decode(&mut b)?);
            }
        }
        Some((flows[0], flows[1]))
    }
}

/// Tokens go into URIs: URL-safe base64 without padding, decoded strictly (a token
/// with trailing bits set or padding is not one of ours).
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn base64url(data: &[u8]) -> String {
    base64::Engine::encode(&B64, data)
}

fn unbase64url(s: &str) -> Option<Vec<u8>> {
    base64::Engine::decode(&B64, s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_roundtrip_and_tamper() {
        let t = FlowTokens::new(b"0123456789abcdef");
        let a = Flow::Udp {
            socket: 0,
            remote: "127.0.0.9:5999".parse().unwrap(),
        };
        let b = Flow::Tcp {
            conn: 0xdead_beef_0001,
            remote: "[::1]:40000".parse().unwrap(),
            inbound: true,
            tls: false,
        };
        let tok = t.encode(Some(a), Some(b));
        assert!(tok
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(t.decode(&tok), Some((Some(a), Some(b))));
        let tok1 = t.encode(None, Some(a));
        assert_eq!(t.decode(&tok1), Some((None, Some(a))));
        let mut bad = tok.clone().into_bytes();
        bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(t.decode(std::str::from_utf8(&bad).unwrap()), None);
        assert_eq!(FlowTokens::new(b"other-secret-xxxx").decode(&tok), None);
        assert_eq!(t.decode("!!"), None);
    }

    #[test]
    fn text_form_roundtrip() {
        for f in [
            Flow::Udp {
                socket: 2,
                remote: "127.0.0.1:5060".parse().unwrap(),
            },
            Flow::Tcp {
                conn: 7,
                remote: "[::1]:5060".parse().unwrap(),
                inbound: false,
                tls: false,
            },
            Flow::Tcp {
                conn: 8,
                remote: "127.0.0.1:40000".parse().unwrap(),
                inbound: true,
                tls: true,
            },
        ] {
            assert_eq!(f.to_string().parse::<Flow>(), Ok(f));
        }
        assert!("udp/x/1".parse::<Flow>().is_err());
        assert!("tls/1/sideways/127.0.0.1:1".parse::<Flow>().is_err());
    }

    #[test]
    fn tls_flows_roundtrip_in_tokens() {
        let t = FlowTokens::new(b"0123456789abcdef");
        let udp = Flow::Udp {
            socket: 0,
            remote: "127.0.0.9:5999".parse().unwrap(),
        };
        for (inbound, remote) in [(true, "127.0.0.1:40000"), (false, "[2001:db8::1]:5061")] {
            let tls = Flow::Tcp {
                conn: 0x0123_4567_89ab_cdef,
                remote: remote.parse().unwrap(),
                inbound,
                tls: true,
            };
            let tok = t.encode(Some(udp), Some(tls));
            let (a, b) = t.decode(&tok).unwrap();
            assert_eq!((a, b), (Some(udp), Some(tls)));
            assert!(b.unwrap().is_tls());
            assert_eq!(b.unwrap().via_transport(), "TLS");
            // the same connection as plain TCP is a different flow and a different token
            let tcp = Flow::Tcp {
                conn: 0x0123_4567_89ab_cdef,
                remote: remote.parse().unwrap(),
                inbound,
                tls: false,
            };
            assert_ne!(t.encode(Some(udp), Some(tcp)), tok);
            assert_eq!(
                t.decode(&t.encode(Some(tls), None)),
                Some((Some(tls), None))
            );
        }
        assert_eq!(udp.via_transport(), "UDP");
        assert!(!udp.is_tls());
    }
}
