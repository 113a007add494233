//! What APNs answers teaches sipwake about a token: a 410 newer than the REGISTER
//! removes the token, an older one keeps it, and the environment learnt from a
//! BadDeviceToken retry survives the app's next REGISTER.

use super::*;

/// A phone registered for 1 s with an RFC 8599 token, asleep and SIP-expired (kept
/// only for push, so once its token is gone nobody is left to call).
fn gone_setup(name: &str, user: &str) -> (Proxy, Apple, String, u64) {
    let (proxy, apple) = start(name, &[("REGISTRAR__MIN_EXPIRES", "1")]);
    let token = hex64();
    let mut phone = Ua::udp(user, &proxy);
    register_ok(&mut phone, &rfc8599(&token), "", 1, &token);
    let registered = now_ms();
    // sipwake rounds a binding's expiry up to the next whole second: past it for sure
    std::thread::sleep(Duration::from_millis(2100));
    (proxy, apple, token, registered)
}

#[test]
fn apns_410_newer_than_the_register_removes_the_token() {
    let (proxy, apple, token, _) = gone_setup("apns-410-new", "ivan");
    let mut alice = Ua::udp("alice", &proxy);
    apple.prod.answer_next(
        410,
        &format!(r#"{{"reason":"Unregistered","timestamp":{}}}"#, now_ms()),
    );
    let t0 = Instant::now();
    let inv = call_from(&mut alice, "Alice Liddell", "ivan");
    let seen = apple.prod.expect_post("the push answered 410", WAIT);
    assert_eq!(seen.path, format!("/3/device/{token}"));
    let took = expect_final_code(&mut alice, &inv, 480, t0);
    assert!(
        took < Duration::from_millis(WAKE_MS),
        "every push failed and nothing else rings: 480 at once, got it after {took:?}"
    );

    // the token is gone: no push, and nobody left to call
    let t0 = Instant::now();
    let inv = invite_from(&mut alice, "Alice Liddell", "ivan");
    expect_final_code(&mut alice, &inv, 480, t0);
    apple
        .prod
        .expect_no_post("a push to a token APNs reported dead", SHORT);
    apple.sandbox.expect_no_post("anything", Duration::ZERO);
}

#[test]
fn apns_410_older_than_the_register_keeps_the_token() {
    let (proxy, apple, token, registered) = gone_setup("apns-410-old", "judy");
    let mut alice = Ua::udp("alice", &proxy);
    apple.prod.answer_next(
        410,
        &format!(
            r#"{{"reason":"Unregistered","timestamp":{}}}"#,
            registered - 60_000
        ),
    );
    let t0 = Instant::now();
    let inv = call_from(&mut alice, "Alice Liddell", "judy");
    apple.prod.expect_post("the push answered 410", WAIT);
    let took = expect_final_code(&mut alice, &inv, 480, t0);
    assert!(took < Duration::from_millis(WAKE_MS), "{took:?}");

    // the phone registered after APNs saw the token die: it is kept and pushed again
    let sent = now_ms();
    let inv = call_from(&mut alice, "Alice Liddell", "judy");
    let seen = apple
        .prod
        .expect_post("a push again: the 410 predates the REGISTER", WAIT);
    check_voip_push(&seen, &apple, &token, &format!("{APP}.voip"), sent, WAKE_MS);
    alice.cancel(&inv);
    expect_final_code(&mut alice, &inv, 487, Instant::now());
}

#[test]
fn environment_learnt_by_a_bad_device_token_retry_survives_the_apps_next_register() {
    // a development-signed app sending a bare token: sipwake guesses production
    let (proxy, apple) = start("apns-env-learnt", &[]);
    let token = hex64();
    let header = format!("X-Token: {token}\r\n");
    let mut asleep = Ua::udp("kate", &proxy);
    register_ok(&mut asleep, "", &header, 600, &token);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    apple
        .prod
        .answer_next(400, r#"{"reason":"BadDeviceToken"}"#);
    let sent = now_ms();
    let inv = call_from(&mut alice, "Alice Liddell", "kate");
    let refused = apple
        .prod
        .expect_post("the push on the guessed production", WAIT);
    assert_eq!(refused.path, format!("/3/device/{token}"));
    let seen = apple
        .sandbox
        .expect_post("the retry on the sandbox after BadDeviceToken", WAIT);
    let body = check_voip_push(
        &seen,
        &apple,
        &token,
        &format!("{BUNDLE}.voip"),
        sent,
        WAKE_MS,
    );

    // the woken app registers again with the same bare token and takes the call
    let mut woken = Ua::udp("kate", &proxy);
    register_ok(&mut woken, "", &header, 600, &token);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint(&body));
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got);
    // and once more later, as apps do on every launch
    register_ok(&mut woken, "", &header, 600, &token);
    fall_asleep();

    // the next call goes straight to the sandbox: the re-REGISTER kept what was learnt
    let sent = now_ms();
    let inv = call_from(&mut alice, "Alice Liddell", "kate");
    let seen = apple
        .sandbox
        .expect_post("the next call's push, on the learnt sandbox", WAIT);
    let body = check_voip_push(
        &seen,
        &apple,
        &token,
        &format!("{BUNDLE}.voip"),
        sent,
        WAKE_MS,
    );
    apple.prod.expect_no_post(
        "a push on production: the learnt environment was forgotten",
        SHORT,
    );
    let mut woken = Ua::udp("kate", &proxy);
    register_ok(&mut woken, "", &header, 600, &token);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint(&body));
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got);
}
