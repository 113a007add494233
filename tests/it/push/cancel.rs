//! A caller's CANCEL while the call is parked: 487 with a cancel notice to the phone
//! and a tombstone, and the races between CANCEL and the waking REGISTER in each order.

use super::*;

#[test]
fn caller_cancel_while_parked_gives_487_notice_and_tombstone() {
    let hook = Webhook::start();
    let proxy = start("push-cancel", &hook, &[]);
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Param, &token, None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let push = hook.expect("call");
    let hint = hint_of(&push);
    alice.cancel(&inv);
    alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c == 200);
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);

    let notice = hook.expect("cancel");
    assert_eq!(notice["reason"], "caller_cancelled", "{notice:#}");
    assert_eq!(notice["pushHint"], hint.as_str(), "{notice:#}");
    assert_eq!(notice["token"], token.as_str(), "{notice:#}");

    let mut late = Ua::udp("bob", &proxy);
    register_token(&mut late, Style::Param, &token, None);
    late.expect_nothing("an INVITE for a cancelled call", SHORT, |m| {
        m.method() == Some("INVITE")
    });
    hook.expect_none("anything more", Duration::ZERO);
}

#[test]
fn cancel_racing_the_waking_register_cancel_first() {
    let hook = Webhook::start();
    let proxy = start("push-race-a", &hook, &[]);
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &token, None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    hook.expect("call");
    let mut woken = Ua::udp("bob", &proxy);
    // back to back: the CANCEL leaves first, the REGISTER right behind it
    alice.cancel(&inv);
    register_token(&mut woken, Style::Header, &token, None);

    alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c == 200);
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    woken.expect_nothing("an INVITE for a cancelled call", SHORT, |m| {
        m.method() == Some("INVITE")
    });
    let notice = hook.expect("cancel");
    assert_eq!(notice["reason"], "caller_cancelled", "{notice:#}");
}

#[test]
fn cancel_racing_the_waking_register_register_first_phone_ringing() {
    let hook = Webhook::start();
    let proxy = start("push-race-b1", &hook, &[]);
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

    alice.cancel(&inv);
    alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c == 200);
    let cancel = woken.expect_request("CANCEL", Some(&inv.call_id));
    assert_eq!(cancel.top_branch(), got.top_branch(), "{cancel:?}");
    // the caller's 487 waits for the phone's
    alice.expect_nothing("a final before the phone's 487", SHORT, |m| {
        m.status().is_some_and(|c| c >= 200) && m.cseq_method() == "INVITE"
    });
    woken.reply(&cancel, 200, "OK", None);
    woken.reply(&got, 487, "Request Terminated", Some(&btag));
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    woken.expect_request("ACK", Some(&inv.call_id));
    hook.expect_none("a cancel notice for a device that got the INVITE", SHORT);
}

#[test]
fn cancel_racing_the_waking_register_register_first_phone_silent() {
    let hook = Webhook::start();
    let proxy = start("push-race-b2", &hook, &[]);
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

    // no provisional from the phone: the caller gets 487 without waiting for it
    let t0 = Instant::now();
    alice.cancel(&inv);
    alice.expect_response(&inv.call_id, "CANCEL", "200 to CANCEL", |c| c == 200);
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    // generous: what matters is that it does not wait for the 10 s wake timeout
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    alice.ack_non2xx(&inv, &fin);
    woken.expect_nothing("a CANCEL before any provisional", SHORT, |m| {
        m.method() == Some("CANCEL")
    });

    // the phone rings late: now it gets the CANCEL, and the caller hears nothing
    let btag = tag();
    woken.reply(&got, 180, "Ringing", Some(&btag));
    let cancel = woken.expect_request("CANCEL", Some(&inv.call_id));
    woken.reply(&cancel, 200, "OK", None);
    woken.reply(&got, 487, "Request Terminated", Some(&btag));
    woken.expect_request("ACK", Some(&inv.call_id));
    alice.expect_nothing("anything after the 487", SHORT, |m| {
        m.cseq_method() == "INVITE" && m.status() != Some(487)
    });
}
