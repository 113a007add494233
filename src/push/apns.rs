//! APNs over HTTP/2: a small client on `reqwest` (rustls) and `jsonwebtoken`.
//!
//! - Token auth: an ES256 JWT (`kid` = key id, `iss` = team id, `iat`) signed with the
//!   `.p8` key, cached and renewed after [`JWT_RENEW_AFTER`] (Apple rejects renewal
//!   more often than every 20 minutes and tokens older than an hour). One JWT per
//!   signing key; a binding's team id picks the key.
//! - Certificate auth: the client certificate (PEM) is presented in the TLS handshake.
//! - Call pushes are VoIP pushes (`apns-push-type: voip`, topic `<bundle>.voip`,
//!   priority 10, `apns-expiration` = the time left to wake the call, collapse id per
//!   call). Cancel notices are alert pushes to the regular token, never VoIP pushes.
//! - `410` gives [`PushResult::DeadToken`] with Apple's timestamp; `400
//!   BadDeviceToken` on a guessed environment is retried once on the other one.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use reqwest::Client;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{
    http, now_ms, payload, CallPush, CancelReason, MessageNotice, PushError, PushInfo, PushResult,
};
use crate::config::ApnsSettings;

/// A cached provider token is replaced after this long (Apple: between 20 and 60
/// minutes).
pub const JWT_RENEW_AFTER: Duration = Duration::from_secs(40 * 60);
const _: () = assert!(JWT_RENEW_AFTER.as_secs() >= 20 * 60 && JWT_RENEW_AFTER.as_secs() <= 55 * 60);

/// Lifetime of a cancel notice (an alert about a missed call).
const CANCEL_TIME: Duration = Duration::from_secs(60);

/// Longest `apns-collapse-id` APNs accepts, in bytes.
const COLLAPSE_ID_MAX: usize = 64;

/// One `.p8` signing key and its cached JWT.
struct Signer {
    team_id: String,
    key_id: String,
    key: EncodingKey,
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

impl Signer {
    fn sign(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = Claims {
            iss: &self.team_id,
            iat: now_ms() / 1000,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }

    /// The cached JWT, or a new one when it is older than [`JWT_RENEW_AFTER`].
    fn token(&self) -> Result<String, String> {
        let mut cached = self.cached.lock();
        if let Some((jwt, issued)) = cached.as_ref() {
            if issued.elapsed() < JWT_RENEW_AFTER {
                return Ok(jwt.clone());
            }
        }
        let jwt = self
            .sign()
            .map_err(|e| format!("cannot sign the APNs token: {e}"))?;
        *cached = Some((jwt.clone(), Instant::now()));
        Ok(jwt)
    }

    /// Forgets the cached JWT (APNs said it expired).
    fn forget(&self) {
        *self.cached.lock() = None;
    }
}

enum Auth {
    /// Token auth; the first signer is the default.
    Token(Vec<Signer>),
    /// Certificate auth (the identity is in the client).
    Certificate,
}

/// A configured APNs client.
pub struct Apns {
    client: Client,
    auth: Auth,
    production_url: String,
    sandbox_url: String,
    default_topic: Option<String>,
    in_flight: Arc<Semaphore>,
    /// Operator's payload shape, if any.
    template: Option<serde_json::Value>,
}

impl std::fmt::Debug for Apns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apns")
            .field("production_url", &self.production_url)
            .field("sandbox_url", &self.sandbox_url)
            .finish_non_exhaustive()
    }
}

/// What kind of push.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Voip,
    Alert,
    /// A silent push waking the app in the background (`content-available`).
    Background,
}

impl Kind {
    /// `apns-push-type`.
    fn push_type(self) -> &'static str {
        match self {
            Kind::Voip => "voip",
            Kind::Alert => "alert",
            Kind::Background => "background",
        }
    }

    /// `apns-priority`: Apple requires 5 for background pushes.
    fn priority(self) -> &'static str {
        match self {
            Kind::Background => "5",
            Kind::Voip | Kind::Alert => "10",
        }
    }
}

/// An APNs answer, classified.
enum Outcome {
    Sent,
    BadDeviceToken,
    Other(PushResult),
}

