//! Push before INVITE through APNs, end to end: the real binary pushes to an APNs
//! stand-in (HTTP/2 over TLS, test CA made at test time, see `common::mock_apns`) with
//! token auth (a `.p8` key made at test time), for each token style phones send:
//! RFC 8599, Linphone's `voip&remote` pair on the sandbox, `X-Token` and `xToken`.
//!
//! A UDP binding counts as asleep once its last REGISTER is older than
//! `push.flow_timeout_secs` (1 s here); the relaunched app registers again from a new
//! socket, without `+sip.instance`, and must get the INVITE with `X-PushHint` equal to
//! the push's `aps.pushHint`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::mock_apns::{jwt_parts, MockApns, Pki, SigningKey};
use crate::common::mock_http::{now_ms, Seen};
use crate::common::push_phone::*;
use crate::common::*;
use serde_json::Value;

const KEY_ID: &str = "KEYID12345";
const TEAM: &str = "ABCDE12345";
/// `push.apns.bundle_id`, for bare tokens.
const BUNDLE: &str = "com.example.bundle";
/// The app of RFC 8599 / Linphone registrations (`pn-param`).
const APP: &str = "com.example.app";
/// `push.wake_timeout_ms` unless a test says otherwise.
const WAKE_MS: u64 = 5000;
const SHORT: Duration = Duration::from_millis(500);

/// The two APNs environments and the key sipwake signs with.
struct Apple {
    prod: MockApns,
    sandbox: MockApns,
    key: SigningKey,
    _dir: PathBuf,
}

/// sipwake with APNs token auth pointed at two stand-ins (production and sandbox), a
/// 1 s flow timeout and a 5 s wake timeout; `extra` overrides.
fn start(name: &str, extra: &[(&str, &str)]) -> (Proxy, Apple) {
    let dir = temp_dir(&format!("{name}-apns"));
    let pki = Pki::new();
    let key = SigningKey::new();
    let prod = MockApns::start(&pki);
    let sandbox = MockApns::start(&pki);
    let mut b = ProxyBuilder::new(name)
        .env(
            "PUSH__APNS__KEY_FILE",
            key.write(&dir, KEY_ID).to_str().unwrap(),
        )
        .env("PUSH__APNS__KEY_ID", KEY_ID)
        .env("PUSH__APNS__TEAM_ID", TEAM)
        .env("PUSH__APNS__BUNDLE_ID", BUNDLE)
        .env("PUSH__APNS__PRODUCTION_URL", &prod.url())
        .env("PUSH__APNS__SANDBOX_URL", &sandbox.url())
        .env("PUSH__APNS__CA_FILE", pki.write_ca(&dir).to_str().unwrap())
        .env("PUSH__FLOW_TIMEOUT_SECS", "1")
        .env("PUSH__WAKE_TIMEOUT_MS", &WAKE_MS.to_string());
    for (k, v) in extra {
        b = b.env(k, v);
    }
    (
        b.start(),
        Apple {
            prod,
            sandbox,
            key,
            _dir: dir,
        },
    )
}

