//! Graceful stop, reload and logs, against the real binary on loopback: SIGTERM
//! drains the calls in progress (new calls get 503, REGISTER and BYE go on) and exits
//! 0; the SQLite store keeps every binding across that restart; SIGHUP applies a new
//! log filter and push endpoint without dropping a call, and survives a bad file; the
//! JSON log parses and carries one outcome line per call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::mock_http::MockHttp;
use crate::common::push_phone::{call_from, expect_invite_with_hint, fall_asleep, register_ok};
use crate::common::*;
use serde_json::Value;

/// Short wait for something that must not happen.
const SHORT: Duration = Duration::from_millis(300);

/// An established call from `caller` to `callee` (a registered UA): INVITE, 200, ACK.
fn establish(caller: &mut Ua, callee: &mut Ua) -> Dialog {
    let inv = caller.invite(&callee.user.clone(), "");
    let got = callee.expect_request("INVITE", Some(&inv.call_id));
    callee.reply(&got, 200, "OK", Some(&tag()));
    answer_seen(caller, &inv, callee)
}

/// The caller gets the 2xx to `inv` and ACKs it; the callee gets the ACK.
fn answer_seen(caller: &mut Ua, inv: &Invite, callee: &mut Ua) -> Dialog {
    let ok = caller.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut d = Dialog::uac(inv, &ok);
    caller.ack_2xx(&mut d, inv.cseq);
    callee.expect_request("ACK", Some(&inv.call_id));
    d
}

/// The caller hangs up; the BYE reaches the callee, whose 200 reaches the caller.
fn hang_up(caller: &mut Ua, d: &mut Dialog, callee: &mut Ua) {
    caller.send_in_dialog(d, "BYE", None);
    let bye = callee.expect_request("BYE", Some(&d.call_id));
    callee.reply(&bye, 200, "OK", None);
    caller.expect_response(&d.call_id, "BYE", "200 to BYE", |c| c == 200);
}

/// A new call is refused while draining: 503 with Retry-After.
fn expect_refused(caller: &mut Ua, callee: &str) {
    let inv = caller.invite(callee, "");
    let fin = caller.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(503), "new call while draining: {fin:?}");
    assert!(
        fin.header("retry-after")
            .is_some_and(|v| v.trim().parse::<u32>().is_ok()),
        "503 needs a Retry-After in seconds: {fin:?}"
    );
    caller.ack_non2xx(&inv, &fin);
}

fn exits_zero(proxy: &mut Proxy, limit: Duration, why: &str) {
    match proxy.wait_exit(limit) {
        Some(status) => assert!(status.success(), "{why}: exited with {status}"),
        None => panic!("{why}: still running after {limit:?}"),
    }
}

#[test]
fn sigterm_lets_a_call_finish_and_every_binding_survives() {
    let mut proxy = ProxyBuilder::new("lifecycle-drain")
        .sqlite()
        .env("LOG__LEVEL", "info")
        .env("SERVER__DRAIN_TIMEOUT_SECS", "60")
        .start();
    let mut users: Vec<Ua> = (0..40)
        .map(|i| {
            let mut ua = Ua::udp(&format!("user{i}"), &proxy);
            ua.register(3600);
            ua
        })
        .collect();
    let mut alice = Ua::udp("alice", &proxy);
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(3600);
    let mut d = establish(&mut alice, &mut bob);

    proxy.signal("TERM");
    assert!(
        proxy.wait_log("draining:", WAIT),
        "no drain start in the log"
    );
    // new calls are refused; registrations and the call in progress go on
    let mut carol = Ua::udp("carol", &proxy);
    expect_refused(&mut carol, "bob");
    let mut dave = Ua::udp("dave", &proxy);
    dave.register(3600);
    assert!(proxy.is_running(), "stopped with a call in progress");
    hang_up(&mut alice, &mut d, &mut bob);
    exits_zero(&mut proxy, Duration::from_secs(10), "after the last call");
    let log = proxy.log_text();
    assert!(log.contains("drained: no call left"), "{log}");
    assert!(log.contains("store closed"), "{log}");
    assert!(
        !proxy.dir.join("sipwake.db-wal").exists(),
        "the store was not closed cleanly: its write-ahead log is still there"
    );

    proxy.restart();
    users.push(bob);
    users.push(dave);
    for ua in &mut users {
        let resp = ua.register_with(None, None);
        let contacts: Vec<String> = resp.contacts().iter().map(|c| uri_of(c)).collect();
        assert_eq!(
            contacts,
            vec![ua.contact_uri()],
            "{}: binding lost across the graceful restart: {resp:?}",
            ua.user
        );
    }
}

