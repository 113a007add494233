//! One REGISTER relayed to the upstream registrar: the task sends it (Path or
//! rewritten contacts), retransmits it, passes challenges and refusals back to the
//! phone, and on the upstream's 2xx stores the binding here, answers the phone with
//! the local view of its contacts and publishes the binding events that wake parked
//! calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, warn};

use super::{ok_for_phone, state_key, supports_path, upstream_contacts, Relayed, Rewrite};
use crate::proxy::data::{sleep_until, Next, TaskEvent};
use crate::proxy::edit::{forward_request, pop_via, RequestEdits};
use crate::proxy::register::contact_line;
use crate::proxy::returning::aor_param;
use crate::proxy::{next_hop, Core};
use crate::push::token::pns_name;
use crate::registrar::{
    unix_now_ms, Binding, Contacts, RegisterOutcome, RegisterRequest, StoreError,
};
use crate::sip::NameAddr;
use crate::sip::{HeaderName, Message, Uri};
use crate::transaction::{
    BranchGen, ClientAction, ClientTx, Kind, ServerAction, ServerTx, TxEvent,
};
use crate::transport::Flow;

pub(super) struct RegisterRelay {
    pub(super) core: Arc<Core>,
    pub(super) server: ServerTx,
    pub(super) msg: Message,
    pub(super) src: Flow,
    pub(super) local: SocketAddr,
    pub(super) key: u64,
    pub(super) req: RegisterRequest,
    /// The AOR's bindings when the REGISTER arrived (stale contacts to remove).
    pub(super) existing: Vec<Arc<Binding>>,
    pub(super) contacts: Option<Vec<String>>,
    pub(super) popped: Vec<std::ops::Range<usize>>,
    pub(super) tx: crate::transaction::TaskSender<TaskEvent>,
    pub(super) rx: crate::transaction::TaskReceiver<TaskEvent>,
}

struct Client {
    key: u64,
    flow: Flow,
    request: Bytes,
    tx: ClientTx,
}

