//! Push notifications: tokens from REGISTER, payloads, and providers.
//!
//! - [`token`]: what a REGISTER says about push (RFC 8599 `pn-*` Contact parameters,
//!   the `X-Token` header, the `xToken` Contact parameter) as a [`PushInfo`], which the
//!   registrar stores as JSON with the binding.
//! - [`payload`]: the JSON documents each provider gets.
//! - [`apns`], [`fcm`], [`webhook`]: one small HTTP client per provider; every address is
//!   a setting so tests and staging can point it at a stand-in.
//! - [`Pusher`]: all configured providers behind the [`PushSender`] trait.
//!
//! Tokens are secrets of the phone: they never appear whole in logs
//! ([`PushInfo::short_token`]).

pub mod apns;
pub mod fcm;
mod http;
pub mod payload;
pub mod token;
pub mod webhook;

pub mod test_payload;

#[cfg(test)]
mod mock;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::PushSettings;

pub use token::{extract, pns_name, TokenError};

/// A boxed future that can be sent to another task.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A push service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Apple Push Notification service (PushKit VoIP pushes).
    Apns,
    /// Firebase Cloud Messaging, HTTP v1 API.
    Fcm,
    /// The operator's own service, reached by an HTTP POST of JSON.
    Webhook,
}

impl Provider {
    /// Lower-case name, as in the JSON documents and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apns => "apns",
            Self::Fcm => "fcm",
            Self::Webhook => "webhook",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Push info of one binding; stored as JSON in `Binding.push`. Its `Debug` output
/// shows only the first 8 characters of the tokens, so it is safe to log.
///
/// Empty and false fields are left out of the JSON: it is kept in memory with every
/// binding, and most bindings carry only a provider and a token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushInfo {
    /// Which service delivers the pushes.
    pub provider: Provider,
    /// VoIP (PushKit) token, FCM registration token, or the opaque webhook token.
    pub token: String,
    /// APNs regular (remote) token, for cancel notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_token: Option<String>,
    /// APNs bundle id without `.voip` (from `pn-param` minus the team id, or settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// APNs team from `pn-param` (selects the signing key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// APNs environment: the sandbox (`pn-provider=apns.dev`, or settings for bare
    /// tokens).
    #[serde(default, skip_serializing_if = "is_false")]
    pub sandbox: bool,
    /// The environment was a guess (bare token): `BadDeviceToken` is retried once on
    /// the other environment.
    #[serde(default, skip_serializing_if = "is_false")]
    pub env_guessed: bool,
    /// Unix ms of the REGISTER carrying this token. Not stored: the binding's
    /// `updated_at_ms` holds the same time (and is what the APNs 410 timestamp rule
    /// reads), and a value that moves with every REGISTER would make each refresh a
    /// change of the stored push info. Read from JSON written before, or 0.
    #[serde(default, skip_serializing)]
    pub registered_at_ms: u64,
    /// The app's RFC 8599 `pn-param` (or legacy `app-id`) exactly as it sent it, for an
    /// operator's push gateway (e.g. `TEAMID.org.example.app.voip&remote`, or an FCM
    /// project id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pn_param: Option<String>,
}

impl std::fmt::Debug for PushInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushInfo")
            .field("provider", &self.provider)
            .field("token", &format_args!("{}…", self.short_token()))
            .field(
                "alert_token",
                &self
                    .alert_token
                    .as_deref()
                    .map(|t| format!("{}…", short(t))),
            )
            .field("topic", &self.topic)
            .field("team_id", &self.team_id)
            .field("sandbox", &self.sandbox)
            .field("env_guessed", &self.env_guessed)
            .field("registered_at_ms", &self.registered_at_ms)
            .field("pn_param", &self.pn_param)
            .finish()
    }
}

impl PushInfo {
    /// The JSON stored in `Binding.push`.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, bools and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads `Binding.push`; `None` when it is not push info of this version.
    pub fn from_json(s: &str) -> Option<PushInfo> {
        serde_json::from_str(s).ok()
    }