impl Apns {
    /// A client for `settings`; reads the key or certificate file now.
    pub fn new(settings: &ApnsSettings) -> Result<Apns, PushError> {
        let mut builder = http::builder(settings.ca_file.as_deref(), "push.apns.ca_file")?
            .http2_prior_knowledge();
        let auth = match (&settings.key_file, &settings.cert_file) {
            (Some(path), _) => {
                let key_name = "push.apns.key_file";
                let pem = http::read(path, key_name)?;
                let key = EncodingKey::from_ec_pem(&pem).map_err(|e| PushError::Invalid {
                    key: key_name,
                    reason: format!("{}: not a PEM (PKCS#8) P-256 key: {e}", path.display()),
                })?;
                let signer = Signer {
                    team_id: settings.team_id.clone().unwrap_or_default(),
                    key_id: settings.key_id.clone().unwrap_or_default(),
                    key,
                    cached: Mutex::new(None),
                };
                // Sign once now: a key that cannot sign stops startup, not a call.
                signer.token().map_err(|reason| PushError::Invalid {
                    key: key_name,
                    reason: format!("{}: {reason}", path.display()),
                })?;
                Auth::Token(vec![signer])
            }
            (None, Some(path)) => {
                let key_name = "push.apns.cert_file";
                let pem = http::read(path, key_name)?;
                let identity =
                    reqwest::Identity::from_pem(&pem).map_err(|e| PushError::Invalid {
                        key: key_name,
                        reason: format!(
                            "{}: needs a PEM certificate and its private key: {e}",
                            path.display()
                        ),
                    })?;
                builder = builder.identity(identity);
                Auth::Certificate
            }
            (None, None) => {
                return Err(PushError::Invalid {
                    key: "push.apns.key_file",
                    reason: "APNs needs key_file (token auth) or cert_file (certificate auth)"
                        .into(),
                })
            }
        };
        Ok(Apns {
            client: http::build(builder, "push.apns")?,
            auth,
            production_url: settings.production_url.trim_end_matches('/').to_owned(),
            sandbox_url: settings.sandbox_url.trim_end_matches('/').to_owned(),
            default_topic: settings.bundle_id.clone(),
            in_flight: Arc::new(Semaphore::new(http::MAX_IN_FLIGHT)),
            template: match &settings.payload_template {
                Some(path) => {
                    let key = "push.apns.payload_template";
                    let text = http::read(path, key)?;
                    let v: serde_json::Value =
                        serde_json::from_slice(&text).map_err(|e| PushError::Invalid {
                            key,
                            reason: format!("{}: not JSON: {e}", path.display()),
                        })?;
                    if !v.is_object() {
                        return Err(PushError::Invalid {
                            key,
                            reason: format!("{}: must be a JSON object", path.display()),
                        });
                    }
                    Some(v)
                }
                None => None,
            },
        })
    }

