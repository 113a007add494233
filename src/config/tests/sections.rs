//! Tests of the smaller config sections, one test each: admin, auth, limits (defaults,
//! environment and errors), tls, the relay upstream URI, and the trusted networks
//! (`ipnet` parsing and matching).

use super::*;

#[test]
fn admin_section() {
    let s = from_toml_str("").unwrap();
    assert_eq!(s.admin.listen, Some("127.0.0.1:8060".parse().unwrap()));
    assert_eq!(s.admin.token, None);
    let s = from_toml_str("[admin]\nlisten = \"\"\ntoken = \"0123456789abcdefX\"").unwrap();
    assert_eq!(s.admin.listen, None);
    assert_eq!(s.admin.token.as_deref(), Some("0123456789abcdefX"));
    assert!(
        !format!("{s:?}").contains("0123456789abcdefX"),
        "Debug hides it"
    );
    let e = err("[admin]\nlisten = \"localhost\"");
    assert_eq!(e.key(), Some("admin.listen"), "{e}");
    let e = err("[admin]\ntoken = \"shortsecret\"");
    assert_eq!(e.key(), Some("admin.token"), "{e}");
    assert!(!e.to_string().contains("shortsecret"), "{e}");
    let s = with_env("", &[("SIPWAKE__ADMIN__LISTEN", "[::1]:9000")]).unwrap();
    assert_eq!(s.admin.listen, Some("[::1]:9000".parse().unwrap()));
}

#[test]
fn ipnet_parse() {
    let n = IpNet::parse("10.1.2.3/8").unwrap();
    assert_eq!(n.to_string(), "10.0.0.0/8");
    assert_eq!(IpNet::parse("192.0.2.1").unwrap().prefix(), 32);
    assert_eq!(IpNet::parse("2001:db8::1").unwrap().prefix(), 128);
    assert_eq!(
        IpNet::parse("[::1]").unwrap(),
        IpNet::parse("::1/128").unwrap()
    );
    assert_eq!(
        IpNet::parse("2001:db8::/32").unwrap().to_string(),
        "2001:db8::/32"
    );
    assert_eq!(IpNet::parse("0.0.0.0/0").unwrap().prefix(), 0);
    assert!(IpNet::parse("10.0.0.0/33").is_err());
    assert!(IpNet::parse("::/129").is_err());
    assert!(IpNet::parse("10.0.0.0/").is_err());
    assert!(IpNet::parse("10.0.0/8").is_err());
    assert!(IpNet::parse("").is_err());
}

#[test]
fn ipnet_contains() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let lo = IpNet::parse("127.0.0.0/8").unwrap();
    assert!(lo.contains(ip("127.0.0.1")));
    assert!(lo.contains(ip("127.255.255.255")));
    assert!(!lo.contains(ip("128.0.0.1")));
    assert!(
        lo.contains(ip("::ffff:127.0.0.1")),
        "IPv4-mapped matches IPv4 nets"
    );
    assert!(!lo.contains(ip("::1")));
    assert!(
        !lo.contains(ip("::127.0.0.1")),
        "IPv4-compatible is not mapped"
    );

    let all4 = IpNet::parse("0.0.0.0/0").unwrap();
    assert!(all4.contains(ip("203.0.113.9")));
    assert!(!all4.contains(ip("2001:db8::1")));

    let v6 = IpNet::parse("2001:db8::/32").unwrap();
    assert!(v6.contains(ip("2001:db8:ffff::1")));
    assert!(!v6.contains(ip("2001:db9::1")));
    assert!(!v6.contains(ip("10.0.0.1")));

    let mapped = IpNet::parse("::ffff:10.0.0.0/104").unwrap();
    assert!(mapped.contains(ip("10.9.8.7")));
    assert!(!mapped.contains(ip("11.0.0.1")));

    let host = IpNet::parse("192.0.2.1").unwrap();
    assert!(host.contains(ip("192.0.2.1")));
    assert!(!host.contains(ip("192.0.2.2")));
}

