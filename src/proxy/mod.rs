//! The routing core (RFC 3261 §16): takes every message the transport reads, matches
//! it to a transaction or starts one, and decides where requests go. [`Core`], the
//! state every part shares, lives here; the transport reaches it only through
//! [`ProxyHandler`], its [`Handler`].
//!
//! Where a request goes:
//! - [`route`]: a new request: RFC 3261 §16.3–16.5 checks, our Route entries and
//!   flow tokens, the registrar for local users, the upstream for the rest.
//!   [`names`] says which hosts are sipwake itself.
//! - [`register`]: REGISTER → registrar (local mode); [`relay`]: relay mode, where an
//!   upstream registrar/PBX owns the users.
//! - [`wake`]: which bindings of a local user get a request at once and which
//!   devices are pushed.
//! - [`data`]: the plain data these hand each other (a leaf every module imports).
//!
//! Carrying it out:
//! - [`forward`]: the task that owns a forwarded transaction (fork, responses,
//!   CANCEL, timers); [`next_hop`] turns a target into a flow; [`edit`] splices our
//!   changes into forwarded messages.
//! - [`pushing`]: the push half of a forwarded call; [`park`]: the calls waiting for a
//!   pushed phone, woken by the registrar's binding events.
//!
//! Around it:
//! - [`limits`]: rate limits on REGISTER and INVITE; [`anchors`]: which TCP
//!   connections carry registrations (kept open when idle).
//! - [`dialogs`]: which calls are up (graceful shutdown, metrics);
//!   [`lifecycle`]: draining on shutdown; [`call_log`]: one log line per call;
//!   [`call_views`]: the calls in progress for the admin API.

pub mod anchors;
pub mod call_log;
pub mod call_views;
pub mod cluster;
pub mod data;
pub mod dialogs;
pub mod edit;
pub mod forward;
pub mod lifecycle;
pub mod limits;
pub mod message;
pub mod names;
pub mod next_hop;
pub mod park;
pub mod pushing;
pub mod refresh;
pub mod register;
pub mod relay;
pub mod returning;
pub mod route;
pub mod wake;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, debug_span, warn};

use crate::config::Settings;
use crate::push::Pusher;
use crate::registrar::Registrar;
use crate::sip::{HeaderName, Message, Method};
use crate::transaction::table::ServerMatch;
use crate::transaction::{
    BranchGen, ServerAction, ServerEntry, ServerTx, Timers, TxEvent, TxTable,
};
use crate::transport::{Flow, FlowTokens, Handler, Transport};

/// Methods sipwake advertises in `Allow`.
pub const ALLOW: &str =
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER, MESSAGE";

