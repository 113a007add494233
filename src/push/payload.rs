//! The JSON documents the providers get.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{CallPush, CancelReason, Event, MessageNotice, Provider, PushInfo};

/// Largest APNs VoIP payload, in bytes.
pub const APNS_VOIP_MAX: usize = 5120;

/// Largest APNs alert payload, in bytes.
pub const APNS_ALERT_MAX: usize = 4096;

/// Caller fields are cut to this many bytes when a payload is over its limit.
const TRIMMED_FIELD: usize = 256;

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn apns_call_value(call: &CallPush, with_name: bool, field_max: usize) -> Value {
    // Never null: apps built on the Siprix sample show a placeholder for it, so
    // without a display name (or when the name had to go) the caller's number stands in.
    let name = match call.caller_name.as_deref().filter(|_| with_name) {
        Some(n) => cut(n, field_max),
        None => cut(&call.caller_number, field_max),
    };
    json!({
        "aps": {
            "alert": "Incoming call",
            "callerId": cut(&call.caller_id, field_max),
            "callerName": name,
            "callerNumber": cut(&call.caller_number, field_max),
            "pushHint": call.push_hint,
            "withVideo": call.with_video,
        },
        "callUUID": call.call_uuid,
        "handle": cut(&call.caller_number, field_max),
    })
}

/// Fills an operator's template: a string that is exactly `{{field}}` becomes the
/// field's JSON value (`withVideo` a boolean); other
/// strings get each `{{field}}` replaced by its text. Fields: `pushHint`, `callerId`,
/// `callerName` (the number when the caller has no display name), `callerNumber`,
/// `withVideo`, `callUUID`, `callId`, `aor`.
pub fn fill_template(t: &Value, call: &CallPush) -> Value {
    let field = |name: &str| -> Option<Value> {
        Some(match name {
            "pushHint" => Value::from(call.push_hint.as_str()),
            "callerId" => Value::from(call.caller_id.as_str()),
            "callerName" => Value::from(call.caller_name.as_deref().unwrap_or(&call.caller_number)),
            "callerNumber" => Value::from(call.caller_number.as_str()),
            "withVideo" => Value::Bool(call.with_video),
            "callUUID" => Value::from(call.call_uuid.as_str()),
            "callId" => Value::from(call.call_id.as_str()),
            "aor" => Value::from(call.aor.as_str()),
            _ => return None,
        })
    };
    match t {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
                if let Some(v) = field(name) {
                    return v;
                }
            }
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                match after.find("}}") {
                    Some(end) => {
                        match field(&after[..end]) {
                            Some(Value::String(v)) => out.push_str(&v),
                            Some(Value::Null) => {}
                            Some(v) => out.push_str(&v.to_string()),
                            None => out.push_str(&rest[start..start + 2 + end + 2]),
                        }
                        rest = &after[end + 2..];
                    }
                    None => {
                        out.push_str(&rest[start..]);
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| fill_template(v, call)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), fill_template(v, call)))
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

/// The VoIP payload from an operator's template, kept under [`APNS_VOIP_MAX`] like
/// the default (the display name goes first); falls back to the default shape if
/// the template cannot fit.
pub fn apns_call_templated(t: &Value, call: &CallPush) -> String {
    let body = fill_template(t, call).to_string();
    if body.len() <= APNS_VOIP_MAX {
        return body;
    }
    let mut anon = call.clone();
    anon.caller_name = None;
    let body = fill_template(t, &anon).to_string();
    if body.len() <= APNS_VOIP_MAX {
        return body;
    }
    apns_call(call)
}

/// The APNs VoIP push, Siprix-compatible:
/// `{"aps": {"alert": "Incoming call", "callerId", "callerName", "callerNumber",
/// "pushHint", "withVideo"}, "callUUID", "handle"}`; `callerName` is the display name,
/// else the caller's number. Kept under [`APNS_VOIP_MAX`]: the display name goes
/// first (replaced by the number), then the caller fields are cut.
pub fn apns_call(call: &CallPush) -> String {
    let attempts = [
        (true, usize::MAX),
        (false, usize::MAX),
        (false, TRIMMED_FIELD),
        (false, 0),
    ];
    let mut body = String::new();
    for (with_name, field_max) in attempts {
        body = apns_call_value(call, with_name, field_max).to_string();
        if body.len() <= APNS_VOIP_MAX {
            break;
        }
    }
    body
}

/// An alert document built by `build(field_max)` (caller fields cut to `field_max`
/// bytes) kept under [`APNS_ALERT_MAX`]: the fields whole, then cut to
/// [`TRIMMED_FIELD`], then emptied.
fn fit_alert(build: impl Fn(usize) -> String) -> String {
    let mut field_max = usize::MAX;
    loop {
        let body = build(field_max);
        if body.len() <= APNS_ALERT_MAX || field_max == 0 {
            return body;
        }
        field_max = if field_max > TRIMMED_FIELD {
            TRIMMED_FIELD
        } else {
            0
        };
    }
}

