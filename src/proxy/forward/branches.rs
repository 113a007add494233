//! The client branches of a forwarded request: starting one over a flow (our Via,
//! Record-Route and the push hint spliced in), cancelling them (RFC 3261 §9.1: never
//! before a provisional), and dropping a branch whose phone moved to a new flow.

use std::time::Instant;

use bytes::Bytes;
use tracing::debug;

use super::ForwardTask;
use crate::proxy::edit::{cancel_or_ack, forward_request, RequestEdits};
use crate::sip::{HeaderName, Message};
use crate::transaction::{ClientTx, Kind};
use crate::transport::{Flow, SendError};

/// One client branch of the fork.
pub(super) struct Branch {
    pub(super) key: u64,
    pub(super) cancel_key: u64,
    pub(super) flow: Flow,
    /// The request as forwarded, while it may be retransmitted or cancelled; once
    /// the branch has its final response, what a retransmission of that final needs:
    /// the ACK of a non-2xx final to INVITE, else nothing ([`Branch::answered`]).
    pub(super) request: Bytes,
    pub(super) client: ClientTx,
    /// CANCEL sent for this branch (its own client transaction). Boxed: few branches
    /// are cancelled, and every branch is kept while its transaction waits out its
    /// timers (520 → 344 bytes a branch).
    pub(super) cancel: Option<Box<(Bytes, ClientTx)>>,
    /// Cancel as soon as the branch sends a provisional.
    pub(super) cancel_wanted: Option<Option<&'static str>>,
    /// Final status seen (or made up: 408 on timeout, 487 when cancelled silent).
    pub(super) final_code: Option<u16>,
    /// Give up waiting for a cancelled branch's final at this time.
    pub(super) give_up_at: Option<Instant>,
    /// The pushed device this branch reaches, if any.
    pub(super) device: Option<usize>,
    /// Binding key of the branch's device, if it came from a binding.
    pub(super) binding_key: Option<String>,
    /// A provisional other than 100 arrived: the phone is ringing.
    pub(super) ringing: bool,
}

impl Branch {
    /// The branch's final response arrived: from here on it keeps only `ack` (the ACK
    /// it sends again to a retransmitted non-2xx final; empty otherwise), not the
    /// request, for as long as its transaction waits out timer D, K or M.
    pub(super) fn answered(&mut self, ack: Bytes) {
        self.request = ack;
    }
}

impl ForwardTask {
    /// Starts one client branch over `flow`.
    pub(super) fn start_branch(
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
        let out_side = self.core.advertised(out_local, flow.remote());
        if self.record_route {
            let token = self.core.tokens.encode(Some(self.src), Some(flow));
            let sips = self.sips();
            let in_side = self.core.advertised(local, self.src.remote());
            rr.push(record_route(&token, &out_side, &flow, sips));
            // RFC 5658: one entry per side when the legs differ in transport or address
            // (a wildcard socket speaks from a different address toward each side)
            if out_side != in_side || flow.via_transport() != self.src.via_transport() {
                rr.push(record_route(&token, &in_side, &self.src, sips));
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
            via: via_value(flow.via_transport(), &out_side, &branch, true),
            src: Some(self.src.remote()),
            pop_routes: self.popped.clone(),
            record_route: rr,
            push_routes: path.to_vec(),
            strip,
            strip_named,
            extra: &extra,
        };
        let Some(req) = self.req.as_deref() else {
            return;
        };
        let request = forward_request(req, &edits);
        if request.len() > 1300 && flow.is_udp() {
            debug!(
                len = request.len(),
                "forwarded request over 1300 bytes on UDP"
            );
        }
        let idx = self.branches.len();
        let key = self.core.tx.client_key(&branch, req.method_str());
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
        } else if let (Some(d), Some(p)) = (device, self.push.as_deref_mut()) {
            p.got_invite(d);
        }
        self.branches.push(b);
    }

    /// Abandons a branch whose device moved to a new flow.
    pub(super) fn drop_branch(&mut self, i: usize) {
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

    pub(super) fn cancel_all(&mut self, except: Option<usize>, reason: Option<&'static str>) {
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

    pub(super) fn send_cancel(&mut self, idx: usize, reason: Option<&str>) {
        let now = Instant::now();
        let timers = self.core.timers;
        let b = &mut self.branches[idx];
        let Ok(fwd) = Message::parse(b.request.clone(), true) else {
            return;
        };
        let cancel = cancel_or_ack(&fwd, "CANCEL", None, reason);
        let _ = self.core.transport.send(&b.flow, cancel.clone());
        b.cancel = Some(Box::new((
            cancel,
            ClientTx::new(Kind::NonInvite, !b.flow.is_udp(), timers, now),
        )));
        b.give_up_at = Some(now + timers.t64());
    }
}

/// Our Record-Route value for one leg: `sips:` for the TLS leg of a `sips:` dialog
/// (RFC 5630: its route set must be all SIPS), otherwise `sip:` with the leg's
/// transport (`;transport=tls` for other TLS legs, as phones expect).
fn record_route(token: &str, hostport: &str, leg: &Flow, sips: bool) -> String {
    // pieces pushed, not `format!`: one of these per forwarded INVITE
    let mut s = String::with_capacity(token.len() + hostport.len() + 32);
    if sips && leg.is_tls() {
        s.push_str("<sips:");
        s.push_str(token);
        s.push('@');
        s.push_str(hostport);
        s.push_str(";lr>");
    } else {
        s.push_str("<sip:");
        s.push_str(token);
        s.push('@');
        s.push_str(hostport);
        s.push_str(";transport=");
        s.push_str(match leg.via_transport() {
            "UDP" => "udp",
            "TCP" => "tcp",
            _ => "tls",
        });
        s.push_str(";lr>");
    }
    s
}

/// Our Via for a branch: `SIP/2.0/UDP host:port;branch=…` (`;rport` with `rport`).
pub(in crate::proxy) fn via_value(
    transport: &str,
    hostport: &str,
    branch: &str,
    rport: bool,
) -> String {
    let mut s = String::with_capacity(hostport.len() + branch.len() + 32);
    s.push_str("SIP/2.0/");
    s.push_str(transport);
    s.push(' ');
    s.push_str(hostport);
    s.push_str(";branch=");
    s.push_str(branch);
    if rport {
        s.push_str(";rport");
    }
    s
}

pub(super) fn make_ack(request: &Bytes, resp: &Message) -> Bytes {
    match Message::parse(request.clone(), true) {
        Ok(fwd) => cancel_or_ack(&fwd, "ACK", resp.header(HeaderName::To), None),
        Err(_) => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    /// Every branch is kept while its transaction waits out its timers (32 s after a
    /// 2xx): its rare CANCEL stays boxed (issue 13, bytes per transaction).
    #[test]
    fn a_branch_stays_small() {
        let branch = std::mem::size_of::<super::Branch>();
        assert!(branch <= 384, "{branch} bytes");
    }
}
