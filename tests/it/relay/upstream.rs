//! What exactly goes upstream in relay mode, seen by a scripted stand-in registrar
//! (a plain UDP socket) that can stop answering at will.

use super::*;

/// What exactly goes upstream, with a scripted stand-in registrar: Path with the flow
/// token, `Supported: path`, no push parameters, the upstream expiry, Request-URI
/// untouched; the 2xx reaches the phone without Path/Require and with its own
/// expiry; refreshes that change nothing are answered by sipwake; OPTIONS along the
/// Path for a sleeping phone are answered by sipwake; when the upstream stops
/// answering, the phone gets 408 and its binding is kept.
#[test]
fn relayed_register_as_the_upstream_sees_it() {
    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let sw = relay_proxy("relay-shape", &format!("sip:{up_addr}"), Some(&hook));
    let recv = |wait: Duration| -> Option<Msg> {
        up.set_read_timeout(Some(wait)).unwrap();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok((n, from)) = up.recv_from(&mut buf) {
                if let Some(m) = Msg::parse(&buf[..n], from, false) {
                    return Some(m);
                }
            }
        }
        None
    };

    let mut phone = Ua::udp("dave", &sw);
    let token = unique("tk");
    let contact = contact_with_token(&phone, &token, "6f1a2b3c-0000-4000-8000-0000000000d1");
    let cid = phone.reg_call_id.clone();
    let text = build_register(
        "UDP",
        &phone.via_hostport.clone(),
        "dave",
        DOMAIN,
        Some(&contact),
        Some(600),
        &cid,
        10,
        &branch(),
        &tag(),
    )
    .replacen(
        "Content-Length: 0\r\n",
        &format!("X-Token: {token}\r\nContent-Length: 0\r\n"),
        1,
    );
    phone.send(&text);
    let reg = recv(WAIT).expect("the REGISTER reaches the upstream");
    assert_eq!(
        reg.ruri(),
        "sip:example.com",
        "Request-URI untouched: {reg:?}"
    );
    assert!(!reg.raw.contains(&token), "no push token upstream: {reg:?}");
    assert!(reg.header("x-token").is_none(), "{reg:?}");
    let path = reg
        .header("path")
        .unwrap_or_else(|| panic!("Path expected: {reg:?}"))
        .to_owned();
    assert!(
        path.contains(&format!("@{}", sw.hostport()))
            && path.contains(";lr")
            && path.contains(";ob"),
        "{path}"
    );
    assert!(
        reg.values("supported")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("path")),
        "Supported: path added: {reg:?}"
    );
    let contacts = reg.values("contact");
    assert_eq!(contacts.len(), 1, "{reg:?}");
    // a push contact goes up for as long as sipwake would push it: its own 600 s
    // plus push.binding_ttl_secs (7 days), plus relay.refresh_throttle_secs (600 s)
    assert!(
        contacts[0].contains(&format!(";expires={}", 600 + 7 * 86_400 + 600)),
        "{reg:?}"
    );
    assert!(contacts[0].contains("+sip.instance"), "{reg:?}");

    // the upstream accepts, echoing Path and requiring path, as RFC 3327 registrars do
    let mut ok = "SIP/2.0 200 OK\r\n".to_string();
    for v in reg.header_lines("via") {
        ok.push_str(&format!("Via: {v}\r\n"));
    }
    for h in ["from", "call-id", "cseq"] {
        let name = match h {
            "from" => "From",
            "call-id" => "Call-ID",
            _ => "CSeq",
        };
        ok.push_str(&format!("{name}: {}\r\n", reg.header(h).unwrap()));
    }
    ok.push_str(&format!("To: {};tag=up1\r\n", reg.header("to").unwrap()));
    ok.push_str(&format!("Contact: {}\r\n", contacts[0]));
    ok.push_str(&format!(
        "Path: {path}\r\nRequire: path\r\nContent-Length: 0\r\n\r\n"
    ));
    up.send_to(ok.as_bytes(), reg.from).unwrap();
    let resp = phone.expect_final(&cid, "REGISTER");
    assert_eq!(resp.status(), Some(200), "{resp:?}");
    assert!(
        resp.header("path").is_none() && resp.header("require").is_none(),
        "{resp:?}"
    );
    assert!(
        resp.values("contact")
            .iter()
            .any(|c| c.contains(";expires=600")),
        "{resp:?}"
    );

    // an identical refresh right away is answered by sipwake alone
    let again = build_register(
        "UDP",
        &phone.via_hostport.clone(),
        "dave",
        DOMAIN,
        Some(&contact),
        Some(600),
        &cid,
        11,
        &branch(),
        &tag(),
    )
    .replacen(
        "Content-Length: 0\r\n",
        &format!("X-Token: {token}\r\nContent-Length: 0\r\n"),
        1,
    );
    phone.send(&again);
    let r = phone.expect_final(&cid, "REGISTER");
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert!(
        recv(Duration::from_millis(300)).is_none(),
        "a throttled refresh is not relayed"
    );

    // OPTIONS from the upstream along the Path to the sleeping phone: sipwake answers
    thread::sleep(Duration::from_millis(1200));
    let phone_uri = phone.contact_uri();
    let options = |cseq: u32| {
        let route = uri_of(&path);
        format!(
            "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {up_addr};branch={b};rport\r\nRoute: <{route}>\r\nMax-Forwards: 70\r\nFrom: <sip:pbx@example.com>;tag={t}\r\nTo: <sip:dave@example.com>\r\nCall-ID: q{cseq}-{cid}\r\nCSeq: {cseq} OPTIONS\r\nContent-Length: 0\r\n\r\n",
            ruri = phone_uri,
            b = branch(),
            t = tag(),
        )
    };
    up.send_to(options(1).as_bytes(), sw.addr()).unwrap();
    let r = recv(WAIT).expect("an answer to OPTIONS");
    assert_eq!(
        r.status(),
        Some(200),
        "sipwake answers for the sleeping phone: {r:?}"
    );
    assert!(phone
        .try_expect(Duration::from_millis(200), |m| m.method()
            == Some("OPTIONS"))
        .is_none());
    assert!(
        hook.next(Duration::from_millis(200)).is_none(),
        "OPTIONS never push"
    );

    // the upstream stops answering: a changed REGISTER gets 408, the binding stays
    let changed = build_register(
        "UDP",
        &phone.via_hostport.clone(),
        "dave",
        DOMAIN,
        Some(&contact),
        Some(900),
        &cid,
        12,
        &branch(),
        &tag(),
    );
    phone.send(&changed);
    let lost = recv(WAIT).expect("the changed REGISTER is relayed");
    assert_eq!(lost.method(), Some("REGISTER"));
    let r = phone.expect(
        "408 with the upstream silent",
        Duration::from_secs(15),
        |m| m.call_id() == cid && m.status().is_some_and(|c| c >= 200),
    );
    assert_eq!(r.status(), Some(408), "{r:?}");
    while recv(Duration::from_millis(100)).is_some() {}
    up.send_to(options(2).as_bytes(), sw.addr()).unwrap();
    let r = recv(WAIT).expect("an answer to OPTIONS");
    assert_eq!(r.status(), Some(200), "the binding is kept: {r:?}");
}
