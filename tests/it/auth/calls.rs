//! Authentication of calls: an INVITE from a phone is challenged (407) then reaches the
//! callee and writes one call line; other realms' credentials travel on; CANCEL and
//! trusted sources are not challenged; with auth off nothing changes.

use super::*;

#[test]
fn invite_from_a_phone_is_challenged_then_reaches_the_callee() {
    let proxy = start("auth-invite", &[]);
    let mut bob = Ua::udp("bob", &proxy);
    register_with_auth(&mut bob, "bob-pw", "SHA-256");
    let mut alice = Ua::udp("alice", &proxy);

    // bob's credentials with alice's From: 403
    let first = alice.invite("bob", "");
    let resp = alice.expect_final(&first.call_id, "INVITE");
    assert_eq!(resp.status(), Some(407), "{resp:?}");
    alice.ack_non2xx(&first, &resp);
    let ch = &challenges(&resp, "proxy-authenticate")[0];
    let ruri = format!("sip:bob@{DOMAIN}");
    let creds = credentials(
        "Proxy-Authorization",
        ch,
        "bob",
        "bob-pw",
        "INVITE",
        &ruri,
        1,
    );
    let wrong = alice.invite_uri(&ruri, &format!("{creds}\r\n"));
    let resp = alice.expect_final(&wrong.call_id, "INVITE");
    assert_eq!(
        resp.status(),
        Some(403),
        "From alice, credentials of bob: {resp:?}"
    );
    alice.ack_non2xx(&wrong, &resp);

    // alice's own credentials: the call goes through
    let inv = invite_with_auth(&mut alice, "bob", "alice", "alice-pw");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    assert!(
        got.header("proxy-authorization").is_none(),
        "credentials for sipwake's realm are not forwarded: {got:?}"
    );
    let t = tag();
    bob.reply(&got, 200, "OK", Some(&t));
    let ok = alice.expect_response(&inv.call_id, "INVITE", "200", |c| c == 200);
    let mut d = Dialog::uac(&inv, &ok);
    alice.ack_2xx(&mut d, inv.cseq);
    bob.expect_request("ACK", Some(&inv.call_id));

    // in-dialog requests are not challenged
    alice.send_in_dialog(&mut d, "BYE", None);
    let bye = bob.expect_request("BYE", Some(&inv.call_id));
    bob.reply(&bye, 200, "OK", None);
    alice.expect_response(&inv.call_id, "BYE", "200", |c| c == 200);
}

/// A phone answers the 407 as phones do: the same INVITE (same Call-ID, CSeq + 1, a
/// new branch) with credentials. That is one call, and it writes one `sipwake::call`
/// line, with the callee's answer, not the challenge.
#[test]
fn an_authenticated_call_writes_one_call_line() {
    let proxy = start(
        "auth-one-call-line",
        &[("LOG__LEVEL", "warn,sipwake::call=info")],
    );
    let mut bob = Ua::udp("bob", &proxy);
    register_with_auth(&mut bob, "bob-pw", "MD5");
    let mut alice = Ua::udp("alice", &proxy);
    let first = alice.invite("bob", "");
    let resp = alice.expect_final(&first.call_id, "INVITE");
    assert_eq!(resp.status(), Some(407), "{resp:?}");
    alice.ack_non2xx(&first, &resp);
    let ch = challenges(&resp, "proxy-authenticate").remove(0);
    let creds = credentials(
        "Proxy-Authorization",
        &ch,
        "alice",
        "alice-pw",
        "INVITE",
        &first.ruri,
        1,
    );
    let br = branch();
    let text = first
        .text
        .replace(&first.branch, &br)
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace("Content-Type:", &format!("{creds}\r\nContent-Type:"));
    alice.send(&text);
    let retry = Invite {
        text,
        branch: br,
        cseq: 2,
        ..first
    };
    let got = bob.expect_request("INVITE", Some(&retry.call_id));
    bob.reply(&got, 486, "Busy Here", Some(&tag()));
    let busy = alice.expect_response(&retry.call_id, "INVITE", "486", |c| c == 486);
    alice.ack_non2xx(&retry, &busy);
    assert!(
        proxy.wait_log("code=486", Duration::from_secs(5)),
        "the call's line: {}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sipwake::call") && l.contains(&retry.call_id))
        .collect();
    assert_eq!(lines.len(), 1, "one line for one call: {lines:#?}");
    assert!(
        lines[0].contains("outcome=rejected") && lines[0].contains("code=486"),
        "{lines:?}"
    );
}

