//! Push before INVITE through FCM HTTP v1, end to end: the real binary gets an OAuth
//! access token from a stand-in token endpoint (JWT-bearer grant signed with the
//! service account's key) and sends data-only messages to a stand-in FCM (plain
//! HTTP/1.1 on loopback, `common::mock_http`).
//!
//! Phones register with RFC 8599 `pn-provider=fcm` or a bare `X-Token` (not 64 hex
//! digits, so FCM under `push.default_provider = "auto"`), fall asleep (1 s flow
//! timeout), and the relaunched app registers from a new socket.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::mock_apns::jwt_parts;
use crate::common::mock_http::{now_ms, MockHttp, Seen};
use crate::common::push_phone::*;
use crate::common::*;
use serde_json::{json, Value};

const PROJECT: &str = "sipwake-test";
const CLIENT_EMAIL: &str = "sipwake@sipwake-test.iam.gserviceaccount.com";
const ACCESS_TOKEN: &str = "ya29.test-access-token-1";
const WAKE_MS: u64 = 5000;
const SHORT: Duration = Duration::from_millis(500);
const SEND_PATH: &str = "/v1/projects/sipwake-test/messages:send";

fn testdata(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/push/testdata")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

struct Google {
    http: MockHttp,
    token_uri: String,
    _dir: PathBuf,
}

/// sipwake with FCM pointed at the stand-in (FCM and token endpoint on one server), a
/// 1 s flow timeout and a 5 s wake timeout; `extra` overrides.
fn start(name: &str, extra: &[(&str, &str)]) -> (Proxy, Google) {
    let http = MockHttp::start();
    http.route(
        "/token",
        200,
        &json!({"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"})
            .to_string(),
    );
    http.route(
        "/v1/",
        200,
        &json!({"name": format!("projects/{PROJECT}/messages/0:1")}).to_string(),
    );
    let token_uri = format!("{}/token", http.base_url());
    let dir = temp_dir(&format!("{name}-fcm"));
    let sa = json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "test-key-1",
        "private_key": testdata("test-only-rsa-key.pem"),
        "client_email": CLIENT_EMAIL,
        "client_id": "1",
        "token_uri": token_uri,
    });
    let sa_file = dir.join("service-account.json");
    std::fs::write(&sa_file, sa.to_string()).unwrap();
    let mut b = ProxyBuilder::new(name)
        .env("PUSH__FCM__SERVICE_ACCOUNT_FILE", sa_file.to_str().unwrap())
        .env("PUSH__FCM__BASE_URL", &http.base_url())
        .env("PUSH__FLOW_TIMEOUT_SECS", "1")
        .env("PUSH__WAKE_TIMEOUT_MS", &WAKE_MS.to_string());
    for (k, v) in extra {
        b = b.env(k, v);
    }
    (
        b.start(),
        Google {
            http,
            token_uri,
            _dir: dir,
        },
    )
}

/// A token shaped like an FCM registration token (not 64 hex digits).
fn fcm_token() -> String {
    format!(
        "{}:APA91bH{}",
        unique("d").replace('x', "Q"),
        "k9_Zr-".repeat(20)
    )
}

fn rfc8599(token: &str) -> String {
    format!(";pn-provider=fcm;pn-prid={token};pn-param={PROJECT}")
}

#[derive(serde::Deserialize)]
struct Assertion {
    iss: String,
    aud: String,
    scope: String,
}

/// Checks an OAuth grant: the JWT-bearer grant type and an RS256 assertion from the
/// service account, for the token endpoint, that verifies with its public key.
fn check_grant(seen: &Seen, g: &Google) {
    assert_eq!(seen.method, "POST", "{seen:?}");
    let body = seen.text();
    let form: Vec<(String, String)> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} missing in the grant: {body}"))
    };
    assert_eq!(
        get("grant_type"),
        "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
        "{body}"
    );
    let jwt = get("assertion");
    let (header, claims) = jwt_parts(&jwt);
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(claims["iss"], CLIENT_EMAIL, "{claims}");
    assert_eq!(claims["aud"], g.token_uri.as_str(), "{claims}");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[g.token_uri.as_str()]);
    let dk =
        jsonwebtoken::DecodingKey::from_rsa_pem(testdata("test-only-rsa-key.pub.pem").as_bytes())
            .unwrap();
    let a = jsonwebtoken::decode::<Assertion>(&jwt, &dk, &v)
        .unwrap_or_else(|e| panic!("the assertion must verify with the account's key: {e}"))
        .claims;
    assert_eq!(a.iss, CLIENT_EMAIL);
    assert_eq!(a.aud, g.token_uri);
    assert!(a.scope.contains("firebase.messaging"), "{}", a.scope);
}

/// The next FCM message (requests to the token endpoint before it are checked as
/// grants and returned too).
fn next_message(g: &Google, what: &str) -> (Seen, Vec<Seen>) {
    let (msg, other) = g.http.next_at("/v1/", WAIT);
    let msg = msg.unwrap_or_else(|| panic!("no FCM message ({what}) within {WAIT:?}"));
    for o in &other {
        assert_eq!(o.path, "/token", "unexpected request {o:?}");
        check_grant(o, g);
    }
    (msg, other)
}

