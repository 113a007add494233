//! SIP over TLS through the real binary (RFC 3261 §26): a CA and a server certificate
//! made at test time, registration and calls with one leg over TLS, `sips:` routing,
//! flows that are gone, start-up errors for bad certificate settings, and clear-text
//! clients on the TLS port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::tls_ua::TlsPki;
use crate::common::*;

/// sipwake with a TLS listener on its own loopback port, and the test CA.
struct TlsProxy {
    proxy: Proxy,
    pki: TlsPki,
    /// The TLS listener.
    tls: SocketAddr,
    /// Where its certificate and key files are.
    pki_dir: std::path::PathBuf,
}

impl TlsProxy {
    fn start(name: &str) -> TlsProxy {
        TlsProxy::start_with(name, &[])
    }

    /// Started with extra `SIPWAKE__…` settings.
    fn start_with(name: &str, env: &[(&str, &str)]) -> TlsProxy {
        let pki = TlsPki::new();
        let dir = temp_dir(&format!("{name}-pki"));
        let (cert, key) = pki.write(&dir);
        let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut b = ProxyBuilder::new(name)
            .env("TLS__LISTEN", &tls.to_string())
            .env("TLS__CERT_FILE", &cert.to_string_lossy())
            .env("TLS__KEY_FILE", &key.to_string_lossy());
        for (k, v) in env {
            b = b.env(k, v);
        }
        TlsProxy {
            proxy: b.start(),
            pki,
            tls,
            pki_dir: dir,
        }
    }

    /// A phone with one TLS connection to the proxy.
    fn ua(&self, user: &str) -> Ua {
        Ua::tls(user, self.tls, self.pki.client_config())
    }
}

/// The Record-Route URIs of a request, top first.
fn record_routes(m: &Msg) -> Vec<String> {
    m.values("record-route").iter().map(|v| uri_of(v)).collect()
}

/// A REGISTER with `sips:` Request-URI, To and Contact, sent over TLS; its final.
fn register_sips(ua: &mut Ua) -> Msg {
    let cid = call_id();
    let text = format!(
        "REGISTER sips:{domain} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: <sips:{user}@{domain}>;tag={tag}\r\n\
         To: <sips:{user}@{domain}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sips:{user}@{hp}>\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n",
        domain = ua.domain,
        via = ua.via(&branch()),
        user = ua.user,
        tag = tag(),
        hp = ua.contact_hostport,
    );
    ua.send(&text);
    ua.expect_final(&cid, "REGISTER")
}

#[test]
fn register_over_tls() {
    let t = TlsProxy::start("tls-register");
    let mut bob = t.ua("bob");
    let ok = bob.register(600);
    assert!(ok.tcp, "the 200 comes back over the TLS connection");
    let contacts = ok.contacts();
    assert_eq!(contacts.len(), 1, "{ok:?}");
    assert!(
        contacts[0].contains(";transport=tls"),
        "the registered contact is listed as sent: {ok:?}"
    );
    assert_eq!(
        ok.values("via").len(),
        1,
        "the 200 carries the phone's own Via only: {ok:?}"
    );

    // a sips: address-of-record and contact register over TLS too
    let mut carol = t.ua("carol");
    let ok = register_sips(&mut carol);
    assert_eq!(ok.status(), Some(200), "sips REGISTER over TLS: {ok:?}");
    assert!(
        ok.contacts().iter().any(|c| c.contains("sips:carol@")),
        "{ok:?}"
    );
}

/// The README's TLS quick start (no `sip.advertised_host`): a phone that knows sipwake
/// by the name on its certificate sends `REGISTER sip:localhost:P;transport=tls` with
/// `Route: <sip:localhost:P;transport=tls;lr>`. That Route is sipwake's own (RFC 3261
/// §16.4): removed, and the REGISTER reaches the registrar, also when the domains
/// served do not include the name.
#[test]
fn a_route_naming_us_by_the_certificate_name_is_ours() {
    let t = TlsProxy::start_with("tls-route-by-name", &[("PROXY__DOMAINS", "example.com")]);
    let mut alice = t.ua("alice");
    let port = t.tls.port();
    let cid = call_id();
    let text = format!(
        "REGISTER sip:localhost:{port};transport=tls SIP/2.0\r\n\
         Via: {via}\r\n\
         Route: <sip:localhost:{port};transport=tls;lr>\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag={tag}\r\n\
         To: <sip:alice@example.com>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <{contact}>\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n",
        via = alice.via(&branch()),
        tag = tag(),
        contact = alice.contact_uri(),
    );
    alice.send(&text);
    let ok = alice.expect_final(&cid, "REGISTER");
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    assert!(
        ok.contacts()
            .iter()
            .any(|c| uri_of(c) == alice.contact_uri()),
        "{ok:?}"
    );
    // and the binding is there: a call for alice reaches her over TLS
    let mut bob = Ua::udp("bob", &t.proxy);
    let inv = bob.invite("alice", "");
    let got = alice.expect_request("INVITE", Some(&inv.call_id));
    alice.reply(&got, 486, "Busy Here", Some(&tag()));
    let fin = bob.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(486));
    bob.ack_non2xx(&inv, &fin);
}

