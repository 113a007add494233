//! The edits a proxy makes to what it forwards (RFC 3261 §16.6), spliced into the
//! received bytes, and the few messages it writes itself (ACK for a non-2xx, CANCEL).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::Bytes;

use crate::sip::{split_commas, write_top_via, HeaderName, Message, Splice};

/// What to change in a request being forwarded.
#[derive(Debug, Default)]
pub struct RequestEdits<'a> {
    /// New Request-URI, if it changes.
    pub ruri: Option<&'a str>,
    /// Our Via value (without `Via: `).
    pub via: String,
    /// Where the request came from, for `received`/`rport` on the top Via.
    pub src: Option<SocketAddr>,
    /// Route values to remove (absolute ranges of the values, ours).
    pub pop_routes: Vec<Range<usize>>,
    /// Record-Route values to add on top, in order.
    pub record_route: Vec<String>,
    /// Route values to add on top (e.g. a binding's Path), in order.
    pub push_routes: Vec<String>,
    /// Known headers whose lines are removed.
    pub strip: &'a [HeaderName],
    /// Other headers (by name, any case) whose lines are removed.
    pub strip_named: &'a [&'a str],
    /// Complete header lines (without CRLF) to add.
    pub extra: &'a [String],
}

/// Applies `e` to `msg`.
pub fn forward_request(msg: &Message, e: &RequestEdits<'_>) -> Bytes {
    let mut sp = Splice::new(msg);
    if let (Some(r), Some(range)) = (e.ruri, msg.request_uri_range()) {
        sp.replace(range, r);
    }
    let headers = msg.header_list();
    let first_line = headers
        .first()
        .map(|h| h.line.start)
        .unwrap_or(msg.head_end());
    // new header lines go before the first header: our Via on top, then Record-Route
    sp.insert_parts(first_line, &["Via: ", &e.via, "\r\n"]);
    for rr in &e.record_route {
        sp.insert_parts(first_line, &["Record-Route: ", rr, "\r\n"]);
    }
    for r in &e.push_routes {
        sp.insert_parts(first_line, &["Route: ", r, "\r\n"]);
    }
    for line in e.extra {
        sp.insert_parts(first_line, &[line, "\r\n"]);
    }
    match headers.iter().find(|h| h.name == HeaderName::MaxForwards) {
        Some(h) => {
            let mf = msg.max_forwards().unwrap_or(70).saturating_sub(1);
            let mut v = String::with_capacity(3);
            crate::sip::push_decimal(&mut v, u64::from(mf));
            sp.replace(h.value.clone(), &v);
        }
        None => sp.insert_parts(first_line, &["Max-Forwards: 70\r\n"]),
    }
    if let Some(src) = e.src {
        top_via_received(msg, &mut sp, src);
    }
    remove_values(msg, &mut sp, HeaderName::Route, &e.pop_routes);
    for h in headers {
        let strip = if h.name == HeaderName::Other {
            !e.strip_named.is_empty() && {
                let line = msg.slice(h.line.clone());
                let name = line.split(':').next().unwrap_or("").trim();
                e.strip_named.iter().any(|n| n.eq_ignore_ascii_case(name))
            }
        } else {
            e.strip.contains(&h.name)
        };
        if strip {
            sp.remove(h.line.clone());
        }
    }
    if msg.count(HeaderName::ContentLength) == 0 {
        sp.insert_fmt(
            msg.head_end(),
            format_args!("Content-Length: {}\r\n", msg.body().len()),
        );
    }
    sp.finish()
}

/// Rewrites the top Via with `received`/`rport` where RFC 3261 §18.2.1 and RFC 3581
/// ask for them; untouched otherwise.
fn top_via_received(msg: &Message, sp: &mut Splice<'_>, src: SocketAddr) {
    // the top Via as validation indexed it: not split and parsed again
    let (Some(range), Some(via)) = (msg.top_via_range(), msg.top_via()) else {
        return;
    };
    let raw = msg.slice(range.clone());
    let host_is_src = crate::sip::host_is_ip(via.host, src.ip());
    if host_is_src && via.rport().is_none() {
        return;
    }
    let mut s = String::with_capacity(raw.len() + 40);
    write_top_via(&mut s, raw, &via, src);
    sp.replace(range, &s);
}

/// Removes the given values of a list header, dropping lines left empty.
fn remove_values(msg: &Message, sp: &mut Splice<'_>, name: HeaderName, remove: &[Range<usize>]) {
    if remove.is_empty() {
        return;
    }
    for h in msg.header_list().iter().filter(|h| h.name == name) {
        let v = msg.value_of(h);
        let parts: Vec<Range<usize>> = split_commas(v)
            .map(|(a, b)| h.value.start + a..h.value.start + b)
            .collect();
        let keep: Vec<&Range<usize>> = parts.iter().filter(|p| !remove.contains(p)).collect();
        if keep.len() == parts.len() {
            continue;
        }
        if keep.is_empty() {
            sp.remove(h.line.clone());
        } else {
            let mut s = String::new();
            for (i, p) in keep.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(msg.slice((*p).clone()));
            }
            sp.replace(h.value.clone(), &s);
        }
    }
}

