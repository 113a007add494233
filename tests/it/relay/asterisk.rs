//! Asterisk's shapes: a stand-in PBX that builds its requests to a registered contact
//! as chan_pjsip does (Request-URI = the contact, To = the contact, Route = the Path),
//! and never sees the unspecified address written on the wire.

use super::*;

/// A stand-in for Asterisk behind sipwake: accepts every REGISTER (echoing Contact and
/// Path, as `support_path=yes` on the AOR does) and calls and qualifies the contacts
/// it holds the way chan_pjsip does: `INVITE <contact>` with `To: <contact>` and the
/// stored Path as Route.
struct FakePbx {
    sock: UdpSocket,
    addr: SocketAddr,
}

/// What the stand-in PBX holds for one registration.
#[derive(Debug, Clone)]
struct Held {
    contact: String,
    path: Option<String>,
}

impl FakePbx {
    fn start() -> FakePbx {
        FakePbx::start_at("127.0.0.1:0")
    }

    fn start_at(bind: &str) -> FakePbx {
        let sock = UdpSocket::bind(bind).unwrap();
        let addr = sock.local_addr().unwrap();
        FakePbx { sock, addr }
    }

    fn uri(&self) -> String {
        format!("sip:{}", self.addr)
    }

    fn recv(&self, wait: Duration, pred: impl Fn(&Msg) -> bool) -> Option<Msg> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65536];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                if let Some(m) = Msg::parse(&buf[..n], from, false) {
                    if pred(&m) {
                        return Some(m);
                    }
                }
            }
        }
        None
    }

    /// Takes the next REGISTER and answers 200 with its contacts and Path.
    fn accept_register(&self) -> Held {
        let reg = self
            .recv(WAIT, |m| m.method() == Some("REGISTER"))
            .expect("the REGISTER reaches the PBX");
        let mut ok = "SIP/2.0 200 OK\r\n".to_string();
        for v in reg.header_lines("via") {
            ok.push_str(&format!("Via: {v}\r\n"));
        }
        ok.push_str(&format!("From: {}\r\n", reg.header("from").unwrap()));
        ok.push_str(&format!("To: {};tag=ast1\r\n", reg.header("to").unwrap()));
        ok.push_str(&format!("Call-ID: {}\r\n", reg.call_id()));
        ok.push_str(&format!("CSeq: {}\r\n", reg.header("cseq").unwrap()));
        let contacts = reg.values("contact");
        for c in &contacts {
            ok.push_str(&format!("Contact: {c}\r\n"));
        }
        let path = reg.header("path").map(str::to_owned);
        if let Some(p) = &path {
            ok.push_str(&format!("Path: {p}\r\nRequire: path\r\n"));
        }
        ok.push_str("Content-Length: 0\r\n\r\n");
        self.sock.send_to(ok.as_bytes(), reg.from).unwrap();
        let live = contacts
            .iter()
            .find(|c| !c.contains("expires=0"))
            .unwrap_or_else(|| panic!("a contact to hold: {reg:?}"));
        Held {
            contact: uri_of(live),
            path: path.map(|p| uri_of(&p)),
        }
    }

    /// Sends `method` to the held contact as chan_pjsip does; returns its Call-ID.
    fn send_to_contact(&self, to: SocketAddr, method: &str, held: &Held) -> String {
        let cid = call_id();
        let route = held
            .path
            .as_ref()
            .map(|p| format!("Route: <{p}>\r\n"))
            .unwrap_or_default();
        let c = &held.contact;
        let head = format!(
            "{method} {c} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};rport;branch=z9hG4bKPj{b}\r\n\
             From: \"100\" <sip:100@{me}>;tag={t}\r\n\
             To: <{c}>\r\n\
             Contact: <sip:asterisk@{me}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 20480 {method}\r\n\
             {route}\
             Max-Forwards: 70\r\n\
             User-Agent: Asterisk PBX 20.5.0\r\n",
            me = self.addr,
            b = branch(),
            t = tag(),
        );
        let text = if method == "INVITE" {
            with_body(
                &format!("{head}Supported: 100rel, timer, replaces, norefersub\r\nContent-Type: application/sdp\r\n"),
                "",
                SDP,
            )
        } else {
            format!("{head}Content-Length: 0\r\n\r\n")
        };
        self.sock.send_to(text.as_bytes(), to).unwrap();
        cid
    }

    fn response(&self, cid: &str, pred: impl Fn(u16) -> bool) -> Option<Msg> {
        self.recv(WAIT, |m| {
            m.call_id() == cid && m.status().is_some_and(&pred)
        })
    }
}

