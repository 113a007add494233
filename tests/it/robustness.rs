//! Bad input: random and mutated datagrams and TCP streams must not kill sipwake;
//! unparseable requests get a 400 naming the fault; keep-alives are absorbed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::*;

/// Valid messages to start mutations from, addressed to the proxy from `local`.
fn seeds(proxy: SocketAddr, local: SocketAddr) -> Vec<String> {
    let p = proxy;
    let l = local;
    let sdp = SDP;
    vec![
        build_register(
            "UDP",
            &l.to_string(),
            "fuzz",
            DOMAIN,
            Some(&format!("<sip:fuzz@{l}>;+sip.instance=\"<urn:uuid:1-2-3>\";reg-id=1")),
            Some(600),
            &call_id(),
            1,
            &branch(),
            &tag(),
        ),
        format!(
            "INVITE sip:fuzz@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch={b};rport\r\n\
             Max-Forwards: 70\r\nFrom: \"Fuzz, Tester\" <sip:a@{DOMAIN}>;tag=1\r\n\
             To: <sip:fuzz@{DOMAIN}>\r\nCall-ID: {c}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:a@{l}>\r\nRecord-Route: <sip:x@{p};lr>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {n}\r\n\r\n{sdp}",
            b = branch(),
            c = call_id(),
            n = sdp.len()
        ),
        format!(
            "OPTIONS sip:{p} SIP/2.0\r\nv: SIP/2.0/UDP {l};branch={b}\r\nMax-Forwards: 70\r\n\
             f: <sip:a@{DOMAIN}>;tag=2\r\nt: <sip:{p}>\r\ni: {c}\r\nCSeq: 7 OPTIONS\r\n\
             l: 0\r\n\r\n",
            b = branch(),
            c = call_id()
        ),
        format!(
            "BYE sip:fuzz@{l} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch={b}\r\nMax-Forwards: 70\r\n\
             Route: <sip:abcdef@{p};lr>\r\nFrom: <sip:a@{DOMAIN}>;tag=3\r\n\
             To: <sip:fuzz@{DOMAIN}>;tag=4\r\nCall-ID: {c}\r\nCSeq: 2 BYE\r\n\
             Content-Length: 0\r\n\r\n",
            b = branch(),
            c = call_id()
        ),
        format!(
            "CANCEL sip:fuzz@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch={b}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@{DOMAIN}>;tag=5\r\nTo: <sip:fuzz@{DOMAIN}>\r\n\
             Call-ID: {c}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
            b = branch(),
            c = call_id()
        ),
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {p};branch={b}\r\nVia: SIP/2.0/UDP {l};branch={b}x\r\n\
             From: <sip:a@{DOMAIN}>;tag=6\r\nTo: <sip:fuzz@{DOMAIN}>;tag=7\r\nCall-ID: {c}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:fuzz@{l}>\r\nContent-Length: 0\r\n\r\n",
            b = branch(),
            c = call_id()
        ),
        format!(
            "MESSAGE sip:fuzz@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch={b};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@{DOMAIN}>;tag=8\r\nTo: <sip:fuzz@{DOMAIN}>\r\n\
             Call-ID: {c}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\
             Content-Length: 5\r\n\r\nhello",
            b = branch(),
            c = call_id()
        ),
        format!(
            "ACK sip:fuzz@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch={b}\r\nMax-Forwards: 70\r\n\
             From: <sip:a@{DOMAIN}>;tag=9\r\nTo: <sip:fuzz@{DOMAIN}>;tag=10\r\nCall-ID: {c}\r\n\
             CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            b = branch(),
            c = call_id()
        ),
    ]
}