#[test]
fn other_realms_credentials_travel_on() {
    let proxy = start("auth-other-realm", &[]);
    let mut bob = Ua::udp("bob", &proxy);
    register_with_auth(&mut bob, "bob-pw", "MD5");
    let mut alice = Ua::udp("alice", &proxy);
    let first = alice.invite("bob", "");
    let resp = alice.expect_final(&first.call_id, "INVITE");
    alice.ack_non2xx(&first, &resp);
    let ch = &challenges(&resp, "proxy-authenticate")[1];
    let ruri = format!("sip:bob@{DOMAIN}");
    let ours = credentials(
        "Proxy-Authorization",
        ch,
        "alice",
        "alice-pw",
        "INVITE",
        &ruri,
        1,
    );
    let theirs = "Proxy-Authorization: Digest username=\"a\", realm=\"pbx.example\", \
                  nonce=\"n\", uri=\"sip:bob@example.com\", response=\"00\"";
    let inv = alice.invite_uri(&ruri, &format!("{theirs}\r\n{ours}\r\n"));
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    let lines = got.header_lines("proxy-authorization");
    assert_eq!(
        lines.len(),
        1,
        "only the other realm's credentials: {got:?}"
    );
    assert!(lines[0].contains("realm=\"pbx.example\""), "{got:?}");
    bob.reply(&got, 486, "Busy Here", Some(&tag()));
    let resp = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(resp.status(), Some(486));
    alice.ack_non2xx(&inv, &resp);
}

#[test]
fn cancel_is_not_challenged() {
    let proxy = start("auth-cancel", &[]);
    let mut bob = Ua::udp("bob", &proxy);
    register_with_auth(&mut bob, "bob-pw", "SHA-256");
    let mut alice = Ua::udp("alice", &proxy);
    let inv = invite_with_auth(&mut alice, "bob", "alice", "alice-pw");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    let t = tag();
    bob.reply(&got, 180, "Ringing", Some(&t));
    alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);

    // the CANCEL carries no credentials and is not challenged
    alice.cancel(&inv);
    let resp = alice.expect_final(&inv.call_id, "CANCEL");
    assert_eq!(
        resp.status(),
        Some(200),
        "CANCEL answered, not challenged: {resp:?}"
    );
    let cancel = bob.expect_request("CANCEL", Some(&inv.call_id));
    bob.reply(&cancel, 200, "OK", None);
    bob.reply(&got, 487, "Request Terminated", Some(&t));
    let resp = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(resp.status(), Some(487), "{resp:?}");
    alice.ack_non2xx(&inv, &resp);
}

#[test]
fn trusted_source_is_not_challenged() {
    let proxy = start("auth-trusted", &[]);
    let mut bob = Ua::udp("bob", &proxy);
    register_with_auth(&mut bob, "bob-pw", "SHA-256");
    let mut pbx = Ua::udp_at("pbx", proxy.addr(), &format!("{TRUSTED}:0"));
    let inv = pbx.invite("bob", "");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    bob.reply(&got, 486, "Busy Here", Some(&tag()));
    let resp = pbx.expect_final(&inv.call_id, "INVITE");
    assert_eq!(resp.status(), Some(486), "{resp:?}");
    pbx.ack_non2xx(&inv, &resp);
    // a MESSAGE from the same user on an untrusted address is challenged
    let mut alice = Ua::udp("alice", &proxy);
    let cid = call_id();
    alice.send(&format!(
        "MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: {}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:pbx@{DOMAIN}>;tag={}\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 2\r\n\r\nhi",
        alice.via(&branch()),
        tag()
    ));
    let resp = alice.expect_final(&cid, "MESSAGE");
    assert_eq!(resp.status(), Some(407), "{resp:?}");
}

#[test]
fn auth_disabled_keeps_the_old_behaviour() {
    let proxy = ProxyBuilder::new("auth-off")
        .env("PROXY__TRUSTED_NETWORKS", &format!("{TRUSTED}/32"))
        .start();
    let mut bob = Ua::udp("bob", &proxy);
    let resp = bob.register_with(Some(&format!("<{}>", bob.contact_uri())), Some(300));
    assert_eq!(resp.status(), Some(200), "no challenge: {resp:?}");
    assert!(resp.header("www-authenticate").is_none());
    let mut alice = Ua::udp("alice", &proxy);
    alice.register(300);
    let inv = alice.invite("bob", "");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    bob.reply(&got, 486, "Busy Here", Some(&tag()));
    let resp = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(resp.status(), Some(486), "{resp:?}");
    alice.ack_non2xx(&inv, &resp);
}