/// An Asterisk-shaped call (To = the contact, Route = our Path entry) to a sleeping
/// phone, with Path (`rewrite` false) or with contact rewriting: the phone is pushed
/// with a hint, the relaunched phone gets the INVITE with `X-PushHint` and its answer
/// reaches the PBX. Before that, Asterisk's qualify for the sleeping phone is
/// answered by sipwake and counted, never forwarded to the dead flow.
fn asterisk_call_wakes(name: &str, rewrite: bool) {
    let pbx = FakePbx::start();
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin_s = admin.to_string();
    let rw = if rewrite { "true" } else { "false" };
    let sw = relay_proxy_with(
        name,
        &pbx.uri(),
        Some(&hook),
        &[
            ("RELAY__CONTACT_REWRITE", rw),
            ("ADMIN__LISTEN", &admin_s),
            ("RELAY__REFRESH_THROTTLE_SECS", "0"),
        ],
    );

    let token = unique("tok");
    let instance = "6f1a2b3c-0000-4000-8000-0000000000a5";
    let mut phone = Ua::udp("alice", &sw);
    let contact = contact_with_token(&phone, &token, instance);
    let cid = phone.reg_call_id.clone();
    let text = build_register(
        "UDP",
        &phone.via_hostport.clone(),
        "alice",
        DOMAIN,
        Some(&contact),
        Some(600),
        &cid,
        1,
        &branch(),
        &tag(),
    );
    phone.send(&text);
    let held = pbx.accept_register();
    assert_eq!(phone.expect_final(&cid, "REGISTER").status(), Some(200));
    if rewrite {
        assert!(held.path.is_none(), "{held:?}");
        assert!(
            held.contact.contains(&sw.hostport()),
            "the PBX holds sipwake's contact: {held:?}"
        );
    } else {
        assert!(
            held.contact.contains(&phone.contact_hostport),
            "the PBX holds the phone's contact: {held:?}"
        );
        assert!(held.path.is_some(), "{held:?}");
    }

    // the phone sleeps (flow timeout 1 s); Asterisk qualifies it
    thread::sleep(Duration::from_millis(1200));
    let qualified = metric(admin, "sipwake_qualify_answered_total");
    let q = pbx.send_to_contact(sw.addr(), "OPTIONS", &held);
    let r = pbx
        .response(&q, |c| c >= 200)
        .unwrap_or_else(|| panic!("no answer to the qualify\n{}", sw.log_text()));
    assert_eq!(r.status(), Some(200), "sipwake answers the qualify: {r:?}");
    assert!(phone
        .try_expect(Duration::from_millis(200), |m| m.method()
            == Some("OPTIONS"))
        .is_none());
    assert_eq!(
        metric(admin, "sipwake_qualify_answered_total"),
        qualified + 1.0
    );
    assert!(
        hook.next(Duration::from_millis(100)).is_none(),
        "a qualify never pushes"
    );

    // Asterisk dials the contact
    let woken_before = metric(admin, "sipwake_calls_total{outcome=\"woken\"}");
    let call = pbx.send_to_contact(sw.addr(), "INVITE", &held);
    assert!(pbx.response(&call, |c| c == 100).is_some(), "100 Trying");
    let push = hook
        .next(WAIT)
        .unwrap_or_else(|| panic!("no push for the call\n{}", sw.log_text()));
    let doc = push.json();
    assert_eq!(doc["event"], "call", "{doc:#}");
    assert_eq!(doc["token"], token.as_str(), "{doc:#}");
    assert_eq!(doc["aor"], "alice@example.com", "{doc:#}");
    let hint = doc["pushHint"].as_str().expect("pushHint").to_owned();
    assert!(phone
        .try_expect(Duration::from_millis(100), |m| m.method() == Some("INVITE"))
        .is_none());

    // the relaunched app registers from a new port
    let mut woken = Ua::udp("alice", &sw);
    let contact2 = contact_with_token(&woken, &token, instance);
    let cid2 = woken.reg_call_id.clone();
    let text = build_register(
        "UDP",
        &woken.via_hostport.clone(),
        "alice",
        DOMAIN,
        Some(&contact2),
        Some(600),
        &cid2,
        1,
        &branch(),
        &tag(),
    );
    woken.send(&text);
    pbx.accept_register();
    assert_eq!(woken.expect_final(&cid2, "REGISTER").status(), Some(200));
    let got = woken.expect_request("INVITE", Some(&call));
    assert_eq!(
        got.header_lines("x-pushhint"),
        vec![hint.as_str()],
        "{got:?}"
    );
    let (host, port) = uri_hostport(got.ruri());
    assert_eq!(format!("{host}:{port}"), woken.contact_hostport, "{got:?}");
    woken.reply(&got, 180, "Ringing", Some("ph1"));
    woken.reply(&got, 200, "OK", Some("ph1"));
    let ok = pbx
        .response(&call, |c| c >= 200)
        .unwrap_or_else(|| panic!("no final at the PBX\n{}", sw.log_text()));
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    assert_eq!(
        metric(admin, "sipwake_calls_total{outcome=\"woken\"}"),
        woken_before + 1.0
    );
}

