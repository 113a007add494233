//! Calls through a real Kamailio upstream: a call to a sleeping phone wakes it (with and
//! without Path, contact rewriting), outgoing calls are challenged by the upstream, a
//! phone asleep past `relay.upstream_expires` is still called, and the per-AOR limit
//! counts only what the upstream accepted.

use super::*;

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

/// The whole story: register through sipwake (challenged, stored by both), a call
/// that Kamailio routes along the Path pushes the sleeping phone, the relaunched
/// phone registers from a new port (challenged again: wakes nothing; authenticated:
/// gets the call with X-PushHint), ACK and BYE cross both proxies, and Kamailio has
/// forgotten the old contact.
#[test]
fn call_through_kamailio_wakes_the_phone() {
    let kam = Kamailio::start("wake");
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let sw = relay_proxy("relay-wake", &kam.uri(), Some(&hook));

    let token = unique("tok");
    let instance = "6f1a2b3c-0000-4000-8000-000000000001";
    let mut phone = Ua::udp("alice", &sw);
    let contact = contact_with_token(&phone, &token, instance);
    let ok = register_auth(&mut phone, Some(&contact), "", Some(600));
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    assert!(
        ok.header("path").is_none(),
        "Path must not reach a phone that did not ask: {ok:?}"
    );
    assert!(ok.header("require").is_none(), "{ok:?}");
    assert!(
        !ok.raw.contains(&token),
        "the token never leaves sipwake: {ok:?}"
    );
    let mine: Vec<String> = ok.values("contact");
    assert!(
        mine.iter()
            .any(|c| c.contains(&phone.contact_hostport) && c.contains(";expires=600")),
        "the phone sees its own expiry: {ok:?}"
    );

    let held = kamailio_contacts(&kam, "alice");
    assert!(
        held.iter().any(|c| c.contains(&phone.contact_hostport)),
        "Kamailio holds the contact: {held:?}"
    );
    assert!(
        held.iter()
            .all(|c| !c.contains(&token) && !c.to_ascii_lowercase().contains("xtoken")),
        "push parameters stay in sipwake: {held:?}"
    );

    // the phone falls asleep; carol calls through Kamailio
    thread::sleep(Duration::from_millis(1200));
    let mut carol = Ua::udp_at("carol", kam.addr(), "127.0.0.1:0");
    let carol_contact = format!("<{}>", carol.contact_uri());
    let r = register_auth(&mut carol, Some(&carol_contact), "", Some(600));
    assert_eq!(r.status(), Some(200), "{r:?}");
    let inv = invite_auth(&mut carol, "alice");

    let push = hook
        .next(WAIT)
        .unwrap_or_else(|| panic!("no push for the call\n{}", sw.log_text()));
    let doc = push.json();
    assert_eq!(doc["event"], "call", "{doc:#}");
    assert_eq!(doc["token"], token.as_str(), "{doc:#}");
    let hint = doc["pushHint"].as_str().expect("pushHint").to_owned();

    // the relaunched app registers from a new port with the same instance and token
    let mut woken = Ua::udp("alice", &sw);
    let contact2 = contact_with_token(&woken, &token, instance);
    let challenged = register_once(&mut woken, Some(&contact2), "", Some(600));
    assert_eq!(challenged.status(), Some(401), "{challenged:?}");
    woken.expect_nothing(
        "an INVITE before the REGISTER is authenticated",
        Duration::from_millis(400),
        |m| m.method() == Some("INVITE"),
    );
    let auth = digest_line(
        &challenged,
        "alice",
        password("alice"),
        "REGISTER",
        "sip:example.com",
    );
    let ok2 = register_once(&mut woken, Some(&contact2), &auth, Some(600));
    assert_eq!(ok2.status(), Some(200), "{ok2:?}");

    let got = woken.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(
        got.header_lines("x-pushhint"),
        vec![hint.as_str()],
        "{got:?}"
    );
    let (host, port) = uri_hostport(got.ruri());
    assert_eq!(format!("{host}:{port}"), woken.contact_hostport, "{got:?}");
    assert!(phone
        .try_expect(Duration::from_millis(100), |m| m.method() == Some("INVITE"))
        .is_none());

    woken.reply(&got, 180, "Ringing", Some("ph1"));
    woken.reply(&got, 200, "OK", Some("ph1"));
    let ok = carol.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut d = Dialog::uac(&inv, &ok);
    assert_eq!(d.route_set.len(), 2, "both proxies record-route: {ok:?}");
    carol.ack_2xx(&mut d, inv.cseq);
    woken.expect_request("ACK", Some(&inv.call_id));

    let mut pd = Dialog::uas(&got, "ph1");
    woken.send_in_dialog(&mut pd, "BYE", None);
    let bye = carol.expect_request("BYE", Some(&inv.call_id));
    carol.reply(&bye, 200, "OK", None);
    let r = woken.expect_response(&inv.call_id, "BYE", "200 to BYE", |c| c == 200);
    assert_eq!(r.status(), Some(200));

    let held = kamailio_contacts(&kam, "alice");
    assert!(
        held.iter().any(|c| c.contains(&woken.contact_hostport)),
        "Kamailio holds the new contact: {held:?}"
    );
    assert!(
        held.iter().all(|c| !c.contains(&phone.contact_hostport)),
        "the old contact is gone from Kamailio: {held:?}"
    );
}