/// Shared state of the proxy, passed down as `Arc<Core>`.
pub struct Core {
    /// Settings.
    pub settings: Settings,
    /// Sockets and connections.
    pub transport: Transport,
    /// Bindings.
    pub registrar: Registrar,
    /// Transaction tables.
    pub tx: TxTable<data::CallEvent>,
    /// Branch maker.
    pub branches: BranchGen,
    /// Flow token signer.
    pub tokens: FlowTokens,
    /// Protocol timers.
    pub timers: Timers,
    /// Push providers; swapped by a reload, so read them with [`Core::pusher`].
    pusher: parking_lot::RwLock<Arc<Pusher>>,
    /// Calls waiting for pushed phones.
    pub parked: park::Parked,
    /// Relay mode bookkeeping (what the upstream registrar accepted).
    pub relay: relay::RelayState,
    /// Forwarded requests over 1,300 bytes sent on UDP (fragmentation risk).
    pub oversize_udp: std::sync::atomic::AtomicU64,
    /// Who we are: listen addresses, names, certificate names (see [`names`]).
    pub names: names::OurNames,
    handler: std::sync::OnceLock<Arc<dyn Handler>>,
    /// Dialogs up and calls in setup (graceful shutdown, metrics).
    pub dialogs: dialogs::Dialogs,
    /// Shutting down: new calls are refused (see [`Core::start_draining`]).
    draining: std::sync::atomic::AtomicBool,
    /// Digest authentication; unset when off (and always in relay mode).
    auth: std::sync::OnceLock<crate::auth::Auth>,
    /// Rate limits on REGISTER and INVITE.
    pub limits: limits::Limits,
    /// Which TCP connections carry registrations (kept open when idle).
    pub anchors: anchors::Anchors,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

impl Core {
    /// Builds the core over a bound transport.
    pub fn new(
        settings: Settings,
        transport: Transport,
        registrar: Registrar,
        tokens: FlowTokens,
        pusher: Arc<Pusher>,
    ) -> Core {
        let names = names::OurNames::new(
            transport
                .udp_addrs()
                .into_iter()
                .chain(transport.tcp_addrs())
                .chain(transport.tls_addrs()),
            settings
                .sip
                .advertised_host
                .iter()
                .chain(&settings.sip.aliases)
                .cloned(),
            transport
                .tls_cert()
                .map(|c| c.dns_names())
                .unwrap_or_default(),
        );
        let timers = Timers {
            t1: settings.sip.t1,
            t2: settings.sip.t2,
            t4: settings.sip.t4,
            timer_c: settings.sip.timer_c,
        };
        let parked = park::Parked::new(settings.push.max_parked, settings.push.max_parked_per_aor);
        // the one wake path: every binding event, local or remote, reaches parked calls
        registrar.events().add_sink(Arc::new(parked.clone()));
        // several nodes: what a push learnt about a token survives a REGISTER anywhere
        registrar.set_contact_rule(register::learnt_env_rule());
        if settings.push.refresh.enabled {
            // several nodes: the refresh push times are kept in Redis
            registrar.set_refresh_timing(refresh::timing(&settings));
        }
        let rate_limits = limits::Limits::new(&settings);
        Core {
            oversize_udp: std::sync::atomic::AtomicU64::new(0),
            pusher: parking_lot::RwLock::new(pusher),
            dialogs: dialogs::Dialogs::new(settings.server.dialog_max_age),
            draining: std::sync::atomic::AtomicBool::new(false),
            parked,
            relay: relay::RelayState::default(),
            settings,
            transport,
            registrar,
            tx: TxTable::default(),
            branches: BranchGen::default(),
            tokens,
            timers,
            names,
            handler: std::sync::OnceLock::new(),
            auth: std::sync::OnceLock::new(),
            limits: rate_limits,
            anchors: anchors::Anchors::default(),
        }
    }

    /// Turns digest authentication on (once, at start).
    pub fn set_auth(&self, auth: crate::auth::Auth) {
        let _ = self.auth.set(auth);
    }

    /// Digest authentication, when on.
    pub fn auth(&self) -> Option<&crate::auth::Auth> {
        self.auth.get()
    }

    /// The handler new TCP connections deliver to (set once at start).
    pub fn handler(&self) -> Option<Arc<dyn Handler>> {
        self.handler.get().cloned()
    }

    /// Creates the transport handler for this core and remembers it.
    pub fn make_handler(self: &Arc<Self>) -> Arc<dyn Handler> {
        let h: Arc<dyn Handler> = Arc::new(ProxyHandler(self.clone()));
        let _ = self.handler.set(h.clone());
        h
    }

    /// True if `host[:port]` names this proxy (see [`names`]).
    pub fn is_me(&self, host: &str, port: Option<u16>) -> bool {
        self.names.has_port(port.unwrap_or(5060)) && self.names.is_my_host(host)
    }

    /// True if `host` names this proxy, on whatever port.
    pub fn is_my_host(&self, host: &str) -> bool {
        self.names.is_my_host(host)
    }

    /// True if `domain` (lower case or not) is served here.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let d = self.settings.proxy.domains.as_slice();
        d.is_empty() || d.iter().any(|x| x.eq_ignore_ascii_case(domain))
    }

