//! One task per forwarded transaction: it owns the server transaction and every
//! client branch of the fork, so responses, CANCEL, retransmissions and timers are
//! handled in one place and never race (RFC 3261 §16.6–16.10, RFC 6026).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tracing::{debug, debug_span, Instrument};

use super::data::{Next, OwnRoutes, PushPlan, Target};
use super::edit::{cancel_or_ack, forward_request, pop_via, RequestEdits};
use super::park::{ParkGuard, Woken};
use super::Core;
use crate::metrics::{count_push, PushKind};
use crate::push::{CancelReason, PushResult, PushSender};
use crate::registrar::nodes::Owner;
use crate::registrar::{unix_now_ms, Binding};
use crate::sip::{builder, HeaderName, Message, Method, Uri};
use crate::transaction::{
    BranchGen, ClientAction, ClientTx, Disposition, Kind, ServerAction, ServerEntry, ServerTx,
    TxEvent,
};
use crate::transport::{Flow, SendError};

/// Why a next hop could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The URI is not one we can send to.
    #[error("cannot route to {0}")]
    Unroutable(String),
    /// Sending or connecting failed.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Turns a next hop into a flow, resolving names and connecting TCP or TLS as needed.
/// A hop that asks for TLS (`sips:`, `transport=tls`) is never reached without it.
pub async fn resolve(
    core: &Arc<Core>,
    next: &Next,
    prefer: Option<SocketAddr>,
) -> Result<Flow, ResolveError> {
    use crate::config::TransportKind;
    // the host the TLS certificate must name (a `maddr` only changes the address)
    let mut tls_name = None;
    let (host, port, kind) = match next {
        Next::Flow(f) => return Ok(*f),
        Next::Upstream => {
            let up = core
                .settings
                .upstream
                .uri
                .as_ref()
                .ok_or_else(|| ResolveError::Unroutable("upstream".into()))?;
            (up.host.clone(), up.port, up.transport)
        }
        Next::Uri(u) => {
            let uri = Uri::parse(u).map_err(|_| ResolveError::Unroutable(u.clone()))?;
            tls_name = Some(uri.host_bare().to_string());
            let host = uri
                .param("maddr")
                .filter(|m| !m.is_empty())
                .unwrap_or(uri.host_bare())
                .to_string();
            let kind = if uri.wants_tls() {
                TransportKind::Tls
            } else if uri
                .transport()
                .is_some_and(|t| t.eq_ignore_ascii_case("tcp"))
            {
                TransportKind::Tcp
            } else {
                TransportKind::Udp
            };
            (host, uri.port_or_default(), kind)
        }
    };
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        // boxed, like the connects below: these futures are large, and inline they would
        // grow every forwarding task (a parked call is one) whether it uses them or not
        Err(_) => Box::pin(tokio::net::lookup_host((host.as_str(), port)))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or(ResolveError::Unroutable(host.clone()))?,
    };
    if core.is_me(&addr.ip().to_string(), Some(addr.port())) {
        // sending to ourselves would loop until Max-Forwards runs out
        return Err(ResolveError::Unroutable(format!("{addr} (sipwake itself)")));
    }
    match kind {
        TransportKind::Udp => core
            .transport
            .udp_flow(addr, prefer)
            .ok_or(ResolveError::Send(SendError::NoSocket(addr))),
        TransportKind::Tcp => {
            let handler = core.handler().ok_or(ResolveError::Unroutable(host))?;
            Ok(Box::pin(core.transport.connect_tcp(addr, handler)).await?)
        }
        TransportKind::Tls => {
            let name = tls_name.unwrap_or_else(|| host.clone());
            let handler = core.handler().ok_or(ResolveError::Unroutable(host))?;
            Ok(Box::pin(core.transport.connect_tls(addr, &name, handler)).await?)
        }
    }
}

struct Branch {
    key: u64,
    cancel_key: u64,
    flow: Flow,
    request: Bytes,
    client: ClientTx,
    /// CANCEL sent for this branch (its own client transaction).
    cancel: Option<(Bytes, ClientTx)>,
    /// Cancel as soon as the branch sends a provisional.
    cancel_wanted: Option<Option<&'static str>>,
    /// Final status seen (or made up: 408 on timeout, 487 when cancelled silent).
    final_code: Option<u16>,
    /// Give up waiting for a cancelled branch's final at this time.
    give_up_at: Option<Instant>,
    /// The pushed device this branch reaches, if any.
    device: Option<usize>,
    /// Binding key of the branch's device, if it came from a binding.
    binding_key: Option<String>,
    /// A provisional other than 100 arrived: the phone is ringing.
    ringing: bool,
}

