//! `POST /push-test/{aor}`: a test push to each device of the user, and each
//! provider's answer.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::views::{redact, truncated};
use super::Shared;
use crate::ids::{random_hex, uuid_v4};
use crate::metrics::{count_push, PushKind};
use crate::proxy::register::public_contact;
use crate::push::test_payload::TEST_CALLER;
use crate::push::{CallPush, PushInfo, PushResult};
use crate::registrar::unix_now_ms;

/// Sends every device of the AOR with a push token a test push (see
/// [`crate::push::test_payload`]) and reports, per device, what its provider answered.
/// `404` when the AOR has no bindings.
pub(super) async fn push_test(State(admin): Shared, Path(aor): Path<String>) -> Response {
    let core = &admin.core;
    let aors = match core.registrar.matching_aors(&aor).await {
        Ok(list) => list,
        Err(e) => return super::views::store_failed(&e),
    };
    let now = unix_now_ms();
    let mut bindings = Vec::new();
    for a in &aors {
        match core.registrar.find(a, now).await {
            Ok(list) => bindings.extend(list),
            Err(e) => return super::views::store_failed(&e),
        }
    }
    if bindings.is_empty() {
        return (StatusCode::NOT_FOUND, "no bindings for this AOR\n").into_response();
    }
    let mut devices: Vec<Value> = Vec::new();
    let mut pushes = Vec::new();
    for b in &bindings {
        let contact = public_contact(b.contact());
        let Some(info) = b.push().as_deref().and_then(PushInfo::from_json) else {
            devices.push(json!({
                "aor": b.aor(),
                "contact": contact,
                "instance": b.instance(),
                "result": "no_push_token",
            }));
            continue;
        };
        let call = CallPush {
            aor: b.aor().to_owned(),
            call_id: format!("push-test-{}@sipwake", random_hex(8)),
            push_hint: random_hex(16),
            caller_id: "push-test".into(),
            caller_name: Some(TEST_CALLER.into()),
            caller_number: "push-test".into(),
            with_video: false,
            call_uuid: uuid_v4(),
            time_left: core.settings.push.wake_timeout,
        };
        let served = core.pusher().serves(info.provider);
        let started = Instant::now();
        let fut = count_push(
            info.provider,
            PushKind::Test,
            core.pusher().test(&info, &call),
        );
        let handle = tokio::spawn(fut);
        pushes.push((b.clone(), contact, info, call, served, started, handle));
    }
    for (b, contact, info, call, served, started, handle) in pushes {
        let result = handle
            .await
            .unwrap_or_else(|_| PushResult::Failed("push task failed".into()));
        let (outcome, detail) = match &result {
            PushResult::Sent => ("sent", None),
            PushResult::SentOtherEnv { sandbox } => (
                "sent",
                Some(format!(
                    "accepted on the {} environment, not the guessed one",
                    if *sandbox { "sandbox" } else { "production" }
                )),
            ),
            PushResult::DeadToken { .. } => (
                "dead_token",
                Some("the provider reports the token dead (kept: a test removes nothing)".into()),
            ),
            PushResult::Failed(why) if !served => ("not_configured", Some(why.clone())),
            PushResult::Failed(why) => ("failed", Some(why.clone())),
        };
        devices.push(json!({
            "aor": b.aor(),
            "contact": redact(&contact, &info),
            "instance": b.instance(),
            "provider": info.provider.as_str(),
            "token": truncated(&info.token),
            "result": outcome,
            "detail": detail.map(|d| redact(&d, &info)),
            "ms": started.elapsed().as_millis() as u64,
            "call_uuid": call.call_uuid,
        }));
    }
    let sent = devices.iter().filter(|d| d["result"] == "sent").count();
    tracing::info!(aors = ?aors, devices = devices.len(), sent, "test pushes sent by the admin API");
    Json(json!({ "aors": aors, "devices": devices })).into_response()
}
