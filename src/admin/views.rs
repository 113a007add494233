//! `/registrations` and `/calls`: what sipwake holds, with push tokens truncated.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::Shared;
use crate::proxy::register::public_contact;
use crate::push::{short, PushInfo};
use crate::registrar::{unix_now_ms, Binding};

/// Page size when the query names none.
const DEFAULT_LIMIT: usize = 1000;
/// Largest page.
const MAX_LIMIT: usize = 10_000;

/// How long `/calls` waits for the forwarding tasks to describe their calls.
const CALLS_WAIT: Duration = Duration::from_secs(1);

/// Query of `GET /registrations`.
#[derive(Debug, Deserialize)]
pub(super) struct RegQuery {
    /// `user@domain`, or a bare user (every domain).
    aor: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// A token as the admin API shows it: its first 8 characters and `…`.
pub(super) fn truncated(token: &str) -> String {
    format!("{}…", short(token))
}

/// `text` with every whole token of `info` replaced by its truncated form.
pub(super) fn redact(text: &str, info: &PushInfo) -> String {
    let mut out = text.to_string();
    for t in std::iter::once(&info.token).chain(info.alert_token.as_ref()) {
        if t.len() > 8 {
            out = out.replace(t.as_str(), &truncated(t));
        }
    }
    out
}

/// A binding as JSON, tokens truncated (also inside the contact, should a push
/// parameter sipwake does not know of carry one).
pub(super) fn binding_json(b: &Binding, now_ms: u64) -> Value {
    let info = b.push().as_deref().and_then(PushInfo::from_json);
    let mut contact = public_contact(b.contact());
    if let Some(i) = &info {
        contact = redact(&contact, i);
    }
    let push = info.as_ref().map(|i| {
        json!({
            "provider": i.provider.as_str(),
            "token": truncated(&i.token),
            "alert_token": i.alert_token.as_deref().map(truncated),
            "topic": i.topic,
            "sandbox": i.sandbox,
        })
    });
    json!({
        "aor": b.aor(),
        "contact": contact,
        "expires_in": b.expires_in(now_ms),
        "expires_at": b.expires_at,
        "flow": b.flow(),
        "instance": b.instance(),
        "reg_id": b.reg_id,
        "q": b.q.map(|q| f64::from(q) / 1000.0),
        "user_agent": b.user_agent(),
        "path": b.path,
        "push": push,
        "last_register_ms": b.updated_at_ms,
        "last_register_age_s": now_ms.saturating_sub(b.updated_at_ms) / 1000,
        "node": b.node(),
    })
}

/// `GET /cluster`: the nodes sharing this node's Redis (heartbeat not lapsed), each
/// with its advertise URI, the age of its last heartbeat and the bindings it owns.
/// `404` for a single node (`store.backend` is not `redis`).
pub(super) async fn cluster(State(admin): Shared) -> Response {
    let reg = &admin.core.registrar;
    let Some(me) = reg.nodes().map(|n| n.me().to_owned()) else {
        return (
            StatusCode::NOT_FOUND,
            "a single node: store.backend is not redis\n",
        )
            .into_response();
    };
    let view = match reg.cluster_view().await {
        Ok(v) => v,
        Err(e) => return store_failed(&e),
    };
    let now = unix_now_ms();
    let nodes: Vec<Value> = view
        .nodes
        .iter()
        .map(|(n, owned)| {
            json!({
                "id": n.id,
                "advertise_uri": n.uri,
                "last_heartbeat_ms": n.at_ms,
                "last_heartbeat_age_ms": now.saturating_sub(n.at_ms),
                "bindings_owned": owned,
                "this_node": n.id == me,
            })
        })
        .collect();
    Json(json!({
        "nodes": nodes,
        "bindings_of_gone_nodes": view.orphans,
    }))
    .into_response()
}

/// `GET /registrations?aor=&offset=&limit=`: bindings by AOR, a page at a time.
pub(super) async fn registrations(State(admin): Shared, Query(q): Query<RegQuery>) -> Response {
    let reg = &admin.core.registrar;
    let aors = match q.aor.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => match reg.matching_aors(a).await {
            Ok(list) => Some(list),
            Err(e) => return store_failed(&e),
        },
        None => None,
    };
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let (total, page) = match reg.page(aors.as_deref(), offset, limit).await {
        Ok(p) => p,
        Err(e) => return store_failed(&e),
    };
    let now = unix_now_ms();
    let bindings: Vec<Value> = page.iter().map(|b| binding_json(b, now)).collect();
    Json(json!({
        "total": total,
        "offset": offset,
        "limit": limit,
        "bindings": bindings,
    }))
    .into_response()
}

/// `503` naming the store's failure (the shared store did not answer).
pub(super) fn store_failed(e: &crate::registrar::StoreError) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("binding store: {e}\n"),
    )
        .into_response()
}

/// `DELETE /registrations/{aor}`: removes every binding of the AOR (of each AOR with
/// that user part, for a bare user) through the registrar, so the store follows.
/// `204`, or `404` when there was nothing to remove.
pub(super) async fn delete_registrations(
    State(admin): Shared,
    Path(aor): Path<String>,
) -> Response {
    let reg = &admin.core.registrar;
    let aors = match reg.matching_aors(&aor).await {
        Ok(list) => list,
        Err(e) => return store_failed(&e),
    };
    if aors.is_empty() {
        return (StatusCode::NOT_FOUND, "no bindings for this AOR\n").into_response();
    }
    let mut removed = 0;
    for a in &aors {
        match reg.remove_aor(a).await {
            Ok(n) => removed += n,
            Err(e) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("binding store: {e}\n"),
                )
                    .into_response()
            }
        }
    }
    info!(aors = ?aors, removed, "bindings removed by the admin API");
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /calls`: INVITEs without a final answer: parked for a pushed phone, or
/// forwarded and trying/ringing.
pub(super) async fn calls(State(admin): Shared) -> Response {
    let calls = crate::proxy::call_views::list(&admin.core, CALLS_WAIT).await;
    let parked = calls.iter().filter(|c| c.parked).count();
    Json(json!({
        "total": calls.len(),
        "parked": parked,
        "calls": calls,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::Provider;
    use crate::registrar::BindingFields;

    #[test]
    fn tokens_are_truncated_everywhere() {
        let token = "0123456789abcdef".repeat(4);
        let info = PushInfo {
            provider: Provider::Apns,
            token: token.clone(),
            alert_token: Some("fedcba9876543210".repeat(4)),
            topic: Some("com.example".into()),
            team_id: None,
            sandbox: false,
            env_guessed: false,
            registered_at_ms: 1,
            pn_param: None,
        };
        let b = Binding::new(BindingFields {
            expires_at: 2_000_000_000,
            push: Some(info.to_json()),
            updated_at_ms: 1,
            ..BindingFields::for_test(
                "alice@example.com",
                &format!("t:apns:{token}"),
                &format!("sip:alice@10.0.0.1:5060;mytoken={token}"),
            )
        });
        let text = binding_json(&b, 1000).to_string();
        assert!(!text.contains("0123456789a"), "{text}");
        assert!(!text.contains("fedcba9876"), "{text}");
        assert!(text.contains("01234567…"), "{text}");
        assert!(text.contains("fedcba98…"), "{text}");
    }
}
