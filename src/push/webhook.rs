//! The webhook provider: an HTTP POST of a JSON document (see [`payload::webhook`]) to
//! the operator's own push service. Any 2xx is success.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{http, payload, CallPush, CancelReason, PushError, PushInfo, PushResult};
use crate::config::WebhookSettings;

/// Time given to a cancel notice, whose call has no time left.
const CANCEL_TIME: Duration = Duration::from_secs(10);

/// A configured webhook.
#[derive(Debug)]
pub struct Webhook {
    client: Client,
    url: String,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
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
        })
    }

    /// POSTs the call (`reason` = `None`) or cancel document for `info`.
    pub async fn send(
        self: Arc<Self>,
        info: PushInfo,
        call: CallPush,
        reason: Option<CancelReason>,
    ) -> PushResult {
        let doc = payload::webhook(&info, &call, reason);
        self.post(&info, &call, reason, doc).await
    }

    /// A test push (admin `POST /push-test`): the call document with `"test": true`.
    pub async fn test(self: Arc<Self>, info: PushInfo, call: CallPush) -> PushResult {
        let mut doc = payload::webhook(&info, &call, None);
        doc["test"] = true.into();
        self.post(&info, &call, None, doc).await
    }

    async fn post(
        &self,
        info: &PushInfo,
        call: &CallPush,
        reason: Option<CancelReason>,
        doc: serde_json::Value,
    ) -> PushResult {
        let body = doc.to_string();
        // The setting bounds the whole exchange; a call push also ends with the call.
        let time = match reason {
            None => call.time_left.min(self.timeout),
            Some(_) => CANCEL_TIME.min(self.timeout),
        };
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
                Ok(r) if (200..300).contains(&r.status) => PushResult::Sent,
                Ok(r) => PushResult::Failed(format!("webhook answered {}", r.status)),
                Err(e) => PushResult::Failed(format!("webhook: {e}")),
            };
        tracing::debug!(
            token = info.short_token(),
            event = if reason.is_some() { "cancel" } else { "call" },
            ?result,
            "webhook push"
        );
        result
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
        assert_eq!(body, payload::webhook(&info, &call, None));
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
