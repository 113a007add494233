//! Tests of the provider documents: the APNs, webhook (and webhook as a gateway) and
//! FCM shapes of calls, cancels, message notices and refresh pushes, templates, and
//! what is cut to meet APNs' size limit. [`call`] is the call other push tests use too.

use super::*;
use crate::push::Provider;

pub(crate) fn call() -> CallPush {
    CallPush {
        aor: "alice@example.com".into(),
        call_id: "abc123@pbx".into(),
        push_hint: "hint-1".into(),
        caller_id: "sip:bob@example.com".into(),
        caller_name: Some("Bob".into()),
        caller_number: "bob".into(),
        with_video: true,
        call_uuid: "6ba7b810-9dad-11d1-80b4-00c04fd430c8".into(),
        time_left: Duration::from_secs(10),
    }
}

#[test]
fn apns_call_shape() {
    let v: Value = serde_json::from_str(&apns_call(&call())).unwrap();
    assert_eq!(
        v,
        json!({
            "aps": {
                "alert": "Incoming call",
                "callerId": "sip:bob@example.com",
                "callerName": "Bob",
                "callerNumber": "bob",
                "pushHint": "hint-1",
                "withVideo": true,
            },
            "callUUID": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            "handle": "bob",
        })
    );
}

#[test]
fn caller_name_is_never_null() {
    let mut c = call();
    c.caller_name = None;
    let v: Value = serde_json::from_str(&apns_call(&c)).unwrap();
    assert_eq!(v["aps"]["callerName"], "bob");
    let t = json!({"n": "{{callerName}}"});
    assert_eq!(fill_template(&t, &c)["n"], "bob");
}

#[test]
fn template_fills_typed_and_embedded_fields() {
    let t: Value = serde_json::from_str(
        r#"{"aps": {"alert": {"title": "Call from {{callerName}}"}, "hint": "{{pushHint}}", "video": "{{withVideo}}"}, "id": "{{callUUID}}", "x": "{{unknown}}", "n": 3}"#,
    )
    .unwrap();
    let c = call();
    let v: Value = serde_json::from_str(&apns_call_templated(&t, &c)).unwrap();
    assert_eq!(v["aps"]["hint"], Value::from(c.push_hint.as_str()));
    assert_eq!(v["aps"]["video"], Value::Bool(c.with_video));
    assert_eq!(v["id"], Value::from(c.call_uuid.as_str()));
    assert_eq!(
        v["aps"]["alert"]["title"],
        Value::from(format!(
            "Call from {}",
            c.caller_name.clone().unwrap_or_default()
        ))
    );
    assert_eq!(v["x"], Value::from("{{unknown}}"));
    assert_eq!(v["n"], Value::from(3));
}

#[test]
fn apns_call_is_trimmed_name_first() {
    let mut c = call();
    c.caller_name = Some("N".repeat(5000));
    let body = apns_call(&c);
    assert!(body.len() <= APNS_VOIP_MAX, "{}", body.len());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["aps"]["callerName"], "bob",
        "the number stands in for the name"
    );
    assert_eq!(v["aps"]["callerId"], "sip:bob@example.com", "kept whole");
    assert_eq!(v["aps"]["pushHint"], "hint-1");

    // Just under the limit with the name: kept.
    let mut c = call();
    let base = apns_call(&c).len();
    c.caller_name = Some("é".repeat((APNS_VOIP_MAX - base) / 2 + 1));
    let body = apns_call(&c);
    assert!(body.len() <= APNS_VOIP_MAX);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["aps"]["callerName"],
        Value::from(c.caller_name.as_deref())
    );

    // Huge caller id and number: cut on a character boundary.
    let mut c = call();
    c.caller_id = "ü".repeat(4000);
    c.caller_number = "7".repeat(4000);
    let body = apns_call(&c);
    assert!(body.len() <= APNS_VOIP_MAX, "{}", body.len());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["aps"]["pushHint"], "hint-1");
    assert_eq!(v["callUUID"], c.call_uuid);
    assert!(v["aps"]["callerId"].as_str().unwrap().len() <= TRIMMED_FIELD);
}

