//! Calls through the real binary: forwarding, Record-Route and in-dialog routing,
//! flows (NAT), transactions (retransmissions, CANCEL), forking, refusals.

use std::time::Duration;

use crate::common::*;

/// Checks what the proxy must have done to an INVITE it forwarded to `callee`.
fn check_forwarded(inv: &Msg, proxy: &Proxy, caller: &Invite, callee: &Ua) {
    assert_eq!(
        inv.ruri(),
        callee.contact_uri(),
        "Request-URI must be the registered Contact: {inv:?}"
    );
    assert_eq!(
        inv.from.port(),
        proxy.port,
        "INVITE should come from the proxy's socket: {inv:?}"
    );
    let vias = inv.values("via");
    assert!(vias.len() >= 2, "proxy Via on top of the caller's: {inv:?}");
    assert!(
        vias[0].contains(&proxy.port.to_string()),
        "top Via should be the proxy's: {inv:?}"
    );
    assert!(
        vias[1].contains(&caller.branch),
        "second Via should be the caller's: {inv:?}"
    );
    assert_eq!(inv.max_forwards(), Some(69), "Max-Forwards 70 - 1: {inv:?}");
    let rr = inv.values("record-route");
    assert!(!rr.is_empty(), "Record-Route expected: {inv:?}");
    for r in &rr {
        let uri = uri_of(r);
        assert!(
            uri_param(&uri, "lr").is_some(),
            "Record-Route without lr: {inv:?}"
        );
        assert_eq!(
            uri_addr(&uri),
            Some(proxy.addr()),
            "Record-Route must point at the proxy: {inv:?}"
        );
    }
    assert!(
        inv.header("route").is_none(),
        "no Route should be left: {inv:?}"
    );
    assert_eq!(inv.call_id(), caller.call_id);
}

/// Callee: waits for the INVITE of `call_id` and sends 180; returns it and the tag.
fn ring(callee: &mut Ua, call_id: &str) -> (Msg, String) {
    let inv = callee.expect_request("INVITE", Some(call_id));
    let t = tag();
    callee.reply(&inv, 180, "Ringing", Some(&t));
    (inv, t)
}

/// Caller: waits for the 2xx to its INVITE and sends the ACK along the route set.
fn answered(caller: &mut Ua, inv: &Invite) -> (Msg, Dialog) {
    let ok = caller.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut d = Dialog::uac(inv, &ok);
    caller.ack_2xx(&mut d, inv.cseq);
    (ok, d)
}

/// In-dialog request from `from` (dialog `d`) received by `to`, answered 200, and the
/// 200 received by `from`.
fn in_dialog(from: &mut Ua, d: &mut Dialog, to: &mut Ua, method: &str) -> Msg {
    from.send_in_dialog(d, method, None);
    let req = to.expect_request(method, Some(&d.call_id));
    assert!(
        req.header("route").is_none(),
        "the proxy must pop its Route entries: {req:?}"
    );
    to.reply(&req, 200, "OK", None);
    from.expect_response(&d.call_id, method, "200", |c| c == 200);
    req
}

#[test]
fn udp_call_forwarded_and_routed_in_dialog() {
    let proxy = Proxy::start("call-udp");
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);

    let inv = alice.invite("bob", "");
    let trying = alice.expect_response(&inv.call_id, "INVITE", "100 Trying", |c| c == 100);
    assert_eq!(trying.from, proxy.addr());

    let (got, btag) = ring(&mut bob, &inv.call_id);
    check_forwarded(&got, &proxy, &inv, &bob);
    assert!(got.body.contains("m=audio"), "body kept: {got:?}");
    let ringing = alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    assert_eq!(ringing.to_tag().as_deref(), Some(btag.as_str()));
    assert_eq!(
        ringing.values("via").len(),
        1,
        "the proxy removes its own Via from responses: {ringing:?}"
    );

    bob.reply(&got, 200, "OK", Some(&btag));
    let (ok, _alice_dialog) = answered(&mut alice, &inv);
    assert_eq!(
        ok.values("record-route"),
        got.values("record-route"),
        "Record-Route of the 2xx as the callee sent it"
    );
    let ack = bob.expect_request("ACK", Some(&inv.call_id));
    assert_eq!(ack.ruri(), bob.contact_uri(), "ACK to the callee's Contact");
    assert!(ack.header("route").is_none(), "{ack:?}");

    // BYE from the callee reaches the caller at its Contact.
    let mut bd = Dialog::uas(&got, &btag);
    let bye = in_dialog(&mut bob, &mut bd, &mut alice, "BYE");
    assert_eq!(bye.ruri(), alice.contact_uri());
}

