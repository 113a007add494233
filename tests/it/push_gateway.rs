//! The webhook as the operator's push gateway (`push.webhook.providers`), end to end
//! against the real binary: Linphone-style APNs registrations and FCM tokens are
//! served without sipwake holding any APNs or FCM credentials; the webhook document
//! carries what the gateway needs to deliver each push itself, and the gateway's
//! answer can report a dead token or the APNs environment that worked.
//!
//! The gateway is the scriptable HTTP/1.1 stand-in of `common::mock_http`.

use std::time::{Duration, Instant};

use crate::common::mock_http::{now_ms, MockHttp, Seen};
use crate::common::push_phone::*;
use crate::common::*;
use serde_json::Value;

const TEAM: &str = "ABCDE12345";
const APP: &str = "org.example.linphone";
const WAKE_MS: u64 = 5000;
const SHORT: Duration = Duration::from_millis(500);

/// sipwake whose only push route is the webhook at `gw`, for `providers`, with a 1 s
/// flow timeout; `extra` overrides.
fn start(name: &str, gw: &MockHttp, providers: &str, extra: &[(&str, &str)]) -> Proxy {
    gw.route("/gw", 200, "{}");
    let mut b = ProxyBuilder::new(name)
        .env("PUSH__WEBHOOK__URL", &format!("{}/gw", gw.base_url()))
        .env("PUSH__WEBHOOK__PROVIDERS", providers)
        .env("PUSH__FLOW_TIMEOUT_SECS", "1")
        .env("PUSH__WAKE_TIMEOUT_MS", &WAKE_MS.to_string());
    for (k, v) in extra {
        b = b.env(k, v);
    }
    b.start()
}