#[test]
fn upstream_uri() {
    let t = UpstreamTarget::parse("sip:PBX.example.com").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.transport),
        ("pbx.example.com", 5060, TransportKind::Udp)
    );
    assert_eq!(t.ip(), None);
    let t = UpstreamTarget::parse("SIP:127.0.0.1:5080;transport=TCP").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.transport),
        ("127.0.0.1", 5080, TransportKind::Tcp)
    );
    assert_eq!(t.ip(), Some("127.0.0.1".parse().unwrap()));
    assert_eq!(t.uri, "SIP:127.0.0.1:5080;transport=TCP");
    let t = UpstreamTarget::parse("sip:[::1]").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("::1", 5060));
    assert_eq!(t.host_port(), "[::1]:5060");
    let t = UpstreamTarget::parse("sip:asterisk_1:5060;lr").unwrap();
    assert_eq!(t.host, "asterisk_1");
    let t = UpstreamTarget::parse("sip:pbx.example.com;transport=TLS").unwrap();
    assert_eq!((t.port, t.transport), (5061, TransportKind::Tls));
    let t = UpstreamTarget::parse("sips:[2001:db8::1]").unwrap();
    assert_eq!((t.port, t.transport), (5061, TransportKind::Tls));
    let t = UpstreamTarget::parse("sips:pbx:5071;transport=tcp;lr").unwrap();
    assert_eq!((t.port, t.transport), (5071, TransportKind::Tls));
    for bad in [
        "sip:",
        "sip:[::1",
        "sip:[::1]x",
        "sip:host:abc",
        "sip:host:70000",
        "sip:a..b",
        "sip:pbx;maddr=x",
        "sips:pbx;transport=udp",
        "sip:pbx;transport=sctp",
    ] {
        assert!(UpstreamTarget::parse(bad).is_err(), "{bad}");
    }
}
#[test]
fn auth_section() {
    let s = from_toml_str("").expect("defaults");
    assert!(!s.auth.enabled);
    assert_eq!(s.auth.realm, "sipwake");
    assert_eq!(s.auth.nonce_ttl, Duration::from_secs(300));
    // one challenge: many phones answer only the first (README, Authentication)
    assert_eq!(s.auth.algorithms, vec![DigestAlgorithm::Md5]);
    // the realm defaults to the first served domain, then the advertised host
    let s = from_toml_str("[proxy]\ndomains = [\"b.example\", \"a.example\"]").unwrap();
    assert_eq!(s.auth.realm, "b.example");
    let s = from_toml_str("[sip]\nadvertised_host = \"sip.example\"").unwrap();
    assert_eq!(s.auth.realm, "sip.example");
    let s = from_toml_str(
        "[auth]\nenabled = true\nusers_file = \"users\"\nrealm = \"Example Realm\"\nnonce_ttl_secs = 30\nalgorithms = [\"md5\"]",
    )
    .unwrap();
    assert_eq!(s.auth.users_file.as_deref(), Some(Path::new("users")));
    assert_eq!(s.auth.realm, "Example Realm");
    assert_eq!(s.auth.nonce_ttl, Duration::from_secs(30));
    assert_eq!(s.auth.algorithms, vec![DigestAlgorithm::Md5]);
    let s = with_env("", &[("SIPWAKE__AUTH__ALGORITHMS", "MD5,SHA-256")]).unwrap();
    assert_eq!(
        s.auth.algorithms,
        vec![DigestAlgorithm::Md5, DigestAlgorithm::Sha256]
    );

    let cases: &[(&str, &str)] = &[
        ("[auth]\nenabled = true", "auth.users_file"),
        ("[auth]\nrealm = \"a\\\"b\"", "auth.realm"),
        ("[auth]\nrealm = \"a:b\"", "auth.realm"),
        ("[auth]\nnonce_ttl_secs = 0", "auth.nonce_ttl_secs"),
        ("[auth]\nalgorithms = []", "auth.algorithms"),
        ("[auth]\nalgorithms = [\"MD5-sess\"]", "auth.algorithms"),
        ("[auth]\nalgorithms = [\"MD5\", \"md5\"]", "auth.algorithms"),
        (
            "[upstream]\nuri = \"sip:127.0.0.1\"\n[registrar]\nmode = \"relay\"\n[auth]\nenabled = true\nusers_file = \"u\"",
            "auth.enabled",
        ),
    ];
    for (toml, key) in cases {
        let e = err(toml);
        assert_eq!(e.key(), Some(*key), "{toml:?} gave {e}");
    }
}