    /// The host and port to write in Via, Path, Record-Route or a rewritten Contact
    /// for a message that leaves from `local` toward `peer`: `sip.advertised_host`
    /// when set; else the local address, and for a wildcard socket (`0.0.0.0`,
    /// `[::]`) the address the host sends from toward `peer`, never the unspecified
    /// one. With no route to `peer` at all the message cannot leave anyway; loopback
    /// is written then.
    pub fn advertised(&self, local: SocketAddr, peer: SocketAddr) -> String {
        // written by hand, not `format!`/`to_string`: this runs for every Via and
        // Record-Route sipwake writes
        let mut out = String::with_capacity(48);
        match &self.settings.sip.advertised_host {
            Some(h) => {
                out.push_str(h);
                out.push(':');
                crate::sip::push_decimal(&mut out, u64::from(local.port()));
            }
            None if local.ip().is_unspecified() => {
                let ip = self.transport.source_toward(peer).unwrap_or(match local {
                    SocketAddr::V4(_) => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                    SocketAddr::V6(_) => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                });
                crate::sip::push_socket_addr(&mut out, SocketAddr::new(ip, local.port()));
            }
            None => crate::sip::push_socket_addr(&mut out, local),
        }
        out
    }

    /// Sends a response built for `req` on `flow` and returns its bytes.
    pub fn respond(
        &self,
        req: &Message,
        flow: &Flow,
        code: u16,
        reason: &str,
        extra: &[&str],
    ) -> Bytes {
        let resp = crate::sip::response(req, flow.remote(), code, reason, extra, None);
        crate::metrics::global().response_sent(req.method(), code);
        if let Err(e) = self.transport.send(flow, resp.clone()) {
            debug!(error = %e, code, "response not sent");
        }
        resp
    }

    /// Answers `503` with `Retry-After: 5` because the shared binding store (Redis) did
    /// not answer: another node, or this one a moment later, can take the request
    /// (RFC 3261 §21.5.4). One answer for every path that needs the shared store.
    pub fn reply_store_unavailable(self: &Arc<Self>, req: &Message, flow: Flow, key: u64) {
        self.reply(
            req,
            flow,
            key,
            503,
            "Service Unavailable",
            &["Retry-After: 5"],
        );
    }

    /// Answers a request with a final response from sipwake itself and keeps the
    /// transaction so that retransmissions get the same answer (and, for INVITE, the
    /// response is retransmitted until the ACK).
    pub fn reply(
        self: &Arc<Self>,
        req: &Message,
        flow: Flow,
        key: u64,
        code: u16,
        reason: &str,
        extra: &[&str],
    ) {
        let resp = self.respond(req, &flow, code, reason, extra);
        if code < 200 {
            return;
        }
        self.on_local_final(req, code);
        if req.method() == Some(Method::Invite) {
            let (tx, rx) = crate::transaction::task_channel();
            self.tx.set_server(key, ServerEntry::Task(tx));
            let mut st = ServerTx::new(
                crate::transaction::Kind::Invite,
                !flow.is_udp(),
                self.timers,
            );
            st.send_response(code, &resp, Instant::now());
            tokio::spawn(local_invite_tx(self.clone(), st, rx, flow, key));
        } else if flow.is_udp() {
            self.tx.set_server(
                key,
                ServerEntry::Done {
                    response: resp,
                    flow,
                    until: Instant::now() + self.timers.t64(),
                },
            );
        } else {
            self.tx.remove_server(key);
        }
    }

    fn on_request(self: &Arc<Self>, msg: Message, flow: Flow, local: SocketAddr) {
        match msg.method() {
            Some(Method::Ack) => {
                let key = self.tx.server_key(&msg, None);
                match self.tx.lookup_server(key) {
                    Some(ServerMatch::Task(tx)) => {
                        let _ = tx.send(TxEvent::Ack);
                    }
                    _ => route::forward_ack(self, msg, flow, local),
                }
            }
            Some(Method::Cancel) => {
                let key = self.tx.server_key(&msg, Some("INVITE"));
                let own = self.tx.server_key(&msg, None);
                match self.tx.lookup_server(key) {
                    Some(ServerMatch::Task(tx)) => {
                        self.reply(&msg, flow, own, 200, "OK", &[]);
                        let _ = tx.send(TxEvent::Cancel);
                    }
                    _ => match self.tx.lookup_server(own) {
                        Some(ServerMatch::Answered(resp, f)) => {
                            let _ = self.transport.send(&f, resp);
                        }
                        _ => self.reply(&msg, flow, own, 481, crate::sip::reason_phrase(481), &[]),
                    },
                }
            }
            _ => {
                let key = self.tx.server_key(&msg, None);
                match self.tx.lookup_server(key) {
                    Some(ServerMatch::Task(tx)) => {
                        let _ = tx.send(TxEvent::Retransmission);
                    }
                    Some(ServerMatch::Answered(resp, f)) => {
                        let _ = self.transport.send(&f, resp);
                    }
                    Some(ServerMatch::Pending) => {}
                    None if self.refuse_while_draining(&msg, flow, key) => {}
                    None if limits::over_limit(self, &msg, &flow) => {}
                    None => names::route_new_request(self, msg, flow, local, key),
                }
            }
        }
    }