#[test]
fn tcp_caller_udp_callee_double_record_route_bye_from_each_side() {
    let proxy = Proxy::start("call-tcp-udp");
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    let mut alice = Ua::tcp("alice", &proxy);

    for bye_from_callee in [true, false] {
        let inv = alice.invite("bob", "");
        let (got, btag) = ring(&mut bob, &inv.call_id);
        check_forwarded(&got, &proxy, &inv, &bob);
        let rr: Vec<String> = got
            .values("record-route")
            .iter()
            .map(|v| uri_of(v))
            .collect();
        assert_eq!(
            rr.len(),
            2,
            "double Record-Route when the legs differ in transport (RFC 5658): {got:?}"
        );
        let t0 = uri_param(&rr[0], "transport").unwrap_or_else(|| "udp".into());
        let t1 = uri_param(&rr[1], "transport").unwrap_or_else(|| "udp".into());
        assert!(
            t0.eq_ignore_ascii_case("udp"),
            "top Record-Route faces the UDP callee: {rr:?}"
        );
        assert!(
            t1.eq_ignore_ascii_case("tcp"),
            "second Record-Route faces the TCP caller: {rr:?}"
        );

        bob.reply(&got, 200, "OK", Some(&btag));
        let (_ok, mut ad) = answered(&mut alice, &inv);
        assert_eq!(ad.next_hop(), (proxy.addr(), Tp::Tcp), "caller's next hop");
        let ack = bob.expect_request("ACK", Some(&inv.call_id));
        assert_eq!(ack.ruri(), bob.contact_uri());
        assert!(!ack.tcp);

        let mut bd = Dialog::uas(&got, &btag);
        assert_eq!(bd.next_hop(), (proxy.addr(), Tp::Udp), "callee's next hop");
        if bye_from_callee {
            let bye = in_dialog(&mut bob, &mut bd, &mut alice, "BYE");
            assert!(bye.tcp, "BYE reaches the caller over its TCP connection");
            assert_eq!(bye.ruri(), alice.contact_uri());
        } else {
            let bye = in_dialog(&mut alice, &mut ad, &mut bob, "BYE");
            assert!(!bye.tcp);
            assert_eq!(bye.ruri(), bob.contact_uri());
        }
    }
}

#[test]
fn udp_caller_tcp_callee() {
    let proxy = Proxy::start("call-udp-tcp");
    let mut bob = Ua::tcp("bob", &proxy);
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("bob", "");
    let (got, btag) = ring(&mut bob, &inv.call_id);
    assert!(got.tcp, "INVITE over the callee's registration connection");
    let rr: Vec<String> = got
        .values("record-route")
        .iter()
        .map(|v| uri_of(v))
        .collect();
    assert_eq!(rr.len(), 2, "double Record-Route: {got:?}");
    bob.reply(&got, 200, "OK", Some(&btag));
    let (_ok, mut ad) = answered(&mut alice, &inv);
    bob.expect_request("ACK", Some(&inv.call_id));
    in_dialog(&mut alice, &mut ad, &mut bob, "BYE");
}

