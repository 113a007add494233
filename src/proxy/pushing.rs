//! The push half of a forwarded call: what happens between [`super::wake::decide`]
//! planning the pushes and a woken phone getting its INVITE.
//!
//! The forwarding task ([`super::forward`]) owns a [`Pushing`] for a call that
//! pushes. It parks the call in [`super::park`] (whose index is fed by the
//! registrar's binding events, the one source of wakes, local or remote), sends one
//! push per device, and hears back on the task's own channel as typed
//! [`CallEvent`]s: `PushDone` when a provider answers, `Woken` when a binding of the
//! AOR is added or refreshed. This module turns those into facts the task acts on
//! (which device woke and on which flow, whether every push failed) and sends the
//! cancel notices when the call ends without a device.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::data::{CallEvent, PushPlan, TaskEvent};
use super::park::{ParkError, ParkGuard};
use super::Core;
use crate::metrics::{count_push, PushKind};
use crate::push::{CancelReason, PushInfo, PushResult, PushSender};
use crate::registrar::{unix_now_ms, Binding};
use crate::transaction::{TaskSender, TxEvent};
use crate::transport::Flow;

/// The push side of a call while it runs.
#[derive(Debug)]
pub struct Pushing {
    /// What was planned, with each device's progress.
    pub plan: PushPlan,
    /// Parked until the wake deadline (or the final response).
    guard: Option<ParkGuard>,
    parked_at: Instant,
    /// When the wake window closes.
    pub wake_at: Instant,
    /// Pushes not answered yet.
    pending: usize,
    /// Pushes the provider took.
    delivered: usize,
}

impl Pushing {
    /// Parks the call for the plan's AOR and sends one push per device; each result
    /// comes back to `tx` as [`CallEvent::PushDone`], each woken binding as
    /// [`CallEvent::Woken`]. The wake clock starts now, not when a push returns.
    pub fn start(
        core: &Core,
        mut plan: PushPlan,
        tx: &TaskSender<TaskEvent>,
    ) -> Result<Pushing, ParkError> {
        let guard = core.parked.park(&plan.aor, tx.clone())?;
        for (i, d) in plan.devices.iter_mut().enumerate() {
            d.pushed = true;
            debug!(aor = %plan.aor, token = d.info.short_token(), provider = %d.info.provider, "push");
            let fut = core.pusher().call(&d.info, &plan.call);
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = fut.await;
                let _ = tx.send(TxEvent::Upper(CallEvent::PushDone { device: i, result }));
            });
        }
        let now = Instant::now();
        Ok(Pushing {
            pending: plan.devices.len(),
            plan,
            guard: Some(guard),
            parked_at: now,
            wake_at: now + core.settings.push.wake_timeout,
            delivered: 0,
        })
    }

    /// Still parked: a woken phone would get the call.
    pub fn parked(&self) -> bool {
        self.guard.is_some()
    }

    /// Stops waiting for phones.
    pub fn unpark(&mut self) {
        self.guard = None;
    }

    /// How long the call has been waiting since it parked.
    pub fn parked_for(&self) -> Duration {
        self.parked_at.elapsed()
    }

    /// Every push has been answered and none was delivered: nobody can wake.
    pub fn all_failed(&self) -> bool {
        self.pending == 0 && self.delivered == 0
    }

    /// Every pushed device got the INVITE.
    pub fn all_got_invite(&self) -> bool {
        self.plan.devices.iter().all(|d| d.got_invite)
    }

    /// Device `device` got the INVITE (no cancel notice is due to it).
    pub fn got_invite(&mut self, device: usize) {
        if let Some(d) = self.plan.devices.get_mut(device) {
            d.got_invite = true;
        }
    }

    /// For a binding that woke: the flow to call it on and the pushed device it is,
    /// if any; `None` when it cannot take this call (another AOR, expired, no usable
    /// flow, or no TLS for a `sips:` call).
    pub fn woken(&self, binding: &Binding, sips: bool) -> Option<(Flow, Option<usize>)> {
        let flow = binding.flow()?.parse::<Flow>().ok()?;
        self.woken_on(binding, flow, sips)
    }

    /// [`Pushing::woken`] for a binding reached over `flow` (its own, or the way to
    /// the node holding it).
    pub fn woken_on(
        &self,
        binding: &Binding,
        flow: Flow,
        sips: bool,
    ) -> Option<(Flow, Option<usize>)> {
        if binding.aor() != self.plan.aor || !binding.is_live(unix_now_ms()) {
            return None;
        }
        if sips && !flow.is_tls() {
            return None; // a woken phone without TLS cannot take a sips: call
        }
        let token = PushInfo::from_json(binding.push().as_deref().unwrap_or("")).map(|i| i.token);
        let device = self.plan.devices.iter().position(|d| {
            d.key == binding.key() || token.as_deref().is_some_and(|t| t == d.info.token)
        });
        Some((flow, device))
    }

    /// A push finished: counts it, and keeps the registrar's view of the token true
    /// (APNs may say which environment took it, or that the token is dead).
    pub fn on_done(&mut self, core: &Core, device: usize, result: &PushResult) {
        self.pending = self.pending.saturating_sub(1);
        let Some(dev) = self.plan.devices.get_mut(device) else {
            return;
        };
        dev.failed = !result.is_sent();
        crate::metrics::global().push_done(dev.info.provider, PushKind::Call, result);
        let aor = &self.plan.aor;
        match result {
            PushResult::Sent => self.delivered += 1,
            PushResult::SentOtherEnv { sandbox } => {
                self.delivered += 1;
                // into the binding as it is now: the woken app may have registered again
                let (sandbox, token) = (*sandbox, dev.info.token.clone());
                core.registrar.update_push(aor, &dev.key, move |b| {
                    let mut info = crate::push::PushInfo::from_json(b.push().as_deref()?)?;
                    if info.token != token || !info.env_guessed {
                        return None;
                    }
                    info.sandbox = sandbox;
                    info.env_guessed = false;
                    Some(Some(info.to_json()))
                });
            }
            PushResult::DeadToken { timestamp_ms } => {
                // APNs: only a death after the token's last REGISTER counts
                let removed = core.registrar.set_push(aor, &dev.key, None, *timestamp_ms);
                crate::metrics::global()
                    .dead_tokens_removed
                    .add(u64::from(removed));
                debug!(
                    token = dev.info.short_token(),
                    removed, "push token reported dead"
                );
            }
            PushResult::Failed(why) => {
                debug!(token = dev.info.short_token(), error = %why, "push failed");
            }
        }
    }

    /// The call ended with `code`: unparks, and sends a cancel notice to each pushed
    /// device that never got the INVITE (a device whose push failed or whose token
    /// just died gets none).
    pub fn call_ended(&mut self, core: &Arc<Core>, code: u16, caller_cancelled: bool) {
        self.unpark();
        let reason = if caller_cancelled {
            CancelReason::CallerCancelled
        } else if (200..300).contains(&code) {
            CancelReason::AnsweredElsewhere
        } else if code == 480 || code == 408 {
            CancelReason::Timeout
        } else {
            CancelReason::DeclinedElsewhere
        };
        for d in self
            .plan
            .devices
            .iter()
            .filter(|d| d.pushed && !d.failed && !d.got_invite)
        {
            debug!(token = d.info.short_token(), ?reason, "cancel notice");
            let notice = core.pusher().cancel(&d.info, &self.plan.call, reason);
            tokio::spawn(count_push(d.info.provider, PushKind::Cancel, notice));
        }
    }
}
