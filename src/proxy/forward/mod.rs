//! One task per forwarded transaction: it owns the server transaction and every
//! client branch of the fork, so responses, CANCEL, retransmissions and timers are
//! handled in one place and never race (RFC 3261 §16.6–16.10, RFC 6026).
//!
//! This file is the task: its state, its event loop, responses and the final answer,
//! timers. `branches.rs` starts and cancels the client branches of the fork;
//! `super::pushing` is the push half of a call that wakes phones, and
//! `super::next_hop` turns a target into a flow.

mod branches;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, debug_span, Instrument};

use super::data::{
    sleep_until, CallEvent, CallView, Next, OwnRoutes, PushPlan, Target, TaskEvent, WokenVia,
};
use super::edit::pop_via;
use super::pushing::Pushing;
use super::{next_hop, Core};
use crate::push::PushResult;
use crate::registrar::nodes::Owner;
use crate::registrar::Binding;
use crate::sip::{HeaderName, Message, Method};
use crate::transaction::{
    task_channel, BranchGen, ClientAction, Disposition, Kind, ServerAction, ServerEntry, ServerTx,
    TaskReceiver, TaskSender, TxEvent,
};
use crate::transport::Flow;
pub(in crate::proxy) use branches::via_value;
use branches::{make_ack, Branch};

/// The task that owns one forwarded transaction: its server transaction, every
/// branch of the fork and, for a call that pushes, its push half.
struct ForwardTask {
    core: Arc<Core>,
    /// The request as received, until the first final response has gone out; then
    /// `None`: nothing after the final reads it, and an answered transaction keeps
    /// only what its retransmissions need (issue 13). Boxed, so that the task it
    /// leaves behind is 600 bytes smaller.
    req: Option<Box<Message>>,
    /// The request's method (the response counters read it after the final too).
    method: Option<Method>,
    src: Flow,
    key: u64,
    kind: Kind,
    server: ServerTx,
    branches: Vec<Branch>,
    best: Option<(u16, Bytes)>,
    got_2xx: bool,
    rx: TaskReceiver<TaskEvent>,
    /// Kept while new branches may start (woken phones); dropped at the final.
    tx: Option<TaskSender<TaskEvent>>,
    local: SocketAddr,
    popped: Vec<std::ops::Range<usize>>,
    /// The request came from another node of the cluster (its wake hint passes).
    from_node: bool,
    record_route: bool,
    loop_hash: u64,
    untrusted: bool,
    /// The push half of a call that pushes; boxed, since most tasks (every BYE, every
    /// call to an awake phone) have none and each byte of the task is kept while it
    /// waits out its timers.
    push: Option<Box<Pushing>>,
    caller_cancelled: bool,
    final_code: Option<u16>,
    /// A branch answered 6xx: no new branches (RFC 3261 §16.7 step 5).
    declined: bool,
    /// A woken phone got the INVITE: the wake timeout no longer ends the call.
    woke: bool,
    /// When the request arrived (for the per-call log line and the admin API's
    /// `/calls`).
    started: Instant,
    /// Time from parking to the first woken phone's INVITE.
    woken_after: Option<std::time::Duration>,
    /// Counts an initial INVITE as a call in setup until its final response.
    setup: Option<super::dialogs::SetupGuard>,
}

