//! Tests of the APNs client against mock HTTP/2 servers (prod and sandbox): token and
//! certificate auth, the VoIP and alert pushes, dead tokens, and the retry on the
//! other environment.

use super::*;
use crate::config::PushSettings;
use crate::push::mock::{h2_tls, pki, script, temp_file, Mock, Responder, Seen};
use crate::push::{payload, Provider, PushSender, Pusher};

const TOKEN: &str = "aa11bb22cc33dd44ee55ff660011223344556677889900aabbccddeeff001122";
const ALERT: &str = "ff11bb22cc33dd44ee55ff660011223344556677889900aabbccddeeff009999";

struct Setup {
    pusher: Pusher,
    prod: Mock,
    sandbox: Mock,
    public_pem: String,
}

async fn setup(prod: Responder, sandbox: Responder, cert_auth: bool) -> Setup {
    let pki = pki();
    let prod = h2_tls(&pki, cert_auth, prod).await;
    let sandbox = h2_tls(&pki, cert_auth, sandbox).await;
    let key = rcgen::KeyPair::generate().unwrap(); // P-256, as Apple's .p8 keys
    let (key_file, cert_file) = if cert_auth {
        (None, Some(temp_file("apns.pem", pki.client_pem.as_bytes())))
    } else {
        (
            Some(temp_file("AuthKey.p8", key.serialize_pem().as_bytes())),
            None,
        )
    };
    let apns = ApnsSettings {
        key_id: key_file.as_ref().map(|_| "KEYID12345".into()),
        team_id: key_file.as_ref().map(|_| "TEAM123456".into()),
        key_file,
        cert_file,
        bundle_id: Some("com.example.default".into()),
        sandbox: false,
        production_url: format!("https://localhost:{}/", prod.addr.port()),
        sandbox_url: format!("https://127.0.0.1:{}", sandbox.addr.port()),
        ca_file: Some(temp_file("ca.pem", pki.ca_pem.as_bytes())),
        payload_template: None,
    };
    let pusher = Pusher::new(&PushSettings {
        apns: Some(apns),
        ..PushSettings::default()
    })
    .unwrap();
    assert!(pusher.serves(Provider::Apns));
    Setup {
        pusher,
        prod,
        sandbox,
        public_pem: key.public_key_pem(),
    }
}

fn ok() -> Responder {
    script(vec![(200, String::new())])
}

fn info() -> PushInfo {
    PushInfo {
        provider: Provider::Apns,
        token: TOKEN.into(),
        alert_token: None,
        topic: Some("com.example.phone".into()),
        team_id: Some("TEAM123456".into()),
        sandbox: false,
        env_guessed: false,
        registered_at_ms: now_ms(),
        pn_param: None,
    }
}

#[derive(serde::Deserialize)]
struct SeenClaims {
    iss: String,
    iat: u64,
}

fn check_jwt(seen: &Seen, public_pem: &str) -> String {
    let auth = seen.header("authorization").expect("authorization");
    let jwt = auth.strip_prefix("bearer ").expect("bearer");
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some("KEYID12345"));
    let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    let key = jsonwebtoken::DecodingKey::from_ec_pem(public_pem.as_bytes()).unwrap();
    let claims = jsonwebtoken::decode::<SeenClaims>(jwt, &key, &v)
        .expect("signature verifies with the public key")
        .claims;
    assert_eq!(claims.iss, "TEAM123456");
    let now = now_ms() / 1000;
    assert!(
        claims.iat <= now && claims.iat + 60 > now,
        "iat {}",
        claims.iat
    );
    jwt.to_owned()
}

