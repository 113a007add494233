//! Property-based robustness of the SIP parser and of the edits the proxy splices into
//! what it forwards (the CI's cheap companion of the `cargo fuzz` targets in `fuzz/`).
//!
//! - arbitrary bytes never make parsing, validation or any accessor panic, with either
//!   framing;
//! - valid messages mutated the way RFC 4475's torture messages are (headers inserted,
//!   deleted, duplicated, renamed to compact forms or other case, odd whitespace and
//!   folding, bogus Content-Length, truncation, byte flips) never panic, and when the
//!   result still validates, the request sipwake would forward re-parses, validates,
//!   keeps every header it did not mean to change, byte for byte, and frames as exactly
//!   one message on a stream;
//! - URIs and parameter lists are stable through parse → display → parse.
//!
//! Case counts are bounded so the whole file runs in a few seconds.

use std::net::SocketAddr;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use sipwake::proxy::edit::{forward_request, pop_via, RequestEdits};
use sipwake::sip::{params, stream_frame_len, HeaderName, Message, NameAddr, Uri};

const SRC: ([u8; 4], u16) = ([192, 0, 2, 7], 5070);

const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-reg-1;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a1\r\n\
To: <sip:alice@example.com>\r\n\
Call-ID: reg-1@192.0.2.7\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:alice@192.0.2.7:5070;ob;pn-provider=apns;pn-prid=00ff;pn-param=ABCDE12345.com.example.voip>;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n\
X-Token: 0123456789abcdef\r\n\
Expires: 600\r\n\
Content-Length: 0\r\n\r\n";

const INVITE: &str = "INVITE sip:bob@example.com;transport=udp SIP/2.0\r\n\
Via: SIP/2.0/UDP pbx.example.com:5060;branch=z9hG4bK-inv-1\r\n\
Via: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK-inv-0;received=192.0.2.1\r\n\
Route: <sip:192.0.2.1;lr>, <sip:proxy.example.com;lr>\r\n\
Max-Forwards: 69\r\n\
From: \"Alice, A.\" <sip:alice@example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@example.com>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Record-Route: <sip:p1.example.com;lr>\r\n\
X-Unknown: keep ; me = as , is\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 31\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\n";

const OPTIONS: &str = "OPTIONS sip:%61lice@[2001:db8::1]:5060;maddr=192.0.2.9 SIP/2.0\r\n\
v: SIP/2.0/TCP [2001:db8::2]:5061;branch=z9hG4bK-opt\r\n\
f: sip:carol@example.com;tag=c\r\n\
t: sip:alice@example.com\r\n\
i: opt-1\r\n\
CSeq: 7 OPTIONS\r\n\
k: path, outbound\r\n\
l: 0\r\n\r\n";

const RESPONSE: &str = "SIP/2.0 180 Ringing\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsw1;rport=5060, SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-inv-1\r\n\
Record-Route: <sip:192.0.2.1;lr>\r\n\
From: <sip:alice@example.com>;tag=9fxced76sl\r\n\
To: <sip:bob@example.com>;tag=b0b\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\r\n";

const BASES: [&str; 4] = [REGISTER, INVITE, OPTIONS, RESPONSE];

/// Header lines a mutation may insert.
const EXTRA_LINES: [&str; 16] = [
    "Via: SIP/2.0/UDP 192.0.2.99;branch=z9hG4bK-extra",
    "v: SIP/2.0/UDP host.example.com:5060;branch=z9hG4bK-x;rport",
    "Contact: *",
    "m: <sip:bob@192.0.2.8>;expires=0, \"x,y\" <sip:c@d>",
    "Route: <sip:192.0.2.1;lr>",
    "Record-Route: <sip:a.example.com;lr>,<sip:b.example.com;lr>",
    "Max-Forwards: 0",
    "Content-Length: 99999",
    "l: 4",
    "Content-Length: x",
    "Call-ID: second",
    "CSeq: 1 BYE",
    "X-Token: ",
    "To: <sip:a@b>, <sip:c@d>",
    "NewFangledHeader:   newfangled value\r\n continued newfangled value",
    "Unknown-LongName: unknown-long-value; unknown-long-parameter-name = unknown-long-parameter-value",
];

