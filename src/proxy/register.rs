//! REGISTER (RFC 3261 §10.3): parse the request into a registrar update, apply it,
//! and answer with every current contact. Push parameters never leave sipwake: they
//! are cut from the contacts listed in the 200.

use std::sync::Arc;

use tracing::{debug, debug_span, warn};

use super::Core;
use crate::auth::audit;
use crate::config::PushSettings;
use crate::push::token::{extract_with_pns, keep_learnt, TokenError};
use crate::push::{PushInfo, Pusher};
use crate::registrar::{
    unix_now_ms, Binding, ContactSpec, Contacts, PendingEvents, RegisterOutcome, RegisterRequest,
    StoreError,
};
use crate::sip::{params, push_decimal, unquote, HeaderName, Message, NameAddr, Scheme, Uri};
use crate::transaction::ServerEntry;
use crate::transport::Flow;

/// URI parameters that carry push tokens and are never echoed back.
const PRIVATE_PARAMS: [&str; 7] = [
    "pn-provider",
    "pn-prid",
    "pn-param",
    "pn-type",
    "pn-tok",
    "app-id",
    "xtoken",
];

/// Why a REGISTER could not be turned into a registrar update: status and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRegister(pub u16, pub &'static str);

/// RFC 8599 §5.4: a push service sipwake does not serve.
const PNS_UNSUPPORTED: BadRegister = BadRegister(555, "Push Notification Service Not Supported");

fn bad(reason: &'static str) -> BadRegister {
    BadRegister(400, reason)
}

/// Reads a REGISTER into a [`RegisterRequest`].
pub fn parse_register(
    msg: &Message,
    flow: &Flow,
    now_ms: u64,
    push: &PushSettings,
    pusher: &Pusher,
) -> Result<RegisterRequest, BadRegister> {
    parse_register_pns(msg, flow, now_ms, push, pusher).map(|(req, _)| req)
}

/// What [`parse_register_pns`] finds besides the update, in the same pass over the
/// Contacts.
struct Found {
    /// The RFC 8599 push service the first Contact naming one named (`pn-provider`,
    /// for Feature-Caps).
    pns: Option<String>,
    /// Some token's APNs environment is a guess ([`keep_learnt_env`] has work to do).
    env_guessed: bool,
}

