//! Phones that register with push tokens, fall asleep and come back from a new port,
//! for the provider tests (`push_apns.rs`, `push_fcm.rs`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{branch, build_register, tag, Dialog, Invite, Msg, Ua, DOMAIN, SDP};

/// CSeq numbers for REGISTERs: increasing across every registration Call-ID.
static CSEQ: AtomicU32 = AtomicU32::new(1);

/// With `push.flow_timeout_secs = 1`: waits until a UDP binding registered just now
/// no longer counts as reachable, so a call for it is pushed and parked.
pub fn fall_asleep() {
    std::thread::sleep(Duration::from_millis(1200));
}

/// Sends a REGISTER of `ua` with this Contact value, Expires and extra header lines
/// (each ending in CRLF); returns the final response.
pub fn register_raw(ua: &mut Ua, contact: &str, extra: &str, expires: u32) -> Msg {
    let text = build_register(
        ua.tp.via(),
        &ua.via_hostport.clone(),
        &ua.user.clone(),
        &ua.domain.clone(),
        Some(contact),
        Some(expires),
        &ua.reg_call_id.clone(),
        CSEQ.fetch_add(1, Ordering::Relaxed),
        &branch(),
        &tag(),
    );
    let text = text.replacen(
        "Content-Length: 0\r\n",
        &format!("{extra}Content-Length: 0\r\n"),
        1,
    );
    ua.send(&text);
    let cid = ua.reg_call_id.clone();
    ua.expect_final(&cid, "REGISTER")
}

/// Registers `ua`'s own Contact with `uri_params` appended to its URI (e.g.
/// `;pn-provider=apns;...`) and `extra` header lines; asserts 200 and that the
/// response does not echo `secret` (the push token).
pub fn register_ok(ua: &mut Ua, uri_params: &str, extra: &str, expires: u32, secret: &str) -> Msg {
    let contact = format!("<{}{uri_params}>", ua.contact_uri());
    let resp = register_raw(ua, &contact, extra, expires);
    assert_eq!(
        resp.status(),
        Some(200),
        "REGISTER of {contact} (extra {extra:?}) refused: {resp:?}"
    );
    assert!(
        secret.is_empty() || !resp.raw.contains(secret),
        "the 200 must never echo the push token: {resp:?}"
    );
    resp
}

/// Sends an INVITE for `to_user` from `"<display>" <caller's AOR>` and waits for the
/// `100 Trying`.
pub fn call_from(caller: &mut Ua, display: &str, to_user: &str) -> Invite {
    let inv = invite_from(caller, display, to_user);
    caller.expect_response(&inv.call_id, "INVITE", "100 Trying", |c| c == 100);
    inv
}

/// Sends an INVITE for `to_user` from `"<display>" <caller's AOR>`.
pub fn invite_from(caller: &mut Ua, display: &str, to_user: &str) -> Invite {
    let mut inv = caller.build_invite(&format!("sip:{to_user}@{DOMAIN}"), "");
    let from = format!("\"{display}\" {}", inv.from);
    inv.text = inv.text.replacen(
        &format!("From: {}\r\n", inv.from),
        &format!("From: {from}\r\n"),
        1,
    );
    inv.from = from;
    caller.send(&inv.text);
    inv
}

/// Waits for the INVITE of `call_id` at `phone`; it must carry exactly one
/// `X-PushHint`, equal to `hint`, no push token, and name the phone's Contact.
pub fn expect_invite_with_hint(phone: &mut Ua, call_id: &str, hint: &str) -> Msg {
    let got = phone.expect_request("INVITE", Some(call_id));
    assert_eq!(
        got.header_lines("x-pushhint"),
        vec![hint],
        "exactly one X-PushHint, equal to the push's pushHint: {got:?}"
    );
    // The Request-URI is the phone's own registered Contact (RFC 3261 §16.6, RFC 8599
    // keeps the pn-* parameters in it); the token must not be anywhere else.
    let head = got.raw.split("\r\n\r\n").next().unwrap_or("");
    let rest = head.split_once("\r\n").map_or("", |(_, r)| r);
    assert!(
        got.header("x-token").is_none()
            && !rest.contains("pn-prid")
            && !rest.to_ascii_lowercase().contains("xtoken"),
        "no push token may be in the headers sipwake forwards: {got:?}"
    );
    assert!(got.body.contains(SDP.lines().next().unwrap()), "{got:?}");
    let (host, port) = super::uri_hostport(got.ruri());
    assert_eq!(
        format!("{host}:{port}"),
        phone.contact_hostport,
        "Request-URI must be the woken binding's Contact: {got:?}"
    );
    got
}

/// The callee answers 200, the caller ACKs, the callee gets the ACK, the caller hangs
/// up and the BYE goes through.
pub fn answer_and_hang_up(caller: &mut Ua, inv: &Invite, phone: &mut Ua, got: &Msg) {
    let to_tag = tag();
    phone.reply(got, 180, "Ringing", Some(&to_tag));
    caller.expect_response(&inv.call_id, "INVITE", "180 Ringing", |c| c == 180);
    phone.reply(got, 200, "OK", Some(&to_tag));
    let ok = caller.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut d = Dialog::uac(inv, &ok);
    caller.ack_2xx(&mut d, inv.cseq);
    phone.expect_request("ACK", Some(&inv.call_id));
    caller.send_in_dialog(&mut d, "BYE", None);
    let bye = phone.expect_request("BYE", Some(&inv.call_id));
    phone.reply(&bye, 200, "OK", None);
    caller.expect_response(&inv.call_id, "BYE", "200 to BYE", |c| c == 200);
}
