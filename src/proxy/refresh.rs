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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::wake::push_info;
use super::Core;
use crate::metrics::{count_push, PushKind};
use crate::push::{PushResult, PushSender};
use crate::registrar::unix_now_ms;

/// How often bindings near their end are looked for.
const TICK: Duration = Duration::from_secs(1);

/// Sends refresh pushes for the life of the server (returns at once when off).
pub async fn run(core: Arc<Core>) {
    let settings = core.settings.push.refresh.clone();
    if !settings.enabled {
        return;
    }
    let before_ms = u64::try_from(settings.before.as_millis()).unwrap_or(u64::MAX);
    // a phone that registered this recently is awake and refreshes by itself
    let awake_ms = u64::try_from(core.settings.push.flow_timeout.as_millis()).unwrap_or(u64::MAX);
    let ttl_ms = u64::try_from(core.settings.push.binding_ttl.as_millis()).unwrap_or(u64::MAX);
    // (aor, binding key) → the REGISTER time whose binding was already pushed
    let mut done: HashMap<(String, String), u64> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let now = unix_now_ms();
        let ending = core.registrar.push_bindings_ending(now, before_ms);
        // forget bindings that ran out or registered again
        done.retain(|(aor, key), at| {
            ending
                .iter()
                .any(|b| &b.aor == aor && &b.key == key && b.updated_at_ms == *at)
        });
        let mut budget = settings.max_per_second;
        for b in ending {
            let id = (b.aor.clone(), b.key.clone());
            // a binding whose whole life is short (short TTLs) is refreshed in its
            // second half, not right after its REGISTER
            let end = b.expires_at.saturating_mul(1000).saturating_add(ttl_ms);
            let life = end.saturating_sub(b.updated_at_ms);
            let due = end.saturating_sub(now) <= before_ms.min(life / 2);
            if !due
                || done.get(&id) == Some(&b.updated_at_ms)
                || now.saturating_sub(b.updated_at_ms) < awake_ms
            {
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
            debug!(aor = %b.aor, token = info.short_token(), "refresh push");
            let fut = core.pusher().refresh(&info, &b.aor, settings.before);
            let core = core.clone();
            tokio::spawn(async move {
                let r = count_push(info.provider, PushKind::Refresh, fut).await;
                match r {
                    PushResult::DeadToken { timestamp_ms } => {
                        let removed = core.registrar.set_push(&b.aor, &b.key, None, timestamp_ms);
                        crate::metrics::global()
                            .dead_tokens_removed
                            .add(u64::from(removed));
                    }
                    PushResult::Failed(why) => {
                        debug!(aor = %b.aor, error = %why, "refresh push failed");
                    }
                    PushResult::Sent | PushResult::SentOtherEnv { .. } => {}
                }
            });
        }
    }
}