#[test]
fn asterisk_call_to_contact_along_path_wakes_the_phone() {
    asterisk_call_wakes("ast-path", false);
}

#[test]
fn asterisk_call_to_rewritten_contact_wakes_the_phone() {
    asterisk_call_wakes("ast-rewrite", true);
}

/// sipwake on a wildcard listener (`0.0.0.0:P`, no `sip.advertised_host`, as the shipped
/// compose file runs it) with the phone and the PBX on 127.0.0.2: the relayed
/// REGISTER's Via and Path, and the Via and Record-Route of the call the PBX sends
/// back along that Path, name the address sipwake speaks from, never `0.0.0.0`; and
/// the Path it wrote brings the call back to it.
#[test]
fn wildcard_listener_never_writes_the_unspecified_address() {
    let pbx = FakePbx::start_at("127.0.0.2:0");
    let sw = ProxyBuilder::new("relay-wildcard")
        .wildcard()
        .env("REGISTRAR__MODE", "relay")
        .env("UPSTREAM__URI", &pbx.uri())
        .env("SIP__T1_MS", "100")
        .start();
    let port = sw.port;
    let wild = |text: &str| text.contains("0.0.0.0") || text.contains("[::]");

    let mut phone = Ua::udp_at("erin", sw.addr(), "127.0.0.2:0");
    let cid = phone.reg_call_id.clone();
    let contact = format!("<{}>", phone.contact_uri());
    let text = build_register(
        "UDP",
        &phone.via_hostport.clone(),
        "erin",
        DOMAIN,
        Some(&contact),
        Some(600),
        &cid,
        1,
        &branch(),
        &tag(),
    );
    phone.send(&text);
    let reg = pbx
        .recv(WAIT, |m| m.method() == Some("REGISTER"))
        .expect("the REGISTER reaches the PBX");
    assert!(!wild(&reg.raw), "no wildcard address upstream: {reg:?}");
    let via = reg.header_lines("via")[0].to_owned();
    let path = uri_of(reg.header("path").expect("Path"));
    let (vhost, vport) = uri_hostport(&format!(
        "sip:{}",
        via.split_whitespace()
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
    ));
    assert!(vhost.starts_with("127.") && vport == port, "{via}");
    let (phost, pport) = uri_hostport(&path);
    assert!(phost.starts_with("127.") && pport == port, "{path}");
    // answer it (the stand-in echoes what it got)
    let mut ok = "SIP/2.0 200 OK\r\n".to_string();
    for v in reg.header_lines("via") {
        ok.push_str(&format!("Via: {v}\r\n"));
    }
    ok.push_str(&format!("From: {}\r\nTo: {};tag=w1\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: {}\r\nPath: <{path}>\r\nContent-Length: 0\r\n\r\n",
        reg.header("from").unwrap(), reg.header("to").unwrap(), reg.call_id(), reg.header("cseq").unwrap(), reg.values("contact")[0]));
    let dest = response_dest(&reg).unwrap_or(reg.from);
    pbx.sock.send_to(ok.as_bytes(), dest).unwrap();
    assert_eq!(phone.expect_final(&cid, "REGISTER").status(), Some(200));

    // the PBX calls the contact along the Path: it must reach sipwake and the phone
    let held = Held {
        contact: uri_of(&reg.values("contact")[0]),
        path: Some(path.clone()),
    };
    let (ph, pp) = uri_hostport(&path);
    let to: SocketAddr = format!("{ph}:{pp}").parse().unwrap();
    let call = pbx.send_to_contact(to, "INVITE", &held);
    let got = phone.expect_request("INVITE", Some(&call));
    assert!(
        !wild(&got.raw),
        "no wildcard address toward the phone: {got:?}"
    );
    let rr = got.header_lines("record-route");
    assert!(!rr.is_empty(), "{got:?}");
    for r in &rr {
        let (h, p) = uri_hostport(&uri_of(r));
        assert!(h.starts_with("127.") && p == port, "{r}");
    }
    let (h, p) = uri_hostport(&format!(
        "sip:{}",
        got.header_lines("via")[0]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
    ));
    assert!(h.starts_with("127.") && p == port, "{got:?}");
    phone.reply(&got, 200, "OK", Some("e1"));
    let ok = pbx
        .response(&call, |c| c >= 200)
        .unwrap_or_else(|| panic!("no answer at the PBX\n{}", sw.log_text()));
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    assert!(!wild(&ok.raw), "{ok:?}");
}