/// A fresh APNs-looking device token: 64 lower-case hex digits.
fn hex64() -> String {
    let seed = unique("h").bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = XorShift(seed | 1);
    (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect()
}

/// RFC 8599 Contact URI parameters for a VoIP token of `APP`, team `TEAM`.
fn rfc8599(token: &str) -> String {
    format!(";pn-provider=apns;pn-prid={token};pn-param={TEAM}.{APP}.voip")
}

/// Linphone's form: a PushKit token and a regular (alert) token, sandbox.
fn linphone(voip: &str, alert: &str) -> String {
    format!(";pn-provider=apns.dev;pn-prid={alert}:remote&{voip}:voip;pn-param={TEAM}.{APP}.voip&remote")
}

#[derive(serde::Deserialize)]
struct Claims {
    iss: String,
    iat: u64,
}

/// Checks the provider token: `bearer <JWT>`, ES256 with `kid` = key id, `iss` = team
/// id, a recent `iat`, and a signature that verifies with the public key.
fn check_jwt(seen: &Seen, key: &SigningKey) {
    let auth = seen
        .header("authorization")
        .unwrap_or_else(|| panic!("no authorization header: {seen:?}"));
    let (scheme, jwt) = auth.split_once(' ').expect("authorization: bearer <JWT>");
    assert!(scheme.eq_ignore_ascii_case("bearer"), "{auth}");
    let (header, claims) = jwt_parts(jwt);
    assert_eq!(header["alg"], "ES256", "{header}");
    assert_eq!(header["kid"], KEY_ID, "{header}");
    assert_eq!(claims["iss"], TEAM, "{claims}");
    let iat = claims["iat"].as_u64().expect("iat, a number");
    let now = now_ms() / 1000;
    assert!(
        iat <= now + 1 && iat + 120 >= now,
        "iat {iat} should be recent (now {now})"
    );

    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    let dk = jsonwebtoken::DecodingKey::from_ec_pem(key.public_pem.as_bytes()).unwrap();
    let verified = jsonwebtoken::decode::<Claims>(jwt, &dk, &v)
        .unwrap_or_else(|e| panic!("the JWT must verify with the .p8's public key: {e}"));
    assert_eq!(verified.claims.iss, TEAM);
    assert_eq!(verified.claims.iat, iat);
}

/// Checks a VoIP push for a call sent at `sent_ms` with wake timeout `wake_ms`: path,
/// headers, expiration, JWT, caller fields. Returns the body.
fn check_voip_push(
    seen: &Seen,
    apple: &Apple,
    token: &str,
    topic: &str,
    sent_ms: u64,
    wake_ms: u64,
) -> Value {
    let what = format!(
        "{} {} {:?} {}",
        seen.method,
        seen.path,
        seen.headers,
        seen.text()
    );
    assert_eq!(seen.method, "POST", "{what}");
    assert_eq!(seen.path, format!("/3/device/{token}"), "{what}");
    assert_eq!(seen.header("apns-push-type"), Some("voip"), "{what}");
    assert_eq!(seen.header("apns-topic"), Some(topic), "{what}");
    assert_eq!(seen.header("apns-priority"), Some("10"), "{what}");
    let exp: u64 = seen
        .header("apns-expiration")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("apns-expiration, a unix time: {what}"));
    assert!(
        exp > seen.at_ms / 1000,
        "apns-expiration {exp} must be in the future (received at {} ms): {what}",
        seen.at_ms
    );
    assert!(
        exp <= (sent_ms + wake_ms) / 1000 + 1,
        "apns-expiration {exp} must not outlive the wake window (call at {sent_ms} ms + \
         {wake_ms} ms): a push arriving after the caller gave up must never ring: {what}"
    );
    let collapse = seen.header("apns-collapse-id").unwrap_or("");
    assert!(
        !collapse.is_empty() && collapse.len() <= 64,
        "apns-collapse-id (1..=64 bytes): {what}"
    );
    assert!(
        seen.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}"
    );
    check_jwt(seen, &apple.key);
    let body = seen.json();
    assert!(
        body["aps"]["pushHint"]
            .as_str()
            .is_some_and(|h| h.len() >= 16),
        "aps.pushHint, a long random token: {body:#}"
    );
    assert_eq!(body["aps"]["callerName"], "Alice Liddell", "{body:#}");
    assert_eq!(body["aps"]["callerNumber"], "alice", "{body:#}");
    assert!(body["callUUID"].is_string(), "{body:#}");
    assert!(
        !seen.text().contains(token),
        "the payload must not carry the token: {body:#}"
    );
    body
}

fn hint(body: &Value) -> String {
    body["aps"]["pushHint"].as_str().unwrap().to_owned()
}

/// The caller gets `code` for `inv` and ACKs it; returns how long it took since `t0`.
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

// ---------------------------------------------------------------------------------

