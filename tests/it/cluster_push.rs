//! What sipwake does for sleeping phones, with several nodes on one real
//! `redis-server` (`store.backend = "redis"`): a MESSAGE kept on one node is delivered
//! once, by the node the phone wakes on, also when two devices wake on two nodes at
//! once; each push binding near its end gets exactly one refresh push however many
//! nodes run, also when the node that took its REGISTER is gone; and an APNs
//! environment learnt on one node survives the app's REGISTER on another; and a call
//! parked on one node is woken by a REGISTER whose event it never heard (its event
//! subscription was down), by the re-read after it subscribes again. (The harness and
//! the other cluster tests: `cluster.rs`.)

use std::time::{Duration, Instant};

use crate::cluster::{expect_push, hook, node_with, push_node, redis, register_token, sleeping};
use crate::common::mock_http::MockHttp;
use crate::common::push_phone::*;
use crate::common::*;
use crate::messages::send_message;
use serde_json::Value;

const SHORT: Duration = Duration::from_millis(500);

fn is_message(m: &Msg) -> bool {
    m.method() == Some("MESSAGE")
}

/// A REGISTER of `ua`'s Contact for 600 s with `X-Token: token`, not yet sent:
/// (Call-ID, text).
fn token_register(ua: &Ua, token: &str) -> (String, String) {
    let cid = call_id();
    let text = build_register(
        ua.tp.via(),
        &ua.via_hostport,
        &ua.user,
        &ua.domain,
        Some(&format!("<{}>", ua.contact_uri())),
        Some(600),
        &cid,
        1,
        &branch(),
        &tag(),
    )
    .replacen(
        "Content-Length: 0\r\n",
        &format!("X-Token: {token}\r\nContent-Length: 0\r\n"),
        1,
    );
    (cid, text)
}

#[test]
fn a_message_kept_on_one_node_is_delivered_once_by_the_node_the_phone_wakes_on() {
    let redis = redis("cmsg-redis");
    let hook = hook();
    let a = push_node("cmsg-a", &redis, &hook).0;
    let b = push_node("cmsg-b", &redis, &hook).0;
    let t1 = unique("tok");
    let mut asleep = Ua::udp("bob", &a);
    register_token(&mut asleep, &t1);
    fall_asleep();

    // kept through A, announced by a message notice
    let mut alice = Ua::udp("alice", &a);
    let (cid0, r) = send_message(&mut alice, "bob", "zero");
    assert_eq!(r.status(), Some(202), "a kept MESSAGE is accepted: {r:?}");
    let doc = expect_push(&hook, "message notice");
    assert_eq!(
        (doc["event"].as_str(), doc["token"].as_str()),
        (Some("message"), Some(t1.as_str())),
        "{doc:#}"
    );

    // the app wakes and registers on B: B hands the message over its new flow
    let mut woken = Ua::udp("bob", &b);
    register_token(&mut woken, &t1);
    let m = woken.expect("the kept MESSAGE", WAIT, is_message);
    assert_eq!(m.call_id(), cid0, "{m:?}");
    assert_eq!(
        m.from,
        b.addr(),
        "delivered by the node holding the flow: {m:?}"
    );
    assert_eq!(m.body, "zero");
    woken.reply(&m, 200, "OK", Some(&tag()));
    woken.expect_nothing("the MESSAGE a second time", SHORT, is_message);
    asleep.expect_nothing("a MESSAGE on the old flow", Duration::ZERO, is_message);

    // two devices of bob, one asleep on each node, and two MESSAGEs through B
    let t2 = unique("tok");
    let mut second = Ua::udp("bob", &a);
    register_token(&mut second, &t2);
    fall_asleep();
    let mut carl = Ua::udp("carl", &b);
    let (cid1, r) = send_message(&mut carl, "bob", "one");
    assert_eq!(r.status(), Some(202), "{r:?}");
    let (cid2, r) = send_message(&mut carl, "bob", "two");
    assert_eq!(r.status(), Some(202), "{r:?}");

    // both wake at the same moment, one on each node: both nodes would deliver; one does
    let mut on_a = Ua::udp("bob", &a);
    let mut on_b = Ua::udp("bob", &b);
    let (ca, ra) = token_register(&on_a, &t2);
    let (cb, rb) = token_register(&on_b, &t1);
    on_a.send(&ra);
    on_b.send(&rb);
    assert_eq!(on_a.expect_final(&ca, "REGISTER").status(), Some(200));
    assert_eq!(on_b.expect_final(&cb, "REGISTER").status(), Some(200));
    let mut got: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 2 && Instant::now() < deadline {
        for (name, ua) in [("A", &mut on_a), ("B", &mut on_b)] {
            if let Some(m) = ua.try_expect(Duration::from_millis(50), is_message) {
                got.push((m.call_id().to_owned(), name.to_owned()));
                ua.reply(&m, 200, "OK", Some(&tag()));
            }
        }
    }
    for ua in [&mut on_a, &mut on_b] {
        ua.expect_nothing("a MESSAGE delivered twice", SHORT, is_message);
    }
    let ids: Vec<&str> = got.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        ids,
        [cid1.as_str(), cid2.as_str()],
        "each once, in order: {got:?}"
    );
    assert_eq!(got[0].1, got[1].1, "one node hands them all over: {got:?}");
}