/// A woken phone registered on another node, the way to that node resolved.
struct WokenVia {
    binding: Arc<Binding>,
    /// To the node holding the phone's flow.
    flow: Flow,
    /// Route set: that node (with the flow token), then the binding's Path.
    path: Vec<String>,
}

/// One push finished.
struct PushDone {
    device: usize,
    result: PushResult,
}

/// The push side of a call while it runs.
struct PushState {
    plan: PushPlan,
    /// Parked until the wake deadline (or the final response).
    guard: Option<ParkGuard>,
    wake_at: Instant,
    pending: usize,
    delivered: usize,
}

struct Fwd {
    core: Arc<Core>,
    req: Message,
    src: Flow,
    key: u64,
    kind: Kind,
    server: ServerTx,
    branches: Vec<Branch>,
    best: Option<(u16, Bytes)>,
    got_2xx: bool,
    rx: UnboundedReceiver<TxEvent>,
    /// Kept while new branches may start (woken phones); dropped at the final.
    tx: Option<UnboundedSender<TxEvent>>,
    local: SocketAddr,
    popped: Vec<std::ops::Range<usize>>,
    /// The request came from another node of the cluster (its hint passes).
    from_node: bool,
    record_route: bool,
    loop_hash: u64,
    untrusted: bool,
    push: Option<PushState>,
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
    let (tx, rx) = mpsc::unbounded_channel();
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
    let fwd = Fwd {
        core: core.clone(),
        loop_hash: BranchGen::loop_hash(&msg),
        req: msg,
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

impl Fwd {
    async fn run(mut self, targets: Vec<Target>, plan: Option<Box<PushPlan>>) {
        if let Some(plan) = plan {
            if !self.start_pushes(*plan) {
                self.finish_task();
                return;
            }
        }
        let sips = self.sips();
        for t in targets {
            let flow = match resolve(&self.core, &t.next, Some(self.local)).await {
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
            self.send_final_made(480, "Temporarily Unavailable");
        }
        self.maybe_finish();
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
        self.finish_task();
    }

    /// An initial `sips:` request: each branch must go over TLS (RFC 5630). In-dialog
    /// requests follow the legs the dialog was set up on.
    fn sips(&self) -> bool {
        self.req.to_tag().is_empty() && super::data::sips_request(&self.req)
    }

    fn finish_task(&mut self) {
        for b in &self.branches {
            self.core.tx.remove_client(b.key);
            self.core.tx.remove_client(b.cancel_key);
        }
        self.core.tx.remove_server(self.key);
    }

    /// Parks the call and sends one push per device. False if the call was refused.
    fn start_pushes(&mut self, mut plan: PushPlan) -> bool {
        let Some(tx) = self.tx.clone() else {
            return false;
        };
        let guard = match self.core.parked.park(&plan.aor, tx.clone()) {
            Ok(g) => g,
            Err(e) => {
                debug!(error = %e, "call not parked");
                self.send_final_made(503, "Service Unavailable");
                return false;
            }
        };
        super::cluster::parked(&self.core, &plan.aor);
        for (i, d) in plan.devices.iter_mut().enumerate() {
            d.pushed = true;
            debug!(aor = %plan.aor, token = d.info.short_token(), provider = %d.info.provider, "push");
            let fut = self.core.pusher().call(&d.info, &plan.call);
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = fut.await;
                let _ = tx.send(TxEvent::Upper(Box::new(PushDone { device: i, result })));
            });
        }
        let pending = plan.devices.len();
        // the wake clock starts at parking, not when the push returns
        self.push = Some(PushState {
            plan,
            guard: Some(guard),
            wake_at: Instant::now() + self.core.settings.push.wake_timeout,
            pending,
            delivered: 0,
        });
        true
    }

    /// Starts one client branch over `flow`.
    fn start_branch(
        &mut self,
        flow: Flow,
        ruri: Option<&str>,
        path: &[String],
        device: Option<usize>,
        binding_key: Option<String>,
    ) {
        let Some(tx) = self.tx.clone() else { return };
        let local = self.local;
        let out_local = self.core.transport.local_addr(&flow).unwrap_or(local);
        let branch = self.core.branches.next(self.loop_hash);
        let mut rr = Vec::new();
        if self.record_route {
            let token = self.core.tokens.encode(Some(self.src), Some(flow));
            let sips = self.sips();
            rr.push(record_route(
                &token,
                &self.core.advertised(out_local),
                &flow,
                sips,
            ));
            // RFC 5658: one entry per side when the legs differ in transport or address
            if out_local != local || flow.via_transport() != self.src.via_transport() {
                rr.push(record_route(
                    &token,
                    &self.core.advertised(local),
                    &self.src,
                    sips,
                ));
            }
        }
        let push = &self.core.settings.push;
        let extra: Vec<String> = self
            .push
            .as_ref()
            .map(|p| vec![format!("{}: {}", push.hint_header, p.plan.hint)])
            .unwrap_or_default();
        // a hint or token from outside never passes: only ours is believed
        let strip_named: &[&str] = if self.from_node {
            // another node pushed and woke this phone: its hint is the push's
            &[push.token_header.as_str()]
        } else {
            &[push.hint_header.as_str(), push.token_header.as_str()]
        };
        let strip: &[HeaderName] = if self.untrusted {
            &[HeaderName::PAssertedIdentity]
        } else {
            &[]
        };
        let edits = RequestEdits {
            ruri,
            via: format!(
                "SIP/2.0/{} {};branch={branch};rport",
                flow.via_transport(),
                self.core.advertised(out_local)
            ),
            src: Some(self.src.remote()),
            pop_routes: self.popped.clone(),
            record_route: rr,
            push_routes: path.to_vec(),
            strip,
            strip_named,
            extra: &extra,
        };
        let request = forward_request(&self.req, &edits);
        if request.len() > 1300 && flow.is_udp() {
            debug!(
                len = request.len(),
                "forwarded request over 1300 bytes on UDP"
            );
        }
        let idx = self.branches.len();
        let key = self.core.tx.client_key(&branch, self.req.method_str());
        let cancel_key = self.core.tx.client_key(&branch, "CANCEL");
        self.core.tx.insert_client(key, tx.clone(), idx);
        if self.kind == Kind::Invite {
            self.core.tx.insert_client(cancel_key, tx, idx);
        }
        let now = Instant::now();
        let mut b = Branch {
            key,
            cancel_key,
            flow,
            request: request.clone(),
            client: ClientTx::new(self.kind, !flow.is_udp(), self.core.timers, now),
            cancel: None,
            cancel_wanted: None,
            final_code: None,
            give_up_at: None,
            device,
            binding_key,
            ringing: false,
        };
        if let Err(e) = self.core.transport.send(&flow, request) {
            debug!(error = %e, "branch send failed");
            b.client.terminate();
            b.final_code = Some(if matches!(e, SendError::FlowFailed) {
                430
            } else {
                503
            });
        } else if let (Some(d), Some(p)) = (device, self.push.as_mut()) {
            if let Some(dev) = p.plan.devices.get_mut(d) {
                dev.got_invite = true;
            }
        }
        self.branches.push(b);
    }

    /// A binding of the parked AOR appeared or was refreshed: hand it the call.
    fn on_woken(&mut self, binding: Arc<Binding>) {
        if self.server.is_final() || self.got_2xx || self.declined {
            return; // a tombstone: the call is over, a late phone gets nothing
        }
        let Some(p) = self.push.as_ref() else { return };
        if binding.aor != p.plan.aor || !binding.is_live(unix_now_ms()) {
            return;
        }
        let flow = match self.core.registrar.owner(&binding) {
            Owner::Here => binding.flow.as_deref().and_then(|f| f.parse::<Flow>().ok()),
            Owner::There(uri) => {
                // registered on another node: the call goes through it, once its
                // address is resolved (off this task)
                let Some(t) = super::wake::via_owner(&self.core, &binding, &uri) else {
                    return;
                };
                let (core, tx) = (self.core.clone(), self.tx.clone());
                tokio::spawn(async move {
                    match resolve(&core, &t.next, None).await {
                        Ok(flow) => {
                            if let Some(tx) = tx {
                                let via = WokenVia {
                                    binding,
                                    flow,
                                    path: t.path,
                                };
                                let _ = tx.send(TxEvent::Upper(Box::new(via)));
                            }
                        }
                        Err(e) => debug!(error = %e, "owner of a woken phone unreachable"),
                    }
                });
                return;
            }
            Owner::Gone => None,
        };
        let Some(flow) = flow else {
            return;
        };
        let path = binding.path.clone();
        self.hand_over(binding, flow, path);
    }

    /// Starts the branch of a woken phone's binding: over its flow, or (registered on
    /// another node) over `flow` to that node with `path` naming it first.
    fn hand_over(&mut self, binding: Arc<Binding>, flow: Flow, path: Vec<String>) {
        if self.server.is_final() || self.got_2xx || self.declined {
            return;
        }
        let Some(p) = self.push.as_ref() else { return };
        if !flow.is_tls() && self.sips() {
            return; // a woken phone without TLS cannot take a sips: call
        }
        let token = crate::push::PushInfo::from_json(binding.push.as_deref().unwrap_or(""))
            .map(|i| i.token);
        let device = p.plan.devices.iter().position(|d| {
            d.key == binding.key || token.as_deref().is_some_and(|t| t == d.info.token)
        });
        // one branch per device: same flow adds nothing, a new flow replaces the stale one
        let mut stale = Vec::new();
        for (i, b) in self.branches.iter().enumerate() {
            let same_device = b.binding_key.as_deref() == Some(binding.key.as_str())
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
        debug!(aor = %binding.aor, "woken phone gets the call");
        self.start_branch(
            flow,
            Some(&binding.contact),
            &path,
            device,
            Some(binding.key.clone()),
        );
        if !self.woke {
            self.woken_after = self.push.as_ref().map(|p| {
                let parked_at = p.wake_at - self.core.settings.push.wake_timeout;
                parked_at.elapsed()
            });
        }
        self.woke = true;
    }

    /// Abandons a branch whose device moved to a new flow.
    fn drop_branch(&mut self, i: usize) {
        if self.branches[i].client.heard_back() {
            self.send_cancel(i, None);
        } else {
            let b = &mut self.branches[i];
            b.client.terminate();
        }
        let b = &mut self.branches[i];
        if b.final_code.is_none() {
            b.final_code = Some(487);
        }
    }

    fn on_push_done(&mut self, done: PushDone) {
        let Some(p) = self.push.as_mut() else { return };
        p.pending = p.pending.saturating_sub(1);
        let Some(dev) = p.plan.devices.get_mut(done.device) else {
            return;
        };
        dev.failed = !done.result.is_sent();
        crate::metrics::global().push_done(dev.info.provider, PushKind::Call, &done.result);
        let dev = dev.clone();
        let aor = p.plan.aor.clone();
        match &done.result {
            PushResult::Sent => p.delivered += 1,
            PushResult::SentOtherEnv { sandbox } => {
                p.delivered += 1;
                let mut info = dev.info.clone();
                info.sandbox = *sandbox;
                info.env_guessed = false;
                self.core
                    .registrar
                    .set_push(&aor, &dev.key, Some(info.to_json()), None);
            }
            PushResult::DeadToken { timestamp_ms } => {
                // APNs: only a death after the token's last REGISTER counts
                let removed = self
                    .core
                    .registrar
                    .set_push(&aor, &dev.key, None, *timestamp_ms);
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
        let all_failed = p.pending == 0 && p.delivered == 0;
        if all_failed && self.branches.iter().all(|b| b.final_code.is_some()) {
            // nobody can wake and nothing else rings: no point in waiting
            self.unpark();
        }
        self.maybe_finish();
    }

    fn unpark(&mut self) {
        if let Some(p) = self.push.as_mut() {
            p.guard = None;
        }
    }

    fn parked(&self) -> bool {
        self.push.as_ref().is_some_and(|p| p.guard.is_some())
    }

    /// Cancel notices to pushed devices that never got the INVITE.
    fn notify_ended(&mut self, code: u16) {
        let Some(p) = self.push.as_mut() else { return };
        p.guard = None;
        let reason = if self.caller_cancelled {
            CancelReason::CallerCancelled
        } else if (200..300).contains(&code) {
            CancelReason::AnsweredElsewhere
        } else if code == 480 || code == 408 {
            CancelReason::Timeout
        } else {
            CancelReason::DeclinedElsewhere
        };
        // a device whose push failed or whose token just died gets no notice either
        for d in p
            .plan
            .devices
            .iter()
            .filter(|d| d.pushed && !d.failed && !d.got_invite)
        {
            debug!(token = d.info.short_token(), ?reason, "cancel notice");
            let notice = self.core.pusher().cancel(&d.info, &p.plan.call, reason);
            tokio::spawn(count_push(d.info.provider, PushKind::Cancel, notice));
        }
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
                        .as_ref()
                        .is_none_or(|(_, c)| c.next_deadline().is_none())
            })
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d = self.server.next_deadline();
        if self.parked() {
            let w = self.push.as_ref().map(|p| p.wake_at);
            d = match (d, w) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for b in &self.branches {
            for x in [
                b.client.next_deadline(),
                b.cancel.as_ref().and_then(|(_, c)| c.next_deadline()),
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

    fn on_event(&mut self, ev: TxEvent) {
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
            TxEvent::Upper(ev) => match ev.downcast::<Woken>() {
                Ok(w) => self.on_woken(w.0),
                Err(ev) => match ev.downcast::<PushDone>() {
                    Ok(done) => self.on_push_done(*done),
                    Err(ev) => match ev.downcast::<WokenVia>() {
                        Ok(v) => {
                            let WokenVia {
                                binding,
                                flow,
                                path,
                            } = *v;
                            self.hand_over(binding, flow, path)
                        }
                        Err(ev) => self.describe(ev),
                    },
                },
            },
        }
    }

    fn on_response(&mut self, idx: usize, msg: Message, now: Instant) {
        let Some(code) = msg.code() else { return };
        let is_cancel = msg.cseq().1 == "CANCEL";
        let Some(b) = self.branches.get_mut(idx) else {
            return;
        };
        if is_cancel {
            if let Some((_, c)) = b.cancel.as_mut() {
                c.on_response(code, now);
            }
            return;
        }
        match b.client.on_response(code, now) {
            Disposition::Absorb => {}
            Disposition::Ack => {
                let ack = make_ack(&b.request, &msg);
                let _ = self.core.transport.send(&b.flow, ack);
            }
            Disposition::PassAndAck => {
                let ack = make_ack(&b.request, &msg);
                let _ = self.core.transport.send(&b.flow, ack);
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
                        self.send_upstream(code, pop_via(&msg));
                    }
                } else {
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
            self.send_upstream(code, bytes);
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
        } else if self
            .push
            .as_ref()
            .is_some_and(|p| p.plan.devices.iter().all(|d| d.got_invite))
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
            Some((503, _)) => self.send_final_made(500, "Server Internal Error"),
            Some((code, bytes)) => self.send_upstream(code, bytes),
            None if self.caller_cancelled => self.send_final_made(487, "Request Terminated"),
            None if self.push.is_some() => self.send_final_made(480, "Temporarily Unavailable"),
            None if self.branches.iter().any(|b| b.final_code == Some(487)) => {
                self.send_final_made(487, "Request Terminated")
            }
            None if self.branches.iter().any(|b| b.final_code == Some(430)) => {
                self.send_final_made(480, "Temporarily Unavailable")
            }
            None if !self.branches.is_empty() => self.send_final_made(408, "Request Timeout"),
            None => {}
        }
    }

    fn send_final_made(&mut self, code: u16, reason: &str) {
        let resp = builder::response(&self.req, self.src.remote(), code, reason, &[], None);
        self.send_upstream(code, resp);
    }

    fn send_upstream(&mut self, code: u16, bytes: Bytes) {
        let first_final = code >= 200 && self.final_code.is_none();
        let allowed = self.server.send_response(code, &bytes, Instant::now());
        if first_final {
            self.final_code = Some(code);
            // no new branches after the final; pushed phones that missed it get a notice
            self.tx = None;
            self.notify_ended(code);
            self.call_ended(code);
        }
        // late 2xx are forwarded even after a final: the caller ACKs and hangs up
        if allowed || (200..300).contains(&code) {
            crate::metrics::global().response_sent(self.req.method(), code);
            if let Err(e) = self.core.transport.send(&self.src, bytes) {
                debug!(error = %e, code, "response not sent upstream");
            }
        }
    }

    /// The first final response went out: a BYE ends its dialog, an initial INVITE is
    /// no longer in setup and gets its log line.
    fn call_ended(&mut self, code: u16) {
        if self.req.method() == Some(Method::Bye) {
            self.core.dialogs.bye_answered(&self.req, code);
        }
        if self.setup.take().is_none() {
            return; // not an initial INVITE
        }
        use super::calllog::{finished, Outcome};
        let outcome = match &self.push {
            _ if self.caller_cancelled => Outcome::Cancelled,
            _ if self.woke => Outcome::Woken,
            _ if (200..300).contains(&code) => Outcome::Answered,
            Some(p) if code == 480 && p.delivered == 0 && p.pending == 0 => Outcome::PushFailed,
            Some(_) if code == 480 => Outcome::PushTimeout,
            _ => Outcome::Rejected,
        };
        finished(&self.req, outcome, code, self.started, self.woken_after);
    }

    fn cancel_all(&mut self, except: Option<usize>, reason: Option<&'static str>) {
        let now = Instant::now();
        for i in 0..self.branches.len() {
            if Some(i) == except {
                continue;
            }
            let b = &mut self.branches[i];
            if !b.client.is_pending() || b.cancel.is_some() {
                continue;
            }
            if b.client.heard_back() {
                self.send_cancel(i, reason);
            } else {
                // RFC 3261 §9.1: no CANCEL before a provisional; don't hold the caller for it
                b.cancel_wanted = Some(reason);
                if b.final_code.is_none() {
                    b.final_code = Some(487);
                }
                b.give_up_at = Some(now + self.core.timers.t64());
            }
        }
    }

    fn send_cancel(&mut self, idx: usize, reason: Option<&str>) {
        let now = Instant::now();
        let timers = self.core.timers;
        let b = &mut self.branches[idx];
        let Ok(fwd) = Message::parse(b.request.clone(), true) else {
            return;
        };
        let cancel = cancel_or_ack(&fwd, "CANCEL", None, reason);
        let _ = self.core.transport.send(&b.flow, cancel.clone());
        b.cancel = Some((
            cancel,
            ClientTx::new(Kind::NonInvite, !b.flow.is_udp(), timers, now),
        ));
        b.give_up_at = Some(now + timers.t64());
    }

    fn on_timers(&mut self, now: Instant) {
        if self.parked() && self.push.as_ref().is_some_and(|p| p.wake_at <= now) {
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
                    Some((code, bytes)) if code != 503 => self.send_upstream(code, bytes),
                    _ => self.send_final_made(480, "Temporarily Unavailable"),
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
            if let Some((bytes, c)) = b.cancel.as_mut() {
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

impl Fwd {
    /// Answers the admin API's [`super::calls::Describe`] while this is an unanswered
    /// INVITE; otherwise drops it, which leaves the call out of the list.
    fn describe(&self, ev: Box<dyn std::any::Any + Send>) {
        let Ok(d) = ev.downcast::<super::calls::Describe>() else {
            return;
        };
        if self.kind != Kind::Invite || self.server.is_final() || self.got_2xx {
            return;
        }
        let pending = self.branches.iter().filter(|b| b.final_code.is_none());
        let ringing = pending.clone().any(|b| b.ringing);
        let state = match (ringing, self.parked()) {
            (true, _) => "ringing",
            (false, true) => "parked",
            (false, false) => "trying",
        };
        let _ = d.0.send(super::calls::CallView {
            call_id: self.req.call_id().to_string(),
            from: self.req.header(HeaderName::From).unwrap_or("").to_string(),
            to: self.req.header(HeaderName::To).unwrap_or("").to_string(),
            age_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            state,
            parked: self.parked(),
            aor: self.push.as_ref().map(|p| p.plan.aor.clone()),
            branches: self.branches.len(),
            pending_branches: pending.count(),
            pushed_devices: self.push.as_ref().map_or(0, |p| p.plan.devices.len()),
        });
    }
}

/// Our Record-Route value for one leg: `sips:` for the TLS leg of a `sips:` dialog
/// (RFC 5630: its route set must be all SIPS), otherwise `sip:` with the leg's
/// transport (`;transport=tls` for other TLS legs, as phones expect).
fn record_route(token: &str, hostport: &str, leg: &Flow, sips: bool) -> String {
    if sips && leg.is_tls() {
        format!("<sips:{token}@{hostport};lr>")
    } else {
        format!(
            "<sip:{token}@{hostport};transport={};lr>",
            leg.via_transport().to_ascii_lowercase()
        )
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

fn make_ack(request: &Bytes, resp: &Message) -> Bytes {
    match Message::parse(request.clone(), true) {
        Ok(fwd) => cancel_or_ack(&fwd, "ACK", resp.header(HeaderName::To), None),
        Err(_) => Bytes::new(),
    }
}

async fn sleep_until(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
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
