//! Transaction matching keys (RFC 3261 §17.1.3, §17.2.3) and branch generation.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sip::{HeaderName, Message};

/// The RFC 3261 branch prefix.
pub const MAGIC: &str = "z9hG4bK";

/// Prefix of every branch sipwake makes; the 16 hex digits after it are the loop
/// hash of RFC 3261 §16.6 step 8.
pub const OUR_PREFIX: &str = "z9hG4bK-sw";

fn method_class(m: &str) -> &str {
    // ACK and CANCEL match the INVITE's server transaction by branch; CANCEL has its own
    if m == "ACK" {
        "INVITE"
    } else {
        m
    }
}

/// Key of the server transaction a request belongs to. ACK maps to its INVITE's
/// transaction; CANCEL to its own (use `as_method` = "INVITE" to find the INVITE it
/// cancels). Requests without an RFC 3261 branch fall back to RFC 2543 matching.
pub fn server_key<S: BuildHasher>(s: &S, msg: &Message, as_method: Option<&str>) -> u64 {
    let mut h = s.build_hasher();
    let method = method_class(as_method.unwrap_or(msg.method_str()));
    method.hash(&mut h);
    let via = msg.top_via();
    let branch = msg.top_branch().unwrap_or("");
    if branch.len() > MAGIC.len() && branch.starts_with(MAGIC) {
        branch.hash(&mut h);
        // some clients reuse branches across requests; Call-ID and CSeq keep them apart
        msg.call_id().hash(&mut h);
        msg.cseq().0.hash(&mut h);
        if let Some(v) = via {
            // the host case-insensitively: lower-cased on the stack and hashed in one
            // write (a write per byte ran SipHash's buffering once per byte)
            let host = v.host.as_bytes();
            let mut buf = [0u8; 64];
            if let Some(dst) = buf.get_mut(..host.len()) {
                for (d, c) in dst.iter_mut().zip(host) {
                    *d = c.to_ascii_lowercase();
                }
                h.write(dst);
            } else {
                for c in host {
                    h.write_u8(c.to_ascii_lowercase());
                }
            }
            v.port.hash(&mut h);
        }
    } else {
        // RFC 2543: Request-URI, To tag, From tag, Call-ID, CSeq number, top Via
        "2543".hash(&mut h);
        msg.request_uri().hash(&mut h);
        msg.from_tag().hash(&mut h);
        msg.call_id().hash(&mut h);
        msg.cseq().0.hash(&mut h);
        msg.values(HeaderName::Via).next().hash(&mut h);
        // an ACK for a 2543 non-2xx carries the To tag of the response; match without it
    }
    h.finish()
}

/// Key of a client transaction: our branch plus the method (CANCEL shares the INVITE's
/// branch but is its own transaction).
pub fn client_key<S: BuildHasher>(s: &S, branch: &str, cseq_method: &str) -> u64 {
    let mut h = s.build_hasher();
    branch.hash(&mut h);
    method_class(cseq_method).hash(&mut h);
    h.finish()
}

/// Makes branches: `z9hG4bK-sw` + loop hash + a counter so that each is unique.
#[derive(Debug)]
pub struct BranchGen {
    counter: AtomicU64,
}

impl Default for BranchGen {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        BranchGen {
            counter: AtomicU64::new(u64::from_le_bytes(seed) >> 24),
        }
    }
}

impl BranchGen {
    /// The RFC 3261 §16.6 step 8 loop hash of a request as received: To tag, From
    /// tag, Call-ID, Request-URI, top Via, CSeq number, Proxy-Require and
    /// Proxy-Authorization.
    pub fn loop_hash(msg: &Message) -> u64 {
        // DefaultHasher::new() uses fixed keys: the hash must be stable across requests
        let mut h = std::collections::hash_map::DefaultHasher::new();
        msg.to_tag().hash(&mut h);
        msg.from_tag().hash(&mut h);
        msg.call_id().hash(&mut h);
        msg.request_uri().hash(&mut h);
        // the top Via as validation indexed it (the same text as the first value)
        msg.top_via_value()
            .or_else(|| msg.values(HeaderName::Via).next())
            .hash(&mut h);
        msg.cseq().0.hash(&mut h);
        msg.all(HeaderName::ProxyRequire)
            .for_each(|v| v.hash(&mut h));
        msg.header_named("Proxy-Authorization").hash(&mut h);
        h.finish()
    }

