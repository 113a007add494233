//! Building outgoing messages: responses to a received request, and forwarded
//! messages made by splicing a few edits into the received bytes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::header::{params, HeaderName, Via};
use super::message::{has_bare_line_break, Message};

/// Edits applied to a message's bytes in one pass: everything not edited is copied
/// as it came, so escaping, parameter order and unknown headers survive forwarding.
pub struct Splice<'m> {
    src: &'m [u8],
    edits: Vec<(usize, usize, usize, usize)>,
    scratch: Vec<u8>,
}

impl<'m> Splice<'m> {
    /// Starts editing `msg`.
    pub fn new(msg: &'m Message) -> Splice<'m> {
        Splice {
            src: msg.bytes(),
            edits: Vec::with_capacity(8),
            scratch: Vec::with_capacity(256),
        }
    }

    /// Replaces `range` with formatted text.
    pub fn replace_fmt(&mut self, range: Range<usize>, args: std::fmt::Arguments<'_>) {
        let s = self.scratch.len();
        let _ = self.scratch.write_fmt(args);
        self.edits
            .push((range.start, range.end, s, self.scratch.len()));
    }

    /// Replaces `range` with `text`.
    pub fn replace(&mut self, range: Range<usize>, text: &str) {
        let s = self.scratch.len();
        self.scratch.extend_from_slice(text.as_bytes());
        self.edits
            .push((range.start, range.end, s, self.scratch.len()));
    }

    /// Inserts the concatenation of `parts` at `at` (no formatting machinery).
    pub fn insert_parts(&mut self, at: usize, parts: &[&str]) {
        let s = self.scratch.len();
        for p in parts {
            self.scratch.extend_from_slice(p.as_bytes());
        }
        self.edits.push((at, at, s, self.scratch.len()));
    }

    /// Inserts formatted text at `at`.
    pub fn insert_fmt(&mut self, at: usize, args: std::fmt::Arguments<'_>) {
        self.replace_fmt(at..at, args);
    }

    /// Removes `range`.
    pub fn remove(&mut self, range: Range<usize>) {
        let s = self.scratch.len();
        self.edits.push((range.start, range.end, s, s));
    }

    /// Produces the edited message. Edits are applied in position order (insertions at
    /// the same point in the order they were made); an edit overlapping an earlier one
    /// is dropped rather than corrupting the output.
    pub fn finish(mut self) -> Bytes {
        self.edits.sort_by_key(|e| (e.0, e.1));
        let extra: usize = self.scratch.len();
        let mut out = BytesMut::with_capacity(self.src.len() + extra);
        let mut pos = 0;
        for (start, end, s, e) in self.edits {
            if start < pos || end > self.src.len() {
                continue;
            }
            out.extend_from_slice(&self.src[pos..start]);
            out.extend_from_slice(&self.scratch[s..e]);
            pos = end;
        }
        out.extend_from_slice(&self.src[pos..]);
        out.freeze()
    }
}

/// The topmost Via value as a response or a forwarded request must carry it:
/// with `received` when the sent-by host is not the source address, and `rport`
/// filled in when the client asked for it (RFC 3261 §18.2.1, RFC 3581).
pub fn write_top_via(out: &mut String, via_raw: &str, via: &Via<'_>, src: SocketAddr) {
    let prefix_len = via_raw.len() - via.params.len();
    out.push_str(&via_raw[..prefix_len]);
    // one walk over the parameters copies them and sees whether `rport` is among them
    let mut wants_rport = false;
    for (n, v) in params(via.params) {
        if n.eq_ignore_ascii_case("rport") {
            wants_rport = true;
            continue;
        }
        if n.eq_ignore_ascii_case("received") {
            continue;
        }
        out.push(';');
        out.push_str(n);
        if !v.is_empty() {
            out.push('=');
            out.push_str(v);
        }
    }
    if wants_rport || !host_is_ip(via.host, src.ip()) {
        out.push_str(";received=");
        push_ip(out, src.ip());
    }
    if wants_rport {
        out.push_str(";rport=");
        push_decimal(out, u64::from(src.port()));
    }
}

/// True if `host` (a Via sent-by or URI host, IPv6 in brackets) is the literal `ip`.
/// An IPv4 literal is compared without parsing it into an address first.
pub fn host_is_ip(host: &str, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = [0u8; 15];
            let mut w = Writer::new(&mut digits);
            for (k, octet) in v4.octets().into_iter().enumerate() {
                if k > 0 {
                    w.push(b'.');
                }
                w.push_decimal(octet);
            }
            // the canonical form; a literal written otherwise (leading zeros) is
            // not a valid IPv4 literal to `IpAddr::from_str` either
            w.written() == host.as_bytes()
        }
        IpAddr::V6(_) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|h| h == ip),
    }
}

