//! Several devices of one AOR: both pushed and the first answer wins; the push policy
//! (`always`, `when_unreachable`) against reachable branches; a decline or busy from a
//! woken device; a ringing phone outliving the wake window; one REGISTER waking every
//! parked call; a relaunch with the same instance replacing its branch.

use super::*;

#[test]
fn two_devices_pushed_both_woken_first_answer_wins() {
    let hook = Webhook::start();
    let proxy = start("push-two", &hook, &[]);
    // A and B wake; C never does
    let (ta, tb, tc) = (unique("toka"), unique("tokb"), unique("tokc"));
    for (t, inst) in [(&ta, "dev-a"), (&tb, "dev-b"), (&tc, "dev-c")] {
        let mut ua = Ua::udp("bob", &proxy);
        register_token(&mut ua, Style::Header, t, Some(inst));
    }
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let pushes = hook.expect_n("call", 3);
    let tokens: Vec<&str> = pushes
        .iter()
        .map(|p| p["token"].as_str().unwrap())
        .collect();
    let mut want = vec![ta.as_str(), tb.as_str(), tc.as_str()];
    want.sort();
    assert_eq!(tokens, want, "one push per device");
    let hint = hint_of(&pushes[0]);
    for p in &pushes {
        assert_eq!(
            p["pushHint"],
            hint.as_str(),
            "same hint for every device: {p:#}"
        );
        assert_eq!(p["callUUID"], pushes[0]["callUUID"], "{p:#}");
        assert_eq!(p["callId"], inv.call_id.as_str(), "{p:#}");
    }

    let mut a = Ua::udp("bob", &proxy);
    register_token(&mut a, Style::Header, &ta, None);
    let got_a = expect_invite_with_hint(&mut a, &inv.call_id, &hint);
    let mut b = Ua::tcp("bob", &proxy);
    register_token(&mut b, Style::Header, &tb, None);
    let got_b = expect_invite_with_hint(&mut b, &inv.call_id, &hint);
    let (atag, btag) = (tag(), tag());
    a.reply(&got_a, 180, "Ringing", Some(&atag));
    b.reply(&got_b, 180, "Ringing", Some(&btag));
    for _ in 0..2 {
        alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    }

    a.reply(&got_a, 200, "OK", Some(&atag));
    let ok = alice.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    assert_eq!(ok.to_tag().as_deref(), Some(atag.as_str()), "{ok:?}");
    let cancel = b.expect_request("CANCEL", Some(&inv.call_id));
    assert_eq!(
        cancel.header("reason"),
        Some("SIP;cause=200;text=\"Call completed elsewhere\""),
        "{cancel:?}"
    );
    b.reply(&cancel, 200, "OK", None);
    b.reply(&got_b, 487, "Request Terminated", Some(&btag));
    b.expect_request("ACK", Some(&inv.call_id));

    let mut d = Dialog::uac(&inv, &ok);
    alice.ack_2xx(&mut d, inv.cseq);
    a.expect_request("ACK", Some(&inv.call_id));
    alice.expect_nothing("a second 200", SHORT, |m| {
        m.status().is_some_and(|c| c >= 200)
            && m.cseq_method() == "INVITE"
            && m.to_tag() != ok.to_tag()
    });
    assert!(
        a.stash.iter().all(|m| m.method() != Some("CANCEL")),
        "the winner is not cancelled"
    );

    // C never got the INVITE: it is told the call was answered elsewhere
    let notice = hook.expect("cancel");
    assert_eq!(notice["token"], tc.as_str(), "{notice:#}");
    assert_eq!(notice["reason"], "answered_elsewhere", "{notice:#}");
    assert_eq!(notice["pushHint"], hint.as_str(), "{notice:#}");
    hook.expect_none("notices for devices that got the INVITE", SHORT);
}

// ---------------------------------------------------------------------------------
// Policy and reachable bindings
// ---------------------------------------------------------------------------------

#[test]
fn policy_always_reachable_bindings_get_the_invite_at_once_with_the_hint() {
    let hook = Webhook::start();
    let proxy = start(
        "push-always",
        &hook,
        &[
            ("PUSH__FLOW_TIMEOUT_SECS", "120"),
            ("PUSH__POLICY", "always"),
        ],
    );
    // fresh UDP registration and an open TCP connection: both reachable
    for tcp in [false, true] {
        let user = if tcp { "tcpbob" } else { "udpbob" };
        let token = unique("tok");
        let mut phone = if tcp {
            Ua::tcp(user, &proxy)
        } else {
            Ua::udp(user, &proxy)
        };
        register_token(&mut phone, Style::Header, &token, None);
        let mut alice = Ua::udp("alice", &proxy);
        let inv = call(&mut alice, user);
        let got = phone.expect_request("INVITE", Some(&inv.call_id));
        let push = hook.expect("call");
        assert_eq!(push["token"], token.as_str(), "{push:#}");
        let hint = hint_of(&push);
        assert_eq!(
            got.header_lines("x-pushhint"),
            vec![hint.as_str()],
            "same X-PushHint as the push: {got:?}"
        );
        answer_and_hang_up(&mut alice, &inv, &mut phone, &got, &tag());
        hook.expect_none("a cancel notice", SHORT);
    }
}