/// [`parse_register`], plus what [`Found`] holds.
fn parse_register_pns(
    msg: &Message,
    flow: &Flow,
    now_ms: u64,
    push: &PushSettings,
    pusher: &Pusher,
) -> Result<(RegisterRequest, Found), BadRegister> {
    let mut first_pns = None;
    let mut env_guessed = false;
    let token_header = msg.header_named(&push.token_header);
    let to = msg.to().ok_or(bad("Malformed To header"))?;
    let to_uri = Uri::parse(to.uri).map_err(|_| bad("To is not a SIP URI"))?;
    if to_uri.scheme == Scheme::Tel || to_uri.user.is_none() {
        return Err(bad("To is not a SIP address-of-record"));
    }
    let expires_header = match msg.header(HeaderName::Expires) {
        Some(v) => Some(parse_expires(v).ok_or(bad("Malformed Expires header"))?),
        None => None,
    };
    let values: Vec<&str> = msg.values(HeaderName::Contact).collect();
    let contacts = if values.is_empty() {
        Contacts::Query
    } else if values.len() == 1 && values[0] == "*" {
        Contacts::Star
    } else {
        let mut list = Vec::with_capacity(values.len());
        for v in values {
            if v == "*" {
                return Err(bad("Contact * mixed with other contacts"));
            }
            let na = NameAddr::parse(v, "Contact").map_err(|_| bad("Malformed Contact header"))?;
            let uri = Uri::parse(na.uri).map_err(|_| bad("Contact is not a SIP URI"))?;
            if uri.scheme == Scheme::Tel {
                return Err(bad("Contact is not a SIP URI"));
            }
            let (info, pns) =
                extract_with_pns(uri.params, token_header, push, now_ms).map_err(|e| match e {
                    TokenError::UnsupportedProvider(_) => PNS_UNSUPPORTED,
                    TokenError::Malformed(why) => bad(why),
                })?;
            // an RFC 8599 provider we cannot push to is refused; a bare token is kept
            // (it becomes usable once its provider is configured)
            if pns.is_some() && info.as_ref().is_some_and(|i| !pusher.serves(i.provider)) {
                return Err(PNS_UNSUPPORTED);
            }
            if first_pns.is_none() {
                first_pns = pns;
            }
            env_guessed |= info.as_ref().is_some_and(|i| i.env_guessed);
            let mut spec = ContactSpec {
                uri: na.uri.to_string(),
                match_key: uri.match_key(),
                token_key: info.as_ref().map(|i| {
                    let provider = i.provider.as_str();
                    let mut key = String::with_capacity(provider.len() + 1 + i.token.len());
                    key.push_str(provider);
                    key.push(':');
                    key.push_str(&i.token);
                    key
                }),
                push: info.map(|i| i.to_json()),
                ..Default::default()
            };
            for (n, val) in params(na.params) {
                if n.eq_ignore_ascii_case("expires") {
                    spec.expires =
                        Some(parse_expires(val).ok_or(bad("Malformed expires parameter"))?);
                } else if n.eq_ignore_ascii_case("q") {
                    spec.q = Some(parse_q(val).ok_or(bad("Malformed q parameter"))?);
                } else if n.eq_ignore_ascii_case("+sip.instance") {
                    spec.instance = Some(unquote(val).to_string());
                } else if n.eq_ignore_ascii_case("reg-id") {
                    spec.reg_id = Some(val.parse().map_err(|_| bad("Malformed reg-id parameter"))?);
                }
            }
            list.push(spec);
        }
        Contacts::List(list)
    };
    let req = RegisterRequest {
        aor: to_uri.aor(),
        call_id: msg.call_id().to_string(),
        cseq: msg.cseq().0,
        expires_header,
        contacts,
        flow: Some(flow.text()),
        user_agent: msg.header(HeaderName::UserAgent).map(str::to_string),
        path: msg.values(HeaderName::Path).map(str::to_string).collect(),
        now_ms,
        node: None,
    };
    Ok((
        req,
        Found {
            pns: first_pns,
            env_guessed,
        },
    ))
}

/// [`keep_learnt_env`] as the registrar's [`crate::registrar::ContactRule`], for a
/// shared store: applied to the bindings the REGISTER's read of Redis returns.
pub fn learnt_env_rule() -> crate::registrar::ContactRule {
    Arc::new(|req, bindings| keep_learnt_env(req, || bindings.to_vec()))
}

/// A bare APNs token whose environment a push has learnt keeps it when the phone
/// registers the token again (see [`crate::push::token::keep_learnt`]).
/// `existing` gives the AOR's bindings; it is only called when a token's environment
/// is a guess.
fn keep_learnt_env(req: &mut RegisterRequest, existing: impl FnOnce() -> Vec<Arc<Binding>>) {
    let Contacts::List(specs) = &mut req.contacts else {
        return;
    };
    let mut existing = Some(existing);
    let mut bindings = Vec::new();
    for spec in specs {
        let Some(mut info) = spec.push.as_deref().and_then(PushInfo::from_json) else {
            continue;
        };
        if !info.env_guessed {
            continue;
        }
        if let Some(f) = existing.take() {
            bindings = f();
        }
        let learnt = bindings
            .iter()
            .filter_map(|b| PushInfo::from_json(b.push().as_deref()?))
            .find(|old| old.token == info.token && !old.env_guessed);
        if let Some(old) = learnt {
            keep_learnt(&mut info, &old);
            spec.push = Some(info.to_json());
        }
    }
}

fn parse_expires(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // RFC 3261 §20.19: values above 2**32-1 mean 2**32-1
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u32::MAX as u64) as u32),
    )
}

fn parse_q(v: &str) -> Option<u16> {
    let f: f32 = v.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&f)
        .then(|| (f * 1000.0).round() as u16)
}

