//! Where a request goes: RFC 3261 §16.3–16.5 checks, our Route entries and flow
//! tokens, the registrar for local users, the upstream for everything else, and the
//! rules that keep sipwake from being an open relay.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::debug;

use super::data::{sips_request, Decision, Next, OwnRoutes, Target};
use super::edit::{forward_request, RequestEdits};
use super::{forward, message, next_hop, wake};
use super::{register, relay, returning, Core, ALLOW};
use crate::registrar::unix_now_ms;
use crate::sip::{HeaderName, Message, Method, NameAddr, Uri, Via};
use crate::transaction::{BranchGen, ServerEntry};
use crate::transport::Flow;

/// Pops the Route values that name us (RFC 3261 §16.4) and decodes their token.
/// `arrival` is the flow the request came in on.
pub fn pop_routes(core: &Core, msg: &Message, arrival: &Flow) -> OwnRoutes {
    let mut p = OwnRoutes::default();
    for (_, range) in msg.value_spans(HeaderName::Route) {
        let v = msg.slice(range.clone());
        let Ok(na) = NameAddr::parse(v, "Route") else {
            p.next = Some(v.to_string());
            break;
        };
        match Uri::parse(na.uri) {
            Ok(u) if core.is_me(u.host, Some(u.port_or_default())) => {
                if p.token.is_none() {
                    p.token = u.user.and_then(|t| core.tokens.decode(t));
                }
                p.ranges.push(range);
            }
            // our Record-Route for a connection we opened names its local (ephemeral)
            // port, so that the peer reuses the connection; its signed token says it
            // is ours when the request comes back over that connection (a token alone
            // does not: several nodes on one host share the secret)
            Ok(u)
                if core.is_my_host(u.host)
                    && u.user
                        .and_then(|t| core.tokens.decode(t))
                        .is_some_and(|(a, b)| {
                            [a, b].iter().flatten().any(|f| same_flow(f, arrival))
                        }) =>
            {
                if p.token.is_none() {
                    p.token = u.user.and_then(|t| core.tokens.decode(t));
                }
                p.ranges.push(range);
            }
            _ => {
                p.next = Some(na.uri.to_string());
                break;
            }
        }
    }
    p
}

fn same_flow(a: &Flow, b: &Flow) -> bool {
    match (a, b) {
        (
            Flow::Udp { socket, remote },
            Flow::Udp {
                socket: s2,
                remote: r2,
            },
        ) => socket == s2 && remote == r2,
        (Flow::Tcp { conn, .. }, Flow::Tcp { conn: c2, .. }) => conn == c2,
        _ => false,
    }
}

/// Given the two legs in a token and the flow a request arrived on, the leg it goes to.
pub fn other_leg(a: Option<Flow>, b: Option<Flow>, arrival: &Flow) -> Option<Flow> {
    if a.as_ref().is_some_and(|f| same_flow(f, arrival)) {
        return b;
    }
    if b.as_ref().is_some_and(|f| same_flow(f, arrival)) {
        return a;
    }
    // the sender's NAT may have moved it to a new port: fall back to its address
    let ip = arrival.remote().ip();
    match (a, b) {
        (Some(fa), Some(fb)) if fa.remote().ip() == ip && fb.remote().ip() != ip => Some(fb),
        (Some(fa), Some(fb)) if fb.remote().ip() == ip && fa.remote().ip() != ip => Some(fa),
        _ => None,
    }
}

