//! Relay mode (`registrar.mode = "relay"`): sipwake as the edge in front of a
//! registrar/PBX that authenticates users and owns the dialplan.
//!
//! - A phone's REGISTER goes to `upstream.uri` (Request-URI untouched, for digest)
//!   with `Path: <sip:TOKEN@sipwake;lr;ob>` naming the phone's flow and `path` in
//!   `Supported`; its contacts are sent without push parameters and with
//!   `relay.upstream_expires`, plus `;expires=0` for the previous contact of a device
//!   that came back from a new address. Challenges and every other non-2xx pass
//!   through; only the upstream's 2xx stores the binding here (with its push info),
//!   answers the phone with the local view of its contacts and wakes parked calls.
//! - A refresh that changes nothing, from the same flow and registration, within
//!   `relay.refresh_throttle_secs` of the last relayed one, is answered here (as
//!   OpenSIPS' mid_registrar does), so the upstream binding stays long while the
//!   phone refreshes as often as it likes.
//! - With `relay.contact_rewrite` (PBXs without Path support) there is no Path:
//!   each contact goes up as `<sip:TOKEN@sipwake;transport=…>` (the phone's header
//!   parameters kept), removals and stale contacts in that form too; the phone's 2xx
//!   lists its own contacts.
//! - Requests from the upstream that come back along the Path, or to a rewritten
//!   contact, carry the flow token: they go to the phone's binding through the push
//!   rules of local mode, with the phone's contact as Request-URI.
//! - Requests from phones go to the upstream with Record-Route.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tracing::{debug, debug_span, warn, Instrument};

use super::data::{Decision, Next, OwnRoutes, Target};
use super::edit::{forward_request, pop_via, RequestEdits};
use super::forward;
use super::register::{self, contact_line, parse_register, public_contact, BadRegister};
use super::wake;
use super::{Core, ALLOW};
use crate::push::token::pns_name;
use crate::registrar::{unix_now_ms, Binding, Contacts, RegisterOutcome, RegisterRequest};
use crate::sip::header::{params, split_commas, NameAddr};
use crate::sip::{builder, HeaderName, Message, Splice, Uri};
use crate::transaction::{
    BranchGen, ClientAction, ClientTx, Kind, ServerAction, ServerEntry, ServerTx, TxEvent,
};
use crate::transport::Flow;

/// What was last relayed for one binding (for the refresh throttle).
#[derive(Debug, Clone)]
struct Relayed {
    at_ms: u64,
    contact: String,
    flow: Option<String>,
    call_id: String,
    token: Option<String>,
    expires: Option<u32>,
}

/// Relay bookkeeping shared by the proxy.
#[derive(Debug, Default)]
pub struct RelayState {
    /// `aor \0 binding key` → what the upstream last accepted for it.
    relayed: Mutex<HashMap<String, Relayed>>,
}

impl RelayState {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Relayed>> {
        self.relayed.lock()
    }
}

fn state_key(aor: &str, key: &str) -> String {
    format!("{aor}\0{key}")
}

/// True in relay mode.
pub fn enabled(core: &Core) -> bool {
    core.settings.registrar.mode == crate::config::RegistrarMode::Relay
}

/// True if the request comes from the configured upstream (its address and port).
pub fn from_upstream(core: &Core, flow: &Flow) -> bool {
    let Some(up) = &core.settings.upstream.uri else {
        return false;
    };
    let remote = flow.remote();
    up.host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip == remote.ip() && up.port == remote.port())
}

/// The URI the upstream gets for a contact.
fn upstream_uri(core: &Core, uri: &str) -> String {
    if core.settings.relay.forward_push_params {
        uri.to_string()
    } else {
        public_contact(uri)
    }
}

/// A REGISTER from a phone, in relay mode.
pub fn register(
    core: &Arc<Core>,
    msg: Message,
    flow: Flow,
    local: SocketAddr,
    key: u64,
    popped: OwnRoutes,
) {
    let now_ms = unix_now_ms();
    let req = match parse_register(&msg, &flow, now_ms, &core.settings.push, &core.pusher()) {
        Ok(r) => r,
        Err(BadRegister(code, reason)) => return core.reply(&msg, flow, key, code, reason, &[]),
    };
    if throttled(core, &req, now_ms) {
        debug!(aor = %req.aor, "refresh answered locally (relay throttle)");
        return register::handle(core, msg, flow, key);
    }
    let contacts = match upstream_contacts(core, &msg, &req, now_ms, None) {
        Ok(c) => c,
        Err(reason) => return core.reply(&msg, flow, key, 400, reason, &[]),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    if !core.tx.insert_server(key, ServerEntry::Task(tx.clone())) {
        return;
    }
    let span = debug_span!("relay-register", aor = %req.aor, call_id = %req.call_id);
    let task = RegisterRelay {
        core: core.clone(),
        server: ServerTx::new(Kind::NonInvite, !flow.is_udp(), core.timers),
        msg,
        src: flow,
        local,
        key,
        req,
        contacts,
        popped: popped.ranges,
        tx,
        rx,
    };
    tokio::spawn(task.run().instrument(span));
}

/// Contact rewriting (`relay.contact_rewrite`): what the upstream's contacts are made
/// of — sipwake's advertised address on the upstream leg and its transport.
struct Rewrite<'a> {
    hostport: &'a str,
    /// `UDP`, `TCP` or `TLS`.
    transport: &'static str,
}

