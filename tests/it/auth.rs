//! Digest authentication through the real binary over UDP: challenges for REGISTER
//! (401) and for calls (407), MD5 and SHA-256 answers, refusals (wrong password,
//! another user's address of record, unknown user, replayed nonce-count), stale
//! nonces, and the requests that are never challenged (CANCEL, in-dialog, trusted
//! sources).
//!
//! The phones sit on 127.0.0.1, which these tests do not trust; the "PBX" sits on
//! 127.0.0.3, the only trusted address. The digest client below is the test's own
//! (it shares only the hash crates with sipwake).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use md5::Md5;
use sha2::{Digest, Sha256};

const REALM: &str = "example.com";
const TRUSTED: &str = "127.0.0.3";
const ATTACKER: &str = "127.0.0.2";

/// `H(s)` for a digest algorithm name.
fn h(alg: &str, s: &str) -> String {
    match alg {
        "MD5" => hex::encode(Md5::digest(s.as_bytes())),
        "SHA-256" => hex::encode(Sha256::digest(s.as_bytes())),
        other => panic!("unexpected algorithm {other}"),
    }
}

/// A users file: alice and bob with both hashes, carol with MD5 only.
fn users_file() -> PathBuf {
    let dir = temp_dir("auth-users");
    let line = |u: &str, p: &str, algs: &[&str]| {
        let hashes: Vec<String> = algs
            .iter()
            .map(|a| h(a, &format!("{u}:{REALM}:{p}")))
            .collect();
        format!("{u}:{REALM}:{}\n", hashes.join(":"))
    };
    let text = format!(
        "# test users\n{}{}\n{}",
        line("alice", "alice-pw", &["MD5", "SHA-256"]),
        line("bob", "bob-pw", &["SHA-256", "MD5"]),
        line("carol", "carol-pw", &["MD5"]),
    );
    let path = dir.join("users");
    fs::write(&path, text).expect("write the users file");
    path
}

/// sipwake with authentication on, trusting only 127.0.0.3, offering SHA-256 then MD5
/// (not the default, which [`the_default_offers_md5_alone`] covers).
fn start(name: &str, extra: &[(&str, &str)]) -> Proxy {
    start_with(name, &[("AUTH__ALGORITHMS", "SHA-256,MD5")], extra)
}

fn start_with(name: &str, base: &[(&str, &str)], extra: &[(&str, &str)]) -> Proxy {
    let users = users_file();
    let mut b = ProxyBuilder::new(name)
        .env("AUTH__ENABLED", "true")
        .env("AUTH__USERS_FILE", users.to_str().unwrap())
        .env("AUTH__REALM", REALM)
        .env("PROXY__TRUSTED_NETWORKS", &format!("{TRUSTED}/32"));
    for (k, v) in base.iter().chain(extra) {
        b = b.env(k, v);
    }
    b.start()
}

/// One challenge header, read by the test's own parser.
#[derive(Debug, Clone)]
struct Challenge {
    realm: String,
    nonce: String,
    algorithm: String,
    qop: String,
    stale: bool,
}

/// The challenges in `header` lines of `resp`, in order.
fn challenges(resp: &Msg, header: &str) -> Vec<Challenge> {
    resp.header_lines(header)
        .into_iter()
        .map(|line| {
            let rest = line
                .strip_prefix("Digest ")
                .unwrap_or_else(|| panic!("not a Digest challenge: {line}"));
            let mut c = Challenge {
                realm: String::new(),
                nonce: String::new(),
                algorithm: "MD5".into(),
                qop: String::new(),
                stale: false,
            };
            for p in rest.split(',') {
                let (k, v) = p.trim().split_once('=').expect("name=value");
                let v = v.trim_matches('"').to_owned();
                match k {
                    "realm" => c.realm = v,
                    "nonce" => c.nonce = v,
                    "algorithm" => c.algorithm = v,
                    "qop" => c.qop = v,
                    "stale" => c.stale = v.eq_ignore_ascii_case("true"),
                    _ => {}
                }
            }
            c
        })
        .collect()
}

