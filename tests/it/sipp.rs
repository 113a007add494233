//! SIPp scenarios from `sipp-scenarios/` against the real binary: REGISTER of 1,000
//! users, 500 calls over UDP and over TCP from a SIPp UAC to a registered SIPp UAS,
//! CANCEL before answer, and registrations and calls spread over two nodes sharing
//! one Redis. Fails when `sipp` is not installed;
//! `.ci/run` installs it.
//!
//! The UAS must be registered from where it can be reached:
//! - UDP: `register_uas.xml -m 1` runs from the UAS's own port just before the UAS
//!   starts there, so the binding's flow (source address) is the UAS's socket.
//! - TCP: sipwake never opens a connection toward a phone that registered over TCP
//!   (RFC 5626: the flow is the connection), and SIPp cannot both keep a registration
//!   connection and serve calls in one scenario; so a small "NAT box" in this test
//!   registers the UAS over its own connection to sipwake and then relays that
//!   connection, byte for byte, to the SIPp UAS's listening port.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::*;

/// SIPp runs one at a time: they are CPU-hungry and time-bounded.
static SERIAL: Mutex<()> = Mutex::new(());

const CALLS: u32 = 500;

/// Fails the test when `sipp` is not on PATH: CI installs it (`.ci/run`, the Debian
/// package sip-tester), and a scenario that did not run must not pass.
fn require_sipp() {
    let found = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "sipp not found on PATH: install the Debian package sip-tester (.ci/run does)"
    );
}

fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp-scenarios")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

struct Sipp {
    name: String,
    child: Child,
    out: PathBuf,
    dir: PathBuf,
}

/// Starts SIPp in `dir` (its logs go there) with `args`; output to `dir/name.out`.
fn spawn(dir: &Path, name: &str, args: &[String]) -> Sipp {
    let out = dir.join(format!("{name}.out"));
    let file = std::fs::File::create(&out).unwrap();
    let child = Command::new("sipp")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("run sipp");
    Sipp {
        name: name.to_owned(),
        child,
        out,
        dir: dir.to_owned(),
    }
}

impl Sipp {
    /// Waits (bounded) and asserts exit status 0 (all calls successful).
    fn expect_success(mut self, limit: Duration) {
        let status = wait_with_timeout(&mut self.child, limit);
        self.check(status, limit);
    }