const COMPACT: [(&str, &str); 8] = [
    ("Via", "v"),
    ("From", "f"),
    ("To", "t"),
    ("Call-ID", "i"),
    ("Contact", "m"),
    ("Content-Length", "l"),
    ("Content-Type", "c"),
    ("Supported", "k"),
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(Index, Index),
    Delete(Index),
    Duplicate(Index),
    Swap(Index, Index),
    NameCase(Index, bool),
    Compact(Index),
    ColonSpace(Index, u8),
    Fold(Index, Index),
    TrailingSpace(Index),
    ContentLength(Index, u32),
    Truncate(Index),
    Flip(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
        any::<Index>().prop_map(Mutation::Delete),
        any::<Index>().prop_map(Mutation::Duplicate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (any::<Index>(), any::<bool>()).prop_map(|(a, b)| Mutation::NameCase(a, b)),
        any::<Index>().prop_map(Mutation::Compact),
        (any::<Index>(), 0u8..4).prop_map(|(a, n)| Mutation::ColonSpace(a, n)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Fold(a, b)),
        any::<Index>().prop_map(Mutation::TrailingSpace),
        (any::<Index>(), any::<u32>()).prop_map(|(a, n)| Mutation::ContentLength(a, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
    ]
}

/// A message as start line, header lines and body, so mutations act on lines.
struct Parts {
    start: String,
    headers: Vec<String>,
    body: String,
    /// Raw bytes once a byte-level mutation happened (then the rest is ignored).
    raw: Option<Vec<u8>>,
}

impl Parts {
    fn of(msg: &str) -> Parts {
        let (head, body) = msg.split_once("\r\n\r\n").unwrap_or((msg, ""));
        let mut lines = head.split("\r\n").map(str::to_owned);
        let start = lines.next().unwrap_or_default();
        Parts {
            start,
            headers: lines.collect(),
            body: body.to_owned(),
            raw: None,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        if let Some(r) = &self.raw {
            return r.clone();
        }
        let mut s = self.start.clone();
        s.push_str("\r\n");
        for h in &self.headers {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.push_str(&self.body);
        s.into_bytes()
    }

    fn apply(&mut self, m: &Mutation) {
        let n = self.headers.len();
        if self.raw.is_some() {
            return;
        }
        match m {
            Mutation::Insert(at, what) => {
                let line = EXTRA_LINES[what.index(EXTRA_LINES.len())].to_owned();
                self.headers.insert(at.index(n + 1), line);
            }
            Mutation::Delete(i) if n > 0 => {
                self.headers.remove(i.index(n));
            }
            Mutation::Duplicate(i) if n > 0 => {
                let i = i.index(n);
                self.headers.insert(i, self.headers[i].clone());
            }
            Mutation::Swap(a, b) if n > 0 => self.headers.swap(a.index(n), b.index(n)),
            Mutation::NameCase(i, upper) if n > 0 => {
                let h = &mut self.headers[i.index(n)];
                if let Some((name, value)) = h.split_once(':') {
                    let name = if *upper {
                        name.to_ascii_uppercase()
                    } else {
                        name.to_ascii_lowercase()
                    };
                    *h = format!("{name}:{value}");
                }
            }
            Mutation::Compact(i) if n > 0 => {
                let h = &mut self.headers[i.index(n)];
                if let Some((name, value)) = h.split_once(':') {
                    if let Some((_, c)) = COMPACT.iter().find(|(l, _)| l.eq_ignore_ascii_case(name))
                    {
                        *h = format!("{c}:{value}");
                    }
                }
            }
            Mutation::ColonSpace(i, k) if n > 0 => {
                let ws = [" ", "\t", "  \t ", ""][*k as usize % 4];
                let h = &mut self.headers[i.index(n)];
                if let Some((name, value)) = h.split_once(':') {
                    *h = format!("{name}{ws}:{ws}{}", value.trim_start());
                }
            }
            Mutation::Fold(i, at) if n > 0 => {
                // fold at a space inside the value (RFC 3261 §7.3.1 LWS)
                let h = &mut self.headers[i.index(n)];
                let spaces: Vec<usize> = h.match_indices(' ').map(|(p, _)| p).collect();
                if !spaces.is_empty() {
                    let p = spaces[at.index(spaces.len())];
                    h.replace_range(p..p + 1, "\r\n \t");
                }
            }
            Mutation::TrailingSpace(i) if n > 0 => self.headers[i.index(n)].push_str(" \t "),
            Mutation::ContentLength(i, v) => {
                let text = match v % 4 {
                    0 => format!("Content-Length: {}", v % 64),
                    1 => format!("Content-Length: {v}"),
                    2 => format!("Content-Length: 0{}", v % 1000),
                    _ => "Content-Length: -1".to_owned(),
                };
                match self.headers.iter().position(|h| {
                    let name = h.split(':').next().unwrap_or("").trim();
                    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l")
                }) {
                    Some(p) => self.headers[p] = text,
                    None => self.headers.insert(i.index(n + 1), text),
                }
            }
            Mutation::Truncate(at) => {
                let mut b = self.bytes();
                b.truncate(at.index(b.len() + 1));
                self.raw = Some(b);
            }
            Mutation::Flip(at, x) => {
                let mut b = self.bytes();
                if !b.is_empty() {
                    let i = at.index(b.len());
                    b[i] ^= x;
                }
                self.raw = Some(b);
            }
            _ => {}
        }
    }
}

/// Every accessor a handler uses; none may panic.
fn touch(m: &Message) {
    let _ = m.validate();
    let _ = (
        m.method(),
        m.method_str(),
        m.request_uri(),
        m.code(),
        m.reason(),
    );
    let _ = (
        m.call_id(),
        m.cseq(),
        m.from_tag(),
        m.to_tag(),
        m.max_forwards(),
    );
    let _ = (
        m.body(),
        m.content_length(),
        m.answerable(),
        m.header_named("x-token"),
    );
    if let Some(v) = m.top_via() {
        let _ = (v.branch(), v.rport(), v.received(), v.is_udp());
    }
    for h in [
        HeaderName::Contact,
        HeaderName::Route,
        HeaderName::RecordRoute,
        HeaderName::Path,
    ] {
        let _ = m.value_spans(h);
        for v in m.values(h) {
            if let Ok(na) = NameAddr::parse(v, "Contact") {
                let _ = (na.tag(), na.param("expires"));
                if let Ok(u) = Uri::parse(na.uri) {
                    let _ = (u.match_key(), u.aor(), u.transport(), u.ip());
                }
            }
        }
    }
    if let Ok(u) = Uri::parse(m.request_uri()) {
        let _ = (u.match_key(), u.aor(), u.param("maddr"));
    }
    if m.answerable() {
        let r = sipwake::sip::response(m, SRC.into(), 400, "Bad Request", &[], None);
        assert!(Message::parse(r, true).is_ok(), "our own 400 must parse");
    }
}

/// Header lines (name and value as written) other than those `forward_request`
/// changes.
fn kept_headers(m: &Message) -> Vec<String> {
    m.header_list()
        .iter()
        .filter(|h| {
            !matches!(
                h.name,
                HeaderName::MaxForwards
                    | HeaderName::Via
                    | HeaderName::Route
                    | HeaderName::RecordRoute
            )
        })
        .map(|h| m.slice(h.line.clone()).to_owned())
        .collect()
}

/// What sipwake does to a valid message it forwards, and what must hold afterwards.
fn round_trip(m: &Message) {
    // a splice without edits is the identity
    let same = sipwake::sip::Splice::new(m).finish();
    assert_eq!(&same[..], &m.bytes()[..]);
    if !m.is_request() {
        let popped = pop_via(m);
        let p = Message::parse(popped, true).expect("a response minus our Via parses");
        assert_eq!(p.count(HeaderName::CallId), m.count(HeaderName::CallId));
        return;
    }
    let src: SocketAddr = SRC.into();
    let pop: Vec<_> = m
        .value_spans(HeaderName::Route)
        .into_iter()
        .take(1)
        .map(|(_, r)| r)
        .collect();
    let e = RequestEdits {
        ruri: Some("sip:bob@192.0.2.20:5080;transport=tcp"),
        via: "SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKsw-prop".into(),
        src: Some(src),
        pop_routes: pop,
        record_route: vec!["<sip:tok@192.0.2.1:5060;transport=tcp;lr>".into()],
        push_routes: vec![],
        strip: &[],
        strip_named: &[],
        extra: &["X-PushHint: h1".into()],
    };
    let fwd = forward_request(m, &e);
    let f = Message::parse(fwd.clone(), false).unwrap_or_else(|err| {
        panic!(
            "forwarded request does not parse ({err}):\n{}",
            String::from_utf8_lossy(&fwd)
        )
    });
    if let Err(err) = f.validate() {
        panic!(
            "forwarded request does not validate ({err}):\n{}",
            String::from_utf8_lossy(&fwd)
        );
    }
    // it may go out over TCP: exactly one message, no trailing bytes to smuggle
    assert_eq!(
        stream_frame_len(&fwd, usize::MAX).ok().flatten(),
        Some(fwd.len()),
        "forwarded request does not frame as one stream message:\n{}",
        String::from_utf8_lossy(&fwd)
    );
    assert_eq!(f.request_uri(), "sip:bob@192.0.2.20:5080;transport=tcp");
    assert_eq!(f.call_id(), m.call_id());
    assert_eq!(f.cseq(), m.cseq());
    assert_eq!(f.body(), m.body());
    assert_eq!(f.count(HeaderName::Via), m.count(HeaderName::Via) + 1);
    assert_eq!(f.top_via().and_then(|v| v.branch()), Some("z9hG4bKsw-prop"));
    let mut kept = kept_headers(&f);
    kept.retain(|l| !l.starts_with("X-PushHint: h1") && !l.starts_with("Content-Length: "));
    let mut orig = kept_headers(m);
    orig.retain(|l| !l.starts_with("Content-Length: "));
    assert_eq!(
        kept, orig,
        "headers sipwake does not edit must pass through unchanged"
    );
}

fn check_bytes(b: &[u8]) {
    let buf = Bytes::copy_from_slice(b);
    if let Ok(m) = Message::parse(buf.clone(), true) {
        touch(&m);
        if m.validate().is_ok() {
            round_trip(&m);
        }
    }
    if let Ok(Some(n)) = stream_frame_len(b, 65535) {
        if let Ok(m) = Message::parse(buf.slice(..n), false) {
            touch(&m);
            if m.validate().is_ok() {
                round_trip(&m);
            }
        }
    }
}

/// `Uri` written back from its parts.
fn display(u: &Uri<'_>) -> String {
    let mut s = format!("{}:", u.scheme.as_str());
    if let Some(user) = u.user {
        s.push_str(user);
        if let Some(p) = u.password {
            s.push(':');
            s.push_str(p);
        }
        if !u.host.is_empty() {
            s.push('@');
        }
    }
    s.push_str(u.host);
    if let Some(p) = u.port {
        s.push_str(&format!(":{p}"));
    }
    s.push_str(u.params);
    if !u.headers.is_empty() {
        s.push('?');
        s.push_str(u.headers);
    }
    s
}

fn uri_text() -> impl Strategy<Value = String> {
    let user = prop::sample::select(vec![
        "", "alice", "%61lice", "a;b=c", "+1555", "x:pw", "a%00b", "a@b",
    ]);
    let host = prop::sample::select(vec![
        "example.com",
        "EXAMPLE.com",
        "192.0.2.1",
        "[2001:db8::1]",
        "[::1",
        "h_",
        "",
        "a..b",
    ]);
    let port = prop::sample::select(vec!["", ":5060", ":05060", ":0", ":65536", ":", ":x"]);
    let params = prop::sample::select(vec![
        "",
        ";lr",
        ";transport=TCP;lr",
        ";maddr=192.0.2.9;ttl=1",
        ";xToken=0123;pn-provider=fcm",
        ";=x",
        ";a=\"q\"",
        ";;",
    ]);
    let headers = prop::sample::select(vec!["", "?Subject=x", "?a=b&c=d", "?"]);
    let scheme = prop::sample::select(vec!["sip:", "SIP:", "sips:", "tel:", "http:", "sip"]);
    (scheme, user, host, port, params, headers).prop_map(|(sc, u, h, p, pa, he)| {
        let at = if u.is_empty() { "" } else { "@" };
        format!("{sc}{u}{at}{h}{p}{pa}{he}")
    })
}

fn param_text() -> impl Strategy<Value = String> {
    let item = prop::sample::select(vec![
        "tag=a",
        " expires = 30 ",
        "ob",
        "+sip.instance=\"<urn:uuid:1;x>\"",
        "q=0.5",
        "a=\"b;c",
        "=v",
        "",
        "reg-id=1",
        "x=\"\\\"\"",
        "n=v=w",
        " ; ",
    ]);
    prop::collection::vec(item, 0..6).prop_map(|v| v.join(";"))
}

proptest! {
    // 256 cases each in CI (a few seconds); PROPTEST_CASES=100000 for a deeper run
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
        check_bytes(&b);
    }

    #[test]
    fn sip_shaped_bytes_never_panic(
        base in prop::sample::select(BASES.to_vec()),
        cut in any::<Index>(),
        junk in prop::collection::vec(prop::sample::select(b"\r\n :;,<>\"@=\t%0aZ".to_vec()), 0..64),
    ) {
        // splice junk made of SIP's delimiters into a real message
        let mut b = base.as_bytes().to_vec();
        let at = cut.index(b.len() + 1);
        b.splice(at..at, junk);
        check_bytes(&b);
    }

    #[test]
    fn mutated_messages_never_panic_and_forward_cleanly(
        base in prop::sample::select(BASES.to_vec()),
        muts in prop::collection::vec(mutation(), 0..6),
    ) {
        let mut p = Parts::of(base);
        for m in &muts {
            p.apply(m);
        }
        check_bytes(&p.bytes());
    }

    #[test]
    fn uri_parse_display_parse_is_stable(s in uri_text()) {
        if let Ok(u) = Uri::parse(&s) {
            let shown = display(&u);
            let again = Uri::parse(&shown).expect("a displayed URI parses");
            prop_assert_eq!(u, again);
            prop_assert_eq!(u.match_key(), again.match_key());
            prop_assert_eq!(display(&again), shown);
        }
    }

    #[test]
    fn params_rebuild_is_stable(s in param_text()) {
        let first: Vec<(&str, &str)> = params(&s).collect();
        let rebuilt: String = first.iter().map(|(n, v)| if v.is_empty() { format!(";{n}") } else { format!(";{n}={v}") }).collect();
        let second: Vec<(&str, &str)> = params(&rebuilt).collect();
        prop_assert_eq!(first, second);
    }
}

#[test]
fn the_bases_are_valid() {
    for b in BASES {
        let m = Message::parse(Bytes::from_static(b.as_bytes()), true).unwrap();
        assert_eq!(m.validate(), Ok(()), "{b}");
        round_trip(&m);
    }
}
