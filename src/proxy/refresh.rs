//! Refresh pushes: before a sleeping push binding runs out (its SIP expiry plus
//! `push.binding_ttl_secs`), one background push asks the app to register again, as
//! RFC 8599 lets a proxy trigger re-registrations by push (Flexisip's wake-up
//! interval, OpenSIPS' `pn_trigger_interval`). APNs gets a background push to the regular token, never a VoIP push;
//! FCM a normal-priority data message; the webhook an `event: refresh` document.
//! An app that answers with a REGISTER keeps its binding; one that does not is
//! removed when it runs out, as before.
//!
//! The push goes `push.refresh.before_secs` before the binding runs out, or halfway
//! through its life when that is shorter (short TTLs must not refresh every binding
//! right after its REGISTER). Each registration gets at most one refresh push
//! (remembered by binding and REGISTER time), none while the phone registered within
//! `push.flow_timeout_secs` (it is awake and refreshes by itself), and no more than
//! `push.refresh.max_per_second` go out: Apple throttles background pushes, and a
//! refresh that waits a second loses nothing.
//!
//! Several nodes (`store.backend = "redis"`) keep no bindings in memory: the times
//! are kept in Redis ([`crate::registrar::refresh_index`]), every node looks at the
//! ones due each second, and the one node that claims a registration's push sends it
//! (also for a binding whose node is gone: a push needs no flow). `max_per_second`
//! then bounds each node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::wake::push_info;
use super::Core;
use crate::config::Settings;
use crate::metrics::{count_push, PushKind};
use crate::push::{PushInfo, PushResult, PushSender};
use crate::registrar::refresh_index::{due_ms, end_ms, Due};
use crate::registrar::{unix_now_ms, Binding, RefreshIndex, RefreshTiming, StoreError};

/// How often bindings near their end are looked for.
const TICK: Duration = Duration::from_secs(1);

/// When refresh pushes go, from the settings.
pub fn timing(settings: &Settings) -> RefreshTiming {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    RefreshTiming {
        before_ms: ms(settings.push.refresh.before),
        awake_ms: ms(settings.push.flow_timeout),
        ttl_ms: ms(settings.push.binding_ttl),
    }
}

/// Sends refresh pushes for the life of the server (returns at once when off).
pub async fn run(core: Arc<Core>) {
    if !core.settings.push.refresh.enabled {
        return;
    }
    match core.registrar.refresh_index() {
        Some(index) => run_shared(core, index).await,
        None => run_local(core).await,
    }
}

/// One node: walks the bindings in memory every second.
async fn run_local(core: Arc<Core>) {
    let settings = core.settings.push.refresh.clone();
    let timing = timing(&core.settings);
    // (aor, binding key) → the REGISTER time whose binding was already pushed
    let mut done: HashMap<(String, String), u64> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let now = unix_now_ms();
        let ending = core.registrar.push_bindings_ending(now, timing.before_ms);
        // forget bindings that ran out or registered again
        done.retain(|(aor, key), at| {
            ending
                .iter()
                .any(|b| b.aor() == aor && b.key() == key && b.updated_at_ms == *at)
        });
        let mut budget = settings.max_per_second;
        for b in ending {
            let id = (b.aor().to_owned(), b.key().to_owned());
            if now < due_ms(&b, &timing) || done.get(&id) == Some(&b.updated_at_ms) {
                continue;
            }
            if budget == 0 {
                break; // the rest next second
            }
            let Some(info) = push_info(&core, &b) else {
                continue;
            };
            budget -= 1;
            done.insert(id, b.updated_at_ms);
            send(&core, b, info);
        }
    }
}

/// Several nodes: every second, the bindings the shared index says are due; each
/// registration is pushed by the one node that claims it.
async fn run_shared(core: Arc<Core>, index: Arc<RefreshIndex>) {
    let max = core.settings.push.refresh.max_per_second;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let now = unix_now_ms();
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        let due = match index.due(now, limit).await {
            Ok(d) => d,
            Err(e) => {
                debug!(error = %e, "refresh index not read");
                continue;
            }
        };
        for d in due {
            if let Err(e) = look_at(&core, &index, &d, now).await {
                debug!(aor = %d.aor, error = %e, "refresh push not decided");
                break;
            }
        }
    }
}

/// Re-reads the binding of `d` and pushes it if it is due and this node claims it.
async fn look_at(
    core: &Arc<Core>,
    index: &RefreshIndex,
    d: &Due,
    now: u64,
) -> Result<(), StoreError> {
    let bindings = core.registrar.find(&d.aor, now).await?;
    let Some(b) = bindings
        .into_iter()
        .find(|b| b.key() == d.key && b.has_push())
    else {
        // ran out, de-registered, or its token was removed
        return index.reschedule(d, None).await;
    };
    let due = due_ms(&b, index.timing());
    if due > now {
        // registered again since it was filed
        return index.reschedule(d, Some(due)).await;
    }
    let mine = index.claim(&b, now).await?;
    // pushed by this node or another: next looked at when it runs out
    index
        .reschedule(d, Some(end_ms(&b, index.timing())))
        .await?;
    if let Some(info) = push_info(core, &b).filter(|_| mine) {
        send(core, b, info);
    }
    Ok(())
}

/// Sends the refresh push of `b` in the background; a dead token is removed.
fn send(core: &Arc<Core>, b: Arc<Binding>, info: PushInfo) {
    debug!(aor = %b.aor(), token = info.short_token(), "refresh push");
    let fut = core
        .pusher()
        .refresh(&info, b.aor(), core.settings.push.refresh.before);
    let core = core.clone();
    tokio::spawn(async move {
        let r = count_push(info.provider, PushKind::Refresh, fut).await;
        match r {
            PushResult::DeadToken { timestamp_ms } => {
                let removed = core
                    .registrar
                    .set_push(b.aor(), b.key(), None, timestamp_ms);
                crate::metrics::global()
                    .dead_tokens_removed
                    .add(u64::from(removed));
            }
            PushResult::Failed(why) => {
                debug!(aor = %b.aor(), error = %why, "refresh push failed");
            }
            PushResult::Sent | PushResult::SentOtherEnv { .. } => {}
        }
    });
}
