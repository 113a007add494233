//! FCM HTTP v1: data-only messages with `android.priority: HIGH` and `ttl` = the time
//! left to wake the call.
//!
//! Auth is the OAuth 2.0 JWT-bearer grant of a service account, done here directly (an
//! RS256 assertion POSTed to the account's `token_uri`, which a setting can point at a
//! stand-in); the access token is cached until shortly before it expires.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use super::{
    http, now_ms, payload, CallPush, CancelReason, MessageNotice, PushError, PushInfo, PushResult,
};
use crate::config::FcmSettings;

/// OAuth scope for sending messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Google's token endpoint, when the service account names none.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// An access token is renewed when it has less than this left.
const TOKEN_MARGIN: Duration = Duration::from_secs(120);

/// Lifetime of a cancel notice.
const CANCEL_TIME: Duration = Duration::from_secs(60);

/// The fields of a service-account JSON file that matter here.
#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A configured FCM client.
pub struct Fcm {
    client: Client,
    send_url: String,
    token_uri: String,
    client_email: String,
    key_id: Option<String>,
    key: EncodingKey,
    token: Mutex<Option<(String, Instant)>>,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm")
            .field("send_url", &self.send_url)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl Fcm {
    /// A client for `settings`; reads the service account now.
    pub fn new(settings: &FcmSettings) -> Result<Fcm, PushError> {
        let key_name = "push.fcm.service_account_file";
        let path = &settings.service_account_file;
        let text = http::read(path, key_name)?;
        let invalid = |reason: String| PushError::Invalid {
            key: key_name,
            reason: format!("{}: {reason}", path.display()),
        };
        let sa: ServiceAccount = serde_json::from_slice(&text)
            .map_err(|e| invalid(format!("not a service-account JSON file: {e}")))?;
        let key = EncodingKey::from_rsa_pem(sa.private_key.as_bytes())
            .map_err(|e| invalid(format!("private_key is not a PEM RSA key: {e}")))?;
        let project = settings
            .project_id
            .clone()
            .or(sa.project_id)
            .ok_or_else(|| PushError::Invalid {
                key: "push.fcm.project_id",
                reason: "not set, and the service account names no project_id".into(),
            })?;
        let token_uri = settings
            .token_uri
            .clone()
            .or(sa.token_uri)
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
        let builder = http::builder(settings.ca_file.as_deref(), "push.fcm.ca_file")?;
        let fcm = Fcm {
            client: http::build(builder, "push.fcm")?,
            send_url: format!(
                "{}/v1/projects/{project}/messages:send",
                settings.base_url.trim_end_matches('/')
            ),
            token_uri,
            client_email: sa.client_email,
            key_id: sa.private_key_id,
            key,
            token: Mutex::new(None),
            in_flight: Arc::new(Semaphore::new(http::MAX_IN_FLIGHT)),
        };
        // Sign once now: a key that cannot sign stops startup, not a call.
        fcm.assertion().map_err(invalid)?;
        Ok(fcm)
    }

    fn assertion(&self) -> Result<String, String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let iat = now_ms() / 1000;
        let claims = Assertion {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + 3600,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("cannot sign the OAuth assertion: {e}"))
    }

