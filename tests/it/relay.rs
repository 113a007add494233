//! Relay mode (`registrar.mode = "relay"`) against a real upstream registrar: Kamailio,
//! started by the test with `tests/kamailio/registrar.cfg` on a free loopback port,
//! with digest authentication and a registrar that keeps Path (RFC 3327) and needs
//! `Supported: path`. Fails when `kamailio` is not installed (CI installs it).
//!
//! One more test uses a scripted stand-in upstream (a plain UDP socket) to look at
//! exactly what sipwake sends upstream and to stop answering at will.

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::mock_http::MockHttp;
use crate::common::*;

/// Lower-case hex MD5 of `s`, for the digest responses Kamailio checks.
fn md5_hex(s: &str) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

/// A parameter of a digest challenge (quoted or not).
fn challenge_param(ch: &str, name: &str) -> Option<String> {
    let lower = ch.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(&format!("{name}=")) {
        let at = from + i;
        let ok = at == 0 || matches!(lower.as_bytes()[at - 1], b' ' | b',' | b'\t');
        let rest = &ch[at + name.len() + 1..];
        if ok {
            return Some(if let Some(q) = rest.strip_prefix('"') {
                q[..q.find('"')?].to_owned()
            } else {
                rest.split([',', ' ']).next()?.to_owned()
            });
        }
        from = at + 1;
    }
    None
}

/// The Authorization/Proxy-Authorization header line answering a 401/407.
fn digest_line(resp: &Msg, user: &str, pass: &str, method: &str, uri: &str) -> String {
    let (hdr, out) = if resp.status() == Some(407) {
        ("proxy-authenticate", "Proxy-Authorization")
    } else {
        ("www-authenticate", "Authorization")
    };
    let ch = resp
        .header(hdr)
        .unwrap_or_else(|| panic!("challenge without {hdr}: {resp:?}"));
    let realm = challenge_param(ch, "realm").expect("realm");
    let nonce = challenge_param(ch, "nonce").expect("nonce");
    let ha1 = md5_hex(&format!("{user}:{realm}:{pass}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let mut line = format!(
        "{out}: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=MD5"
    );
    match challenge_param(ch, "qop") {
        Some(q) if q.split(',').any(|x| x.trim() == "auth") => {
            let cnonce = unique("cn");
            let nc = "00000001";
            let r = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
            let _ = write!(
                line,
                ", response=\"{r}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\""
            );
        }
        _ => {
            let r = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
            let _ = write!(line, ", response=\"{r}\"");
        }
    }
    if let Some(o) = challenge_param(ch, "opaque") {
        let _ = write!(line, ", opaque=\"{o}\"");
    }
    line + "\r\n"
}

// ---------------------------------------------------------------------------------
// Kamailio
// ---------------------------------------------------------------------------------

const USERS: [(&str, &str); 3] = [
    ("alice", "alice-pw"),
    ("carol", "carol-pw"),
    ("dave", "dave-pw"),
];

fn password(user: &str) -> &'static str {
    USERS
        .iter()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .expect("a known user")
}

fn kamailio_bin() -> Option<PathBuf> {
    [
        "/usr/sbin/kamailio",
        "/usr/local/sbin/kamailio",
        "/usr/bin/kamailio",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .or_else(|| {
        let out = Command::new("sh")
            .args(["-c", "command -v kamailio"])
            .output()
            .ok()?;
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!p.is_empty()).then(|| PathBuf::from(p))
    })
}

fn modules_dir() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib64/kamailio/modules",
        "/usr/lib/kamailio/modules",
        "/usr/local/lib64/kamailio/modules",
        "/usr/local/lib/kamailio/modules",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.join("registrar.so").exists())
}

/// A Kamailio registrar run by the test; stopped (SIGTERM, then SIGKILL) when dropped.
struct Kamailio {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    modules: PathBuf,
    /// Preprocessor defines (`-A`), e.g. `NO_PATH`.
    defines: Vec<String>,
}

impl Kamailio {
    /// Starts Kamailio; fails the test when it is not installed (CI installs it).
    fn start(name: &str) -> Kamailio {
        Kamailio::start_with(name, &[])
    }

    /// Starts Kamailio with these preprocessor defines (`NO_PATH`: a registrar
    /// without Path support).
    fn start_with(name: &str, defines: &[&str]) -> Kamailio {
        let (Some(bin), Some(modules)) = (kamailio_bin(), modules_dir()) else {
            panic!(
                "relay test {name} needs kamailio and its modules: install the Debian \
                 package kamailio (.ci/run does)"
            );
        };
        let dir = temp_dir(&format!("kamailio-{name}"));
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kamailio/registrar.cfg");
        std::fs::copy(&cfg, dir.join("registrar.cfg")).expect("copy the Kamailio config");
        let mut users = String::new();
        for (u, p) in USERS {
            let _ = writeln!(users, "$sht(users=>{u}) = \"{p}\";");
        }
        std::fs::write(dir.join("users.cfg"), users).expect("write users.cfg");
        let mut k = Kamailio {
            child: None,
            port: 0,
            log: dir.join("kamailio.log"),
            dir,
            bin,
            modules,
            defines: defines.iter().map(|d| d.to_string()).collect(),
        };
        for _ in 0..5 {
            k.port = free_port();
            if k.spawn() {
                return k;
            }
        }
        panic!("kamailio did not start; log:\n{}", k.log_text());
    }

