//! Test pushes for the admin API (`POST /push-test/{aor}`): the first thing an
//! operator tries when "calls don't wake my phone".
//!
//! Each provider gets the most realistic push that is safe to send without a call:
//! APNs a full VoIP call push (PushKit kills an app whose VoIP push is not reported to
//! CallKit as a call, so a lighter test push would get the app killed; the caller is
//! named so the user sees it is a test), FCM the call message with `validate_only`
//! (checked, not delivered), the webhook (also as the push gateway of APNs or FCM
//! tokens) the call document with `"test": true`.

use std::sync::Arc;

use super::{not_configured, Route};
use super::{BoxFuture, CallPush, PushInfo, PushResult, Pusher};

/// Caller name and number of test pushes, recognisable on the phone.
pub const TEST_CALLER: &str = "sipwake push test";

impl Pusher {
    /// Sends `info` a test push shaped as `call` (see the module doc).
    pub fn test(&self, info: &PushInfo, call: &CallPush) -> BoxFuture<'static, PushResult> {
        match self.route(info.provider) {
            Route::Apns(a) => Box::pin(Arc::clone(a).call(info.clone(), call.clone())),
            Route::Fcm(f) => Box::pin(Arc::clone(f).validate(info.clone(), call.clone())),
            Route::Webhook(w) => Box::pin(Arc::clone(w).test(info.clone(), call.clone())),
            Route::None => not_configured(info.provider),
        }
    }
}
