//! Refresh pushes, end to end with short lifetimes: a sleeping push binding close to
//! its end (SIP expiry plus `push.binding_ttl_secs`) gets exactly one `event: refresh`
//! push; the app that answers with a REGISTER keeps its binding (a call still pushes
//! it), the one that does not is gone at its end (a call gets `480`, no push).

use std::time::{Duration, Instant};

use crate::common::mock_http::MockHttp;
use crate::common::push_phone::*;
use crate::common::*;
use serde_json::Value;

#[test]
fn a_binding_near_its_end_gets_one_refresh_push_and_the_answering_app_keeps_it() {
    let hook = MockHttp::start();
    hook.route("/hook", 200, "{}");
    let proxy = ProxyBuilder::new("refresh")
        .env("PUSH__WEBHOOK__URL", &format!("{}/hook", hook.base_url()))
        .env("PUSH__DEFAULT_PROVIDER", "webhook")
        .env("PUSH__FLOW_TIMEOUT_SECS", "1")
        .env("PUSH__WAKE_TIMEOUT_MS", "1000")
        .env("PUSH__BINDING_TTL_SECS", "2")
        .env("REGISTRAR__MIN_EXPIRES", "1")
        .env("PUSH__REFRESH__BEFORE_SECS", "3")
        .start();
    let (ta, tb) = (unique("answers"), unique("silent"));
    let (ha, hb) = (format!("X-Token: {ta}\r\n"), format!("X-Token: {tb}\r\n"));
    // each binding ends about 4 s from now: 2 s registered + 2 s kept for push
    let mut a = Ua::udp("ann", &proxy);
    register_ok(&mut a, "", &ha, 2, &ta);
    let mut b = Ua::udp("ben", &proxy);
    register_ok(&mut b, "", &hb, 2, &tb);
    let registered = Instant::now();

    let mut refreshes: Vec<Value> = Vec::new();
    let mut answered = false;
    // watch until both original bindings have surely run out
    while registered.elapsed() < Duration::from_millis(5500) {
        let Some(seen) = hook.next(Duration::from_millis(100)) else {
            continue;
        };
        let doc = seen.json();
        assert_eq!(doc["event"], "refresh", "only refresh pushes here: {doc:#}");
        assert_eq!(doc["priority"], "normal", "{doc:#}");
        refreshes.push(doc.clone());
        if doc["token"] == ta.as_str() && !answered {
            // the app wakes in the background and registers again, for longer
            let mut woken = Ua::udp("ann", &proxy);
            register_ok(&mut woken, "", &ha, 30, &ta);
            answered = true;
        }
    }
    let count = |t: &str| refreshes.iter().filter(|d| d["token"] == t).count();
    assert_eq!(
        count(&ta),
        1,
        "one refresh for ann's registration: {refreshes:#?}"
    );
    assert_eq!(
        count(&tb),
        1,
        "one refresh for ben, none after: {refreshes:#?}"
    );
    let ben = refreshes
        .iter()
        .find(|d| d["token"] == tb.as_str())
        .unwrap();
    assert_eq!(ben["aor"], format!("ben@{DOMAIN}"));
    assert_eq!(ben["provider"], "webhook");

    // ben never answered: his binding is gone, a call pushes nobody
    let mut caller = Ua::udp("carol", &proxy);
    let inv = invite_from(&mut caller, "Carol", "ben");
    let r = caller.expect_final(&inv.call_id, "INVITE");
    assert_eq!(r.status(), Some(480), "{r:?}");
    caller.ack_non2xx(&inv, &r);
    if let Some(s) = hook.next(Duration::from_millis(300)) {
        panic!("no push for a binding that ran out, got {}", s.text());
    }

    // ann answered: a call still pushes her
    let inv = invite_from(&mut caller, "Carol", "ann");
    let seen = hook.next(WAIT).expect("the call push for ann");
    let doc = seen.json();
    assert_eq!(
        (doc["event"].as_str(), doc["token"].as_str()),
        (Some("call"), Some(ta.as_str()))
    );
    caller.cancel(&inv);
    let r = caller.expect_final(&inv.call_id, "INVITE");
    caller.ack_non2xx(&inv, &r);
}
