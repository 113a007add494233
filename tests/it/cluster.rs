//! Several sipwake nodes sharing their bindings in one real `redis-server`
//! (`store.backend = "redis"`): what one node stores the others see at once,
//! concurrent REGISTERs on two nodes both stay, Call-ID/CSeq ordering holds across
//! nodes, Redis down means 503 (never a 200 for a binding not stored) and recovery,
//! a Redis restart keeps every binding, calls reach a phone through the node that
//! holds its flow, and a call parked on one node is woken by a REGISTER on another,
//! also when that REGISTER races the subscription to the AOR's events or comes while
//! the subscription is down.
//!
//! Longer than one file should be: its tests share the node, phone and wake helpers
//! that `redis_cluster.rs` (the same flows on a Redis Cluster and over TLS) reuses;
//! split it by flow (storing, calling, waking, node loss) when it grows again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::mock_http::MockHttp;
use crate::common::push_phone::register_raw;
use crate::common::redis_server::{RedisServer, SharedRedis};
use crate::common::*;

/// A node of the cluster on `redis`, with its admin API on a free port.
pub(crate) fn node(name: &str, redis: &dyn SharedRedis) -> (Proxy, SocketAddr) {
    node_with(name, redis, &[])
}

/// Like [`node`], with more settings.
pub(crate) fn node_with(
    name: &str,
    redis: &dyn SharedRedis,
    extra: &[(&str, &str)],
) -> (Proxy, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut b = ProxyBuilder::new(name)
        .env("STORE__BACKEND", "redis")
        .env("STORE__REDIS__TIMEOUT_MS", "300")
        .env("ADMIN__LISTEN", &admin.to_string());
    for (k, v) in redis.store_env() {
        b = b.env(&k, &v);
    }
    for (k, v) in extra {
        b = b.env(k, v);
    }
    (b.start(), admin)
}

/// Sends, for each AOR, one REGISTER to `a` and one to `b` back to back, before
/// reading any answer, so both nodes read the AOR while the other writes it; asserts
/// every 200 and returns the UAs registered on `a` and on `b`.
pub(crate) fn register_pairs_at_once(
    a: &Proxy,
    b: &Proxy,
    tag: &str,
    n: usize,
) -> (Vec<Ua>, Vec<Ua>) {
    let mut on_a: Vec<Ua> = (0..n).map(|i| Ua::udp(&format!("{tag}{i}"), a)).collect();
    let mut on_b: Vec<Ua> = (0..n).map(|i| Ua::udp(&format!("{tag}{i}"), b)).collect();
    let mut sent = Vec::new();
    for (ua_a, ua_b) in on_a.iter_mut().zip(on_b.iter_mut()) {
        let ra = raw_register(ua_a);
        let rb = raw_register(ua_b);
        ua_a.send(&ra.1);
        ua_b.send(&rb.1);
        sent.push((ra.0, rb.0));
    }
    for (i, (ca, cb)) in sent.iter().enumerate() {
        let r = on_a[i].expect_final(ca, "REGISTER");
        assert_eq!(r.status(), Some(200), "{r:?}");
        let r = on_b[i].expect_final(cb, "REGISTER");
        assert_eq!(r.status(), Some(200), "{r:?}");
    }
    (on_a, on_b)
}

/// A `redis-server` in its own directory.
pub(crate) fn redis(name: &str) -> RedisServer {
    RedisServer::start(temp_dir(name))
}

/// Status and body of `GET path` on the admin API.
pub(crate) fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the admin API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The Contact URIs a REGISTER query for `user` on `node` returns.
pub(crate) fn contacts_seen_by(node: &Proxy, user: &str) -> Vec<String> {
    let mut q = Ua::udp(user, node);
    let r = q.register_with(None, None);
    assert_eq!(r.status(), Some(200), "query on {}: {r:?}", node.hostport());
    let mut c: Vec<String> = r.contacts().iter().map(|c| uri_of(c)).collect();
    c.sort();
    c
}