    /// A fresh branch for a request with this loop hash.
    pub fn next(&self, loop_hash: u64) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // what `format!("{OUR_PREFIX}{loop_hash:016x}.{n:x}")` writes, without `fmt`
        let mut s = String::with_capacity(OUR_PREFIX.len() + 16 + 1 + 16);
        s.push_str(OUR_PREFIX);
        push_hex(&mut s, loop_hash, 16);
        s.push('.');
        push_hex(&mut s, n, 1);
        s
    }

    /// The loop hash inside one of our branches.
    pub fn hash_of(branch: &str) -> Option<u64> {
        let rest = branch.strip_prefix(OUR_PREFIX)?;
        u64::from_str_radix(rest.get(..16)?, 16).ok()
    }
}

/// Appends `n` in lower-case hex, zero-padded to at least `width` digits.
fn push_hex(out: &mut String, n: u64, width: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - n.leading_zeros() as usize)
        .div_ceil(4)
        .max(width)
        .min(16);
    for k in (0..digits).rev() {
        out.push(char::from(DIGITS[(n >> (4 * k)) as usize & 15]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::hash_map::RandomState;

    fn msg(method: &str, branch: &str) -> Message {
        let raw = format!(
            "{method} sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a.example.com:5060;branch={branch}\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\n\r\n"
        );
        Message::parse(Bytes::from(raw), true).unwrap()
    }

    #[test]
    fn ack_and_cancel_match_their_invite() {
        let s = RandomState::new();
        let inv = server_key(&s, &msg("INVITE", "z9hG4bKabc"), None);
        assert_eq!(server_key(&s, &msg("ACK", "z9hG4bKabc"), None), inv);
        let cancel = msg("CANCEL", "z9hG4bKabc");
        assert_ne!(server_key(&s, &cancel, None), inv);
        assert_eq!(server_key(&s, &cancel, Some("INVITE")), inv);
        assert_ne!(server_key(&s, &msg("INVITE", "z9hG4bKabd"), None), inv);
    }

    #[test]
    fn rfc2543_fallback_without_magic_cookie() {
        let s = RandomState::new();
        let a = server_key(&s, &msg("INVITE", "old"), None);
        assert_eq!(server_key(&s, &msg("INVITE", "old"), None), a);
        assert_eq!(
            server_key(&s, &msg("INVITE", "z9hG4bK"), None),
            server_key(&s, &msg("INVITE", "z9hG4bK"), None)
        );
    }

    #[test]
    fn hex_as_fmt_writes_it() {
        for n in [
            0u64,
            1,
            15,
            16,
            0xabc,
            u64::MAX,
            1 << 63,
            0x0123_4567_89ab_cdef,
        ] {
            let (mut a, mut b) = (String::new(), String::new());
            push_hex(&mut a, n, 16);
            push_hex(&mut b, n, 1);
            assert_eq!((a, b), (format!("{n:016x}"), format!("{n:x}")));
        }
    }

    #[test]
    fn branches_are_unique_and_carry_the_loop_hash() {
        let g = BranchGen::default();
        let h = BranchGen::loop_hash(&msg("INVITE", "z9hG4bKabc"));
        let (a, b) = (g.next(h), g.next(h));
        assert_ne!(a, b);
        assert_eq!(BranchGen::hash_of(&a), Some(h));
        assert_eq!(BranchGen::hash_of("z9hG4bKother"), None);
    }
}
