//! Unit tests of loading settings: defaults, the shipped files, every error naming
//! its key, environment overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::source::{self, env_overrides, load_raw, EnvOverrides};
use super::*;

mod sections;

fn err(toml: &str) -> ConfigError {
    match from_toml_str(toml) {
        Ok(s) => panic!("expected an error for {toml:?}, got {s:?}"),
        Err(e) => e,
    }
}

fn env(vars: &[(&str, &str)]) -> EnvOverrides {
    env_overrides(vars.iter().map(|(k, v)| ((*k).into(), (*v).into()))).expect("utf-8")
}

fn with_env(toml: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    load_raw(Some((toml, "test")), Some(env(vars)))?.validate()
}

#[test]
fn redis_store_and_cluster_settings() {
    let s = from_toml_str(
        "[sip]\nlisten = [\"10.0.0.11:5070\"]\n\
         [store]\nbackend = \"redis\"\n\
         [store.redis]\nurl = \"redis://u:Sekr3t@r.example:6380/2\"\npassword = \"0ther\"\ntimeout_ms = 250",
    )
    .expect("valid");
    assert_eq!(s.store.backend, StoreBackend::Redis);
    assert_eq!(s.store.redis.password.as_deref(), Some("0ther"));
    assert_eq!(s.store.redis.timeout, std::time::Duration::from_millis(250));
    assert_eq!(s.cluster.advertise_uri, "sip:10.0.0.11:5070");
    assert_eq!(s.cluster.node_id, "10.0.0.11:5070");
    let shown = format!("{:?}", s.store.redis);
    assert!(
        !shown.contains("Sekr3t") && !shown.contains("0ther"),
        "{shown}"
    );
    assert_eq!(
        redact_url("rediss://u:pw@r.example:6380"),
        "rediss://u:***@r.example:6380"
    );
}

#[test]
fn redis_cluster_and_tls_settings() {
    let s = from_toml_str(
        "[sip]\nlisten = [\"10.0.0.11:5070\"]\n\
         [store]\nbackend = \"redis\"\n\
         [store.redis]\nurl = \"rediss://:Sekr3t@r1.example:7000\"\ncluster = true\n\
         cluster_urls = [\"rediss://r2.example:7000\", \" \", \"rediss://:pw2@r3.example\"]\n\
         ca_file = \"/etc/sipwake/redis-ca.pem\"",
    )
    .expect("valid");
    let r = &s.store.redis;
    assert!(r.cluster);
    assert_eq!(
        r.cluster_urls,
        ["rediss://r2.example:7000", "rediss://:pw2@r3.example"]
    );
    assert_eq!(
        r.ca_file.as_deref(),
        Some(std::path::Path::new("/etc/sipwake/redis-ca.pem"))
    );
    let shown = format!("{r:?}");
    assert!(
        !shown.contains("Sekr3t") && !shown.contains("pw2"),
        "{shown}"
    );
    // from the environment, seed nodes are a comma-separated list
    let s = with_env(
        "",
        &[
            ("SIPWAKE__STORE__REDIS__URL", "redis://r1:7000"),
            ("SIPWAKE__STORE__REDIS__CLUSTER", "true"),
            (
                "SIPWAKE__STORE__REDIS__CLUSTER_URLS",
                "redis://r2:7000,redis://r3:7000",
            ),
        ],
    )
    .expect("valid");
    assert_eq!(
        s.store.redis.cluster_urls,
        ["redis://r2:7000", "redis://r3:7000"]
    );
}