/// A call from the phone goes to Kamailio with Record-Route; Kamailio's 407 reaches
/// the phone and the authenticated retry rings carol. Then Kamailio stops: the phone
/// gets 408 or 503, never silence.
#[test]
fn outgoing_call_is_challenged_then_upstream_stops() {
    let mut kam = Kamailio::start("out");
    let sw = relay_proxy("relay-out", &kam.uri(), None);
    let mut phone = Ua::udp("alice", &sw);
    let c = format!("<{}>", phone.contact_uri());
    let ok = register_auth(&mut phone, Some(&c), "", Some(600));
    assert_eq!(ok.status(), Some(200), "{ok:?}");

    let mut carol = Ua::udp_at("carol", kam.addr(), "127.0.0.1:0");
    let cc = format!("<{}>", carol.contact_uri());
    assert_eq!(
        register_auth(&mut carol, Some(&cc), "", Some(600)).status(),
        Some(200)
    );

    let inv = invite_auth(&mut phone, "carol");
    let got = carol.expect_request("INVITE", Some(&inv.call_id));
    assert!(
        got.values("record-route").len() >= 2,
        "sipwake and Kamailio record-route: {got:?}"
    );
    carol.reply(&got, 200, "OK", Some("c1"));
    let ok = phone.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut d = Dialog::uac(&inv, &ok);
    phone.ack_2xx(&mut d, inv.cseq);
    carol.expect_request("ACK", Some(&inv.call_id));
    phone.send_in_dialog(&mut d, "BYE", None);
    let bye = carol.expect_request("BYE", Some(&inv.call_id));
    carol.reply(&bye, 200, "OK", None);
    phone.expect_response(&inv.call_id, "BYE", "200 to BYE", |c| c == 200);

    kam.stop();
    let inv = phone.invite("carol", "");
    let resp = phone.expect(
        "a final answer with the upstream down",
        Duration::from_secs(15),
        |m| m.call_id() == inv.call_id && m.status().is_some_and(|c| c >= 200),
    );
    assert!(
        matches!(resp.status(), Some(408 | 503 | 500)),
        "the phone hears 408/503 when the upstream is gone: {resp:?}"
    );
    // a changed registration (new expiry, so not throttled) cannot be relayed either
    let c = format!("<{}>", phone.contact_uri());
    let text = build_register(
        "UDP",
        &phone.via_hostport.clone(),
        "alice",
        DOMAIN,
        Some(&c),
        Some(900),
        &phone.reg_call_id.clone(),
        CSEQ.fetch_add(1, Ordering::Relaxed),
        &branch(),
        &tag(),
    );
    phone.send(&text);
    let cid = phone.reg_call_id.clone();
    let r = phone.expect("a final answer to REGISTER", Duration::from_secs(15), |m| {
        m.call_id() == cid && m.status().is_some_and(|c| c >= 200)
    });
    assert!(matches!(r.status(), Some(408 | 503)), "{r:?}");
}