#[test]
fn udp_caller_tls_callee_bye_from_each_side() {
    let t = TlsProxy::start("tls-call");
    let proxy = &t.proxy;
    let mut bob = t.ua("bob");
    bob.register(600);
    let mut alice = Ua::udp("alice", proxy);

    for bye_from_callee in [true, false] {
        let inv = alice.invite("bob", "");
        let got = bob.expect_request("INVITE", Some(&inv.call_id));
        assert!(got.tcp, "INVITE over the callee's TLS connection");
        assert_eq!(got.ruri(), bob.contact_uri());
        let vias = got.values("via");
        assert!(
            vias[0].starts_with(&format!("SIP/2.0/TLS {}", t.tls)),
            "our Via names TLS and the TLS listener: {got:?}"
        );
        assert!(vias[1].contains(&inv.branch), "{got:?}");
        let rr = record_routes(&got);
        assert_eq!(rr.len(), 2, "one Record-Route per leg (RFC 5658): {got:?}");
        assert_eq!(uri_addr(&rr[0]), Some(t.tls), "top faces the TLS callee");
        assert_eq!(uri_param(&rr[0], "transport").as_deref(), Some("tls"));
        assert!(rr[0].starts_with("sip:"), "a sip: call keeps sip: URIs");
        assert_eq!(
            uri_addr(&rr[1]),
            Some(proxy.addr()),
            "second faces the caller"
        );
        assert_eq!(uri_param(&rr[1], "transport").as_deref(), Some("udp"));
        assert_eq!(uri_param(&rr[0], "lr").as_deref(), Some(""));

        let btag = tag();
        bob.reply(&got, 180, "Ringing", Some(&btag));
        alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
        bob.reply(&got, 200, "OK", Some(&btag));
        let ok = alice.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
        assert_eq!(ok.values("via").len(), 1, "our Via is gone: {ok:?}");
        let mut ad = Dialog::uac(&inv, &ok);
        assert_eq!(ad.next_hop(), (proxy.addr(), Tp::Udp), "caller's next hop");
        alice.ack_2xx(&mut ad, inv.cseq);
        let ack = bob.expect_request("ACK", Some(&inv.call_id));
        assert!(ack.tcp, "the ACK for the 2xx comes over TLS: {ack:?}");

        let mut bd = Dialog::uas(&got, &btag);
        assert_eq!(bd.next_hop(), (t.tls, Tp::Tls), "callee's next hop");
        if bye_from_callee {
            bob.send_in_dialog(&mut bd, "BYE", None);
            let bye = alice.expect_request("BYE", Some(&inv.call_id));
            assert!(!bye.tcp && bye.header("route").is_none(), "{bye:?}");
            assert_eq!(bye.ruri(), alice.contact_uri());
            alice.reply(&bye, 200, "OK", None);
            bob.expect_response(&inv.call_id, "BYE", "200", |c| c == 200);
        } else {
            alice.send_in_dialog(&mut ad, "BYE", None);
            let bye = bob.expect_request("BYE", Some(&inv.call_id));
            assert!(bye.tcp, "BYE routed back over the TLS flow: {bye:?}");
            assert!(bye.header("route").is_none(), "{bye:?}");
            assert!(bye.values("via")[0].starts_with("SIP/2.0/TLS "), "{bye:?}");
            bob.reply(&bye, 200, "OK", None);
            alice.expect_response(&inv.call_id, "BYE", "200", |c| c == 200);
        }
    }
}