#[test]
fn rfc8599_voip_push_headers_jwt_payload_and_wake_from_a_new_port() {
    let (proxy, apple) = start("apns-rfc8599", &[]);
    let token = hex64();
    let mut asleep = Ua::udp("bob", &proxy);
    let r = register_ok(&mut asleep, &rfc8599(&token), "", 600, &token);
    let caps = r.header("feature-caps").unwrap_or("");
    assert!(
        caps.contains("+sip.pns=\"apns\""),
        "RFC 8599 §5.4 Feature-Caps for an APNs registration: {r:?}"
    );
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let sent = now_ms();
    let inv = call_from(&mut alice, "Alice Liddell", "bob");
    let seen = apple.prod.expect_post("the VoIP push", WAIT);
    let body = check_voip_push(&seen, &apple, &token, &format!("{APP}.voip"), sent, WAKE_MS);
    let hint = hint(&body);

    // parked: the dead flow gets nothing, the caller hears nothing yet
    asleep.expect_nothing("an INVITE on the sleeping flow", SHORT, |m| {
        m.method() == Some("INVITE")
    });
    alice.expect_nothing("a final response while parked", Duration::ZERO, |m| {
        m.status().is_some_and(|c| c >= 200)
    });

    // the relaunched app: new socket, new Call-ID, no +sip.instance
    let mut woken = Ua::udp("bob", &proxy);
    register_ok(&mut woken, &rfc8599(&token), "", 600, &token);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got);

    assert_eq!(asleep.count_received("INVITE", &inv.call_id), 0);
    apple
        .prod
        .expect_no_post("a second push or a notice for a woken phone", SHORT);
    apple
        .sandbox
        .expect_no_post("a push to the sandbox for apns", Duration::ZERO);
}

#[test]
fn linphone_voip_and_remote_tokens_go_to_the_sandbox_voip_token() {
    let (proxy, apple) = start("apns-linphone", &[]);
    let (voip, alert) = (hex64(), hex64());
    let params = linphone(&voip, &alert);
    let mut asleep = Ua::udp("carol", &proxy);
    let r = register_ok(&mut asleep, &params, "", 600, &voip);
    assert!(!r.raw.contains(&alert), "{r:?}");
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let sent = now_ms();
    let inv = call_from(&mut alice, "Alice Liddell", "carol");
    let seen = apple.sandbox.expect_post("the VoIP push (apns.dev)", WAIT);
    let body = check_voip_push(&seen, &apple, &voip, &format!("{APP}.voip"), sent, WAKE_MS);
    let hint = hint(&body);

    let mut woken = Ua::udp("carol", &proxy);
    register_ok(&mut woken, &params, "", 600, &voip);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got);

    apple
        .sandbox
        .expect_no_post("anything more for a phone that got its INVITE", SHORT);
    apple
        .prod
        .expect_no_post("a push to production for apns.dev", Duration::ZERO);
}

#[test]
fn bare_x_token_header_and_xtoken_param_use_the_bundle_id() {
    let (proxy, apple) = start("apns-bare", &[]);
    let (th, tp) = (hex64(), hex64());
    let header = |t: &str| format!("X-Token: {t}\r\n");
    let param = |t: &str| format!(";xToken={t}");
    let mut a = Ua::udp("dave", &proxy);
    register_ok(&mut a, "", &header(&th), 600, &th);
    let mut b = Ua::udp("erin", &proxy);
    register_ok(&mut b, &param(&tp), "", 600, &tp);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    for (user, token, by_header) in [("dave", &th, true), ("erin", &tp, false)] {
        let sent = now_ms();
        let inv = call_from(&mut alice, "Alice Liddell", user);
        let seen = apple
            .prod
            .expect_post(&format!("the VoIP push for {user}"), WAIT);
        let body = check_voip_push(
            &seen,
            &apple,
            token,
            &format!("{BUNDLE}.voip"),
            sent,
            WAKE_MS,
        );
        let hint = hint(&body);
        let mut woken = Ua::udp(user, &proxy);
        if by_header {
            register_ok(&mut woken, "", &header(token), 600, token);
        } else {
            register_ok(&mut woken, &param(token), "", 600, token);
        }
        let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
        answer_and_hang_up(&mut alice, &inv, &mut woken, &got);
    }
    apple.prod.expect_no_post("anything more", SHORT);
    apple
        .sandbox
        .expect_no_post("a sandbox push (push.apns.sandbox = false)", Duration::ZERO);
}