#[test]
fn sigterm_without_calls_exits_at_once() {
    let mut proxy = ProxyBuilder::new("lifecycle-idle")
        .env("LOG__LEVEL", "info")
        .env("SERVER__DRAIN_TIMEOUT_SECS", "600")
        .start();
    proxy.signal("TERM");
    exits_zero(&mut proxy, Duration::from_secs(10), "idle SIGTERM");
    assert!(proxy.log_text().contains("drained: no call left"));
}

#[test]
fn drain_timeout_bounds_a_call_that_never_ends() {
    let mut proxy = ProxyBuilder::new("lifecycle-timeout")
        .env("LOG__LEVEL", "info")
        .env("SERVER__DRAIN_TIMEOUT_SECS", "1")
        .start();
    let mut alice = Ua::udp("alice", &proxy);
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(3600);
    let _d = establish(&mut alice, &mut bob);
    proxy.signal("TERM");
    exits_zero(&mut proxy, Duration::from_secs(20), "drain timeout of 1 s");
    let log = proxy.log_text();
    assert!(log.contains("drain timeout"), "{log}");
    assert!(log.contains("dialogs=1"), "{log}");
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let mut proxy = ProxyBuilder::new("lifecycle-twice")
        .env("LOG__LEVEL", "info")
        .env("SERVER__DRAIN_TIMEOUT_SECS", "600")
        .start();
    let mut alice = Ua::udp("alice", &proxy);
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(3600);
    let _d = establish(&mut alice, &mut bob);
    proxy.signal("TERM");
    assert!(proxy.wait_log("draining:", WAIT));
    proxy.signal("INT");
    exits_zero(&mut proxy, Duration::from_secs(10), "second signal");
    assert!(proxy.log_text().contains("second stop signal"));
}

#[test]
fn sigterm_while_a_call_is_parked_lets_the_phone_wake() {
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let mut proxy = ProxyBuilder::new("lifecycle-parked")
        .env("LOG__LEVEL", "info")
        .env("SERVER__DRAIN_TIMEOUT_SECS", "60")
        .env("PUSH__WEBHOOK__URL", &format!("{}/push", hook.base_url()))
        .env("PUSH__DEFAULT_PROVIDER", "webhook")
        .env("PUSH__FLOW_TIMEOUT_SECS", "1")
        .start();
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_ok(
        &mut asleep,
        "",
        &format!("X-Token: {token}\r\n"),
        600,
        &token,
    );
    fall_asleep();
    let mut alice = Ua::udp("alice", &proxy);
    let inv = call_from(&mut alice, "Alice", "bob");
    let push = hook.next_at("/push", WAIT).0.expect("a push").json();
    let hint = push["pushHint"].as_str().unwrap_or_default().to_owned();

    // the call is parked, not yet a dialog: the drain waits for it too
    proxy.signal("TERM");
    assert!(
        proxy.wait_log("calls_in_setup=1", WAIT),
        "{}",
        proxy.log_text()
    );
    let mut carol = Ua::udp("carol", &proxy);
    expect_refused(&mut carol, "bob");

    let mut woken = Ua::udp("bob", &proxy);
    register_ok(
        &mut woken,
        "",
        &format!("X-Token: {token}\r\n"),
        600,
        &token,
    );
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    woken.reply(&got, 200, "OK", Some(&tag()));
    let mut d = answer_seen(&mut alice, &inv, &mut woken);
    assert!(proxy.is_running());
    hang_up(&mut alice, &mut d, &mut woken);
    exits_zero(&mut proxy, Duration::from_secs(10), "after the woken call");
}

