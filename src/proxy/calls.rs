//! What the INVITEs in progress are doing, for the admin API's `/calls`.
//!
//! Nothing is recorded per call: each forwarding task already knows its call, so the
//! admin API asks every live server transaction task with a [`Describe`] event and
//! collects the answers. The hot path pays nothing; a scrape costs one message per
//! live transaction.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

use super::Core;
use crate::transaction::TxEvent;

/// Asks a forwarding task for a [`CallView`]; tasks that are not an unanswered
/// INVITE drop the sender instead of answering.
#[derive(Debug)]
pub struct Describe(pub oneshot::Sender<CallView>);

/// One INVITE without a final answer yet.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    /// Call-ID of the INVITE.
    pub call_id: String,
    /// From header as received.
    pub from: String,
    /// To header as received.
    pub to: String,
    /// Milliseconds since the INVITE arrived.
    pub age_ms: u64,
    /// `parked` (waiting for a pushed phone, nothing ringing), `ringing` (a branch
    /// sent a provisional above 100) or `trying` (forwarded, no ringing yet).
    pub state: &'static str,
    /// The call waits for a pushed phone to register (also while something rings).
    pub parked: bool,
    /// The called AOR, when the call pushed.
    pub aor: Option<String>,
    /// Branches forwarded so far.
    pub branches: usize,
    /// Branches still waiting for a final answer.
    pub pending_branches: usize,
    /// Devices pushed for this call.
    pub pushed_devices: usize,
}

/// Every unanswered INVITE, oldest first. Tasks that do not answer within `wait`
/// (busy resolving a next hop) are left out.
pub async fn list(core: &Core, wait: Duration) -> Vec<CallView> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pending = Vec::new();
    for task in core.tx.server_tasks() {
        let (tx, rx) = oneshot::channel();
        if task.send(TxEvent::Upper(Box::new(Describe(tx)))).is_ok() {
            pending.push(rx);
        }
    }
    let mut out = Vec::new();
    for rx in pending {
        if let Ok(Ok(view)) = tokio::time::timeout_at(deadline, rx).await {
            out.push(view);
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.age_ms));
    out
}
