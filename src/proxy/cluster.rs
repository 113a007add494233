//! The proxy's side of several nodes: binding events committed on other nodes wake
//! the calls parked here through the same entry point as a local REGISTER, and a call
//! just parked re-reads its AOR so a REGISTER that raced its parking is not missed.
//! (How bindings are shared and events carried: `registrar::redis`,
//! `registrar::remote`.)

use std::sync::Arc;

use super::Core;
use crate::registrar::{remote, unix_now_ms, BindingEvent, BindingEventKind};

/// Starts receiving the other nodes' binding events (shared store only).
pub fn start(core: &Arc<Core>) {
    let Some(shared) = core.registrar.shared().cloned() else {
        return;
    };
    let me = core.settings.cluster.node_id.clone();
    let (c1, c2) = (core.clone(), core.clone());
    tokio::spawn(remote::run(
        shared,
        me,
        move |event| deliver(&c1, event),
        move |since_ms| {
            if since_ms == 0 {
                return;
            }
            for aor in c2.parked.aors() {
                reread(&c2, aor, since_ms);
            }
        },
    ));
}

/// Another node's binding event, into this node's one stream of binding events (the
/// parked calls are one of its sinks), exactly as a local REGISTER's.
pub fn deliver(core: &Core, event: BindingEvent) {
    core.registrar.events().publish(event);
}

/// A call was just parked for `aor`: a REGISTER committed on another node since the
/// call's lookup is in Redis but its event came before the parking.
pub fn parked(core: &Arc<Core>, aor: &str) {
    if core.registrar.shared().is_some() {
        // a second of margin covers the time between the lookup and the parking
        reread(core, aor.to_owned(), unix_now_ms().saturating_sub(1000));
    }
}

/// Reads `aor` and hands the calls parked for it every binding registered since
/// `since_ms`.
fn reread(core: &Arc<Core>, aor: String, since_ms: u64) {
    let core = core.clone();
    tokio::spawn(async move {
        match core.registrar.find(&aor, unix_now_ms()).await {
            Ok(bindings) => {
                // replayed as the events that may have been missed
                for b in bindings.into_iter().filter(|b| b.updated_at_ms >= since_ms) {
                    deliver(&core, BindingEvent::remote(BindingEventKind::Refreshed, b));
                }
            }
            Err(e) => tracing::debug!(%aor, error = %e, "parked AOR not re-read"),
        }
    });
}