/// Checks an FCM HTTP v1 message to `token`: path, bearer token, data-only message
/// with `android.priority: HIGH` and a `ttl` within the wake window. Returns `data`.
fn check_message(seen: &Seen, token: &str, event: &str, wake_ms: u64) -> Value {
    let what = format!(
        "{} {} {:?} {}",
        seen.method,
        seen.path,
        seen.headers,
        seen.text()
    );
    assert_eq!(seen.method, "POST", "{what}");
    assert_eq!(seen.path, SEND_PATH, "{what}");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str()),
        "the access token from the grant: {what}"
    );
    assert!(
        seen.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}"
    );
    let body = seen.json();
    let m = &body["message"];
    assert_eq!(m["token"], token, "{body:#}");
    assert!(m.get("notification").is_none(), "data-only: {body:#}");
    assert_eq!(m["android"]["priority"], "HIGH", "{body:#}");
    let ttl = m["android"]["ttl"]
        .as_str()
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("android.ttl like \"9s\": {body:#}"));
    let data = m["data"].clone();
    assert!(
        data.as_object()
            .is_some_and(|d| d.values().all(Value::is_string)),
        "FCM data values are strings: {body:#}"
    );
    assert_eq!(data["event"], event, "{body:#}");
    assert!(
        data["pushHint"].as_str().is_some_and(|h| h.len() >= 16),
        "data.pushHint: {body:#}"
    );
    if event == "call" {
        assert!(
            ttl >= 1.0 && ttl <= (wake_ms as f64 / 1000.0).ceil(),
            "a call message lives as long as the wake window ({wake_ms} ms): ttl {ttl}: {body:#}"
        );
        assert_eq!(data["callerName"], "Alice Liddell", "{body:#}");
        assert_eq!(data["callerNumber"], "alice", "{body:#}");
    }
    data
}

fn expect_final_code(caller: &mut Ua, inv: &Invite, code: u16, t0: Instant) -> Duration {
    let r = caller.expect(
        &format!("a final response {code} to INVITE {}", inv.call_id),
        Duration::from_millis(WAKE_MS + 3000),
        |m| m.call_id() == inv.call_id && m.cseq_method() == "INVITE" && m.status() >= Some(200),
    );
    let took = t0.elapsed();
    assert_eq!(r.status(), Some(code), "{r:?}");
    caller.ack_non2xx(inv, &r);
    took
}

fn expect_no_message(g: &Google, what: &str, wait: Duration) {
    let (msg, _) = g.http.next_at("/v1/", wait);
    if let Some(m) = msg {
        panic!("expected no FCM message ({what}), got {}", m.text());
    }
}

// ---------------------------------------------------------------------------------

#[test]
fn rfc8599_fcm_message_with_oauth_token_and_wake_from_a_new_port() {
    let (proxy, g) = start("fcm-rfc8599", &[]);
    let token = fcm_token();
    let mut asleep = Ua::udp("bob", &proxy);
    let r = register_ok(&mut asleep, &rfc8599(&token), "", 600, &token);
    assert!(
        r.header("feature-caps")
            .is_some_and(|c| c.contains("+sip.pns=\"fcm\"")),
        "RFC 8599 §5.4 Feature-Caps: {r:?}"
    );
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let t0 = now_ms();
    let inv = call_from(&mut alice, "Alice Liddell", "bob");
    let (msg, grants) = next_message(&g, "the call message");
    assert!(
        !grants.is_empty(),
        "an access token must be fetched from the token endpoint before the first message"
    );
    let data = check_message(&msg, &token, "call", WAKE_MS);
    assert_eq!(data["callId"], inv.call_id.as_str(), "{data:#}");
    assert!(msg.at_ms >= t0);
    let hint = data["pushHint"].as_str().unwrap().to_owned();

    asleep.expect_nothing("an INVITE on the sleeping flow", SHORT, |m| {
        m.method() == Some("INVITE")
    });
    let mut woken = Ua::udp("bob", &proxy);
    register_ok(&mut woken, &rfc8599(&token), "", 600, &token);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got);
    expect_no_message(&g, "a cancel for a phone that got its INVITE", SHORT);
}

#[test]
fn bare_x_token_goes_to_fcm_and_the_access_token_is_reused() {
    let (proxy, g) = start("fcm-bare", &[]);
    let token = fcm_token();
    let header = format!("X-Token: {token}\r\n");
    let mut asleep = Ua::udp("carol", &proxy);
    register_ok(&mut asleep, "", &header, 600, &token);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let mut grants = 0;
    for round in 0..2 {
        let inv = call_from(&mut alice, "Alice Liddell", "carol");
        let (msg, before) = next_message(&g, "the call message");
        grants += before.len();
        let data = check_message(&msg, &token, "call", WAKE_MS);
        let hint = data["pushHint"].as_str().unwrap().to_owned();
        let mut woken = Ua::udp("carol", &proxy);
        register_ok(&mut woken, "", &header, 600, &token);
        let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
        answer_and_hang_up(&mut alice, &inv, &mut woken, &got);
        if round == 0 {
            // the woken phone's flow is alive now: let it fall asleep again
            fall_asleep();
        }
    }
    assert_eq!(
        grants, 1,
        "the access token (expires_in 3600) is cached, not fetched per message"
    );
    expect_no_message(&g, "anything more", SHORT);
}