#[test]
fn never_woken_gives_480_after_the_wake_timeout_and_an_alert_notice_only_with_a_remote_token() {
    let wake = 1500;
    let (proxy, apple) = start(
        "apns-timeout",
        &[("PUSH__WAKE_TIMEOUT_MS", &wake.to_string())],
    );
    // frank: VoIP token only (production); grace: Linphone pair (sandbox)
    let (tf, tv, ta) = (hex64(), hex64(), hex64());
    let mut frank = Ua::udp("frank", &proxy);
    register_ok(&mut frank, &rfc8599(&tf), "", 600, &tf);
    let mut grace = Ua::udp("grace", &proxy);
    register_ok(&mut grace, &linphone(&tv, &ta), "", 600, &tv);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let t0 = Instant::now();
    let sent = now_ms();
    let inv_f = call_from(&mut alice, "Alice Liddell", "frank");
    let inv_g = call_from(&mut alice, "Alice Liddell", "grace");
    let pf = apple.prod.expect_post("frank's VoIP push", WAIT);
    check_voip_push(&pf, &apple, &tf, &format!("{APP}.voip"), sent, wake);
    let pg = apple.sandbox.expect_post("grace's VoIP push", WAIT);
    let body = check_voip_push(&pg, &apple, &tv, &format!("{APP}.voip"), sent, wake);
    let hint_g = hint(&body);

    for inv in [&inv_f, &inv_g] {
        let took = expect_final_code(&mut alice, inv, 480, t0);
        assert!(
            took >= Duration::from_millis(wake - 100),
            "480 came after {took:?}, before the {wake} ms wake timeout"
        );
    }

    // grace gave a regular token: an alert notice there, never a second VoIP push
    let n = apple.sandbox.expect_post("grace's timeout notice", WAIT);
    assert_eq!(n.path, format!("/3/device/{ta}"), "{n:?}");
    assert_eq!(n.header("apns-push-type"), Some("alert"), "{n:?}");
    assert_eq!(n.header("apns-topic"), Some(APP), "{n:?}");
    check_jwt(&n, &apple.key);
    let nb = n.json();
    assert_eq!(nb["event"], "cancel", "{nb:#}");
    assert_eq!(nb["reason"], "timeout", "{nb:#}");
    assert_eq!(nb["pushHint"], hint_g.as_str(), "{nb:#}");
    apple
        .sandbox
        .expect_no_post("another push for grace", SHORT);
    // frank has only a VoIP token: no APNs notice at all
    apple
        .prod
        .expect_no_post("a notice to a VoIP-only device", Duration::ZERO);
    assert_eq!(frank.count_received("INVITE", &inv_f.call_id), 0);
    assert_eq!(grace.count_received("INVITE", &inv_g.call_id), 0);
}

#[test]
fn caller_cancel_gives_487_and_an_alert_push_to_the_regular_token() {
    let (proxy, apple) = start("apns-cancel", &[]);
    let (voip, alert) = (hex64(), hex64());
    let params = linphone(&voip, &alert);
    let mut asleep = Ua::udp("heidi", &proxy);
    register_ok(&mut asleep, &params, "", 600, &voip);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let sent = now_ms();
    let inv = call_from(&mut alice, "Alice Liddell", "heidi");
    let seen = apple.sandbox.expect_post("the VoIP push", WAIT);
    let body = check_voip_push(&seen, &apple, &voip, &format!("{APP}.voip"), sent, WAKE_MS);
    let hint = hint(&body);

    alice.cancel(&inv);
    alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c == 200);
    let t0 = Instant::now();
    let took = expect_final_code(&mut alice, &inv, 487, t0);
    // generous: before the wake timeout, which a 487 must not wait for
    assert!(
        took < Duration::from_millis(WAKE_MS),
        "487 only after {took:?}"
    );

    let n = apple.sandbox.expect_post("the cancel notice", WAIT);
    assert_eq!(n.method, "POST");
    assert_eq!(
        n.path,
        format!("/3/device/{alert}"),
        "the notice goes to the regular token, never the VoIP one: {n:?}"
    );
    assert_eq!(n.header("apns-push-type"), Some("alert"), "{n:?}");
    assert_eq!(n.header("apns-topic"), Some(APP), "no .voip: {n:?}");
    assert_eq!(n.header("apns-priority"), Some("10"), "{n:?}");
    check_jwt(&n, &apple.key);
    let nb = n.json();
    assert_eq!(nb["event"], "cancel", "{nb:#}");
    assert_eq!(nb["reason"], "caller_cancelled", "{nb:#}");
    assert_eq!(nb["pushHint"], hint.as_str(), "{nb:#}");
    assert_eq!(nb["callUUID"], body["callUUID"], "{nb:#}");

    // the app relaunched late: the ended call is not handed to it
    let mut late = Ua::udp("heidi", &proxy);
    register_ok(&mut late, &params, "", 600, &voip);
    late.expect_nothing("the INVITE of a cancelled call", SHORT, |m| {
        m.method() == Some("INVITE")
    });
    apple
        .sandbox
        .expect_no_post("a second VoIP push or a second notice", Duration::ZERO);
    apple
        .prod
        .expect_no_post("anything on production", Duration::ZERO);
}