#[test]
fn nated_phone_reached_on_its_flow() {
    let proxy = Proxy::start("call-nat");
    // A socket on the "private" address, to catch anything sent there by mistake.
    let trap = std::net::UdpSocket::bind("127.0.0.9:5999").ok();
    let mut bob = Ua::udp_nat("bob", &proxy, "127.0.0.9:5999");
    let r = bob.register(600);
    assert_eq!(
        r.contact_uri().as_deref(),
        Some("sip:bob@127.0.0.9:5999"),
        "the Contact is kept as sent: {r:?}"
    );
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("bob", "");
    let (got, btag) = ring(&mut bob, &inv.call_id);
    assert_eq!(got.ruri(), "sip:bob@127.0.0.9:5999");
    check_forwarded(&got, &proxy, &inv, &bob);
    bob.reply(&got, 200, "OK", Some(&btag));
    let (_ok, mut ad) = answered(&mut alice, &inv);
    let ack = bob.expect_request("ACK", Some(&inv.call_id));
    assert_eq!(ack.ruri(), "sip:bob@127.0.0.9:5999");
    in_dialog(&mut alice, &mut ad, &mut bob, "BYE");

    if let Some(trap) = trap {
        trap.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, from)) = trap.recv_from(&mut buf) {
            panic!(
                "the proxy sent to the Contact address instead of the flow, from {from}: {}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }
}

#[test]
fn invite_retransmitted_after_2xx_not_forwarded_again() {
    let proxy = Proxy::start("call-retrans");
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("bob", "");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    let btag = tag();
    bob.reply(&got, 180, "Ringing", Some(&btag));
    let ok_text = bob.response_text(&got, 200, "OK", Some(&btag), "");
    bob.send_response(&got, &ok_text);
    alice.expect_response(&inv.call_id, "INVITE", "200", |c| c == 200);

    // Anything before this point (e.g. a retransmission of the INVITE before our 180
    // reached the proxy, on a loaded machine) is not what this test is about.
    bob.stash.clear();

    // The caller did not see the 200 (say) and retransmits its INVITE: same branch.
    alice.send(&inv.text);
    std::thread::sleep(Duration::from_millis(300));
    alice.send(&inv.text);
    bob.expect_nothing(
        "INVITE after the 2xx (RFC 6026 Accepted state absorbs it)",
        Duration::from_millis(1500),
        |m| m.method() == Some("INVITE"),
    );
    let mut branches: Vec<String> = bob
        .history
        .iter()
        .filter(|m| m.method() == Some("INVITE") && m.call_id() == inv.call_id)
        .filter_map(|m| m.top_branch())
        .collect();
    branches.dedup();
    assert_eq!(
        branches.len(),
        1,
        "the callee must get the INVITE in exactly one transaction: {branches:?}"
    );

    // The callee retransmits its 200 (no ACK yet): it passes to the caller.
    bob.send_response(&got, &ok_text);
    let again = alice.expect_response(&inv.call_id, "INVITE", "retransmitted 200", |c| c == 200);
    assert_eq!(again.to_tag().as_deref(), Some(btag.as_str()));

    let mut ad = Dialog::uac(&inv, &again);
    alice.ack_2xx(&mut ad, inv.cseq);
    bob.expect_request("ACK", Some(&inv.call_id));
    in_dialog(&mut alice, &mut ad, &mut bob, "BYE");
}

#[test]
fn foreign_preloaded_route_refused() {
    // Loopback IPv4 is not trusted here, so the test client is an untrusted source.
    let proxy = ProxyBuilder::new("call-route403")
        .env("PROXY__TRUSTED_NETWORKS", "::1/128")
        .start();
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    let mut mallory = Ua::udp("mallory", &proxy);
    let inv = mallory.invite("bob", "Route: <sip:evil.example.com;lr>\r\n");
    let resp = mallory.expect_final(&inv.call_id, "INVITE");
    assert_eq!(
        resp.status(),
        Some(403),
        "out-of-dialog request with a foreign Route from an untrusted source: {resp:?}"
    );
    mallory.ack_non2xx(&inv, &resp);
    bob.expect_nothing("forwarded INVITE", Duration::from_millis(500), |m| {
        m.method() == Some("INVITE")
    });

    // Same with a non-INVITE request toward a foreign host.
    let cid = call_id();
    let text = format!(
        "MESSAGE sip:someone@elsewhere.example.net SIP/2.0\r\n\
         Via: {}\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:evil.example.com;lr>\r\n\
         From: <sip:mallory@example.com>;tag={}\r\n\
         To: <sip:someone@elsewhere.example.net>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 2\r\n\r\nhi",
        mallory.via(&branch()),
        tag()
    );
    mallory.send(&text);
    let resp = mallory.expect_final(&cid, "MESSAGE");
    assert_eq!(resp.status(), Some(403), "{resp:?}");
}

#[test]
fn cancel_before_answer() {
    let proxy = Proxy::start("call-cancel");
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("bob", "");
    let (got, btag) = ring(&mut bob, &inv.call_id);
    alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);

    alice.cancel(&inv);
    let c200 = alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c >= 200);
    assert_eq!(c200.status(), Some(200), "{c200:?}");

    let cancel = bob.expect_request("CANCEL", Some(&inv.call_id));
    assert_eq!(
        cancel.top_branch(),
        got.top_branch(),
        "CANCEL has the branch of the INVITE it cancels"
    );
    assert_eq!(cancel.ruri(), got.ruri());
    bob.reply(&cancel, 200, "OK", None);
    bob.reply(&got, 487, "Request Terminated", Some(&btag));

    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    // The proxy's client transaction ACKs the callee's 487 itself (hop by hop).
    let ack = bob.expect_request("ACK", Some(&inv.call_id));
    assert_eq!(ack.top_branch(), got.top_branch(), "{ack:?}");
}

