//! Hot-path micro-benchmarks: parse, validate and forward one message.
//!
//! `cargo bench --bench hot_path` prints nanoseconds per operation. A plain harness
//! (no criterion) keeps the build light; every figure is the median of several runs.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use sipwake::proxy::edit::{forward_request, pop_via, RequestEdits};
use sipwake::proxy::register::parse_register;
use sipwake::registrar::{MemoryStore, Registrar};
use sipwake::sip::{HeaderName, Message};
use sipwake::transaction::BranchGen;
use sipwake::transport::{Flow, FlowTokens};
use std::collections::hash_map::RandomState;
use std::sync::Arc;

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:alice@127.0.0.1:5061;transport=udp>\r\n\
To: <sip:bob@example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=9fxced76sl\r\n\
Call-ID: 3848276298220188511@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO\r\n\
Content-Type: application/sdp\r\n\
Supported: replaces, timer\r\n\
User-Agent: bench/1.0\r\n\
Content-Length: 142\r\n\r\n\
v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";

const REGISTER: &str = "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-524287-1---77aa;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:alice@127.0.0.1:5061;transport=udp;ob>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"\r\n\
X-Token: 5f3c9a1e7b2d4c6e8a0f1b3d5e7c9a2b4d6f8e0a1c3b5d7f9e2a4c6b8d0f0123\r\n\
To: <sip:alice@example.com>\r\n\
From: <sip:alice@example.com>;tag=e3a1f0\r\n\
Call-ID: reg-4711@127.0.0.1\r\n\
CSeq: 20 REGISTER\r\n\
Expires: 3600\r\n\
User-Agent: bench/1.0\r\n\
Content-Length: 0\r\n\r\n";

const RESPONSE: &str = "SIP/2.0 180 Ringing\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sw0123456789abcdef.1;rport=5060\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;received=127.0.0.1;rport=5061\r\n\
Record-Route: <sip:tok@127.0.0.1:5060;transport=udp;lr>\r\n\
To: <sip:bob@example.com>;tag=1928301774\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=9fxced76sl\r\n\
Call-ID: 3848276298220188511@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:bob@127.0.0.1:5062>\r\n\
Content-Length: 0\r\n\r\n";

fn bench(name: &str, iters: u32, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        runs.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    runs.sort_by(|a, b| a.total_cmp(b));
    println!("{name:<40} {:>8.0} ns/op", runs[2]);
}

fn main() {
    let invite = Bytes::from_static(INVITE.as_bytes());
    let register = Bytes::from_static(REGISTER.as_bytes());
    let response = Bytes::from_static(RESPONSE.as_bytes());
    let n = 200_000;
    let hasher = RandomState::new();

    bench("parse INVITE", n, || {
        black_box(Message::parse(black_box(invite.clone()), true).ok());
    });
    bench("parse + validate INVITE", n, || {
        let m = Message::parse(black_box(invite.clone()), true).ok();
        black_box(m.map(|m| m.validate().is_ok()));
    });
    bench("parse + validate REGISTER", n, || {
        let m = Message::parse(black_box(register.clone()), true).ok();
        black_box(m.map(|m| m.validate().is_ok()));
    });
    let flow = Flow::Udp {
        socket: 0,
        remote: "127.0.0.1:5061".parse().unwrap(),
    };
    let reg = Message::parse(register.clone(), true).unwrap();
    let push = sipwake::config::PushSettings::default();
    let pusher = sipwake::push::Pusher::new(&push).unwrap();
    // the bench measures the path a REGISTER takes when it is accepted, not a refusal
    // (with a push provider the default settings do not serve it was a 555 here)
    parse_register(&reg, &flow, 1, &push, &pusher).expect("the bench REGISTER is accepted");
    bench("REGISTER -> registrar update", n, || {
        black_box(parse_register(black_box(&reg), &flow, 1, &push, &pusher).ok());
    });
    let registrar = Registrar::new(
        sipwake::config::RegistrarSettings {
            mode: sipwake::config::RegistrarMode::Local,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        },
        Arc::new(MemoryStore::new()),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut n_reg = 0u32;
    bench("registrar update (memory store)", n / 20, || {
        n_reg += 1;
        let mut req = parse_register(&reg, &flow, 1_000, &push, &pusher).unwrap();
        // distinct users, as a REGISTER load has
        req.aor = format!("user{}@example.com", n_reg % 50_000);
        req.cseq = n_reg;
        black_box(rt.block_on(registrar.register(req)).ok());
    });
    let now = sipwake::registrar::unix_now_ms();
    bench("route decision: registrar lookup", n, || {
        black_box(registrar.lookup(black_box("user77@example.com"), now));
    });
    let msg = Message::parse(invite.clone(), true).unwrap();
    bench("route decision: loop hash + server key", n, || {
        black_box(BranchGen::loop_hash(black_box(&msg)));
        black_box(sipwake::transaction::server_key(&hasher, &msg, None));
    });
    let tokens = FlowTokens::new(b"bench-secret-0123456789");
    let gen = BranchGen::default();
    bench("forward INVITE (branch, RR token, splice)", n, || {
        let h = BranchGen::loop_hash(&msg);
        let branch = gen.next(h);
        let token = tokens.encode(Some(flow), Some(flow));
        let e = RequestEdits {
            ruri: Some("sip:bob@127.0.0.1:5062"),
            via: format!("SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport"),
            src: Some(flow.remote()),
            record_route: vec![format!("<sip:{token}@127.0.0.1:5060;transport=udp;lr>")],
            strip: &[HeaderName::PAssertedIdentity],
            ..Default::default()
        };
        black_box(forward_request(black_box(&msg), &e));
    });
    let resp = Message::parse(response.clone(), true).unwrap();
    bench("parse + pop Via of a response", n, || {
        let m = Message::parse(black_box(response.clone()), true).unwrap();
        black_box(pop_via(&m));
    });
    bench("pop Via only", n, || {
        black_box(pop_via(black_box(&resp)));
    });
}
