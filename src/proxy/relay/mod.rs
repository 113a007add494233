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
//!   contact, carry the flow token and (`;sw-aor=`) the address of record: they go
//!   to the phone's binding through the push rules of local mode
//!   ([`super::returning`]).
//! - A contact with a push token goes up for as long as sipwake would push it (the
//!   phone's expiry plus `push.binding_ttl_secs`), so a phone asleep past
//!   `relay.upstream_expires` stays in the PBX's list.
//! - Requests from phones go to the upstream with Record-Route.
//!
//! The task that relays one REGISTER and answers the phone is in `register_task.rs`.

mod register_task;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tracing::{debug, debug_span, Instrument};

use super::data::OwnRoutes;
use super::edit::pop_via;
use super::register::{self, parse_register, public_contact};
use super::returning::aor_param;
use super::Core;
use crate::registrar::nodes::Owner;
use crate::registrar::{unix_now_ms, Binding, Contacts, RegisterRequest};
use crate::sip::{params, split_commas, HeaderName, Message, NameAddr, Splice};
use crate::transaction::{Kind, ServerEntry, ServerTx};
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
        Err(bad) => return register::refuse(core, &msg, flow, key, bad),
    };
    // the upstream authenticates: its 2xx charges the AOR (see limits)
    if super::limits::register_over_aor_limit(core, &msg, &flow, &req.aor, false) {
        return;
    }
    if core.registrar.shared().is_none() {
        let existing = core.registrar.lookup(&req.aor, now_ms);
        return relay_with(core, msg, flow, local, key, popped, req, existing);
    }
    // several nodes: the flow is this node's, as is the Path relayed for it; the
    // AOR's bindings are in Redis, read while retransmissions are absorbed
    let mut req = req;
    req.node = Some(core.settings.cluster.node_id.clone());
    core.tx.set_server(key, ServerEntry::Pending);
    let core = core.clone();
    tokio::spawn(async move {
        match core.registrar.find(&req.aor, unix_now_ms()).await {
            Ok(existing) => {
                // relaying creates the transaction in place of the marker
                core.tx.remove_server(key);
                relay_with(&core, msg, flow, local, key, popped, req, existing);
            }
            Err(e) => {
                debug!(aor = %req.aor, error = %e, "bindings not readable");
                core.reply_store_unavailable(&msg, flow, key);
            }
        }
    });
}

