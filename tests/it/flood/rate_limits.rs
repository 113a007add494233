//! Rate limits under a burst: 503 with Retry-After while trusted sources are spared,
//! the per-AOR REGISTER limit counting every source, `drop` mode dropping what is over,
//! and the upstream never limited.

use super::*;

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
