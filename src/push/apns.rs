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
mod tests;