// ---------------------------------------------------------------------------------
// SIGHUP
// ---------------------------------------------------------------------------------

fn write_config(path: &Path, level: &str, webhook: &str, extra: &str) {
    let text = format!(
        "[log]\nlevel = \"{level}\"\n\n[push]\ndefault_provider = \"webhook\"\n\
         flow_timeout_secs = 1\n\n[push.webhook]\nurl = \"{webhook}\"\n\n{extra}"
    );
    std::fs::write(path, text).expect("write the config file");
}

/// sipwake started with `--config path`, the log level left to that file.
fn start_with_config(name: &str, path: &Path) -> Proxy {
    ProxyBuilder::new(name)
        .arg("--config")
        .arg(path.to_str().expect("UTF-8 path"))
        .unset("LOG__LEVEL")
        .unset("SIPWAKE_LOG")
        .start()
}

fn config_path(name: &str) -> PathBuf {
    temp_dir(name).join("sipwake.toml")
}

/// How many reload outcomes of this kind the log shows.
fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[test]
fn sighup_applies_log_filter_and_push_endpoint_without_dropping_a_call() {
    let (first, second) = (MockHttp::start(), MockHttp::start());
    first.route("/push", 200, "{}");
    second.route("/push", 200, "{}");
    let url = |m: &MockHttp| format!("{}/push", m.base_url());
    let conf = config_path("lifecycle-hup-conf");
    write_config(&conf, "warn", &url(&first), "");
    let mut proxy = start_with_config("lifecycle-hup", &conf);

    // call 1: pushed through the first webhook, woken, answered
    let token = unique("tok");
    let reg = format!("X-Token: {token}\r\n");
    let mut asleep = Ua::udp("bob", &proxy);
    register_ok(&mut asleep, "", &reg, 600, &token);
    fall_asleep();
    let mut alice = Ua::udp("alice", &proxy);
    let inv = call_from(&mut alice, "Alice", "bob");
    let push = first
        .next_at("/push", WAIT)
        .0
        .expect("a push to the first webhook");
    let hint = push.json()["pushHint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut woken = Ua::udp("bob", &proxy);
    register_ok(&mut woken, "", &reg, 600, &token);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    woken.reply(&got, 200, "OK", Some(&tag()));
    let mut d = answer_seen(&mut alice, &inv, &mut woken);
    assert!(
        !proxy.log_text().contains(&inv.call_id),
        "at level warn the call line must not be logged: {}",
        proxy.log_text()
    );

    // reload while call 1 is up: a new filter and a new webhook
    write_config(&conf, "info", &url(&second), "");
    proxy.signal("HUP");
    assert!(
        proxy.wait_log("reload: settings applied", WAIT),
        "{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    assert!(
        log.contains("log.level") && log.contains("push.webhook.url"),
        "{log}"
    );
    assert!(!log.contains("need a restart"), "{log}");
    hang_up(&mut alice, &mut d, &mut woken);

    // call 2: the next push goes to the second webhook; the call line is logged now
    fall_asleep();
    let inv = call_from(&mut alice, "Alice", "bob");
    let push = second
        .next_at("/push", WAIT)
        .0
        .expect("a push to the second webhook after the reload");
    assert_eq!(push.json()["callId"], inv.call_id.as_str());
    assert!(first.next(SHORT).is_none(), "the old webhook got a push");
    let hint = push.json()["pushHint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut woken2 = Ua::udp("bob", &proxy);
    register_ok(&mut woken2, "", &reg, 600, &token);
    let got = expect_invite_with_hint(&mut woken2, &inv.call_id, &hint);
    woken2.reply(&got, 486, "Busy Here", Some(&tag()));
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(486));
    alice.ack_non2xx(&inv, &fin);
    let log = proxy.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("sipwake::call") && l.contains(&inv.call_id))
        .unwrap_or_else(|| panic!("no call line for {} after the reload: {log}", inv.call_id));
    assert!(
        line.contains("outcome=woken") && line.contains("wake_ms=") && line.contains("code=486"),
        "{line}"
    );
    assert!(
        !line.contains(&token),
        "the push token must not be logged: {line}"
    );
    assert!(proxy.is_running());
}