#[test]
fn a_binding_stored_on_one_node_is_seen_by_the_others() {
    let redis = redis("cluster-seen");
    let (a, _) = node("cluster-seen-a", &redis);
    let (b, admin_b) = node("cluster-seen-b", &redis);
    let (c, _) = node("cluster-seen-c", &redis);
    let mut phone = Ua::udp("alice", &a);
    phone.register(600);
    let want = vec![phone.contact_uri()];
    assert_eq!(contacts_seen_by(&b, "alice"), want);
    assert_eq!(contacts_seen_by(&c, "alice"), want);

    // the admin API of any node reads the shared store
    let (code, body) = get(admin_b, "/registrations?aor=alice@example.com");
    assert_eq!(code, 200, "{body}");
    let regs: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(regs["total"], 1, "{regs:#}");
    assert_eq!(regs["bindings"][0]["node"], a.hostport(), "{regs:#}");
    let (code, body) = get(admin_b, "/cluster");
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let nodes = view["nodes"].as_array().expect("nodes");
    let ids: Vec<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
    let mut want_ids = vec![a.hostport(), b.hostport(), c.hostport()];
    want_ids.sort();
    assert_eq!(ids, want_ids, "{view:#}");
    for n in nodes {
        let owned = if n["id"] == a.hostport() { 1 } else { 0 };
        assert_eq!(n["bindings_owned"], owned, "{n:#}");
        assert_eq!(n["this_node"], n["id"] == b.hostport(), "{n:#}");
        assert_eq!(
            n["advertise_uri"],
            format!("sip:{}", n["id"].as_str().unwrap())
        );
    }
    // a de-registration on A is seen by B at once
    let contact = format!("<{}>", phone.contact_uri());
    let r = phone.register_with(Some(&contact), Some(0));
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert!(contacts_seen_by(&b, "alice").is_empty());
}

/// Callee: receives the INVITE and answers 180 with a fresh tag.
fn ring(callee: &mut Ua, call_id: &str) -> (Msg, String) {
    let inv = callee.expect_request("INVITE", Some(call_id));
    let t = tag();
    callee.reply(&inv, 180, "Ringing", Some(&t));
    (inv, t)
}

/// In-dialog request from `from` received by `to` without our Route entries,
/// answered 200, and the 200 received by `from`.
fn in_dialog(from: &mut Ua, d: &mut Dialog, to: &mut Ua, method: &str) -> Msg {
    from.send_in_dialog(d, method, None);
    let req = to.expect_request(method, Some(&d.call_id));
    assert!(
        req.header("route").is_none(),
        "every node pops its Route entries: {req:?}"
    );
    to.reply(&req, 200, "OK", None);
    from.expect_response(&d.call_id, method, "200", |c| c == 200);
    req
}

/// `caller` (talking to `entry`) calls `callee`, whose flow `owner` holds; the call
/// is answered, ACKed and ended with a BYE from one side.
pub(crate) fn call_across(
    caller: &mut Ua,
    entry: &Proxy,
    callee: &mut Ua,
    owner: &Proxy,
    bye_from_callee: bool,
) {
    let inv = caller.invite(&callee.user.clone(), "");
    let (got, ctag) = ring(callee, &inv.call_id);
    // the callee's INVITE comes from its own node, over its registration flow
    assert_eq!(
        got.from,
        owner.addr(),
        "INVITE relayed by the owner: {got:?}"
    );
    assert!(got.header("route").is_none(), "{got:?}");
    assert_eq!(got.ruri(), callee.contact_uri());
    let rr: Vec<String> = got
        .values("record-route")
        .iter()
        .map(|v| uri_of(v))
        .collect();
    let names = |p: &Proxy| rr.iter().any(|r| uri_hostport(r).1 == p.port);
    assert!(
        names(entry) && names(owner),
        "both nodes stay on the dialog's path: {rr:?}"
    );
    caller.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    callee.reply(&got, 200, "OK", Some(&ctag));
    let ok = caller.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut cd = Dialog::uac(&inv, &ok);
    caller.ack_2xx(&mut cd, inv.cseq);
    let ack = callee.expect_request("ACK", Some(&inv.call_id));
    assert_eq!(
        ack.from,
        owner.addr(),
        "only the owner reaches the phone: {ack:?}"
    );
    let mut ed = Dialog::uas(&got, &ctag);
    if bye_from_callee {
        let bye = in_dialog(callee, &mut ed, caller, "BYE");
        assert_eq!(bye.ruri(), caller.contact_uri());
        assert_eq!(bye.from, entry.addr(), "{bye:?}");
    } else {
        let bye = in_dialog(caller, &mut cd, callee, "BYE");
        assert_eq!(bye.ruri(), callee.contact_uri());
        assert_eq!(
            bye.from,
            owner.addr(),
            "only the owner reaches the phone: {bye:?}"
        );
    }
}