/// Handles a request that starts a new server transaction.
pub fn new_request(core: &Arc<Core>, mut msg: Message, flow: Flow, local: SocketAddr, key: u64) {
    let method = msg.method().unwrap_or(Method::Other);
    if msg.max_forwards() == Some(0) {
        return core.reply(&msg, flow, key, 483, "Too Many Hops", &[]);
    }
    let unsupported: Vec<&str> = msg.values(HeaderName::ProxyRequire).collect();
    if !unsupported.is_empty() {
        let line = format!("Unsupported: {}", unsupported.join(", "));
        return core.reply(&msg, flow, key, 420, "Bad Extension", &[&line]);
    }
    // the loop hash is only computed when a lower Via is ours: a phone's request
    // (one Via) never needs it, and forwarding computes its own for the new branch
    let mut lh = None;
    let looped = msg.values(HeaderName::Via).skip(1).any(|v| {
        Via::parse(v).is_ok_and(|via| {
            via.branch().and_then(BranchGen::hash_of).is_some_and(|h| {
                core.is_me(via.host, via.port)
                    && h == *lh.get_or_insert_with(|| BranchGen::loop_hash(&msg))
            })
        })
    });
    if looped {
        return core.reply(&msg, flow, key, 482, "Loop Detected", &[]);
    }
    let mut popped = pop_routes(core, &msg, &flow);
    let in_dialog = !msg.to_tag().is_empty();
    let trusted = core.settings.is_trusted(flow.remote().ip());
    if let Some(auth) = core.auth() {
        match auth.request(&msg, trusted, popped.token.is_some(), |h, p| {
            core.is_me(h, p)
        }) {
            Err(a) => {
                if crate::auth::audit::is_failure(a.code, a.reason) {
                    let aor = crate::auth::audit::aor_of(msg.from());
                    crate::auth::audit::auth_failed(flow.remote(), &aor, a.code, a.reason);
                }
                return core.reply(&msg, flow, key, a.code, a.reason, &a.lines());
            }
            // RFC 3261 §22.3: the credentials for our realm end here
            Ok(Some(line)) => {
                msg = crate::auth::without_line(msg, line, flow.is_udp());
                popped = pop_routes(core, &msg, &flow);
            }
            Ok(None) => {}
        }
    }

    if let Some(next) = popped.next.clone() {
        if popped.ranges.is_empty() && !trusted {
            return core.reply(&msg, flow, key, 403, "Forbidden (foreign Route)", &[]);
        }
        let rr = !in_dialog && wants_record_route(method);
        let t = Target::to(Next::Uri(next));
        return forward::start(core, msg, flow, local, key, vec![t], popped, rr, None);
    }

    let relay_mode = relay::enabled(core);
    if relay_mode && !in_dialog && method != Method::Register {
        // relay mode: the upstream's request came back along our Path
        if let Some((Some(phone), None)) = popped.token {
            let ret = returning::path_target(core, &msg, phone);
            // several nodes: our Path entries name the AOR; a Route of ours without it
            // is another node's, for a phone whose flow we hold (handled below)
            if ret.aor.is_some() || core.registrar.shared().is_none() {
                let rr = wants_record_route(method);
                return returning::from_path(core, msg, flow, local, key, popped, ret, rr);
            }
        }
        // contact rewriting: the Request-URI is the contact sipwake registered for it
        if let Some(ret) = returning::rewritten_target(core, &msg) {
            let rr = wants_record_route(method);
            return returning::from_path(core, msg, flow, local, key, popped, ret, rr);
        }
    }

    // several nodes: another node sends a request for a phone whose flow we hold with
    // a Route naming us and carrying that flow's token (see wake::via_owner)
    if core.registrar.shared().is_some() && !in_dialog && method != Method::Register {
        if let Some((Some(phone), None)) = popped.token {
            if !core.transport.is_open(&phone) {
                // RFC 5626 §5.3: the flow is gone
                return core.reply(&msg, flow, key, 430, "Flow Failed", &[]);
            }
            let t = Target {
                ruri: None,
                next: Next::Flow(phone),
                path: Vec::new(),
                device: None,
            };
            let rr = wants_record_route(method);
            popped.from_node = true;
            return forward::start(core, msg, flow, local, key, vec![t], popped, rr, None);
        }
    }

    // a Request-URI naming sipwake itself is resolved through the registrar (RFC 3261
    // §16.5), never sent back to our own socket
    let ruri_is_me = msg
        .ruri()
        .is_ok_and(|u| core.is_me(u.host, Some(u.port_or_default())));
    if in_dialog {
        let next = match popped.token {
            Some((a, b)) => match other_leg(a, b, &flow) {
                Some(dest) if core.transport.is_open(&dest) => Some(Next::Flow(dest)),
                Some(Flow::Tcp { inbound: true, .. }) => {
                    return core.reply(&msg, flow, key, 430, "Flow Failed", &[]);
                }
                _ if ruri_is_me => None,
                _ => Some(Next::Uri(msg.request_uri().to_string())),
            },
            None if trusted && ruri_is_me => None,
            None if trusted => Some(Next::Uri(msg.request_uri().to_string())),
            None => {
                return core.reply(
                    &msg,
                    flow,
                    key,
                    403,
                    "Forbidden (not a dialog of ours)",
                    &[],
                );
            }
        };
        if let Some(next) = next {
            let t = Target::to(next);
            return forward::start(core, msg, flow, local, key, vec![t], popped, false, None);
        }
    }

    let (aor, host, port, has_user) = match msg.ruri() {
        Ok(u) => (
            u.aor(),
            u.host_bare().to_ascii_lowercase(),
            Some(u.port_or_default()),
            u.user.is_some(),
        ),
        Err(_) => return core.reply(&msg, flow, key, 416, "Unsupported URI Scheme", &[]),
    };
    let to_me = core.is_me(&host, port);
    if method == Method::Register {
        if relay_mode && (to_me || core.is_local_domain(&host)) {
            return relay::register(core, msg, flow, local, key, popped);
        }
        if to_me || core.is_local_domain(&host) {
            return register::handle(core, msg, flow, key);
        }
        return core.reply(&msg, flow, key, 403, "Forbidden (domain not served)", &[]);
    }
    if to_me && !has_user {
        return match method {
            Method::Options => core.reply(
                &msg,
                flow,
                key,
                200,
                "OK",
                &[
                    ALLOW,
                    "Accept: application/sdp",
                    "Supported: path, outbound",
                ],
            ),
            _ => core.reply(&msg, flow, key, 404, "Not Found", &[]),
        };
    }
    // relay mode: the phones' requests go to the upstream, which owns the users
    let to_upstream = relay_mode && !relay::from_upstream(core, &flow);
    if !to_upstream && (to_me || core.is_local_domain(&host)) {
        let to_user = ToUser {
            msg,
            flow,
            local,
            key,
            popped,
            aor,
            in_dialog,
            trusted,
            method,
        };
        if core.registrar.shared().is_none() {
            let bindings = core.registrar.lookup(&to_user.aor, unix_now_ms());
            return to_user.route(core, bindings);
        }
        // several nodes: the bindings are in Redis; retransmissions are absorbed while
        // they are read
        core.tx.set_server(key, ServerEntry::Pending);
        let core = core.clone();
        tokio::spawn(async move {
            match core.registrar.find(&to_user.aor, unix_now_ms()).await {
                Ok(bindings) => {
                    // the routing below creates the transaction in place of the marker
                    core.tx.remove_server(to_user.key);
                    to_user.route(&core, bindings)
                }
                Err(e) => {
                    debug!(aor = %to_user.aor, error = %e, "bindings not readable");
                    let u = to_user;
                    core.reply_store_unavailable(&u.msg, u.flow, u.key);
                }
            }
        });
        return;
    }
    // a foreign domain: only trusted peers and our own phones may send there
    if !trusted && core.registrar.shared().is_some() {
        core.tx.set_server(key, ServerEntry::Pending);
        let core = core.clone();
        tokio::spawn(async move {
            let from = from_aor(&msg);
            let bindings = match &from {
                Some(aor) => core.registrar.find(aor, unix_now_ms()).await,
                None => Ok(Vec::new()),
            };
            match bindings {
                Ok(b) if is_from(&b, &flow) => {
                    core.tx.remove_server(key);
                    to_foreign(&core, msg, flow, local, key, popped, method)
                }
                Ok(_) => core.reply(&msg, flow, key, 403, "Forbidden (relaying denied)", &[]),
                Err(_) => core.reply_store_unavailable(&msg, flow, key),
            }
        });
        return;
    }
    if !trusted && !from_a_binding(core, &msg, &flow) {
        return core.reply(&msg, flow, key, 403, "Forbidden (relaying denied)", &[]);
    }
    to_foreign(core, msg, flow, local, key, popped, method)
}

