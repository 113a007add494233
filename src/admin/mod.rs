//! The admin HTTP API (axum, HTTP/1.1): `/healthz`, `/metrics` and the operator's
//! views and actions (`/registrations`, `/calls`, `/push-test`).
//!
//! It listens on loopback by default (`admin.listen`). With `admin.token` set, every
//! endpoint but `/healthz` wants `Authorization: Bearer <token>`; a non-loopback
//! listener without a token is warned about loudly at start. Push tokens appear only
//! as their first 8 characters followed by `…`; the admin token and Authorization
//! headers are never logged.

mod push_test;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tracing::{info, warn};

use crate::proxy::Core;

/// What every handler gets.
struct Admin {
    core: Arc<Core>,
    /// `Bearer <token>`, precomputed for the comparison.
    expected: Option<Vec<u8>>,
}

type Shared = State<Arc<Admin>>;

/// Binds `addr` and serves the admin API on it until the process ends. Returns the
/// bound address (useful with port 0).
pub async fn start(core: Arc<Core>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let token = core.settings.admin.token.clone();
    if !addr.ip().is_loopback() && token.is_none() {
        warn!(
            %addr,
            "THE ADMIN API LISTENS BEYOND LOOPBACK WITHOUT A TOKEN: anyone who reaches \
             this address can read registrations, delete them and send pushes; set \
             admin.token or listen on 127.0.0.1"
        );
    }
    let auth = token.is_some();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let state = Arc::new(Admin {
        core,
        expected: token.map(|t| format!("Bearer {t}").into_bytes()),
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/registrations", get(views::registrations))
        .route("/registrations/{aor}", delete(views::delete_registrations))
        .route("/calls", get(views::calls))
        .route("/push-test/{aor}", post(push_test::push_test))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "admin API stopped");
        }
    });
    info!(addr = %bound, token = auth, "admin API listening");
    Ok(bound)
}

/// A `401` unless the request carries the configured bearer token.
fn refused(admin: &Admin, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &admin.expected else {
        return None;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or(b"");
    if constant_time_eq(given, expected) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"sipwake-admin\"")],
            "a bearer token is required (admin.token)\n",
        )
            .into_response(),
    )
}

/// Compares without an early exit on the first differing byte, so the time taken
/// does not tell an attacker how much of the token they got right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// `200 ok`, or `503` when the last store commit failed. Never needs the token, so
/// load balancers and systemd watchdogs can probe it.
async fn healthz() -> Response {
    if crate::metrics::global().store_ok() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "binding store failing: the last commit failed\n",
        )
            .into_response()
    }
}

/// Prometheus text exposition format 0.0.4.
async fn metrics(State(admin): Shared, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&admin, &headers) {
        return r;
    }
    let body = render_metrics(&admin.core);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Every metric: the gauges read from their owners now, then the counters.
pub fn render_metrics(core: &Core) -> String {
    use crate::metrics::{gauge, header};
    use std::fmt::Write;
    let mut out = String::with_capacity(8192);
    gauge(
        &mut out,
        "sipwake_bindings",
        "Bindings kept (live, or push bindings within push.binding_ttl_secs).",
        core.registrar.count() as f64,
    );
    gauge(
        &mut out,
        "sipwake_aors",
        "Addresses of record with at least one binding.",
        core.registrar.aors() as f64,
    );
    let (server, client) = core.tx.sizes();
    header(
        &mut out,
        "sipwake_transactions",
        "Live transactions (server side includes answered ones kept for retransmissions).",
        "gauge",
    );
    let _ = writeln!(out, "sipwake_transactions{{side=\"server\"}} {server}");
    let _ = writeln!(out, "sipwake_transactions{{side=\"client\"}} {client}");
    gauge(
        &mut out,
        "sipwake_parked_calls",
        "Calls waiting for a pushed phone to register.",
        core.parked.len() as f64,
    );
    gauge(
        &mut out,
        "sipwake_dialogs",
        "Dialogs established (2xx to an INVITE seen) and not yet ended by a BYE.",
        core.dialogs.count() as f64,
    );
    gauge(
        &mut out,
        "sipwake_calls_in_setup",
        "Initial INVITEs forwarded or parked and not yet answered with a final response.",
        core.dialogs.in_setup() as f64,
    );
    gauge(
        &mut out,
        "sipwake_tcp_connections",
        "Open inbound TCP connections (limits.max_connections).",
        core.transport.conn_limits().open() as f64,
    );
    crate::metrics::counter(
        &mut out,
        "sipwake_tcp_connections_refused_total",
        "Inbound TCP connections closed at accept by the connection caps.",
        core.transport.conn_limits().refused(),
    );
    header(
        &mut out,
        "sipwake_rate_limited_total",
        "REGISTERs and INVITEs refused (503) or dropped by a rate limit, by limit.",
        "counter",
    );
    for what in crate::proxy::limits::Exceeded::ALL {
        let n = core.limits.limited[what as usize].load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sipwake_rate_limited_total{{limit=\"{}\"}} {n}",
            what.name()
        );
    }
    crate::metrics::global().render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
    }
}