/// Contact rewriting against a Kamailio without Path support (`use_path` 0): Kamailio
/// stores sipwake's own contact for the phone (no push parameters, no Path needed);
/// its call to that contact pushes the sleeping phone, the relaunched phone's
/// authenticated REGISTER from a new port replaces the contact Kamailio holds and
/// releases the call with X-PushHint to the phone's own contact; ACK and BYE cross
/// both proxies; a de-registration empties Kamailio's list.
#[test]
fn contact_rewriting_without_path() {
    let kam = Kamailio::start_with("rewrite", &["NO_PATH"]);
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let sw = relay_proxy_with(
        "relay-rewrite",
        &kam.uri(),
        Some(&hook),
        &[("RELAY__CONTACT_REWRITE", "true")],
    );

    let token = unique("tok");
    let instance = "6f1a2b3c-0000-4000-8000-0000000000c1";
    let mut phone = Ua::udp("alice", &sw);
    let contact = contact_with_token(&phone, &token, instance);
    let ok = register_auth(&mut phone, Some(&contact), "", Some(600));
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    assert!(ok.header("path").is_none(), "{ok:?}");
    let mine = ok.values("contact");
    assert_eq!(mine.len(), 1, "the phone sees its own contact only: {ok:?}");
    assert!(
        mine[0].contains(&phone.contact_hostport) && mine[0].contains(";expires=600"),
        "the phone sees its own contact and expiry: {ok:?}"
    );

    let held = kamailio_contacts(&kam, "alice");
    assert_eq!(held.len(), 1, "one contact upstream: {held:?}");
    let first = held[0].clone();
    let (host, port) = uri_hostport(&uri_of(&first));
    assert_eq!(
        format!("{host}:{port}"),
        sw.hostport(),
        "Kamailio holds sipwake's contact: {held:?}"
    );
    assert!(
        !first.contains(&phone.contact_hostport)
            && !first.contains(&token)
            && !first.to_ascii_lowercase().contains("xtoken")
            && !first.to_ascii_lowercase().contains("pn-"),
        "nothing of the phone's contact upstream: {held:?}"
    );
    assert!(first.contains("+sip.instance"), "{held:?}");

    // the phone falls asleep; carol calls through Kamailio, which sends the INVITE to
    // sipwake's contact
    thread::sleep(Duration::from_millis(1200));
    let mut carol = Ua::udp_at("carol", kam.addr(), "127.0.0.1:0");
    let carol_contact = format!("<{}>", carol.contact_uri());
    let r = register_auth(&mut carol, Some(&carol_contact), "", Some(600));
    assert_eq!(r.status(), Some(200), "{r:?}");
    let inv = invite_auth(&mut carol, "alice");

    let push = hook
        .next(WAIT)
        .unwrap_or_else(|| panic!("no push for the call\n{}", sw.log_text()));
    let doc = push.json();
    assert_eq!(doc["event"], "call", "{doc:#}");
    assert_eq!(doc["token"], token.as_str(), "{doc:#}");
    let hint = doc["pushHint"].as_str().expect("pushHint").to_owned();

    let mut woken = Ua::udp("alice", &sw);
    let contact2 = contact_with_token(&woken, &token, instance);
    let ok2 = register_auth(&mut woken, Some(&contact2), "", Some(600));
    assert_eq!(ok2.status(), Some(200), "{ok2:?}");
    assert!(
        ok2.values("contact")
            .iter()
            .all(|c| !c.contains(&sw.hostport())),
        "{ok2:?}"
    );

    let got = woken.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(
        got.header_lines("x-pushhint"),
        vec![hint.as_str()],
        "{got:?}"
    );
    let (host, port) = uri_hostport(got.ruri());
    assert_eq!(
        format!("{host}:{port}"),
        woken.contact_hostport,
        "the Request-URI is mapped back to the phone's contact: {got:?}"
    );
    assert!(phone
        .try_expect(Duration::from_millis(100), |m| m.method() == Some("INVITE"))
        .is_none());

    woken.reply(&got, 180, "Ringing", Some("ph1"));
    woken.reply(&got, 200, "OK", Some("ph1"));
    let ok = carol.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut d = Dialog::uac(&inv, &ok);
    assert_eq!(d.route_set.len(), 2, "both proxies record-route: {ok:?}");
    carol.ack_2xx(&mut d, inv.cseq);
    woken.expect_request("ACK", Some(&inv.call_id));

    let mut pd = Dialog::uas(&got, "ph1");
    woken.send_in_dialog(&mut pd, "BYE", None);
    let bye = carol.expect_request("BYE", Some(&inv.call_id));
    carol.reply(&bye, 200, "OK", None);
    let r = woken.expect_response(&inv.call_id, "BYE", "200 to BYE", |c| c == 200);
    assert_eq!(r.status(), Some(200));

    // Kamailio holds the new flow's contact (still sipwake's), not the old one
    let held = kamailio_contacts(&kam, "alice");
    assert_eq!(held.len(), 1, "the stale contact is gone: {held:?}");
    let (host, port) = uri_hostport(&uri_of(&held[0]));
    assert_eq!(format!("{host}:{port}"), sw.hostport(), "{held:?}");
    assert_ne!(uri_of(&held[0]), uri_of(&first), "a new key: {held:?}");

    // de-registration goes up in the rewritten form
    let bye_reg = register_auth(&mut woken, Some(&contact2), "", Some(0));
    assert_eq!(bye_reg.status(), Some(200), "{bye_reg:?}");
    let held = kamailio_contacts(&kam, "alice");
    assert!(held.is_empty(), "de-registered upstream too: {held:?}");
}