/// Forwards a request for a foreign domain (upstream, or its Request-URI).
fn to_foreign(
    core: &Arc<Core>,
    msg: Message,
    flow: Flow,
    local: SocketAddr,
    key: u64,
    popped: OwnRoutes,
    method: Method,
) {
    let next = if core.settings.upstream.uri.is_some() {
        Next::Upstream
    } else {
        Next::Uri(msg.request_uri().to_string())
    };
    let t = Target::to(next);
    let rr = wants_record_route(method);
    forward::start(core, msg, flow, local, key, vec![t], popped, rr, None)
}

fn binding_flow(b: &crate::registrar::Binding) -> Option<Flow> {
    b.flow().and_then(|f| f.parse().ok())
}

/// The AOR of the request's From.
fn from_aor(msg: &Message) -> Option<String> {
    msg.from()
        .and_then(|f| Uri::parse(f.uri).ok())
        .map(|u| u.aor())
}

/// True if one of `bindings` is on `flow`.
fn is_from(bindings: &[Arc<crate::registrar::Binding>], flow: &Flow) -> bool {
    bindings.iter().any(|b| {
        b.flow()
            .and_then(|f| f.parse::<Flow>().ok())
            .is_some_and(|f| same_flow(&f, flow))
    })
}

/// True if the request arrived on the flow of a current binding of its From AOR.
fn from_a_binding(core: &Core, msg: &Message, flow: &Flow) -> bool {
    let Some(aor) = from_aor(msg) else {
        return false;
    };
    is_from(&core.registrar.lookup(&aor, unix_now_ms()), flow)
}