/// The Contact sipwake registers upstream for a phone's flow: its user part is the
/// flow token (opaque, signed, base64url), so the upstream's requests to it come back
/// here and name the phone's flow.
fn rewritten_uri(core: &Core, phone: Flow, rw: &Rewrite<'_>) -> String {
    let key = core.tokens.encode(Some(phone), None);
    let tp = rw.transport.to_ascii_lowercase();
    format!("sip:{key}@{};transport={tp}", rw.hostport)
}

/// The phone's flow named by a Request-URI that is one of sipwake's rewritten
/// contacts (a request to sipwake itself whose user part is a flow token).
pub fn rewritten_target(core: &Core, msg: &Message) -> Option<Flow> {
    let u = Uri::parse(msg.request_uri()).ok()?;
    if !core.is_me(u.host, u.port) {
        return None;
    }
    match core.tokens.decode(u.user?) {
        Some((Some(phone), None)) => Some(phone),
        _ => None,
    }
}

/// The Contact lines for the upstream, or `None` to forward Contact/Expires as sent
/// (query, `*`). With `rewrite`, each contact is replaced by sipwake's own for the
/// phone's flow (`src`), and the stale and removed ones name the flows the upstream
/// knows them by.
fn upstream_contacts(
    core: &Core,
    msg: &Message,
    req: &RegisterRequest,
    now_ms: u64,
    rewrite: Option<(&Rewrite<'_>, Flow)>,
) -> Result<Option<Vec<String>>, &'static str> {
    let Contacts::List(specs) = &req.contacts else {
        return Ok(None);
    };
    let existing = core.registrar.lookup(&req.aor, now_ms);
    let up_expires = core.settings.relay.upstream_expires;
    let mut lines = Vec::with_capacity(specs.len() + 1);
    let mut sent: Vec<String> = Vec::new();
    let binding_uri = |b: &Binding| -> Option<String> {
        match rewrite {
            Some((rw, _)) => b
                .flow
                .as_deref()
                .and_then(|f| f.parse::<Flow>().ok())
                .map(|f| rewritten_uri(core, f, rw)),
            None => Some(upstream_uri(core, &b.contact)),
        }
    };
    for (raw, spec) in msg.values(HeaderName::Contact).zip(specs) {
        let na = NameAddr::parse(raw, "Contact").map_err(|_| "Malformed Contact header")?;
        let uri = match rewrite {
            Some((rw, src)) => rewritten_uri(core, src, rw),
            None => upstream_uri(core, na.uri),
        };
        let gone = spec.expires.or(req.expires_header) == Some(0);
        if rewrite.is_some() && sent.contains(&uri) {
            // two contacts from one flow: the upstream knows them as one
            continue;
        }
        let mut line = format!("Contact: <{uri}>");
        for (n, v) in params(na.params) {
            if n.eq_ignore_ascii_case("expires") {
                continue;
            }
            if v.is_empty() {
                let _ = write!(line, ";{n}");
            } else {
                let _ = write!(line, ";{n}={v}");
            }
        }
        let _ = write!(line, ";expires={}", if gone { 0 } else { up_expires });
        lines.push(line);
        sent.push(uri.clone());
        if gone && rewrite.is_none() {
            continue;
        }
        // a device back from a new address (relaunched by a push): its old contact
        // goes, or the upstream keeps forking to a dead one; with rewriting, a
        // removal also names the flow the upstream knows the contact by
        let bkey = spec.binding_key();
        for b in existing.iter().filter(|b| b.key == bkey) {
            let Some(old) = binding_uri(b) else { continue };
            if old != uri && !sent.contains(&old) {
                lines.push(format!("Contact: <{old}>;expires=0"));
                sent.push(old);
            }
        }
    }
    Ok(Some(lines))
}