    fn spawn(&mut self) -> bool {
        std::fs::write(
            self.dir.join("listen.cfg"),
            format!("listen=udp:127.0.0.1:{}\n", self.port),
        )
        .expect("write listen.cfg");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the Kamailio log");
        // `timeout` bounds its life even if the test process dies
        let child = Command::new("timeout")
            .args(["-s", "TERM", "300"])
            .arg(&self.bin)
            .args([
                "-DD",
                "-E",
                "-f",
                "registrar.cfg",
                "-m",
                "64",
                "-M",
                "8",
                "-L",
            ])
            .arg(&self.modules)
            .arg("-Y")
            .arg(&self.dir)
            .args(self.defines.iter().flat_map(|d| ["-A", d.as_str()]))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("run kamailio");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            if self.ping() {
                return true;
            }
        }
        self.stop();
        false
    }

    /// Answers an OPTIONS (with anything) within 300 ms.
    fn ping(&self) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = sock.local_addr().unwrap();
        let cid = call_id();
        let req = format!(
            "OPTIONS sip:127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={b};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag={t}\r\nTo: <sip:127.0.0.1:{p}>\r\nCall-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            p = self.port,
            b = branch(),
            t = tag()
        );
        let _ = sock.send_to(req.as_bytes(), self.addr());
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 8192];
        matches!(sock.recv_from(&mut buf), Ok((n, _)) if n > 0)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn uri(&self) -> String {
        format!("sip:127.0.0.1:{}", self.port)
    }

    /// SIGTERM to `timeout`, which passes it on; SIGKILL if it lingers.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            if wait_with_timeout(&mut c, Duration::from_secs(5)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- kamailio on port {} (last {} lines) ---\n{}\n--- end ---",
                self.port,
                tail.len(),
                tail.join("\n")
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------
// SIP helpers
// ---------------------------------------------------------------------------------

static CSEQ: AtomicU32 = AtomicU32::new(1);

/// Sends one REGISTER from `ua` (to its proxy) with this Contact value, extra header
/// lines and Expires; returns the final response.
fn register_once(ua: &mut Ua, contact: Option<&str>, extra: &str, expires: Option<u32>) -> Msg {
    let text = build_register(
        ua.tp.via(),
        &ua.via_hostport.clone(),
        &ua.user.clone(),
        &ua.domain.clone(),
        contact,
        expires,
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

/// REGISTER, expect the 401, answer it; returns the final response to the retry.
fn register_auth(ua: &mut Ua, contact: Option<&str>, extra: &str, expires: Option<u32>) -> Msg {
    let first = register_once(ua, contact, extra, expires);
    assert_eq!(
        first.status(),
        Some(401),
        "{}: the upstream should challenge the REGISTER: {first:?}",
        ua.user
    );
    assert!(first.header("www-authenticate").is_some(), "{first:?}");
    let auth = digest_line(
        &first,
        &ua.user.clone(),
        password(&ua.user),
        "REGISTER",
        &format!("sip:{}", ua.domain),
    );
    register_once(ua, contact, &format!("{extra}{auth}"), expires)
}

/// The contacts Kamailio holds for `user` (an authenticated query REGISTER).
fn kamailio_contacts(k: &Kamailio, user: &str) -> Vec<String> {
    let mut q = Ua::udp_at(user, k.addr(), "127.0.0.1:0");
    let r = register_auth(&mut q, None, "", None);
    assert_eq!(r.status(), Some(200), "query refused: {r:?}");
    r.values("contact")
}

/// Sends an INVITE from `ua` for `to_user`, answers the 407 and retries; returns the
/// INVITE that was accepted for processing (its 100 Trying seen).
fn invite_auth(ua: &mut Ua, to_user: &str) -> Invite {
    let first = ua.invite(to_user, "");
    let resp = ua.expect_final(&first.call_id, "INVITE");
    assert_eq!(
        resp.status(),
        Some(407),
        "{}: the upstream should challenge the INVITE: {resp:?}",
        ua.user
    );
    ua.ack_non2xx(&first, &resp);
    let ruri = format!("sip:{to_user}@{DOMAIN}");
    let auth = digest_line(&resp, &ua.user.clone(), password(&ua.user), "INVITE", &ruri);
    let inv = ua.build_invite(&ruri, &auth);
    ua.send(&inv.text);
    ua.expect_response(&inv.call_id, "INVITE", "100 Trying", |c| c == 100);
    inv
}

fn relay_proxy(name: &str, upstream: &str, hook: Option<&MockHttp>) -> Proxy {
    relay_proxy_with(name, upstream, hook, &[])
}

fn relay_proxy_with(
    name: &str,
    upstream: &str,
    hook: Option<&MockHttp>,
    env: &[(&str, &str)],
) -> Proxy {
    let mut b = ProxyBuilder::new(name)
        .env("REGISTRAR__MODE", "relay")
        .env("UPSTREAM__URI", upstream)
        .env("SIP__T1_MS", "100")
        .env("PUSH__DEFAULT_PROVIDER", "webhook")
        .env("PUSH__FLOW_TIMEOUT_SECS", "1");
    if let Some(h) = hook {
        b = b.env("PUSH__WEBHOOK__URL", &format!("{}/push", h.base_url()));
    }
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.start()
}

fn contact_with_token(ua: &Ua, token: &str, instance: &str) -> String {
    format!(
        "<{};xToken={token}>;+sip.instance=\"<urn:uuid:{instance}>\"",
        ua.contact_uri()
    )
}

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

// ---------------------------------------------------------------------------------
// Asterisk's shapes: a stand-in PBX that builds its requests to a registered contact
// as chan_pjsip does (Request-URI = the contact, To = the contact, Route = the Path)
// ---------------------------------------------------------------------------------

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
    let port = free_port();
    let sw = ProxyBuilder::new("relay-wildcard")
        .port(port)
        .env("SIP__LISTEN", &format!("0.0.0.0:{port}"))
        .env("REGISTRAR__MODE", "relay")
        .env("UPSTREAM__URI", &pbx.uri())
        .env("SIP__T1_MS", "100")
        .start();
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