#[test]
fn defaults() {
    let s = from_toml_str("").expect("defaults are valid");
    assert_eq!(
        s.sip.listen,
        vec!["127.0.0.1:5060".parse::<SocketAddr>().unwrap()]
    );
    assert!(s.sip.udp && s.sip.tcp);
    assert_eq!(s.sip.advertised_host, None);
    assert_eq!(s.sip.max_message_size, 65535);
    assert_eq!(s.sip.tcp_idle_timeout, Duration::from_secs(3600));
    assert_eq!(s.sip.t1, Duration::from_millis(500));
    assert_eq!(s.sip.t2, Duration::from_millis(4000));
    assert_eq!(s.sip.t4, Duration::from_millis(5000));
    assert_eq!(s.sip.timer_c, Duration::from_secs(180));
    assert!(s.proxy.domains.is_empty());
    assert_eq!(
        s.proxy.trusted_networks,
        vec![
            IpNet::parse("127.0.0.0/8").unwrap(),
            IpNet::parse("::1/128").unwrap()
        ]
    );
    assert_eq!(s.proxy.flow_token_secret, None);
    assert!(s.upstream.uri.is_none());
    assert_eq!(s.registrar.mode, RegistrarMode::Local);
    assert_eq!(
        (
            s.registrar.min_expires,
            s.registrar.max_expires,
            s.registrar.default_expires
        ),
        (60, 3600, 3600)
    );
    assert_eq!(s.registrar.max_contacts, 10);
    assert_eq!(s.store.backend, StoreBackend::Sqlite);
    assert_eq!(s.store.path, PathBuf::from("data/sipwake.db"));
    assert!(!s.store.sync_full);
    assert_eq!(s.log.level, "info");
}

/// Flattens a TOML table into dotted keys.
fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = source::join_key(prefix, k);
        match v {
            toml::Value::Table(t) => keys(&key, t, out),
            _ => out.push(key),
        }
    }
}

#[test]
fn shipped_config_is_the_defaults_with_every_key() {
    let text = include_str!("../../conf/sipwake.toml");
    let raw = load_raw(Some((text, "conf/sipwake.toml")), None).expect("parses");
    assert_eq!(raw, RawSettings::default());
    assert_eq!(
        from_toml_str(text).expect("valid"),
        from_toml_str("").expect("valid")
    );

    let mut written = Vec::new();
    keys("", &text.parse().expect("parses"), &mut written);
    let mut all = Vec::new();
    keys("", &source::defaults_table(), &mut all);
    written.sort();
    all.sort();
    assert_eq!(written, all, "conf/sipwake.toml must set every key");
}