/// An answered transaction keeps only what a retransmission needs (the final for the
/// caller until its ACK, the ACK for the callee): both still get their answer.
#[test]
fn retransmitted_non_2xx_finals_get_the_same_answers() {
    let proxy = Proxy::start("call-busy-retrans");
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("bob", "");
    let (got, btag) = ring(&mut bob, &inv.call_id);
    let busy = bob.response_text(&got, 486, "Busy Here", Some(&btag), "");
    bob.send_response(&got, &busy);
    let ack = bob.expect_request("ACK", Some(&inv.call_id));
    assert_eq!(ack.top_branch(), got.top_branch(), "{ack:?}");

    // the caller saw no 486 (say) and retransmits its INVITE: the 486 again
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(486), "{fin:?}");
    alice.send(&inv.text);
    let again = alice.expect_response(&inv.call_id, "INVITE", "486 again", |c| c == 486);
    assert_eq!(again.to_tag().as_deref(), Some(btag.as_str()));
    alice.ack_non2xx(&inv, &fin);
    std::thread::sleep(Duration::from_millis(300));
    alice.stash.clear();

    // the callee saw no ACK (say) and retransmits its 486: the same ACK again, and
    // nothing more for the caller
    bob.send_response(&got, &busy);
    let ack2 = bob.expect_request("ACK", Some(&inv.call_id));
    assert_eq!(ack2.raw, ack.raw, "the same ACK");
    alice.expect_nothing(
        "a retransmitted 486 after the caller's ACK",
        Duration::from_millis(1000),
        |m| m.status() == Some(486),
    );
}

#[test]
fn cancel_waits_for_callee_provisional_but_caller_is_not_held() {
    let proxy = ProxyBuilder::new("call-cancel-early")
        .env("SIP__TIMER_C_SECS", "60")
        .start();
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("bob", "");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    // Bob says nothing yet. The caller cancels.
    alice.cancel(&inv);
    let c200 = alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c >= 200);
    assert_eq!(c200.status(), Some(200), "{c200:?}");
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(
        fin.status(),
        Some(487),
        "the caller gets 487 without waiting for the silent branch: {fin:?}"
    );
    alice.ack_non2xx(&inv, &fin);
    bob.expect_nothing(
        "CANCEL before any provisional (RFC 3261 §9.1)",
        Duration::from_millis(700),
        |m| m.method() == Some("CANCEL"),
    );
    // Now bob rings: the proxy cancels the branch.
    let btag = tag();
    bob.reply(&got, 180, "Ringing", Some(&btag));
    let cancel = bob.expect_request("CANCEL", Some(&inv.call_id));
    bob.reply(&cancel, 200, "OK", None);
    bob.reply(&got, 487, "Request Terminated", Some(&btag));
    bob.expect_request("ACK", Some(&inv.call_id));
    // The caller already has its final response; nothing more for the INVITE.
    alice.expect_nothing("a second final response", Duration::from_millis(500), |m| {
        m.cseq_method() == "INVITE" && m.status().is_some_and(|c| c >= 200)
    });
}

#[test]
fn user_without_binding_gets_480() {
    let proxy = Proxy::start("call-480");
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("nobody", "");
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(480), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
}

#[test]
fn max_forwards_zero_gets_483() {
    let proxy = Proxy::start("call-483");
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);
    let mut inv = alice.build_invite("sip:bob@example.com", "");
    inv.text = inv.text.replace("Max-Forwards: 70", "Max-Forwards: 0");
    alice.send(&inv.text);
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(483), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    bob.expect_nothing("INVITE", Duration::from_millis(300), |m| {
        m.method() == Some("INVITE")
    });
}