/// A phone registered for 1 s with an RFC 8599 token, asleep and SIP-expired (kept
/// only for push, so once its token is gone nobody is left to call).
fn gone_setup(name: &str, user: &str) -> (Proxy, Apple, String, u64) {
    let (proxy, apple) = start(name, &[("REGISTRAR__MIN_EXPIRES", "1")]);
    let token = hex64();
    let mut phone = Ua::udp(user, &proxy);
    register_ok(&mut phone, &rfc8599(&token), "", 1, &token);
    let registered = now_ms();
    // sipwake rounds a binding's expiry up to the next whole second: past it for sure
    std::thread::sleep(Duration::from_millis(2100));
    (proxy, apple, token, registered)
}

#[test]
fn apns_410_newer_than_the_register_removes_the_token() {
    let (proxy, apple, token, _) = gone_setup("apns-410-new", "ivan");
    let mut alice = Ua::udp("alice", &proxy);
    apple.prod.answer_next(
        410,
        &format!(r#"{{"reason":"Unregistered","timestamp":{}}}"#, now_ms()),
    );
    let t0 = Instant::now();
    let inv = call_from(&mut alice, "Alice Liddell", "ivan");
    let seen = apple.prod.expect_post("the push answered 410", WAIT);
    assert_eq!(seen.path, format!("/3/device/{token}"));
    let took = expect_final_code(&mut alice, &inv, 480, t0);
    assert!(
        took < Duration::from_millis(WAKE_MS),
        "every push failed and nothing else rings: 480 at once, got it after {took:?}"
    );

    // the token is gone: no push, and nobody left to call
    let t0 = Instant::now();
    let inv = invite_from(&mut alice, "Alice Liddell", "ivan");
    expect_final_code(&mut alice, &inv, 480, t0);
    apple
        .prod
        .expect_no_post("a push to a token APNs reported dead", SHORT);
    apple.sandbox.expect_no_post("anything", Duration::ZERO);
}

#[test]
fn apns_410_older_than_the_register_keeps_the_token() {
    let (proxy, apple, token, registered) = gone_setup("apns-410-old", "judy");
    let mut alice = Ua::udp("alice", &proxy);
    apple.prod.answer_next(
        410,
        &format!(
            r#"{{"reason":"Unregistered","timestamp":{}}}"#,
            registered - 60_000
        ),
    );
    let t0 = Instant::now();
    let inv = call_from(&mut alice, "Alice Liddell", "judy");
    apple.prod.expect_post("the push answered 410", WAIT);
    let took = expect_final_code(&mut alice, &inv, 480, t0);
    assert!(took < Duration::from_millis(WAKE_MS), "{took:?}");

    // the phone registered after APNs saw the token die: it is kept and pushed again
    let sent = now_ms();
    let inv = call_from(&mut alice, "Alice Liddell", "judy");
    let seen = apple
        .prod
        .expect_post("a push again: the 410 predates the REGISTER", WAIT);
    check_voip_push(&seen, &apple, &token, &format!("{APP}.voip"), sent, WAKE_MS);
    alice.cancel(&inv);
    expect_final_code(&mut alice, &inv, 487, Instant::now());
}

#[test]
fn environment_learnt_by_a_bad_device_token_retry_survives_the_apps_next_register() {
    // a development-signed app sending a bare token: sipwake guesses production
    let (proxy, apple) = start("apns-env-learnt", &[]);
    let token = hex64();
    let header = format!("X-Token: {token}\r\n");
    let mut asleep = Ua::udp("kate", &proxy);
    register_ok(&mut asleep, "", &header, 600, &token);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    apple
        .prod
        .answer_next(400, r#"{"reason":"BadDeviceToken"}"#);
    let sent = now_ms();
    let inv = call_from(&mut alice, "Alice Liddell", "kate");
    let refused = apple
        .prod
        .expect_post("the push on the guessed production", WAIT);
    assert_eq!(refused.path, format!("/3/device/{token}"));
    let seen = apple
        .sandbox
        .expect_post("the retry on the sandbox after BadDeviceToken", WAIT);
    let body = check_voip_push(
        &seen,
        &apple,
        &token,
        &format!("{BUNDLE}.voip"),
        sent,
        WAKE_MS,
    );

    // the woken app registers again with the same bare token and takes the call
    let mut woken = Ua::udp("kate", &proxy);
    register_ok(&mut woken, "", &header, 600, &token);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint(&body));
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got);
    // and once more later, as apps do on every launch
    register_ok(&mut woken, "", &header, 600, &token);
    fall_asleep();

    // the next call goes straight to the sandbox: the re-REGISTER kept what was learnt
    let sent = now_ms();
    let inv = call_from(&mut alice, "Alice Liddell", "kate");
    let seen = apple
        .sandbox
        .expect_post("the next call's push, on the learnt sandbox", WAIT);
    let body = check_voip_push(
        &seen,
        &apple,
        &token,
        &format!("{BUNDLE}.voip"),
        sent,
        WAKE_MS,
    );
    apple.prod.expect_no_post(
        "a push on production: the learnt environment was forgotten",
        SHORT,
    );
    let mut woken = Ua::udp("kate", &proxy);
    register_ok(&mut woken, "", &header, 600, &token);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint(&body));
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got);
}

