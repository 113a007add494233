//! Calls from and to the test phone: the [`Invite`] a [`Ua`] sent, the [`Dialog`] it
//! is in, and the requests and responses of a call (INVITE, CANCEL, ACK, in-dialog
//! requests, replies).

use std::net::SocketAddr;

use super::*;

/// An INVITE we sent, with what is needed to CANCEL or ACK it.
#[derive(Clone, Debug)]
pub struct Invite {
    /// The request as sent.
    pub text: String,
    /// Request-URI.
    pub ruri: String,
    /// Call-ID.
    pub call_id: String,
    /// From header value (with tag).
    pub from: String,
    /// To header value (no tag).
    pub to: String,
    /// From tag.
    pub from_tag: String,
    /// Top Via branch.
    pub branch: String,
    /// CSeq number.
    pub cseq: u32,
    /// Route header lines sent with it (none normally).
    pub route: Vec<String>,
}

/// One side of a dialog, RFC 3261 §12.
#[derive(Clone, Debug)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our URI (From of our requests), without tag.
    pub local_uri: String,
    /// Our tag.
    pub local_tag: String,
    /// Peer URI, without tag.
    pub remote_uri: String,
    /// Peer tag.
    pub remote_tag: String,
    /// Peer's Contact URI: the Request-URI of our in-dialog requests.
    pub remote_target: String,
    /// Route set (URIs, in the order of our Route headers).
    pub route_set: Vec<String>,
    /// Last CSeq we used.
    pub local_cseq: u32,
}

impl Dialog {
    /// UAC side, from our INVITE and the 2xx (or 1xx with tag) that answered it: the
    /// route set is the response's Record-Route reversed.
    pub fn uac(inv: &Invite, resp: &Msg) -> Dialog {
        let mut route_set: Vec<String> = resp
            .values("record-route")
            .iter()
            .map(|v| uri_of(v))
            .collect();
        route_set.reverse();
        Dialog {
            call_id: inv.call_id.clone(),
            local_uri: uri_of(&inv.from),
            local_tag: inv.from_tag.clone(),
            remote_uri: uri_of(&inv.to),
            remote_tag: resp
                .to_tag()
                .unwrap_or_else(|| panic!("response without To tag: {resp:?}")),
            remote_target: resp
                .contact_uri()
                .unwrap_or_else(|| panic!("2xx without Contact: {resp:?}")),
            route_set,
            local_cseq: inv.cseq,
        }
    }

    /// UAS side, from the INVITE we received and the tag we answer with: the route set
    /// is the INVITE's Record-Route as is.
    pub fn uas(req: &Msg, local_tag: &str) -> Dialog {
        Dialog {
            call_id: req.call_id().to_owned(),
            local_uri: uri_of(req.header("to").unwrap_or("")),
            local_tag: local_tag.to_owned(),
            remote_uri: uri_of(req.header("from").unwrap_or("")),
            remote_tag: req.tag_from().unwrap_or_default(),
            remote_target: req
                .contact_uri()
                .unwrap_or_else(|| panic!("INVITE without Contact: {req:?}")),
            route_set: req
                .values("record-route")
                .iter()
                .map(|v| uri_of(v))
                .collect(),
            local_cseq: 100,
        }
    }

    /// Where in-dialog requests go: the first Route (loose routing) or else the remote
    /// target; transport from its `transport` parameter.
    pub fn next_hop(&self) -> (SocketAddr, Tp) {
        let uri = self.route_set.first().unwrap_or(&self.remote_target);
        let addr = uri_addr(uri)
            .unwrap_or_else(|| panic!("next hop {uri} is not an IP address (dialog {self:?})"));
        let tp = match uri_param(uri, "transport") {
            Some(t) if t.eq_ignore_ascii_case("tcp") => Tp::Tcp,
            Some(t) if t.eq_ignore_ascii_case("tls") => Tp::Tls,
            _ if uri.starts_with("sips:") => Tp::Tls,
            _ => Tp::Udp,
        };
        (addr, tp)
    }
}

impl Ua {
    /// Sends an INVITE for `to_user@domain` through the proxy, with extra header lines.
    pub fn invite(&mut self, to_user: &str, extra: &str) -> Invite {
        let ruri = format!("sip:{to_user}@{}", self.domain);
        self.invite_uri(&ruri, extra)
    }

    /// Sends an INVITE with this Request-URI (To = the same URI).
    pub fn invite_uri(&mut self, ruri: &str, extra: &str) -> Invite {
        let inv = self.build_invite(ruri, extra);
        self.send(&inv.text);
        inv
    }

    /// Builds (does not send) an INVITE with this Request-URI (To = the same URI).
    pub fn build_invite(&self, ruri: &str, extra: &str) -> Invite {
        let cid = call_id();
        let ftag = tag();
        let br = branch();
        let from = format!("<{}>;tag={ftag}", self.aor());
        let to = format!("<{ruri}>");
        let head = format!(
            "INVITE {ruri} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <{contact}>\r\n\
             Content-Type: application/sdp\r\n",
            via = self.via(&br),
            contact = self.contact_uri(),
        );
        let text = with_body(&head, extra, SDP);
        Invite {
            text,
            ruri: ruri.to_owned(),
            call_id: cid,
            from,
            to,
            from_tag: ftag,
            branch: br,
            cseq: 1,
            route: extra
                .split("\r\n")
                .filter(|l| l.to_ascii_lowercase().starts_with("route:"))
                .map(|l| l.to_owned())
                .collect(),
        }
    }