#[test]
fn a_phone_registered_on_one_node_is_called_through_the_others() {
    let redis = redis("cluster-call");
    let (a, _) = node("cluster-call-a", &redis);
    let (b, _) = node("cluster-call-b", &redis);
    let (c, _) = node("cluster-call-c", &redis);
    let mut udp_phone = Ua::udp("bob", &a);
    udp_phone.register(600);
    let mut tcp_phone = Ua::tcp("tom", &a);
    tcp_phone.register(600);
    for entry in [&b, &c] {
        for bye_from_callee in [true, false] {
            let mut caller = Ua::udp("alice", entry);
            call_across(&mut caller, entry, &mut udp_phone, &a, bye_from_callee);
            let mut caller = Ua::tcp("carl", entry);
            call_across(&mut caller, entry, &mut tcp_phone, &a, bye_from_callee);
        }
    }
}

#[test]
fn two_devices_of_one_aor_registering_at_once_on_two_nodes_are_both_kept() {
    let redis = redis("cluster-race");
    let (a, _) = node("cluster-race-a", &redis);
    let (b, _) = node("cluster-race-b", &redis);
    const AORS: usize = 40;
    let (on_a, on_b) = register_pairs_at_once(&a, &b, "race", AORS);
    for i in 0..AORS {
        let mut want = vec![on_a[i].contact_uri(), on_b[i].contact_uri()];
        want.sort();
        assert_eq!(
            contacts_seen_by(&a, &format!("race{i}")),
            want,
            "race{i}: both devices kept"
        );
    }
}

#[test]
fn max_contacts_holds_when_two_nodes_register_one_aor_at_once() {
    // each node decides on what it read; only one decision per AOR version may land,
    // or both nodes would add "the one allowed" contact
    let redis = redis("cluster-max");
    let one = [("REGISTRAR__MAX_CONTACTS", "1")];
    let (a, _) = node_with("cluster-max-a", &redis, &one);
    let (b, _) = node_with("cluster-max-b", &redis, &one);
    const AORS: usize = 40;
    let (on_a, on_b) = register_pairs_at_once(&a, &b, "max", AORS);
    for i in 0..AORS {
        let seen = contacts_seen_by(&b, &format!("max{i}"));
        assert_eq!(seen.len(), 1, "max{i}: one contact at most, got {seen:?}");
        assert!(
            seen[0] == on_a[i].contact_uri() || seen[0] == on_b[i].contact_uri(),
            "{seen:?}"
        );
    }
}

/// A REGISTER of `ua`'s Contact for 600 s under a new Call-ID: (Call-ID, text).
fn raw_register(ua: &Ua) -> (String, String) {
    let cid = call_id();
    let contact = format!("<{}>", ua.contact_uri());
    let text = build_register(
        ua.tp.via(),
        &ua.via_hostport,
        &ua.user,
        &ua.domain,
        Some(&contact),
        Some(600),
        &cid,
        1,
        &branch(),
        &tag(),
    );
    (cid, text)
}

#[test]
fn call_id_and_cseq_ordering_holds_across_nodes() {
    let redis = redis("cluster-cseq");
    let (a, _) = node("cluster-cseq-a", &redis);
    let (b, _) = node("cluster-cseq-b", &redis);
    let mut phone = Ua::udp("carol", &a);
    phone.register(600);
    phone.register(600); // CSeq 2 stored
                         // CSeq 1 of the same Call-ID, late, through the other node
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let local = sock.local_addr().unwrap().to_string();
    let contact = format!("<{}>", phone.contact_uri());
    let text = build_register(
        "UDP",
        &local,
        "carol",
        DOMAIN,
        Some(&contact),
        Some(600),
        &phone.reg_call_id,
        1,
        &branch(),
        &tag(),
    );
    sock.send_to(text.as_bytes(), b.addr()).unwrap();
    let mut buf = vec![0u8; 65536];
    let resp = loop {
        let (n, from) = sock.recv_from(&mut buf).expect("an answer from B");
        let m = Msg::parse(&buf[..n], from, false).expect("a SIP message");
        if m.status().is_some_and(|c| c >= 200) {
            break m;
        }
    };
    assert_eq!(resp.status(), Some(400), "{resp:?}");
    assert_eq!(resp.reason(), "CSeq out of order");
}