    /// The first 8 characters of the token, for logs.
    pub fn short_token(&self) -> &str {
        short(&self.token)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The first 8 characters of a token (or less), for logs.
pub fn short(token: &str) -> &str {
    match token.char_indices().nth(8) {
        Some((i, _)) => &token[..i],
        None => token,
    }
}

/// What one call push carries.
#[derive(Debug, Clone)]
pub struct CallPush {
    /// Address of record being called (normalized, `user@domain`).
    pub aor: String,
    /// Call-ID of the INVITE.
    pub call_id: String,
    /// Per-call key, also sent in the forwarded INVITE's `X-PushHint`.
    pub push_hint: String,
    /// Caller identity (URI or user part).
    pub caller_id: String,
    /// Caller display name, if any (and allowed by privacy).
    pub caller_name: Option<String>,
    /// Caller number / user part, for the CallKit handle.
    pub caller_number: String,
    /// The offer has an active video stream.
    pub with_video: bool,
    /// CallKit call UUID (also the APNs collapse id).
    pub call_uuid: String,
    /// Time left until the wake timeout: APNs expiration, FCM ttl, and the
    /// per-attempt timeout `min(2 s, time_left / 3)`.
    pub time_left: Duration,
}

/// What the notice of a MESSAGE kept for a sleeping phone carries.
#[derive(Debug, Clone)]
pub struct MessageNotice {
    /// Address of record the message is for.
    pub aor: String,
    /// Id of the kept message.
    pub message_id: String,
    /// The sender's URI (from `From`).
    pub from_uri: String,
    /// The sender's display name, if any.
    pub from_name: Option<String>,
    /// The sender's user part (or host, for a URI without one).
    pub from_number: String,
    /// The text, when `push.messages.notice_text` is on and the body is text.
    pub text: Option<String>,
    /// `Content-Type` of the message.
    pub content_type: Option<String>,
    /// How long the notice is worth delivering.
    pub ttl: Duration,
}

/// Why a pushed device gets a cancel notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The caller hung up before answer.
    CallerCancelled,
    /// Another device answered.
    AnsweredElsewhere,
    /// Another device declined (6xx).
    DeclinedElsewhere,
    /// The device did not wake in time.
    Timeout,
}

impl CancelReason {
    /// Name used in the JSON documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CallerCancelled => "caller_cancelled",
            Self::AnsweredElsewhere => "answered_elsewhere",
            Self::DeclinedElsewhere => "declined_elsewhere",
            Self::Timeout => "timeout",
        }
    }
}

/// Why a device is pushed; decides the push type (see [`Event::apns_push`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An incoming call (APNs: a VoIP push to the PushKit token).
    Call,
    /// The call ended before the device got it (APNs: an alert to the regular token).
    Cancel,
    /// A MESSAGE waits for the device (APNs: an alert to the regular token).
    Message,
    /// The device's binding ends soon: register again (APNs: a background push to the
    /// regular token).
    Refresh,
}

/// The APNs token a push goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// The PushKit token: only VoIP pushes, only for calls (iOS kills apps whose VoIP
    /// pushes are not reported to CallKit).
    Voip,
    /// The regular (`remote`) token: alert and background pushes.
    Alert,
}

impl TokenKind {
    /// Name in the webhook document.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voip => "voip",
            Self::Alert => "alert",
        }
    }
}

/// How an APNs push of one [`Event`] is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApnsPush {
    /// Which token it goes to.
    pub token: TokenKind,
    /// `apns-push-type`.
    pub push_type: &'static str,
    /// `apns-priority` (10 at once, 5 when convenient for the device).
    pub priority: u8,
}

impl Event {
    /// Name in the webhook and FCM documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Cancel => "cancel",
            Self::Message => "message",
            Self::Refresh => "refresh",
        }
    }

    /// The APNs push for this event: only a call is a VoIP push.
    pub fn apns_push(self) -> ApnsPush {
        match self {
            Self::Call => ApnsPush {
                token: TokenKind::Voip,
                push_type: "voip",
                priority: 10,
            },
            Self::Cancel | Self::Message => ApnsPush {
                token: TokenKind::Alert,
                push_type: "alert",
                priority: 10,
            },
            Self::Refresh => ApnsPush {
                token: TokenKind::Alert,
                push_type: "background",
                priority: 5,
            },
        }
    }
}

impl PushInfo {
    /// The APNs token of `kind`: `None` when the app gave no regular token.
    pub fn apns_token(&self, kind: TokenKind) -> Option<&str> {
        match kind {
            TokenKind::Voip => Some(&self.token),
            TokenKind::Alert => self.alert_token.as_deref(),
        }
    }
}

/// How one push went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushResult {
    /// The provider accepted the push.
    Sent,
    /// The provider accepted the push, but only on the other APNs environment than the
    /// binding's guess: `sandbox` is the one that worked. The caller should store it
    /// (`info.sandbox = sandbox; info.env_guessed = false`).
    SentOtherEnv {
        /// Whether the sandbox is the environment that worked.
        sandbox: bool,
    },
    /// The token is no longer valid: APNs 410 (with its `timestamp`, unix ms) or FCM
    /// `UNREGISTERED`. The caller decides whether to remove it (APNs: only if the
    /// timestamp is later than the last REGISTER carrying the token).
    DeadToken {
        /// APNs: when the token stopped being valid.
        timestamp_ms: Option<u64>,
    },
    /// Anything else; the token stays.
    Failed(String),
}

impl PushResult {
    /// The push was accepted by the provider.
    pub fn is_sent(&self) -> bool {
        matches!(self, Self::Sent | Self::SentOtherEnv { .. })
    }
}

