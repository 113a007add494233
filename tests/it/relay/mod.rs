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

mod asterisk;
mod kamailio;
mod nodes;
mod through_kamailio;
mod upstream;

use kamailio::{kamailio_contacts, Kamailio};

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
    relay_builder(name, upstream, hook, env).start()
}

/// The settings of [`relay_proxy_with`], not started yet.
fn relay_builder(
    name: &str,
    upstream: &str,
    hook: Option<&MockHttp>,
    env: &[(&str, &str)],
) -> ProxyBuilder {
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
    b
}

fn contact_with_token(ua: &Ua, token: &str, instance: &str) -> String {
    format!(
        "<{};xToken={token}>;+sip.instance=\"<urn:uuid:{instance}>\"",
        ua.contact_uri()
    )
}
