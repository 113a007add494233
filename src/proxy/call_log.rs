//! One info line per call, when the caller gets its final answer, on its own target
//! ([`TARGET`], `sipwake::call`) so operators can keep or route just these lines, e.g.
//! `log.level = "warn,sipwake::call=info"`.
//!
//! The line names the Call-ID, the caller's and callee's addresses of record, the
//! outcome, the final status, how long the caller waited for it and, for a woken
//! phone, how long the wake took. Never a push token.

use std::time::{Duration, Instant};

use tracing::info;

use crate::sip::{Message, Uri};

/// The log target of the per-call lines.
pub const TARGET: &str = "sipwake::call";

/// How a call ended for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (2xx) by a phone that got the INVITE at once, without waking.
    Answered,
    /// A pushed phone woke, registered and got the INVITE; the status tells how it
    /// answered.
    Woken,
    /// Phones were pushed but none woke within `push.wake_timeout_ms`.
    PushTimeout,
    /// Every push failed and nothing else could answer.
    PushFailed,
    /// The caller cancelled before an answer.
    Cancelled,
    /// A final status other than 2xx (busy, declined, no binding, refused by sipwake).
    Rejected,
}

impl Outcome {
    /// The word in the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Woken => "woken",
            Self::PushTimeout => "push_timeout",
            Self::PushFailed => "push_failed",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
        }
    }
}

fn aor(value: Option<crate::sip::NameAddr<'_>>) -> String {
    value
        .and_then(|n| Uri::parse(n.uri).ok())
        .map(|u| u.aor())
        .unwrap_or_default()
}

/// Logs the end of the call `invite`: final status `code`, started at `started`, and
/// for a woken phone the time from the push to the woken INVITE.
pub fn finished(
    invite: &Message,
    outcome: Outcome,
    code: u16,
    started: Instant,
    woken_after: Option<Duration>,
) {
    crate::metrics::global().call_finished(outcome.as_str());
    let duration_ms = started.elapsed().as_millis() as u64;
    match woken_after {
        Some(w) => info!(
            target: TARGET,
            call_id = %invite.call_id(),
            from = %aor(invite.from()),
            to = %aor(invite.to()),
            outcome = %outcome.as_str(),
            wake_ms = w.as_millis() as u64,
            code,
            duration_ms,
            "call"
        ),
        None => info!(
            target: TARGET,
            call_id = %invite.call_id(),
            from = %aor(invite.from()),
            to = %aor(invite.to()),
            outcome = %outcome.as_str(),
            code,
            duration_ms,
            "call"
        ),
    }
}