/// Title of the alert telling a device the call is over.
fn cancel_title(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::CallerCancelled | CancelReason::Timeout => "Missed call",
        CancelReason::AnsweredElsewhere => "Call answered elsewhere",
        CancelReason::DeclinedElsewhere => "Call declined elsewhere",
    }
}

/// The APNs alert push (to the regular token) telling the app the call ended before it
/// got the INVITE; carries `event`, `reason`, `pushHint` and `callUUID` so the app can
/// end its CallKit call. Kept under [`APNS_ALERT_MAX`].
pub fn apns_cancel(call: &CallPush, reason: CancelReason) -> String {
    let from = call
        .caller_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&call.caller_number);
    fit_alert(|field_max| {
        json!({
            "aps": {
                "alert": { "title": cancel_title(reason), "body": cut(from, field_max) },
            },
            "event": "cancel",
            "reason": reason.as_str(),
            "pushHint": call.push_hint,
            "callUUID": call.call_uuid,
            "callerNumber": cut(&call.caller_number, field_max),
        })
        .to_string()
    })
}

/// How long a cancel notice is worth delivering.
pub const NOTICE_TTL: Duration = Duration::from_secs(60);

/// What a push gateway needs to deliver one push itself, as fields of the webhook
/// document: `provider`, `token` (the one to push to), `tokenKind` (`voip` | `alert`
/// for APNs, else null), `environment` (`sandbox` | `production` for APNs, else
/// null), `environmentGuessed`, `topic` (the `apns-topic`), `bundleId`, `teamId`,
/// `pnParam` (as the app sent it), `pushType` (`voip` | `alert` | `background` for
/// APNs, `data` for FCM, null for webhook tokens), `priority` (`high` | `normal`)
/// and `ttlSecs`. `None`: APNs and the app gave no token this event may go to (a
/// notice needs the regular token).
pub fn delivery(info: &PushInfo, event: Event, ttl: Duration) -> Option<Map<String, Value>> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("provider", info.provider.as_str().into());
    let apns = event.apns_push();
    let high = apns.priority == 10;
    match info.provider {
        Provider::Apns => {
            let token = info.apns_token(apns.token)?;
            put("token", token.into());
            put("tokenKind", apns.token.as_str().into());
            let env = if info.sandbox {
                "sandbox"
            } else {
                "production"
            };
            put("environment", env.into());
            put("environmentGuessed", info.env_guessed.into());
            let topic = info.topic.as_deref().map(|t| match apns.push_type {
                "voip" => format!("{t}.voip"),
                _ => t.to_owned(),
            });
            put("topic", topic.into());
            put("bundleId", info.topic.clone().into());
            put("teamId", info.team_id.clone().into());
            put("pushType", apns.push_type.into());
        }
        Provider::Fcm | Provider::Webhook => {
            put("token", info.token.clone().into());
            for k in ["tokenKind", "environment", "topic", "bundleId", "teamId"] {
                put(k, Value::Null);
            }
            put("environmentGuessed", false.into());
            let kind = (info.provider == Provider::Fcm).then_some("data");
            put("pushType", kind.into());
        }
    }
    put("pnParam", info.pn_param.clone().into());
    put("priority", if high { "high" } else { "normal" }.into());
    put("ttlSecs", ttl.as_secs().max(1).into());
    Some(m)
}

/// The webhook document of a call or cancel notice: `{"event": "call"|"cancel",
/// "reason", "aor", "pushHint", "callId", "callerId", "callerName", "callerNumber",
/// "withVideo", "callUUID"}` (`reason` is null for calls; `callerName` is the caller's
/// number without a display name, never null, as in the APNs payload) plus the
/// [`delivery`] fields. `None` when there is no token to send
/// it to (an APNs notice without a regular token).
pub fn webhook(info: &PushInfo, call: &CallPush, reason: Option<CancelReason>) -> Option<Value> {
    let (event, ttl) = match reason {
        None => (Event::Call, call.time_left),
        Some(_) => (Event::Cancel, NOTICE_TTL),
    };
    let mut doc = delivery(info, event, ttl)?;
    let v = json!({
        "event": event.as_str(),
        "reason": reason.map(CancelReason::as_str),
        "aor": call.aor,
        "pushHint": call.push_hint,
        "callId": call.call_id,
        "callerId": call.caller_id,
        "callerName": call.caller_name.as_deref().unwrap_or(&call.caller_number),
        "callerNumber": call.caller_number,
        "withVideo": call.with_video,
        "callUUID": call.call_uuid,
    });
    if let Value::Object(fields) = v {
        doc.extend(fields);
    }
    Some(Value::Object(doc))
}

/// Text of a message notice: the text when the notice may carry it, else a
/// placeholder.
fn message_text(n: &MessageNotice) -> &str {
    n.text.as_deref().unwrap_or("New message")
}