    fn check(&self, status: Option<ExitStatus>, limit: Duration) {
        if status.is_some_and(|s| s.success()) {
            return;
        }
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut errors = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let p = e.path();
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                if n.ends_with("_errors.log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let head: String = text.chars().take(6000).collect();
                    errors.push_str(&format!("--- {n} ---\n{head}\n"));
                }
            }
        }
        match status {
            None => panic!(
                "sipp {} did not finish within {limit:?}; output:\n{out}\n{errors}",
                self.name
            ),
            Some(s) => panic!(
                "sipp {} failed with {s} (0 = every call succeeded); output:\n{out}\n{errors}",
                self.name
            ),
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Arguments every run gets: loopback, no keyboard, bounded time, error traces.
fn base_args(sf: &str, local_port: u16, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "-sf".into(),
        scenario(sf),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        local_port.to_string(),
        "-nostdin".into(),
        "-timeout".into(),
        "60s".into(),
        "-timeout_error".into(),
        "-trace_err".into(),
        "-max_recv_loops".into(),
        "10000".into(),
    ];
    if std::env::var_os("SIPWAKE_TEST_SIPP_TRACE").is_some() {
        // Every message in <scenario>_<pid>_messages.log, for debugging.
        v.push("-trace_msg".into());
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Waits until something listens on 127.0.0.1:`port` (UDP or TCP).
fn wait_listening(port: u16, tcp: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let busy = if tcp {
            TcpListener::bind(("127.0.0.1", port)).is_err()
        } else {
            UdpSocket::bind(("127.0.0.1", port)).is_err()
        };
        if busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("SIPp UAS did not start listening on port {port}");
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn sipp_register_thousand_users() {
    require_sipp();
    let _serial = lock();
    let proxy = Proxy::start("sipp-register");
    let dir = temp_dir("sipp-register-run");
    let port = free_port();
    let started = Instant::now();
    let run = spawn(
        &dir,
        "register",
        &[
            base_args(
                "register.xml",
                port,
                &["-s", "sippuser", "-m", "1000", "-r", "500", "-l", "200"],
            ),
            vec![proxy.hostport()],
        ]
        .concat(),
    );
    run.expect_success(Duration::from_secs(90));
    eprintln!("1000 SIPp REGISTERs in {:?}", started.elapsed());

    // The registrar really has them.
    for n in [1, 500, 1000] {
        let mut q = Ua::udp("query", &proxy);
        q.user = format!("sippuser{n}");
        q.domain = "127.0.0.1".into();
        let r = q.register_with(None, None);
        assert_eq!(r.status(), Some(200), "{r:?}");
        let uris: Vec<String> = r.contacts().iter().map(|c| uri_of(c)).collect();
        let want = format!("sip:sippuser{n}@127.0.0.1:{port}");
        assert!(
            uris.len() == 1 && uris[0].starts_with(&want),
            "sippuser{n}: expected one binding {want}, got {uris:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sipp_calls_over_udp() {
    require_sipp();
    let _serial = lock();
    let proxy = Proxy::start("sipp-udp");
    let dir = temp_dir("sipp-udp-run");
    let uas_port = free_port();

    // Register the UAS from its own port, then start it there.
    spawn(
        &dir,
        "register_uas",
        &[
            base_args("register_uas.xml", uas_port, &["-s", "uasudp", "-m", "1"]),
            vec![proxy.hostport()],
        ]
        .concat(),
    )
    .expect_success(Duration::from_secs(30));

    let calls = CALLS.to_string();
    let uas = spawn(
        &dir,
        "uas",
        &base_args("uas.xml", uas_port, &["-m", &calls]),
    );
    wait_listening(uas_port, false);

    let started = Instant::now();
    let uac = spawn(
        &dir,
        "uac",
        &[
            base_args(
                "uac.xml",
                free_port(),
                &["-s", "uasudp", "-m", &calls, "-r", "250", "-l", "300"],
            ),
            vec![proxy.hostport()],
        ]
        .concat(),
    );
    uac.expect_success(Duration::from_secs(90));
    eprintln!("{CALLS} SIPp calls over UDP in {:?}", started.elapsed());
    uas.expect_success(Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The "NAT box" for the TCP UAS: registers `user` over its own TCP connection to the
/// proxy, then relays that connection to the SIPp UAS on `uas_port`.
struct Relay {
    streams: Vec<TcpStream>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read the REGISTER response");
        assert!(
            n == 1,
            "connection closed while reading the REGISTER response"
        );
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let msg = Msg::parse(&head, s.peer_addr().unwrap(), true).expect("a SIP response");
    let len: usize = msg
        .header("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    s.set_read_timeout(None).unwrap();
    text
}

impl Relay {
    fn start(proxy: SocketAddr, uas_port: u16, user: &str) -> Relay {
        let mut up = TcpStream::connect_timeout(&proxy, WAIT).expect("connect to sipwake");
        up.set_nodelay(true).ok();
        let local = up.local_addr().unwrap();
        let reg = build_register(
            "TCP",
            &local.to_string(),
            user,
            "127.0.0.1",
            Some(&format!("<sip:{user}@127.0.0.1:{uas_port};transport=tcp>")),
            Some(3600),
            &call_id(),
            1,
            &branch(),
            &tag(),
        );
        up.write_all(reg.as_bytes()).unwrap();
        let resp = read_response(&mut up);
        assert!(
            resp.starts_with("SIP/2.0 200"),
            "REGISTER of the TCP UAS refused: {resp}"
        );
        let down = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], uas_port)), WAIT)
            .expect("connect to the SIPp UAS");
        down.set_nodelay(true).ok();
        let pipe = |mut from: TcpStream, mut to: TcpStream| {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Write);
            })
        };
        let threads = vec![
            pipe(up.try_clone().unwrap(), down.try_clone().unwrap()),
            pipe(down.try_clone().unwrap(), up.try_clone().unwrap()),
        ];
        Relay {
            streams: vec![up, down],
            threads,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for s in &self.streams {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn sipp_calls_over_tcp() {
    require_sipp();
    let _serial = lock();
    let proxy = Proxy::start("sipp-tcp");
    let dir = temp_dir("sipp-tcp-run");
    let uas_port = free_port();
    let calls = CALLS.to_string();
    let uas = spawn(
        &dir,
        "uas",
        &base_args("uas.xml", uas_port, &["-t", "t1", "-m", &calls]),
    );
    wait_listening(uas_port, true);
    let relay = Relay::start(proxy.addr(), uas_port, "uastcp");

    let started = Instant::now();
    let uac = spawn(
        &dir,
        "uac",
        &[
            base_args(
                "uac.xml",
                free_port(),
                &[
                    "-t", "t1", "-s", "uastcp", "-m", &calls, "-r", "250", "-l", "300",
                ],
            ),
            vec![proxy.hostport()],
        ]
        .concat(),
    );
    uac.expect_success(Duration::from_secs(90));
    eprintln!("{CALLS} SIPp calls over TCP in {:?}", started.elapsed());
    uas.expect_success(Duration::from_secs(30));
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sipp_cancel_before_answer() {
    require_sipp();
    let _serial = lock();
    let proxy = Proxy::start("sipp-cancel");
    let dir = temp_dir("sipp-cancel-run");

    // UDP: the UAS registers from its own port first.
    let uas_port = free_port();
    spawn(
        &dir,
        "register_uas",
        &[
            base_args(
                "register_uas.xml",
                uas_port,
                &["-s", "uascancel", "-m", "1"],
            ),
            vec![proxy.hostport()],
        ]
        .concat(),
    )
    .expect_success(Duration::from_secs(30));
    let uas = spawn(
        &dir,
        "uas_cancel_udp",
        &base_args("uas_cancel.xml", uas_port, &["-m", "20"]),
    );
    wait_listening(uas_port, false);
    let uac = spawn(
        &dir,
        "uac_cancel_udp",
        &[
            base_args(
                "uac_cancel.xml",
                free_port(),
                &["-s", "uascancel", "-m", "20", "-r", "20"],
            ),
            vec![proxy.hostport()],
        ]
        .concat(),
    );
    uac.expect_success(Duration::from_secs(60));
    uas.expect_success(Duration::from_secs(30));

    // TCP: through the relay, as for the TCP calls.
    let uas_port = free_port();
    let uas = spawn(
        &dir,
        "uas_cancel_tcp",
        &base_args("uas_cancel.xml", uas_port, &["-t", "t1", "-m", "10"]),
    );
    wait_listening(uas_port, true);
    let relay = Relay::start(proxy.addr(), uas_port, "uascanceltcp");
    let uac = spawn(
        &dir,
        "uac_cancel_tcp",
        &[
            base_args(
                "uac_cancel.xml",
                free_port(),
                &["-t", "t1", "-s", "uascanceltcp", "-m", "10", "-r", "20"],
            ),
            vec![proxy.hostport()],
        ]
        .concat(),
    );
    uac.expect_success(Duration::from_secs(60));
    uas.expect_success(Duration::from_secs(30));
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (bounded) until `user@127.0.0.1` has a binding on 127.0.0.1:`port`.
fn wait_registered(proxy: &Proxy, user: &str, port: u16) {
    let want = format!("sip:{user}@127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut q = Ua::udp("query", proxy);
        q.user = user.to_owned();
        q.domain = "127.0.0.1".into();
        let r = q.register_with(None, None);
        if r.contacts().iter().any(|c| uri_of(c).starts_with(&want)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{user} never registered from port {port}");
}

#[test]
fn sipp_sleeping_phone_woken_by_push_gets_the_invite_with_x_pushhint() {
    require_sipp();
    let _serial = lock();
    // The push goes to a webhook receiver that answers 200.
    let hook = crate::common::mock_http::MockHttp::start();
    hook.route("/push", 200, "{}");
    let proxy = ProxyBuilder::new("sipp-push")
        .env("PUSH__WEBHOOK__URL", &format!("{}/push", hook.base_url()))
        .env("PUSH__DEFAULT_PROVIDER", "webhook")
        .env("PUSH__FLOW_TIMEOUT_SECS", "1")
        .start();
    let dir = temp_dir("sipp-push-run");
    // SIPp maps the INVITE to the phone's call by Call-ID: both use this one.
    let cid = format!("{}-%u@sipwake.test", unique("wake"));
    let phone_port = free_port();
    let phone = spawn(
        &dir,
        "sleeping_phone",
        &[
            base_args(
                "sleeping_phone.xml",
                phone_port,
                &["-s", "sleepy", "-m", "1", "-cid_str", &cid, "-trace_logs"],
            ),
            vec![proxy.hostport()],
        ]
        .concat(),
    );
    wait_registered(&proxy, "sleepy", phone_port);
    // asleep once its REGISTER is older than the flow timeout; it re-registers 3 s
    // after its first 200
    std::thread::sleep(Duration::from_millis(1200));
    let uac = spawn(
        &dir,
        "uac_push",
        &[
            base_args(
                "uac.xml",
                free_port(),
                &["-s", "sleepy", "-m", "1", "-cid_str", &cid],
            ),
            vec![proxy.hostport()],
        ]
        .concat(),
    );
    uac.expect_success(Duration::from_secs(20));
    phone.expect_success(Duration::from_secs(20));

    // The push was a call document for the phone's token, and its hint is the one
    // the phone found in X-PushHint.
    let (push, _) = hook.next_at("/push", WAIT);
    let push = push.expect("a webhook push for the call").json();
    assert_eq!(push["event"], "call", "{push:#}");
    assert_eq!(push["token"], "sipp-token-sleepy", "{push:#}");
    let logged: String = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_logs.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let hint = logged
        .lines()
        .find_map(|l| l.trim().strip_prefix("pushhint="))
        .unwrap_or_else(|| panic!("the phone logged no X-PushHint: {logged:?}"));
    assert_eq!(push["pushHint"], hint, "{push:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sipp_registrations_and_calls_spread_over_two_nodes() {
    // two nodes on one Redis: REGISTERs to both, the UAS registered on A, every call
    // entering through B and reaching the UAS through A
    require_sipp();
    let _serial = lock();
    let redis = crate::common::redis_server::RedisServer::start(temp_dir("sipp-cluster-redis"));
    let node = |name: &str| {
        ProxyBuilder::new(name)
            .env("STORE__BACKEND", "redis")
            .env("STORE__REDIS__URL", &redis.url())
            .start()
    };
    let a = node("sipp-cluster-a");
    let b = node("sipp-cluster-b");
    let dir = temp_dir("sipp-cluster-run");

    for (proxy, name) in [(&a, "register_a"), (&b, "register_b")] {
        spawn(
            &dir,
            name,
            &[
                base_args(
                    "register.xml",
                    free_port(),
                    &["-s", "sippuser", "-m", "500", "-r", "250", "-l", "100"],
                ),
                vec![proxy.hostport()],
            ]
            .concat(),
        )
        .expect_success(Duration::from_secs(90));
    }

    let uas_port = free_port();
    spawn(
        &dir,
        "register_uas",
        &[
            base_args(
                "register_uas.xml",
                uas_port,
                &["-s", "uascluster", "-m", "1"],
            ),
            vec![a.hostport()],
        ]
        .concat(),
    )
    .expect_success(Duration::from_secs(30));
    let calls = CALLS.to_string();
    let uas = spawn(
        &dir,
        "uas",
        &base_args("uas.xml", uas_port, &["-m", &calls]),
    );
    wait_listening(uas_port, false);
    let uac = spawn(
        &dir,
        "uac",
        &[
            base_args(
                "uac.xml",
                free_port(),
                // 150/s, not the 250/s of the one-node runs: two debug-built nodes
                // and Redis share the cores with the rest of the suite
                &["-s", "uascluster", "-m", &calls, "-r", "150", "-l", "300"],
            ),
            vec![b.hostport()],
        ]
        .concat(),
    );
    uac.expect_success(Duration::from_secs(90));
    uas.expect_success(Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}