    fn on_response(self: &Arc<Self>, msg: Message, flow: Flow) {
        let (branch, method) = match (msg.top_via(), msg.cseq()) {
            (Some(v), (_, m)) => (v.branch().unwrap_or(""), m),
            _ => return,
        };
        if BranchGen::hash_of(branch).is_none() {
            // not ours (RFC 3261 §18.1.2): drop silently
            return;
        }
        let key = self.tx.client_key(branch, method);
        match self.tx.lookup_client(key) {
            Some((tx, idx)) => {
                let _ = tx.send(TxEvent::Response {
                    branch: idx,
                    msg: Box::new(msg),
                });
            }
            None => {
                if msg.code().is_some_and(|c| (200..300).contains(&c)) && method == "INVITE" {
                    forward::forward_stray_2xx(self, msg, flow);
                }
            }
        }
    }
}

async fn local_invite_tx(
    core: Arc<Core>,
    mut st: ServerTx,
    mut rx: crate::transaction::TaskReceiver<data::TaskEvent>,
    flow: Flow,
    key: u64,
) {
    while let Some(deadline) = st.next_deadline() {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(TxEvent::Ack) => st.on_ack(Instant::now()),
                Some(TxEvent::Retransmission) => {
                    if let Some(b) = st.on_retransmission() {
                        let _ = core.transport.send(&flow, b);
                    }
                }
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                while let Some(a) = st.poll(Instant::now()) {
                    match a {
                        ServerAction::Retransmit(b) => { let _ = core.transport.send(&flow, b); }
                        ServerAction::NoAck | ServerAction::Terminated => {}
                    }
                }
            }
        }
    }
    core.tx.remove_server(key);
}

/// The transport's view of the proxy.
pub struct ProxyHandler(pub Arc<Core>);

impl Handler for ProxyHandler {
    fn on_message(&self, data: Bytes, flow: Flow, local: SocketAddr) {
        let msg = match Message::parse(data, flow.is_udp()) {
            Ok(m) => m,
            Err(e) => {
                debug!(remote = %flow.remote(), error = %e, "unparseable message dropped");
                return;
            }
        };
        let core = &self.0;
        if !msg.is_request() {
            if msg.validate().is_ok() {
                crate::metrics::global().response_received(msg.code());
                core.on_response(msg, flow);
            }
            return;
        }
        crate::metrics::global().request_received(msg.method());
        let span = debug_span!("request", call_id = %msg.call_id(), method = %msg.method_str());
        let _g = span.enter();
        if let Err(e) = msg.validate() {
            if msg.answerable() {
                let reason = e.to_string();
                let key = core.tx.server_key(&msg, None);
                core.reply(&msg, flow, key, e.status(), &reason, &[]);
            } else {
                debug!(remote = %flow.remote(), error = %e, "malformed request dropped");
            }
            return;
        }
        if msg.count(HeaderName::Via) == 0 {
            warn!("request without Via");
            return;
        }
        core.on_request(msg, flow, local);
    }

    fn keep_open(&self, flow: &Flow) -> bool {
        self.0.anchors.keep_open(flow, &self.0.registrar)
    }

    fn on_closed(&self, flow: &Flow) {
        self.0.anchors.forget(flow);
    }
}