#[test]
fn apns_cancel_shape() {
    let v: Value =
        serde_json::from_str(&apns_cancel(&call(), CancelReason::CallerCancelled)).unwrap();
    assert_eq!(v["aps"]["alert"]["title"], "Missed call");
    assert_eq!(v["aps"]["alert"]["body"], "Bob");
    assert_eq!(v["event"], "cancel");
    assert_eq!(v["reason"], "caller_cancelled");
    assert_eq!(v["pushHint"], "hint-1");
    let mut c = call();
    c.caller_name = Some("x".repeat(10_000));
    let body = apns_cancel(&c, CancelReason::AnsweredElsewhere);
    assert!(body.len() <= APNS_ALERT_MAX);
    assert!(body.contains("answered_elsewhere"));
}

#[test]
fn webhook_shape() {
    let info = crate::push::tests::info(Provider::Webhook);
    let v = webhook(&info, &call(), None).unwrap();
    assert_eq!(
        v,
        json!({
            "event": "call",
            "reason": null,
            "aor": "alice@example.com",
            "token": info.token,
            "tokenKind": null,
            "provider": "webhook",
            "environment": null,
            "environmentGuessed": false,
            "topic": null,
            "bundleId": null,
            "teamId": null,
            "pnParam": null,
            "pushType": null,
            "priority": "high",
            "ttlSecs": 10,
            "pushHint": "hint-1",
            "callId": "abc123@pbx",
            "callerId": "sip:bob@example.com",
            "callerName": "Bob",
            "callerNumber": "bob",
            "withVideo": true,
            "callUUID": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        })
    );
    let v = webhook(&info, &call(), Some(CancelReason::Timeout)).unwrap();
    assert_eq!(
        (v["event"].as_str(), v["reason"].as_str()),
        (Some("cancel"), Some("timeout"))
    );
    assert_eq!(v["ttlSecs"], 60);
}

#[test]
fn webhook_as_gateway_for_apns() {
    let mut info = crate::push::tests::info(Provider::Apns);
    info.alert_token = Some("ab".repeat(32));
    info.sandbox = true;
    info.team_id = Some("TEAM012345".into());
    info.pn_param = Some("TEAM012345.com.example.phone.voip&remote".into());
    let v = webhook(&info, &call(), None).unwrap();
    assert_eq!(v["provider"], "apns");
    assert_eq!(v["token"], info.token);
    assert_eq!(v["tokenKind"], "voip");
    assert_eq!(v["pushType"], "voip");
    assert_eq!(v["environment"], "sandbox");
    assert_eq!(v["topic"], "com.example.phone.voip");
    assert_eq!(v["bundleId"], "com.example.phone");
    assert_eq!(v["teamId"], "TEAM012345");
    assert_eq!(v["pnParam"], "TEAM012345.com.example.phone.voip&remote");

    // a notice goes to the regular token as an alert, never to the VoIP token
    let v = webhook(&info, &call(), Some(CancelReason::CallerCancelled)).unwrap();
    assert_eq!(v["token"], "ab".repeat(32));
    assert_eq!(v["tokenKind"], "alert");
    assert_eq!(v["pushType"], "alert");
    assert_eq!(v["topic"], "com.example.phone");
    info.alert_token = None;
    assert_eq!(webhook(&info, &call(), Some(CancelReason::Timeout)), None);

    let f = crate::push::tests::info(Provider::Fcm);
    let v = webhook(&f, &call(), None).unwrap();
    assert_eq!(
        (v["pushType"].as_str(), v["environment"].as_str()),
        (Some("data"), None)
    );
}

fn notice() -> MessageNotice {
    MessageNotice {
        aor: "alice@example.com".into(),
        message_id: "m1".into(),
        from_uri: "sip:bob@example.com".into(),
        from_name: None,
        from_number: "bob".into(),
        text: Some("hi there".into()),
        content_type: Some("text/plain".into()),
        ttl: Duration::from_secs(3600),
    }
}