#[test]
fn production_example_is_valid_and_locked_down() {
    let text = include_str!("../../conf/sipwake.production.toml");
    let s = from_toml_str(text).expect("conf/sipwake.production.toml is valid");
    assert!(s.auth.enabled, "auth on");
    assert!(!s.tls.listen.is_empty(), "TLS on");
    assert!(s.admin.token.is_some(), "admin API behind a token");
    assert!(s.admin.listen.is_some_and(|a| a.ip().is_loopback()));
    assert!(s.sip.listen.iter().any(|a| !a.ip().is_loopback()), "public");
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn parses_a_full_file() {
    let s = from_toml_str(
        r#"
        [sip]
        listen = ["0.0.0.0:5070", "[::]:5070"]
        transports = ["TCP"]
        advertised_host = "SIP.Example.com"
        aliases = ["Alias.Example.com", "192.0.2.7", "[2001:DB8::7]", "alias.example.com"]
        timer_c_secs = 1
        [proxy]
        domains = ["Example.COM", "example.com", " "]
        trusted_networks = ["10.0.0.0/8", "192.168.1.7"]
        flow_token_secret = "000102030405060708090a0b0c0d0e0f"
        [upstream]
        uri = "sip:[2001:db8::1]:5080;transport=tcp;lr"
        [registrar]
        mode = "relay"
        [relay]
        contact_rewrite = true
        [store]
        backend = "memory"
        synchronous = "full"
        [log]
        level = "warn,sipwake=debug"
        "#,
    )
    .expect("valid");
    assert_eq!(s.sip.listen.len(), 2);
    assert!(!s.sip.udp && s.sip.tcp);
    assert_eq!(s.sip.advertised_host.as_deref(), Some("sip.example.com"));
    assert_eq!(
        s.sip.aliases,
        ["alias.example.com", "192.0.2.7", "[2001:db8::7]"]
    );
    assert_eq!(s.sip.timer_c, Duration::from_secs(1));
    assert_eq!(s.proxy.domains, vec!["example.com"]);
    assert_eq!(
        s.proxy.flow_token_secret,
        Some((0u8..16).collect::<Vec<_>>())
    );
    let up = s.upstream.uri.as_ref().expect("upstream");
    assert_eq!(
        (up.host.as_str(), up.port, up.transport),
        ("2001:db8::1", 5080, TransportKind::Tcp)
    );
    assert_eq!(up.host_port(), "[2001:db8::1]:5080");
    assert_eq!(s.registrar.mode, RegistrarMode::Relay);
    assert!(s.relay.contact_rewrite);
    assert_eq!(s.store.backend, StoreBackend::Memory);
    assert!(s.store.sync_full);
    assert!(s.is_trusted("192.168.1.7".parse().unwrap()));
    assert!(s.is_trusted("10.200.0.1".parse().unwrap()));
    assert!(!s.is_trusted("127.0.0.1".parse().unwrap()));
}

#[test]
fn each_validation_error_names_its_key() {
    let cases: &[(&str, &str)] = &[
        ("[sip]\nlisten = []", "sip.listen"),
        ("[sip]\nlisten = [\"127.0.0.1\"]", "sip.listen"),
        ("[sip]\nlisten = [\"::1:5060\"]", "sip.listen"),
        (
            "[sip]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:1\"]",
            "sip.listen",
        ),
        ("[sip]\ntransports = [\"tls\"]", "sip.transports"),
        ("[sip]\ntransports = []", "sip.transports"),
        (
            "[sip]\nadvertised_host = \"host:5060\"",
            "sip.advertised_host",
        ),
        ("[sip]\nmax_message_size = 1023", "sip.max_message_size"),
        ("[sip]\nmax_message_size = 1048577", "sip.max_message_size"),
        (
            "[sip]\ntcp_idle_timeout_secs = 0",
            "sip.tcp_idle_timeout_secs",
        ),
        ("[sip]\nt1_ms = 0", "sip.t1_ms"),
        (
            "[store]\nrefresh_write_behind_ms = 10001",
            "store.refresh_write_behind_ms",
        ),
        ("[sip]\nt2_ms = 100", "sip.t2_ms"),
        ("[sip]\nt4_ms = 0", "sip.t4_ms"),
        ("[sip]\ntimer_c_secs = 0", "sip.timer_c_secs"),
        ("[proxy]\ndomains = [\"exa mple.com\"]", "proxy.domains"),
        (
            "[proxy]\ntrusted_networks = [\"10.0.0.0/33\"]",
            "proxy.trusted_networks",
        ),
        (
            "[proxy]\ntrusted_networks = [\"localhost\"]",
            "proxy.trusted_networks",
        ),
        (
            "[proxy]\nflow_token_secret = \"abcd\"",
            "proxy.flow_token_secret",
        ),
        (
            "[proxy]\nflow_token_secret = \"zz\"",
            "proxy.flow_token_secret",
        ),
        ("[upstream]\nuri = \"pbx.example.com\"", "upstream.uri"),
        ("[upstream]\nuri = \"http://pbx\"", "upstream.uri"),
        (
            "[upstream]\nuri = \"sips:pbx;transport=udp\"",
            "upstream.uri",
        ),
        ("[upstream]\nuri = \"sip:alice@pbx\"", "upstream.uri"),
        ("[upstream]\nuri = \"sip:2001:db8::1\"", "upstream.uri"),
        ("[upstream]\nuri = \"sip:pbx:0\"", "upstream.uri"),
        (
            "[upstream]\nuri = \"sip:pbx;transport=sctp\"",
            "upstream.uri",
        ),
        ("[registrar]\nmode = \"proxy\"", "registrar.mode"),
        ("[registrar]\nmode = \"relay\"", "registrar.mode"),
        ("[registrar]\nmin_expires = 0", "registrar.min_expires"),
        ("[registrar]\nmin_expires = 4000", "registrar.max_expires"),
        (
            "[registrar]\ndefault_expires = 30",
            "registrar.default_expires",
        ),
        (
            "[registrar]\nmax_expires = 4294967296",
            "registrar.max_expires",
        ),
        ("[registrar]\nmax_contacts = 0", "registrar.max_contacts"),
        ("[store]\nbackend = \"mysql\"", "store.backend"),
        ("[store]\nbackend = \"redis\"", "store.redis.url"),
        (
            "[store]\nbackend = \"redis\"\n[store.redis]\nurl = \"http://h\"",
            "store.redis.url",
        ),
        (
            "[store.redis]\nurl = \"redis://h\"\ntimeout_ms = 0",
            "store.redis.timeout_ms",
        ),
        (
            "[store.redis]\nkey_prefix = \"a{b}\"",
            "store.redis.key_prefix",
        ),
        (
            "[store.redis]\nurl = \"redis://h\"\ncluster_urls = [\"redis://h2\"]",
            "store.redis.cluster_urls",
        ),
        (
            "[store.redis]\nurl = \"redis://h\"\ncluster = true\ncluster_urls = [\"rediss://h2\"]",
            "store.redis.cluster_urls",
        ),
        (
            "[store.redis]\nurl = \"redis://h\"\ncluster = true\ncluster_urls = [\"h2:6379\"]",
            "store.redis.cluster_urls",
        ),
        (
            "[store.redis]\nurl = \"redis://h:7000/3\"\ncluster = true",
            "store.redis.url",
        ),
        (
            "[store.redis]\nurl = \"redis://h\"\nca_file = \"/etc/ca.pem\"",
            "store.redis.ca_file",
        ),
        (
            "[sip]\nlisten = [\"0.0.0.0:5060\"]\n[store]\nbackend = \"redis\"\n\
             [store.redis]\nurl = \"redis://h\"",
            "cluster.advertise_uri",
        ),
        (
            "[cluster]\nadvertise_uri = \"sip:u@h\"",
            "cluster.advertise_uri",
        ),
        (
            "[cluster]\nadvertise_uri = \"http://h\"",
            "cluster.advertise_uri",
        ),
        ("[cluster]\nnode_id = \"a b\"", "cluster.node_id"),
        ("[store]\npath = \"\"", "store.path"),
        ("[store]\nsynchronous = \"off\"", "store.synchronous"),
        ("[log]\nlevel = \"\"", "log.level"),
        ("[log]\nlevel = \"sipwake=loud\"", "log.level"),
    ];
    for (toml, key) in cases {
        let e = err(toml);
        assert_eq!(e.key(), Some(*key), "{toml:?} gave {e}");
        assert!(
            e.to_string().starts_with(&format!("{key}: ")),
            "{toml:?} gave {e}"
        );
        assert!(
            matches!(e, ConfigError::Invalid { .. }),
            "{toml:?} gave {e:?}"
        );
    }
}

#[test]
fn invalid_error_display() {
    let e = err("[sip]\nlisten = [\"nonsense\"]");
    assert_eq!(
        e.to_string(),
        "sip.listen: invalid value \"nonsense\": not a socket address (write 127.0.0.1:5060 or [::1]:5060)"
    );
}

#[test]
fn secret_is_not_repeated_in_errors() {
    let e = err("[proxy]\nflow_token_secret = \"deadbeefdeadbeef\"");
    assert!(!e.to_string().contains("deadbeef"), "{e}");
}

#[test]
fn type_errors_name_the_key() {
    let e = err("[registrar]\nmin_expires = \"abc\"");
    assert_eq!(e.key(), Some("registrar.min_expires"), "{e}");
    assert!(e.to_string().contains("registrar.min_expires"), "{e}");

    let e = err("[sip]\nlisten = \"127.0.0.1:5060\"");
    assert_eq!(e.key(), Some("sip.listen"), "{e}");
    assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
    assert!(e.to_string().ends_with("expected a sequence"), "{e}");

    let e = err("[sip]\nlisten = [\"127.0.0.1:5060\", 7]");
    assert!(e.to_string().contains("sip.listen"), "{e}");

    let e = err("[registrar]\nmax_contacts = -1");
    assert_eq!(e.key(), Some("registrar.max_contacts"), "{e}");
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let e = err("[sip]\nlisen = [\"127.0.0.1:5060\"]");
    assert_eq!(e.key(), Some("sip.lisen"), "{e}");
    assert!(
        e.to_string().contains("listen"),
        "should list the valid keys: {e}"
    );

    let e = err("[sipp]\nlisten = []");
    assert_eq!(e.key(), Some("sipp"), "{e}");
}

#[test]
fn syntax_errors_name_the_origin() {
    let e = err("[sip\nlisten = 1");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    assert!(e.to_string().starts_with("built-in text: "), "{e}");
}

#[test]
fn missing_file_names_the_path() {
    let e = load(Some(Path::new("/nonexistent/sipwake.toml"))).expect_err("no file");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/sipwake.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn environment_overrides() {
    let s = with_env(
        "[sip]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]",
        &[
            ("SIPWAKE__SIP__LISTEN", "127.0.0.1:5090,[::1]:5090"),
            ("SIPWAKE__SIP__TRANSPORTS", "udp"),
            ("SIPWAKE__STORE__BACKEND", "memory"),
            ("SIPWAKE__REGISTRAR__MIN_EXPIRES", "30"),
            ("SIPWAKE__PROXY__DOMAINS", "a.example, b.example"),
            // All digits: must stay a string, leading zeros and all.
            (
                "SIPWAKE__PROXY__FLOW_TOKEN_SECRET",
                "00000000000000000000000000000001",
            ),
            ("sipwake__log__level", "debug"),
            ("SIPWAKE_LOG", "trace"),
            ("PATH", "/usr/bin"),
        ],
    )
    .expect("valid");
    assert_eq!(
        s.sip.listen,
        vec![
            "127.0.0.1:5090".parse::<SocketAddr>().unwrap(),
            "[::1]:5090".parse().unwrap()
        ]
    );
    assert!(s.sip.udp && !s.sip.tcp);
    assert_eq!(s.store.backend, StoreBackend::Memory);
    assert_eq!(s.registrar.min_expires, 30);
    assert_eq!(s.proxy.domains, vec!["a.example", "b.example"]);
    let mut secret = vec![0u8; 16];
    secret[15] = 1;
    assert_eq!(s.proxy.flow_token_secret, Some(secret));
    assert_eq!(s.log.level, "debug");

    // An empty list variable clears the list.
    let s = with_env(
        "[proxy]\ndomains = [\"x.example\"]",
        &[("SIPWAKE__PROXY__DOMAINS", "")],
    )
    .expect("valid");
    assert!(s.proxy.domains.is_empty());

    // Errors from the environment name the key and the variable.
    let e = with_env("", &[("SIPWAKE__REGISTRAR__MIN_EXPIRES", "abc")]).expect_err("bad");
    assert_eq!(e.key(), Some("registrar.min_expires"), "{e}");
    assert!(
        e.to_string().contains("SIPWAKE__REGISTRAR__MIN_EXPIRES"),
        "{e}"
    );
    let e = with_env("", &[("SIPWAKE__SIP__LISTN", "x")]).expect_err("unknown");
    assert_eq!(e.key(), Some("sip.listn"), "{e}");
    let e = with_env("", &[("SIPWAKE__SIP__LISTEN", "localhost")]).expect_err("bad");
    assert_eq!(e.key(), Some("sip.listen"), "{e}");

    // The real process environment, through the public entry point. One variable
    // with a name no other test uses, and harmless for any test that loads
    // settings concurrently; removed again right after.
    let var = "SIPWAKE__LOG__LEVEL";
    let level = "info,sipwake_env_override_test=debug";
    std::env::set_var(var, level);
    let loaded = load(None);
    std::env::remove_var(var);
    assert_eq!(loaded.expect("valid").log.level, level);
}

#[test]
fn push_defaults_and_full_section() {
    let s = from_toml_str("").expect("defaults");
    assert_eq!(s.push, PushSettings::default());

    let s = from_toml_str(
        r#"
        [push]
        policy = "when_unreachable"
        wake_timeout_ms = 2500
        hint_header = "X-Call-Hint"
        token_header = "X-Push-Token"
        token_param = "pushToken"
        default_provider = "webhook"
        binding_ttl_secs = 0
        max_expires = 86400
        flow_timeout_secs = 30
        max_parked = 100
        max_parked_per_aor = 100
        [push.apns]
        key_file = "/etc/sipwake/AuthKey.p8"
        key_id = "ABC123DEFG"
        team_id = "TEAM123456"
        bundle_id = "com.example.phone"
        sandbox = true
        production_url = "https://127.0.0.1:8443/"
        sandbox_url = "https://localhost:8444"
        ca_file = "/tmp/ca.pem"
        [push.fcm]
        service_account_file = "sa.json"
        base_url = "http://127.0.0.1:9000"
        token_uri = "http://127.0.0.1:9000/token"
        [push.webhook]
        url = "http://127.0.0.1:9001/push/"
        timeout_ms = 500
        providers = ["APNS"]
        [push.messages]
        enabled = false
        ttl_secs = 60
        max_per_aor = 5
        max_total = 50
        max_body_bytes = 1000
        notice_text = true
        [push.refresh]
        enabled = false
        before_secs = 3600
        max_per_second = 2
        "#,
    )
    .expect("valid");
    let p = &s.push;
    assert_eq!(p.policy, PushPolicy::WhenUnreachable);
    assert_eq!(p.wake_timeout, Duration::from_millis(2500));
    assert_eq!(
        (
            p.hint_header.as_str(),
            p.token_header.as_str(),
            p.token_param.as_str()
        ),
        ("X-Call-Hint", "X-Push-Token", "pushToken")
    );
    assert_eq!(p.default_provider, DefaultProvider::Webhook);
    assert_eq!(p.binding_ttl, Duration::ZERO);
    assert_eq!(p.max_expires, 86400);
    assert_eq!(p.flow_timeout, Duration::from_secs(30));
    assert_eq!((p.max_parked, p.max_parked_per_aor), (100, 100));
    let a = p.apns.as_ref().expect("apns");
    assert_eq!(
        a.key_file.as_deref(),
        Some(Path::new("/etc/sipwake/AuthKey.p8"))
    );
    assert_eq!(a.key_id.as_deref(), Some("ABC123DEFG"));
    assert_eq!(a.team_id.as_deref(), Some("TEAM123456"));
    assert_eq!(a.cert_file, None);
    assert_eq!(a.bundle_id.as_deref(), Some("com.example.phone"));
    assert!(a.sandbox);
    assert_eq!(a.production_url, "https://127.0.0.1:8443");
    assert_eq!(a.sandbox_url, "https://localhost:8444");
    assert_eq!(a.ca_file.as_deref(), Some(Path::new("/tmp/ca.pem")));
    let f = p.fcm.as_ref().expect("fcm");
    assert_eq!(f.service_account_file, PathBuf::from("sa.json"));
    assert_eq!(f.project_id, None);
    assert_eq!(f.token_uri.as_deref(), Some("http://127.0.0.1:9000/token"));
    let w = p.webhook.as_ref().expect("webhook");
    assert_eq!(w.url, "http://127.0.0.1:9001/push/");
    assert_eq!(w.timeout, Duration::from_millis(500));
    assert!(w.gateway_apns && !w.gateway_fcm);
    let m = &p.messages;
    assert!(!m.enabled && m.notice_text);
    assert_eq!(m.ttl, Duration::from_secs(60));
    assert_eq!(
        (m.max_per_aor, m.max_total, m.max_body_bytes),
        (5, 50, 1000)
    );
    let r = &p.refresh;
    assert!(!r.enabled);
    assert_eq!((r.before, r.max_per_second), (Duration::from_secs(3600), 2));

    // Certificate auth alone configures APNs.
    let s = from_toml_str("[push.apns]\ncert_file = \"apns.pem\"").expect("valid");
    let a = s.push.apns.expect("apns");
    assert_eq!(a.cert_file.as_deref(), Some(Path::new("apns.pem")));
    assert_eq!(a.production_url, "https://api.push.apple.com");

    // Environment overrides reach the nested sections.
    let s = with_env(
        "",
        &[
            ("SIPWAKE__PUSH__WEBHOOK__URL", "http://127.0.0.1:1/x"),
            ("SIPWAKE__PUSH__WEBHOOK__PROVIDERS", "fcm,all"),
            ("SIPWAKE__PUSH__APNS__CERT_FILE", "c.pem"),
            ("SIPWAKE__PUSH__APNS__SANDBOX", "true"),
            ("SIPWAKE__PUSH__WAKE_TIMEOUT_MS", "700"),
        ],
    )
    .expect("valid");
    let w = s.push.webhook.expect("webhook");
    assert_eq!(w.url, "http://127.0.0.1:1/x");
    assert!(w.gateway_apns && w.gateway_fcm);
    assert!(s.push.apns.expect("apns").sandbox);
    assert_eq!(s.push.wake_timeout, Duration::from_millis(700));
}

#[test]
fn push_errors_name_their_key() {
    let cases: &[(&str, &str)] = &[
        ("[push]\npolicy = \"never\"", "push.policy"),
        ("[push]\nwake_timeout_ms = 99", "push.wake_timeout_ms"),
        ("[push]\nhint_header = \"X Hint\"", "push.hint_header"),
        ("[push]\ntoken_header = \"\"", "push.token_header"),
        ("[push]\ntoken_param = \"a=b\"", "push.token_param"),
        (
            "[push]\ndefault_provider = \"gcm\"",
            "push.default_provider",
        ),
        ("[push]\nmax_expires = 0", "push.max_expires"),
        ("[push]\nflow_timeout_secs = 0", "push.flow_timeout_secs"),
        ("[push]\nmax_parked = 0", "push.max_parked"),
        (
            "[push]\nmax_parked_per_aor = 20000",
            "push.max_parked_per_aor",
        ),
        ("[push.apns]\nkey_file = \"k.p8\"", "push.apns.key_id"),
        (
            "[push.apns]\nkey_file = \"k.p8\"\nkey_id = \"K\"",
            "push.apns.team_id",
        ),
        ("[push.apns]\nteam_id = \"T\"", "push.apns.team_id"),
        (
            "[push.apns]\nkey_file = \"k\"\nkey_id = \"K\"\nteam_id = \"T\"\ncert_file = \"c\"",
            "push.apns.cert_file",
        ),
        (
            "[push.apns]\nbundle_id = \"com.x.voip\"",
            "push.apns.bundle_id",
        ),
        (
            "[push.apns]\nproduction_url = \"api.push.apple.com\"",
            "push.apns.production_url",
        ),
        (
            "[push.apns]\nsandbox_url = \"ftp://x\"",
            "push.apns.sandbox_url",
        ),
        (
            "[push.fcm]\nbase_url = \"http://x/?a=b\"",
            "push.fcm.base_url",
        ),
        ("[push.fcm]\ntoken_uri = \"nope\"", "push.fcm.token_uri"),
        ("[push.webhook]\nurl = \"localhost:80\"", "push.webhook.url"),
        ("[push.webhook]\ntimeout_ms = 0", "push.webhook.timeout_ms"),
        (
            "[push.webhook]\nurl = \"http://h/\"\nproviders = [\"webpush\"]",
            "push.webhook.providers",
        ),
        (
            "[push.webhook]\nproviders = [\"all\"]",
            "push.webhook.providers",
        ),
        ("[push.messages]\nttl_secs = 0", "push.messages.ttl_secs"),
        (
            "[push.refresh]\nbefore_secs = 0",
            "push.refresh.before_secs",
        ),
        (
            "[push.refresh]\nmax_per_second = 0",
            "push.refresh.max_per_second",
        ),
        (
            "[push.messages]\nmax_per_aor = 0",
            "push.messages.max_per_aor",
        ),
        (
            "[push.messages]\nmax_body_bytes = 70000",
            "push.messages.max_body_bytes",
        ),
    ];
    for (toml, key) in cases {
        let e = err(toml);
        assert_eq!(e.key(), Some(*key), "{toml:?} gave {e}");
        assert!(
            matches!(e, ConfigError::Invalid { .. }),
            "{toml:?} gave {e:?}"
        );
    }
    let e = err("[push.apns]\nkey_fil = \"x\"");
    assert_eq!(e.key(), Some("push.apns.key_fil"), "{e}");
}