/// The credentials header line answering `ch` (qop=auth).
fn credentials(
    header: &str,
    ch: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    let alg = ch.algorithm.as_str();
    let cnonce = "0a4f113b";
    let ha1 = h(alg, &format!("{user}:{}:{password}", ch.realm));
    let ha2 = h(alg, &format!("{method}:{uri}"));
    let response = h(
        alg,
        &format!("{ha1}:{}:{nc:08x}:{cnonce}:auth:{ha2}", ch.nonce),
    );
    format!(
        "{header}: Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm={alg}, cnonce=\"{cnonce}\", qop=auth, nc={nc:08x}",
        ch.realm, ch.nonce
    )
}

/// A phone's registration dialog: its Call-ID and CSeq.
struct Reg {
    call_id: String,
    cseq: u32,
}

impl Reg {
    fn new() -> Reg {
        Reg {
            call_id: call_id(),
            cseq: 0,
        }
    }
}

/// REGISTER text from `ua` for `to_user`'s address of record, with an optional
/// credentials line. The CSeq is the next one of `reg`.
fn register_text(ua: &Ua, reg: &mut Reg, to_user: &str, auth: Option<&str>) -> String {
    reg.cseq += 1;
    let mut s = format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from}@{DOMAIN}>;tag={tag}\r\n\
         To: <sip:{to_user}@{DOMAIN}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <{contact}>\r\n\
         Expires: 300\r\n",
        via = ua.via(&branch()),
        from = ua.user,
        tag = tag(),
        cid = reg.call_id,
        cseq = reg.cseq,
        contact = ua.contact_uri(),
    );
    if let Some(a) = auth {
        s.push_str(a);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s
}

/// Sends a REGISTER and returns its final response.
fn register(ua: &mut Ua, reg: &mut Reg, to_user: &str, auth: Option<&str>) -> Msg {
    let text = register_text(ua, reg, to_user, auth);
    ua.send(&text);
    let cid = reg.call_id.clone();
    ua.expect_final(&cid, "REGISTER")
}

/// The challenge for `alg` in a 401.
fn pick(resp: &Msg, alg: &str) -> Challenge {
    assert_eq!(resp.status(), Some(401), "a challenge expected: {resp:?}");
    challenges(resp, "www-authenticate")
        .into_iter()
        .find(|c| c.algorithm == alg)
        .unwrap_or_else(|| panic!("no {alg} challenge: {resp:?}"))
}

/// Registers `ua` (its own AOR) through a challenge with `alg`; asserts 200.
fn register_with_auth(ua: &mut Ua, password: &str, alg: &str) -> Msg {
    let mut reg = Reg::new();
    let user = ua.user.clone();
    let ch = pick(&register(ua, &mut reg, &user, None), alg);
    let creds = credentials(
        "Authorization",
        &ch,
        &user,
        password,
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        1,
    );
    let ok = register(ua, &mut reg, &user, Some(&creds));
    assert_eq!(ok.status(), Some(200), "{user} with {alg}: {ok:?}");
    ok
}

/// Sends an INVITE from `caller` to `to_user`, gets the 407 (and ACKs it), then sends
/// it again with credentials for `user`/`password`; returns the authenticated INVITE.
fn invite_with_auth(caller: &mut Ua, to_user: &str, user: &str, password: &str) -> Invite {
    let first = caller.invite(to_user, "");
    let resp = caller.expect_final(&first.call_id, "INVITE");
    assert_eq!(resp.status(), Some(407), "INVITE challenged: {resp:?}");
    caller.ack_non2xx(&first, &resp);
    let chs = challenges(&resp, "proxy-authenticate");
    assert_eq!(
        chs.iter().map(|c| c.algorithm.as_str()).collect::<Vec<_>>(),
        ["SHA-256", "MD5"],
        "SHA-256 offered first, then MD5: {resp:?}"
    );
    assert!(resp.header("www-authenticate").is_none(), "{resp:?}");
    let ruri = format!("sip:{to_user}@{DOMAIN}");
    let creds = credentials(
        "Proxy-Authorization",
        &chs[0],
        user,
        password,
        "INVITE",
        &ruri,
        1,
    );
    caller.invite_uri(&ruri, &format!("{creds}\r\n"))
}

