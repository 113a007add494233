//! Floods and abuse, over real sockets: the attacker sends from 127.0.0.2, honest
//! phones from 127.0.0.3, and only 127.0.0.1 (the "PBX") is trusted.
//!
//! - one address flooding 20,000 datagrams (junk, REGISTERs, INVITEs) and opening
//!   2,000 TCP connections does not stop another phone from registering and
//!   receiving calls;
//! - rate limits answer 503 with Retry-After (or drop, by setting), per source and per
//!   address of record, and spare trusted sources and the upstream;
//! - connection caps, in total and per source, close extra connections at once;
//! - the idle timeout closes idle connections, except those carrying a live binding,
//!   and a connection must send a whole message soon after it is accepted;
//! - oversized messages: 513 and close over TCP, dropped over UDP.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const ATTACKER: &str = "127.0.0.2";
const HONEST: &str = "127.0.0.3";

/// Raises this process's open-file limit to the hard limit (the flood holds 2,000
/// connections open); returns the soft limit in force.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct on our stack only.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// sipwake with only 127.0.0.1 trusted, plus `env`.
fn start(name: &str, env: &[(&str, &str)]) -> Proxy {
    let mut b = ProxyBuilder::new(name).env("PROXY__TRUSTED_NETWORKS", "127.0.0.1/32");
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.start()
}

/// A REGISTER of `user` with the UA's own contact, fresh Call-ID; (text, Call-ID).
fn register_text(ua: &Ua, user: &str, expires: u32) -> (String, String) {
    let cid = call_id();
    let contact = format!("<{}>", ua.contact_uri());
    let text = build_register(
        ua.tp.via(),
        &ua.via_hostport,
        user,
        DOMAIN,
        Some(&contact),
        Some(expires),
        &cid,
        1,
        &branch(),
        &tag(),
    );
    (text, cid)
}

/// Sends `text` and resends it (a retransmission: same branch) with RFC 3261 timer
/// E/A backoff until a final response to (`cid`, `method`) arrives.
fn send_until_final(ua: &mut Ua, text: &str, cid: &str, method: &str) -> Msg {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut wait = Duration::from_millis(500);
    loop {
        ua.send(text);
        let got = ua.try_expect(wait, |m| {
            m.status().is_some_and(|c| c >= 200) && m.call_id() == cid && m.cseq_method() == method
        });
        if let Some(m) = got {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no final response to {method} {cid} within 20 s",
            ua.user
        );
        wait = (wait * 2).min(Duration::from_secs(4));
    }
}

/// `caller` calls `callee`, who answers every copy of the INVITE with 200 (the UDP
/// path may lose messages under a flood, so both sides retransmit); the caller's
/// final response.
fn call_answered(caller: &mut Ua, callee: &mut Ua) -> Msg {
    let inv = caller.build_invite(&format!("sip:{}@{DOMAIN}", callee.user), "");
    let to_tag = tag();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut next_send = Instant::now();
    let mut wait = Duration::from_millis(500);
    loop {
        if Instant::now() >= next_send {
            caller.send(&inv.text);
            next_send = Instant::now() + wait;
            wait = (wait * 2).min(Duration::from_secs(4));
        }
        if let Some(req) = callee.try_expect(Duration::from_millis(50), |m| {
            m.method() == Some("INVITE") && m.call_id() == inv.call_id
        }) {
            callee.reply(&req, 200, "OK", Some(&to_tag));
        }
        if let Some(m) = caller.try_expect(Duration::from_millis(50), |m| {
            m.status().is_some_and(|c| c >= 200)
                && m.call_id() == inv.call_id
                && m.cseq_method() == "INVITE"
        }) {
            if m.status() == Some(200) {
                let mut d = Dialog::uac(&inv, &m);
                caller.ack_2xx(&mut d, inv.cseq);
            }
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "call {} -> {} not answered within 20 s",
            caller.user,
            callee.user
        );
    }
}

/// True once the peer closed `s` (EOF or reset) within `wait`; false if it stays open.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {
                if Instant::now() >= deadline {
                    return false;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Sends an OPTIONS over `s` and waits for its 200: the connection is open and served.
fn options_ok(s: &mut TcpStream, proxy: &Proxy) -> bool {
    let local = s.local_addr().unwrap();
    let cid = call_id();
    let req = format!(
        "OPTIONS sip:{hp} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch={b}\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag={t}\r\nTo: <sip:{hp}>\r\nCall-ID: {cid}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        hp = proxy.hostport(),
        b = branch(),
        t = tag()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if text.starts_with("SIP/2.0 200") && text.contains(&cid) {
                    return true;
                }
            }
        }
    }
    false
}