#[test]
fn policy_always_woken_device_replaces_its_stale_branch() {
    let hook = Webhook::start();
    let proxy = start("push-stale", &hook, &[("PUSH__FLOW_TIMEOUT_SECS", "120")]);
    let token = unique("tok");
    let mut dead = Ua::udp("bob", &proxy);
    register_token(&mut dead, Style::Header, &token, Some("bob-dev"));

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    // the old flow counts as reachable and gets the INVITE, but nobody is there
    let stale = dead.expect_request("INVITE", Some(&inv.call_id));
    let hint = hint_of(&hook.expect("call"));
    assert_eq!(stale.header_lines("x-pushhint"), vec![hint.as_str()]);

    let mut woken = Ua::udp("bob", &proxy);
    register_token(&mut woken, Style::Header, &token, None);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    assert_ne!(got.top_branch(), stale.top_branch());
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got, &tag());
    dead.expect_nothing("a CANCEL for a branch that never answered", SHORT, |m| {
        m.method() == Some("CANCEL")
    });
}

#[test]
fn policy_when_unreachable_does_not_push_a_reachable_phone() {
    let hook = Webhook::start();
    let proxy = start(
        "push-when-unreachable",
        &hook,
        &[
            ("PUSH__FLOW_TIMEOUT_SECS", "120"),
            ("PUSH__POLICY", "when_unreachable"),
        ],
    );
    let mut phone = Ua::udp("bob", &proxy);
    register_token(&mut phone, Style::Header, &unique("tok"), None);
    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let got = phone.expect_request("INVITE", Some(&inv.call_id));
    assert!(
        got.header("x-pushhint").is_none(),
        "no push, no hint: {got:?}"
    );
    phone.reply(&got, 486, "Busy Here", Some(&tag()));
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(486), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    hook.expect_none("a push for a reachable phone", SHORT);
}