#[test]
fn register_is_challenged_and_accepts_sha256_and_md5() {
    let proxy = start("auth-register", &[]);
    let mut alice = Ua::udp("alice", &proxy);
    let mut reg = Reg::new();
    let resp = register(&mut alice, &mut reg, "alice", None);
    assert_eq!(resp.status(), Some(401), "{resp:?}");
    let chs = challenges(&resp, "www-authenticate");
    assert_eq!(chs.len(), 2, "two challenges (RFC 8760): {resp:?}");
    assert_eq!(chs[0].algorithm, "SHA-256", "SHA-256 first: {resp:?}");
    assert_eq!(chs[1].algorithm, "MD5", "MD5 second: {resp:?}");
    for c in &chs {
        assert_eq!(c.realm, REALM);
        assert_eq!(c.qop, "auth");
        assert!(!c.stale);
        assert!(!c.nonce.is_empty());
    }
    assert!(resp.header("proxy-authenticate").is_none(), "{resp:?}");

    // SHA-256 answer on this challenge
    let creds = credentials(
        "Authorization",
        &chs[0],
        "alice",
        "alice-pw",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        1,
    );
    let ok = register(&mut alice, &mut reg, "alice", Some(&creds));
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    assert!(
        ok.contacts()
            .iter()
            .any(|c| uri_of(c) == alice.contact_uri()),
        "{ok:?}"
    );

    // MD5, from another phone of another user
    let mut bob = Ua::udp("bob", &proxy);
    register_with_auth(&mut bob, "bob-pw", "MD5");

    // a user with only an MD5 hash is offered only MD5
    let mut carol = Ua::udp("carol", &proxy);
    let resp = register(&mut carol, &mut Reg::new(), "carol", None);
    let algs: Vec<String> = challenges(&resp, "www-authenticate")
        .into_iter()
        .map(|c| c.algorithm)
        .collect();
    assert_eq!(algs, ["MD5"], "{resp:?}");
    register_with_auth(&mut carol, "carol-pw", "MD5");
}

/// baresip 1.0 (and many older phones) answer only the first challenge and give up
/// when it is not MD5. With the default `auth.algorithms` such a phone registers and
/// calls: one MD5 challenge, nothing before it.
#[test]
fn the_default_offers_md5_alone() {
    let proxy = start_with("auth-default-algs", &[], &[]);
    let mut carol = Ua::udp("carol", &proxy);
    let mut reg = Reg::new();
    let resp = register(&mut carol, &mut reg, "carol", None);
    assert_eq!(resp.status(), Some(401), "{resp:?}");
    // a user with both hashes gets the same single challenge
    let mut alice = Ua::udp("alice", &proxy);
    let mut areg = Reg::new();
    let first_only = |resp: &Msg| {
        let chs = challenges(resp, "www-authenticate");
        assert_eq!(chs.len(), 1, "one challenge by default: {resp:?}");
        let first = chs.into_iter().next().expect("a challenge");
        assert_eq!(
            first.algorithm, "MD5",
            "the first challenge is MD5: {resp:?}"
        );
        first
    };
    first_only(&resp);
    let ch = first_only(&register(&mut alice, &mut areg, "alice", None));
    let uri = format!("sip:{DOMAIN}");
    let creds = credentials(
        "Authorization",
        &ch,
        "alice",
        "alice-pw",
        "REGISTER",
        &uri,
        1,
    );
    let ok = register(&mut alice, &mut areg, "alice", Some(&creds));
    assert_eq!(
        ok.status(),
        Some(200),
        "a first-challenge-only phone registers: {ok:?}"
    );
    // and its call is challenged the same way
    let inv = alice.invite("carol", "");
    let resp = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(resp.status(), Some(407), "{resp:?}");
    alice.ack_non2xx(&inv, &resp);
    let chs = challenges(&resp, "proxy-authenticate");
    assert_eq!(
        chs.iter().map(|c| c.algorithm.as_str()).collect::<Vec<_>>(),
        ["MD5"],
        "{resp:?}"
    );
}

/// One line of `/metrics` from the admin API at `admin`.
fn metric(admin: SocketAddr, series: &str) -> f64 {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5)).expect("admin API");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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