#[tokio::test]
async fn voip_push_headers_jwt_and_payload() {
    let mut s = setup(ok(), ok(), false).await;
    let call = payload::tests::call();
    let before = now_ms() / 1000;
    assert_eq!(s.pusher.call(&info(), &call).await, PushResult::Sent);
    let seen = s.prod.next().await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, format!("/3/device/{TOKEN}"));
    assert_eq!(seen.header("apns-push-type"), Some("voip"));
    assert_eq!(seen.header("apns-topic"), Some("com.example.phone.voip"));
    assert_eq!(seen.header("apns-priority"), Some("10"));
    assert_eq!(
        seen.header("apns-collapse-id"),
        Some(call.call_uuid.as_str())
    );
    let exp: u64 = seen.header("apns-expiration").unwrap().parse().unwrap();
    assert!(exp > before, "expiration {exp} in the future");
    assert!(
        exp <= now_ms() / 1000 + call.time_left.as_secs(),
        "expiration {exp}"
    );
    let jwt = check_jwt(&seen, &s.public_pem);
    let body = seen.json();
    assert_eq!(body["aps"]["pushHint"], "hint-1");
    assert_eq!(body["callUUID"], call.call_uuid);
    assert_eq!(
        body,
        serde_json::from_str::<serde_json::Value>(&payload::apns_call(&call)).unwrap()
    );

    // The JWT is cached: the next push carries the same one, on the warm connection.
    assert_eq!(s.pusher.call(&info(), &call).await, PushResult::Sent);
    let seen = s.prod.next().await;
    assert_eq!(check_jwt(&seen, &s.public_pem), jwt);
    assert!(s.sandbox.none_left());

    // A sandbox binding goes to the sandbox; a bare token takes the default topic.
    let mut i = info();
    i.sandbox = true;
    i.topic = None;
    assert_eq!(s.pusher.call(&i, &call).await, PushResult::Sent);
    let seen = s.sandbox.next().await;
    assert_eq!(seen.header("apns-topic"), Some("com.example.default.voip"));
    assert!(s.prod.none_left());
}

#[tokio::test]
async fn cancel_is_an_alert_to_the_regular_token_only() {
    let mut s = setup(ok(), ok(), false).await;
    let call = payload::tests::call();
    // Only a VoIP token: no notice at all.
    let r = s
        .pusher
        .cancel(&info(), &call, CancelReason::CallerCancelled)
        .await;
    assert_eq!(r, PushResult::Failed("no alert token".into()));
    let mut i = info();
    i.alert_token = Some(ALERT.into());
    let r = s
        .pusher
        .cancel(&i, &call, CancelReason::CallerCancelled)
        .await;
    assert_eq!(r, PushResult::Sent);
    let seen = s.prod.next().await;
    assert_eq!(seen.path, format!("/3/device/{ALERT}"));
    assert_eq!(seen.header("apns-push-type"), Some("alert"));
    assert_eq!(seen.header("apns-topic"), Some("com.example.phone"));
    assert_eq!(seen.header("apns-priority"), Some("10"));
    let body = seen.json();
    assert_eq!(body["event"], "cancel");
    assert_eq!(body["reason"], "caller_cancelled");
    assert_eq!(body["pushHint"], "hint-1");
    assert!(s.prod.none_left(), "nothing went to the VoIP token");
}

#[tokio::test]
async fn unregistered_gives_dead_token_with_timestamp() {
    let gone = r#"{"reason":"Unregistered","timestamp":1700000000123}"#.to_owned();
    let mut s = setup(script(vec![(410, gone)]), ok(), false).await;
    let r = s.pusher.call(&info(), &payload::tests::call()).await;
    assert_eq!(
        r,
        PushResult::DeadToken {
            timestamp_ms: Some(1_700_000_000_123)
        }
    );
    let _ = s.prod.next().await;
    assert!(s.prod.none_left(), "410 is not retried");
}