#[test]
fn parallel_fork_answered_by_one_cancels_the_other() {
    let proxy = Proxy::start("call-fork");
    let mut b1 = Ua::udp("bob", &proxy);
    let mut b2 = Ua::tcp("bob", &proxy);
    b1.register(600);
    let r = b2.register(600);
    assert_eq!(r.contacts().len(), 2, "{r:?}");
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("bob", "");

    let (g1, t1) = ring(&mut b1, &inv.call_id);
    let (g2, t2) = ring(&mut b2, &inv.call_id);
    check_forwarded(&g1, &proxy, &inv, &b1);
    assert_eq!(g2.ruri(), b2.contact_uri());
    assert_ne!(g1.top_branch(), g2.top_branch(), "one branch per binding");

    b1.reply(&g1, 200, "OK", Some(&t1));
    let (ok, mut ad) = answered(&mut alice, &inv);
    assert_eq!(ok.to_tag().as_deref(), Some(t1.as_str()));

    // The other branch is cancelled.
    let cancel = b2.expect_request("CANCEL", Some(&inv.call_id));
    assert_eq!(cancel.top_branch(), g2.top_branch());
    b2.reply(&cancel, 200, "OK", None);
    b2.reply(&g2, 487, "Request Terminated", Some(&t2));
    b2.expect_request("ACK", Some(&inv.call_id));

    b1.expect_request("ACK", Some(&inv.call_id));
    alice.expect_nothing(
        "the 487 of the cancelled branch",
        Duration::from_millis(500),
        |m| m.status() == Some(487),
    );
    in_dialog(&mut alice, &mut ad, &mut b1, "BYE");
    b2.expect_nothing(
        "BYE to the cancelled branch",
        Duration::from_millis(300),
        |m| m.method() == Some("BYE"),
    );
}

#[test]
fn in_dialog_request_without_route_to_proxy_address_does_not_loop() {
    // A trusted peer (loopback is trusted by default) sends an in-dialog BYE with no
    // Route and a Request-URI naming sipwake itself, as SIPp does when it aborts a
    // call. sipwake must not forward it to itself until Max-Forwards runs out.
    let proxy = Proxy::start("call-self-loop");
    let mut bob = Ua::udp("bob", &proxy);
    bob.domain = "127.0.0.1".into();
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);
    let cid = call_id();
    let text = format!(
        "BYE sip:bob@{hp} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag={t1}\r\n\
         To: <sip:bob@{hp}>;tag={t2}\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 2 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        hp = proxy.hostport(),
        via = alice.via(&branch()),
        t1 = tag(),
        t2 = tag(),
    );
    alice.send(&text);
    // Either it reaches bob's binding (RFC 3261 §16.5, the R-URI is ours) ...
    if let Some(bye) = bob.try_expect(Duration::from_secs(2), |m| {
        m.method() == Some("BYE") && m.call_id() == cid
    }) {
        bob.reply(&bye, 481, "Call/Transaction Does Not Exist", None);
        let fin = alice.expect_final(&cid, "BYE");
        assert_eq!(fin.status(), Some(481), "{fin:?}");
        return;
    }
    // ... or it is refused at once; but not looped.
    let fin = alice.expect_final(&cid, "BYE");
    assert!(
        !matches!(fin.status(), Some(482) | Some(483)),
        "sipwake looped the request on itself: {fin:?}"
    );
}

#[test]
fn ipv4_caller_ipv6_callee_double_record_route() {
    if let Err(e) = std::net::UdpSocket::bind("[::1]:0") {
        panic!("this test needs the IPv6 loopback (::1), which CI has: {e}");
    }
    // A port free on both families.
    let port = loop {
        let p = free_port();
        if std::net::UdpSocket::bind(("::1", p)).is_ok()
            && std::net::TcpListener::bind(("::1", p)).is_ok()
        {
            break p;
        }
    };
    let proxy = ProxyBuilder::new("call-v4-v6")
        .port(port)
        .env("SIP__LISTEN", &format!("127.0.0.1:{port},[::1]:{port}"))
        .start();
    let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut bob = Ua::udp_at("bob", v6, "[::1]:0");
    let r = bob.register(600);
    assert_eq!(r.from, v6, "answered from the IPv6 socket: {r:?}");
    let mut alice = Ua::udp("alice", &proxy);

    for bye_from_callee in [true, false] {
        let inv = alice.invite("bob", "");
        let (got, btag) = ring(&mut bob, &inv.call_id);
        assert_eq!(got.from, v6, "INVITE from the proxy's IPv6 socket");
        assert_eq!(got.ruri(), bob.contact_uri());
        let rr: Vec<String> = got
            .values("record-route")
            .iter()
            .map(|v| uri_of(v))
            .collect();
        assert_eq!(
            rr.len(),
            2,
            "double Record-Route when the legs differ in address family (RFC 5658): {got:?}"
        );
        assert_eq!(
            uri_addr(&rr[0]),
            Some(v6),
            "top entry faces the callee: {rr:?}"
        );
        assert_eq!(
            uri_addr(&rr[1]),
            Some(proxy.addr()),
            "second entry faces the caller: {rr:?}"
        );
        bob.reply(&got, 200, "OK", Some(&btag));
        let (_ok, mut ad) = answered(&mut alice, &inv);
        assert_eq!(ad.next_hop(), (proxy.addr(), Tp::Udp));
        bob.expect_request("ACK", Some(&inv.call_id));
        let mut bd = Dialog::uas(&got, &btag);
        assert_eq!(bd.next_hop(), (v6, Tp::Udp));
        if bye_from_callee {
            in_dialog(&mut bob, &mut bd, &mut alice, "BYE");
        } else {
            in_dialog(&mut alice, &mut ad, &mut bob, "BYE");
        }
    }
}

