//! Flows: where a peer really is. For UDP the remote address plus the local socket
//! it talks to; for TCP (and TLS over TCP) the connection itself. Requests for a phone go back over its
//! flow, never to the (often private) address its Contact names.
//!
//! Flow tokens (RFC 5626 §5.2) carry flows inside Record-Route and Path URIs, signed
//! so that a peer cannot make sipwake send to a flow of its choosing. The tag is
//! SipHash-2-4 (128-bit output, cut to 80 bits) under a key derived from the secret:
//! a keyed PRF built for short inputs, where HMAC-SHA256 spent four SHA-256 blocks
//! on some 30 bytes (8 % of the instructions of a proxied call). Tokens of the earlier
//! HMAC-SHA256 form (version byte 1) are still accepted, so dialogs and Paths made
//! before an upgrade keep working.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use std::hash::Hasher;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use siphasher::sip128::{Hasher128, SipHasher24};
use subtle::ConstantTimeEq;

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
impl Flow {
    /// The descriptor `Display` writes (`udp/0/1.2.3.4:5060`, `tcp/7/in/[::1]:5061`),
    /// built without `fmt`: every REGISTER stores its flow as this text.
    pub fn text(&self) -> String {
        use crate::sip::{push_decimal, push_socket_addr};
        let mut out = String::with_capacity(40);
        match *self {
            Flow::Udp { socket, remote } => {
                out.push_str("udp/");
                push_decimal(&mut out, u64::from(socket));
                out.push('/');
                push_socket_addr(&mut out, remote);
            }
            Flow::Tcp {
                conn,
                remote,
                inbound,
                tls,
            } => {
                out.push_str(if tls { "tls/" } else { "tcp/" });
                push_decimal(&mut out, conn);
                out.push_str(if inbound { "/in/" } else { "/out/" });
                push_socket_addr(&mut out, remote);
            }
        }
        out
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
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

/// Bytes of the tag in a token (80 bits: a forger's guess succeeds once in 2^80).
const MAC_LEN: usize = 10;
/// The token format: 2 = SipHash-2-4 tag; 1 = HMAC-SHA256 tag (still read).
const VERSION: u8 = 2;
const VERSION_HMAC: u8 = 1;
/// What the SipHash key is derived from the secret with (HMAC-SHA256 as the KDF).
const SIPHASH_KEY_LABEL: &[u8] = b"sipwake flow token siphash-2-4 key";

/// Signs and checks flow tokens.
#[derive(Clone)]
pub struct FlowTokens {
    /// SipHash key (version 2 tokens).
    key: [u8; 16],
    /// HMAC key (version 1 tokens, checked only).
    hmac: Hmac<Sha256>,
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
        let hmac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        let mut kdf = hmac.clone();
        kdf.update(SIPHASH_KEY_LABEL);
        let mut key = [0u8; 16];
        key.copy_from_slice(&kdf.finalize().into_bytes()[..16]);
        FlowTokens { key, hmac }
    }

    /// The tag of `body` (version byte and flows).
    fn tag(&self, body: &[u8]) -> [u8; MAC_LEN] {
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write(body);
        let mut tag = [0u8; MAC_LEN];
        tag.copy_from_slice(&h.finish128().as_bytes()[..MAC_LEN]);
        tag
    }

    /// Encodes up to two flows (the two legs of a dialog) as a URI-safe token.
    pub fn encode(&self, a: Option<Flow>, b: Option<Flow>) -> String {
        let mut raw = Vec::with_capacity(64);
        raw.push(VERSION);
        for f in [a, b] {
            match f {
                Some(f) => f.encode(&mut raw),
                None => raw.push(0),
            }
        }
        let tag = self.tag(&raw);
        raw.extend_from_slice(&tag);
        base64url(&raw)
    }

    /// Checks and decodes a token made by [`FlowTokens::encode`] (or by a build
    /// before version 2).
    pub fn decode(&self, token: &str) -> Option<(Option<Flow>, Option<Flow>)> {
        let raw = unbase64url(token)?;
        if raw.len() < 1 + MAC_LEN {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - MAC_LEN);
        match body[0] {
            VERSION => {
                if !bool::from(self.tag(body).ct_eq(tag)) {
                    return None;
                }
            }
            VERSION_HMAC => {
                let mut mac = self.hmac.clone();
                mac.update(body);
                mac.verify_truncated_left(tag).ok()?;
            }
            _ => return None,
        }
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

    /// A version 1 (HMAC-SHA256) token, as builds before version 2 made them.
    #[cfg(test)]
    fn encode_v1(&self, a: Option<Flow>, b: Option<Flow>) -> String {
        let mut raw = vec![VERSION_HMAC];
        for f in [a, b] {
            match f {
                Some(f) => f.encode(&mut raw),
                None => raw.push(0),
            }
        }
        let mut mac = self.hmac.clone();
        mac.update(&raw);
        let tag = mac.finalize().into_bytes();
        raw.extend_from_slice(&tag[..MAC_LEN]);
        base64url(&raw)
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

    /// A UDP flow on socket `socket` from `remote`.
    fn udp(socket: u8, remote: &str) -> Flow {
        Flow::Udp {
            socket,
            remote: remote.parse().unwrap(),
        }
    }

    #[test]
    fn token_roundtrip_and_tamper() {
        let t = FlowTokens::new(b"0123456789abcdef");
        let a = udp(0, "127.0.0.9:5999");
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
    fn tokens_of_the_hmac_form_are_still_read() {
        let t = FlowTokens::new(b"0123456789abcdef");
        let a = udp(1, "127.0.0.9:5999");
        let old = t.encode_v1(Some(a), None);
        assert_ne!(
            old,
            t.encode(Some(a), None),
            "a new token is of the new form"
        );
        assert_eq!(t.decode(&old), Some((Some(a), None)));
        // a version 1 token tampered with, or signed with another secret, is refused
        assert_eq!(FlowTokens::new(b"other-secret-xxxx").decode(&old), None);
        let mut raw = unbase64url(&old).unwrap();
        raw[2] ^= 1;
        assert_eq!(t.decode(&base64url(&raw)), None);
        // a new token relabelled as version 1 is not accepted under the other MAC
        let mut raw = unbase64url(&t.encode(Some(a), None)).unwrap();
        raw[0] = VERSION_HMAC;
        assert_eq!(t.decode(&base64url(&raw)), None);
        // nor an unknown version
        raw[0] = 9;
        assert_eq!(t.decode(&base64url(&raw)), None);
    }

    #[test]
    fn every_tag_bit_and_body_bit_counts() {
        let t = FlowTokens::new(b"0123456789abcdef");
        let a = udp(0, "127.0.0.9:5999");
        let raw = unbase64url(&t.encode(Some(a), Some(a))).unwrap();
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(t.decode(&base64url(&bad)), None, "byte {i} bit {bit}");
            }
        }
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
        // the stored text, written without fmt, is what fmt wrote before
        let written = |f: Flow| match f {
            Flow::Udp { socket, remote } => format!("udp/{socket}/{remote}"),
            Flow::Tcp {
                conn,
                remote,
                inbound,
                tls,
            } => format!(
                "{}/{conn}/{}/{remote}",
                if tls { "tls" } else { "tcp" },
                if inbound { "in" } else { "out" }
            ),
        };
        for (remote, conn) in [
            ("0.0.0.0:0", 0),
            ("255.255.255.255:65535", u64::MAX),
            ("10.0.20.3:5060", 10),
            ("[2001:db8::1]:5061", 1),
            ("[fe80::1%3]:5060", 99),
        ] {
            let remote: SocketAddr = remote.parse().unwrap();
            for f in [
                Flow::Udp {
                    socket: 255,
                    remote,
                },
                Flow::Tcp {
                    conn,
                    remote,
                    inbound: true,
                    tls: false,
                },
                Flow::Tcp {
                    conn,
                    remote,
                    inbound: false,
                    tls: true,
                },
            ] {
                assert_eq!(f.text(), written(f));
            }
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