#[test]
fn caller_name_without_a_display_name_is_the_callers_number() {
    let (proxy, apple) = start("apns-caller-name", &[]);
    let token = hex64();
    let mut asleep = Ua::udp("liam", &proxy);
    register_ok(&mut asleep, &rfc8599(&token), "", 600, &token);
    fall_asleep();

    // From: <sip:alice@...>, no display name
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.build_invite(&format!("sip:liam@{DOMAIN}"), "");
    assert!(!inv.from.contains('"'), "{}", inv.from);
    alice.send(&inv.text);
    let seen = apple.prod.expect_post("the VoIP push", WAIT);
    let body = seen.json();
    assert_eq!(
        body["aps"]["callerName"], "alice",
        "callerName must never be null: apps show a placeholder for it: {body:#}"
    );
    assert_eq!(body["aps"]["callerNumber"], "alice", "{body:#}");
    alice.cancel(&inv);
    expect_final_code(&mut alice, &inv, 487, Instant::now());
}

/// Sends a MESSAGE from `caller` to `to_user` and returns the final response.
fn message_to(caller: &mut Ua, to_user: &str, text: &str) -> Msg {
    let cid = call_id();
    let msg = format!(
        "MESSAGE sip:{to_user}@{DOMAIN} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice Liddell\" <{aor}>;tag={t}\r\n\
         To: <sip:{to_user}@{DOMAIN}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {len}\r\n\r\n{text}",
        via = caller.via(&branch()),
        aor = caller.aor(),
        t = tag(),
        len = text.len(),
    );
    caller.send(&msg);
    caller.expect_final(&cid, "MESSAGE")
}

