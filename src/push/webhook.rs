//! The webhook provider: an HTTP POST of a JSON document (see [`payload::webhook`]) to
//! the operator's own push service, which may also be the push gateway delivering
//! APNs and FCM pushes itself (`push.webhook.providers`).
//!
//! The answer: any 2xx is success; a 2xx whose JSON body says `"environment":
//! "sandbox" | "production"` for a bare APNs token tells sipwake the environment that
//! worked. `410` reports the token dead (JSON body optional; its `timestamp`, unix ms,
//! counts like APNs': a REGISTER after it revives the token).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{
    http, payload, CallPush, CancelReason, MessageNotice, Provider, PushError, PushInfo, PushResult,
};
use crate::config::WebhookSettings;

/// Longest one webhook exchange may take, whatever the push's time to live.
const MAX_TIME: Duration = Duration::from_secs(10);

/// A configured webhook.
#[derive(Debug)]
pub struct Webhook {
    client: Client,
    url: String,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
    gateway_apns: bool,
    gateway_fcm: bool,
}

impl Webhook {
    /// A client for `settings`.
    pub fn new(settings: &WebhookSettings) -> Result<Webhook, PushError> {
        let key = "push.webhook.url";
        let client = http::build(http::builder(None, key)?, key)?;
        Ok(Webhook {
            client,
            url: settings.url.clone(),
            timeout: settings.timeout,
            in_flight: Arc::new(Semaphore::new(http::MAX_IN_FLIGHT)),
            gateway_apns: settings.gateway_apns,
            gateway_fcm: settings.gateway_fcm,
        })
    }

    /// Whether tokens of provider `p` are pushed through the webhook.
    pub fn carries(&self, p: Provider) -> bool {
        match p {
            Provider::Webhook => true,
            Provider::Apns => self.gateway_apns,
            Provider::Fcm => self.gateway_fcm,
        }
    }

    /// POSTs the call (`reason` = `None`) or cancel document for `info`.
    pub async fn send(
        self: Arc<Self>,
        info: PushInfo,
        call: CallPush,
        reason: Option<CancelReason>,
    ) -> PushResult {
        let Some(doc) = payload::webhook(&info, &call, reason) else {
            return PushResult::Failed("no alert token".into());
        };
        let time = match reason {
            None => call.time_left,
            Some(_) => payload::NOTICE_TTL,
        };
        self.post(&info, doc, time).await
    }

    /// POSTs the `event: refresh` document.
    pub async fn refresh(
        self: Arc<Self>,
        info: PushInfo,
        aor: String,
        ttl: Duration,
    ) -> PushResult {
        let Some(doc) = payload::webhook_refresh(&info, &aor, ttl) else {
            return PushResult::Failed("no alert token".into());
        };
        self.post(&info, doc, ttl).await
    }

    /// POSTs the `event: message` document.
    pub async fn message(self: Arc<Self>, info: PushInfo, notice: MessageNotice) -> PushResult {
        let Some(doc) = payload::webhook_message(&info, &notice) else {
            return PushResult::Failed("no alert token".into());
        };
        self.post(&info, doc, notice.ttl).await
    }

    /// A test push (admin `POST /push-test`): the call document with `"test": true`.
    pub async fn test(self: Arc<Self>, info: PushInfo, call: CallPush) -> PushResult {
        let Some(mut doc) = payload::webhook(&info, &call, None) else {
            return PushResult::Failed("no token".into());
        };
        doc["test"] = true.into();
        self.post(&info, doc, call.time_left).await
    }

    /// POSTs `doc`, for at most `time` (and the setting).
    pub(crate) async fn post(
        &self,
        info: &PushInfo,
        doc: serde_json::Value,
        time: Duration,
    ) -> PushResult {
        let body = doc.to_string();
        // The setting bounds the whole exchange; a call push also ends with the call.
        let time = time.min(self.timeout).min(MAX_TIME);
        let deadline = Instant::now() + time;
        let Ok(_permit) = http::permit(&self.in_flight, deadline).await else {
            return PushResult::Failed("too many pushes in flight".into());
        };
        let make = || {
            self.client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(body.clone())
        };
        let result =
            match http::send(make, deadline.saturating_duration_since(Instant::now())).await {
                Ok(r) => answer(info, r.status, &r.body),
                Err(e) => PushResult::Failed(format!("webhook: {e}")),
            };
        tracing::debug!(
            token = info.short_token(),
            event = doc["event"].as_str().unwrap_or(""),
            ?result,
            "webhook push"
        );
        result
    }
}