/// An attacker on another address floods REGISTERs for alice's AOR without the
/// password (challenged, or refused for a wrong one): that must not spend alice's
/// per-AOR budget. Alice, on 127.0.0.1 with the right password, still registers; the
/// limit counts only her authenticated REGISTERs, and still holds for those.
#[test]
fn unauthenticated_registers_do_not_spend_the_aor_limit() {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = start(
        "auth-aor-limit",
        &[
            ("ADMIN__LISTEN", &admin.to_string()),
            ("LIMITS__REGISTER_PER_AOR_RATE", "1"),
            ("LIMITS__REGISTER_PER_AOR_BURST", "3"),
        ],
    );
    let uri = format!("sip:{DOMAIN}");
    let mut evil = Ua::udp_at("mallory", proxy.addr(), &format!("{ATTACKER}:0"));
    let mut ereg = Reg::new();
    for i in 0..20 {
        let resp = register(&mut evil, &mut ereg, "alice", None);
        assert_eq!(resp.status(), Some(401), "attack {i}: {resp:?}");
        if i % 4 == 0 {
            // a guess at the password: refused, and not counted either
            let ch = pick(&resp, "MD5");
            let creds = credentials("Authorization", &ch, "alice", "guess", "REGISTER", &uri, 1);
            let resp = register(&mut evil, &mut ereg, "alice", Some(&creds));
            assert_eq!(resp.status(), Some(403), "{resp:?}");
        }
    }
    let aor_limited = || {
        metric(
            admin,
            "sipwake_rate_limited_total{limit=\"register_per_aor\"}",
        )
    };
    assert_eq!(
        aor_limited(),
        0.0,
        "the attacker's requests are not counted per AOR"
    );

    let mut alice = Ua::udp_at("alice", proxy.addr(), "127.0.0.1:0");
    let mut reg = Reg::new();
    let ch = pick(&register(&mut alice, &mut reg, "alice", None), "MD5");
    let mut codes = Vec::new();
    for nc in 1..=6 {
        let creds = credentials(
            "Authorization",
            &ch,
            "alice",
            "alice-pw",
            "REGISTER",
            &uri,
            nc,
        );
        codes.push(register(&mut alice, &mut reg, "alice", Some(&creds)).status());
    }
    assert_eq!(
        &codes[..3],
        &[Some(200); 3],
        "the victim registers despite the attack: {codes:?}"
    );
    assert!(
        codes[3..].contains(&Some(503)),
        "her own authenticated REGISTERs are still limited: {codes:?}"
    );
    assert!(aor_limited() >= 1.0);
}