#[test]
fn limits_defaults_env_and_errors() {
    let s = from_toml_str("").expect("defaults");
    let l = &s.limits;
    assert_eq!(l.action, OverLimit::Reject);
    assert_eq!(
        l.register_per_source,
        RateLimit {
            rate: 200,
            burst: 1000
        }
    );
    assert_eq!(l.invite_per_source.rate, 100);
    assert_eq!(l.register_per_aor.burst, 50);
    assert_eq!(
        (l.max_connections, l.max_connections_per_source),
        (10_000, 1000)
    );
    let s = with_env(
        "",
        &[
            ("SIPWAKE__LIMITS__ACTION", "drop"),
            ("SIPWAKE__LIMITS__INVITE_PER_SOURCE_RATE", "0"),
            ("SIPWAKE__LIMITS__INVITE_PER_SOURCE_BURST", "0"),
            ("SIPWAKE__LIMITS__MAX_CONNECTIONS_PER_SOURCE", "7"),
        ],
    )
    .expect("valid");
    assert_eq!(s.limits.action, OverLimit::Drop);
    assert_eq!(s.limits.invite_per_source.rate, 0);
    assert_eq!(s.limits.max_connections_per_source, 7);
    for (toml, key) in [
        ("[limits]\naction = \"503\"", "limits.action"),
        (
            "[limits]\nregister_per_source_burst = 0",
            "limits.register_per_source_burst",
        ),
        (
            "[limits]\ninvite_per_source_rate = 2000000",
            "limits.invite_per_source_rate",
        ),
        (
            "[limits]\nregister_per_aor_burst = 0",
            "limits.register_per_aor_burst",
        ),
        ("[limits]\ntable_size = 1", "limits.table_size"),
        (
            "[limits]\nfirst_message_timeout_secs = 0",
            "limits.first_message_timeout_secs",
        ),
        ("[limits]\nmax_connections = 0", "limits.max_connections"),
        (
            "[limits]\nmax_connections = 10\nmax_connections_per_source = 11",
            "limits.max_connections_per_source",
        ),
    ] {
        let e = err(toml);
        assert_eq!(e.key(), Some(key), "{toml:?} gave {e}");
        assert!(e.to_string().starts_with(&format!("{key}: ")), "{e}");
    }
}

#[test]
fn tls_section() {
    let s = from_toml_str("").unwrap();
    assert!(s.tls.listen.is_empty() && s.tls.cert_file.is_none());
    let s = with_env(
        "[tls]\ncert_file = \"/etc/sipwake/cert.pem\"\nkey_file = \"/etc/sipwake/key.pem\"",
        &[("SIPWAKE__TLS__LISTEN", "127.0.0.1:5061,[::1]:5061")],
    )
    .expect("valid");
    assert_eq!(
        s.tls.listen,
        vec![
            "127.0.0.1:5061".parse::<SocketAddr>().unwrap(),
            "[::1]:5061".parse().unwrap()
        ]
    );
    assert_eq!(
        s.tls.cert_file,
        Some(PathBuf::from("/etc/sipwake/cert.pem"))
    );
    assert_eq!(s.tls.key_file, Some(PathBuf::from("/etc/sipwake/key.pem")));
    for (toml, key) in [
        ("[tls]\nlisten = [\"127.0.0.1:5061\"]", "tls.cert_file"),
        (
            "[tls]\nlisten = [\"127.0.0.1:5061\"]\ncert_file = \"c.pem\"",
            "tls.key_file",
        ),
        ("[tls]\nkey_file = \"k.pem\"", "tls.cert_file"),
        ("[tls]\nlisten = [\"127.0.0.1\"]", "tls.listen"),
        (
            "[tls]\nlisten = [\"127.0.0.1:5060\"]\ncert_file = \"c\"\nkey_file = \"k\"",
            "tls.listen",
        ),
        ("[tls]\nlisen = []", "tls.lisen"),
    ] {
        assert_eq!(err(toml).key(), Some(key), "{toml}");
    }
}