/// Reads the webhook's answer (see the module doc).
fn answer(info: &PushInfo, status: u16, body: &[u8]) -> PushResult {
    let json = || serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
    match status {
        200..=299 => {
            let sandbox = match json()["environment"].as_str() {
                Some("sandbox") => true,
                Some("production") => false,
                _ => return PushResult::Sent,
            };
            if info.provider == Provider::Apns && info.env_guessed && sandbox != info.sandbox {
                PushResult::SentOtherEnv { sandbox }
            } else {
                PushResult::Sent
            }
        }
        410 => PushResult::DeadToken {
            timestamp_ms: json()["timestamp"].as_u64(),
        },
        _ => PushResult::Failed(format!("webhook answered {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PushSettings;
    use crate::push::mock::{http1, script};
    use crate::push::{Provider, PushSender, Pusher};

    fn pusher(url: String) -> Pusher {
        Pusher::new(&PushSettings {
            webhook: Some(WebhookSettings {
                url,
                timeout: Duration::from_secs(2),
                gateway_apns: false,
                gateway_fcm: false,
            }),
            ..PushSettings::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn posts_call_and_cancel_documents() {
        let mut mock = http1(script(vec![(204, String::new())])).await;
        let p = pusher(format!("http://{}/hooks/push", mock.addr));
        assert!(p.serves(Provider::Webhook));
        assert!(!p.serves(Provider::Apns));
        let info = crate::push::tests::info(Provider::Webhook);
        let call = payload::tests::call();

        assert_eq!(p.call(&info, &call).await, PushResult::Sent);
        let seen = mock.next().await;
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/hooks/push");
        assert_eq!(seen.header("content-type"), Some("application/json"));
        let body = seen.json();
        assert_eq!(Some(body.clone()), payload::webhook(&info, &call, None));
        assert_eq!(body["event"], "call");
        assert_eq!(body["pushHint"], "hint-1");
        assert_eq!(body["token"], info.token);

        let r = p
            .cancel(&info, &call, CancelReason::AnsweredElsewhere)
            .await;
        assert_eq!(r, PushResult::Sent);
        let body = mock.next().await.json();
        assert_eq!(body["event"], "cancel");
        assert_eq!(body["reason"], "answered_elsewhere");
        assert_eq!(body["callUUID"], call.call_uuid);
        assert!(mock.none_left());
    }

    #[test]
    fn answers_dead_token_and_environment() {
        let mut info = crate::push::tests::info(Provider::Apns);
        assert_eq!(answer(&info, 204, b""), PushResult::Sent);
        assert_eq!(
            answer(&info, 410, br#"{"reason":"Unregistered","timestamp":1234}"#),
            PushResult::DeadToken {
                timestamp_ms: Some(1234)
            }
        );
        assert_eq!(
            answer(&info, 410, b"gone"),
            PushResult::DeadToken { timestamp_ms: None }
        );
        // the environment counts only for a guess
        let sandbox = br#"{"environment":"sandbox"}"#;
        assert_eq!(answer(&info, 200, sandbox), PushResult::Sent);
        info.env_guessed = true;
        assert_eq!(
            answer(&info, 200, sandbox),
            PushResult::SentOtherEnv { sandbox: true }
        );
        assert_eq!(
            answer(&info, 200, br#"{"environment":"production"}"#),
            PushResult::Sent
        );
        assert!(matches!(answer(&info, 404, b""), PushResult::Failed(_)));
    }

    #[tokio::test]
    async fn errors_and_retries() {
        // 503 is retried (same document), 400 is not.
        let mut mock = http1(script(vec![
            (503, String::new()),
            (200, String::new()),
            (400, String::new()),
        ]))
        .await;
        let p = pusher(format!("http://{}/", mock.addr));
        let info = crate::push::tests::info(Provider::Webhook);
        let call = payload::tests::call();
        assert_eq!(p.call(&info, &call).await, PushResult::Sent);
        let (a, b) = (mock.next().await, mock.next().await);
        assert_eq!(a.body, b.body);
        let r = p.call(&info, &call).await;
        assert!(
            matches!(&r, PushResult::Failed(e) if e.contains("400")),
            "{r:?}"
        );
        let _ = mock.next().await;
        assert!(mock.none_left());

        // Nobody listening: fails (after bounded retries), no panic.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let p = pusher(format!("http://{addr}/"));
        let r = p.call(&info, &call).await;
        assert!(matches!(r, PushResult::Failed(_)), "{r:?}");
    }
}