/// The fail2ban filter of the README, as fail2ban applies it: the timestamp matched
/// by `datepattern` is cut from the line, then `failregex` (with fail2ban's `<HOST>`)
/// is searched in the rest. Python's `re`, which fail2ban itself uses. Returns the
/// hosts found, in order.
fn fail2ban_hosts(log: &str) -> Vec<String> {
    use std::process::{Command, Stdio};
    const FAILREGEX: &str = r"^\s*WARN sipwake::security: auth failed src=<HOST> port=\d+ ";
    const DATEPATTERN: &str = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d+Z";
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&format!("failregex = {FAILREGEX}")),
        "the README shows this failregex"
    );
    let script = format!(
        r#"
import re, sys
host = r"(?:::f{{4,6}}:)?(?P<host>[\w\-.^_:]*\w)"
fail = re.compile(r"{FAILREGEX}".replace("<HOST>", host))
date = re.compile(r"{DATEPATTERN}")
for line in sys.stdin.read().splitlines():
    m = date.match(line)
    if not m:
        continue
    f = fail.search(line[m.end():])
    if f:
        print(f.group("host"))
"#
    );
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (fail2ban's regex engine) is needed for this test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(log.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Failed authentications (wrong password, unknown user, a call with someone else's
/// From) each write one `warn` line naming the source, the AOR and the reason, which
/// the README's fail2ban filter matches; a `555` writes an `info` line in the same
/// format, which the filter leaves alone; a challenge writes nothing.
#[test]
fn failed_auth_and_555_write_security_lines_fail2ban_matches() {
    // debug: the requests' spans are on, and must not show in these lines
    let proxy = start("auth-security-log", &[("LOG__LEVEL", "debug")]);
    let uri = format!("sip:{DOMAIN}");
    let mut evil = Ua::udp_at("mallory", proxy.addr(), &format!("{ATTACKER}:0"));
    let mut ereg = Reg::new();
    for _ in 0..3 {
        let ch = pick(&register(&mut evil, &mut ereg, "alice", None), "MD5");
        let creds = credentials("Authorization", &ch, "alice", "guess", "REGISTER", &uri, 1);
        let resp = register(&mut evil, &mut ereg, "alice", Some(&creds));
        assert_eq!(resp.status(), Some(403), "{resp:?}");
    }
    let resp = register(&mut evil, &mut Reg::new(), "mallory", None);
    assert_eq!(resp.status(), Some(404), "{resp:?}");
    let first = evil.invite_uri(&format!("sip:bob@{DOMAIN}"), "");
    let resp = evil.expect_final(&first.call_id, "INVITE");
    evil.ack_non2xx(&first, &resp);
    let ch = challenges(&resp, "proxy-authenticate").remove(0);
    let creds = credentials(
        "Proxy-Authorization",
        &ch,
        "mallory",
        "guess",
        "INVITE",
        &first.ruri,
        1,
    );
    let inv = evil.invite_uri(&first.ruri, &format!("{creds}\r\n"));
    let resp = evil.expect_final(&inv.call_id, "INVITE");
    assert_eq!(resp.status(), Some(403), "{resp:?}");
    evil.ack_non2xx(&inv, &resp);

    // alice, authenticated, asks for a push service that is not configured
    let mut alice = Ua::udp("alice", &proxy);
    let mut reg = Reg::new();
    let ch = pick(&register(&mut alice, &mut reg, "alice", None), "MD5");
    let creds = credentials(
        "Authorization",
        &ch,
        "alice",
        "alice-pw",
        "REGISTER",
        &uri,
        1,
    );
    let contact = alice.contact_uri();
    let apns = "0123456789abcdef".repeat(4);
    let text = register_text(&alice, &mut reg, "alice", Some(&creds)).replace(
        &format!("<{contact}>"),
        &format!("<{contact};pn-provider=apns;pn-prid={apns};pn-param=ABCDE12345.com.example.phone.voip>"),
    );
    alice.send(&text);
    let resp = alice.expect_final(&reg.call_id, "REGISTER");
    assert_eq!(resp.status(), Some(555), "{resp:?}");

    assert!(
        proxy.wait_log("register refused", Duration::from_secs(5)),
        "{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    let security: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sipwake::security"))
        .collect();
    assert_eq!(
        security.len(),
        6,
        "one line per failure and one for the 555: {log}"
    );
    let wrong = security
        .iter()
        .filter(|l| {
            l.contains(" WARN sipwake::security: auth failed src=127.0.0.2 port=")
                && l.contains(
                    " aor=\"alice@example.com\" code=403 reason=\"Forbidden (wrong credentials)\"",
                )
        })
        .count();
    assert_eq!(wrong, 3, "{security:#?}");
    assert!(
        security
            .iter()
            .any(|l| l.contains("src=127.0.0.2")
                && l.contains("aor=\"mallory@example.com\" code=404")),
        "the unknown user: {security:#?}"
    );
    assert!(
        security.iter().any(|l| l.contains(" INFO sipwake::security: register refused src=127.0.0.1 port=")
            && l.contains("aor=\"alice@example.com\" code=555 reason=\"Push Notification Service Not Supported\"")),
        "the 555: {security:#?}"
    );
    assert_eq!(
        fail2ban_hosts(&log),
        vec!["127.0.0.2"; 5],
        "fail2ban sees the attacker's five failures and nothing else: {security:#?}"
    );
}