/// All configured providers behind one trait, so the proxy can be tested with a fake.
pub trait PushSender: Send + Sync + 'static {
    /// Sends a call push (APNs: a VoIP push) for `call` to the device `info`.
    fn call(&self, info: &PushInfo, call: &CallPush) -> BoxFuture<'static, PushResult>;

    /// Tells the device the call ended before it got the INVITE. APNs: an alert push
    /// to the regular token (never a VoIP push); without one, `Failed("no alert
    /// token")` and nothing is sent. FCM and webhook: an `event: cancel` message.
    fn cancel(
        &self,
        info: &PushInfo,
        call: &CallPush,
        reason: CancelReason,
    ) -> BoxFuture<'static, PushResult>;

    /// Tells the device a MESSAGE waits for it. APNs: an alert push to the regular
    /// token (never a VoIP push; without one, `Failed("no alert token")`). FCM: a data
    /// message. Webhook: an `event: message` document.
    fn message(&self, info: &PushInfo, notice: &MessageNotice) -> BoxFuture<'static, PushResult>;

    /// Asks the app of `aor` to register again before its binding ends; the push is
    /// worth delivering for `ttl`. APNs: a background push to the regular token (never
    /// a VoIP push; without one, `Failed("no alert token")`). FCM: a normal-priority
    /// data message. Webhook: an `event: refresh` document.
    fn refresh(&self, info: &PushInfo, aor: &str, ttl: Duration) -> BoxFuture<'static, PushResult>;
}

/// Why the push providers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A file named by a setting could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Read {
        /// The setting, e.g. `push.apns.key_file`.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file or value of the wrong form.
    #[error("{key}: {reason}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// All configured providers; pushes for a provider that is not configured fail.
#[derive(Clone, Default)]
pub struct Pusher {
    apns: Option<Arc<apns::Apns>>,
    fcm: Option<Arc<fcm::Fcm>>,
    webhook: Option<Arc<webhook::Webhook>>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("apns", &self.apns.is_some())
            .field("fcm", &self.fcm.is_some())
            .field("webhook", &self.webhook.is_some())
            .finish()
    }
}

impl Pusher {
    /// Builds a client for every provider configured in `settings` (reading key files
    /// now, so a bad file stops startup with an error naming the setting). No provider
    /// configured is fine: no pushes are sent.
    pub fn new(settings: &PushSettings) -> Result<Pusher, PushError> {
        Ok(Pusher {
            apns: settings
                .apns
                .as_ref()
                .map(apns::Apns::new)
                .transpose()?
                .map(Arc::new),
            fcm: settings
                .fcm
                .as_ref()
                .map(fcm::Fcm::new)
                .transpose()?
                .map(Arc::new),
            webhook: settings
                .webhook
                .as_ref()
                .map(webhook::Webhook::new)
                .transpose()?
                .map(Arc::new),
        })
    }

    /// Opens the connections to the push services that benefit from it (APNs), so the
    /// first call does not pay a TLS handshake. Optional; call once at startup.
    pub fn warm_up(&self) -> BoxFuture<'static, ()> {
        let apns = self.apns.clone();
        Box::pin(async move {
            if let Some(a) = apns {
                a.warm_up().await;
            }
        })
    }

    /// Whether pushes of provider `p` can be sent (by sipwake's own client or
    /// through the webhook).
    pub fn serves(&self, p: Provider) -> bool {
        !matches!(self.route(p), Route::None)
    }

    /// Who delivers pushes of provider `p`: the webhook when `push.webhook.providers`
    /// names it, else sipwake's own client for it.
    fn route(&self, p: Provider) -> Route<'_> {
        if let Some(w) = self.webhook.as_ref().filter(|w| w.carries(p)) {
            return Route::Webhook(w);
        }
        match p {
            Provider::Apns => self.apns.as_ref().map_or(Route::None, Route::Apns),
            Provider::Fcm => self.fcm.as_ref().map_or(Route::None, Route::Fcm),
            Provider::Webhook => Route::None,
        }
    }
}