#[test]
fn tls_caller_udp_callee() {
    let t = TlsProxy::start("tls-caller");
    let proxy = &t.proxy;
    let mut bob = Ua::udp("bob", proxy);
    bob.register(600);
    let mut alice = t.ua("alice");
    alice.register(600);
    let inv = alice.invite("bob", "");
    alice.expect_response(&inv.call_id, "INVITE", "100 Trying", |c| c == 100);
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    assert!(got.values("via")[1].starts_with("SIP/2.0/TLS "), "{got:?}");
    let rr = record_routes(&got);
    assert_eq!(rr.len(), 2, "{got:?}");
    assert_eq!(uri_addr(&rr[0]), Some(proxy.addr()));
    assert_eq!(uri_addr(&rr[1]), Some(t.tls), "the caller's leg is TLS");
    assert_eq!(uri_param(&rr[1], "transport").as_deref(), Some("tls"));
    let btag = tag();
    bob.reply(&got, 200, "OK", Some(&btag));
    let ok = alice.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut ad = Dialog::uac(&inv, &ok);
    assert_eq!(ad.next_hop(), (t.tls, Tp::Tls), "caller's next hop is TLS");
    alice.ack_2xx(&mut ad, inv.cseq);
    bob.expect_request("ACK", Some(&inv.call_id));
    let mut bd = Dialog::uas(&got, &btag);
    bob.send_in_dialog(&mut bd, "BYE", None);
    let bye = alice.expect_request("BYE", Some(&inv.call_id));
    assert!(bye.tcp, "BYE reaches the caller over its TLS connection");
    alice.reply(&bye, 200, "OK", None);
    bob.expect_response(&inv.call_id, "BYE", "200", |c| c == 200);
}

#[test]
fn sips_requests_only_go_over_tls() {
    let t = TlsProxy::start("tls-sips");
    let proxy = &t.proxy;
    let mut bob = t.ua("bob");
    assert_eq!(register_sips(&mut bob).status(), Some(200));
    let mut carol = Ua::udp("carol", proxy);
    carol.register(600);
    let mut alice = t.ua("alice");

    // a sips: call to a phone on TLS: every hop TLS, Record-Route in sips:
    let inv = alice.invite_uri("sips:bob@example.com", "");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    let rr = record_routes(&got);
    assert_eq!(rr.len(), 1, "both legs on the TLS listener: {got:?}");
    assert!(rr[0].starts_with("sips:"), "{got:?}");
    assert_eq!(uri_addr(&rr[0]), Some(t.tls));
    let btag = tag();
    bob.reply(&got, 200, "OK", Some(&btag));
    let ok = alice.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut ad = Dialog::uac(&inv, &ok);
    alice.ack_2xx(&mut ad, inv.cseq);
    bob.expect_request("ACK", Some(&inv.call_id));
    let mut bd = Dialog::uas(&got, &btag);
    assert_eq!(bd.next_hop(), (t.tls, Tp::Tls));
    bob.send_in_dialog(&mut bd, "BYE", None);
    let bye = alice.expect_request("BYE", Some(&inv.call_id));
    alice.reply(&bye, 200, "OK", None);
    bob.expect_response(&inv.call_id, "BYE", "200", |c| c == 200);

    // a sips: call to a phone registered over UDP only: refused, never downgraded
    let inv = alice.invite_uri("sips:carol@example.com", "");
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(480), "{fin:?}");
    let warning = fin.header("warning").unwrap_or_default();
    assert!(
        warning.starts_with("380 ") && warning.contains("SIPS Not Allowed"),
        "RFC 5630: Warning 380 tells the caller not to retry with sip: {fin:?}"
    );
    alice.ack_non2xx(&inv, &fin);
    carol.expect_nothing("INVITE over UDP", Duration::from_millis(300), |m| {
        m.method() == Some("INVITE")
    });

    // the same phone is reachable with sip:
    let inv = alice.invite("carol", "");
    let got = carol.expect_request("INVITE", Some(&inv.call_id));
    carol.reply(&got, 486, "Busy Here", Some(&tag()));
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(486));
    alice.ack_non2xx(&inv, &fin);

    // a sips: request toward a next hop that is not TLS is not sent in clear text
    let inv = alice.invite_uri(
        "sips:dave@example.com",
        "Route: <sip:192.0.2.1:5060;lr>\r\n",
    );
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(480), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);

    // a hop that asks for TLS gets TLS or nothing: this one answers in clear text
    let junk = TcpListener::bind("127.0.0.1:0").unwrap();
    let jaddr = junk.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut first = Vec::new();
        for _ in 0..2 {
            let (mut c, _) = junk.accept().unwrap();
            c.set_read_timeout(Some(WAIT)).unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            first.push(b[0]);
            let _ = c.write_all(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
        first
    });
    for route in [
        format!("<sip:{jaddr};transport=tls;lr>"),
        format!("<sips:{jaddr};lr>"),
    ] {
        let inv = alice.invite_uri("sip:dave@example.com", &format!("Route: {route}\r\n"));
        let fin = alice.expect_final(&inv.call_id, "INVITE");
        assert_eq!(fin.status(), Some(480), "via {route}: {fin:?}");
        alice.ack_non2xx(&inv, &fin);
    }
    assert_eq!(
        server.join().unwrap(),
        vec![0x16, 0x16],
        "each connection starts with a TLS handshake record, never SIP in clear text"
    );
}

