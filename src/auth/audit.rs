//! The security log: one line per failed authentication and per REGISTER refused
//! with `555`, in one fixed format that fail2ban-style tools can match (README,
//! "Security log").
//!
//! ```text
//! <time>  WARN sipwake::security: auth failed src=<ip> port=<port> aor="<aor>" code=<code> reason="<reason>"
//! <time>  INFO sipwake::security: register refused src=<ip> port=<port> aor="<aor>" code=555 reason="<reason>"
//! ```
//!
//! The source address comes first, before anything a peer wrote (the AOR, escaped
//! like every field), so a pattern anchored on `src=` cannot be aimed at someone
//! else. The events have no parent span: no span fields (a peer's Call-ID) stand
//! between the level and the target.

use std::net::SocketAddr;

use tracing::{info, warn};

use crate::sip::NameAddr;
use crate::sip::Uri;

/// The log target of these lines.
pub const TARGET: &str = "sipwake::security";

/// The address of record in a From or To value, or `""`.
pub fn aor_of(value: Option<NameAddr<'_>>) -> String {
    value
        .and_then(|n| Uri::parse(n.uri).ok())
        .map(|u| u.aor())
        .unwrap_or_default()
}

/// Credentials refused (wrong password, another user's, unknown user, malformed):
/// a `warn` line.
pub fn auth_failed(src: SocketAddr, aor: &str, code: u16, reason: &str) {
    warn!(
        target: TARGET,
        parent: None,
        src = %src.ip(),
        port = src.port(),
        aor,
        code,
        reason,
        "auth failed"
    );
}

/// A REGISTER refused because sipwake cannot serve what it asks (`555`, RFC 8599:
/// a push service that is not configured): an `info` line.
pub fn register_refused(src: SocketAddr, aor: &str, code: u16, reason: &str) {
    info!(
        target: TARGET,
        parent: None,
        src = %src.ip(),
        port = src.port(),
        aor,
        code,
        reason,
        "register refused"
    );
}

/// True for an authentication answer that is a failure of the credentials (refused,
/// unknown user, malformed credentials) rather than a challenge, a temporary `503`
/// or a request that is malformed elsewhere.
pub fn is_failure(code: u16, reason: &str) -> bool {
    match code {
        403 | 404 => true,
        400 => reason.starts_with("Bad Request ("),
        _ => false,
    }
}
