//! Requests from the upstream that come back to a phone in relay mode: along our Path
//! (`Route: <sip:TOKEN@sipwake;lr;ob;sw-aor=…>`) or to one of our rewritten contacts
//! (`sip:TOKEN@sipwake;transport=…;sw-aor=…`). What routed the request here names the
//! phone: the signed flow token, the address of record in `sw-aor`, and (with Path)
//! the registered contact in the Request-URI. `To` is not used to find the binding:
//! a PBX fills it as it likes, and Asterisk puts the contact there
//! (`INVITE sip:alice@10.0.0.7:5060`, `To: <sip:alice@10.0.0.7:5060>`). The binding
//! found then gets the request through the push rules of local mode.
//!
//! Several nodes (`store.backend = "redis"`): each node's Path entries and rewritten
//! contacts name that node, so the upstream's request arrives at the node holding the
//! phone's flow; the bindings are read from Redis, and one that another node owns
//! by now (the phone registered again through it) is reached through that node,
//! one whose owner is gone counts as a failed flow ([`wake::decide`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use super::data::{Decision, Next, OwnRoutes, Target};
use super::forward;
use super::register::public_contact;
use super::wake;
use super::{Core, ALLOW};
use crate::registrar::nodes::Owner;
use crate::registrar::{unix_now_ms, Binding};
use crate::transaction::ServerEntry;
use tracing::debug;

use crate::sip::{HeaderName, Message, NameAddr, Uri};
use crate::transport::Flow;

/// The URI parameter of our Path entries and rewritten contacts that names the
/// address of record the phone registered. A PBX fills `To` of its requests to a
/// contact as it likes (Asterisk puts the contact there), so the binding is found
/// from what routes the request to us: the signed flow token, this parameter, and
/// the registered contact in the Request-URI.
const AOR_PARAM: &str = "sw-aor";