const NASTY: &[&str] = &[
    "Content-Length: 4294967296",
    "Content-Length: -1",
    "Content-Length: 99999999999999999999",
    "CSeq: 4294967296 INVITE",
    "CSeq: -1 INVITE",
    "Max-Forwards: 99999999999",
    "Max-Forwards: -3",
    "Expires: 18446744073709551616",
    "Via: SIP/2.0/UDP [::1",
    "Via: SIP/2.0/UDP 127.0.0.1:99999;branch=z9hG4bK;rport=0",
    "Via: ;;;;",
    "Contact: <sip:@:0>;expires=",
    "Contact: *",
    "Contact: <<<<sip:a@b>>>>",
    "To: \"unterminated <sip:a@b>",
    "From: <sip:a@b>;tag=;tag=;tag=",
    "Route: <sip:127.0.0.1;lr>, <sip:127.0.0.1;lr>, <",
    "Record-Route: <sip:%00%ff@127.0.0.1;lr>",
    "Call-ID: ",
    "X-Long: ",
];

fn mutate(rng: &mut XorShift, seed: &str) -> Vec<u8> {
    let mut m: Vec<u8> = seed.as_bytes().to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(12) {
            0 => {
                // flip bits
                for _ in 0..1 + rng.below(8) {
                    if !m.is_empty() {
                        let i = rng.below(m.len());
                        m[i] ^= 1 << rng.below(8);
                    }
                }
            }
            1 => {
                // insert random bytes
                let i = rng.below(m.len() + 1);
                let k = 1 + rng.below(32);
                let ins = rng.bytes(k);
                m.splice(i..i, ins);
            }
            2 => {
                // delete a range
                if !m.is_empty() {
                    let i = rng.below(m.len());
                    let j = (i + 1 + rng.below(64)).min(m.len());
                    m.drain(i..j);
                }
            }
            3 => {
                // truncate
                let n = rng.below(m.len() + 1);
                m.truncate(n);
            }
            4 | 5 => {
                // duplicate, drop or swap header lines
                let text = String::from_utf8_lossy(&m).into_owned();
                let mut lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
                if lines.len() > 2 {
                    let i = 1 + rng.below(lines.len() - 1);
                    match rng.below(3) {
                        0 => {
                            let l = lines[i].clone();
                            for _ in 0..1 + rng.below(5) {
                                lines.insert(i, l.clone());
                            }
                        }
                        1 => {
                            lines.remove(i);
                        }
                        _ => {
                            let j = 1 + rng.below(lines.len() - 1);
                            lines.swap(i, j);
                        }
                    }
                }
                m = lines.join("\r\n").into_bytes();
            }
            6 | 7 => {
                // a nasty header after the start line
                let h = NASTY[rng.below(NASTY.len())];
                let pos = m.windows(2).position(|w| w == b"\r\n").map_or(0, |p| p + 2);
                let mut line = h.as_bytes().to_vec();
                if h.starts_with("X-Long") {
                    line.extend(std::iter::repeat_n(b'a', 1000 + rng.below(60_000)));
                }
                line.extend_from_slice(b"\r\n");
                m.splice(pos..pos, line);
            }
            8 => {
                // many Vias
                let pos = m.windows(2).position(|w| w == b"\r\n").map_or(0, |p| p + 2);
                let mut block = Vec::new();
                for k in 0..rng.below(300) {
                    block.extend_from_slice(
                        format!("Via: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK{k}\r\n", 1 + k)
                            .as_bytes(),
                    );
                }
                m.splice(pos..pos, block);
            }
            9 => {
                // replace a byte with a special one
                if !m.is_empty() {
                    let i = rng.below(m.len());
                    m[i] = [
                        0u8, b'\r', b'\n', b':', b';', b'<', b'>', b'"', b'\\', b',', 0xff, b' ',
                    ][rng.below(12)];
                }
            }
            10 => {
                // mangle the start line
                let starts: [&[u8]; 8] = [
                    b"INVITE",
                    b"SIP/2.0",
                    b"SIP/3.0 200",
                    b"INV ITE sip:",
                    b"REGISTER sips:",
                    b"\x00\x00\x00",
                    b"OPTIONS * SIP/2.0",
                    b"ACK sip:a@b SIP/2.0 extra",
                ];
                let end = m.windows(2).position(|w| w == b"\r\n").unwrap_or(m.len());
                let s = starts[rng.below(starts.len())];
                m.splice(0..end.min(rng.below(end + 1)), s.iter().copied());
            }
            _ => {
                // body / Content-Length mismatch
                let k = rng.below(200);
                m.extend(rng.bytes(k));
            }
        }
    }
    m
}