    /// Opens the HTTP/2 connections to both environments now (a `GET /`, whose answer
    /// does not matter), so the first call does not pay the TLS handshake; idle
    /// connections are then kept open by PINGs.
    pub async fn warm_up(self: Arc<Self>) {
        for base in [&self.production_url, &self.sandbox_url] {
            let r = self
                .client
                .get(format!("{base}/"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Err(e) = r {
                tracing::debug!(url = %base, error = %http::describe(e), "APNs warm-up failed");
            }
        }
    }

    /// Sends the VoIP push for `call`.
    pub async fn call(self: Arc<Self>, info: PushInfo, call: CallPush) -> PushResult {
        let body = match &self.template {
            Some(t) => payload::apns_call_templated(t, &call),
            None => payload::apns_call(&call),
        };
        let token = info.token.clone();
        self.push(
            &info,
            &call.call_uuid,
            Kind::Voip,
            &token,
            body,
            call.time_left,
        )
        .await
    }

    /// Asks the app to register again before its binding ends: a background push to
    /// the regular token (never a VoIP push: iOS kills apps whose VoIP pushes are not
    /// calls).
    pub async fn refresh(
        self: Arc<Self>,
        info: PushInfo,
        aor: String,
        ttl: Duration,
    ) -> PushResult {
        let Some(token) = info.alert_token.clone() else {
            return PushResult::Failed("no alert token".into());
        };
        let body = payload::apns_refresh(&aor);
        self.push(&info, "refresh", Kind::Background, &token, body, ttl)
            .await
    }

    /// Sends the notice of a kept MESSAGE: an alert push to the regular token.
    pub async fn message(self: Arc<Self>, info: PushInfo, notice: MessageNotice) -> PushResult {
        let Some(token) = info.alert_token.clone() else {
            return PushResult::Failed("no alert token".into());
        };
        let body = payload::apns_message(&notice);
        self.push(
            &info,
            &notice.message_id,
            Kind::Alert,
            &token,
            body,
            notice.ttl,
        )
        .await
    }

    /// Sends the cancel notice: an alert push to the regular token, if there is one.
    pub async fn cancel(
        self: Arc<Self>,
        info: PushInfo,
        call: CallPush,
        reason: CancelReason,
    ) -> PushResult {
        let Some(token) = info.alert_token.clone() else {
            return PushResult::Failed("no alert token".into());
        };
        let body = payload::apns_cancel(&call, reason);
        self.push(
            &info,
            &call.call_uuid,
            Kind::Alert,
            &token,
            body,
            CANCEL_TIME,
        )
        .await
    }

    async fn push(
        &self,
        info: &PushInfo,
        collapse: &str,
        kind: Kind,
        token: &str,
        body: String,
        time: Duration,
    ) -> PushResult {
        let Some(topic) = info.topic.as_ref().or(self.default_topic.as_ref()) else {
            return PushResult::Failed("no APNs topic: set push.apns.bundle_id".into());
        };
        let topic = match kind {
            Kind::Voip => format!("{topic}.voip"),
            Kind::Alert | Kind::Background => topic.clone(),
        };
        let start = Instant::now();
        let deadline = start + time;
        let Ok(_permit) = http::permit(&self.in_flight, deadline).await else {
            return PushResult::Failed("too many pushes in flight".into());
        };
        // The push must not arrive after the call is gone.
        let expiration = (now_ms() + u64::try_from(time.as_millis()).unwrap_or(u64::MAX)) / 1000;
        let req = Request {
            kind,
            token,
            topic: &topic,
            expiration,
            collapse_id: collapse_id(collapse),
            body: &body,
            team_id: info.team_id.as_deref(),
        };
        let result = match self.send(&req, info.sandbox, deadline).await {
            Outcome::Sent => PushResult::Sent,
            Outcome::BadDeviceToken if info.env_guessed => {
                // The environment was a guess: try the other one, once.
                match self.send(&req, !info.sandbox, deadline).await {
                    Outcome::Sent => PushResult::SentOtherEnv {
                        sandbox: !info.sandbox,
                    },
                    Outcome::BadDeviceToken => {
                        PushResult::Failed("APNs: BadDeviceToken in both environments".into())
                    }
                    Outcome::Other(r) => r,
                }
            }
            Outcome::BadDeviceToken => PushResult::Failed("APNs: 400 BadDeviceToken".into()),
            Outcome::Other(r) => r,
        };
        tracing::debug!(
            token = super::short(token),
            kind = kind.push_type(),
            ?result,
            ms = start.elapsed().as_millis() as u64,
            "APNs push"
        );
        result
    }

    async fn send(&self, req: &Request<'_>, sandbox: bool, deadline: Instant) -> Outcome {
        let base = if sandbox {
            &self.sandbox_url
        } else {
            &self.production_url
        };
        let url = format!("{base}/3/device/{}", req.token);
        let signer = match &self.auth {
            Auth::Token(signers) => signers
                .iter()
                .find(|s| Some(s.team_id.as_str()) == req.team_id)
                .or(signers.first()),
            Auth::Certificate => None,
        };
        let bearer = match signer.map(Signer::token).transpose() {
            Ok(b) => b.map(|jwt| format!("bearer {jwt}")),
            Err(e) => return Outcome::Other(PushResult::Failed(e)),
        };
        let make = || {
            let mut r = self
                .client
                .post(&url)
                .header("apns-push-type", req.kind.push_type())
                .header("apns-topic", req.topic)
                .header("apns-priority", req.kind.priority())
                .header("apns-expiration", req.expiration.to_string())
                .header("apns-collapse-id", req.collapse_id)
                .header("content-type", "application/json")
                .body(req.body.to_owned());
            if let Some(b) = &bearer {
                r = r.header("authorization", b);
            }
            r
        };
        let reply = match http::send(make, deadline.saturating_duration_since(Instant::now())).await
        {
            Ok(r) => r,
            Err(e) => return Outcome::Other(PushResult::Failed(format!("APNs: {e}"))),
        };
        if reply.status == 200 {
            return Outcome::Sent;
        }
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        let reason = json["reason"].as_str().unwrap_or("").to_owned();
        match (reply.status, reason.as_str()) {
            (410, _) => Outcome::Other(PushResult::DeadToken {
                timestamp_ms: json["timestamp"].as_u64(),
            }),
            (400, "BadDeviceToken") => Outcome::BadDeviceToken,
            (403, "ExpiredProviderToken") => {
                if let Some(s) = signer {
                    s.forget();
                }
                Outcome::Other(PushResult::Failed("APNs: 403 ExpiredProviderToken".into()))
            }
            (status, reason) => {
                tracing::warn!(
                    token = super::short(req.token),
                    status,
                    reason,
                    "APNs refused a push"
                );
                Outcome::Other(PushResult::Failed(format!("APNs: {status} {reason}")))
            }
        }
    }
}

/// One push, as sent to either environment.
struct Request<'a> {
    kind: Kind,
    token: &'a str,
    topic: &'a str,
    expiration: u64,
    collapse_id: &'a str,
    body: &'a str,
    team_id: Option<&'a str>,
}

/// The call UUID, cut to the 64 bytes APNs allows.
fn collapse_id(uuid: &str) -> &str {
    let mut end = uuid.len().min(COLLAPSE_ID_MAX);
    while !uuid.is_char_boundary(end) {
        end -= 1;
    }
    &uuid[..end]
}

#[cfg(test)]
mod tests {
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
}
