//! What the HTTP providers share: building a client, and sending one push with the
//! retry rules (retry only what never reached the wire, or got 429/500/503; bounded
//! by the time left; per-attempt timeout `min(2 s, time_left / 3)`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, ClientBuilder, RequestBuilder};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::{attempt_timeout, PushError};

/// Most attempts for one push.
const MAX_ATTEMPTS: u32 = 3;

/// Most pushes in flight per provider; more wait (within their time left).
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// How often an idle HTTP/2 connection is PINGed, so it stays open through NATs and
/// load balancers and the next call does not pay a TLS handshake.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// A client builder with the settings every provider uses: rustls with the bundled
/// web PKI roots plus `ca_file` (for stand-ins), warm connections, short connects.
pub(crate) fn builder(
    ca_file: Option<&Path>,
    ca_key: &'static str,
) -> Result<ClientBuilder, PushError> {
    let mut b = Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(None)
        .http2_keep_alive_interval(KEEPALIVE)
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
        .user_agent(concat!("sipwake/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = read(path, ca_key)?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| PushError::Invalid {
                key: ca_key,
                reason: format!("{}: not a PEM certificate: {e}", path.display()),
            })?;
        if certs.is_empty() {
            return Err(PushError::Invalid {
                key: ca_key,
                reason: format!("{}: no certificate in it", path.display()),
            });
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}

/// Finishes a builder, naming the setting on failure.
pub(crate) fn build(b: ClientBuilder, key: &'static str) -> Result<Client, PushError> {
    b.build().map_err(|e| PushError::Invalid {
        key,
        reason: format!("cannot set up the HTTP client: {e}"),
    })
}

/// Reads a file named by setting `key`.
pub(crate) fn read(path: &Path, key: &'static str) -> Result<Vec<u8>, PushError> {
    std::fs::read(path).map_err(|source| PushError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// A response: status and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Waits for a slot among the pushes in flight, at most until `deadline`.
pub(crate) async fn permit(
    sem: &Arc<Semaphore>,
    deadline: Instant,
) -> Result<SemaphorePermit<'_>, String> {
    match tokio::time::timeout_at(deadline, sem.acquire()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err("too many pushes in flight".to_owned()),
    }
}

/// Sends the request `make` builds (called again for each attempt), retrying only a
/// request that never reached the server or got 429/500/503, while time is left.
pub(crate) async fn send<F>(mut make: F, time_left: Duration) -> Result<Reply, String>
where
    F: FnMut() -> RequestBuilder,
{
    let deadline = Instant::now() + time_left;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = attempt_timeout(left);
        let last: Result<Reply, String> = match make().timeout(timeout).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = match resp.bytes().await {
                    Ok(b) => b.to_vec(),
                    Err(e) => return Err(format!("reading the response: {}", describe(e))),
                };
                let reply = Reply { status, body };
                if !matches!(status, 429 | 500 | 503) {
                    return Ok(reply);
                }
                Ok(reply)
            }
            // A refused or failed connection: the request never reached the wire.
            Err(e) if e.is_connect() => Err(describe(e)),
            // A timeout or a broken exchange: the push may have gone out; a blind
            // retry could ring the phone twice.
            Err(e) => return Err(describe(e)),
        };
        let backoff = Duration::from_millis(100 * u64::from(attempt));
        let left = deadline.saturating_duration_since(Instant::now());
        if attempt >= MAX_ATTEMPTS || left < backoff + Duration::from_millis(100) {
            return last;
        }
        tokio::time::sleep(backoff).await;
    }
}

/// An error with its causes, without the URL (which holds the device token for APNs).
pub(crate) fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
