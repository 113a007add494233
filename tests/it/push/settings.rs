//! What the push carries and the settings that shape it: caller fields from a trusted
//! P-Asserted-Identity and Privacy, header names as settings, and 555 for an RFC 8599
//! webhook binding when no webhook is configured.

use super::*;

#[test]
fn caller_fields_from_trusted_pai_and_privacy() {
    let hook = Webhook::start();
    let proxy = start("push-caller", &hook, &[]);
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &unique("tok"), None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let video_off = SDP_VIDEO.replace("m=video 40002", "m=video 0");
    let cases: [(&str, &str, Value, &str, bool); 3] = [
        (
            "P-Asserted-Identity: \"Carol Kent\" <sip:+15551234@example.com>\r\n",
            SDP_VIDEO,
            Value::from("Carol Kent"),
            "+15551234",
            true,
        ),
        (
            "P-Asserted-Identity: <sip:+15551234@example.com>\r\nPrivacy: id\r\n",
            &video_off,
            Value::from("Anonymous"),
            "anonymous",
            false,
        ),
        ("", &video_off, Value::from("Alice"), "alice", false),
    ];
    for (extra, sdp, name, number, video) in cases {
        let inv = invite_as(&mut alice, "bob", "Alice", extra, sdp);
        let push = hook.expect("call");
        assert_eq!(push["callerName"], name, "{extra}: {push:#}");
        assert_eq!(push["callerNumber"], number, "{extra}: {push:#}");
        assert_eq!(push["withVideo"], video, "{extra}: {push:#}");
        alice.cancel(&inv);
        let fin = alice.expect_final(&inv.call_id, "INVITE");
        assert_eq!(fin.status(), Some(487), "{fin:?}");
        alice.ack_non2xx(&inv, &fin);
        let notice = hook.expect("cancel");
        assert_eq!(notice["reason"], "caller_cancelled", "{notice:#}");
    }
}

#[test]
fn header_names_are_settings() {
    let hook = Webhook::start();
    let proxy = start(
        "push-names",
        &hook,
        &[
            ("PUSH__HINT_HEADER", "X-Call-Hint"),
            ("PUSH__TOKEN_HEADER", "X-Push-Token"),
        ],
    );
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    let contact = format!("<{}>", asleep.contact_uri());
    let r = register_raw(
        &mut asleep,
        &contact,
        &format!("X-Push-Token: {token}\r\n"),
        600,
    );
    assert_eq!(r.status(), Some(200), "{r:?}");
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("bob", "X-Call-Hint: forged\r\n");
    alice.expect_response(&inv.call_id, "INVITE", "100 Trying", |c| c == 100);
    let push = hook.expect("call");
    assert_eq!(push["token"], token.as_str(), "{push:#}");
    let hint = hint_of(&push);
    let mut woken = Ua::udp("bob", &proxy);
    let contact = format!("<{}>", woken.contact_uri());
    register_raw(
        &mut woken,
        &contact,
        &format!("X-Push-Token: {token}\r\n"),
        600,
    );
    let got = woken.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(
        got.header_lines("x-call-hint"),
        vec![hint.as_str()],
        "{got:?}"
    );
    assert!(got.header("x-push-token").is_none(), "{got:?}");
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got, &tag());
}

#[test]
fn rfc8599_webhook_without_a_webhook_configured_gets_555() {
    let proxy = ProxyBuilder::new("push-none").start();
    let mut ua = Ua::udp("bob", &proxy);
    let contact = format!(
        "<{};pn-provider=webhook;pn-prid={}>",
        ua.contact_uri(),
        unique("tok")
    );
    let r = register_raw(&mut ua, &contact, "", 600);
    assert_eq!(r.status(), Some(555), "{r:?}");
    // a bare token is kept (it becomes usable once its provider is configured)
    let token = unique("tok");
    let contact = format!("<{}>", ua.contact_uri());
    let r = register_raw(&mut ua, &contact, &format!("X-Token: {token}\r\n"), 600);
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert!(!r.raw.contains(&token), "{r:?}");
}