/// Who delivers a push.
enum Route<'a> {
    Apns(&'a Arc<apns::Apns>),
    Fcm(&'a Arc<fcm::Fcm>),
    Webhook(&'a Arc<webhook::Webhook>),
    None,
}

fn not_configured(p: Provider) -> BoxFuture<'static, PushResult> {
    Box::pin(std::future::ready(PushResult::Failed(format!(
        "push provider {p} is not configured"
    ))))
}

impl PushSender for Pusher {
    fn call(&self, info: &PushInfo, call: &CallPush) -> BoxFuture<'static, PushResult> {
        match self.route(info.provider) {
            Route::Apns(a) => Box::pin(Arc::clone(a).call(info.clone(), call.clone())),
            Route::Fcm(f) => Box::pin(Arc::clone(f).send(info.clone(), call.clone(), None)),
            Route::Webhook(w) => Box::pin(Arc::clone(w).send(info.clone(), call.clone(), None)),
            Route::None => not_configured(info.provider),
        }
    }

    fn cancel(
        &self,
        info: &PushInfo,
        call: &CallPush,
        reason: CancelReason,
    ) -> BoxFuture<'static, PushResult> {
        let (info, call) = (info.clone(), call.clone());
        match self.route(info.provider) {
            Route::Apns(a) => Box::pin(Arc::clone(a).cancel(info, call, reason)),
            Route::Fcm(f) => Box::pin(Arc::clone(f).send(info, call, Some(reason))),
            Route::Webhook(w) => Box::pin(Arc::clone(w).send(info, call, Some(reason))),
            Route::None => not_configured(info.provider),
        }
    }

    fn message(&self, info: &PushInfo, notice: &MessageNotice) -> BoxFuture<'static, PushResult> {
        let (info, notice) = (info.clone(), notice.clone());
        match self.route(info.provider) {
            Route::Apns(a) => Box::pin(Arc::clone(a).message(info, notice)),
            Route::Fcm(f) => Box::pin(Arc::clone(f).message(info, notice)),
            Route::Webhook(w) => Box::pin(Arc::clone(w).message(info, notice)),
            Route::None => not_configured(info.provider),
        }
    }

    fn refresh(&self, info: &PushInfo, aor: &str, ttl: Duration) -> BoxFuture<'static, PushResult> {
        let (info, aor) = (info.clone(), aor.to_owned());
        match self.route(info.provider) {
            Route::Apns(a) => Box::pin(Arc::clone(a).refresh(info, aor, ttl)),
            Route::Fcm(f) => Box::pin(Arc::clone(f).refresh(info, aor, ttl)),
            Route::Webhook(w) => Box::pin(Arc::clone(w).refresh(info, aor, ttl)),
            Route::None => not_configured(info.provider),
        }
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Per-attempt timeout: `min(2 s, time_left / 3)`, at least 50 ms.
pub fn attempt_timeout(time_left: Duration) -> Duration {
    (time_left / 3)
        .min(Duration::from_secs(2))
        .max(Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn info(provider: Provider) -> PushInfo {
        PushInfo {
            provider,
            token: "0123456789abcdef".repeat(4),
            alert_token: None,
            topic: Some("com.example.phone".into()),
            team_id: None,
            sandbox: false,
            env_guessed: false,
            registered_at_ms: 1,
            pn_param: None,
        }
    }

    #[test]
    fn push_info_json_round_trip() {
        let mut i = info(Provider::Apns);
        i.alert_token = Some("ff".repeat(32));
        i.team_id = Some("ABCDE12345".into());
        let json = i.to_json();
        assert!(json.contains("\"provider\":\"apns\""), "{json}");
        assert!(
            !json.contains("registered_at"),
            "derivable, not stored: {json}"
        );
        i.registered_at_ms = 0;
        assert_eq!(PushInfo::from_json(&json), Some(i));
        assert_eq!(PushInfo::from_json("not json"), None);
        let min = PushInfo::from_json(r#"{"provider":"webhook","token":"t"}"#).unwrap();
        assert_eq!(min.provider, Provider::Webhook);
        assert!(!min.sandbox);
    }

    #[test]
    fn debug_output_hides_tokens() {
        let mut i = info(Provider::Apns);
        i.alert_token = Some("fedcba9876543210".repeat(4));
        let d = format!("{i:?}");
        assert!(d.contains("01234567…") && d.contains("fedcba98…"), "{d}");
        assert!(
            !d.contains("0123456789") && !d.contains("fedcba9876"),
            "{d}"
        );
    }

    #[test]
    fn short_token_is_8_chars() {
        assert_eq!(info(Provider::Fcm).short_token(), "01234567");
        assert_eq!(short("abc"), "abc");
        assert_eq!(short("äöüäöüäöüx"), "äöüäöüäö");
    }

    #[test]
    fn attempt_timeouts() {
        assert_eq!(
            attempt_timeout(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
        assert_eq!(
            attempt_timeout(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(attempt_timeout(Duration::ZERO), Duration::from_millis(50));
    }

    #[tokio::test]
    async fn unconfigured_provider_fails() {
        let p = Pusher::new(&PushSettings::default()).unwrap();
        assert!(!p.serves(Provider::Apns));
        let call = payload::tests::call();
        let r = p.call(&info(Provider::Apns), &call).await;
        assert!(matches!(r, PushResult::Failed(_)), "{r:?}");
        let r = p
            .cancel(&info(Provider::Webhook), &call, CancelReason::Timeout)
            .await;
        assert!(matches!(r, PushResult::Failed(_)), "{r:?}");
    }
}