/// Starts forwarding `msg` to `targets`, pushing the devices of `plan` first.
#[allow(clippy::too_many_arguments)]
pub fn start(
    core: &Arc<Core>,
    msg: Message,
    src: Flow,
    local: SocketAddr,
    key: u64,
    targets: Vec<Target>,
    popped: OwnRoutes,
    record_route: bool,
    plan: Option<Box<PushPlan>>,
) {
    let kind = if msg.method() == Some(Method::Invite) {
        Kind::Invite
    } else {
        Kind::NonInvite
    };
    let (tx, rx) = task_channel();
    if !core.tx.insert_server(key, ServerEntry::Task(tx.clone())) {
        return;
    }
    let mut server = ServerTx::new(kind, !src.is_udp(), core.timers);
    if kind == Kind::Invite {
        // 100 Trying at once so the caller stops retransmitting (RFC 3261 §16.2)
        let trying = core.respond(&msg, &src, 100, "Trying", &[]);
        server.send_response(100, &trying, Instant::now());
    }
    let span = debug_span!("tx", call_id = %msg.call_id(), method = %msg.method_str());
    let untrusted = !core.settings.is_trusted(src.remote().ip());
    let setup =
        (kind == Kind::Invite && msg.to_tag().is_empty()).then(|| core.dialogs.setup_started());
    let fwd = ForwardTask {
        core: core.clone(),
        loop_hash: BranchGen::loop_hash(&msg),
        method: msg.method(),
        req: Some(Box::new(msg)),
        src,
        key,
        kind,
        server,
        branches: Vec::with_capacity(targets.len()),
        best: None,
        got_2xx: false,
        rx,
        tx: Some(tx),
        local,
        popped: popped.ranges,
        from_node: popped.from_node,
        record_route,
        untrusted,
        push: None,
        caller_cancelled: false,
        final_code: None,
        declined: false,
        woke: false,
        started: Instant::now(),
        woken_after: None,
        setup,
    };
    tokio::spawn(fwd.run(targets, plan).instrument(span));
}