/// A phone asleep longer than `relay.upstream_expires` (10 s here) is still in
/// Kamailio's list, because its push contact went up for its own expiry plus
/// `push.binding_ttl_secs`; Kamailio's call reaches sipwake along the Path, pushes the
/// phone and the relaunched phone gets it. The start warns that the two settings differ.
#[test]
fn phone_asleep_past_upstream_expires_is_still_called() {
    let kam = Kamailio::start("long-sleep");
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let sw = relay_proxy_with(
        "relay-long-sleep",
        &kam.uri(),
        Some(&hook),
        &[
            ("RELAY__UPSTREAM_EXPIRES", "10"),
            ("RELAY__REFRESH_THROTTLE_SECS", "0"),
            ("PUSH__BINDING_TTL_SECS", "120"),
        ],
    );
    assert!(
        sw.wait_log(
            "push.binding_ttl_secs (120 s) is longer than relay.upstream_expires (10 s)",
            WAIT
        ),
        "the start warns about the two settings\n{}",
        sw.log_text()
    );

    let token = unique("tok");
    let instance = "6f1a2b3c-0000-4000-8000-0000000000e1";
    let mut phone = Ua::udp("alice", &sw);
    let contact = contact_with_token(&phone, &token, instance);
    let ok = register_auth(&mut phone, Some(&contact), "", Some(60));
    assert_eq!(ok.status(), Some(200), "{ok:?}");

    // asleep past relay.upstream_expires: Kamailio still holds the contact
    thread::sleep(Duration::from_secs(12));
    let held = kamailio_contacts(&kam, "alice");
    assert!(
        held.iter().any(|c| c.contains(&phone.contact_hostport)),
        "Kamailio still holds the sleeping phone's contact: {held:?}"
    );

    let mut carol = Ua::udp_at("carol", kam.addr(), "127.0.0.1:0");
    let carol_contact = format!("<{}>", carol.contact_uri());
    let r = register_auth(&mut carol, Some(&carol_contact), "", Some(600));
    assert_eq!(r.status(), Some(200), "{r:?}");
    let inv = invite_auth(&mut carol, "alice");
    let push = hook
        .next(WAIT)
        .unwrap_or_else(|| panic!("no push for the call\n{}", sw.log_text()));
    let doc = push.json();
    assert_eq!(doc["token"], token.as_str(), "{doc:#}");
    let hint = doc["pushHint"].as_str().expect("pushHint").to_owned();

    let mut woken = Ua::udp("alice", &sw);
    let contact2 = contact_with_token(&woken, &token, instance);
    let ok2 = register_auth(&mut woken, Some(&contact2), "", Some(60));
    assert_eq!(ok2.status(), Some(200), "{ok2:?}");
    let got = woken.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(
        got.header_lines("x-pushhint"),
        vec![hint.as_str()],
        "{got:?}"
    );
    woken.reply(&got, 200, "OK", Some("ph1"));
    let ok = carol.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    assert_eq!(ok.status(), Some(200));
}

/// Relay mode: the upstream authenticates, so only REGISTERs it accepted spend an
/// AOR's per-AOR budget. An attacker on 127.0.0.2 without the password (challenged by
/// Kamailio every time) cannot lock alice out; her own accepted REGISTERs still meet
/// the limit.
#[test]
fn relay_per_aor_limit_counts_only_what_the_upstream_accepted() {
    let kam = Kamailio::start("aor-limit");
    let sw = relay_proxy_with(
        "relay-aor-limit",
        &kam.uri(),
        None,
        &[
            // loopback is trusted (and never limited) by default
            ("PROXY__TRUSTED_NETWORKS", "127.0.0.3/32"),
            ("LIMITS__REGISTER_PER_AOR_RATE", "1"),
            ("LIMITS__REGISTER_PER_AOR_BURST", "3"),
            ("RELAY__REFRESH_THROTTLE_SECS", "0"),
        ],
    );
    let mut evil = Ua::udp_at("alice", sw.addr(), "127.0.0.2:0");
    for i in 0..20 {
        let r = register_once(&mut evil, None, "", Some(600));
        assert_eq!(r.status(), Some(401), "attack {i}: {r:?}");
    }
    // not 127.0.0.1: that is the upstream's address, never limited
    let mut alice = Ua::udp_at("alice", sw.addr(), "127.0.0.4:0");
    let contact = format!("<{}>", alice.contact_uri());
    let mut codes = Vec::new();
    for _ in 0..6 {
        let first = register_once(&mut alice, Some(&contact), "", Some(600));
        if first.status() != Some(401) {
            codes.push(first.status());
            break;
        }
        let auth = digest_line(
            &first,
            "alice",
            password("alice"),
            "REGISTER",
            &format!("sip:{DOMAIN}"),
        );
        codes.push(register_once(&mut alice, Some(&contact), &auth, Some(600)).status());
    }
    assert_eq!(
        &codes[..3],
        &[Some(200); 3],
        "the victim registers despite the attack: {codes:?}"
    );
    assert_eq!(
        codes.last(),
        Some(&Some(503)),
        "her accepted REGISTERs are limited: {codes:?}"
    );
}