#[test]
fn tcp_phone_whose_connection_is_gone_is_not_reconnected() {
    let proxy = Proxy::start("call-tcp-gone");
    // Something listening where the phone's Contact points, to catch a reconnect.
    let trap = std::net::TcpListener::bind("127.0.0.9:5998").ok();
    let mut bob = Ua::tcp("bob", &proxy);
    bob.contact_hostport = "127.0.0.9:5998".into();
    bob.register(600);
    bob.close();
    std::thread::sleep(Duration::from_millis(200));

    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("bob", "");
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert!(
        matches!(fin.status(), Some(430) | Some(480)),
        "a TCP phone whose connection is gone gets 430 or 480, got {fin:?}"
    );
    alice.ack_non2xx(&inv, &fin);
    if let Some(trap) = trap {
        trap.set_nonblocking(true).unwrap();
        if let Ok((_, from)) = trap.accept() {
            panic!("sipwake opened a new TCP connection toward the phone's Contact (from {from})");
        }
    }
}

#[test]
fn p_asserted_identity_removed_from_untrusted_sources_only() {
    for (trusted, networks) in [(false, "::1/128"), (true, "127.0.0.0/8")] {
        let proxy = ProxyBuilder::new("call-pai")
            .env("PROXY__TRUSTED_NETWORKS", networks)
            .start();
        let mut bob = Ua::udp("bob", &proxy);
        bob.register(600);
        let mut alice = Ua::udp("alice", &proxy);
        let inv = alice.invite(
            "bob",
            "P-Asserted-Identity: \"Boss\" <sip:boss@example.com>\r\n",
        );
        let got = bob.expect_request("INVITE", Some(&inv.call_id));
        assert_eq!(
            got.header("p-asserted-identity").is_some(),
            trusted,
            "P-Asserted-Identity from a {} source: {got:?}",
            if trusted { "trusted" } else { "untrusted" }
        );
        bob.reply(&got, 486, "Busy Here", Some(&tag()));
        let fin = alice.expect_final(&inv.call_id, "INVITE");
        alice.ack_non2xx(&inv, &fin);
    }
}

#[test]
fn forwarding_keeps_other_bytes_as_they_came() {
    let proxy = Proxy::start("call-splice");
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);
    let extra = "X-Odd:   spaced ;  value=\"quoted, comma\" ; Flag\r\n\
                 Subject: caf%C3%A9 au lait\r\n\
                 Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"abc\", uri=\"sip:bob@example.com;x=%41\", response=\"0123456789abcdef\"\r\n\
                 Allow: INVITE,ACK,  CANCEL ,BYE\r\n";
    let inv = alice.invite("bob", extra);
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    let keep = |line: &&str| {
        let l = line.to_ascii_lowercase();
        !(l.starts_with("via:") || l.starts_with("max-forwards:") || l.starts_with("record-route:"))
    };
    let (sent_head, sent_body) = inv.text.split_once("\r\n\r\n").unwrap();
    let (got_head, got_body) = got.raw.split_once("\r\n\r\n").unwrap();
    let sent: Vec<&str> = sent_head.split("\r\n").skip(1).filter(keep).collect();
    let recv: Vec<&str> = got_head.split("\r\n").skip(1).filter(keep).collect();
    assert_eq!(
        recv, sent,
        "header lines other than Via, Max-Forwards and Record-Route must be kept byte for byte"
    );
    assert_eq!(got_body, sent_body, "body kept");
    assert_eq!(
        got.start,
        format!("INVITE {} SIP/2.0", bob.contact_uri()),
        "Request-URI replaced by the Contact"
    );
    bob.reply(&got, 486, "Busy Here", Some(&tag()));
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    alice.ack_non2xx(&inv, &fin);
}
