//! Push before INVITE, the routing half: which bindings of a local user get the
//! request at once, which devices are pushed, and what the push says about the
//! caller. The push half of the forwarding task ([`super::pushing`]) then parks the
//! call, pushes, and hands the call to each device that wakes.

use std::sync::Arc;

use super::data::{Decision, Next, PushDevice, PushPlan, Target};
use super::Core;
use crate::config::PushPolicy;
use crate::push::{CallPush, PushInfo};
use crate::registrar::nodes::Owner;
use crate::registrar::Binding;
use crate::sip::{unquote, HeaderName, Message, Method, NameAddr, Uri};
use crate::transport::Flow;

/// A binding's push info, when a configured provider can reach it.
pub fn push_info(core: &Core, b: &Binding) -> Option<PushInfo> {
    let info = PushInfo::from_json(b.push().as_deref()?)?;
    core.pusher().serves(info.provider).then_some(info)
}

/// True if the binding's flow showed life within `push.flow_timeout`: a REGISTER, a
/// keep-alive or any other message from that exact UDP address, or bytes read on its
/// open TCP connection. A sleeping phone's NAT mapping dies quietly, so an old flow
/// is not trusted to carry a call.
fn reachable(core: &Core, b: &Binding, flow: &Flow, now_ms: u64) -> bool {
    if !b.is_live(now_ms) || !core.transport.is_open(flow) {
        return false;
    }
    let timeout = core.settings.push.flow_timeout;
    now_ms.saturating_sub(b.updated_at_ms) < timeout.as_millis() as u64
        || core
            .transport
            .liveness()
            .last(flow)
            .is_some_and(|t| t.elapsed() < timeout)
}

fn flow_timeout_ms(core: &Core) -> u64 {
    u64::try_from(core.settings.push.flow_timeout.as_millis()).unwrap_or(u64::MAX)
}

/// A binding whose flow another node holds: sent to that node (its advertise URI)
/// with a Route naming it and carrying the flow token, as an edge proxy's Path entry
/// would (RFC 3327, RFC 5626 §5.3); that node relays it over the flow. `None` when
/// the stored flow is unreadable.
pub fn via_owner(core: &Core, b: &Binding, owner_uri: &str) -> Option<Target> {
    let flow: Flow = b.flow()?.parse().ok()?;
    let token = core.tokens.encode(Some(flow), None);
    let route = owner_route(owner_uri, &token)?;
    let mut path = vec![format!("<{route}>")];
    path.extend(b.path.iter().cloned());
    Some(Target {
        ruri: Some(b.contact().to_owned()),
        next: Next::Uri(route),
        path,
        device: None,
    })
}

/// `sip:host:port;params` → `sip:<token>@host:port;params;lr`.
fn owner_route(owner_uri: &str, token: &str) -> Option<String> {
    let (scheme, rest) = owner_uri.split_once(':')?;
    let rest = rest.trim_start_matches('/');
    Some(format!("{scheme}:{token}@{rest};lr"))
}

/// True if a push-capable binding's flow is known to be alive right now, so a PBX's
/// qualify (OPTIONS) may go to the phone: an open TCP/TLS connection that carried
/// bytes within `push.flow_timeout`, or a UDP flow that sent a keep-alive (or any
/// other message) after its last REGISTER, within `push.flow_timeout`. A UDP phone
/// that registered and went to sleep has sent nothing since, and its NAT mapping may
/// already be gone: the qualify is answered for it rather than time out at the PBX,
/// which would then mark the contact unavailable and never call it.
fn alive_for_qualify(core: &Core, b: &Binding, flow: &Flow, now_ms: u64) -> bool {
    if !b.is_live(now_ms) || !core.transport.is_open(flow) {
        return false;
    }
    let timeout = core.settings.push.flow_timeout;
    let Some(last) = core.transport.liveness().last(flow) else {
        return false;
    };
    let quiet = last.elapsed();
    if quiet >= timeout {
        return false;
    }
    if !flow.is_udp() {
        return true;
    }
    // the REGISTER itself touched the flow: only later traffic shows the phone awake
    let since_register = std::time::Duration::from_millis(now_ms.saturating_sub(b.updated_at_ms));
    quiet + std::time::Duration::from_secs(1) < since_register
}

fn target(b: &Binding, flow: Flow) -> Target {
    Target {
        ruri: Some(b.contact().to_owned()),
        next: Next::Flow(flow),
        path: b.path.clone(),
        device: None,
    }
}