/// The APNs alert push (to the regular token) telling the app a MESSAGE waits for
/// it: the sender as title, the text (or "New message") as body, plus `event:
/// "message"`, `messageId`, `from`, `fromNumber`. Kept under [`APNS_ALERT_MAX`].
pub fn apns_message(n: &MessageNotice) -> String {
    let title = n.from_name.as_deref().unwrap_or(&n.from_number);
    fit_alert(|field_max| {
        json!({
            "aps": {
                "alert": { "title": cut(title, field_max), "body": cut(message_text(n), field_max) },
                "sound": "default",
            },
            "event": "message",
            "messageId": n.message_id,
            "from": cut(&n.from_uri, field_max),
            "fromNumber": cut(&n.from_number, field_max),
        })
        .to_string()
    })
}

/// The webhook `event: message` document: `aor`, `messageId`, `from` (sender URI),
/// `fromName` (display name or null), `fromNumber`, `contentType`, `text` (null unless
/// `push.messages.notice_text`), plus the [`delivery`] fields. `None` for an APNs
/// device without a regular token.
pub fn webhook_message(info: &PushInfo, n: &MessageNotice) -> Option<Value> {
    let mut doc = delivery(info, Event::Message, n.ttl)?;
    let v = json!({
        "event": "message",
        "aor": n.aor,
        "messageId": n.message_id,
        "from": n.from_uri,
        "fromName": n.from_name,
        "fromNumber": n.from_number,
        "contentType": n.content_type,
        "text": n.text,
    });
    if let Value::Object(fields) = v {
        doc.extend(fields);
    }
    Some(Value::Object(doc))
}

/// The FCM data message telling the app a MESSAGE waits: `event: "message"`, `aor`,
/// `messageId`, `from`, `fromNumber`, and `fromName` / `text` when known; high
/// priority so the app can show it at once.
pub fn fcm_message(token: &str, n: &MessageNotice) -> Value {
    let mut data = Map::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_owned(), Value::String(v.to_owned()));
    };
    put("event", "message");
    put("aor", &n.aor);
    put("messageId", &n.message_id);
    put("from", &n.from_uri);
    put("fromNumber", &n.from_number);
    if let Some(name) = &n.from_name {
        put("fromName", name);
    }
    if let Some(t) = &n.text {
        put("text", t);
    }
    json!({
        "message": {
            "token": token,
            "data": data,
            "android": { "priority": "HIGH", "ttl": fcm_ttl(n.ttl) },
        }
    })
}

/// The APNs background push asking the app to register again:
/// `{"aps": {"content-available": 1}, "event": "refresh", "aor"}`.
pub fn apns_refresh(aor: &str) -> String {
    json!({
        "aps": { "content-available": 1 },
        "event": "refresh",
        "aor": cut(aor, TRIMMED_FIELD),
    })
    .to_string()
}

/// The webhook `event: refresh` document: `aor` plus the [`delivery`] fields
/// (`pushType` `background` to the regular token for APNs, `priority` `normal`).
/// `None` for an APNs device without a regular token.
pub fn webhook_refresh(info: &PushInfo, aor: &str, ttl: Duration) -> Option<Value> {
    let mut doc = delivery(info, Event::Refresh, ttl)?;
    doc.insert("event".into(), "refresh".into());
    doc.insert("aor".into(), aor.into());
    Some(Value::Object(doc))
}

/// The FCM data message asking the app to register again: `event: "refresh"`, `aor`,
/// normal priority (it need not wake a dozing device at once).
pub fn fcm_refresh(token: &str, aor: &str, ttl: Duration) -> Value {
    json!({
        "message": {
            "token": token,
            "data": { "event": "refresh", "aor": aor },
            "android": { "priority": "NORMAL", "ttl": fcm_ttl(ttl) },
        }
    })
}

/// FCM `ttl` string: whole seconds, at least 1 (`"10s"`).
pub fn fcm_ttl(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// The FCM HTTP v1 request body: a data-only message (every value a string) with
/// `android.priority: HIGH` and `ttl` = `ttl`.
pub fn fcm(token: &str, call: &CallPush, reason: Option<CancelReason>, ttl: Duration) -> Value {
    let mut data = Map::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_owned(), Value::String(v.to_owned()));
    };
    put("event", if reason.is_some() { "cancel" } else { "call" });
    if let Some(r) = reason {
        put("reason", r.as_str());
    }
    put("aor", &call.aor);
    put("pushHint", &call.push_hint);
    put("callId", &call.call_id);
    put("callerId", &call.caller_id);
    put(
        "callerName",
        call.caller_name.as_deref().unwrap_or(&call.caller_number),
    );
    put("callerNumber", &call.caller_number);
    put("withVideo", if call.with_video { "true" } else { "false" });
    put("callUUID", &call.call_uuid);
    json!({
        "message": {
            "token": token,
            "data": data,
            "android": { "priority": "HIGH", "ttl": fcm_ttl(ttl) },
        }
    })
}

#[cfg(test)]
pub(crate) mod tests;