#[test]
fn random_and_mutated_input_does_not_kill_it() {
    let mut proxy = Proxy::start("fuzz");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut rng = XorShift(0x5EED_0F51_B000_0001 ^ 0x9E37_79B9_7F4A_7C15);
    let seeds = seeds(proxy.addr(), local);
    let mut drain = vec![0u8; 65536];
    let mut replies = 0usize;
    let datagrams = 4000;
    let started = Instant::now();
    for n in 0..datagrams {
        let data = match rng.below(10) {
            0 | 1 => {
                let len = if rng.one_in(50) {
                    60_000
                } else {
                    rng.below(1500)
                };
                rng.bytes(len)
            }
            _ => {
                let seed = &seeds[rng.below(seeds.len())];
                mutate(&mut rng, seed)
            }
        };
        let data = &data[..data.len().min(65_000)];
        let _ = sock.send_to(data, proxy.addr());
        if n % 25 == 24 {
            while sock.recv_from(&mut drain).is_ok() {
                replies += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if n % 500 == 499 {
            assert!(
                proxy.is_running(),
                "sipwake died after {} datagrams: {:?}",
                n + 1,
                proxy.exit_status()
            );
        }
    }
    eprintln!(
        "sent {datagrams} datagrams in {:?}, {replies} replies",
        started.elapsed()
    );

    // TCP: a few hundred connections with random and mutated bytes.
    let addr = proxy.addr();
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let seeds = seeds.clone();
        threads.push(std::thread::spawn(move || {
            let mut rng = XorShift(0xC0FF_EE00_0000_0001 ^ (t << 32 | 0x1234_5678));
            for _ in 0..75 {
                let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                    continue;
                };
                s.set_write_timeout(Some(Duration::from_secs(2))).ok();
                let mut payload = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    match rng.below(6) {
                        0 | 1 => {
                            let len = rng.below(4096);
                            payload.extend(rng.bytes(len));
                        }
                        2 => {
                            // a header section that never ends, beyond any cap
                            payload.extend_from_slice(b"INVITE sip:a@b SIP/2.0\r\nX: ");
                            let len = 70_000 + rng.below(10_000);
                            payload.extend(std::iter::repeat_n(b'x', len));
                        }
                        3 => {
                            // a Content-Length that promises more than comes
                            payload.extend_from_slice(
                                b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 100000\r\n\r\nshort",
                            );
                        }
                        _ => {
                            let seed = seeds[rng.below(seeds.len())].replace("UDP", "TCP");
                            payload.extend(mutate(&mut rng, &seed));
                        }
                    }
                }
                let _ = s.write_all(&payload);
                if rng.one_in(3) {
                    s.set_read_timeout(Some(Duration::from_millis(20))).ok();
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                }
                drop(s);
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }

    assert!(
        proxy.is_running(),
        "sipwake died: {:?}",
        proxy.exit_status()
    );
    let pong = proxy.ping();
    assert!(pong.is_some(), "sipwake no longer answers OPTIONS");

    // And it still does real work, over both transports.
    let mut bob = Ua::tcp("after-fuzz", &proxy);
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("after-fuzz", "");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    bob.reply(&got, 486, "Busy Here", Some(&tag()));
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(486));
    alice.ack_non2xx(&inv, &fin);
}

/// First SIP response arriving on `sock` within the wait.
fn first_response(sock: &UdpSocket, wait: Duration) -> Option<Msg> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Some(m) = Msg::parse(&buf[..n], from, false) {
                    if m.status().is_some() {
                        return Some(m);
                    }
                }
            }
            Err(_) => return None,
        }
    }
}

fn bad_request(proxy: &Proxy, text: &str) -> Msg {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    let text = text.replace("LOCAL", &local.to_string());
    sock.send_to(text.as_bytes(), proxy.addr()).unwrap();
    first_response(&sock, WAIT).unwrap_or_else(|| panic!("no response to:\n{text}"))
}

