//! The proxy's side of restarts and reloads: swapping the push providers while calls
//! run, refusing new calls while draining, and noticing calls that end with an answer
//! from sipwake itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{call_log, Core};
use crate::push::Pusher;
use crate::sip::{Message, Method};
use crate::transport::Flow;

/// `Retry-After` on the `503` for calls refused while draining, seconds: about the
/// time a supervisor needs to start sipwake again.
pub const DRAIN_RETRY_AFTER_SECS: u32 = 10;

impl Core {
    /// The push providers now. A push keeps the `Arc` it started with, so a reload
    /// never cuts one short.
    pub fn pusher(&self) -> Arc<Pusher> {
        self.pusher.read().clone()
    }

    /// Replaces the push providers (SIGHUP); the next push uses the new ones.
    pub fn set_pusher(&self, pusher: Arc<Pusher>) {
        *self.pusher.write() = pusher;
    }

    /// From now on new out-of-dialog INVITEs get `503` with `Retry-After`; REGISTER,
    /// in-dialog requests and responses go on as before.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// True once [`Core::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// While draining, answers a new initial INVITE with `503`; true if it did.
    pub(super) fn refuse_while_draining(
        self: &Arc<Self>,
        msg: &Message,
        flow: Flow,
        key: u64,
    ) -> bool {
        if !self.is_draining() || msg.method() != Some(Method::Invite) || !msg.to_tag().is_empty() {
            return false;
        }
        let retry = format!("Retry-After: {DRAIN_RETRY_AFTER_SECS}");
        self.reply(
            msg,
            flow,
            key,
            503,
            "Service Unavailable (shutting down)",
            &[&retry],
        );
        true
    }

    /// sipwake itself gave `req` its final response `code`.
    pub(super) fn on_local_final(&self, req: &Message, code: u16) {
        match req.method() {
            // a digest challenge is not how the call ended: the phone sends the INVITE
            // again with credentials, and that one gets the call's line
            Some(Method::Invite) if req.to_tag().is_empty() && !matches!(code, 401 | 407) => {
                call_log::finished(req, call_log::Outcome::Rejected, code, Instant::now(), None)
            }
            Some(Method::Bye) => self.dialogs.bye_answered(req, code),
            _ => {}
        }
    }
}