#[test]
fn a_bad_config_on_sighup_keeps_the_old_one() {
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let url = format!("{}/push", hook.base_url());
    let conf = config_path("lifecycle-bad-conf");
    write_config(&conf, "info", &url, "");
    let mut proxy = start_with_config("lifecycle-bad", &conf);

    write_config(&conf, "info", "ftp://example.com/push", "");
    proxy.signal("HUP");
    assert!(
        proxy.wait_log("reload failed", WAIT),
        "{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    let line = log.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(
        line.contains("push.webhook.url"),
        "the error names the key: {line}"
    );
    assert!(proxy.is_running(), "a bad reload stopped sipwake");
    assert!(proxy.ping().is_some(), "no answer after a bad reload");

    // the old webhook is still in use
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_ok(
        &mut asleep,
        "",
        &format!("X-Token: {token}\r\n"),
        600,
        &token,
    );
    fall_asleep();
    let mut alice = Ua::udp("alice", &proxy);
    let inv = call_from(&mut alice, "Alice", "bob");
    assert!(
        hook.next_at("/push", WAIT).0.is_some(),
        "no push after a bad reload"
    );
    alice.cancel(&inv);
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487));
    alice.ack_non2xx(&inv, &fin);

    // a later good file applies; a key that needs a restart is named
    write_config(&conf, "debug", &url, "[sip]\nt1_ms = 400\n");
    proxy.signal("HUP");
    assert!(
        proxy.wait_log("need a restart", WAIT),
        "{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    assert_eq!(count(&log, "reload: settings applied"), 1, "{log}");
    let line = log.lines().find(|l| l.contains("need a restart")).unwrap();
    assert!(line.contains("sip.t1_ms"), "{line}");
    assert!(proxy.is_running());
}

// ---------------------------------------------------------------------------------
// JSON logs and the call lines
// ---------------------------------------------------------------------------------

#[test]
fn json_log_lines_parse_and_each_call_has_its_outcome() {
    let mut proxy = ProxyBuilder::new("lifecycle-json")
        .env("LOG__FORMAT", "json")
        .env("LOG__LEVEL", "warn,sipwake::call=info")
        .unset("SIPWAKE_LOG")
        .start();
    let mut alice = Ua::udp("alice", &proxy);
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(3600);

    let mut d = establish(&mut alice, &mut bob);
    hang_up(&mut alice, &mut d, &mut bob);
    let answered = d.call_id.clone();

    let inv = alice.invite("bob", "");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    let btag = tag();
    bob.reply(&got, 180, "Ringing", Some(&btag));
    alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    alice.cancel(&inv);
    let cancel = bob.expect_request("CANCEL", Some(&inv.call_id));
    bob.reply(&cancel, 200, "OK", None);
    bob.reply(&got, 487, "Request Terminated", Some(&btag));
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487));
    alice.ack_non2xx(&inv, &fin);
    let cancelled = inv.call_id.clone();

    let inv = alice.invite("nobody", "");
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(480));
    alice.ack_non2xx(&inv, &fin);
    let unknown = inv.call_id.clone();

    proxy.signal("TERM");
    exits_zero(&mut proxy, Duration::from_secs(10), "SIGTERM");
    let log = proxy.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let calls: Vec<&Value> = lines
        .iter()
        .filter(|v| v["target"] == "sipwake::call")
        .collect();
    assert_eq!(calls.len(), 3, "one line per call: {log}");
    let of = |cid: &str| {
        *calls
            .iter()
            .find(|v| v["call_id"] == cid)
            .unwrap_or_else(|| panic!("no call line for {cid}: {log}"))
    };
    let a = of(&answered);
    assert_eq!(
        (&a["outcome"], &a["code"]),
        (&Value::from("answered"), &Value::from(200))
    );
    assert_eq!(a["from"], format!("alice@{DOMAIN}"), "{a}");
    assert_eq!(a["to"], format!("bob@{DOMAIN}"), "{a}");
    assert_eq!(a["level"], "INFO", "{a}");
    assert!(a["duration_ms"].is_u64(), "{a}");
    let c = of(&cancelled);
    assert_eq!(
        (&c["outcome"], &c["code"]),
        (&Value::from("cancelled"), &Value::from(487))
    );
    let u = of(&unknown);
    assert_eq!(
        (&u["outcome"], &u["code"]),
        (&Value::from("rejected"), &Value::from(480))
    );
    // the filter kept everything else at warn: no drain lines at info
    assert!(
        lines
            .iter()
            .all(|v| v["level"] != "INFO" || v["target"] == "sipwake::call"),
        "{log}"
    );
}