/// `;sw-aor=…` for `aor`, escaped for a URI parameter (RFC 3261 §25.1 `paramchar`).
pub fn aor_param(aor: &str) -> String {
    let mut s = format!(";{AOR_PARAM}=");
    for b in aor.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()[]/:&+$".contains(&b) {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

/// The address of record named by the `sw-aor` parameter of `uri`, if any.
fn aor_of(uri: &Uri<'_>) -> Option<String> {
    let v = uri.param(AOR_PARAM).filter(|v| !v.is_empty())?;
    Some(crate::sip::unescape(v).to_ascii_lowercase())
}

/// A request that came back to us from the upstream, and what routed it here.
#[derive(Debug, Clone)]
pub struct Returning {
    /// The phone's flow, from the signed token.
    pub phone: Flow,
    /// The address of record our Path entry or rewritten contact names (absent in
    /// those made before sipwake wrote it).
    pub aor: Option<String>,
    /// The Request-URI is one of our rewritten contacts (not the phone's contact).
    pub rewritten: bool,
}

/// The phone's flow named by a Request-URI that is one of sipwake's rewritten
/// contacts (a request to sipwake itself whose user part is a flow token).
pub fn rewritten_target(core: &Core, msg: &Message) -> Option<Returning> {
    let u = msg.ruri().ok()?;
    if !core.is_me(u.host, u.port) {
        return None;
    }
    match core.tokens.decode(u.user?) {
        Some((Some(phone), None)) => Some(Returning {
            phone,
            aor: aor_of(&u),
            rewritten: true,
        }),
        _ => None,
    }
}

/// A request that came back along our Path: the phone's flow from the token of our
/// Route entry, and the address of record that entry names.
pub fn path_target(core: &Core, msg: &Message, phone: Flow) -> Returning {
    let aor = msg.values(HeaderName::Route).find_map(|v| {
        let na = NameAddr::parse(v, "Route").ok()?;
        let u = Uri::parse(na.uri).ok()?;
        let tok = u.user?;
        matches!(core.tokens.decode(tok), Some((Some(f), None)) if f == phone)
            .then(|| aor_of(&u))
            .flatten()
    });
    Returning {
        phone,
        aor,
        rewritten: false,
    }
}

/// The address of record a returning request is for: the one our Path entry or
/// rewritten contact names. `To` is only a fallback for Path entries written before
/// they named the address of record: a PBX may put the contact there (Asterisk does).
fn returning_aor(msg: &Message, ret: &Returning) -> Option<String> {
    ret.aor.clone().or_else(|| {
        msg.to()
            .and_then(|t| Uri::parse(t.uri).ok())
            .map(|u| u.aor())
    })
}

/// The bindings a returning request is for, among the AOR's bindings `all`: those
/// on the phone's flow, narrowed to the one whose contact is the Request-URI when it
/// names one; else, the phone having registered the same contact from another flow
/// (or through another node), that binding. With several nodes a flow's name means
/// something only on the node that holds it: the token names a flow of this node,
/// or of a node that is gone (whose address this one took over, so the upstream's
/// request along the dead node's Path arrives here; the binding is then a failed
/// flow, see [`wake::decide`]).
fn returning_bindings(
    core: &Core,
    msg: &Message,
    ret: &Returning,
    all: Vec<Arc<Binding>>,
) -> Vec<Arc<Binding>> {
    let phone_s = ret.phone.to_string();
    let ruri = msg.ruri().ok().map(|u| u.match_key());
    let is_ruri = |b: &Binding| {
        !ret.rewritten
            && Uri::parse(&public_contact(b.contact()))
                .ok()
                .is_some_and(|u| Some(u.match_key()) == ruri)
    };
    let on_flow: Vec<Arc<Binding>> = all
        .iter()
        .filter(|b| {
            b.flow() == Some(phone_s.as_str())
                && matches!(core.registrar.owner(b), Owner::Here | Owner::Gone)
        })
        .cloned()
        .collect();
    let exact: Vec<Arc<Binding>> = on_flow.iter().filter(|b| is_ruri(b)).cloned().collect();
    if !exact.is_empty() {
        exact
    } else if !on_flow.is_empty() {
        on_flow
    } else {
        // the phone registered the same contact again from another flow
        all.into_iter().filter(|b| is_ruri(b)).collect()
    }
}

/// An initial request from the upstream that came back along our Path, or to one of
/// our rewritten contacts: its token names the phone's flow. The phone's bindings get
/// it through the push rules (each target's Request-URI is the phone's contact).
/// With several nodes the bindings are read from Redis first (`503` if it does not
/// answer), and a binding another node owns now is reached through that node.
#[allow(clippy::too_many_arguments)]
pub fn from_path(
    core: &Arc<Core>,
    msg: Message,
    flow: Flow,
    local: SocketAddr,
    key: u64,
    popped: OwnRoutes,
    ret: Returning,
    record_route: bool,
) {
    let back = Back {
        msg,
        flow,
        local,
        key,
        popped,
        ret,
        record_route,
    };
    let Some(aor) = returning_aor(&back.msg, &back.ret) else {
        return back.route(core, String::new(), Vec::new());
    };
    if core.registrar.shared().is_none() {
        let all = core.registrar.lookup(&aor, unix_now_ms());
        return back.route(core, aor, all);
    }
    // several nodes: retransmissions are absorbed while Redis is read
    core.tx.set_server(back.key, ServerEntry::Pending);
    let core = core.clone();
    tokio::spawn(async move {
        match core.registrar.find(&aor, unix_now_ms()).await {
            Ok(all) => {
                // the routing below creates the transaction in place of the marker
                core.tx.remove_server(back.key);
                back.route(&core, aor, all);
            }
            Err(e) => {
                debug!(%aor, error = %e, "bindings not readable");
                core.reply_store_unavailable(&back.msg, back.flow, back.key);
            }
        }
    });
}

/// A returning request waiting for its address of record's bindings.
struct Back {
    msg: Message,
    flow: Flow,
    local: SocketAddr,
    key: u64,
    popped: OwnRoutes,
    ret: Returning,
    record_route: bool,
}

impl Back {
    /// Routes the request to its bindings among `all` (the AOR's, just read).
    fn route(self, core: &Arc<Core>, aor: String, all: Vec<Arc<Binding>>) {
        let Back {
            msg,
            flow,
            local,
            key,
            popped,
            ret,
            record_route,
        } = self;
        let now = unix_now_ms();
        let trusted = core.settings.is_trusted(flow.remote().ip());
        let bindings = returning_bindings(core, &msg, &ret, all);
        if bindings.is_empty() {
            // no binding of ours behind this token any more: straight to the flow, if
            // alive; a rewritten contact names no contact of the phone's to send to
            if ret.rewritten || !core.transport.is_open(&ret.phone) {
                return core.reply(&msg, flow, key, 480, "Temporarily Unavailable", &[]);
            }
            let t = Target::to(Next::Flow(ret.phone));
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
        }
        match wake::decide(core, &msg, &aor, &bindings, false, trusted, now) {
            Decision::Answer(200, _) => core.reply(&msg, flow, key, 200, "OK", &[ALLOW]),
            Decision::Answer(480, _)
                if super::message::keep(core, &msg, &flow, key, &aor, &bindings) => {}
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
}