#[test]
fn redis_down_means_503_then_recovery() {
    let mut redis = redis("cluster-down");
    let (a, admin) = node("cluster-down-a", &redis);
    let mut phone = Ua::udp("dave", &a);
    phone.register(600);
    assert_eq!(get(admin, "/healthz").0, 200);

    redis.stop();
    let contact = format!("<{}>", phone.contact_uri());
    let r = phone.register_with(Some(&contact), Some(600));
    assert_eq!(r.status(), Some(503), "REGISTER while Redis is down: {r:?}");
    assert!(
        r.header("Retry-After").is_some(),
        "503 with Retry-After: {r:?}"
    );
    let (code, body) = get(admin, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("shared binding store"), "{body}");
    // a call needs a lookup: 503 too
    let mut caller = Ua::udp("erin", &a);
    let inv = caller.invite("dave", "");
    let resp = caller.expect_final(&inv.call_id, "INVITE");
    assert_eq!(resp.status(), Some(503), "{resp:?}");
    caller.ack_non2xx(&inv, &resp);
    assert!(a.ping().is_some(), "sipwake stays up");

    redis.restart();
    // back by itself: the connection manager reconnects
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = phone.register_with(Some(&contact), Some(600));
        if r.status() == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(admin, "/healthz").0, 200);
    let (_, metrics) = get(admin, "/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    assert!(value("sipwake_redis_errors_total") >= 1.0);
    assert!(value("sipwake_redis_reconnects_total") >= 1.0);
    assert!(value("sipwake_redis_command_seconds_count") >= 1.0);
}

#[test]
fn a_redis_restart_keeps_every_binding() {
    let mut redis = redis("cluster-aof");
    let (a, _) = node("cluster-aof-a", &redis);
    let mut phones: Vec<Ua> = (0..20).map(|i| Ua::udp(&format!("aof{i}"), &a)).collect();
    for p in &mut phones {
        p.register(600);
    }
    redis.restart();
    let (b, _) = node("cluster-aof-b", &redis);
    for p in &phones {
        assert_eq!(
            contacts_seen_by(&b, &p.user),
            vec![p.contact_uri()],
            "{} kept",
            p.user
        );
    }
}

// ---------------------------------------------------------------------------------
// Waking across nodes
// ---------------------------------------------------------------------------------

/// A webhook push service answering 200 to every push.
pub(crate) fn hook() -> MockHttp {
    let h = MockHttp::start();
    h.route("/push", 200, "{}");
    h
}

/// A node pushing bare tokens to `hook`, with a 1 s flow timeout, and its admin API.
pub(crate) fn push_node(
    name: &str,
    redis: &dyn SharedRedis,
    hook: &MockHttp,
) -> (Proxy, SocketAddr) {
    push_node_with(name, redis, hook, &[])
}

/// Like [`push_node`], with more settings.
pub(crate) fn push_node_with(
    name: &str,
    redis: &dyn SharedRedis,
    hook: &MockHttp,
    extra: &[(&str, &str)],
) -> (Proxy, SocketAddr) {
    let url = format!("{}/push", hook.base_url());
    let mut all = vec![
        ("PUSH__WEBHOOK__URL", url.as_str()),
        ("PUSH__DEFAULT_PROVIDER", "webhook"),
        ("PUSH__FLOW_TIMEOUT_SECS", "1"),
    ];
    all.extend_from_slice(extra);
    node_with(name, redis, &all)
}

/// Registers `ua`'s Contact for 600 s with `X-Token: token`; asserts the 200.
pub(crate) fn register_token(ua: &mut Ua, token: &str) {
    let contact = format!("<{}>", ua.contact_uri());
    let r = register_raw(ua, &contact, &format!("X-Token: {token}\r\n"), 600);
    assert_eq!(r.status(), Some(200), "{r:?}");
}