    /// CANCELs an INVITE we sent (same branch, Request-URI, Call-ID, From, To, CSeq).
    pub fn cancel(&mut self, inv: &Invite) {
        let mut text = format!(
            "CANCEL {ruri} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {n} CANCEL\r\n",
            ruri = inv.ruri,
            via = self.via(&inv.branch),
            from = inv.from,
            to = inv.to,
            cid = inv.call_id,
            n = inv.cseq,
        );
        for r in &inv.route {
            text.push_str(r);
            text.push_str("\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        self.send(&text);
    }

    /// ACK for a non-2xx final response: same branch, hop by hop to the proxy.
    pub fn ack_non2xx(&mut self, inv: &Invite, resp: &Msg) {
        let text = format!(
            "ACK {ruri} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {n} ACK\r\n\
             Content-Length: 0\r\n\r\n",
            ruri = inv.ruri,
            via = self.via(&inv.branch),
            from = inv.from,
            to = resp.header("to").unwrap_or(&inv.to),
            cid = inv.call_id,
            n = inv.cseq,
        );
        self.send(&text);
    }

    /// Builds an in-dialog request (new branch) and sends it along the route set;
    /// returns its text. `cseq` None: the next local CSeq.
    pub fn send_in_dialog(&mut self, d: &mut Dialog, method: &str, cseq: Option<u32>) -> String {
        let n = match cseq {
            Some(n) => n,
            None => {
                d.local_cseq += 1;
                d.local_cseq
            }
        };
        let mut text = format!(
            "{method} {target} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n",
            target = d.remote_target,
            via = self.via(&branch()),
        );
        for r in &d.route_set {
            text.push_str(&format!("Route: <{r}>\r\n"));
        }
        text.push_str(&format!(
            "From: <{}>;tag={}\r\n\
             To: <{}>;tag={}\r\n\
             Call-ID: {}\r\n\
             CSeq: {n} {method}\r\n\
             Contact: <{}>\r\n\
             Content-Length: 0\r\n\r\n",
            d.local_uri,
            d.local_tag,
            d.remote_uri,
            d.remote_tag,
            d.call_id,
            self.contact_uri(),
        ));
        let (addr, tp) = d.next_hop();
        self.send_to(addr, tp, text.as_bytes());
        text
    }

    /// ACK for a 2xx: end to end, along the route set, CSeq number of the INVITE.
    pub fn ack_2xx(&mut self, d: &mut Dialog, invite_cseq: u32) {
        self.send_in_dialog(d, "ACK", Some(invite_cseq));
    }

    /// Sends a response to `req` back where it came from (UDP: the address in the top
    /// Via, honouring received/rport; TCP: our connection). `to_tag` is added to To
    /// when To has none. Record-Route is copied for 1xx/2xx to INVITE, and a Contact
    /// added for 101..=299 to INVITE. A 2xx to INVITE carries an SDP answer.
    pub fn reply(&mut self, req: &Msg, code: u16, reason: &str, to_tag: Option<&str>) {
        let text = self.response_text(req, code, reason, to_tag, "");
        self.send_response(req, &text);
    }

    /// The text of a response to `req` (see [`Ua::reply`]); `extra` header lines.
    pub fn response_text(
        &self,
        req: &Msg,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
        extra: &str,
    ) -> String {
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for v in req.header_lines("via") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        let invite = req.method() == Some("INVITE");
        if invite && (101..300).contains(&code) {
            for rr in req.header_lines("record-route") {
                s.push_str(&format!("Record-Route: {rr}\r\n"));
            }
        }
        s.push_str(&format!("From: {}\r\n", req.header("from").unwrap_or("")));
        let to = req.header("to").unwrap_or("");
        match to_tag {
            Some(t) if header_param(to, "tag").is_none() && code > 100 => {
                s.push_str(&format!("To: {to};tag={t}\r\n"))
            }
            _ => s.push_str(&format!("To: {to}\r\n")),
        }
        s.push_str(&format!("Call-ID: {}\r\n", req.call_id()));
        s.push_str(&format!("CSeq: {}\r\n", req.header("cseq").unwrap_or("")));
        if invite && (101..300).contains(&code) {
            s.push_str(&format!("Contact: <{}>\r\n", self.contact_uri()));
        }
        s.push_str(extra);
        if invite && (200..300).contains(&code) {
            s.push_str("Content-Type: application/sdp\r\n");
            s.push_str(&format!("Content-Length: {}\r\n\r\n{SDP}", SDP.len()));
        } else {
            s.push_str("Content-Length: 0\r\n\r\n");
        }
        s
    }

    /// Sends a response text for `req` to where responses to it go.
    pub fn send_response(&mut self, req: &Msg, text: &str) {
        match self.tp {
            Tp::Tcp | Tp::Tls => {
                let peer = self.proxy;
                self.send_to(peer, self.tp, text.as_bytes());
            }
            Tp::Udp => {
                let dest = response_dest(req).unwrap_or(req.from);
                self.send_to(dest, Tp::Udp, text.as_bytes());
            }
        }
    }
}