    /// The cached access token, or a new one from the token endpoint.
    async fn access_token(&self, deadline: Instant) -> Result<String, String> {
        let mut cached = self.token.lock().await;
        if let Some((token, expires)) = cached.as_ref() {
            if expires.saturating_duration_since(Instant::now()) > TOKEN_MARGIN {
                return Ok(token.clone());
            }
        }
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            self.assertion()?
        );
        let make = || {
            self.client
                .post(&self.token_uri)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone())
        };
        let reply = http::send(make, deadline.saturating_duration_since(Instant::now()))
            .await
            .map_err(|e| format!("FCM token endpoint: {e}"))?;
        if reply.status != 200 {
            return Err(format!(
                "FCM token endpoint answered {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
            ));
        }
        let t: TokenResponse = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("FCM token endpoint: unexpected answer: {e}"))?;
        let expires = Instant::now() + Duration::from_secs(t.expires_in.unwrap_or(3600));
        *cached = Some((t.access_token.clone(), expires));
        Ok(t.access_token)
    }

    /// Sends the call message (`reason` = `None`) or the cancel message.
    pub async fn send(
        self: Arc<Self>,
        info: PushInfo,
        call: CallPush,
        reason: Option<CancelReason>,
    ) -> PushResult {
        let start = Instant::now();
        let time = match reason {
            None => call.time_left,
            Some(_) => CANCEL_TIME,
        };
        let deadline = start + time;
        let body = payload::fcm(&info.token, &call, reason, time);
        let result = self.send_inner(&info, body, deadline).await;
        tracing::debug!(
            token = info.short_token(),
            event = if reason.is_some() { "cancel" } else { "call" },
            ?result,
            ms = start.elapsed().as_millis() as u64,
            "FCM push"
        );
        result
    }

    /// A test push (admin `POST /push-test`): the call message sent with
    /// `validate_only: true`, so FCM checks token, credentials and payload without
    /// delivering anything.
    pub async fn validate(self: Arc<Self>, info: PushInfo, call: CallPush) -> PushResult {
        let deadline = Instant::now() + call.time_left;
        let mut body = payload::fcm(&info.token, &call, None, call.time_left);
        body["validate_only"] = true.into();
        self.send_inner(&info, body, deadline).await
    }

    /// Asks the app to register again: a normal-priority data message.
    pub async fn refresh(
        self: Arc<Self>,
        info: PushInfo,
        aor: String,
        ttl: Duration,
    ) -> PushResult {
        let deadline = Instant::now() + CANCEL_TIME;
        let body = payload::fcm_refresh(&info.token, &aor, ttl);
        let result = self.send_inner(&info, body, deadline).await;
        tracing::debug!(token = info.short_token(), ?result, "FCM refresh push");
        result
    }

    /// Sends the notice of a MESSAGE kept for the phone (a data message).
    pub async fn message(self: Arc<Self>, info: PushInfo, notice: MessageNotice) -> PushResult {
        let deadline = Instant::now() + CANCEL_TIME;
        let body = payload::fcm_message(&info.token, &notice);
        let result = self.send_inner(&info, body, deadline).await;
        tracing::debug!(token = info.short_token(), ?result, "FCM message notice");
        result
    }

    async fn send_inner(
        &self,
        info: &PushInfo,
        body: serde_json::Value,
        deadline: Instant,
    ) -> PushResult {
        let Ok(_permit) = http::permit(&self.in_flight, deadline).await else {
            return PushResult::Failed("too many pushes in flight".into());
        };
        let body = body.to_string();
        // A rejected access token is renewed once.
        for renewed in [false, true] {
            let bearer = match self.access_token(deadline).await {
                Ok(t) => format!("Bearer {t}"),
                Err(e) => return PushResult::Failed(e),
            };
            let make = || {
                self.client
                    .post(&self.send_url)
                    .header("authorization", &bearer)
                    .header("content-type", "application/json")
                    .body(body.clone())
            };
            let reply =
                match http::send(make, deadline.saturating_duration_since(Instant::now())).await {
                    Ok(r) => r,
                    Err(e) => return PushResult::Failed(format!("FCM: {e}")),
                };
            if reply.status == 200 {
                return PushResult::Sent;
            }
            if reply.status == 401 && !renewed {
                *self.token.lock().await = None;
                continue;
            }
            let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            let error = &json["error"];
            let unregistered = error["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["errorCode"] == "UNREGISTERED"));
            if unregistered && matches!(reply.status, 400 | 404) {
                return PushResult::DeadToken { timestamp_ms: None };
            }
            let status = error["status"].as_str().unwrap_or("");
            tracing::warn!(
                token = info.short_token(),
                http = reply.status,
                status,
                "FCM refused a push"
            );
            return PushResult::Failed(format!("FCM: {} {status}", reply.status));
        }
        PushResult::Failed("FCM: access token rejected".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PushSettings;
    use crate::push::mock::{http1, script, temp_file, Mock, Responder};
    use crate::push::{payload, Provider, PushSender, Pusher};

    const KEY: &str = include_str!("testdata/test-only-rsa-key.pem");
    const PUBLIC: &str = include_str!("testdata/test-only-rsa-key.pub.pem");

    fn service_account(token_uri: &str) -> std::path::PathBuf {
        let sa = serde_json::json!({
            "type": "service_account",
            "project_id": "sa-project",
            "private_key_id": "kid-1",
            "private_key": KEY,
            "client_email": "sipwake@sa-project.iam.gserviceaccount.com",
            "token_uri": token_uri,
        });
        temp_file("sa.json", sa.to_string().as_bytes())
    }

    fn token_ok(n: &str) -> (u16, String) {
        (
            200,
            format!(r#"{{"access_token":"{n}","expires_in":3599,"token_type":"Bearer"}}"#),
        )
    }

    async fn setup(
        token: Responder,
        fcm: Responder,
        project: Option<&str>,
    ) -> (Pusher, Mock, Mock) {
        let token = http1(token).await;
        let fcm = http1(fcm).await;
        let settings = PushSettings {
            fcm: Some(FcmSettings {
                // The file names Google's endpoint; the setting overrides it.
                service_account_file: service_account("https://oauth2.googleapis.com/token"),
                project_id: project.map(str::to_owned),
                base_url: format!("http://{}/", fcm.addr),
                token_uri: Some(format!("http://{}/token", token.addr)),
                ca_file: None,
            }),
            ..PushSettings::default()
        };
        let pusher = Pusher::new(&settings).unwrap();
        assert!(pusher.serves(Provider::Fcm));
        (pusher, token, fcm)
    }

    fn info() -> PushInfo {
        PushInfo {
            provider: Provider::Fcm,
            token: "fcm-registration-token:APA91b".into(),
            alert_token: None,
            topic: None,
            team_id: None,
            sandbox: false,
            env_guessed: false,
            registered_at_ms: now_ms(),
            pn_param: None,
        }
    }

    #[derive(Deserialize)]
    struct SeenAssertion {
        iss: String,
        scope: String,
        aud: String,
        iat: u64,
        exp: u64,
    }

    #[tokio::test]
    async fn test_push_is_validate_only() {
        let (pusher, _token, mut fcm) = setup(
            script(vec![token_ok("ya29.t")]),
            script(vec![(200, r#"{"name":"projects/p/messages/fake"}"#.into())]),
            None,
        )
        .await;
        let call = payload::tests::call();
        assert_eq!(pusher.test(&info(), &call).await, PushResult::Sent);
        let body = fcm.next().await.json();
        assert_eq!(body["validate_only"], true, "{body}");
        assert_eq!(body["message"]["data"]["event"], "call", "{body}");
        // an ordinary call push is never validate-only
        assert_eq!(pusher.call(&info(), &call).await, PushResult::Sent);
        assert!(fcm.next().await.json().get("validate_only").is_none());
    }

    #[tokio::test]
    async fn oauth_grant_then_message() {
        let (pusher, mut token, mut fcm) = setup(
            script(vec![token_ok("ya29.first")]),
            script(vec![(200, r#"{"name":"projects/p/messages/1"}"#.into())]),
            None,
        )
        .await;
        let call = payload::tests::call();
        assert_eq!(pusher.call(&info(), &call).await, PushResult::Sent);

        let grant = token.next().await;
        assert_eq!(grant.method, "POST");
        assert_eq!(grant.path, "/token");
        assert_eq!(
            grant.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let form = String::from_utf8(grant.body.clone()).unwrap();
        let assertion = form
            .strip_prefix(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=",
            )
            .expect("JWT-bearer grant");
        let header = jsonwebtoken::decode_header(assertion).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some("kid-1"));
        let aud = format!("http://{}/token", token.addr);
        let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
        v.set_audience(&[&aud]);
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).unwrap();
        let claims = jsonwebtoken::decode::<SeenAssertion>(assertion, &key, &v)
            .expect("assertion verifies")
            .claims;
        assert_eq!(claims.iss, "sipwake@sa-project.iam.gserviceaccount.com");
        assert_eq!(claims.scope, SCOPE);
        assert_eq!(claims.aud, aud);
        assert_eq!(claims.exp, claims.iat + 3600);

        let send = fcm.next().await;
        assert_eq!(send.method, "POST");
        assert_eq!(send.path, "/v1/projects/sa-project/messages:send");
        assert_eq!(send.header("authorization"), Some("Bearer ya29.first"));
        let body = send.json();
        let m = &body["message"];
        assert_eq!(m["token"], "fcm-registration-token:APA91b");
        assert_eq!(m["android"]["priority"], "HIGH");
        assert_eq!(m["android"]["ttl"], "10s");
        assert_eq!(m["data"]["event"], "call");
        assert_eq!(m["data"]["pushHint"], "hint-1");
        assert!(m.get("notification").is_none());

        // The access token is cached; a cancel is an event message with its reason.
        let r = pusher
            .cancel(&info(), &call, CancelReason::CallerCancelled)
            .await;
        assert_eq!(r, PushResult::Sent);
        let send = fcm.next().await;
        assert_eq!(send.header("authorization"), Some("Bearer ya29.first"));
        let data = &send.json()["message"]["data"];
        assert_eq!(data["event"], "cancel");
        assert_eq!(data["reason"], "caller_cancelled");
        assert!(token.none_left(), "one grant only");
    }

    #[tokio::test]
    async fn unregistered_is_a_dead_token_and_401_renews_the_access_token() {
        let unregistered = r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
        let (pusher, mut token, mut fcm) = setup(
            script(vec![token_ok("old"), token_ok("new")]),
            script(vec![
                (
                    401,
                    r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#.into(),
                ),
                (200, "{}".into()),
                (404, unregistered.into()),
                (
                    400,
                    r#"{"error":{"code":400,"status":"INVALID_ARGUMENT"}}"#.into(),
                ),
            ]),
            Some("configured-project"),
        )
        .await;
        let call = payload::tests::call();
        assert_eq!(pusher.call(&info(), &call).await, PushResult::Sent);
        let (a, b) = (fcm.next().await, fcm.next().await);
        assert_eq!(a.header("authorization"), Some("Bearer old"));
        assert_eq!(b.header("authorization"), Some("Bearer new"));
        assert_eq!(b.path, "/v1/projects/configured-project/messages:send");
        let _ = (token.next().await, token.next().await);

        let r = pusher.call(&info(), &call).await;
        assert_eq!(r, PushResult::DeadToken { timestamp_ms: None });
        let _ = fcm.next().await;
        let r = pusher.call(&info(), &call).await;
        assert!(
            matches!(&r, PushResult::Failed(e) if e.contains("INVALID_ARGUMENT")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn token_endpoint_failure_fails_the_push() {
        let (pusher, _token, mut fcm) = setup(
            script(vec![(400, r#"{"error":"invalid_grant"}"#.into())]),
            script(vec![(200, "{}".into())]),
            None,
        )
        .await;
        let r = pusher.call(&info(), &payload::tests::call()).await;
        assert!(
            matches!(&r, PushResult::Failed(e) if e.contains("invalid_grant")),
            "{r:?}"
        );
        assert!(fcm.none_left());
    }

    #[test]
    fn bad_service_accounts_name_the_setting() {
        let settings = |file| FcmSettings {
            service_account_file: file,
            project_id: None,
            base_url: "http://127.0.0.1:1".into(),
            token_uri: None,
            ca_file: None,
        };
        for (contents, key) in [
            ("not json", "push.fcm.service_account_file"),
            (
                r#"{"client_email":"a","private_key":"nope","project_id":"p"}"#,
                "push.fcm.service_account_file",
            ),
        ] {
            let e = Fcm::new(&settings(temp_file("sa.json", contents.as_bytes()))).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{key}: ")), "{e}");
        }
        let sa = serde_json::json!({"client_email": "a", "private_key": KEY});
        let e = Fcm::new(&settings(temp_file("sa.json", sa.to_string().as_bytes()))).unwrap_err();
        assert!(e.to_string().starts_with("push.fcm.project_id: "), "{e}");
        let e = Fcm::new(&settings("/nonexistent/sa.json".into())).unwrap_err();
        assert!(
            e.to_string().starts_with("push.fcm.service_account_file: "),
            "{e}"
        );
    }
}