/// The next push (a JSON document) the webhook received.
pub(crate) fn expect_push(hook: &MockHttp, what: &str) -> serde_json::Value {
    let (seen, _) = hook.next_at("/push", WAIT);
    seen.unwrap_or_else(|| panic!("no webhook POST ({what}) within {WAIT:?}"))
        .json()
}

/// Three push nodes on one Redis, and a phone with a push token registered on A and
/// then asleep (its flow older than the 1 s flow timeout).
pub(crate) struct Sleeping {
    pub(crate) redis: Box<dyn SharedRedis>,
    pub(crate) hook: MockHttp,
    pub(crate) a: Proxy,
    pub(crate) b: Proxy,
    pub(crate) c: Proxy,
    pub(crate) token: String,
}

pub(crate) fn sleeping(name: &str) -> Sleeping {
    sleeping_on(name, Box::new(redis(&format!("{name}-redis"))), &[])
}

/// [`sleeping`] on `redis`, node B started with `b_extra` settings.
pub(crate) fn sleeping_on(
    name: &str,
    redis: Box<dyn SharedRedis>,
    b_extra: &[(&str, &str)],
) -> Sleeping {
    let hook = hook();
    let a = push_node(&format!("{name}-a"), &*redis, &hook).0;
    let b = push_node_with(&format!("{name}-b"), &*redis, &hook, b_extra).0;
    let c = push_node(&format!("{name}-c"), &*redis, &hook).0;
    let token = unique("tok");
    let mut phone = Ua::udp("bob", &a);
    register_token(&mut phone, &token);
    std::thread::sleep(Duration::from_millis(1200));
    Sleeping {
        redis,
        hook,
        a,
        b,
        c,
        token,
    }
}

#[test]
fn a_call_parked_on_one_node_is_woken_by_a_register_on_another() {
    let s = sleeping("cluster-wake");
    woken_through_c(&s, |_| {});
}

/// The event channel of bob's AOR, as the nodes name it.
pub(crate) const BOB_CHANNEL: &str = "sipwake:ev:{bob@example.com}";