#[test]
fn a_push_binding_near_its_end_gets_one_refresh_push_with_several_nodes() {
    let redis = redis("crefresh-redis");
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let url = format!("{}/push", hook.base_url());
    let settings = [
        ("PUSH__WEBHOOK__URL", url.as_str()),
        ("PUSH__DEFAULT_PROVIDER", "webhook"),
        ("PUSH__FLOW_TIMEOUT_SECS", "1"),
        ("PUSH__BINDING_TTL_SECS", "2"),
        ("REGISTRAR__MIN_EXPIRES", "1"),
        ("PUSH__REFRESH__BEFORE_SECS", "3"),
    ];
    let mut a = node_with("crefresh-a", &redis, &settings).0;
    let b = node_with("crefresh-b", &redis, &settings).0;
    let c = node_with("crefresh-c", &redis, &settings).0;
    let (ta, tb) = (unique("on-a"), unique("on-b"));
    // each binding ends about 4 s from now: 2 s registered + 2 s kept for push
    let mut pa = Ua::udp("ann", &a);
    register_ok(&mut pa, "", &format!("X-Token: {ta}\r\n"), 2, &ta);
    let mut pb = Ua::udp("ben", &b);
    register_ok(&mut pb, "", &format!("X-Token: {tb}\r\n"), 2, &tb);
    let registered = Instant::now();
    // A dies once both registrations are filed for their refresh: ann's refresh
    // push is then up to B and C
    let filed = || {
        redis
            .command("ZCARD sipwake:refresh:due")
            .unwrap_or_default()
    };
    while filed() != ":2\r\n" {
        assert!(registered.elapsed() < WAIT, "not filed: {}", filed());
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill9();

    let mut refreshes: Vec<Value> = Vec::new();
    // watch until both bindings have surely run out
    while registered.elapsed() < Duration::from_millis(5500) {
        if let Some(seen) = hook.next(Duration::from_millis(100)) {
            refreshes.push(seen.json());
        }
    }
    for doc in &refreshes {
        assert_eq!(doc["event"], "refresh", "only refresh pushes here: {doc:#}");
    }
    let count = |t: &str| refreshes.iter().filter(|d| d["token"] == t).count();
    assert_eq!(
        count(&ta),
        1,
        "one refresh for ann, whose node died: {refreshes:#?}"
    );
    assert_eq!(count(&tb), 1, "one refresh for ben: {refreshes:#?}");
    let ann = refreshes
        .iter()
        .find(|d| d["token"] == ta.as_str())
        .unwrap();
    assert_eq!(ann["aor"], format!("ann@{DOMAIN}"), "{ann:#}");
    drop((b, c));
}

/// A fresh APNs-looking token: 64 hex digits.
fn hex64() -> String {
    let u = unique("g");
    (0..4)
        .map(|i| {
            let mut h = 0xcbf2_9ce4_8422_2325u64 ^ i;
            for b in u.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

#[test]
fn an_apns_environment_learnt_on_one_node_survives_a_register_on_another() {
    let redis = redis("cenv-redis");
    let gw = MockHttp::start();
    gw.route("/gw", 200, "{}");
    let url = format!("{}/gw", gw.base_url());
    let settings = [
        ("PUSH__WEBHOOK__URL", url.as_str()),
        ("PUSH__WEBHOOK__PROVIDERS", "apns"),
        ("PUSH__FLOW_TIMEOUT_SECS", "1"),
    ];
    let a = node_with("cenv-a", &redis, &settings).0;
    let b = node_with("cenv-b", &redis, &settings).0;
    let c = node_with("cenv-c", &redis, &settings).0;
    let token = hex64();
    let header = format!("X-Token: {token}\r\n");
    let mut asleep = Ua::udp("erin", &a);
    register_ok(&mut asleep, "", &header, 600, &token);
    fall_asleep();

    // a call through B; the gateway found the token on the sandbox
    gw.answer_next("/gw", 200, r#"{"environment":"sandbox"}"#);
    let mut alice = Ua::udp("alice", &b);
    let inv = call_from(&mut alice, "Alice Liddell", "erin");
    let seen = gw.next(WAIT).expect("the first call push");
    let doc = seen.json();
    assert_eq!(doc["environment"], "production", "a guess: {doc:#}");
    assert_eq!(doc["environmentGuessed"], true, "{doc:#}");
    let hint = doc["pushHint"].as_str().expect("pushHint").to_owned();
    // the app wakes on C, takes the call, and registers again there later
    let mut woken = Ua::udp("erin", &c);
    register_ok(&mut woken, "", &header, 600, &token);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got);
    register_ok(&mut woken, "", &header, 600, &token);
    fall_asleep();

    // the next call, through A, goes to the learnt sandbox
    let mut bert = Ua::udp("bert", &a);
    let inv = call_from(&mut bert, "Bert", "erin");
    let doc = gw.next(WAIT).expect("the next call push").json();
    assert_eq!(doc["environment"], "sandbox", "learnt and kept: {doc:#}");
    assert_eq!(doc["environmentGuessed"], false, "{doc:#}");
    bert.cancel(&inv);
    let fin = bert.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    bert.ack_non2xx(&inv, &fin);
}

#[test]
fn kept_messages_are_capped_and_expire_across_nodes() {
    let redis = redis("cmsgcap-redis");
    let hook = hook();
    let url = format!("{}/push", hook.base_url());
    let settings = [
        ("PUSH__WEBHOOK__URL", url.as_str()),
        ("PUSH__DEFAULT_PROVIDER", "webhook"),
        ("PUSH__FLOW_TIMEOUT_SECS", "1"),
        ("PUSH__MESSAGES__MAX_PER_AOR", "1"),
        ("PUSH__MESSAGES__TTL_SECS", "2"),
        ("LOG__LEVEL", "info"),
    ];
    let a = node_with("cmsgcap-a", &redis, &settings).0;
    let b = node_with("cmsgcap-b", &redis, &settings).0;
    let token = unique("tok");
    let mut asleep = Ua::udp("dora", &a);
    register_token(&mut asleep, &token);
    fall_asleep();

    // the cap holds for the AOR, whichever node the MESSAGEs arrive on
    let mut alice = Ua::udp("alice", &a);
    let (_, r) = send_message(&mut alice, "dora", "kept");
    assert_eq!(r.status(), Some(202), "{r:?}");
    let mut bert = Ua::udp("bert", &b);
    let (_, r) = send_message(&mut bert, "dora", "one too many");
    assert_eq!(
        r.status(),
        Some(486),
        "push.messages.max_per_aor over two nodes: {r:?}"
    );

    // it expires undelivered: one node drops it, with its log line
    let drops = || {
        [&a, &b]
            .iter()
            .map(|p| {
                p.log_text()
                    .matches("kept message expired undelivered")
                    .count()
            })
            .sum::<usize>()
    };
    let deadline = Instant::now() + WAIT;
    while drops() == 0 {
        assert!(
            Instant::now() < deadline,
            "no node dropped the expired message"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // both nodes sweep every second: give the other one a few chances
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(drops(), 1, "dropped by one node, once");
    let mut woken = Ua::udp("dora", &b);
    register_token(&mut woken, &token);
    woken.expect_nothing("an expired MESSAGE", SHORT, is_message);
    // and the AOR takes a new one again
    fall_asleep();
    let (_, r) = send_message(&mut bert, "dora", "fresh");
    assert_eq!(r.status(), Some(202), "{r:?}");
}

#[test]
fn a_register_while_the_event_subscription_is_down_still_wakes_the_parked_call() {
    let s = sleeping("cluster-resub");
    let mut alice = Ua::udp("alice", &s.b);
    let inv = alice.invite("bob", "");
    alice.expect_response(&inv.call_id, "INVITE", "100 Trying", |c| c == 100);
    let hint = expect_push(&s.hook, "call")["pushHint"]
        .as_str()
        .expect("pushHint")
        .to_owned();
    // B's event subscription is cut, and cannot come back for now
    let deadline = Instant::now() + WAIT;
    while s.redis.subscribers(crate::cluster::BOB_CHANNEL) != 1 {
        assert!(
            Instant::now() < deadline,
            "B never subscribed to bob's events"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = s.redis.server().expect("one Redis");
    let redis = |line: &str| server.command(line).unwrap_or_default();
    assert_eq!(
        redis("ACL SETUSER default -subscribe -ssubscribe"),
        "+OK\r\n"
    );
    let killed = redis("CLIENT KILL TYPE pubsub");
    assert_eq!(
        killed, ":1\r\n",
        "only B, where a call waits for bob, listens to his events"
    );

    // the app registers on C meanwhile: its event is published to nobody
    let mut woken = Ua::udp("bob", &s.c);
    register_token(&mut woken, &s.token);
    woken.expect_nothing(
        "an INVITE while B hears no events",
        Duration::from_millis(300),
        |m| m.method() == Some("INVITE"),
    );
    assert_eq!(
        redis("ACL SETUSER default +subscribe +ssubscribe"),
        "+OK\r\n"
    );

    // B subscribes again, re-reads the AORs of its parked calls, and forks
    let got = woken.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(got.from, s.c.addr(), "through the node holding the flow");
    assert_eq!(
        got.header_lines("x-pushhint"),
        vec![hint.as_str()],
        "{got:?}"
    );
    let btag = tag();
    woken.reply(&got, 180, "Ringing", Some(&btag));
    alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    alice.cancel(&inv);
    alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c == 200);
    let cancel = woken.expect_request("CANCEL", Some(&inv.call_id));
    woken.reply(&cancel, 200, "OK", None);
    woken.reply(&got, 487, "Request Terminated", Some(&btag));
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    drop(s.a);
}