#[test]
fn tls_phone_whose_connection_is_gone() {
    // a short T1, so a request sent into the dying connection times out quickly
    let t = TlsProxy::start_with("tls-gone", &[("SIP__T1_MS", "50")]);
    let proxy = &t.proxy;
    let mut bob = t.ua("bob");
    bob.register(600);
    let mut alice = Ua::udp("alice", proxy);
    let inv = alice.invite("bob", "");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    let btag = tag();
    bob.reply(&got, 200, "OK", Some(&btag));
    let ok = alice.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut ad = Dialog::uac(&inv, &ok);
    alice.ack_2xx(&mut ad, inv.cseq);
    bob.expect_request("ACK", Some(&inv.call_id));

    // the phone's TLS connection closes: its dialog's flow fails (RFC 5626 430)
    bob.close();
    std::thread::sleep(Duration::from_millis(200));
    let deadline = Instant::now() + WAIT;
    let code = loop {
        let cid = ad.call_id.clone();
        alice.send_in_dialog(&mut ad, "INFO", None);
        let fin = alice.expect_final(&cid, "INFO");
        if fin.status() != Some(408) || Instant::now() > deadline {
            break fin.status();
        }
    };
    assert_eq!(code, Some(430), "in-dialog request to a closed TLS flow");

    // and a new call finds no usable binding
    let inv = alice.invite("bob", "");
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert!(matches!(fin.status(), Some(430) | Some(480)), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
}

#[test]
fn clear_text_on_the_tls_port_harms_nothing() {
    let t = TlsProxy::start("tls-cleartext");
    let mut s = TcpStream::connect(t.tls).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let options = format!(
        "OPTIONS sip:{} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {};branch={}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@example.com>;tag={}\r\n\
         To: <sip:{}>\r\n\
         Call-ID: {}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        t.tls,
        s.local_addr().unwrap(),
        branch(),
        tag(),
        t.tls,
        call_id()
    );
    s.write_all(options.as_bytes()).unwrap();
    // the handshake fails: the connection closes (maybe after a TLS alert), no SIP
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        !String::from_utf8_lossy(&got).contains("SIP/2.0"),
        "no SIP answer in clear text on the TLS port: {got:?}"
    );
    // a TLS client that never starts its handshake is not served either, and
    // meanwhile everything else works
    let _idle = TcpStream::connect(t.tls).expect("connect");
    assert!(t.proxy.ping().is_some(), "UDP still answered");
    let mut bob = t.ua("bob");
    bob.register(600);
}

