//! Where a branch physically goes: a [`Next`] hop (a known flow, a URI, the
//! upstream) turned into a flow, resolving names and connecting TCP or TLS as needed.
//! Used by the forwarding task, the ACK for a 2xx and relay mode.

use std::net::SocketAddr;
use std::sync::Arc;

use super::data::Next;
use super::Core;
use crate::sip::Uri;
use crate::transport::{Flow, SendError};

/// Why a next hop could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The URI is not one we can send to.
    #[error("cannot route to {0}")]
    Unroutable(String),
    /// Sending or connecting failed.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Turns a next hop into a flow, resolving names and connecting TCP or TLS as needed.
/// A hop that asks for TLS (`sips:`, `transport=tls`) is never reached without it.
pub async fn resolve(
    core: &Arc<Core>,
    next: &Next,
    prefer: Option<SocketAddr>,
) -> Result<Flow, ResolveError> {
    use crate::config::TransportKind;
    // the host the TLS certificate must name (a `maddr` only changes the address)
    let mut tls_name = None;
    let (host, port, kind) = match next {
        Next::Flow(f) => return Ok(*f),
        Next::Upstream => {
            let up = core
                .settings
                .upstream
                .uri
                .as_ref()
                .ok_or_else(|| ResolveError::Unroutable("upstream".into()))?;
            (up.host.clone(), up.port, up.transport)
        }
        Next::Uri(u) => {
            let uri = Uri::parse(u).map_err(|_| ResolveError::Unroutable(u.clone()))?;
            tls_name = Some(uri.host_bare().to_string());
            let host = uri
                .param("maddr")
                .filter(|m| !m.is_empty())
                .unwrap_or(uri.host_bare())
                .to_string();
            let kind = if uri.wants_tls() {
                TransportKind::Tls
            } else if uri
                .transport()
                .is_some_and(|t| t.eq_ignore_ascii_case("tcp"))
            {
                TransportKind::Tcp
            } else {
                TransportKind::Udp
            };
            (host, uri.port_or_default(), kind)
        }
    };
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        // boxed, like the connects below: these futures are large, and inline they would
        // grow every forwarding task (a parked call is one) whether it uses them or not
        Err(_) => Box::pin(tokio::net::lookup_host((host.as_str(), port)))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or(ResolveError::Unroutable(host.clone()))?,
    };
    if core.is_me(&addr.ip().to_string(), Some(addr.port())) {
        // sending to ourselves would loop until Max-Forwards runs out
        return Err(ResolveError::Unroutable(format!("{addr} (sipwake itself)")));
    }
    match kind {
        TransportKind::Udp => core
            .transport
            .udp_flow(addr, prefer)
            .ok_or(ResolveError::Send(SendError::NoSocket(addr))),
        TransportKind::Tcp => {
            let handler = core.handler().ok_or(ResolveError::Unroutable(host))?;
            Ok(Box::pin(core.transport.connect_tcp(addr, handler)).await?)
        }
        TransportKind::Tls => {
            let name = tls_name.unwrap_or_else(|| host.clone());
            let handler = core.handler().ok_or(ResolveError::Unroutable(host))?;
            Ok(Box::pin(core.transport.connect_tls(addr, &name, handler)).await?)
        }
    }
}