/// The exit status systemd does not restart, from the shipped unit.
fn restart_prevent_status() -> i32 {
    let unit =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/sipwake.service"))
            .expect("read conf/sipwake.service");
    unit.lines()
        .find_map(|l| l.trim().strip_prefix("RestartPreventExitStatus="))
        .and_then(|v| v.trim().parse().ok())
        .expect("RestartPreventExitStatus= in conf/sipwake.service")
}

/// Runs sipwake with `args` (memory store, a free port) and returns its exit status
/// and standard error.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let err = temp_dir("files-stderr").join("stderr.txt");
    let mut child = std::process::Command::new(SIPWAKE)
        .args(args)
        .env("SIPWAKE__STORE__BACKEND", "memory")
        .env("SIPWAKE__SIP__LISTEN", "127.0.0.1:0")
        .env("SIPWAKE__ADMIN__LISTEN", "")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("run sipwake");
    let status = wait_with_timeout(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (
        status.and_then(|s| s.code()),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

/// Every file a setting names is opened by `--check-config` and at start; a file that
/// cannot be read fails both with the status the systemd unit stops on, naming the
/// key. TLS certificate files are not read while `tls.listen` is empty.
#[test]
fn unreadable_files_fail_check_config_and_start_with_the_unit_status() {
    let status = restart_prevent_status();
    let dir = temp_dir("files-check");
    let missing = dir.join("no-such-file");
    let m = missing.display().to_string();
    let key = crate::common::mock_apns::SigningKey::new();
    let p8 = key.write(&dir, "KEYID12345").display().to_string();
    let cases = [
        (
            "push.apns.key_file",
            format!("[push.apns]\nkey_file = {m:?}\nkey_id = \"KEYID12345\"\nteam_id = \"ABCDE12345\"\n"),
        ),
        ("push.apns.cert_file", format!("[push.apns]\ncert_file = {m:?}\n")),
        (
            "push.apns.payload_template",
            format!("[push.apns]\nkey_file = {p8:?}\nkey_id = \"KEYID12345\"\nteam_id = \"ABCDE12345\"\npayload_template = {m:?}\n"),
        ),
        (
            "push.fcm.service_account_file",
            format!("[push.fcm]\nservice_account_file = {m:?}\n"),
        ),
        (
            "auth.users_file",
            format!("[auth]\nenabled = true\nusers_file = {m:?}\nrealm = \"example.com\"\n"),
        ),
        (
            "tls.cert_file",
            format!("[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = {m:?}\nkey_file = {m:?}\n"),
        ),
    ];
    for (i, (key, toml)) in cases.iter().enumerate() {
        let conf = dir.join(format!("case{i}.toml"));
        std::fs::write(&conf, toml).unwrap();
        let conf_s = conf.display().to_string();
        let (code, err) = run_to_exit(&["--check-config", &conf_s]);
        assert_eq!(
            code,
            Some(status),
            "--check-config with {key} unreadable: {err}"
        );
        assert!(err.contains(key), "the error names {key}: {err}");
        let (code, err) = run_to_exit(&["--config", &conf_s]);
        assert_eq!(code, Some(status), "start with {key} unreadable: {err}");
        assert!(err.contains(key), "the error names {key}: {err}");
    }

    // a listen address the host does not have is a configuration fault too
    let conf = dir.join("foreign-listen.toml");
    // TEST-NET-3 (RFC 5737) is never an address of this host
    std::fs::write(&conf, "[sip]\nlisten = [\"203.0.113.77:5060\"]\n").unwrap();
    let err_file = dir.join("foreign-listen.err");
    let mut child = std::process::Command::new(SIPWAKE)
        .args(["--config", &conf.display().to_string()])
        .env("SIPWAKE__STORE__BACKEND", "memory")
        .env("SIPWAKE__ADMIN__LISTEN", "")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .expect("run sipwake");
    let code = wait_with_timeout(&mut child, Duration::from_secs(20)).and_then(|s| s.code());
    let err = std::fs::read_to_string(&err_file).unwrap_or_default();
    assert_eq!(code, Some(status), "{err}");
    assert!(
        err.contains("203.0.113.77:5060"),
        "names the address: {err}"
    );

    // no TLS listener: the certificate files are not looked at
    let conf = dir.join("no-tls.toml");
    std::fs::write(
        &conf,
        format!("[tls]\nlisten = []\ncert_file = {m:?}\nkey_file = {m:?}\n"),
    )
    .unwrap();
    let (code, err) = run_to_exit(&["--check-config", &conf.display().to_string()]);
    assert_eq!(code, Some(0), "{err}");
    let mut proxy = ProxyBuilder::new("files-no-tls")
        .env("TLS__CERT_FILE", &m)
        .env("TLS__KEY_FILE", &m)
        .start();
    assert!(proxy.ping().is_some(), "{}", proxy.log_text());
    assert!(proxy.is_running());
}

/// The sipwake settings shipped for the Asterisk deployment (mounted by
/// docker-compose.yml) pass `--check-config`, and compose mounts that very file.
#[test]
fn the_shipped_relay_settings_check_and_are_what_compose_mounts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("conf/asterisk/sipwake-relay.toml");
    let (code, err) = run_to_exit(&["--check-config", &file.display().to_string()]);
    assert_eq!(code, Some(0), "{err}");
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    assert!(
        compose.contains("./conf/asterisk/sipwake-relay.toml:/etc/sipwake/sipwake.toml"),
        "docker-compose.yml mounts conf/asterisk/sipwake-relay.toml"
    );
    for f in ["pjsip.conf", "extensions.conf", "voicemail.conf"] {
        assert!(
            compose.contains(&format!("./conf/asterisk/{f}:/etc/asterisk/{f}")),
            "docker-compose.yml mounts {f}"
        );
        assert!(
            root.join("conf/asterisk").join(f).is_file(),
            "{f} is shipped"
        );
    }
    // support_path belongs to the AOR: on an endpoint Asterisk rejects the endpoint
    let pjsip = std::fs::read_to_string(root.join("conf/asterisk/pjsip.conf")).unwrap();
    let mut section_type = String::new();
    for line in pjsip.lines().map(str::trim) {
        if line.starts_with('[') {
            section_type.clear();
        } else if let Some(t) = line.strip_prefix("type=") {
            section_type = t.to_owned();
        } else if line.starts_with("support_path") {
            assert_eq!(section_type, "aor", "support_path outside an aor section");
        }
    }
}