/// The contact URI with push parameters removed.
pub fn public_contact(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    push_public_contact(&mut out, uri);
    out
}

/// Appends [`public_contact`] of `uri` to `out`.
fn push_public_contact(out: &mut String, uri: &str) {
    let Some(semi) = memchr::memchr(b';', uri.as_bytes()) else {
        out.push_str(uri);
        return;
    };
    let (base, rest) = uri.split_at(semi);
    let (params_part, headers) = match memchr::memchr(b'?', rest.as_bytes()) {
        Some(q) => rest.split_at(q),
        None => (rest, ""),
    };
    out.push_str(base);
    for p in params_part.split(';').filter(|p| !p.is_empty()) {
        let name = p.split('=').next().unwrap_or("");
        if !PRIVATE_PARAMS.iter().any(|x| x.eq_ignore_ascii_case(name)) {
            out.push(';');
            out.push_str(p);
        }
    }
    out.push_str(headers);
}

pub(crate) fn contact_line(b: &Binding, now_ms: u64) -> String {
    let mut s = String::with_capacity(b.contact().len() + 64);
    push_contact_line(&mut s, b, now_ms);
    s
}

/// Appends the `Contact:` line (no CRLF) announcing `b` in a 200 to `out`.
fn push_contact_line(s: &mut String, b: &Binding, now_ms: u64) {
    s.push_str("Contact: <");
    push_public_contact(s, b.contact());
    s.push_str(">;expires=");
    push_decimal(s, u64::from(b.expires_in(now_ms)));
    if let Some(q) = b.q {
        s.push_str(";q=");
        push_decimal(s, u64::from(q / 1000));
        s.push('.');
        let frac = q % 1000;
        s.push_str(if frac < 10 {
            "00"
        } else if frac < 100 {
            "0"
        } else {
            ""
        });
        push_decimal(s, u64::from(frac));
    }
    if let Some(i) = &b.instance() {
        s.push_str(";+sip.instance=\"");
        s.push_str(i);
        s.push('"');
    }
    if let Some(r) = b.reg_id {
        s.push_str(";reg-id=");
        push_decimal(s, u64::from(r));
    }
}

/// Answers a REGISTER that could not be read into an update; a `555` (a push service
/// sipwake does not serve) gets a security log line, so an operator asking why an app
/// cannot register finds the reason.
pub fn refuse(core: &Arc<Core>, msg: &Message, flow: Flow, key: u64, bad: BadRegister) {
    let BadRegister(code, reason) = bad;
    if code == PNS_UNSUPPORTED.0 {
        audit::register_refused(flow.remote(), &audit::aor_of(msg.to()), code, reason);
    }
    core.reply(msg, flow, key, code, reason, &[]);
}