/// Decides how a request for the local user `aor` is handled.
pub fn decide(
    core: &Arc<Core>,
    msg: &Message,
    aor: &str,
    bindings: &[Arc<Binding>],
    in_dialog: bool,
    trusted: bool,
    now_ms: u64,
) -> Decision {
    let initial_invite = msg.method() == Some(Method::Invite) && !in_dialog;
    let qualify = msg.method() == Some(Method::Options) && !in_dialog;
    let policy = core.settings.push.policy;
    let mut targets = Vec::new();
    let mut devices = Vec::new();
    let mut sleeping = 0;
    for b in bindings {
        // several nodes: only the node holding a flow sends over it
        let owner = core.registrar.owner(b);
        let flow: Option<Flow> = match owner {
            Owner::Here => b.flow().and_then(|f| f.parse().ok()),
            Owner::There(_) | Owner::Gone => None,
        };
        let info = push_info(core, b);
        let Some(info) = info else {
            // a plain binding: reachable while registered and its flow is usable
            if let Owner::There(uri) = &owner {
                targets.extend(b.is_live(now_ms).then(|| via_owner(core, b, uri)).flatten());
            } else if let Some(f) = flow.filter(|f| b.is_live(now_ms) && core.transport.is_open(f))
            {
                targets.push(target(b, f));
            }
            continue;
        };
        if qualify {
            // a PBX's qualify reaches the phone only when its flow is known alive; the
            // liveness of another node's flow is not known here, so it is answered for
            match flow.filter(|f| alive_for_qualify(core, b, f, now_ms)) {
                Some(f) => targets.push(target(b, f)),
                None => sleeping += 1,
            }
            continue;
        }
        let reach = match &owner {
            // the owner knows its flow's liveness; from here a recent REGISTER is the sign
            Owner::There(uri) => (b.is_live(now_ms)
                && now_ms.saturating_sub(b.updated_at_ms) < flow_timeout_ms(core))
            .then(|| via_owner(core, b, uri))
            .flatten(),
            Owner::Here | Owner::Gone => flow
                .filter(|f| reachable(core, b, f, now_ms))
                .map(|f| target(b, f)),
        };
        if !initial_invite {
            // only an initial INVITE may push: iOS kills apps whose VoIP pushes are not calls
            match reach {
                Some(t) => targets.push(t),
                None => sleeping += 1,
            }
            continue;
        }
        let push = policy == PushPolicy::Always || reach.is_none();
        let mut t = reach;
        if push {
            if let Some(t) = t.as_mut() {
                t.device = Some(devices.len());
            }
            devices.push(PushDevice {
                key: b.key().to_owned(),
                info,
                got_invite: t.is_some(),
                pushed: false,
                failed: false,
            });
        }
        targets.extend(t);
    }
    if devices.is_empty() {
        if targets.is_empty() {
            if sleeping > 0 && msg.method() == Some(Method::Options) {
                // answered for the sleeping phone, so a PBX's qualify keeps it available
                crate::metrics::global().qualify_answered();
                return Decision::Answer(200, "OK");
            }
            return Decision::Answer(480, "Temporarily Unavailable");
        }
        return Decision::Forward(targets, None);
    }
    // kept for as long as the call is parked: no room for devices that never come
    devices.shrink_to_fit();
    let hint = crate::ids::random_hex(16);
    let call = call_push(core, msg, aor, &hint, trusted);
    let plan = PushPlan {
        aor: aor.to_string(),
        hint,
        call,
        devices,
    };
    Decision::Forward(targets, Some(Box::new(plan)))
}

/// What the push says about the call: caller from P-Asserted-Identity of a trusted
/// source, else From; `Privacy: id` hides it; video if the offer has an active
/// `m=video` line.
pub fn call_push(core: &Core, msg: &Message, aor: &str, hint: &str, trusted: bool) -> CallPush {
    let private = msg
        .header_named("Privacy")
        .is_some_and(|p| p.split(';').any(|v| v.trim().eq_ignore_ascii_case("id")));
    let pai = trusted
        .then(|| msg.values(HeaderName::PAssertedIdentity).next())
        .flatten()
        .and_then(|v| NameAddr::parse(v, "P-Asserted-Identity").ok());
    let who = pai.or_else(|| msg.from());
    let (name, number) = match who {
        Some(na) => {
            // the user part; a URI without one (`sip:pbx.example.com`) gives its host
            let number = Uri::parse(na.uri)
                .ok()
                .map(|u| crate::sip::unescape(u.user.unwrap_or(u.host)).into_owned())
                .unwrap_or_default();
            let name = na
                .display
                .map(|d| unquote(d).replace("\\\"", "\"").trim().to_string())
                .filter(|d| !d.is_empty());
            (name, number)
        }
        None => (None, String::new()),
    };
    let (caller_name, caller_number) = if private {
        (Some("Anonymous".to_string()), "anonymous".to_string())
    } else {
        (name, number)
    };
    CallPush {
        aor: aor.to_string(),
        call_id: msg.call_id().to_string(),
        push_hint: hint.to_string(),
        caller_id: caller_number.clone(),
        caller_name,
        caller_number,
        with_video: has_video(msg.body()),
        call_uuid: crate::ids::uuid_v4(),
        time_left: core.settings.push.wake_timeout,
    }
}

fn has_video(body: &[u8]) -> bool {
    let Ok(sdp) = std::str::from_utf8(body) else {
        return false;
    };
    sdp.lines().any(|l| {
        l.strip_prefix("m=video ")
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|port| port != "0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_needs_a_live_port() {
        assert!(has_video(
            b"v=0\r\nm=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 96\r\n"
        ));
        assert!(!has_video(
            b"v=0\r\nm=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n"
        ));
        assert!(!has_video(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n"));
    }

    #[test]
    fn owner_routes_carry_the_token_and_lr() {
        assert_eq!(
            owner_route("sip:10.0.0.2:5060", "tok").as_deref(),
            Some("sip:tok@10.0.0.2:5060;lr")
        );
        assert_eq!(
            owner_route("sip:n2.example;transport=tcp", "tok").as_deref(),
            Some("sip:tok@n2.example;transport=tcp;lr")
        );
    }
}