#[test]
fn wrong_password_other_aor_and_unknown_user_are_refused() {
    let proxy = start("auth-refusals", &[]);
    let mut alice = Ua::udp("alice", &proxy);
    let uri = format!("sip:{DOMAIN}");

    // wrong password: 403, not another challenge
    let mut reg = Reg::new();
    let ch = pick(&register(&mut alice, &mut reg, "alice", None), "SHA-256");
    let creds = credentials("Authorization", &ch, "alice", "guess", "REGISTER", &uri, 1);
    let resp = register(&mut alice, &mut reg, "alice", Some(&creds));
    assert_eq!(resp.status(), Some(403), "wrong password: {resp:?}");
    assert!(resp.header("www-authenticate").is_none(), "{resp:?}");

    // alice's own good credentials, for bob's AOR: 403
    let ch = pick(&register(&mut alice, &mut reg, "bob", None), "MD5");
    let creds = credentials(
        "Authorization",
        &ch,
        "alice",
        "alice-pw",
        "REGISTER",
        &uri,
        1,
    );
    let resp = register(&mut alice, &mut reg, "bob", Some(&creds));
    assert_eq!(resp.status(), Some(403), "alice registering bob: {resp:?}");

    // ... and bob has no binding: a call for him from the trusted PBX finds nobody
    let mut pbx = Ua::udp_at("pbx", proxy.addr(), &format!("{TRUSTED}:0"));
    let inv = pbx.invite("bob", "");
    let resp = pbx.expect_final(&inv.call_id, "INVITE");
    assert_eq!(
        resp.status(),
        Some(480),
        "bob must not be registered: {resp:?}"
    );
    pbx.ack_non2xx(&inv, &resp);

    // an unknown user: 404, without a challenge
    let mut mallory = Ua::udp("mallory", &proxy);
    let resp = register(&mut mallory, &mut Reg::new(), "mallory", None);
    assert_eq!(resp.status(), Some(404), "{resp:?}");

    // the refusals locked nothing: alice still registers
    register_with_auth(&mut alice, "alice-pw", "SHA-256");
}

#[test]
fn replayed_nonce_count_is_refused() {
    let proxy = start("auth-replay", &[]);
    let mut alice = Ua::udp("alice", &proxy);
    let uri = format!("sip:{DOMAIN}");
    let mut reg = Reg::new();
    let ch = pick(&register(&mut alice, &mut reg, "alice", None), "MD5");
    let creds1 = credentials(
        "Authorization",
        &ch,
        "alice",
        "alice-pw",
        "REGISTER",
        &uri,
        1,
    );
    let text = register_text(&alice, &mut reg, "alice", Some(&creds1));
    alice.send(&text);
    let ok = alice.expect_final(&reg.call_id, "REGISTER");
    assert_eq!(ok.status(), Some(200), "{ok:?}");

    // the same request again as a new transaction (an attacker's replay): refused
    let first_branch = text
        .lines()
        .find_map(|l| l.strip_prefix("Via: "))
        .and_then(|v| v.split("branch=").nth(1))
        .and_then(|b| b.split(';').next())
        .unwrap()
        .to_owned();
    let replay = text.replace(&first_branch, &branch());
    alice.send(&replay);
    let resp = alice.expect_response(&reg.call_id, "REGISTER", "a refusal", |c| c != 200);
    assert_eq!(resp.status(), Some(401), "replay refused: {resp:?}");
    assert!(
        challenges(&resp, "www-authenticate")
            .iter()
            .all(|c| c.stale),
        "stale=true on a fresh challenge: {resp:?}"
    );

    // the next count on the same nonce is fine; a lower one is not
    let creds3 = credentials(
        "Authorization",
        &ch,
        "alice",
        "alice-pw",
        "REGISTER",
        &uri,
        3,
    );
    let ok = register(&mut alice, &mut reg, "alice", Some(&creds3));
    assert_eq!(ok.status(), Some(200), "nc 3: {ok:?}");
    let creds2 = credentials(
        "Authorization",
        &ch,
        "alice",
        "alice-pw",
        "REGISTER",
        &uri,
        2,
    );
    let resp = register(&mut alice, &mut reg, "alice", Some(&creds2));
    assert_eq!(resp.status(), Some(401), "nc 2 after 3: {resp:?}");
}