#[test]
fn message_notices() {
    let n = notice();
    let v: Value = serde_json::from_str(&apns_message(&n)).unwrap();
    assert_eq!(
        v["aps"]["alert"]["title"], "bob",
        "the number without a name"
    );
    assert_eq!(v["aps"]["alert"]["body"], "hi there");
    assert_eq!(v["event"], "message");

    let f = fcm_message("tok", &n);
    let data = f["message"]["data"].as_object().unwrap();
    assert!(data.values().all(Value::is_string));
    assert_eq!(data["event"], "message");
    assert_eq!(data["text"], "hi there");
    assert!(!data.contains_key("fromName"));
    assert_eq!(f["message"]["android"]["ttl"], "3600s");

    let mut info = crate::push::tests::info(Provider::Apns);
    assert_eq!(
        webhook_message(&info, &n),
        None,
        "APNs needs the regular token"
    );
    info.alert_token = Some("cd".repeat(32));
    let w = webhook_message(&info, &n).unwrap();
    assert_eq!(w["event"], "message");
    assert_eq!(w["token"], "cd".repeat(32));
    assert_eq!(
        (w["tokenKind"].as_str(), w["pushType"].as_str()),
        (Some("alert"), Some("alert"))
    );
    assert_eq!(w["text"], "hi there");
    assert_eq!(w["fromName"], Value::Null);
    assert_eq!(w["ttlSecs"], 3600);

    let mut long = notice();
    long.text = Some("x".repeat(10_000));
    assert!(apns_message(&long).len() <= APNS_ALERT_MAX);
}

#[test]
fn refresh_pushes_are_never_voip_and_not_urgent() {
    let v: Value = serde_json::from_str(&apns_refresh("alice@example.com")).unwrap();
    assert_eq!(v["aps"], json!({"content-available": 1}));
    assert_eq!(v["event"], "refresh");

    let f = fcm_refresh("tok", "alice@example.com", Duration::from_secs(600));
    assert_eq!(
        f["message"]["android"],
        json!({"priority": "NORMAL", "ttl": "600s"})
    );
    assert_eq!(f["message"]["data"]["event"], "refresh");

    let mut info = crate::push::tests::info(Provider::Apns);
    let ttl = Duration::from_secs(600);
    assert_eq!(
        webhook_refresh(&info, "a@b", ttl),
        None,
        "needs the regular token"
    );
    info.alert_token = Some("ef".repeat(32));
    let w = webhook_refresh(&info, "a@b", ttl).unwrap();
    assert_eq!(w["event"], "refresh");
    assert_eq!(w["token"], "ef".repeat(32));
    assert_eq!(w["pushType"], "background");
    assert_eq!(w["priority"], "normal");
    assert_eq!(w["topic"], "com.example.phone", "no .voip");
}

#[test]
fn fcm_shape() {
    let mut c = call();
    c.caller_name = None;
    let v = fcm("tok", &c, None, Duration::from_millis(9500));
    let m = &v["message"];
    assert_eq!(m["token"], "tok");
    assert_eq!(m["android"], json!({"priority": "HIGH", "ttl": "9s"}));
    assert!(m.get("notification").is_none(), "data-only");
    let data = m["data"].as_object().unwrap();
    assert!(
        data.values().all(Value::is_string),
        "FCM data values are strings"
    );
    assert_eq!(data["event"], "call");
    assert_eq!(data["pushHint"], "hint-1");
    assert_eq!(data["withVideo"], "true");
    // no display name: the number, as in the APNs payload
    assert_eq!(data["callerName"], data["callerNumber"]);
    let v = fcm(
        "tok",
        &c,
        Some(CancelReason::DeclinedElsewhere),
        Duration::ZERO,
    );
    assert_eq!(v["message"]["data"]["reason"], "declined_elsewhere");
    assert_eq!(v["message"]["android"]["ttl"], "1s");
}