impl RegisterRelay {
    pub(super) async fn run(mut self) {
        let mut client = match self.send().await {
            Ok(c) => Some(c),
            Err(why) => {
                debug!(error = %why, "REGISTER not relayed");
                self.answer_own_unless_final(503, "Service Unavailable");
                None
            }
        };
        loop {
            let deadline = [
                self.server.next_deadline(),
                client.as_ref().and_then(|c| c.tx.next_deadline()),
            ]
            .into_iter()
            .flatten()
            .min();
            if deadline.is_none() && self.server.is_final() {
                break;
            }
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(TxEvent::Response { msg, .. }) => {
                        let Some(c) = client.as_mut() else { continue };
                        let Some(code) = msg.code() else { continue };
                        if c.tx.on_response(code, Instant::now()) != crate::transaction::Disposition::Pass {
                            continue;
                        }
                        self.on_response(code, &msg).await;
                    }
                    Some(TxEvent::Retransmission) => {
                        if let Some(b) = self.server.on_retransmission() {
                            let _ = self.core.transport.send(&self.src, b);
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    while let Some(a) = self.server.poll(now) {
                        if let ServerAction::Retransmit(b) = a {
                            let _ = self.core.transport.send(&self.src, b);
                        }
                    }
                    if let Some(c) = client.as_mut() {
                        while let Some(a) = c.tx.poll(now) {
                            match a {
                                ClientAction::Retransmit => {
                                    let _ = self.core.transport.send(&c.flow, c.request.clone());
                                }
                                ClientAction::Timeout => {
                                    debug!("upstream did not answer the REGISTER");
                                    self.answer_own_unless_final(408, "Request Timeout");
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        if let Some(c) = client {
            self.core.tx.remove_client(c.key);
        }
        self.core.tx.remove_server(self.key);
    }

    /// Builds the relayed REGISTER and sends it.
    async fn send(&mut self) -> Result<Client, String> {
        let flow = next_hop::resolve(&self.core, &Next::Upstream, Some(self.local))
            .await
            .map_err(|e| e.to_string())?;
        let out_local = self.core.transport.local_addr(&flow).unwrap_or(self.local);
        let hostport = self.core.advertised(out_local, flow.remote());
        let mut extra = Vec::new();
        if self.core.settings.relay.contact_rewrite {
            // no Path: the upstream gets sipwake's own contact for the phone's flow
            let rw = Rewrite {
                hostport: &hostport,
                transport: flow.via_transport(),
            };
            if self.contacts.is_some() {
                self.contacts = upstream_contacts(
                    &self.core,
                    &self.msg,
                    &self.req,
                    &self.existing,
                    Some((&rw, self.src)),
                )
                .map_err(|e| e.to_string())?;
            }
        } else {
            let token = self.core.tokens.encode(Some(self.src), None);
            let tp = match flow.via_transport() {
                "UDP" => "",
                "TLS" => ";transport=tls",
                _ => ";transport=tcp",
            };
            let aor = aor_param(&self.req.aor);
            extra.push(format!("Path: <sip:{token}@{hostport};lr;ob{tp}{aor}>"));
            if !supports_path(&self.msg) {
                // RFC 3327: registrars refuse a Path the UA did not agree to; most
                // phones don't send it, so sipwake adds it for them
                extra.push("Supported: path".into());
            }
        }
        let mut strip: Vec<HeaderName> = Vec::new();
        if let Some(lines) = &self.contacts {
            strip.push(HeaderName::Contact);
            strip.push(HeaderName::Expires);
            extra.extend(lines.iter().cloned());
        }
        let push = &self.core.settings.push;
        let strip_named: Vec<&str> = if self.core.settings.relay.forward_push_params {
            Vec::new()
        } else {
            vec![push.token_header.as_str()]
        };
        let branch = self.core.branches.next(BranchGen::loop_hash(&self.msg));
        let edits = RequestEdits {
            ruri: None,
            via: format!(
                "SIP/2.0/{} {hostport};branch={branch};rport",
                flow.via_transport()
            ),
            src: Some(self.src.remote()),
            pop_routes: self.popped.clone(),
            record_route: Vec::new(),
            push_routes: Vec::new(),
            strip: &strip,
            strip_named: &strip_named,
            extra: &extra,
        };
        let request = forward_request(&self.msg, &edits);
        let tx = self.core.tx.client_key(&branch, "REGISTER");
        self.core.tx.insert_client(tx, self.tx.clone(), 0);
        let c = Client {
            key: tx,
            flow,
            request: request.clone(),
            tx: ClientTx::new(
                Kind::NonInvite,
                !flow.is_udp(),
                self.core.timers,
                Instant::now(),
            ),
        };
        if let Err(e) = self.core.transport.send(&flow, request) {
            self.core.tx.remove_client(tx);
            return Err(e.to_string());
        }
        Ok(c)
    }

    async fn on_response(&mut self, code: u16, resp: &Message) {
        if code < 200 {
            if code > 100 && !self.server.is_final() {
                self.send_answer(code, pop_via(resp));
            }
            return;
        }
        if code >= 300 {
            // challenges and refusals pass through untouched; nothing is stored
            self.send_answer(code, pop_via(resp));
            return;
        }
        self.check_granted(resp);
        crate::proxy::limits::charge_aor(&self.core, &self.src, &self.req.aor);
        let mut req = self.req.clone();
        req.now_ms = unix_now_ms();
        let request_ms = req.now_ms;
        let specs = match &req.contacts {
            Contacts::List(l) => l.clone(),
            _ => Vec::new(),
        };
        // published when this scope ends, after the phone's answer: the bindings the
        // upstream accepted wake the calls parked for them (see `park`)
        let (outcome, _events) = self.core.registrar.register_held(req).await;
        match outcome {
            Ok(RegisterOutcome::Ok { bindings }) => {
                self.remember(&specs, request_ms);
                let now_ms = unix_now_ms();
                self.note_anchor(&bindings, now_ms);
                let mut lines: Vec<String> = bindings
                    .iter()
                    .filter(|b| b.is_live(now_ms))
                    .map(|b| contact_line(b, now_ms))
                    .collect();
                if let Some(p) = self
                    .msg
                    .values(HeaderName::Contact)
                    .filter_map(|v| NameAddr::parse(v, "Contact").ok())
                    .filter_map(|na| Uri::parse(na.uri).ok().and_then(|u| pns_name(u.params)))
                    .next()
                {
                    lines.push(format!("Feature-Caps: *;+sip.pns=\"{p}\";+sip.pnsreg"));
                }
                let bytes = ok_for_phone(resp, &lines, supports_path(&self.msg));
                self.send_answer(code, bytes);
            }
            Ok(RegisterOutcome::IntervalTooBrief { min_expires }) => {
                let line = format!("Min-Expires: {min_expires}");
                self.answer_own(423, "Interval Too Brief", &[&line]);
            }
            Ok(RegisterOutcome::Invalid(reason)) => self.answer_own(400, reason, &[]),
            Ok(RegisterOutcome::OutOfOrder) => self.answer_own(400, "CSeq out of order", &[]),
            Err(e @ StoreError::Redis(_)) => {
                // several nodes, Redis unreachable or slow: the phone's retry (here or
                // at another node) relays again (RFC 3261 §21.5.4)
                warn!(error = %e, "shared binding store failed");
                self.answer_own(503, "Service Unavailable", &["Retry-After: 5"]);
            }
            Err(e) => {
                warn!(error = %e, "binding store failed");
                self.answer_own(500, "Store Failure", &["Retry-After: 5"]);
            }
        }
    }

    /// A TCP/TLS connection carrying a live binding is spared by the idle timeout;
    /// with several nodes the timeout cannot ask Redis, so it is told until when the
    /// bindings on this connection live.
    fn note_anchor(&self, bindings: &[Arc<Binding>], now_ms: u64) {
        if self.core.registrar.shared().is_some() && !self.src.is_udp() {
            let me = self.src.to_string();
            let until = bindings
                .iter()
                .filter(|b| b.is_live(now_ms) && b.flow() == Some(me.as_str()))
                .map(|b| b.expires_at)
                .max()
                .unwrap_or(0);
            let until_ms = until.saturating_mul(1000);
            self.core
                .anchors
                .note_until(&self.src, &self.req.aor, until_ms);
        }
        if !bindings.is_empty() {
            self.core.anchors.note(&self.src, &self.req.aor);
        }
    }

    /// Warns (once) when the upstream granted a contact less time than asked: a PBX
    /// that caps the expiry drops a sleeping phone's contact while sipwake would still
    /// push it.
    fn check_granted(&self, resp: &Message) {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let Some(sent) = &self.contacts else { return };
        let header: Option<u32> = resp
            .header(HeaderName::Expires)
            .and_then(|v| v.trim().parse().ok());
        let granted: Vec<(String, u32)> = resp
            .values(HeaderName::Contact)
            .filter_map(|v| NameAddr::parse(v, "Contact").ok())
            .filter_map(|na| {
                let key = Uri::parse(na.uri).ok()?.match_key();
                let e = crate::sip::param_in(na.params, "expires")
                    .and_then(|e| e.parse().ok())
                    .or(header)?;
                Some((key, e))
            })
            .collect();
        for line in sent {
            let Some(v) = line.strip_prefix("Contact: ") else {
                continue;
            };
            let Ok(na) = NameAddr::parse(v, "Contact") else {
                continue;
            };
            let Some(asked) = crate::sip::param_in(na.params, "expires")
                .and_then(|e| e.parse::<u32>().ok())
                .filter(|e| *e > 0)
            else {
                continue;
            };
            let Ok(key) = Uri::parse(na.uri).map(|u| u.match_key()) else {
                continue;
            };
            let Some((_, got)) = granted.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            if *got < asked && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                warn!(
                    asked,
                    granted = *got,
                    "the upstream registrar shortened a relayed contact's expiry: a sleeping \
                     phone drops out of the PBX before sipwake stops pushing it; raise the \
                     PBX's maximum (Asterisk: maximum_expiration on the AOR; Kamailio: registrar \
                     max_expires) to cover relay.upstream_expires and push.binding_ttl_secs"
                );
            }
        }
    }

    /// Notes what the upstream accepted, for the refresh throttle.
    fn remember(&self, specs: &[crate::registrar::ContactSpec], at_ms: u64) {
        let mut state = self.core.relay.lock();
        for s in specs {
            let k = state_key(&self.req.aor, &s.binding_key());
            let expires = s.expires.or(self.req.expires_header);
            if expires == Some(0) {
                state.remove(&k);
                continue;
            }
            state.insert(
                k,
                Relayed {
                    at_ms,
                    contact: s.uri.clone(),
                    flow: self.req.flow.clone(),
                    call_id: self.req.call_id.clone(),
                    token: s.token_key.clone(),
                    expires,
                },
            );
        }
        if matches!(self.req.contacts, Contacts::Star) {
            let prefix = format!("{}\0", self.req.aor);
            state.retain(|k, _| !k.starts_with(&prefix));
        }
    }

    fn send_answer(&mut self, code: u16, bytes: Bytes) {
        if self.server.send_response(code, &bytes, Instant::now()) {
            crate::metrics::global().response_sent(Some(crate::sip::Method::Register), code);
            if let Err(e) = self.core.transport.send(&self.src, bytes) {
                debug!(error = %e, code, "REGISTER response not sent");
            }
        }
    }

    fn answer_own(&mut self, code: u16, reason: &str, extra: &[&str]) {
        let resp = crate::sip::response(&self.msg, self.src.remote(), code, reason, extra, None);
        self.send_answer(code, resp);
    }

    fn answer_own_unless_final(&mut self, code: u16, reason: &str) {
        if !self.server.is_final() {
            self.answer_own(code, reason, &[]);
        }
    }
}