/// A response with our (top) Via removed, ready to go upstream.
pub fn pop_via(msg: &Message) -> Bytes {
    let mut sp = Splice::new(msg);
    if let Some(h) = msg.header_list().iter().find(|h| h.name == HeaderName::Via) {
        let v = msg.value_of(h);
        let mut parts = split_commas(v);
        let _first = parts.next();
        match parts.next() {
            None => sp.remove(h.line.clone()),
            Some((a, _)) => sp.remove(h.value.start..h.value.start + a),
        }
    }
    sp.finish()
}

/// The CANCEL (RFC 3261 §9.1) or non-2xx ACK (§17.1.1.3) for a request we forwarded:
/// same Request-URI, top Via, Route set, From, Call-ID and CSeq number; To from
/// `to` (the response's, for ACK) or the request's.
pub fn cancel_or_ack(fwd: &Message, method: &str, to: Option<&str>, reason: Option<&str>) -> Bytes {
    let mut s = String::with_capacity(512);
    let _ = write!(s, "{method} {} SIP/2.0\r\n", fwd.request_uri());
    if let Some(v) = fwd.values(HeaderName::Via).next() {
        let _ = write!(s, "Via: {v}\r\n");
    }
    for r in fwd.all(HeaderName::Route) {
        let _ = write!(s, "Route: {r}\r\n");
    }
    let _ = write!(s, "Max-Forwards: 70\r\n");
    if let Some(f) = fwd.header(HeaderName::From) {
        let _ = write!(s, "From: {f}\r\n");
    }
    let to = to.or(fwd.header(HeaderName::To)).unwrap_or("");
    let _ = write!(
        s,
        "To: {to}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\n",
        fwd.call_id(),
        fwd.cseq().0
    );
    if let Some(r) = reason {
        let _ = write!(s, "Reason: {r}\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> Message {
        let raw = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.9:5999;branch=z9hG4bKa;rport\r\n\
Route: <sip:tok@127.0.0.1:5060;lr>, <sip:pbx.example.com;lr>\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
P-Asserted-Identity: <sip:boss@example.com>\r\n\
X-Unknown: keep ; me\r\n\
Content-Length: 3\r\n\r\nabc";
        Message::parse(Bytes::from(raw), true).unwrap()
    }

    #[test]
    fn forward_splices_only_our_changes() {
        let m = invite();
        let pop = m.value_spans(HeaderName::Route)[0].1.clone();
        let e = RequestEdits {
            ruri: Some("sip:bob@127.0.0.1:5070"),
            via: "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-swx".into(),
            src: Some("127.0.0.1:40000".parse().unwrap()),
            pop_routes: vec![pop],
            record_route: vec!["<sip:t@127.0.0.1:5060;lr>".into()],
            push_routes: vec![],
            strip: &[HeaderName::PAssertedIdentity],
            strip_named: &["x-pushhint"],
            extra: &["X-PushHint: h1".to_string()],
        };
        let out = forward_request(&m, &e);
        let s = std::str::from_utf8(&out).unwrap();
        assert!(s.starts_with("INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-swx\r\nRecord-Route: <sip:t@127.0.0.1:5060;lr>\r\n"), "{s}");
        assert!(s.contains(
            "Via: SIP/2.0/UDP 127.0.0.9:5999;branch=z9hG4bKa;received=127.0.0.1;rport=40000\r\n"
        ));
        assert!(s.contains("Route: <sip:pbx.example.com;lr>\r\n"));
        assert!(!s.contains("tok@"));
        assert!(s.contains("Max-Forwards: 69\r\n"));
        assert!(!s.contains("P-Asserted"));
        assert!(s.contains("X-Unknown: keep ; me\r\n"));
        assert!(s.contains("X-PushHint: h1\r\n"));
        assert!(s.ends_with("\r\n\r\nabc"));
        let again = Message::parse(out.clone(), true).unwrap();
        again.validate().unwrap();
        assert_eq!(again.count(HeaderName::Via), 2);
    }

    #[test]
    fn pop_via_handles_merged_values() {
        let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP me;branch=z9hG4bK-sw1, SIP/2.0/UDP them;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(Bytes::from(raw), true).unwrap();
        let out = pop_via(&m);
        let s = std::str::from_utf8(&out).unwrap();
        assert!(
            s.contains("Via: SIP/2.0/UDP them;branch=z9hG4bK2\r\n"),
            "{s}"
        );
    }

    #[test]
    fn cancel_copies_the_branch_and_route() {
        let m = invite();
        let c = cancel_or_ack(
            &m,
            "CANCEL",
            None,
            Some("SIP;cause=200;text=\"Call completed elsewhere\""),
        );
        let c = Message::parse(c, true).unwrap();
        c.validate().unwrap();
        assert_eq!(c.top_via().unwrap().branch(), Some("z9hG4bKa"));
        assert_eq!(c.cseq(), (1, "CANCEL"));
        assert_eq!(c.count(HeaderName::Route), 1);
    }
}