#[test]
fn a_message_notice_is_an_alert_to_the_regular_token_never_a_voip_push() {
    let (proxy, apple) = start("apns-message", &[]);
    let (voip, alert) = (hex64(), hex64());
    let mut linphone_phone = Ua::udp("mona", &proxy);
    register_ok(
        &mut linphone_phone,
        &linphone(&voip, &alert),
        "",
        600,
        &voip,
    );
    let only_voip = hex64();
    let mut voip_phone = Ua::udp("nina", &proxy);
    register_ok(&mut voip_phone, &rfc8599(&only_voip), "", 600, &only_voip);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let r = message_to(&mut alice, "mona", "see you at 8");
    assert_eq!(r.status(), Some(202), "{r:?}");
    let n = apple.sandbox.expect_post("the message notice", WAIT);
    assert_eq!(
        n.path,
        format!("/3/device/{alert}"),
        "to the regular token, never the VoIP one: {n:?}"
    );
    assert_eq!(n.header("apns-push-type"), Some("alert"), "{n:?}");
    assert_eq!(n.header("apns-topic"), Some(APP), "no .voip: {n:?}");
    check_jwt(&n, &apple.key);
    let body = n.json();
    assert_eq!(body["event"], "message", "{body:#}");
    assert_eq!(body["aps"]["alert"]["title"], "Alice Liddell", "{body:#}");
    assert_eq!(
        body["aps"]["alert"]["body"], "New message",
        "no text unless push.messages.notice_text: {body:#}"
    );

    // a phone with only a VoIP token: kept, but no APNs push at all
    let r = message_to(&mut alice, "nina", "hello");
    assert_eq!(r.status(), Some(202), "{r:?}");
    apple
        .prod
        .expect_no_post("a VoIP push for a MESSAGE", SHORT);
    apple
        .sandbox
        .expect_no_post("anything more", Duration::ZERO);

    // it gets the message when it registers again
    let mut woken = Ua::udp("nina", &proxy);
    register_ok(&mut woken, &rfc8599(&only_voip), "", 600, &only_voip);
    let m = woken.expect("the kept MESSAGE", WAIT, |m| m.method() == Some("MESSAGE"));
    assert_eq!(m.body, "hello");
    woken.reply(&m, 200, "OK", Some(&tag()));
}

#[test]
fn a_refresh_push_is_a_background_push_to_the_regular_token_never_voip() {
    let (proxy, apple) = start(
        "apns-refresh",
        &[
            ("PUSH__BINDING_TTL_SECS", "2"),
            ("REGISTRAR__MIN_EXPIRES", "1"),
            ("PUSH__REFRESH__BEFORE_SECS", "3"),
        ],
    );
    let (voip, alert) = (hex64(), hex64());
    let mut phone = Ua::udp("olga", &proxy);
    register_ok(&mut phone, &linphone(&voip, &alert), "", 2, &voip);
    let only_voip = hex64();
    let mut other = Ua::udp("pete", &proxy);
    register_ok(&mut other, &rfc8599(&only_voip), "", 2, &only_voip);

    let n = apple.sandbox.expect_post("the refresh push", WAIT);
    assert_eq!(
        n.path,
        format!("/3/device/{alert}"),
        "to the regular token, never the VoIP one: {n:?}"
    );
    assert_eq!(n.header("apns-push-type"), Some("background"), "{n:?}");
    assert_eq!(
        n.header("apns-priority"),
        Some("5"),
        "Apple: 5 for background: {n:?}"
    );
    assert_eq!(n.header("apns-topic"), Some(APP), "no .voip: {n:?}");
    check_jwt(&n, &apple.key);
    let body = n.json();
    assert_eq!(body["aps"]["content-available"], 1, "{body:#}");
    assert!(body["aps"].get("alert").is_none(), "silent: {body:#}");
    assert_eq!(body["event"], "refresh", "{body:#}");

    // a phone with only a VoIP token cannot be refreshed: no push at all
    apple.prod.expect_no_post(
        "a VoIP push to refresh a registration",
        Duration::from_secs(4),
    );
    apple
        .sandbox
        .expect_no_post("a second refresh", Duration::ZERO);
}
