//! `Message::parse` + `validate()` + every accessor the proxy uses, on arbitrary
//! bytes, with both framings (a whole UDP datagram, and a TCP stream cut by
//! `stream_frame_len`). Also the edits the proxy splices into what it forwards: a
//! request that validates must still parse and validate after forwarding.
#![no_main]

use std::net::SocketAddr;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipwake::proxy::edit::{cancel_or_ack, forward_request, pop_via, RequestEdits};
use sipwake::sip::{
    param, params, parse_cseq, split_commas, stream_frame_len, unquote, HeaderName, Message,
    NameAddr, Uri, Via,
};

const ALL: [HeaderName; 22] = [
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::Contact,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::MaxForwards,
    HeaderName::Route,
    HeaderName::RecordRoute,
    HeaderName::Expires,
    HeaderName::ProxyRequire,
    HeaderName::Require,
    HeaderName::Supported,
    HeaderName::UserAgent,
    HeaderName::Path,
    HeaderName::PAssertedIdentity,
    HeaderName::MinExpires,
    HeaderName::Reason,
    HeaderName::FlowTimer,
    HeaderName::Other,
];

fn uri(s: &str) {
    if let Ok(u) = Uri::parse(s) {
        let _ = (u.host_bare(), u.ip(), u.transport(), u.param("lr"));
        let _ = (u.param("maddr"), u.param("xToken"), u.match_key(), u.aor());
        let _ = sipwake::sip::unescape(u.user.unwrap_or(""));
        let _ = sipwake::sip::param_in(u.params, "transport");
        let _ = sipwake::push::pns_name(u.params);
    }
}

fn name_addr(v: &str, what: &'static str) {
    if let Ok(na) = NameAddr::parse(v, what) {
        let _ = (na.tag(), na.param("expires"), na.param("+sip.instance"));
        let _ = na.param("reg-id").map(unquote);
        uri(na.uri);
    }
}

fn exercise(m: &Message) {
    let valid = m.validate().is_ok();
    let _ = (m.is_request(), m.start(), m.start_line_range(), m.method());
    let _ = (m.method_str(), m.code(), m.reason(), m.request_uri_range());
    uri(m.request_uri());
    for h in m.header_list() {
        let v = m.value_of(h);
        for (a, b) in split_commas(v) {
            for (n, pv) in params(&v[a..b]) {
                let _ = (n, unquote(pv));
            }
        }
    }
    for &h in &ALL {
        let _ = (m.header(h), m.count(h), m.value_spans(h));
        for v in m.values(h) {
            let _ = param(v, "expires");
        }
        let _ = m.all(h).count();
    }
    for name in ["X-Token", "x-pushhint", "Authorization", "Flow-Timer", ""] {
        let _ = m.header_named(name);
    }
    let _ = (
        m.call_id(),
        m.cseq(),
        m.from_tag(),
        m.to_tag(),
        m.max_forwards(),
    );
    let _ = parse_cseq(m.header(HeaderName::CSeq).unwrap_or(""));
    if let Some(v) = m.top_via() {
        let _ = (v.branch(), v.rport(), v.received(), v.is_udp());
    }
    for v in m.values(HeaderName::Via) {
        let _ = Via::parse(v);
    }
    if let Some(f) = m.from() {
        uri(f.uri);
    }
    if let Some(t) = m.to() {
        uri(t.uri);
    }
    for (h, what) in [
        (HeaderName::Contact, "Contact"),
        (HeaderName::Route, "Route"),
        (HeaderName::RecordRoute, "Record-Route"),
        (HeaderName::Path, "Path"),
        (HeaderName::PAssertedIdentity, "P-Asserted-Identity"),
    ] {
        for v in m.values(h) {
            name_addr(v, what);
        }
    }
    let _ = (m.body(), m.body_range(), m.head_end(), m.content_length());
    let _ = (m.answerable(), sipwake::sip::local_tag(m));
    let src: SocketAddr = ([192, 0, 2, 7], 5070).into();
    if m.answerable() {
        let r = sipwake::sip::response(m, src, 400, "Bad Request", &["Warning: 399 x"], None);
        let r = Message::parse(r, true).expect("our own response must parse");
        let _ = r.validate();
    }
    if !valid {
        return;
    }
    if m.is_request() {
        let routes = m
            .value_spans(HeaderName::Route)
            .into_iter()
            .take(1)
            .map(|(_, r)| r)
            .collect();
        let e = RequestEdits {
            ruri: Some("sip:alice@192.0.2.9:5071;transport=tcp"),
            via: "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKfuzz".into(),
            src: Some(src),
            pop_routes: routes,
            record_route: vec!["<sip:192.0.2.1;lr>".into()],
            push_routes: vec!["<sip:tok@192.0.2.1;lr;ob>".into()],
            strip: &[HeaderName::Path],
            strip_named: &["X-PushHint"],
            extra: &["X-PushHint: abc".into()],
        };
        let fwd = forward_request(m, &e);
        let f = Message::parse(fwd.clone(), true).expect("a forwarded request must parse");
        if let Err(err) = f.validate() {
            panic!(
                "forwarded request no longer validates: {err}\n{}",
                String::from_utf8_lossy(&fwd)
            );
        }
        // it may go on over TCP: exactly one message, nothing left over to smuggle
        assert_eq!(
            stream_frame_len(&fwd, usize::MAX).ok().flatten(),
            Some(fwd.len()),
            "forwarded request does not frame as one message:\n{}",
            String::from_utf8_lossy(&fwd)
        );
        let c = cancel_or_ack(&f, "CANCEL", None, Some("SIP;cause=200"));
        let _ = Message::parse(c, true).map(|c| c.validate());
    } else {
        let p = pop_via(m);
        let _ = Message::parse(p, true).map(|p| p.validate());
    }
}

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    if let Ok(m) = Message::parse(buf.clone(), true) {
        exercise(&m);
    }
    if let Ok(Some(n)) = stream_frame_len(data, 65535) {
        if let Ok(m) = Message::parse(buf.slice(..n), false) {
            exercise(&m);
        }
    }
});