/// Handles a REGISTER for a served domain.
pub fn handle(core: &Arc<Core>, msg: Message, flow: Flow, key: u64) {
    if let Some(Err(a)) = core.auth().map(|auth| auth.register(&msg)) {
        if audit::is_failure(a.code, a.reason) {
            audit::auth_failed(flow.remote(), &audit::aor_of(msg.to()), a.code, a.reason);
        }
        return core.reply(&msg, flow, key, a.code, a.reason, &a.lines());
    }
    let now_ms = unix_now_ms();
    let (mut req, found) =
        match parse_register_pns(&msg, &flow, now_ms, &core.settings.push, &core.pusher()) {
            Ok(r) => r,
            Err(bad) => return refuse(core, &msg, flow, key, bad),
        };
    // after authentication: only the AOR's owner spends its budget
    if super::limits::register_over_aor_limit(core, &msg, &flow, &req.aor, true) {
        return;
    }
    if found.env_guessed && core.registrar.shared().is_none() {
        // only then is the push info read back (most REGISTERs carry none guessed);
        // several nodes: the registrar applies it to the AOR as read from Redis
        // (`learnt_env_rule`)
        let aor = req.aor.clone();
        keep_learnt_env(&mut req, || core.registrar.lookup(&aor, now_ms));
    }
    let pns = found.pns;
    if core.registrar.shared().is_some() {
        // the flow is this node's: the others reach the phone through it
        req.node = Some(core.settings.cluster.node_id.clone());
    }
    // RFC 8599 §5.4: confirm the push service the phone named (`pns`, read above)
    // absorb retransmissions while the store commits
    core.tx.set_server(key, ServerEntry::Pending);
    let core = core.clone();
    let span = debug_span!("register", aor = %req.aor, call_id = %req.call_id);
    // The answer is sent by whichever thread finishes the commit (the store's own for
    // SQLite); entering the runtime there lets the send path spawn if a socket is full.
    let runtime = tokio::runtime::Handle::try_current().ok();
    // A REGISTER that wakes a parked call is finished on the runtime instead: there
    // the woken call's task runs right after the 200 OK, so its INVITE follows at
    // once rather than when the store thread next yields the CPU.
    let on_runtime = runtime.clone().filter(|_| core.parked.waits_for(&req.aor));
    let registrar = core.registrar.clone();
    // several nodes only: the AOR, for the idle-timeout bookkeeping below
    let shared_aor = core.registrar.shared().map(|_| req.aor.clone());
    let finish = move |outcome: Result<RegisterOutcome, StoreError>, events: PendingEvents| {
        let _runtime = runtime.as_ref().map(|r| r.enter());
        let _span = span.enter();
        let now_ms = unix_now_ms();
        match outcome {
            Ok(RegisterOutcome::Ok { bindings }) => {
                // a push binding kept past its expiry is not registered in SIP terms;
                // the Contact lines go into one text, CRLF between them
                let mut contacts = String::with_capacity(bindings.len() * 160);
                for b in bindings.iter().filter(|b| b.is_live(now_ms)) {
                    if !contacts.is_empty() {
                        contacts.push_str("\r\n");
                    }
                    push_contact_line(&mut contacts, b, now_ms);
                }
                let mut lines: Vec<String> = Vec::new();
                if let Some(p) = &pns {
                    lines.push(format!("Feature-Caps: *;+sip.pns=\"{p}\";+sip.pnsreg"));
                }
                let outbound = bindings.iter().any(|b| b.reg_id.is_some())
                    && msg
                        .values(HeaderName::Supported)
                        .any(|v| v.eq_ignore_ascii_case("outbound"));
                if outbound {
                    // RFC 5626 §6: the registrar confirms outbound is in use
                    lines.push("Require: outbound".into());
                    // keep-alive interval advice (RFC 5626 §4.4.1): NATs forget UDP fast
                    let secs = if flow.is_udp() { 29 } else { 120 };
                    lines.push(format!("Flow-Timer: {secs}"));
                }
                if !flow.is_udp() {
                    let me = flow.text();
                    if let Some(aor) = &shared_aor {
                        // several nodes: the idle timeout cannot ask Redis; it is told
                        // until when this AOR's bindings on the connection live
                        let until = bindings
                            .iter()
                            .filter(|x| x.is_live(now_ms) && x.flow() == Some(me.as_str()))
                            .map(|x| x.expires_at)
                            .max()
                            .unwrap_or(0);
                        core.anchors
                            .note_until(&flow, aor, until.saturating_mul(1000));
                    }
                    if let Some(b) = bindings
                        .iter()
                        .find(|b| b.is_live(now_ms) && b.flow() == Some(me.as_str()))
                    {
                        // the idle timeout spares this connection while it carries a
                        // live binding; the phone's keep-alives keep its NAT open
                        core.anchors.note(&flow, b.aor());
                        if !outbound {
                            lines.push("Flow-Timer: 120".into());
                        }
                    }
                }
                let refs: Vec<&str> = std::iter::once(contacts.as_str())
                    .filter(|c| !c.is_empty())
                    .chain(lines.iter().map(String::as_str))
                    .collect();
                core.reply(&msg, flow, key, 200, "OK", &refs);
            }
            Ok(RegisterOutcome::IntervalTooBrief { min_expires }) => {
                let line = format!("Min-Expires: {min_expires}");
                core.reply(&msg, flow, key, 423, "Interval Too Brief", &[&line]);
            }
            Ok(RegisterOutcome::Invalid(reason)) => core.reply(&msg, flow, key, 400, reason, &[]),
            Ok(RegisterOutcome::OutOfOrder) => {
                core.reply(&msg, flow, key, 400, "CSeq out of order", &[])
            }
            Err(e @ StoreError::Redis(_)) => {
                warn!(error = %e, "shared binding store failed");
                core.reply_store_unavailable(&msg, flow, key);
            }
            Err(e) => {
                warn!(error = %e, "binding store failed");
                core.reply(&msg, flow, key, 500, "Store Failure", &["Retry-After: 5"]);
            }
        }
        debug!("register answered");
        // only now, with the answer out, do the bindings it created or refreshed wake
        // the calls parked for them (see `park`): their INVITEs follow the 200 OK
        events.publish();
    };
    match on_runtime {
        Some(rt) => registrar.register_then(req, move |outcome, events| {
            rt.spawn(async move { finish(outcome, events) });
        }),
        None => registrar.register_then(req, finish),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn push_params_never_echoed() {
        assert_eq!(
            public_contact(
                "sip:a@127.0.0.9:5999;transport=tcp;pn-provider=apns;pn-prid=ABC;xToken=zz;ob"
            ),
            "sip:a@127.0.0.9:5999;transport=tcp;ob"
        );
        assert_eq!(public_contact("sip:a@h"), "sip:a@h");
    }

    #[test]
    fn register_is_read_into_an_update() {
        let raw = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5999;branch=z9hG4bK1\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@Example.com>\r\nCall-ID: r1\r\nCSeq: 4 REGISTER\r\nContact: <sip:alice@127.0.0.9:5999;ob>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;q=0.5;expires=120\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(Bytes::from(raw), true).unwrap();
        let flow = Flow::Udp {
            socket: 0,
            remote: "127.0.0.1:40000".parse().unwrap(),
        };
        let ps = PushSettings::default();
        let r = parse_register(&m, &flow, 1, &ps, &Pusher::new(&ps).unwrap()).unwrap();
        assert_eq!(r.aor, "alice@example.com");
        assert_eq!(r.cseq, 4);
        assert_eq!(r.expires_header, Some(600));
        let Contacts::List(l) = r.contacts else {
            panic!()
        };
        assert_eq!(l[0].instance.as_deref(), Some("<urn:uuid:1>"));
        assert_eq!(l[0].reg_id, Some(1));
        assert_eq!(l[0].q, Some(500));
        assert_eq!(l[0].expires, Some(120));
        assert_eq!(r.flow.as_deref(), Some("udp/0/127.0.0.1:40000"));
    }

    #[test]
    fn a_token_without_instance_is_the_device_identity() {
        let raw = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK1\r\nFrom: <sip:bob@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: r9\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@127.0.0.1:5999>\r\nX-Token: fcm-token-1\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(Bytes::from(raw), true).unwrap();
        let flow = Flow::Udp {
            socket: 0,
            remote: "127.0.0.1:5999".parse().unwrap(),
        };
        let ps = PushSettings::default();
        let r = parse_register(&m, &flow, 1, &ps, &Pusher::new(&ps).unwrap()).unwrap();
        let Contacts::List(l) = r.contacts else {
            panic!()
        };
        assert_eq!(l[0].binding_key(), "t:fcm:fcm-token-1");
        assert!(l[0]
            .push
            .as_deref()
            .is_some_and(|p| p.contains("fcm-token-1")));
    }

    #[test]
    fn non_sip_to_is_refused() {
        let raw = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <http://x>;tag=1\r\nTo: <http://x>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\n\r\n";
        let m = Message::parse(Bytes::from(raw), true).unwrap();
        let flow = Flow::Udp {
            socket: 0,
            remote: "127.0.0.1:1".parse().unwrap(),
        };
        let ps = PushSettings::default();
        assert!(parse_register(&m, &flow, 1, &ps, &Pusher::new(&ps).unwrap()).is_err());
    }
}
