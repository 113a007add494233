//! What the operator sees of authentication: security log lines that fail2ban matches
//! for failed credentials and 555 refusals, and a bad users file that stops sipwake
//! naming the file and the line.

use super::*;

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