/// A refresh that changes nothing and came soon after the last relayed one.
fn throttled(core: &Core, req: &RegisterRequest, now_ms: u64) -> bool {
    let limit = core.settings.relay.refresh_throttle.as_millis() as u64;
    if limit == 0 {
        return false;
    }
    let Contacts::List(specs) = &req.contacts else {
        return false;
    };
    if specs.is_empty() {
        return false;
    }
    let live = core.registrar.lookup(&req.aor, now_ms);
    let state = core.relay.lock();
    specs.iter().all(|s| {
        let expires = s.expires.or(req.expires_header);
        let key = s.binding_key();
        expires != Some(0)
            && live.iter().any(|b| b.key == key && b.is_live(now_ms))
            && state.get(&state_key(&req.aor, &key)).is_some_and(|r| {
                now_ms.saturating_sub(r.at_ms) < limit
                    && r.contact == s.uri
                    && r.flow == req.flow
                    && r.call_id == req.call_id
                    && r.token == s.token_key
                    && r.expires == expires
            })
    })
}

struct RegisterRelay {
    core: Arc<Core>,
    server: ServerTx,
    msg: Message,
    src: Flow,
    local: SocketAddr,
    key: u64,
    req: RegisterRequest,
    contacts: Option<Vec<String>>,
    popped: Vec<std::ops::Range<usize>>,
    tx: UnboundedSender<TxEvent>,
    rx: UnboundedReceiver<TxEvent>,
}

struct Client {
    key: u64,
    flow: Flow,
    request: Bytes,
    tx: ClientTx,
}