/// Runs the binary with a TLS listener and these certificate settings; it must exit
/// at once with an error naming `key`.
fn start_fails(cert: &str, key: &str, expect_key: &str) {
    let dir = temp_dir("tls-bad-start");
    let mut cmd = Command::new(SIPWAKE);
    for (k, _) in std::env::vars() {
        if k.starts_with("SIPWAKE") {
            cmd.env_remove(k);
        }
    }
    let port = free_port();
    let tls_port = free_port();
    let mut child = cmd
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("SIPWAKE__SIP__LISTEN", format!("127.0.0.1:{port}"))
        .env("SIPWAKE__STORE__BACKEND", "memory")
        .env("SIPWAKE__TLS__LISTEN", format!("127.0.0.1:{tls_port}"))
        .env("SIPWAKE__TLS__CERT_FILE", cert)
        .env("SIPWAKE__TLS__KEY_FILE", key)
        .spawn()
        .expect("run sipwake");
    let status = wait_with_timeout(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = status.unwrap_or_else(|| panic!("sipwake kept running; stderr: {err}"));
    assert!(!status.success(), "{status}: {err}");
    assert!(
        err.contains(&format!("{expect_key}:")),
        "the error names {expect_key}: {err}"
    );
}

#[test]
fn bad_certificate_settings_stop_the_start_naming_the_key() {
    let pki = TlsPki::new();
    let dir = temp_dir("tls-bad-pki");
    let (cert, key) = pki.write(&dir);
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let missing = dir.join("missing.pem");
    let missing = missing.to_string_lossy();
    start_fails(&missing, &key, "tls.cert_file");
    start_fails(&cert, &missing, "tls.key_file");
    // the files swapped: no certificate where one belongs, no key where the key does
    start_fails(&key, &cert, "tls.cert_file");
    start_fails(&cert, &cert, "tls.key_file");
    // listeners without certificate settings are a configuration error
    start_fails("", "", "tls.cert_file");
}

#[test]
fn upstream_over_tls() {
    // the "PBX" is another sipwake with a TLS listener; the edge trusts its CA
    let pbx = TlsProxy::start("tls-upstream-pbx");
    let dir = temp_dir("tls-upstream-ca");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pbx.pki.ca_pem).unwrap();
    let upstream = format!("sip:127.0.0.1:{};transport=tls", pbx.tls.port());
    let edge = ProxyBuilder::new("tls-upstream-edge")
        .env("PROXY__DOMAINS", "example.com")
        .env("UPSTREAM__URI", &upstream)
        .env("TLS__CA_FILE", &ca.to_string_lossy())
        .start();
    let mut bob = Ua::udp("bob", &pbx.proxy);
    bob.domain = "pbx.example".into();
    bob.register(600);
    let mut alice = Ua::udp("alice", &edge);

    let inv = alice.invite_uri("sip:bob@pbx.example", "");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    let vias = got.values("via");
    assert_eq!(vias.len(), 3, "{got:?}");
    assert!(
        vias[1].starts_with("SIP/2.0/TLS 127.0.0.1:"),
        "the edge reached the upstream over TLS: {got:?}"
    );
    let rr = record_routes(&got);
    assert_eq!(rr.len(), 4, "two entries from each proxy: {got:?}");
    assert_eq!(uri_addr(&rr[1]), Some(pbx.tls), "{got:?}");
    assert_eq!(uri_param(&rr[2], "transport").as_deref(), Some("tls"));
    let btag = tag();
    bob.reply(&got, 180, "Ringing", Some(&btag));
    alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    bob.reply(&got, 200, "OK", Some(&btag));
    let ok = alice.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut ad = Dialog::uac(&inv, &ok);
    alice.ack_2xx(&mut ad, inv.cseq);
    bob.expect_request("ACK", Some(&inv.call_id));
    alice.send_in_dialog(&mut ad, "BYE", None);
    let bye = bob.expect_request("BYE", Some(&inv.call_id));
    assert!(bye.header("route").is_none(), "{bye:?}");
    bob.reply(&bye, 200, "OK", None);
    alice.expect_response(&inv.call_id, "BYE", "200", |c| c == 200);

    // an edge that does not trust the upstream's certificate sends nothing to it
    let stranger = ProxyBuilder::new("tls-upstream-stranger")
        .env("PROXY__DOMAINS", "example.com")
        .env("UPSTREAM__URI", &upstream)
        .start();
    let mut carol = Ua::udp("carol", &stranger);
    let inv = carol.invite_uri("sip:bob@pbx.example", "");
    let fin = carol.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(480), "{fin:?}");
    carol.ack_non2xx(&inv, &fin);
    bob.expect_nothing(
        "a call through an unverified TLS hop",
        Duration::from_millis(300),
        |m| m.call_id() == inv.call_id,
    );
}

/// A TLS handshake with `addr` trusting `config`'s roots: Ok, or why not.
fn handshake(
    addr: SocketAddr,
    config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
) -> Result<(), String> {
    use tokio_rustls::rustls;
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn sighup_serves_a_renewed_certificate() {
    let t = TlsProxy::start("tls-reload");
    let old = t.pki.client_config();
    let mut bob = t.ua("bob");
    bob.register(600);

    // the renewal replaces the files in place; SIGHUP makes sipwake read them again
    let renewed = TlsPki::new();
    renewed.write(&t.pki_dir);
    t.proxy.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while handshake(t.tls, renewed.client_config()).is_err() {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        handshake(t.tls, old.clone()).is_err(),
        "the old certificate is no longer served"
    );
    // a connection made before keeps its session
    bob.register(600);

    // a broken file changes nothing: the error names the key, the last good one stays
    std::fs::write(t.pki_dir.join("cert.pem"), "not a certificate").unwrap();
    t.proxy.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while !t.proxy.log_text().contains("tls.cert_file") {
        assert!(
            Instant::now() < deadline,
            "no error naming tls.cert_file: {}",
            t.proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    handshake(t.tls, renewed.client_config()).expect("the last good certificate");
    let mut carol = Ua::tls("carol", t.tls, renewed.client_config());
    carol.register(600);
}
