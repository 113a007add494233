//! MESSAGE (RFC 3428) to a sleeping push phone, end to end against the real binary:
//! kept durably (SQLite, across a `kill -9` and restart), answered `202`, announced by
//! a webhook `event: message` notice, and delivered in order when the phone registers
//! again, each removed only after its `2xx`; expired and refused messages are dropped
//! with a log line and a metric. The APNs notice (an alert to the regular token) is
//! tested with the APNs stand-in in `push_apns.rs`.

use std::time::Duration;

use crate::common::mock_http::{MockHttp, Seen};
use crate::common::push_phone::*;
use crate::common::*;
use serde_json::Value;

const SHORT: Duration = Duration::from_millis(400);

/// sipwake pushing bare tokens to the webhook stand-in `hook` (1 s flow timeout).
fn builder(name: &str, hook: &MockHttp, extra: &[(&str, &str)]) -> ProxyBuilder {
    hook.route("/hook", 200, "{}");
    let mut b = ProxyBuilder::new(name)
        .env("PUSH__WEBHOOK__URL", &format!("{}/hook", hook.base_url()))
        .env("PUSH__DEFAULT_PROVIDER", "webhook")
        .env("PUSH__FLOW_TIMEOUT_SECS", "1");
    for (k, v) in extra {
        b = b.env(k, v);
    }
    b
}

/// Sends a MESSAGE with `text` from `caller` (display name `Alice`) to `to_user`;
/// returns its Call-ID and the final response.
pub(crate) fn send_message(caller: &mut Ua, to_user: &str, text: &str) -> (String, Msg) {
    let cid = call_id();
    let msg = format!(
        "MESSAGE sip:{to_user}@{DOMAIN} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <{aor}>;tag={t}\r\n\
         To: <sip:{to_user}@{DOMAIN}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 7 MESSAGE\r\n\
         Content-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: {len}\r\n\r\n{text}",
        via = caller.via(&branch()),
        aor = caller.aor(),
        t = tag(),
        len = text.len(),
    );
    caller.send(&msg);
    let r = caller.expect_final(&cid, "MESSAGE");
    (cid, r)
}

/// The next webhook POST: an `event: message` document.
fn expect_notice(hook: &MockHttp) -> Value {
    let seen: Seen = hook
        .next(WAIT)
        .unwrap_or_else(|| panic!("no message notice within {WAIT:?}"));
    assert_eq!(seen.path, "/hook", "{seen:?}");
    let doc = seen.json();
    assert_eq!(doc["event"], "message", "{doc:#}");
    doc
}

/// Waits for the next kept MESSAGE at `phone` and returns it.
fn expect_delivery(phone: &mut Ua) -> Msg {
    phone.expect("a kept MESSAGE", WAIT, |m| m.method() == Some("MESSAGE"))
}