#[test]
fn unparseable_requests_get_400_naming_the_fault() {
    let proxy = Proxy::start("bad400");
    let cases: [(&str, String, &[&str]); 3] = [
        (
            "bad CSeq",
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP LOCAL;branch=z9hG4bK-bad1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: bad1@test\r\nCSeq: abc INVITE\r\nContent-Length: 0\r\n\r\n"
                .to_owned(),
            &["cseq"],
        ),
        (
            "no Call-ID",
            "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP LOCAL;branch=z9hG4bK-bad2;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                .to_owned(),
            &["call-id", "callid", "call id"],
        ),
        (
            "CSeq method differs from the request method",
            "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP LOCAL;branch=z9hG4bK-bad3;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: bad3@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
                .to_owned(),
            &["cseq", "method"],
        ),
    ];
    for (what, text, names) in cases {
        let r = bad_request(&proxy, &text);
        assert_eq!(r.status(), Some(400), "{what}: {r:?}");
        let reason = r.reason().to_ascii_lowercase();
        assert!(
            names.iter().any(|n| reason.contains(n)),
            "{what}: the reason phrase should name the fault ({names:?}), got {:?}",
            r.reason()
        );
    }
}

/// A bare CR or LF inside a header value (a line break that is not CRLF): answered
/// `400` naming the fault when the Via can be read, with no copied value carrying the
/// break (a peer that ends lines at LF would read a header of the attacker's in it);
/// dropped only when the Via itself holds it. Over UDP and over TCP.
#[test]
fn a_bare_cr_or_lf_in_a_header_gets_400() {
    let proxy = Proxy::start("bare-crlf");
    let base =
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP LOCAL;branch=z9hG4bK-BR;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: CID@test\r\nCSeq: 1 INVITE\r\nSubject: hi\r\nContent-Length: 0\r\n\r\n";
    for (what, from, to) in [
        (
            "LF in Call-ID",
            "Call-ID: CID@test",
            "Call-ID: CID@test\nX-Injected: 1",
        ),
        (
            "CR in Call-ID",
            "Call-ID: CID@test",
            "Call-ID: CID@test\rX-Injected: 1",
        ),
        ("LF in From", ";tag=1\r\n", ";tag=1\nX-Injected: 1\r\n"),
        ("LF in Subject", "Subject: hi", "Subject: hi\nX-Injected: 1"),
        (
            "CR in To",
            "<sip:bob@example.com>\r\nCall",
            "<sip:bob@example.com>\rX-Injected: 1\r\nCall",
        ),
    ] {
        let n = what.len();
        let text = base
            .replacen(from, to, 1)
            .replace("CID", &format!("bare{n}{}", &what[..2]))
            .replace("BR", &branch());
        assert!(text.contains("X-Injected"), "{what}");
        let r = bad_request(&proxy, &text);
        assert_eq!(r.status(), Some(400), "{what}: {r:?}");
        assert!(
            r.reason().to_ascii_lowercase().contains("bare cr or lf"),
            "{what}: the reason names the fault: {r:?}"
        );
        assert!(
            !r.raw.to_ascii_lowercase().contains("x-injected"),
            "{what}: nothing of the broken value is echoed: {r:?}"
        );
    }

    // over TCP, too
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let local = s.local_addr().unwrap();
    let text = base
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        .replace("LOCAL", &local.to_string())
        .replace("BR", &branch())
        .replace("Subject: hi", "Subject: hi\nX-Injected: 1");
    s.write_all(text.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).expect("an answer over TCP");
    let r = Msg::parse(&buf[..n], proxy.addr(), true).expect("a SIP response");
    assert_eq!(r.status(), Some(400), "{r:?}");

    // a Via with a bare LF cannot be answered: nothing comes back, and sipwake lives on
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    let text = base
        .replace("LOCAL", &local.to_string())
        .replace("BR;rport", &format!("{};rport\nX-Injected: 1", branch()));
    sock.send_to(text.as_bytes(), proxy.addr()).unwrap();
    assert!(
        first_response(&sock, Duration::from_millis(500)).is_none(),
        "a broken Via gets no answer"
    );
    assert!(proxy.ping().is_some(), "still alive");
}