/// The value of one line of `/metrics` on the admin API at `admin`, e.g.
/// `sipwake_rate_limited_total{limit="register_per_source"}`.
fn metric(admin: SocketAddr, series: &str) -> f64 {
    let mut s = TcpStream::connect_timeout(&admin, WAIT).expect("connect to the admin API");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sipwake\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// A free loopback address for the admin API.
fn admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// ---------------------------------------------------------------------------------
// The flood
// ---------------------------------------------------------------------------------

/// What the attacker saw.
#[derive(Default)]
struct Seen {
    sent: AtomicUsize,
    rejected: AtomicU64,
    retry_after: AtomicU64,
    ok: AtomicU64,
    other: AtomicU64,
}

/// 20,000 datagrams from 127.0.0.2: random bytes, truncated SIP, REGISTERs for a
/// thousand AORs, INVITEs for users nobody registered. Paced at about 5,000 per
/// second so that the honest phones act while it lasts.
fn udp_flood(proxy: SocketAddr, seen: Arc<Seen>) -> (Duration, thread::JoinHandle<()>) {
    let sock = UdpSocket::bind((ATTACKER, 0)).expect("bind 127.0.0.2");
    let reader = sock.try_clone().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let rd_done = done.clone();
    let rd_seen = seen.clone();
    let reader = thread::spawn(move || {
        reader
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = vec![0u8; 65536];
        let mut done_at: Option<Instant> = None;
        loop {
            if rd_done.load(Ordering::Relaxed) {
                // answers to the last requests arrive within a moment; what comes
                // later is retransmissions (a 480 is resent until ACKed)
                if done_at.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1) {
                    return;
                }
            }
            let Ok((n, _)) = reader.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("SIP/2.0 503") {
                rd_seen.rejected.fetch_add(1, Ordering::Relaxed);
                if text.contains("\r\nRetry-After: ") {
                    rd_seen.retry_after.fetch_add(1, Ordering::Relaxed);
                }
            } else if text.starts_with("SIP/2.0 200") {
                rd_seen.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                rd_seen.other.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let local = sock.local_addr().unwrap();
    let mut rng = XorShift(0x5eed_f00d);
    let started = Instant::now();
    for i in 0..20_000usize {
        let msg: Vec<u8> = match i % 8 {
            0 | 1 => {
                let n = 1 + rng.below(1200);
                rng.bytes(n)
            }
            2 => {
                let full = register_flood_text(&local, &format!("victim{}", rng.below(1000)));
                full.as_bytes()[..rng.below(full.len())].to_vec()
            }
            3..=5 => {
                register_flood_text(&local, &format!("victim{}", rng.below(1000))).into_bytes()
            }
            _ => invite_flood_text(&local, &format!("nobody{}", rng.below(1000))).into_bytes(),
        };
        let _ = sock.send_to(&msg, proxy);
        seen.sent.fetch_add(1, Ordering::Relaxed);
        if i % 50 == 49 {
            thread::sleep(Duration::from_millis(10));
        }
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    (took, reader)
}

fn register_flood_text(local: &SocketAddr, user: &str) -> String {
    build_register(
        "UDP",
        &local.to_string(),
        user,
        DOMAIN,
        Some(&format!("<sip:{user}@{local}>")),
        Some(3600),
        &call_id(),
        1,
        &branch(),
        &tag(),
    )
}

fn invite_flood_text(local: &SocketAddr, user: &str) -> String {
    format!(
        "INVITE sip:{user}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={b}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:evil@{DOMAIN}>;tag={t}\r\nTo: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:evil@{local}>\r\n\
         Content-Length: 0\r\n\r\n",
        b = branch(),
        t = tag(),
        cid = call_id()
    )
}

/// 2,000 TCP connections from 127.0.0.2, held open.
fn tcp_flood(proxy: SocketAddr) -> (Vec<TcpStream>, usize) {
    let ip = ATTACKER.parse().unwrap();
    let mut held = Vec::with_capacity(2000);
    let mut failed = 0;
    for _ in 0..2000 {
        match tcp_connect_from(ip, proxy) {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
    }
    (held, failed)
}

/// How many of `conns` sipwake closed; waits until `expect_closed` are closed (or
/// 10 s have passed), since refusals take a moment to show.
fn count_closed(conns: &mut [TcpStream], expect_closed: usize) -> usize {
    for s in conns.iter() {
        s.set_nonblocking(true).unwrap();
    }
    let mut closed = vec![false; conns.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut buf = [0u8; 64];
        for (i, s) in conns.iter_mut().enumerate() {
            if !closed[i] {
                closed[i] = match s.read(&mut buf) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != ErrorKind::WouldBlock,
                };
            }
        }
        let n = closed.iter().filter(|c| **c).count();
        if n >= expect_closed || Instant::now() >= deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_flood_from_one_address_does_not_stop_another_phone() {
    let nofile = raise_nofile();
    assert!(
        nofile >= 4200,
        "the test needs 4,200 open files, has {nofile}"
    );
    // default limits: 1,000 connections per source, REGISTER 200/s (burst 1,000),
    // INVITE 100/s (burst 500)
    let mut proxy = start("flood", &[]);
    let addr = proxy.addr();
    let t0 = Instant::now();

    let seen = Arc::new(Seen::default());
    let udp_seen = seen.clone();
    let udp = thread::spawn(move || udp_flood(addr, udp_seen));
    let tcp = thread::spawn(move || {
        let started = Instant::now();
        let r = tcp_flood(addr);
        (r, started.elapsed())
    });
    while seen.sent.load(Ordering::Relaxed) < 2000 && !udp.is_finished() {
        thread::sleep(Duration::from_millis(5));
    }

    // the honest phones register while the flood goes on
    let mut alice = Ua::udp_at("alice", addr, &format!("{HONEST}:0"));
    let (text, cid) = register_text(&alice, "alice", 3600);
    let reg_started = Instant::now();
    let r = send_until_final(&mut alice, &text, &cid, "REGISTER");
    assert_eq!(r.status(), Some(200), "{r:?}");
    let alice_reg = reg_started.elapsed();
    let reg_at_flood = seen.sent.load(Ordering::Relaxed);

    let mut dave = Ua::tcp_from("dave", &proxy, HONEST);
    let r = dave.register(3600);
    assert!(r.header("flow-timer").is_some(), "{r:?}");

    // and get calls: from another phone at 127.0.0.3, and from the trusted PBX
    let mut carol = Ua::udp_at("carol", addr, &format!("{HONEST}:0"));
    let call_started = Instant::now();
    let resp = call_answered(&mut carol, &mut alice);
    assert_eq!(resp.status(), Some(200), "{resp:?}");
    let call_took = call_started.elapsed();
    let call_at_flood = seen.sent.load(Ordering::Relaxed);
    let mut pbx = Ua::udp_at("pbx", addr, "127.0.0.1:0");
    let resp = call_answered(&mut pbx, &mut dave);
    assert_eq!(resp.status(), Some(200), "{resp:?}");

    let (flood_took, reader) = udp.join().unwrap();
    reader.join().unwrap();
    let ((mut held, connect_failed), tcp_took) = tcp.join().unwrap();
    let closed = count_closed(&mut held, 1000);

    assert!(proxy.is_running(), "sipwake died under the flood");
    let rejected = seen.rejected.load(Ordering::Relaxed);
    assert!(rejected > 0, "no 503 for the flooder");
    assert_eq!(
        seen.retry_after.load(Ordering::Relaxed),
        rejected,
        "every 503 carries Retry-After"
    );
    assert_eq!(connect_failed, 0, "connects failed outright");
    assert_eq!(
        (closed, held.len() - closed),
        (1000, 1000),
        "limits.max_connections_per_source = 1000 closes the rest"
    );

    // after the flood: alice still registered and callable
    let resp = call_answered(&mut carol, &mut alice);
    assert_eq!(resp.status(), Some(200), "{resp:?}");

    let sent = seen.sent.load(Ordering::Relaxed);
    eprintln!(
        "flood: {sent} datagrams in {flood_took:?} ({:.0}/s); attacker got {rejected} x 503, \
         {} x 200, {} other; {} TCP connections in {tcp_took:?}, {closed} closed at once; \
         alice registered in {alice_reg:?} (flood at {reg_at_flood}), call answered in \
         {call_took:?} (flood at {call_at_flood}); whole test {:?}",
        sent as f64 / flood_took.as_secs_f64(),
        seen.ok.load(Ordering::Relaxed),
        seen.other.load(Ordering::Relaxed),
        held.len(),
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------

/// Sends every text at once, then collects the final responses, in send order.
fn burst(ua: &mut Ua, texts: &[(String, String)], method: &str) -> Vec<Msg> {
    for (t, _) in texts {
        ua.send(t);
    }
    texts
        .iter()
        .map(|(_, cid)| ua.expect_final(cid, method))
        .collect()
}

fn codes(resps: &[Msg]) -> Vec<u16> {
    resps.iter().map(|m| m.status().unwrap_or(0)).collect()
}

#[test]
fn rate_limits_answer_503_with_retry_after_and_spare_trusted_sources() {
    let admin = admin_addr();
    let admin_listen = admin.to_string();
    let proxy = start(
        "ratelimit",
        &[
            ("ADMIN__LISTEN", &admin_listen),
            ("LIMITS__REGISTER_PER_SOURCE_RATE", "1"),
            ("LIMITS__REGISTER_PER_SOURCE_BURST", "3"),
            ("LIMITS__INVITE_PER_SOURCE_RATE", "1"),
            ("LIMITS__INVITE_PER_SOURCE_BURST", "2"),
        ],
    );
    let mut evil = Ua::udp_at("evil", proxy.addr(), &format!("{ATTACKER}:0"));
    let texts: Vec<_> = (0..6)
        .map(|i| register_text(&evil, &format!("r{i}"), 3600))
        .collect();
    let resps = burst(&mut evil, &texts, "REGISTER");
    let c = codes(&resps);
    assert_eq!(&c[..3], &[200, 200, 200], "{c:?}");
    assert!(c[3..].iter().filter(|&&c| c == 503).count() >= 2, "{c:?}");
    let limited = resps.iter().find(|m| m.status() == Some(503)).unwrap();
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("503 without Retry-After: {limited:?}"));
    assert!((1..=5).contains(&retry), "{limited:?}");

    // another source is not affected
    let mut honest = Ua::udp_at("honest", proxy.addr(), &format!("{HONEST}:0"));
    honest.register(3600);

    // INVITEs have their own bucket: 2, then 503
    let invs: Vec<_> = (0..4)
        .map(|i| {
            let inv = evil.build_invite(&format!("sip:nobody{i}@{DOMAIN}"), "");
            (inv.text, inv.call_id)
        })
        .collect();
    let c = codes(&burst(&mut evil, &invs, "INVITE"));
    assert_eq!(&c[..2], &[480, 480], "{c:?}");
    assert!(c[2..].contains(&503), "{c:?}");

    // after Retry-After, the source is served again
    thread::sleep(Duration::from_secs(retry));
    let (t, cid) = register_text(&evil, "again", 3600);
    evil.send(&t);
    assert_eq!(evil.expect_final(&cid, "REGISTER").status(), Some(200));

    // the trusted PBX is never limited
    let mut pbx = Ua::udp_at("pbx", proxy.addr(), "127.0.0.1:0");
    let texts: Vec<_> = (0..20)
        .map(|i| register_text(&pbx, &format!("t{i}"), 3600))
        .collect();
    let c = codes(&burst(&mut pbx, &texts, "REGISTER"));
    assert!(c.iter().all(|&c| c == 200), "{c:?}");

    let limited = |l: &str| {
        metric(
            admin,
            &format!("sipwake_rate_limited_total{{limit=\"{l}\"}}"),
        )
    };
    assert!(limited("register_per_source") >= 2.0);
    assert!(limited("invite_per_source") >= 1.0);
    assert_eq!(limited("register_per_aor"), 0.0);
}

#[test]
fn register_per_aor_limit_counts_every_source() {
    let proxy = start(
        "aorlimit",
        &[
            ("LIMITS__REGISTER_PER_AOR_RATE", "1"),
            ("LIMITS__REGISTER_PER_AOR_BURST", "2"),
        ],
    );
    let mut a = Ua::udp_at("bob", proxy.addr(), &format!("{ATTACKER}:0"));
    let mut b = Ua::udp_at("bob", proxy.addr(), &format!("{HONEST}:0"));
    let texts: Vec<_> = (0..2).map(|_| register_text(&a, "bob", 3600)).collect();
    assert_eq!(codes(&burst(&mut a, &texts, "REGISTER")), [200, 200]);
    let (t, cid) = register_text(&b, "bob", 3600);
    b.send(&t);
    let r = b.expect_final(&cid, "REGISTER");
    assert_eq!(r.status(), Some(503), "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    // another AOR from the same source is fine
    let (t, cid) = register_text(&a, "carl", 3600);
    a.send(&t);
    assert_eq!(a.expect_final(&cid, "REGISTER").status(), Some(200));
}

#[test]
fn drop_mode_drops_what_is_over_the_limit() {
    let proxy = start(
        "dropmode",
        &[
            ("LIMITS__ACTION", "drop"),
            ("LIMITS__REGISTER_PER_SOURCE_RATE", "1"),
            ("LIMITS__REGISTER_PER_SOURCE_BURST", "2"),
        ],
    );
    let mut evil = Ua::udp_at("evil", proxy.addr(), &format!("{ATTACKER}:0"));
    let texts: Vec<_> = (0..4)
        .map(|i| register_text(&evil, &format!("d{i}"), 3600))
        .collect();
    for (t, _) in &texts {
        evil.send(t);
    }
    for (_, cid) in &texts[..2] {
        assert_eq!(evil.expect_final(cid, "REGISTER").status(), Some(200));
    }
    evil.expect_nothing(
        "answer to a REGISTER over the limit",
        Duration::from_millis(700),
        |m| m.status().is_some(),
    );
}

// ---------------------------------------------------------------------------------
// Connection caps and the idle timeout
// ---------------------------------------------------------------------------------

#[test]
fn connection_caps_close_extra_connections_at_once() {
    let admin = admin_addr();
    let admin_listen = admin.to_string();
    let proxy = start(
        "conncaps",
        &[
            ("ADMIN__LISTEN", &admin_listen),
            ("LIMITS__MAX_CONNECTIONS", "5"),
            ("LIMITS__MAX_CONNECTIONS_PER_SOURCE", "3"),
        ],
    );
    let attacker = ATTACKER.parse().unwrap();
    let honest = HONEST.parse().unwrap();
    let connect = |ip| tcp_connect_from(ip, proxy.addr()).expect("connect");

    let mut a: Vec<TcpStream> = (0..3).map(|_| connect(attacker)).collect();
    for s in &mut a {
        assert!(options_ok(s, &proxy), "an admitted connection is served");
    }
    let mut extra = connect(attacker);
    assert!(
        closed_within(&mut extra, WAIT),
        "4th from one source is closed"
    );

    let mut h: Vec<TcpStream> = (0..2).map(|_| connect(honest)).collect();
    for s in &mut h {
        assert!(options_ok(s, &proxy), "another source still gets in");
    }
    let mut over = connect(honest);
    assert!(closed_within(&mut over, WAIT), "6th in total is closed");
    assert_eq!(metric(admin, "sipwake_tcp_connections"), 5.0);
    assert_eq!(metric(admin, "sipwake_tcp_connections_refused_total"), 2.0);

    // a closed connection gives its place back
    drop(a.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s = connect(honest);
        if options_ok(&mut s, &proxy) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn idle_timeout_spares_a_connection_with_a_live_binding() {
    let proxy = start("idle", &[("SIP__TCP_IDLE_TIMEOUT_SECS", "1")]);
    let mut alice = Ua::tcp_from("alice", &proxy, HONEST);
    let r = alice.register(3600);
    assert_eq!(
        r.header("flow-timer").map(str::trim),
        Some("120"),
        "a TCP registration gets Flow-Timer: {r:?}"
    );
    let mut idle = tcp_connect_from(HONEST.parse().unwrap(), proxy.addr()).unwrap();
    assert!(options_ok(&mut idle, &proxy));
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "an idle connection without binding is closed"
    );

    // three idle periods later, alice's connection still carries her calls
    thread::sleep(Duration::from_secs(3));
    let mut pbx = Ua::udp_at("pbx", proxy.addr(), "127.0.0.1:0");
    let resp = call_answered(&mut pbx, &mut alice);
    assert_eq!(resp.status(), Some(200), "{resp:?}");

    // once her binding is gone, the idle timeout applies again
    let contact = format!("<{}>", alice.contact_uri());
    let r = alice.register_with(Some(&contact), Some(0));
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert!(
        alice.wait_tcp_closed(Duration::from_secs(5)),
        "a connection whose binding is gone is closed when idle"
    );
}

// ---------------------------------------------------------------------------------
// Message size
// ---------------------------------------------------------------------------------

#[test]
fn oversized_messages_get_513_over_tcp_and_are_dropped_over_udp() {
    let proxy = start("bigmsg", &[("SIP__MAX_MESSAGE_SIZE", "2048")]);
    let mut ua = Ua::tcp_from("big", &proxy, HONEST);
    let cid = call_id();
    let body = "x".repeat(3000);
    let head = format!(
        "MESSAGE sip:someone@{DOMAIN} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n\
         From: <sip:big@{DOMAIN}>;tag={}\r\nTo: <sip:someone@{DOMAIN}>\r\nCall-ID: {cid}\r\n\
         CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n",
        ua.via(&branch()),
        tag()
    );
    ua.send(&with_body(&head, "", &body));
    let r = ua.expect_final(&cid, "MESSAGE");
    assert_eq!(r.status(), Some(513), "{r:?}");
    assert!(
        ua.wait_tcp_closed(WAIT),
        "the connection is closed after 513"
    );

    let mut u = Ua::udp_at("bigudp", proxy.addr(), &format!("{HONEST}:0"));
    let cid = call_id();
    let head = head.replace("SIP/2.0/TCP", "SIP/2.0/UDP");
    let text = with_body(&head, "", &body).replace(&r.call_id().to_string(), &cid);
    u.send(&text);
    u.expect_nothing(
        "answer to an oversized datagram",
        Duration::from_millis(700),
        |m| m.call_id() == cid,
    );
}

#[test]
fn connections_must_send_a_message_soon_after_accept() {
    let proxy = start("firstmsg", &[("LIMITS__FIRST_MESSAGE_TIMEOUT_SECS", "1")]);
    let honest = HONEST.parse().unwrap();

    // silent, or trickling a header that never ends: closed
    let mut silent = tcp_connect_from(honest, proxy.addr()).unwrap();
    let mut trickle = tcp_connect_from(honest, proxy.addr()).unwrap();
    for _ in 0..8 {
        if trickle
            .write_all(b"OPTIONS sip:x SIP/2.0\r\nX-Junk: a\r\n")
            .is_err()
        {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        closed_within(&mut silent, WAIT),
        "a silent connection is closed"
    );
    assert!(
        closed_within(&mut trickle, WAIT),
        "a connection trickling a header is closed"
    );

    // a message split across reads (even inside the blank line) is framed, and the
    // connection then only has the idle timeout (an hour here)
    let mut ok = tcp_connect_from(honest, proxy.addr()).unwrap();
    let local = ok.local_addr().unwrap();
    let cid = call_id();
    let req = format!(
        "OPTIONS sip:{hp} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch={b}\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag={t}\r\nTo: <sip:{hp}>\r\nCall-ID: {cid}\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        hp = proxy.hostport(),
        b = branch(),
        t = tag()
    );
    let bytes = req.as_bytes();
    let cuts = [10, 40, bytes.len() - 1, bytes.len()];
    let mut from = 0;
    for to in cuts {
        ok.write_all(&bytes[from..to]).unwrap();
        from = to;
        thread::sleep(Duration::from_millis(100));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    ok.set_read_timeout(Some(WAIT)).unwrap();
    while !String::from_utf8_lossy(&got).contains(&cid) {
        let n = ok.read(&mut buf).expect("the answer to a split OPTIONS");
        assert!(n > 0, "closed instead of answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("SIP/2.0 200"));
    thread::sleep(Duration::from_millis(1500));
    assert!(
        options_ok(&mut ok, &proxy),
        "kept open after its first message"
    );
}

#[test]
fn the_upstream_is_not_limited() {
    let proxy = start(
        "upstreamexempt",
        &[
            ("UPSTREAM__URI", &format!("sip:{ATTACKER}:5999")),
            ("LIMITS__INVITE_PER_SOURCE_RATE", "1"),
            ("LIMITS__INVITE_PER_SOURCE_BURST", "1"),
        ],
    );
    let mut pbx = Ua::udp_at("pbx", proxy.addr(), &format!("{ATTACKER}:0"));
    let invs: Vec<_> = (0..4)
        .map(|i| {
            let inv = pbx.build_invite(&format!("sip:nobody{i}@{DOMAIN}"), "");
            (inv.text, inv.call_id)
        })
        .collect();
    assert_eq!(codes(&burst(&mut pbx, &invs, "INVITE")), [480; 4]);
    let mut phone = Ua::udp_at("phone", proxy.addr(), &format!("{HONEST}:0"));
    let invs: Vec<_> = (0..2)
        .map(|i| {
            let inv = phone.build_invite(&format!("sip:nobody{i}@{DOMAIN}"), "");
            (inv.text, inv.call_id)
        })
        .collect();
    assert_eq!(codes(&burst(&mut phone, &invs, "INVITE")), [480, 503]);
}