#[test]
fn caller_cancel_gives_487_and_an_fcm_cancel_message() {
    let (proxy, g) = start("fcm-cancel", &[]);
    let token = fcm_token();
    let mut asleep = Ua::udp("dave", &proxy);
    register_ok(&mut asleep, &rfc8599(&token), "", 600, &token);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call_from(&mut alice, "Alice Liddell", "dave");
    let (msg, _) = next_message(&g, "the call message");
    let data = check_message(&msg, &token, "call", WAKE_MS);

    alice.cancel(&inv);
    alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c == 200);
    let took = expect_final_code(&mut alice, &inv, 487, Instant::now());
    // generous: before the wake timeout, which a 487 must not wait for
    assert!(took < Duration::from_millis(WAKE_MS), "{took:?}");

    let (n, _) = next_message(&g, "the cancel message");
    let nd = check_message(&n, &token, "cancel", WAKE_MS);
    assert_eq!(nd["reason"], "caller_cancelled", "{nd}");
    assert_eq!(nd["pushHint"], data["pushHint"], "{nd}");
    assert_eq!(nd["callUUID"], data["callUUID"], "{nd}");
    expect_no_message(&g, "a third message", SHORT);

    // the app relaunched late: the ended call is not handed to it
    let mut late = Ua::udp("dave", &proxy);
    register_ok(&mut late, &rfc8599(&token), "", 600, &token);
    late.expect_nothing("the INVITE of a cancelled call", SHORT, |m| {
        m.method() == Some("INVITE")
    });
}

#[test]
fn never_woken_gives_480_after_the_wake_timeout_and_a_timeout_cancel_message() {
    let wake = 1500;
    let (proxy, g) = start(
        "fcm-timeout",
        &[("PUSH__WAKE_TIMEOUT_MS", &wake.to_string())],
    );
    let token = fcm_token();
    let mut asleep = Ua::udp("erin", &proxy);
    register_ok(&mut asleep, &rfc8599(&token), "", 600, &token);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let t0 = Instant::now();
    let inv = call_from(&mut alice, "Alice Liddell", "erin");
    let (msg, _) = next_message(&g, "the call message");
    let data = check_message(&msg, &token, "call", wake);
    let took = expect_final_code(&mut alice, &inv, 480, t0);
    assert!(
        took >= Duration::from_millis(wake - 100),
        "480 after {took:?}, wake timeout {wake} ms"
    );
    let (n, _) = next_message(&g, "the timeout notice");
    let nd = check_message(&n, &token, "cancel", wake);
    assert_eq!(nd["reason"], "timeout", "{nd}");
    assert_eq!(nd["pushHint"], data["pushHint"], "{nd}");
    assert_eq!(asleep.count_received("INVITE", &inv.call_id), 0);
}

#[test]
fn unregistered_removes_the_token() {
    let (proxy, g) = start("fcm-unregistered", &[("REGISTRAR__MIN_EXPIRES", "1")]);
    let token = fcm_token();
    // registered for 1 s: once expired, only the token keeps the binding callable
    let mut asleep = Ua::udp("frank", &proxy);
    register_ok(&mut asleep, &rfc8599(&token), "", 1, &token);
    // sipwake rounds a binding's expiry up to the next whole second: past it for sure
    std::thread::sleep(Duration::from_millis(2100));

    g.http.answer_next(
        "/v1/",
        404,
        &json!({"error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "status": "NOT_FOUND",
            "details": [{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": "UNREGISTERED"
            }]
        }})
        .to_string(),
    );
    let mut alice = Ua::udp("alice", &proxy);
    let t0 = Instant::now();
    let inv = call_from(&mut alice, "Alice Liddell", "frank");
    let (msg, _) = next_message(&g, "the call message answered UNREGISTERED");
    check_message(&msg, &token, "call", WAKE_MS);
    let took = expect_final_code(&mut alice, &inv, 480, t0);
    assert!(
        took < Duration::from_millis(WAKE_MS),
        "every push failed and nothing else rings: 480 at once, got it after {took:?}"
    );

    // the token is gone: no message, and nobody left to call
    let t0 = Instant::now();
    let inv2 = invite_from(&mut alice, "Alice Liddell", "frank");
    expect_final_code(&mut alice, &inv2, 480, t0);
    let mut later = Vec::new();
    while let (Some(m), _) = g.http.next_at("/v1/", SHORT) {
        later.push(m.json());
    }
    assert!(
        later
            .iter()
            .all(|m| m["message"]["data"]["callId"] != inv2.call_id.as_str()),
        "no message for a call to a token FCM reported UNREGISTERED: {later:#?}"
    );
    // nor a cancel notice for the first call: its only push failed, the token is dead
    assert!(
        later.is_empty(),
        "no cancel notice to a token FCM just reported UNREGISTERED (call {}): {later:#?}",
        inv.call_id
    );
}