impl ForwardTask {
    /// The task's future. Not an `async fn`: that would move `self` into the future's
    /// locals and keep the argument's slot as well (rust-lang/rust#62958), 1.4 KB more
    /// per call, parked or waiting out its timers (issue 13).
    #[allow(clippy::manual_async_fn)]
    fn run(
        mut self,
        targets: Vec<Target>,
        plan: Option<Box<PushPlan>>,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            if self.begin(targets, plan).await {
                self.serve().await;
            }
            self.finish_task();
        }
    }

    /// Parks and pushes (for a call that pushes) and starts a branch per target;
    /// false when the call could not be parked (answered 503).
    async fn begin(&mut self, targets: Vec<Target>, plan: Option<Box<PushPlan>>) -> bool {
        if let Some(plan) = plan {
            let Some(tx) = self.tx.as_ref() else {
                return false;
            };
            match Pushing::start(&self.core, *plan, tx) {
                Ok(p) => self.push = Some(Box::new(p)),
                Err(e) => {
                    debug!(error = %e, "call not parked");
                    self.answer_own(503, "Service Unavailable");
                    return false;
                }
            }
        }
        let sips = self.sips();
        for t in targets {
            let resolved = match &t.next {
                // a registered phone's flow, the usual case: nothing to wait for
                Next::Flow(f) => Ok(*f),
                // DNS or a connection: boxed, so that its future does not widen every
                // call's task for as long as the call lasts
                next => Box::pin(next_hop::resolve(&self.core, next, Some(self.local))).await,
            };
            let flow = match resolved {
                Ok(f) => f,
                Err(e) => {
                    debug!(error = %e, "branch not started");
                    continue;
                }
            };
            if sips && !flow.is_tls() {
                debug!(remote = %flow.remote(), "sips: request not sent over a hop without TLS");
                continue;
            }
            self.start_branch(flow, t.ruri.as_deref(), &t.path, t.device, None);
        }
        if self.push.is_none() {
            // nothing can add branches any more
            self.tx = None;
        }
        if self.branches.is_empty() && self.push.is_none() {
            self.answer_own(480, "Temporarily Unavailable");
        }
        self.maybe_finish();
        true
    }

    /// Events and timers until nothing is left to wait for.
    async fn serve(&mut self) {
        loop {
            if self.done() {
                break;
            }
            let deadline = self.next_deadline();
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                _ = sleep_until(deadline) => self.on_timers(Instant::now()),
            }
        }
    }

    /// An initial `sips:` request: each branch must go over TLS (RFC 5630). In-dialog
    /// requests follow the legs the dialog was set up on. (Asked only while branches
    /// may start, before the final, while the request is kept.)
    fn sips(&self) -> bool {
        self.req
            .as_deref()
            .is_some_and(|r| r.to_tag().is_empty() && super::data::sips_request(r))
    }

    fn finish_task(&mut self) {
        for b in &self.branches {
            self.core.tx.remove_client(b.key);
            self.core.tx.remove_client(b.cancel_key);
        }
        self.core.tx.remove_server(self.key);
    }

    /// A binding of the parked AOR appeared or was refreshed: hand it the call.
    fn on_woken(&mut self, binding: Arc<Binding>) {
        if self.server.is_final() || self.got_2xx || self.declined {
            return; // a tombstone: the call is over, a late phone gets nothing
        }
        match self.core.registrar.owner(&binding) {
            Owner::Here => {
                let path = binding.path.clone();
                let Some(p) = self.push.as_deref() else {
                    return;
                };
                if let Some((flow, device)) = p.woken(&binding, self.sips()) {
                    self.hand_over(binding, flow, device, path);
                }
            }
            Owner::There(uri) => {
                // registered on another node: the call goes through it, once its
                // address is resolved (off this task)
                let Some(t) = super::wake::via_owner(&self.core, &binding, &uri) else {
                    return;
                };
                let (core, tx) = (self.core.clone(), self.tx.clone());
                tokio::spawn(async move {
                    match super::next_hop::resolve(&core, &t.next, None).await {
                        Ok(flow) => {
                            if let Some(tx) = tx {
                                let path = t.path;
                                let via = CallEvent::WokenVia(Box::new(WokenVia {
                                    binding,
                                    flow,
                                    path,
                                }));
                                let _ = tx.send(TxEvent::Upper(via));
                            }
                        }
                        Err(e) => debug!(error = %e, "owner of a woken phone unreachable"),
                    }
                });
            }
            Owner::Gone => {}
        }
    }

    /// A woken phone on another node, the way to it resolved.
    fn on_woken_via(&mut self, binding: Arc<Binding>, flow: Flow, path: Vec<String>) {
        if self.server.is_final() || self.got_2xx || self.declined {
            return;
        }
        let Some(p) = self.push.as_deref() else {
            return;
        };
        if let Some((flow, device)) = p.woken_on(&binding, flow, self.sips()) {
            self.hand_over(binding, flow, device, path);
        }
    }

    /// Starts the branch of a woken phone's binding over `flow` with `path` as its
    /// route set (the binding's Path; for another node's phone, that node first).
    fn hand_over(
        &mut self,
        binding: Arc<Binding>,
        flow: Flow,
        device: Option<usize>,
        path: Vec<String>,
    ) {
        let Some(p) = self.push.as_deref() else {
            return;
        };
        // one branch per device: same flow adds nothing, a new flow replaces the stale one
        let mut stale = Vec::new();
        for (i, b) in self.branches.iter().enumerate() {
            let same_device = b.binding_key.as_deref() == Some(binding.key())
                || (device.is_some() && b.device == device);
            if !same_device || !b.client.is_pending() {
                continue;
            }
            if b.flow == flow {
                return;
            }
            stale.push(i);
        }
        crate::metrics::global().woken(p.wake_at, self.core.settings.push.wake_timeout);
        for i in stale {
            self.drop_branch(i);
        }
        debug!(aor = %binding.aor(), "woken phone gets the call");
        self.start_branch(
            flow,
            Some(binding.contact()),
            &path,
            device,
            Some(binding.key().to_owned()),
        );
        if !self.woke {
            self.woken_after = self.push.as_deref().map(Pushing::parked_for);
        }
        self.woke = true;
    }

    fn on_push_done(&mut self, device: usize, result: PushResult) {
        let Some(p) = self.push.as_deref_mut() else {
            return;
        };
        p.on_done(&self.core, device, &result);
        if p.all_failed() && self.branches.iter().all(|b| b.final_code.is_some()) {
            // nobody can wake and nothing else rings: no point in waiting
            p.unpark();
        }
        self.maybe_finish();
    }

    fn unpark(&mut self) {
        if let Some(p) = self.push.as_deref_mut() {
            p.unpark();
        }
    }

    fn parked(&self) -> bool {
        self.push.as_deref().is_some_and(Pushing::parked)
    }

    /// Nothing left to wait for: the final went out and every timer has run.
    fn done(&self) -> bool {
        self.server.is_final()
            && !self.parked()
            && self.server.next_deadline().is_none()
            && self.branches.iter().all(|b| {
                b.client.next_deadline().is_none()
                    && b.give_up_at.is_none()
                    && b.cancel
                        .as_deref()
                        .is_none_or(|(_, c)| c.next_deadline().is_none())
            })
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d = self.server.next_deadline();
        if self.parked() {
            let w = self.push.as_deref().map(|p| p.wake_at);
            d = match (d, w) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for b in &self.branches {
            for x in [
                b.client.next_deadline(),
                b.cancel.as_deref().and_then(|(_, c)| c.next_deadline()),
                b.give_up_at,
            ] {
                d = match (d, x) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        d
    }

    fn on_event(&mut self, ev: TaskEvent) {
        let now = Instant::now();
        match ev {
            TxEvent::Response { branch, msg } => self.on_response(branch, *msg, now),
            TxEvent::Retransmission => {
                if let Some(b) = self.server.on_retransmission() {
                    let _ = self.core.transport.send(&self.src, b);
                }
            }
            TxEvent::Ack => self.server.on_ack(now),
            TxEvent::Cancel => {
                if !self.server.is_final() {
                    self.caller_cancelled = true;
                    self.unpark();
                    self.cancel_all(None, None);
                    self.maybe_finish();
                }
            }
            TxEvent::Upper(CallEvent::Woken(binding)) => self.on_woken(binding),
            TxEvent::Upper(CallEvent::PushDone { device, result }) => {
                self.on_push_done(device, result)
            }
            TxEvent::Upper(CallEvent::Describe(reply)) => self.describe(reply),
            TxEvent::Upper(CallEvent::WokenVia(via)) => {
                let WokenVia {
                    binding,
                    flow,
                    path,
                } = *via;
                self.on_woken_via(binding, flow, path)
            }
        }
    }

    fn on_response(&mut self, idx: usize, msg: Message, now: Instant) {
        let Some(code) = msg.code() else { return };
        let is_cancel = msg.cseq().1 == "CANCEL";
        let Some(b) = self.branches.get_mut(idx) else {
            return;
        };
        if is_cancel {
            if let Some((_, c)) = b.cancel.as_deref_mut() {
                c.on_response(code, now);
            }
            return;
        }
        match b.client.on_response(code, now) {
            Disposition::Absorb => {}
            Disposition::Ack => {
                // a retransmitted non-2xx final: the same ACK again
                let _ = self.core.transport.send(&b.flow, b.request.clone());
            }
            Disposition::PassAndAck => {
                let ack = make_ack(&b.request, &msg);
                let _ = self.core.transport.send(&b.flow, ack.clone());
                b.answered(ack);
                b.final_code = Some(code);
                b.give_up_at = None;
                self.on_final(idx, code, &msg);
            }
            Disposition::Pass => {
                if code < 200 {
                    b.ringing |= code > 100;
                    if let Some(reason) = b.cancel_wanted.take() {
                        self.send_cancel(idx, reason);
                    }
                    if code > 100 && !self.server.is_final() {
                        self.send_to_caller(code, pop_via(&msg));
                    }
                } else {
                    b.answered(Bytes::new());
                    b.final_code = Some(code);
                    b.give_up_at = None;
                    self.on_final(idx, code, &msg);
                }
            }
        }
    }

    fn on_final(&mut self, idx: usize, code: u16, msg: &Message) {
        if (200..300).contains(&code) {
            // 2xx go up at once, all of them (RFC 3261 §16.7 step 5)
            let bytes = pop_via(msg);
            let first = !self.got_2xx;
            self.got_2xx = true;
            if self.kind == Kind::Invite {
                self.core.dialogs.confirmed(msg);
            }
            self.send_to_caller(code, bytes);
            if first && self.kind == Kind::Invite {
                self.cancel_all(
                    Some(idx),
                    Some("SIP;cause=200;text=\"Call completed elsewhere\""),
                );
            }
            return;
        }
        if self.got_2xx || self.server.is_final() {
            return;
        }
        let better = match &self.best {
            None => true,
            Some((best, _)) => rank(code) < rank(*best),
        };
        if better {
            self.best = Some((code, pop_via(msg)));
        }
        if code >= 600 && self.kind == Kind::Invite {
            // a decline ends the fork: no more branches, no more waiting for phones
            self.declined = true;
            self.unpark();
            self.cancel_all(Some(idx), None);
        } else if self.push.as_deref().is_some_and(Pushing::all_got_invite)
            && self.branches.iter().all(|b| b.final_code.is_some())
        {
            // every pushed device got the call and answered: nothing left to wake
            self.unpark();
        }
        self.maybe_finish();
    }

    /// Sends the best final once no branch can still answer.
    fn maybe_finish(&mut self) {
        if self.server.is_final() || self.got_2xx {
            return;
        }
        let waiting = self.branches.iter().any(|b| b.final_code.is_none()) || self.parked();
        if waiting {
            return;
        }
        match self.best.take() {
            Some((503, _)) => self.answer_own(500, "Server Internal Error"),
            Some((code, bytes)) => self.send_to_caller(code, bytes),
            None if self.caller_cancelled => self.answer_own(487, "Request Terminated"),
            None if self.push.is_some() => self.answer_own(480, "Temporarily Unavailable"),
            None if self.branches.iter().any(|b| b.final_code == Some(487)) => {
                self.answer_own(487, "Request Terminated")
            }
            None if self.branches.iter().any(|b| b.final_code == Some(430)) => {
                self.answer_own(480, "Temporarily Unavailable")
            }
            None if !self.branches.is_empty() => self.answer_own(408, "Request Timeout"),
            None => {}
        }
    }

    /// Answers the caller ourselves (only ever before the final, while the request
    /// is kept).
    fn answer_own(&mut self, code: u16, reason: &str) {
        let Some(req) = self.req.as_deref() else {
            return;
        };
        let resp = crate::sip::response(req, self.src.remote(), code, reason, &[], None);
        self.send_to_caller(code, resp);
    }

    fn send_to_caller(&mut self, code: u16, bytes: Bytes) {
        let first_final = code >= 200 && self.final_code.is_none();
        let allowed = self.server.send_response(code, &bytes, Instant::now());
        if first_final {
            self.final_code = Some(code);
            // no new branches after the final; pushed phones that missed it get a notice
            self.tx = None;
            let caller_cancelled = self.caller_cancelled;
            if let Some(p) = self.push.as_deref_mut() {
                p.call_ended(&self.core, code, caller_cancelled);
            }
            self.call_ended(code);
            // the request is done with: its bytes and index are freed now, not when
            // the transaction's timers have run out
            self.req = None;
        }
        // late 2xx are forwarded even after a final: the caller ACKs and hangs up
        if allowed || (200..300).contains(&code) {
            crate::metrics::global().response_sent(self.method, code);
            if let Err(e) = self.core.transport.send(&self.src, bytes) {
                debug!(error = %e, code, "response not sent upstream");
            }
        }
    }

    /// The first final response went out: a BYE ends its dialog, an initial INVITE is
    /// no longer in setup and gets its log line.
    fn call_ended(&mut self, code: u16) {
        let Some(req) = self.req.as_deref() else {
            return;
        };
        if self.method == Some(Method::Bye) {
            self.core.dialogs.bye_answered(req, code);
        }
        if self.setup.take().is_none() {
            return; // not an initial INVITE
        }
        use super::call_log::{finished, Outcome};
        let outcome = match &self.push {
            _ if self.caller_cancelled => Outcome::Cancelled,
            _ if self.woke => Outcome::Woken,
            _ if (200..300).contains(&code) => Outcome::Answered,
            Some(p) if code == 480 && p.all_failed() => Outcome::PushFailed,
            Some(_) if code == 480 => Outcome::PushTimeout,
            _ => Outcome::Rejected,
        };
        finished(req, outcome, code, self.started, self.woken_after);
    }

    fn on_timers(&mut self, now: Instant) {
        if self.parked() && self.push.as_deref().is_some_and(|p| p.wake_at <= now) {
            self.unpark();
            let woken_pending = self.woke && self.branches.iter().any(|b| b.client.is_pending());
            if !self.server.is_final()
                && !self.got_2xx
                && !woken_pending
                && !self.branches.iter().any(|b| b.ringing)
            {
                // nobody woke in time and nothing rings: the caller hears the best
                // answer so far, or 480, now
                self.cancel_all(None, None);
                match self.best.take() {
                    Some((code, bytes)) if code != 503 => self.send_to_caller(code, bytes),
                    _ => self.answer_own(480, "Temporarily Unavailable"),
                }
            }
        }
        while let Some(a) = self.server.poll(now) {
            if let ServerAction::Retransmit(b) = a {
                let _ = self.core.transport.send(&self.src, b);
            }
        }
        let mut timer_c = Vec::new();
        for (i, b) in self.branches.iter_mut().enumerate() {
            while let Some(a) = b.client.poll(now) {
                match a {
                    ClientAction::Retransmit => {
                        let _ = self.core.transport.send(&b.flow, b.request.clone());
                    }
                    ClientAction::Timeout => {
                        if b.final_code.is_none() {
                            b.final_code = Some(408);
                        }
                    }
                    ClientAction::TimerC => timer_c.push(i),
                    ClientAction::Terminated => {}
                }
            }
            if let Some((bytes, c)) = b.cancel.as_deref_mut() {
                while let Some(a) = c.poll(now) {
                    if a == ClientAction::Retransmit {
                        let _ = self.core.transport.send(&b.flow, bytes.clone());
                    }
                }
            }
            if b.give_up_at.is_some_and(|t| t <= now) {
                b.give_up_at = None;
                b.client.terminate();
                if b.final_code.is_none() {
                    b.final_code = Some(487);
                }
            }
        }
        for i in timer_c {
            if self.branches[i].cancel.is_none() {
                self.send_cancel(i, None);
            }
            if self.branches[i].final_code.is_none() {
                self.branches[i].final_code = Some(408);
            }
        }
        self.maybe_finish();
    }
}

impl ForwardTask {
    /// Answers the admin API's [`CallEvent::Describe`] while this is an unanswered
    /// INVITE; otherwise drops the sender, which leaves the call out of the list.
    fn describe(&self, reply: tokio::sync::oneshot::Sender<CallView>) {
        if self.kind != Kind::Invite || self.server.is_final() || self.got_2xx {
            return;
        }
        let Some(req) = self.req.as_deref() else {
            return;
        };
        let pending = self.branches.iter().filter(|b| b.final_code.is_none());
        let ringing = pending.clone().any(|b| b.ringing);
        let state = match (ringing, self.parked()) {
            (true, _) => "ringing",
            (false, true) => "parked",
            (false, false) => "trying",
        };
        let _ = reply.send(CallView {
            call_id: req.call_id().to_string(),
            from: req.header(HeaderName::From).unwrap_or("").to_string(),
            to: req.header(HeaderName::To).unwrap_or("").to_string(),
            age_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            state,
            parked: self.parked(),
            aor: self.push.as_deref().map(|p| p.plan.aor.clone()),
            branches: self.branches.len(),
            pending_branches: pending.count(),
            pushed_devices: self.push.as_deref().map_or(0, |p| p.plan.devices.len()),
        });
    }
}

/// RFC 3261 §16.7 step 6: 6xx first, then the lowest class; 503 counts as 5xx.
fn rank(code: u16) -> u16 {
    if code >= 600 {
        0
    } else {
        code
    }
}

/// A 2xx for INVITE whose transaction is gone: pass it up statelessly to the address
/// the next Via names (RFC 3261 §16.7 step 5 requires 2xx to reach the caller).
pub fn forward_stray_2xx(core: &Arc<Core>, msg: Message, _flow: Flow) {
    let Some(v) = msg.values(HeaderName::Via).nth(1) else {
        return;
    };
    let Ok(via) = crate::sip::Via::parse(v) else {
        return;
    };
    if !via.is_udp() {
        return;
    }
    let ip = via.received().and_then(|r| r.parse().ok()).or_else(|| {
        via.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    });
    let port = via.rport().flatten().or(via.port).unwrap_or(5060);
    let Some(ip) = ip else { return };
    if let Some(f) = core.transport.udp_flow(SocketAddr::new(ip, port), None) {
        crate::metrics::global().response_sent(Some(Method::Invite), 200);
        let _ = core.transport.send(&f, pop_via(&msg));
    }
}