/// Fills a small stack buffer (an IPv4 address in text).
struct Writer<'a> {
    buf: &'a mut [u8; 15],
    len: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8; 15]) -> Writer<'a> {
        Writer { buf, len: 0 }
    }

    fn push(&mut self, c: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = c;
            self.len += 1;
        }
    }

    fn push_decimal(&mut self, n: u8) {
        if n >= 100 {
            self.push(b'0' + n / 100);
        }
        if n >= 10 {
            self.push(b'0' + n / 10 % 10);
        }
        self.push(b'0' + n % 10);
    }

    fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Appends `n` in decimal: what `write!(out, "{n}")` does, without the formatting
/// machinery (every response carries a few numbers).
pub fn push_decimal(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits, pushed as chars: no UTF-8 check of what was just written
    out.reserve(buf.len() - i);
    for &d in &buf[i..] {
        out.push(char::from(d));
    }
}

/// Appends `ip` as `Display` writes it; IPv4 (the common case) without `fmt`.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (k, octet) in v4.octets().into_iter().enumerate() {
                if k > 0 {
                    out.push('.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `addr` as `Display` writes it: `1.2.3.4:5060`, `[::1]:5060`.
pub fn push_socket_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            push_ip(out, IpAddr::V4(*a.ip()));
            out.push(':');
            push_decimal(out, u64::from(a.port()));
        }
        SocketAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

/// A To tag that is the same for every retransmission of one request.
pub fn local_tag(msg: &Message) -> String {
    let mut out = String::with_capacity(18);
    push_local_tag(&mut out, msg);
    out
}

/// Appends [`local_tag`] to `out`.
fn push_local_tag(out: &mut String, msg: &Message) {
    // FNV-1a over the request's identity: a tag only has to be the same for every
    // retransmission and differ between requests, and SipHash cost more than the
    // rest of the response line
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &c in bytes {
            h = (h ^ u64::from(c)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // a separator, so ("ab", "c") and ("a", "bc") differ
        h = (h ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(msg.call_id().as_bytes());
    eat(msg.from_tag().as_bytes());
    eat(msg.top_branch().unwrap_or("").as_bytes());
    eat(&msg.cseq().0.to_le_bytes());
    out.push_str("sw");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - h.leading_zeros()).div_ceil(4).max(1);
    for k in (0..digits).rev() {
        out.push(char::from(HEX[((h >> (4 * k)) & 0xf) as usize]));
    }
}

/// Builds a response to `req`, which arrived from `src`. `extra` lines are complete
/// `Name: value` strings without CRLF. The To tag is added for codes above 100 when the
/// request had none.
pub fn response(
    req: &Message,
    src: SocketAddr,
    code: u16,
    reason: &str,
    extra: &[&str],
    body: Option<(&str, &[u8])>,
) -> Bytes {
    let extra_len: usize = extra.iter().map(|l| l.len() + 2).sum();
    let mut s = String::with_capacity(req.bytes().len() + extra_len + 128);
    s.push_str("SIP/2.0 ");
    push_decimal(&mut s, u64::from(code));
    s.push(' ');
    s.push_str(reason);
    s.push_str("\r\n");
    let mut first = true;
    for v in req.values(HeaderName::Via) {
        s.push_str("Via: ");
        // the top Via as the index parsed it (no second parse)
        match (first, req.top_via()) {
            (true, Some(via)) => write_top_via(&mut s, v, &via, src),
            _ => s.push_str(v),
        }
        s.push_str("\r\n");
        first = false;
    }
    // a value with a bare CR or LF (a request refused for it) is left out: copied, it
    // would be a header of its own to a peer that ends lines at LF
    let clean = |v: &&str| !has_bare_line_break(v.as_bytes());
    for (h, name) in [(HeaderName::From, "From"), (HeaderName::To, "To")] {
        if let Some(v) = req.header(h).filter(clean) {
            s.push_str(name);
            s.push_str(": ");
            s.push_str(v);
            if h == HeaderName::To && code > 100 && req.to_tag().is_empty() {
                s.push_str(";tag=");
                push_local_tag(&mut s, req);
            }
            s.push_str("\r\n");
        }
    }
    for (h, name) in [(HeaderName::CallId, "Call-ID"), (HeaderName::CSeq, "CSeq")] {
        if let Some(v) = req.header(h).filter(clean) {
            s.push_str(name);
            s.push_str(": ");
            s.push_str(v);
            s.push_str("\r\n");
        }
    }
    for line in extra {
        s.push_str(line);
        s.push_str("\r\n");
    }
    s.push_str("Server: sipwake\r\n");
    match body {
        Some((ctype, b)) => {
            s.push_str("Content-Type: ");
            s.push_str(ctype);
            s.push_str("\r\nContent-Length: ");
            push_decimal(&mut s, b.len() as u64);
            s.push_str("\r\n\r\n");
            let mut v = s.into_bytes();
            v.extend_from_slice(b);
            v.shrink_to_fit();
            Bytes::from(v)
        }
        // the String's buffer becomes the message: no copy. Trimmed to its length
        // (in place: the allocator splits the block), since a UDP transaction keeps
        // it for timer J (32 s), and 512 bytes reserved grow to 1,024 when passed.
        None => {
            s.push_str("Content-Length: 0\r\n\r\n");
            s.shrink_to_fit();
            Bytes::from(s.into_bytes())
        }
    }
}

/// Standard reason phrase for a status code.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        430 => "Flow Failed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Message {
        let raw = "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP ua.example.com:5070;branch=z9hG4bK1;rport, SIP/2.0/TCP h2;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 7 OPTIONS\r\nMax-Forwards: 70\r\nX-Keep: %41;b=2\r\nContent-Length: 0\r\n\r\n";
        Message::parse(Bytes::from(raw), true).unwrap()
    }

    #[test]
    fn socket_addresses_written_as_display_writes_them() {
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:5060",
            "192.168.100.255:65535",
            "[::1]:5060",
            "[2001:db8::1%0]:1",
            "[::ffff:1.2.3.4]:7",
        ] {
            let Ok(a) = a.parse::<SocketAddr>() else {
                continue;
            };
            let mut s = String::new();
            push_socket_addr(&mut s, a);
            assert_eq!(s, a.to_string());
        }
    }

    #[test]
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for n in [0u64, 7, 10, 99, 100, 65535, 4_294_967_295, u64::MAX] {
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "192.168.100.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }

    #[test]
    fn local_tags_differ_between_requests() {
        let other = Message::parse(
            Bytes::from(
                "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c2\r\nCSeq: 7 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ),
            true,
        )
        .unwrap();
        let tag = local_tag(&req());
        assert!(tag.starts_with("sw") && tag.len() > 2, "{tag}");
        assert!(tag[2..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(tag, local_tag(&other));
    }

    #[test]
    fn host_is_ip_answers_as_parsing_the_host_would() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        for host in [
            "127.0.0.1",
            "127.0.0.10",
            "127.0.0.01",
            "0127.0.0.1",
            "127.0.0.1.",
            "[::1]",
            "::1",
            "[::ffff:127.0.0.1]",
            "localhost",
            "",
            "255.255.255.255",
            "1.2.3.4",
        ] {
            let parsed: Option<IpAddr> = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok();
            for ip in [
                v4,
                v6,
                "255.255.255.255".parse().unwrap(),
                "1.2.3.4".parse().unwrap(),
            ] {
                assert_eq!(host_is_ip(host, ip), parsed == Some(ip), "{host} {ip}");
            }
        }
    }

    #[test]
    fn response_fills_received_rport_and_tag() {
        let m = req();
        let src: SocketAddr = "127.0.0.9:5999".parse().unwrap();
        let r = response(&m, src, 404, "Not Found", &[], None);
        let r = std::str::from_utf8(&r).unwrap();
        assert!(r.starts_with("SIP/2.0 404 Not Found\r\n"));
        assert!(r.contains(
            "Via: SIP/2.0/UDP ua.example.com:5070;branch=z9hG4bK1;received=127.0.0.9;rport=5999\r\n"
        ));
        assert!(r.contains("Via: SIP/2.0/TCP h2;branch=z9hG4bK2\r\n"));
        assert!(r.contains("To: <sip:x@y>;tag=sw"));
        assert!(r.ends_with("Content-Length: 0\r\n\r\n"));
        let parsed = Message::parse(Bytes::copy_from_slice(r.as_bytes()), true).unwrap();
        parsed.validate().unwrap();
        assert_eq!(local_tag(&m), local_tag(&req()));
    }

    #[test]
    fn splice_keeps_untouched_bytes() {
        let m = req();
        let mf = m
            .header_list()
            .iter()
            .find(|h| h.name == HeaderName::MaxForwards)
            .unwrap();
        let mut sp = Splice::new(&m);
        sp.replace(mf.value.clone(), "69");
        sp.insert_fmt(
            m.start_line_range().end + 2,
            format_args!("Via: SIP/2.0/UDP me;branch=z9hG4bKme\r\n"),
        );
        let out = sp.finish();
        let s = std::str::from_utf8(&out).unwrap();
        assert!(s.contains("Max-Forwards: 69\r\n"));
        assert!(s.contains("X-Keep: %41;b=2\r\n"));
        assert!(s.starts_with("OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP me;branch=z9hG4bKme\r\nVia: SIP/2.0/UDP ua.example.com"));
    }
}