/// The forged line of issue 10: a folded Call-ID whose continuation looks like a log
/// line of its own.
const FORGED: &str =
    "2026-12-07T00:00:00.000000Z ERROR sipwake::forged: injected by a folded Call-ID";

/// Text from the wire never reaches the human log raw: a folded Call-ID (CRLF inside
/// the value) cannot start a forged line, and NUL or ESC from a Call-ID show escaped.
#[test]
fn peer_text_is_escaped_in_the_human_log() {
    let proxy = ProxyBuilder::new("logescape")
        .env("LOG__LEVEL", "debug")
        .env("LOG__FORMAT", "human")
        .start();
    let folded = format!("inj1@test\r\n {FORGED}");
    let text = format!(
        "INVITE sip:nobody@example.com SIP/2.0\r\nVia: SIP/2.0/UDP LOCAL;branch=z9hG4bK-inj1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:nobody@example.com>\r\n\
         Call-ID: {folded}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let r = bad_request(&proxy, &text);
    assert_eq!(r.status(), Some(400), "{r:?}");
    let text = "INVITE sip:nobody@example.com SIP/2.0\r\nVia: SIP/2.0/UDP LOCAL;branch=z9hG4bK-inj2;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:nobody@example.com>\r\n\
         Call-ID: inj2\0nul\u{1b}[2J@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let r = bad_request(&proxy, text);
    assert!(r.status().is_some_and(|c| c >= 400), "{r:?}");
    assert!(
        proxy.wait_log("inj2", Duration::from_secs(5)),
        "the second request is logged: {}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    assert!(
        log.contains("inj1@test"),
        "the folded Call-ID is logged (escaped): {log}"
    );
    for line in log.lines() {
        assert!(
            !line.trim_start().starts_with(FORGED),
            "a forged line in the log:\n{log}"
        );
    }
    for (c, name) in [('\r', "CR"), ('\0', "NUL"), ('\u{1b}', "ESC")] {
        assert!(!log.contains(c), "a raw {name} in the log:\n{log:?}");
    }
    assert!(
        log.contains(&format!("inj1@test\\r\\n {FORGED}")),
        "CR LF shown escaped: {log}"
    );
    assert!(
        log.contains("inj2\\0nul\\x1b[2J@test"),
        "NUL, ESC shown escaped: {log}"
    );
}

#[test]
fn keepalives_absorbed_on_udp_and_answered_on_tcp() {
    let proxy = Proxy::start("keepalive");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();

    // STUN binding request (RFC 5389): may get a STUN answer, never a SIP one.
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(b"sipwake-test");
    sock.send_to(&stun, proxy.addr()).unwrap();
    sock.send_to(b"\r\n", proxy.addr()).unwrap();
    sock.send_to(b"\r\n\r\n", proxy.addr()).unwrap();
    // A stray response is dropped too.
    let stray = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-nobody\r\nFrom: <sip:a@b>;tag=1\r\n\
         To: <sip:c@d>;tag=2\r\nCall-ID: stray@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        proxy.hostport()
    );
    sock.send_to(stray.as_bytes(), proxy.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_millis(800);
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                assert!(
                    !buf[..n].starts_with(b"SIP/2.0"),
                    "keep-alive or stray response got a SIP answer: {}",
                    String::from_utf8_lossy(&buf[..n])
                );
                if n >= 20 {
                    assert_eq!(
                        &buf[0..2],
                        &[0x01, 0x01],
                        "only a STUN binding success may come back"
                    );
                }
            }
            Err(_) => break,
        }
    }

    // RFC 5626 §4.4.1: CRLFCRLF ping on a stream gets a CRLF pong.
    let mut bob = Ua::tcp("bob", &proxy);
    bob.send_raw(b"\r\n\r\n");
    let deadline = Instant::now() + WAIT;
    while bob.pongs == 0 && Instant::now() < deadline {
        let _ = bob.recv_until(Instant::now() + Duration::from_millis(100));
    }
    assert!(bob.pongs >= 1, "no CRLF pong to a CRLFCRLF ping over TCP");
    // The connection still carries SIP afterwards.
    bob.register(600);
    assert!(proxy.ping().is_some());
}