/// A request for a user of a domain we serve, waiting for that user's bindings.
struct ToUser {
    msg: Message,
    flow: Flow,
    local: SocketAddr,
    key: u64,
    popped: OwnRoutes,
    aor: String,
    in_dialog: bool,
    trusted: bool,
    method: Method,
}

impl ToUser {
    /// Routes the request to `bindings` (the user's, just looked up).
    fn route(self, core: &Arc<Core>, mut bindings: Vec<Arc<crate::registrar::Binding>>) {
        let ToUser {
            msg,
            flow,
            local,
            key,
            popped,
            aor,
            in_dialog,
            trusted,
            method,
        } = self;
        let now = unix_now_ms();
        if !in_dialog && sips_request(&msg) {
            // RFC 5630: a SIPS request reaches only phones on a TLS connection
            let registered = bindings.len();
            bindings.retain(|b| binding_flow(b).is_some_and(|f| f.is_tls()));
            if bindings.is_empty() && registered > 0 {
                debug!(%aor, "no binding over TLS for a sips: request");
                let warning = format!(
                    "Warning: 380 {} \"SIPS Not Allowed\"",
                    core.advertised(local, flow.remote())
                );
                return core.reply(&msg, flow, key, 480, "Temporarily Unavailable", &[&warning]);
            }
        }
        let rr = !in_dialog && wants_record_route(method);
        match wake::decide(core, &msg, &aor, &bindings, in_dialog, trusted, now) {
            Decision::Answer(200, _) => core.reply(&msg, flow, key, 200, "OK", &[ALLOW]),
            Decision::Answer(480, _) if message::keep(core, &msg, &flow, key, &aor, &bindings) => {}
            Decision::Answer(code, reason) => {
                debug!(%aor, code, "no reachable binding");
                core.reply(&msg, flow, key, code, reason, &[])
            }
            Decision::Forward(targets, plan) => {
                forward::start(core, msg, flow, local, key, targets, popped, rr, plan)
            }
        }
    }
}

/// Methods that may create a dialog, and so get Record-Route.
fn wants_record_route(m: Method) -> bool {
    matches!(
        m,
        Method::Invite | Method::Subscribe | Method::Refer | Method::Notify | Method::Other
    )
}

/// An ACK that matches no server transaction: the ACK for a 2xx, routed end to end
/// without a transaction (RFC 3261 §16.11).
pub fn forward_ack(core: &Arc<Core>, msg: Message, flow: Flow, local: SocketAddr) {
    let popped = pop_routes(core, &msg, &flow);
    let trusted = core.settings.is_trusted(flow.remote().ip());
    let next = if let Some(n) = popped.next.clone() {
        if popped.ranges.is_empty() && !trusted {
            return;
        }
        Next::Uri(n)
    } else if let Some((a, b)) = popped.token {
        match other_leg(a, b, &flow) {
            Some(dest) => Next::Flow(dest),
            None => Next::Uri(msg.request_uri().to_string()),
        }
    } else if trusted {
        Next::Uri(msg.request_uri().to_string())
    } else {
        return;
    };
    // the usual ACK follows our Record-Route back to a flow: sent from here, no task
    // spawned; only an address that needs resolving waits on a task of its own
    if let Next::Flow(out) = next {
        return send_ack(core, &msg, &flow, local, out, popped.ranges);
    }
    let core = core.clone();
    tokio::spawn(async move {
        let Ok(out) = next_hop::resolve(&core, &next, Some(local)).await else {
            return;
        };
        send_ack(&core, &msg, &flow, local, out, popped.ranges);
    });
}

/// Forwards a 2xx's ACK (RFC 3261 §16.11) over `out`: our Via on top, our Route
/// entries removed.
fn send_ack(
    core: &Arc<Core>,
    msg: &Message,
    flow: &Flow,
    local: SocketAddr,
    out: Flow,
    pop_routes: Vec<std::ops::Range<usize>>,
) {
    let out_local = core.transport.local_addr(&out).unwrap_or(local);
    let branch = core.branches.next(BranchGen::loop_hash(msg));
    let e = RequestEdits {
        via: forward::via_value(
            out.via_transport(),
            &core.advertised(out_local, out.remote()),
            &branch,
            false,
        ),
        src: Some(flow.remote()),
        pop_routes,
        ..Default::default()
    };
    let bytes = forward_request(msg, &e);
    if let Err(err) = core.transport.send(&out, bytes) {
        debug!(error = %err, "ACK not forwarded");
    }
}