/// Alice calls bob through B; the push goes out; `before_register(&s)` runs; the app
/// wakes and registers on C, gets the INVITE through C with the push's hint, and the
/// call is answered and ended. B listens to bob's events only while the call waits.
pub(crate) fn woken_through_c(s: &Sleeping, before_register: impl FnOnce(&Sleeping)) {
    let mut alice = Ua::udp("alice", &s.b);
    let inv = alice.invite("bob", "");
    alice.expect_response(&inv.call_id, "INVITE", "100 Trying", |c| c == 100);
    let push = expect_push(&s.hook, "call");
    assert_eq!(push["token"], s.token.as_str(), "{push:#}");
    let hint = push["pushHint"].as_str().expect("pushHint").to_owned();
    before_register(s);

    // the app wakes and registers on C, the node its DNS gave it this time
    let mut woken = Ua::udp("bob", &s.c);
    register_token(&mut woken, &s.token);
    let got = woken.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(
        got.from,
        s.c.addr(),
        "through the node holding the flow: {got:?}"
    );
    assert_eq!(
        got.header_lines("x-pushhint"),
        vec![hint.as_str()],
        "X-PushHint equal to the push's pushHint: {got:?}"
    );
    assert_eq!(got.ruri(), woken.contact_uri());
    let btag = tag();
    woken.reply(&got, 180, "Ringing", Some(&btag));
    alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    assert_eq!(
        s.redis.subscribers(BOB_CHANNEL),
        1,
        "B listens to bob's events while the call waits, A and C do not"
    );
    woken.reply(&got, 200, "OK", Some(&btag));
    let ok = alice.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut d = Dialog::uac(&inv, &ok);
    alice.ack_2xx(&mut d, inv.cseq);
    woken.expect_request("ACK", Some(&inv.call_id));
    let bye = in_dialog(&mut alice, &mut d, &mut woken, "BYE");
    assert_eq!(bye.from, s.c.addr(), "{bye:?}");
    // the call no longer waits: B leaves the channel
    let deadline = Instant::now() + WAIT;
    while s.redis.subscribers(BOB_CHANNEL) != 0 {
        assert!(
            Instant::now() < deadline,
            "B still subscribed to bob's events"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `n` connections listen to bob's events.
fn wait_subscribers(s: &Sleeping, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.redis.subscribers(BOB_CHANNEL) != n {
        assert!(
            Instant::now() < deadline,
            "never {n} subscribers to {BOB_CHANNEL}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A debug-build-only delay before each subscription of B (see
/// `registrar::remote::test_subscribe_delay`), to hold the race windows open.
const SUBSCRIBE_DELAY: (&str, &str) = ("SIPWAKE_TEST_SUBSCRIBE_DELAY_MS", "3000");

#[test]
fn a_register_between_the_lookup_and_the_subscription_still_wakes_the_call() {
    // B parks the call and subscribes to bob's events 3 s later; the phone registers
    // on C in between, so its event is published while nobody listens: only B's
    // re-read of the AOR once subscribed can wake the call
    let redis = Box::new(redis("cluster-race-sub-redis"));
    let s = sleeping_on("cluster-race-sub", redis, &[SUBSCRIBE_DELAY]);
    woken_through_c(&s, |s| {
        assert_eq!(s.redis.subscribers(BOB_CHANNEL), 0, "B not listening yet");
    });
    drop(s.a);
}

#[test]
fn a_register_while_the_subscription_is_down_still_wakes_the_call() {
    // B's subscription is cut while the call waits, and comes back 3 s later; the
    // phone registers on C in between: only B's re-read after resubscribing can wake
    // the call
    let redis = Box::new(redis("cluster-race-down-redis"));
    let s = sleeping_on("cluster-race-down", redis, &[SUBSCRIBE_DELAY]);
    woken_through_c(&s, |s| {
        wait_subscribers(s, 1);
        s.redis.kill_subscribers();
        assert_eq!(s.redis.subscribers(BOB_CHANNEL), 0, "B's subscription cut");
    });
    drop(s.a);
}

#[test]
fn cancel_before_the_waking_register_on_another_node() {
    let s = sleeping("cluster-cancel-a");
    let mut alice = Ua::udp("alice", &s.b);
    let inv = alice.invite("bob", "");
    expect_push(&s.hook, "call");
    let mut woken = Ua::udp("bob", &s.c);
    // the CANCEL is answered on B before the phone registers on C (a CANCEL and a
    // REGISTER that cross are cancel_right_after_the_waking_register_on_another_node)
    alice.cancel(&inv);
    alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c == 200);
    register_token(&mut woken, &s.token);
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    woken.expect_nothing(
        "an INVITE for a cancelled call",
        Duration::from_millis(500),
        |m| m.method() == Some("INVITE"),
    );
    drop((s.a, s.b, s.c));
}

#[test]
fn cancel_right_after_the_waking_register_on_another_node() {
    let s = sleeping("cluster-cancel-b");
    let mut alice = Ua::udp("alice", &s.b);
    let inv = alice.invite("bob", "");
    expect_push(&s.hook, "call");
    let mut woken = Ua::udp("bob", &s.c);
    register_token(&mut woken, &s.token);
    alice.cancel(&inv);
    alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c == 200);
    // whether the INVITE made it out before the CANCEL or not, the caller gets 487
    // and a phone that got the INVITE gets its CANCEL through C
    if let Some(got) = woken.try_expect(Duration::from_millis(500), |m| {
        m.method() == Some("INVITE") && m.call_id() == inv.call_id
    }) {
        let btag = tag();
        woken.reply(&got, 180, "Ringing", Some(&btag));
        let cancel = woken.expect_request("CANCEL", Some(&inv.call_id));
        assert_eq!(cancel.from, s.c.addr(), "{cancel:?}");
        woken.reply(&cancel, 200, "OK", None);
        woken.reply(&got, 487, "Request Terminated", Some(&btag));
        woken.expect_request("ACK", Some(&inv.call_id));
    }
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    drop((s.a, s.c));
}

#[test]
fn cancel_while_the_woken_phone_rings_through_another_node() {
    let s = sleeping("cluster-cancel-c");
    let mut alice = Ua::udp("alice", &s.b);
    let inv = alice.invite("bob", "");
    let hint = expect_push(&s.hook, "call")["pushHint"]
        .as_str()
        .expect("pushHint")
        .to_owned();
    let mut woken = Ua::udp("bob", &s.c);
    register_token(&mut woken, &s.token);
    let got = woken.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(got.header_lines("x-pushhint"), vec![hint.as_str()]);
    let btag = tag();
    woken.reply(&got, 180, "Ringing", Some(&btag));
    alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    alice.cancel(&inv);
    alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c == 200);
    let cancel = woken.expect_request("CANCEL", Some(&inv.call_id));
    assert_eq!(cancel.from, s.c.addr(), "through the node holding the flow");
    assert_eq!(cancel.top_branch(), got.top_branch(), "{cancel:?}");
    woken.reply(&cancel, 200, "OK", None);
    woken.reply(&got, 487, "Request Terminated", Some(&btag));
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    woken.expect_request("ACK", Some(&inv.call_id));
    drop(s.a);
}

// ---------------------------------------------------------------------------------
// Node loss
// ---------------------------------------------------------------------------------

#[test]
fn a_dead_nodes_phones_are_pushed_or_480() {
    let redis = redis("cluster-dead");
    let hook = hook();
    let mut a = push_node("cluster-dead-a", &redis, &hook).0;
    let (b, admin_b) = push_node("cluster-dead-b", &redis, &hook);
    let token = unique("tok");
    let mut pushy = Ua::udp("pat", &a);
    register_token(&mut pushy, &token);
    let mut plain = Ua::udp("paul", &a);
    plain.register(600);

    a.kill9();
    // nothing is lost with the node: its bindings stay in Redis
    assert_eq!(contacts_seen_by(&b, "paul"), vec![plain.contact_uri()]);
    // its heartbeat lapses (3 s), then its flows count as failed
    std::thread::sleep(Duration::from_millis(3500));
    let (code, body) = get(admin_b, "/cluster");
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(1), "{view:#}");
    assert_eq!(view["bindings_of_gone_nodes"], 2, "{view:#}");

    let mut caller = Ua::udp("alice", &b);
    let inv = caller.invite("paul", "");
    let fin = caller.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(480), "no token, flow gone: {fin:?}");
    caller.ack_non2xx(&inv, &fin);
    plain.expect_nothing("an INVITE from anyone", Duration::ZERO, |m| {
        m.method() == Some("INVITE")
    });

    let inv = caller.invite("pat", "");
    caller.expect_response(&inv.call_id, "INVITE", "100 Trying", |c| c == 100);
    let push = expect_push(&hook, "call for a phone of the dead node");
    assert_eq!(push["token"], token.as_str(), "{push:#}");
    let hint = push["pushHint"].as_str().expect("pushHint").to_owned();
    let mut woken = Ua::udp("pat", &b);
    register_token(&mut woken, &token);
    let got = woken.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(got.header_lines("x-pushhint"), vec![hint.as_str()]);
    let t = tag();
    woken.reply(&got, 200, "OK", Some(&t));
    let ok = caller.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut d = Dialog::uac(&inv, &ok);
    caller.ack_2xx(&mut d, inv.cseq);
    woken.expect_request("ACK", Some(&inv.call_id));
    in_dialog(&mut caller, &mut d, &mut woken, "BYE");
    assert_eq!(
        pushy.count_received("INVITE", &inv.call_id),
        0,
        "the dead node's flow got nothing"
    );
}

#[test]
fn the_idle_timeout_spares_a_connection_carrying_a_shared_binding() {
    // the idle timeout cannot wait for Redis: the node remembers until when the
    // bindings registered on each connection live
    let redis = redis("cluster-idle");
    let idle = [("SIP__TCP_IDLE_TIMEOUT_SECS", "1")];
    let (a, _) = node_with("cluster-idle-a", &redis, &idle);
    let (b, _) = node("cluster-idle-b", &redis);
    let mut phone = Ua::tcp("tom", &a);
    phone.register(600);
    std::thread::sleep(Duration::from_secs(3));
    let mut caller = Ua::udp("alice", &b);
    call_across(&mut caller, &b, &mut phone, &a, false);

    // once its binding is gone, the idle timeout applies again
    let contact = format!("<{}>", phone.contact_uri());
    let r = phone.register_with(Some(&contact), Some(0));
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert!(
        phone.wait_tcp_closed(Duration::from_secs(5)),
        "a connection whose binding is gone is closed when idle"
    );
}