/// Relays a REGISTER whose AOR currently has the bindings `existing` (or answers a
/// throttled refresh here).
#[allow(clippy::too_many_arguments)]
fn relay_with(
    core: &Arc<Core>,
    msg: Message,
    flow: Flow,
    local: SocketAddr,
    key: u64,
    popped: OwnRoutes,
    req: RegisterRequest,
    existing: Vec<Arc<Binding>>,
) {
    let now_ms = unix_now_ms();
    if throttled(core, &req, &existing, now_ms) {
        debug!(aor = %req.aor, "refresh answered locally (relay throttle)");
        return register::handle(core, msg, flow, key);
    }
    let contacts = match upstream_contacts(core, &msg, &req, &existing, None) {
        Ok(c) => c,
        Err(reason) => return core.reply(&msg, flow, key, 400, reason, &[]),
    };
    let (tx, rx) = crate::transaction::task_channel();
    if !core.tx.insert_server(key, ServerEntry::Task(tx.clone())) {
        return;
    }
    let span = debug_span!("relay-register", aor = %req.aor, call_id = %req.call_id);
    let task = register_task::RegisterRelay {
        core: core.clone(),
        server: ServerTx::new(Kind::NonInvite, !flow.is_udp(), core.timers),
        msg,
        src: flow,
        local,
        key,
        req,
        existing,
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
/// here and name the phone's flow; `sw-aor` names the address of record.
fn rewritten_uri(core: &Core, phone: Flow, rw: &Rewrite<'_>, aor: &str) -> String {
    let key = core.tokens.encode(Some(phone), None);
    let tp = rw.transport.to_ascii_lowercase();
    format!("sip:{key}@{};transport={tp}{}", rw.hostport, aor_param(aor))
}

/// The Contact lines for the upstream, or `None` to forward Contact/Expires as sent
/// (query, `*`). With `rewrite`, each contact is replaced by sipwake's own for the
/// phone's flow (`src`), and the stale and removed ones name the flows the upstream
/// knows them by.
fn upstream_contacts(
    core: &Core,
    msg: &Message,
    req: &RegisterRequest,
    existing: &[Arc<Binding>],
    rewrite: Option<(&Rewrite<'_>, Flow)>,
) -> Result<Option<Vec<String>>, &'static str> {
    let Contacts::List(specs) = &req.contacts else {
        return Ok(None);
    };
    let up_expires = core.settings.relay.upstream_expires;
    let mut lines = Vec::with_capacity(specs.len() + 1);
    let mut sent: Vec<String> = Vec::new();
    let binding_uri = |b: &Binding| -> Option<String> {
        match rewrite {
            // several nodes: the contact another node registered names that node,
            // whose address toward the upstream this one does not know
            Some(_) if core.registrar.owner(b) != Owner::Here => None,
            Some((rw, _)) => b
                .flow()
                .and_then(|f| f.parse::<Flow>().ok())
                .map(|f| rewritten_uri(core, f, rw, b.aor())),
            None => Some(upstream_uri(core, b.contact())),
        }
    };
    for (raw, spec) in msg.values(HeaderName::Contact).zip(specs) {
        let na = NameAddr::parse(raw, "Contact").map_err(|_| "Malformed Contact header")?;
        let uri = match rewrite {
            Some((rw, src)) => rewritten_uri(core, src, rw, &req.aor),
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
        let expires = if gone {
            0
        } else {
            upstream_expiry(core, spec, req.expires_header, up_expires)
        };
        let _ = write!(line, ";expires={expires}");
        lines.push(line);
        sent.push(uri.clone());
        if gone && rewrite.is_none() {
            continue;
        }
        // a device back from a new address (relaunched by a push): its old contact
        // goes, or the upstream keeps forking to a dead one; with rewriting, a
        // removal also names the flow the upstream knows the contact by
        let bkey = spec.binding_key();
        for b in existing.iter().filter(|b| b.key() == bkey) {
            let Some(old) = binding_uri(b) else { continue };
            if old != uri && !sent.contains(&old) {
                lines.push(format!("Contact: <{old}>;expires=0"));
                sent.push(old);
            }
        }
    }
    Ok(Some(lines))
}

/// The expiry asked of the upstream for one contact: `relay.upstream_expires`, and
/// for a contact with a push token at least as long as sipwake keeps it callable by
/// push (the phone's own expiry plus `push.binding_ttl_secs`, plus
/// `relay.refresh_throttle_secs`, since a refresh answered here extends sipwake's
/// binding but not the upstream's). A sleeping phone cannot refresh; if the PBX
/// dropped its contact before sipwake stopped pushing, the PBX would never call it
/// again.
fn upstream_expiry(
    core: &Core,
    spec: &crate::registrar::ContactSpec,
    header: Option<u32>,
    up_expires: u32,
) -> u32 {
    if spec.push.is_none() {
        return up_expires;
    }
    let reg = &core.settings.registrar;
    let push = &core.settings.push;
    let own = spec
        .expires
        .or(header)
        .unwrap_or(reg.default_expires)
        .min(push.max_expires.max(reg.max_expires));
    let covering = u64::from(own)
        .saturating_add(push.binding_ttl.as_secs())
        .saturating_add(core.settings.relay.refresh_throttle.as_secs());
    u32::try_from(covering).unwrap_or(u32::MAX).max(up_expires)
}

/// The startup warning when push bindings outlive `relay.upstream_expires`: what
/// sipwake then asks of the upstream, and which PBX setting must allow it.
pub fn expiry_warning(settings: &crate::config::Settings) -> Option<String> {
    if settings.registrar.mode != crate::config::RegistrarMode::Relay {
        return None;
    }
    let up = u64::from(settings.relay.upstream_expires);
    let ttl = settings.push.binding_ttl.as_secs();
    (ttl > up).then(|| {
        format!(
            "push.binding_ttl_secs ({ttl} s) is longer than relay.upstream_expires ({up} s): \
             contacts with a push token are registered upstream for the phone's expiry plus \
             push.binding_ttl_secs, so the PBX keeps a sleeping phone callable while sipwake \
             would push it; the PBX must accept that expiry (Asterisk: maximum_expiration on \
             the AOR; Kamailio: registrar max_expires), or it cuts the binding short"
        )
    })
}

/// A refresh that changes nothing and came soon after the last relayed one, for a
/// binding stored from this very flow (with several nodes: not one another node
/// registered since, whose Path the upstream now holds).
fn throttled(core: &Core, req: &RegisterRequest, live: &[Arc<Binding>], now_ms: u64) -> bool {
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
    let state = core.relay.lock();
    specs.iter().all(|s| {
        let expires = s.expires.or(req.expires_header);
        let key = s.binding_key();
        expires != Some(0)
            && live.iter().any(|b| {
                b.key() == key
                    && b.is_live(now_ms)
                    && b.flow() == req.flow.as_deref()
                    && core.registrar.owner(b) == Owner::Here
            })
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