/// The value of the metric sample `name` (with its labels) from the admin API.
fn metric(admin: std::net::SocketAddr, name: &str) -> u64 {
    let text = http_get(admin, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).expect("connect to the admin API");
    c.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

#[test]
fn a_message_for_a_sleeping_phone_is_kept_across_a_restart_and_delivered_in_order() {
    let hook = MockHttp::start();
    let mut proxy = builder(
        "msg-restart",
        &hook,
        &[("PUSH__MESSAGES__NOTICE_TEXT", "true")],
    )
    .sqlite()
    .start();
    let token = unique("tok");
    let header = format!("X-Token: {token}\r\n");
    let mut asleep = Ua::udp("bob", &proxy);
    register_ok(&mut asleep, "", &header, 600, &token);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let texts = ["first: héllo", "second", "third"];
    let mut ids = Vec::new();
    for text in texts {
        let (cid, r) = send_message(&mut alice, "bob", text);
        assert_eq!(r.status(), Some(202), "a kept MESSAGE is accepted: {r:?}");
        let doc = expect_notice(&hook);
        let what = format!("{doc:#}");
        assert_eq!(doc["aor"], format!("bob@{DOMAIN}"), "{what}");
        assert_eq!(doc["token"], token.as_str(), "{what}");
        assert_eq!(doc["from"], alice.aor(), "{what}");
        assert_eq!(doc["fromName"], "Alice", "{what}");
        assert_eq!(doc["fromNumber"], "alice", "{what}");
        assert_eq!(doc["text"], text, "push.messages.notice_text: {what}");
        assert!(doc["messageId"].is_string(), "{what}");
        ids.push(cid);
    }
    asleep.expect_nothing("a MESSAGE on the sleeping flow", Duration::ZERO, |m| {
        m.method() == Some("MESSAGE")
    });

    // sipwake dies hard; the messages were durable before their 202
    proxy.restart();

    let mut woken = Ua::udp("bob", &proxy);
    register_ok(&mut woken, "", &header, 600, &token);
    for (i, text) in texts.iter().enumerate() {
        let m = expect_delivery(&mut woken);
        assert_eq!(m.call_id(), ids[i], "in arrival order: {m:?}");
        assert_eq!(m.body, *text, "{m:?}");
        assert!(
            m.raw.contains("From: \"Alice\""),
            "the sender's From: {m:?}"
        );
        assert_eq!(m.cseq(), (7, "MESSAGE".to_owned()), "{m:?}");
        assert!(
            !m.raw.contains(&token),
            "no push token in the delivered MESSAGE: {m:?}"
        );
        // the next one waits for this one's 2xx
        woken.expect_nothing("the next MESSAGE before this one's 2xx", SHORT, |m| {
            m.method() == Some("MESSAGE")
        });
        woken.reply(&m, 200, "OK", Some(&tag()));
    }
    woken.expect_nothing("a fourth MESSAGE", SHORT, |m| m.method() == Some("MESSAGE"));

    // delivered means gone: another REGISTER (and another restart) brings nothing
    proxy.restart();
    let mut again = Ua::udp("bob", &proxy);
    register_ok(&mut again, "", &header, 600, &token);
    again.expect_nothing("a MESSAGE delivered twice", SHORT, |m| {
        m.method() == Some("MESSAGE")
    });
}

#[test]
fn an_expired_message_is_dropped_with_a_log_line_and_a_metric() {
    let hook = MockHttp::start();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = builder("msg-drop", &hook, &[("PUSH__MESSAGES__TTL_SECS", "1")])
        .env("ADMIN__LISTEN", &admin.to_string())
        .env("LOG__LEVEL", "info")
        .start();
    let token = unique("tok");
    let header = format!("X-Token: {token}\r\n");
    let mut asleep = Ua::udp("carl", &proxy);
    register_ok(&mut asleep, "", &header, 600, &token);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let (_, r) = send_message(&mut alice, "carl", "too late");
    assert_eq!(r.status(), Some(202), "{r:?}");
    let doc = expect_notice(&hook);
    assert_eq!(
        doc["text"],
        Value::Null,
        "no text unless notice_text: {doc:#}"
    );
    assert!(
        proxy.wait_log("kept message expired undelivered", WAIT),
        "a log line for the expired message:\n{}",
        proxy.log_text()
    );
    assert_eq!(
        metric(admin, "sipwake_messages_dropped_total{reason=\"expired\"}"),
        1
    );
    let mut woken = Ua::udp("carl", &proxy);
    register_ok(&mut woken, "", &header, 600, &token);
    woken.expect_nothing("an expired MESSAGE", SHORT, |m| {
        m.method() == Some("MESSAGE")
    });
    assert_eq!(metric(admin, "sipwake_messages_kept_total"), 1);
}

#[test]
fn refused_messages_are_dropped_and_caps_refuse_with_clear_answers() {
    let hook = MockHttp::start();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = builder(
        "msg-caps",
        &hook,
        &[
            ("PUSH__MESSAGES__MAX_PER_AOR", "2"),
            ("PUSH__MESSAGES__MAX_BODY_BYTES", "10"),
        ],
    )
    .env("ADMIN__LISTEN", &admin.to_string())
    .env("LOG__LEVEL", "info")
    .start();
    let token = unique("tok");
    let header = format!("X-Token: {token}\r\n");
    let mut asleep = Ua::udp("dana", &proxy);
    register_ok(&mut asleep, "", &header, 600, &token);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let (_, r) = send_message(&mut alice, "dana", "this is longer than ten bytes");
    assert_eq!(r.status(), Some(413), "{r:?}");
    let (_, r) = send_message(&mut alice, "dana", "refused");
    assert_eq!(r.status(), Some(202), "{r:?}");
    let (cid2, r) = send_message(&mut alice, "dana", "taken");
    assert_eq!(r.status(), Some(202), "{r:?}");
    let (_, r) = send_message(&mut alice, "dana", "three");
    assert_eq!(r.status(), Some(486), "max_per_aor reached: {r:?}");

    // a phone refusing one (415) drops that one and gets the next
    let mut woken = Ua::udp("dana", &proxy);
    register_ok(&mut woken, "", &header, 600, &token);
    let m = expect_delivery(&mut woken);
    assert_eq!(m.body, "refused");
    woken.reply(&m, 415, "Unsupported Media Type", Some(&tag()));
    let m = expect_delivery(&mut woken);
    assert_eq!((m.call_id(), m.body.as_str()), (cid2.as_str(), "taken"));
    woken.reply(&m, 200, "OK", Some(&tag()));
    assert!(
        proxy.wait_log("kept message refused by the phone", WAIT),
        "{}",
        proxy.log_text()
    );
    assert_eq!(
        metric(
            admin,
            "sipwake_messages_dropped_total{reason=\"undeliverable\"}"
        ),
        1
    );
    assert_eq!(metric(admin, "sipwake_messages_delivered_total"), 1);
    assert_eq!(metric(admin, "sipwake_messages_kept_total"), 2);

    // a user without any push binding still gets 480
    let (_, r) = send_message(&mut alice, "nobody", "hi");
    assert_eq!(r.status(), Some(480), "{r:?}");
}
