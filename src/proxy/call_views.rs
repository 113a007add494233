//! What the INVITEs in progress are doing, for the admin API's `/calls`.
//!
//! Nothing is recorded per call: each forwarding task already knows its call, so the
//! admin API asks every live server transaction task with a [`CallEvent::Describe`] and
//! collects the answers. The hot path pays nothing; a scrape costs one message per
//! live transaction.

use std::time::Duration;

use tokio::sync::oneshot;

use super::data::{CallEvent, CallView};
use super::Core;
use crate::transaction::TxEvent;

/// Every unanswered INVITE, oldest first. Tasks that do not answer within `wait`
/// (busy resolving a next hop) are left out.
pub async fn list(core: &Core, wait: Duration) -> Vec<CallView> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pending = Vec::new();
    for task in core.tx.server_tasks() {
        let (tx, rx) = oneshot::channel();
        if task.send(TxEvent::Upper(CallEvent::Describe(tx))).is_ok() {
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