impl RegisterRelay {
    async fn run(mut self) {
        let mut client = match self.send().await {
            Ok(c) => Some(c),
            Err(why) => {
                debug!(error = %why, "REGISTER not relayed");
                self.answer_made(503, "Service Unavailable");
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
                                    self.answer_made(408, "Request Timeout");
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
        let flow = forward::resolve(&self.core, &Next::Upstream, Some(self.local))
            .await
            .map_err(|e| e.to_string())?;
        let out_local = self.core.transport.local_addr(&flow).unwrap_or(self.local);
        let hostport = self.core.advertised(out_local);
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
                    unix_now_ms(),
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
            extra.push(format!("Path: <sip:{token}@{hostport};lr;ob{tp}>"));
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
                self.answer(code, pop_via(resp));
            }
            return;
        }
        if code >= 300 {
            // challenges and refusals pass through untouched; nothing is stored
            self.answer(code, pop_via(resp));
            return;
        }
        let mut req = self.req.clone();
        req.now_ms = unix_now_ms();
        let request_ms = req.now_ms;
        let specs = match &req.contacts {
            Contacts::List(l) => l.clone(),
            _ => Vec::new(),
        };
        match self.core.registrar.register(req).await {
            Ok(RegisterOutcome::Ok { bindings }) => {
                self.remember(&specs, request_ms);
                if let Some(b) = bindings.first() {
                    self.core.anchors.note(&self.src, &b.aor);
                }
                let now_ms = unix_now_ms();
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
                self.answer(code, bytes);
                for b in bindings.iter().filter(|b| b.updated_at_ms == request_ms) {
                    self.core.parked.wake(b);
                }
            }
            Ok(RegisterOutcome::IntervalTooBrief { min_expires }) => {
                let line = format!("Min-Expires: {min_expires}");
                self.answer_built(423, "Interval Too Brief", &[&line]);
            }
            Ok(RegisterOutcome::Invalid(reason)) => self.answer_built(400, reason, &[]),
            Ok(RegisterOutcome::OutOfOrder) => self.answer_built(400, "CSeq out of order", &[]),
            Err(e) => {
                warn!(error = %e, "binding store failed");
                self.answer_built(500, "Store Failure", &["Retry-After: 5"]);
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

    fn answer(&mut self, code: u16, bytes: Bytes) {
        if self.server.send_response(code, &bytes, Instant::now()) {
            crate::metrics::global().response_sent(Some(crate::sip::Method::Register), code);
            if let Err(e) = self.core.transport.send(&self.src, bytes) {
                debug!(error = %e, code, "REGISTER response not sent");
            }
        }
    }

    fn answer_built(&mut self, code: u16, reason: &str, extra: &[&str]) {
        let resp = builder::response(&self.msg, self.src.remote(), code, reason, extra, None);
        self.answer(code, resp);
    }

    fn answer_made(&mut self, code: u16, reason: &str) {
        if !self.server.is_final() {
            self.answer_built(code, reason, &[]);
        }
    }
}

/// True if the message lists `path` in Supported.
fn supports_path(msg: &Message) -> bool {
    msg.values(HeaderName::Supported)
        .any(|v| v.trim().eq_ignore_ascii_case("path"))
}

/// The upstream's 2xx for the phone: our Via popped, the contacts replaced by the
/// local view (push parameters cut, the phone's own expiry), Path and `Require:
/// path` removed when the phone did not ask for path.
fn ok_for_phone(resp: &Message, contact_lines: &[String], phone_has_path: bool) -> Bytes {
    let popped = pop_via(resp);
    let Ok(m) = Message::parse(popped.clone(), true) else {
        return popped;
    };
    let mut sp = Splice::new(&m);
    for h in m.header_list() {
        let drop = match h.name {
            HeaderName::Contact | HeaderName::Expires => true,
            HeaderName::Path => !phone_has_path,
            HeaderName::Require if !phone_has_path => {
                let v = m.value_of(h);
                let rest: Vec<&str> = split_commas(v)
                    .map(|(a, b)| v[a..b].trim())
                    .filter(|o| !o.eq_ignore_ascii_case("path"))
                    .collect();
                if rest.len() != split_commas(v).count() {
                    if rest.is_empty() {
                        true
                    } else {
                        sp.replace(h.value.clone(), &rest.join(", "));
                        false
                    }
                } else {
                    false
                }
            }
            _ => false,
        };
        if drop {
            sp.remove(h.line.clone());
        }
    }
    let at = m
        .header_list()
        .last()
        .map(|h| h.line.end)
        .unwrap_or(m.head_end());
    for l in contact_lines {
        sp.insert_fmt(at, format_args!("{l}\r\n"));
    }
    sp.finish()
}

/// An initial request from the upstream that came back along our Path, or to one of
/// our rewritten contacts: its token names the phone's flow. The phone's bindings get
/// it through the push rules (each target's Request-URI is the phone's contact).
#[allow(clippy::too_many_arguments)]
pub fn from_path(
    core: &Arc<Core>,
    msg: Message,
    flow: Flow,
    local: SocketAddr,
    key: u64,
    popped: OwnRoutes,
    phone: Flow,
    record_route: bool,
) {
    let now = unix_now_ms();
    let trusted = core.settings.is_trusted(flow.remote().ip());
    let phone_s = phone.to_string();
    let aor = msg
        .to()
        .and_then(|t| Uri::parse(t.uri).ok())
        .map(|u| u.aor());
    let bindings: Vec<Arc<Binding>> = aor
        .as_deref()
        .map(|a| core.registrar.lookup(a, now))
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.flow.as_deref() == Some(phone_s.as_str()))
        .collect();
    let Some(aor) = aor.filter(|_| !bindings.is_empty()) else {
        // no binding of ours behind this token any more: straight to the flow, if
        // alive; a rewritten contact names no contact of the phone's to send to
        let rewritten = Uri::parse(msg.request_uri()).is_ok_and(|u| core.is_me(u.host, u.port));
        if rewritten || !core.transport.is_open(&phone) {
            return core.reply(&msg, flow, key, 480, "Temporarily Unavailable", &[]);
        }
        let t = Target::to(Next::Flow(phone));
        return forward::start(
            core,
            msg,
            flow,
            local,
            key,
            vec![t],
            popped,
            record_route,
            None,
        );
    };
    match wake::decide(core, &msg, &aor, &bindings, false, trusted, now) {
        Decision::Answer(200, _) => core.reply(&msg, flow, key, 200, "OK", &[ALLOW]),
        Decision::Answer(code, reason) => core.reply(&msg, flow, key, code, reason, &[]),
        Decision::Forward(targets, plan) => forward::start(
            core,
            msg,
            flow,
            local,
            key,
            targets,
            popped,
            record_route,
            plan,
        ),
    }
}

async fn sleep_until(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_for_phone_replaces_contacts_and_path() {
        let raw = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sw1\r\nVia: SIP/2.0/UDP 127.0.0.9:5999;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\nCSeq: 2 REGISTER\r\nContact: <sip:a@127.0.0.9:5999>;expires=3600\r\nPath: <sip:tok@127.0.0.1:5060;lr;ob>\r\nRequire: path\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(Bytes::from(raw), true).unwrap();
        let out = ok_for_phone(
            &m,
            &["Contact: <sip:a@127.0.0.9:5999>;expires=300".into()],
            false,
        );
        let s = std::str::from_utf8(&out).unwrap();
        assert!(!s.contains("z9hG4bK-sw1"), "{s}");
        assert!(!s.contains("Path:"), "{s}");
        assert!(!s.contains("Require:"), "{s}");
        assert!(
            s.contains("Contact: <sip:a@127.0.0.9:5999>;expires=300\r\n"),
            "{s}"
        );
        assert!(!s.contains("expires=3600"), "{s}");
        Message::parse(out.clone(), true)
            .unwrap()
            .validate()
            .unwrap();
    }
}