/// A fresh APNs-looking token: 64 hex digits.
fn hex64() -> String {
    let u = unique("g");
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    (0..4)
        .map(|i| {
            for b in u.bytes().chain([i as u8]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

/// Linphone's REGISTER parameters: VoIP and regular token, sandbox.
fn linphone(voip: &str, alert: &str) -> String {
    format!(
        ";pn-provider=apns.dev;pn-prid={voip}:voip&{alert}:remote;\
         pn-param={TEAM}.{APP}.voip&remote"
    )
}

/// The next POST to the gateway; it must be JSON.
fn expect_doc(gw: &MockHttp, what: &str) -> (Seen, Value) {
    let seen = gw
        .next(WAIT)
        .unwrap_or_else(|| panic!("no webhook POST ({what}) within {WAIT:?}"));
    assert_eq!(seen.method, "POST", "{seen:?}");
    assert_eq!(seen.path, "/gw", "{seen:?}");
    let doc = seen.json();
    (seen, doc)
}

fn expect_no_doc(gw: &MockHttp, what: &str, wait: Duration) {
    if let Some(s) = gw.next(wait) {
        panic!("expected no webhook POST ({what}), got {}", s.text());
    }
}

/// The caller gets `code` for `inv` and ACKs it.
fn expect_final_code(caller: &mut Ua, inv: &Invite, code: u16) {
    let r = caller.expect(
        &format!("a final response {code} to INVITE {}", inv.call_id),
        Duration::from_millis(WAKE_MS + 3000),
        |m| m.call_id() == inv.call_id && m.cseq_method() == "INVITE" && m.status() >= Some(200),
    );
    assert_eq!(r.status(), Some(code), "{r:?}");
    caller.ack_non2xx(inv, &r);
}

#[test]
fn linphone_apns_dev_through_the_gateway_call_and_notice_documents() {
    let gw = MockHttp::start();
    let proxy = start("gw-linphone", &gw, "apns", &[]);
    let (voip, alert) = (hex64(), hex64());
    let params = linphone(&voip, &alert);
    let mut asleep = Ua::udp("bob", &proxy);
    let r = register_ok(&mut asleep, &params, "", 600, &voip);
    assert!(!r.raw.contains(&alert), "{r:?}");
    assert_eq!(
        r.header("feature-caps"),
        Some("*;+sip.pns=\"apns.dev\";+sip.pnsreg"),
        "RFC 8599 §5.4: the service is served (through the gateway): {r:?}"
    );

    // FCM is not routed to the webhook and not configured: 555, no Feature-Caps
    let mut other = Ua::udp("fred", &proxy);
    let contact = format!(
        "<{};pn-provider=fcm;pn-prid={};pn-param=my-project>",
        other.contact_uri(),
        unique("fcm")
    );
    let r = register_raw(&mut other, &contact, "", 600);
    assert_eq!(r.status(), Some(555), "{r:?}");
    assert!(r.header("feature-caps").is_none(), "{r:?}");
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call_from(&mut alice, "Alice Liddell", "bob");
    let (_, doc) = expect_doc(&gw, "the call push");
    let what = format!("{doc:#}");
    assert_eq!(doc["event"], "call", "{what}");
    assert_eq!(doc["provider"], "apns", "{what}");
    assert_eq!(doc["token"], voip.as_str(), "{what}");
    assert_eq!(doc["tokenKind"], "voip", "{what}");
    assert_eq!(doc["pushType"], "voip", "{what}");
    assert_eq!(doc["priority"], "high", "{what}");
    assert_eq!(doc["environment"], "sandbox", "{what}");
    assert_eq!(doc["environmentGuessed"], false, "{what}");
    assert_eq!(doc["topic"], format!("{APP}.voip"), "{what}");
    assert_eq!(doc["bundleId"], APP, "{what}");
    assert_eq!(doc["teamId"], TEAM, "{what}");
    assert_eq!(
        doc["pnParam"],
        format!("{TEAM}.{APP}.voip&remote"),
        "{what}"
    );
    assert_eq!(doc["aor"], format!("bob@{DOMAIN}"), "{what}");
    assert_eq!(doc["callerName"], "Alice Liddell", "{what}");
    assert_eq!(doc["callerNumber"], "alice", "{what}");
    assert_eq!(doc["callId"], inv.call_id.as_str(), "{what}");
    let ttl = doc["ttlSecs"].as_u64().expect("ttlSecs, a number");
    assert!((1..=WAKE_MS / 1000).contains(&ttl), "{what}");
    assert!(
        doc["pushHint"].as_str().is_some_and(|h| h.len() >= 16),
        "{what}"
    );
    assert!(
        !what.contains(&alert),
        "the call push must not carry the regular token: {what}"
    );

    // the caller gives up: the notice goes to the regular token as an alert
    alice.cancel(&inv);
    expect_final_code(&mut alice, &inv, 487);
    let (_, n) = expect_doc(&gw, "the cancel notice");
    let what = format!("{n:#}");
    assert_eq!(n["event"], "cancel", "{what}");
    assert_eq!(n["reason"], "caller_cancelled", "{what}");
    assert_eq!(n["token"], alert.as_str(), "{what}");
    assert_eq!(n["tokenKind"], "alert", "{what}");
    assert_eq!(n["pushType"], "alert", "{what}");
    assert_eq!(n["topic"], APP, "no .voip for an alert: {what}");
    assert_eq!(n["environment"], "sandbox", "{what}");
    assert_eq!(n["callUUID"], doc["callUUID"], "{what}");
    assert!(!what.contains(&voip), "{what}");
    expect_no_doc(&gw, "anything more", SHORT);
}

#[test]
fn the_woken_linphone_app_gets_the_call_pushed_through_the_gateway() {
    let gw = MockHttp::start();
    let proxy = start("gw-wake", &gw, "all", &[]);
    let (voip, alert) = (hex64(), hex64());
    let params = linphone(&voip, &alert);
    let mut asleep = Ua::udp("carol", &proxy);
    register_ok(&mut asleep, &params, "", 600, &voip);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call_from(&mut alice, "Alice Liddell", "carol");
    let (_, doc) = expect_doc(&gw, "the call push");
    let hint = doc["pushHint"].as_str().unwrap().to_owned();
    let mut woken = Ua::udp("carol", &proxy);
    register_ok(&mut woken, &params, "", 600, &voip);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got);
    expect_no_doc(&gw, "a notice for a phone that got its INVITE", SHORT);
}

#[test]
fn fcm_through_the_gateway_and_a_dead_token_answer_removes_it() {
    let gw = MockHttp::start();
    let proxy = start(
        "gw-fcm-dead",
        &gw,
        "all",
        &[("REGISTRAR__MIN_EXPIRES", "1")],
    );
    let token = format!("{}:APA91b-{}", unique("f"), unique("x"));
    let mut phone = Ua::udp("dora", &proxy);
    let r = register_ok(
        &mut phone,
        &format!(";pn-provider=fcm;pn-prid={token};pn-param=my-project"),
        "",
        1,
        &token,
    );
    assert_eq!(
        r.header("feature-caps"),
        Some("*;+sip.pns=\"fcm\";+sip.pnsreg"),
        "{r:?}"
    );
    // SIP-expired: kept only for push, so without its token nobody is left to call
    std::thread::sleep(Duration::from_millis(2100));

    let mut alice = Ua::udp("alice", &proxy);
    gw.answer_next(
        "/gw",
        410,
        &format!(r#"{{"reason":"Unregistered","timestamp":{}}}"#, now_ms()),
    );
    let t0 = Instant::now();
    let inv = call_from(&mut alice, "Alice Liddell", "dora");
    let (_, doc) = expect_doc(&gw, "the push the gateway reports dead");
    let what = format!("{doc:#}");
    assert_eq!(doc["provider"], "fcm", "{what}");
    assert_eq!(doc["token"], token.as_str(), "{what}");
    assert_eq!(doc["pushType"], "data", "{what}");
    assert_eq!(doc["pnParam"], "my-project", "{what}");
    assert_eq!(doc["environment"], Value::Null, "{what}");
    expect_final_code(&mut alice, &inv, 480);
    assert!(
        t0.elapsed() < Duration::from_millis(WAKE_MS),
        "every push failed: 480 without waiting for the wake timeout"
    );

    // the token is gone: no push, nobody left to call
    let inv = invite_from(&mut alice, "Alice Liddell", "dora");
    expect_final_code(&mut alice, &inv, 480);
    expect_no_doc(&gw, "a push to a token the gateway reported dead", SHORT);
}

#[test]
fn a_bare_token_learns_its_apns_environment_from_the_gateways_answer() {
    let gw = MockHttp::start();
    let proxy = start("gw-env", &gw, "apns", &[]);
    let token = hex64();
    let header = format!("X-Token: {token}\r\n");
    let mut asleep = Ua::udp("erin", &proxy);
    register_ok(&mut asleep, "", &header, 600, &token);
    fall_asleep();

    // the gateway found the token on the sandbox (after its own BadDeviceToken retry)
    gw.answer_next("/gw", 200, r#"{"environment":"sandbox"}"#);
    let mut alice = Ua::udp("alice", &proxy);
    let inv = call_from(&mut alice, "Alice Liddell", "erin");
    let (_, doc) = expect_doc(&gw, "the first call push");
    assert_eq!(doc["provider"], "apns", "{doc:#}");
    assert_eq!(doc["environment"], "production", "{doc:#}");
    assert_eq!(doc["environmentGuessed"], true, "{doc:#}");
    assert_eq!(doc["topic"], Value::Null, "no bundle configured: {doc:#}");
    let hint = doc["pushHint"].as_str().unwrap().to_owned();
    let mut woken = Ua::udp("erin", &proxy);
    register_ok(&mut woken, "", &header, 600, &token);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got);
    register_ok(&mut woken, "", &header, 600, &token);
    fall_asleep();

    let inv = call_from(&mut alice, "Alice Liddell", "erin");
    let (_, doc) = expect_doc(&gw, "the next call push");
    assert_eq!(doc["environment"], "sandbox", "learnt and kept: {doc:#}");
    assert_eq!(doc["environmentGuessed"], false, "{doc:#}");
    alice.cancel(&inv);
    expect_final_code(&mut alice, &inv, 487);
}