#[test]
fn expired_nonce_gets_a_stale_challenge() {
    let proxy = start("auth-stale", &[("AUTH__NONCE_TTL_SECS", "1")]);
    let mut alice = Ua::udp("alice", &proxy);
    let uri = format!("sip:{DOMAIN}");
    let mut reg = Reg::new();
    let mut ch = pick(&register(&mut alice, &mut reg, "alice", None), "SHA-256");
    std::thread::sleep(Duration::from_millis(1600));
    let creds = credentials(
        "Authorization",
        &ch,
        "alice",
        "alice-pw",
        "REGISTER",
        &uri,
        1,
    );
    let resp = register(&mut alice, &mut reg, "alice", Some(&creds));
    let chs = challenges(&resp, "www-authenticate");
    assert_eq!(resp.status(), Some(401), "{resp:?}");
    assert_eq!(chs.len(), 2, "{resp:?}");
    assert!(chs.iter().all(|c| c.stale), "stale=true: {resp:?}");
    assert_ne!(chs[0].nonce, ch.nonce, "a fresh nonce");

    // the phone retries with the fresh nonce, without asking its user (a slow
    // machine may take longer than the 1 s lifetime: then it is stale again)
    ch = chs[0].clone();
    for _ in 0..3 {
        let creds = credentials(
            "Authorization",
            &ch,
            "alice",
            "alice-pw",
            "REGISTER",
            &uri,
            1,
        );
        let resp = register(&mut alice, &mut reg, "alice", Some(&creds));
        if resp.status() == Some(200) {
            return;
        }
        ch = pick(&resp, "SHA-256");
        assert!(
            ch.stale,
            "only staleness may refuse the right password: {resp:?}"
        );
    }
    panic!("never accepted after stale challenges");
}

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

#[test]
fn a_bad_users_file_stops_sipwake_naming_file_and_line() {
    let dir = temp_dir("auth-bad-users");
    let path = dir.join("users");
    fs::write(&path, "# users\nalice:example.com:nothex\n").unwrap();
    let log = dir.join("stderr");
    let mut child = std::process::Command::new(SIPWAKE)
        .current_dir(&dir)
        .env("SIPWAKE__AUTH__ENABLED", "true")
        .env("SIPWAKE__AUTH__USERS_FILE", &path)
        .env("SIPWAKE__AUTH__REALM", REALM)
        .env("SIPWAKE__STORE__BACKEND", "memory")
        .env("SIPWAKE__SIP__LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdin(std::process::Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("run sipwake");
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| !s.success()),
        "must not start: {status:?}"
    );
    let err = fs::read_to_string(&log).unwrap();
    assert!(
        err.contains(&format!("{}:2:", path.display())),
        "names file and line: {err}"
    );
    assert!(!err.contains("nothex"), "no hash material in errors: {err}");

    // --check-config checks the users file too
    let conf = dir.join("sipwake.toml");
    fs::write(
        &conf,
        format!(
            "[auth]\nenabled = true\nusers_file = {:?}\nrealm = \"{REALM}\"\n",
            path.display().to_string()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(SIPWAKE)
        .arg("--check-config")
        .arg(&conf)
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("run sipwake --check-config");
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{status:?}");
    let err = fs::read_to_string(&log).unwrap();
    assert!(err.contains(&format!("{}:2:", path.display())), "{err}");

    // the operator helper makes a valid line from a password on stdin
    let mut child = std::process::Command::new(SIPWAKE)
        .args(["--hash-user", "dave"])
        .env("SIPWAKE__AUTH__REALM", REALM)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run sipwake --hash-user");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"dave-pw\n").unwrap();
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let mut line = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut line).unwrap();
    let line = line.trim().to_owned();
    assert_eq!(
        line,
        format!(
            "dave:{REALM}:{}:{}",
            h("MD5", &format!("dave:{REALM}:dave-pw")),
            h("SHA-256", &format!("dave:{REALM}:dave-pw"))
        )
    );
}

#[test]
fn a_to_tag_alone_does_not_make_a_dialog() {
    let proxy = start("auth-fake-dialog", &[]);
    let mut alice = Ua::udp("alice", &proxy);
    // a MESSAGE dressed as in-dialog, routed through sipwake to elsewhere, without
    // sipwake's Record-Route token: challenged like any out-of-dialog request
    let cid = call_id();
    alice.send(&format!(
        "MESSAGE sip:bob@127.0.0.9:5999 SIP/2.0\r\n\
         Via: {}\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:{};lr>, <sip:127.0.0.9:5999;lr>\r\n\
         From: <sip:alice@{DOMAIN}>;tag={}\r\n\
         To: <sip:bob@{DOMAIN}>;tag=made-up\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 5 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 2\r\n\r\nhi",
        alice.via(&branch()),
        proxy.hostport(),
        tag()
    ));
    let resp = alice.expect_final(&cid, "MESSAGE");
    assert_eq!(resp.status(), Some(407), "{resp:?}");
}