#[test]
fn decline_from_a_woken_device_ends_the_call_at_once() {
    let hook = Webhook::start();
    let proxy = start("push-decline", &hook, &[]);
    // A wakes and declines; C never wakes
    let (ta, tc) = (unique("toka"), unique("tokc"));
    for (t, inst) in [(&ta, "dev-a"), (&tc, "dev-c")] {
        let mut ua = Ua::udp("bob", &proxy);
        register_token(&mut ua, Style::Header, t, Some(inst));
    }
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let pushes = hook.expect_n("call", 2);
    let hint = hint_of(&pushes[0]);
    let mut a = Ua::udp("bob", &proxy);
    register_token(&mut a, Style::Header, &ta, None);
    let got = expect_invite_with_hint(&mut a, &inv.call_id, &hint);
    a.reply(&got, 603, "Decline", Some(&tag()));
    a.expect_request("ACK", Some(&inv.call_id));
    // RFC 3261 §16.7: a 6xx ends the search; the 10 s wake window must not hold it
    let fin = alice.expect("the 603", Duration::from_secs(8), |m| {
        m.status().is_some_and(|c| c >= 200) && m.call_id() == inv.call_id
    });
    assert_eq!(fin.status(), Some(603), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    let notice = hook.expect("cancel");
    assert_eq!(notice["token"], tc.as_str(), "{notice:#}");
    assert_eq!(notice["reason"], "declined_elsewhere", "{notice:#}");
}

#[test]
fn busy_from_the_only_pushed_device_is_not_held_for_the_wake_window() {
    let hook = Webhook::start();
    let proxy = start("push-busy", &hook, &[]);
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &token, None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let hint = hint_of(&hook.expect("call"));
    let mut woken = Ua::udp("bob", &proxy);
    register_token(&mut woken, Style::Header, &token, None);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    woken.reply(&got, 486, "Busy Here", Some(&tag()));
    woken.expect_request("ACK", Some(&inv.call_id));
    // every pushed device got the INVITE and answered: nothing is left to wait for
    let fin = alice.expect("the 486", Duration::from_secs(8), |m| {
        m.status().is_some_and(|c| c >= 200) && m.call_id() == inv.call_id
    });
    assert_eq!(fin.status(), Some(486), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    hook.expect_none("a cancel notice for a device that got the INVITE", SHORT);
}

#[test]
fn a_ringing_phone_outlives_the_wake_timeout() {
    let hook = Webhook::start();
    let proxy = start("push-ringing", &hook, &[("PUSH__WAKE_TIMEOUT_MS", "1000")]);
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &token, None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let hint = hint_of(&hook.expect("call"));
    let mut woken = Ua::udp("bob", &proxy);
    register_token(&mut woken, Style::Header, &token, None);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    let btag = tag();
    woken.reply(&got, 180, "Ringing", Some(&btag));
    alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    // past the wake timeout: the ringing phone keeps the call
    alice.expect_nothing(
        "a final while the phone rings",
        Duration::from_millis(1300),
        |m| m.status().is_some_and(|c| c >= 200),
    );
    woken.expect_nothing("a CANCEL while ringing", Duration::ZERO, |m| {
        m.method() == Some("CANCEL")
    });
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got, &btag);
    hook.expect_none("a cancel notice", SHORT);
}

#[test]
fn one_register_wakes_every_call_parked_for_the_aor() {
    let hook = Webhook::start();
    let proxy = start("push-two-calls", &hook, &[]);
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &token, None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let mut carol = Ua::udp("carol", &proxy);
    let inv1 = call(&mut alice, "bob");
    let push1 = hook.expect("call");
    let inv2 = call(&mut carol, "bob");
    let push2 = hook.expect("call");
    assert_eq!(push1["callId"], inv1.call_id.as_str());
    assert_eq!(push2["callId"], inv2.call_id.as_str());
    let (h1, h2) = (hint_of(&push1), hint_of(&push2));
    assert_ne!(h1, h2, "a fresh hint per call");
    assert_ne!(push1["callUUID"], push2["callUUID"]);

    let mut woken = Ua::udp("bob", &proxy);
    register_token(&mut woken, Style::Header, &token, None);
    let got1 = expect_invite_with_hint(&mut woken, &inv1.call_id, &h1);
    let got2 = expect_invite_with_hint(&mut woken, &inv2.call_id, &h2);
    answer_and_hang_up(&mut alice, &inv1, &mut woken, &got1, &tag());
    answer_and_hang_up(&mut carol, &inv2, &mut woken, &got2, &tag());
    hook.expect_none("a cancel notice", SHORT);
}

#[test]
fn relaunch_with_instance_wakes_and_a_newer_flow_replaces_the_branch() {
    let hook = Webhook::start();
    let proxy = start("push-reflow", &hook, &[]);
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Rfc8599, &token, Some("bob-inst"));
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let hint = hint_of(&hook.expect("call"));
    // this time the app keeps its +sip.instance: its binding is replaced
    let mut first = Ua::udp("bob", &proxy);
    register_token(&mut first, Style::Rfc8599, &token, Some("bob-inst"));
    let got1 = expect_invite_with_hint(&mut first, &inv.call_id, &hint);
    // before answering, the app moves to another socket: one branch per device
    let mut second = Ua::udp("bob", &proxy);
    register_token(&mut second, Style::Rfc8599, &token, Some("bob-inst"));
    let got2 = expect_invite_with_hint(&mut second, &inv.call_id, &hint);
    assert_ne!(got1.top_branch(), got2.top_branch());
    answer_and_hang_up(&mut alice, &inv, &mut second, &got2, &tag());
    // the abandoned branch never sent a provisional: no CANCEL, and no more INVITEs
    let before = first.count_received("INVITE", &inv.call_id);
    first.expect_nothing("a CANCEL on the abandoned flow", SHORT, |m| {
        m.method() == Some("CANCEL")
    });
    assert_eq!(
        first.count_received("INVITE", &inv.call_id),
        before,
        "retransmissions on the abandoned branch must stop"
    );
    hook.expect_none("a cancel notice", Duration::ZERO);
}

#[test]
fn no_new_branch_after_a_decline() {
    let hook = Webhook::start();
    let proxy = start("push-decline-late", &hook, &[]);
    let (ta, tc) = (unique("toka"), unique("tokc"));
    for (t, inst) in [(&ta, "dev-a"), (&tc, "dev-c")] {
        let mut ua = Ua::udp("bob", &proxy);
        register_token(&mut ua, Style::Header, t, Some(inst));
    }
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let pushes = hook.expect_n("call", 2);
    let hint = hint_of(&pushes[0]);
    let mut a = Ua::udp("bob", &proxy);
    register_token(&mut a, Style::Header, &ta, None);
    let got = expect_invite_with_hint(&mut a, &inv.call_id, &hint);
    a.reply(&got, 603, "Decline", Some(&tag()));
    a.expect_request("ACK", Some(&inv.call_id));
    thread::sleep(Duration::from_millis(200));
    // RFC 3261 §16.7 step 5: after a 6xx the proxy MUST NOT create new branches
    let mut c = Ua::udp("bob", &proxy);
    register_token(&mut c, Style::Header, &tc, None);
    c.expect_nothing("an INVITE after another device declined", SHORT, |m| {
        m.method() == Some("INVITE")
    });
    alice.cancel(&inv);
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(603), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
}
