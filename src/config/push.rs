//! `[push]`: waking sleeping phones — when to push, how long a parked call waits, where
//! tokens come from; the providers have sections of their own (`[push.apns]`,
//! `[push.fcm]`, `[push.webhook]`). A provider counts as configured when its
//! credentials (or, for the webhook, its URL) are set; with none configured, tokens
//! are still stored but no push is sent.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fields::{self, in_range, is_sip_token, keyword_parse};
use super::{
    ApnsSettings, ConfigError, FcmSettings, MessageSettings, RawApns, RawFcm, RawWebhook,
    RefreshSettings, WebhookSettings,
};

/// When an INVITE for a binding with a push token sends a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushPolicy {
    /// Every initial INVITE pushes (PushKit apps report calls to CallKit from the push).
    Always,
    /// Only bindings whose flow showed no life within `flow_timeout` are pushed.
    WhenUnreachable,
}
keyword_parse!(PushPolicy);

/// Provider assumed for tokens that arrive without one (`X-Token`, `xToken`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultProvider {
    /// 64 hex digits: APNs; anything else: FCM.
    Auto,
    /// APNs.
    Apns,
    /// FCM.
    Fcm,
    /// The webhook.
    Webhook,
}
keyword_parse!(DefaultProvider);

/// `[push]` section, generic over the providers' sections: [`RawPush`] holds them as
/// written (every key, set or not), [`PushSettings`] only those configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSection<Apns, Fcm, Webhook> {
    /// When to push.
    #[serde(deserialize_with = "fields::one")]
    pub policy: PushPolicy,
    /// How long a parked INVITE waits for the phone's REGISTER.
    #[serde(rename = "wake_timeout_ms", with = "fields::millis")]
    pub wake_timeout: Duration,
    /// Header carrying the per-call hint on the forwarded INVITE.
    pub hint_header: String,
    /// REGISTER header carrying a bare token.
    pub token_header: String,
    /// Contact URI parameter carrying a bare token.
    pub token_param: String,
    /// Provider of bare tokens.
    #[serde(deserialize_with = "fields::one")]
    pub default_provider: DefaultProvider,
    /// How long a token binding stays callable by push after its SIP expiry.
    #[serde(rename = "binding_ttl_secs", with = "fields::secs")]
    pub binding_ttl: Duration,
    /// Longest registration a token binding may ask for, seconds.
    pub max_expires: u32,
    /// A binding counts as reachable if its flow showed life this recently.
    #[serde(rename = "flow_timeout_secs", with = "fields::secs")]
    pub flow_timeout: Duration,
    /// Most INVITEs parked at once.
    pub max_parked: usize,
    /// Most INVITEs parked for one AOR.
    pub max_parked_per_aor: usize,
    /// `[push.apns]`.
    pub apns: Apns,
    /// `[push.fcm]`.
    pub fcm: Fcm,
    /// `[push.webhook]`.
    pub webhook: Webhook,
    /// `[push.messages]`: MESSAGEs kept for sleeping phones.
    pub messages: MessageSettings,
    /// `[push.refresh]`: pushes asking apps to register before their binding ends.
    pub refresh: RefreshSettings,
}

/// `[push]` validated: a provider is `Some` when configured.
pub type PushSettings =
    PushSection<Option<ApnsSettings>, Option<FcmSettings>, Option<WebhookSettings>>;

/// `[push]` as written.
pub type RawPush = PushSection<RawApns, RawFcm, RawWebhook>;

impl Default for RawPush {
    fn default() -> Self {
        Self {
            policy: PushPolicy::Always,
            wake_timeout: Duration::from_secs(10),
            hint_header: "X-PushHint".to_owned(),
            token_header: "X-Token".to_owned(),
            token_param: "xToken".to_owned(),
            default_provider: DefaultProvider::Auto,
            binding_ttl: Duration::from_secs(7 * 86_400),
            max_expires: 7 * 86_400,
            flow_timeout: Duration::from_secs(120),
            max_parked: 10_000,
            max_parked_per_aor: 10,
            apns: RawApns::default(),
            fcm: RawFcm::default(),
            webhook: RawWebhook::default(),
            messages: MessageSettings::default(),
            refresh: RefreshSettings::default(),
        }
    }
}

impl Default for PushSettings {
    /// The built-in defaults ([`RawPush::default`]) with no provider configured.
    fn default() -> Self {
        RawPush::default().with_providers(None, None, None)
    }
}

impl<A, F, W> PushSection<A, F, W> {
    /// The same settings with other provider sections.
    fn with_providers<A2, F2, W2>(self, apns: A2, fcm: F2, webhook: W2) -> PushSection<A2, F2, W2> {
        PushSection {
            policy: self.policy,
            wake_timeout: self.wake_timeout,
            hint_header: self.hint_header,
            token_header: self.token_header,
            token_param: self.token_param,
            default_provider: self.default_provider,
            binding_ttl: self.binding_ttl,
            max_expires: self.max_expires,
            flow_timeout: self.flow_timeout,
            max_parked: self.max_parked,
            max_parked_per_aor: self.max_parked_per_aor,
            apns,
            fcm,
            webhook,
            messages: self.messages,
            refresh: self.refresh,
        }
    }
}

impl RawPush {
    pub(super) fn validate(mut self) -> Result<PushSettings, ConfigError> {
        in_range(
            "push.wake_timeout_ms",
            u64::try_from(self.wake_timeout.as_millis()).unwrap_or(u64::MAX),
            100,
            300_000,
            "milliseconds",
        )?;
        let name = |key: &str, value: &str| {
            let v = value.trim();
            if is_sip_token(v) {
                Ok(v.to_owned())
            } else {
                Err(ConfigError::invalid(
                    key,
                    v,
                    "not a header / parameter name (letters, digits, - . ! % * _ + ` ' ~)",
                ))
            }
        };
        self.hint_header = name("push.hint_header", &self.hint_header)?;
        self.token_header = name("push.token_header", &self.token_header)?;
        self.token_param = name("push.token_param", &self.token_param)?;
        in_range(
            "push.binding_ttl_secs",
            self.binding_ttl.as_secs(),
            0,
            365 * 86_400,
            "seconds",
        )?;
        in_range(
            "push.max_expires",
            self.max_expires.into(),
            1,
            u64::from(u32::MAX),
            "seconds",
        )?;
        in_range(
            "push.flow_timeout_secs",
            self.flow_timeout.as_secs(),
            1,
            86_400,
            "seconds",
        )?;
        let max_parked = in_range(
            "push.max_parked",
            self.max_parked as u64,
            1,
            1_000_000,
            "calls",
        )?;
        in_range(
            "push.max_parked_per_aor",
            self.max_parked_per_aor as u64,
            1,
            max_parked,
            "calls (at most push.max_parked)",
        )?;
        self.messages = std::mem::take(&mut self.messages).validate()?;
        self.refresh = std::mem::take(&mut self.refresh).validate()?;
        let apns = std::mem::take(&mut self.apns).validate()?;
        let fcm = std::mem::take(&mut self.fcm).validate()?;
        let webhook = std::mem::take(&mut self.webhook).validate()?;
        Ok(self.with_providers(apns, fcm, webhook))
    }
}