#[tokio::test]
async fn bad_device_token_on_a_guess_tries_the_other_environment() {
    let bad = r#"{"reason":"BadDeviceToken"}"#.to_owned();
    let mut s = setup(script(vec![(400, bad)]), ok(), false).await;
    let call = payload::tests::call();
    let mut i = info();
    i.env_guessed = true;
    let r = s.pusher.call(&i, &call).await;
    assert_eq!(r, PushResult::SentOtherEnv { sandbox: true });
    let (a, b) = (s.prod.next().await, s.sandbox.next().await);
    assert_eq!(a.body, b.body);
    assert_eq!(a.header("apns-collapse-id"), b.header("apns-collapse-id"));

    // A known environment: no second try, and never a dead token.
    let r = s.pusher.call(&info(), &call).await;
    assert!(
        matches!(&r, PushResult::Failed(e) if e.contains("BadDeviceToken")),
        "{r:?}"
    );
    let _ = s.prod.next().await;
    assert!(s.sandbox.none_left());
}

#[tokio::test]
async fn not_for_topic_fails_and_5xx_is_retried_with_the_same_collapse_id() {
    let topic = r#"{"reason":"DeviceTokenNotForTopic"}"#.to_owned();
    let unavailable = r#"{"reason":"ServiceUnavailable"}"#.to_owned();
    let mut s = setup(
        script(vec![
            (400, topic),
            (503, unavailable.clone()),
            (429, unavailable),
            (200, String::new()),
        ]),
        ok(),
        false,
    )
    .await;
    let call = payload::tests::call();
    let mut i = info();
    i.env_guessed = true;
    let r = s.pusher.call(&i, &call).await;
    assert!(
        matches!(&r, PushResult::Failed(e) if e.contains("DeviceTokenNotForTopic")),
        "{r:?}"
    );
    let _ = s.prod.next().await;
    assert!(
        s.sandbox.none_left(),
        "only BadDeviceToken switches environment"
    );

    assert_eq!(s.pusher.call(&info(), &call).await, PushResult::Sent);
    let tries = [
        s.prod.next().await,
        s.prod.next().await,
        s.prod.next().await,
    ];
    for t in &tries {
        assert_eq!(t.header("apns-collapse-id"), Some(call.call_uuid.as_str()));
        assert_eq!(t.body, tries[0].body);
    }
    assert!(s.prod.none_left());
}

#[tokio::test]
async fn warm_up_opens_both_connections() {
    let mut s = setup(ok(), ok(), false).await;
    s.pusher.warm_up().await;
    let (a, b) = (s.prod.next().await, s.sandbox.next().await);
    assert_eq!((a.method.as_str(), a.path.as_str()), ("GET", "/"));
    assert_eq!((b.method.as_str(), b.path.as_str()), ("GET", "/"));
}

#[tokio::test]
async fn certificate_auth() {
    let mut s = setup(ok(), ok(), true).await;
    let call = payload::tests::call();
    assert_eq!(s.pusher.call(&info(), &call).await, PushResult::Sent);
    let seen = s.prod.next().await;
    assert_eq!(seen.header("x-client-cert"), Some("yes"));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("apns-push-type"), Some("voip"));
}

#[test]
fn bad_key_files_name_the_setting() {
    let apns = |key_file, cert_file| ApnsSettings {
        key_file,
        key_id: Some("K".into()),
        team_id: Some("T".into()),
        cert_file,
        bundle_id: None,
        sandbox: false,
        production_url: "https://127.0.0.1:1".into(),
        sandbox_url: "https://127.0.0.1:1".into(),
        ca_file: None,
        payload_template: None,
    };
    let e = Apns::new(&apns(Some("/nonexistent/k.p8".into()), None)).unwrap_err();
    assert!(e.to_string().starts_with("push.apns.key_file: "), "{e}");
    let junk = temp_file(
        "junk.p8",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let e = Apns::new(&apns(Some(junk.clone()), None)).unwrap_err();
    assert!(e.to_string().starts_with("push.apns.key_file: "), "{e}");
    let e = Apns::new(&apns(None, Some(junk))).unwrap_err();
    assert!(e.to_string().starts_with("push.apns.cert_file: "), "{e}");
}

#[test]
fn collapse_ids_are_cut() {
    assert_eq!(collapse_id("abc"), "abc");
    assert_eq!(collapse_id(&"x".repeat(100)).len(), 64);
}
