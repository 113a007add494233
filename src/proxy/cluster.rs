//! The proxy's side of several nodes: binding events committed on other nodes wake
//! the calls parked here through the same entry point as a local REGISTER. The node
//! listens to an AOR's events only while a call is parked for it (the parked-call
//! index tells the subscriber), and re-reads the AOR once subscribed and after every
//! reconnection, so a REGISTER that raced the parking or came while the subscription
//! was down is not missed. (How bindings are shared and events carried:
//! `registrar::redis`, `registrar::remote`.)

use std::sync::Arc;

use super::Core;
use crate::registrar::{remote, unix_now_ms, BindingEvent, BindingEventKind};

/// Starts receiving the other nodes' binding events (shared store only).
pub fn start(core: &Arc<Core>) {
    let Some(shared) = core.registrar.shared().cloned() else {
        return;
    };
    let me = core.settings.cluster.node_id.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    core.parked.watch(tx);
    let (c1, c2) = (core.clone(), core.clone());
    tokio::spawn(remote::run(
        shared,
        me,
        rx,
        move |event| deliver(&c1, event),
        move |aor, since_ms| reread(&c2, aor, since_ms),
    ));
}

/// Another node's binding event, into this node's one stream of binding events (the
/// parked calls are one of its sinks), exactly as a local REGISTER's.
pub fn deliver(core: &Core, event: BindingEvent) {
    core.registrar.events().publish(event);
}

/// Reads `aor` and hands the calls parked for it every binding registered since
/// `since_ms`; a failed read is tried again while calls still wait for the AOR.
fn reread(core: &Arc<Core>, aor: String, since_ms: u64) {
    let core = core.clone();
    tokio::spawn(async move {
        loop {
            match core.registrar.find(&aor, unix_now_ms()).await {
                Ok(bindings) => {
                    // replayed as the events that may have been missed
                    for b in bindings.into_iter().filter(|b| b.updated_at_ms >= since_ms) {
                        deliver(&core, BindingEvent::remote(BindingEventKind::Refreshed, b));
                    }
                    return;
                }
                Err(e) => tracing::debug!(%aor, error = %e, "parked AOR not re-read"),
            }
            tokio::time::sleep(REREAD_RETRY).await;
            if !core.parked.waits_for(&aor) {
                return;
            }
        }
    });
}

/// The wait before reading a parked AOR again when Redis failed to answer.
const REREAD_RETRY: std::time::Duration = std::time::Duration::from_millis(250);
