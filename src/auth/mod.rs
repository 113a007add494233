//! Digest authentication of phones (RFC 3261 §22, RFC 7616, RFC 8760) in local
//! registrar mode; in relay mode the upstream registrar authenticates and sipwake
//! stays transparent.
//!
//! - [`users`]: the users file (HA1 hashes for MD5 and SHA-256).
//! - [`nonce`]: stateless nonces with an expiry, nonce-count replay protection.
//! - [`digest`]: reading credentials and computing responses.
//! - [`challenge`]: `WWW-Authenticate` / `Proxy-Authenticate` lines.
//! - [`policy`]: who is challenged and what is refused ([`Auth`]).
//! - [`audit`]: the security log lines (failed authentications, `555`s).
//!
//! Logs carry user names and realms, never credentials or hashes.

pub mod audit;
pub mod challenge;
pub mod digest;
pub mod nonce;
pub mod policy;
pub mod users;

use crate::config::{RegistrarMode, Settings};

pub use policy::{without_line, Answer, Auth};
pub use users::{Users, UsersError};

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The users file is missing or invalid.
    #[error("auth.users_file: {0}")]
    Users(#[from] UsersError),
    /// Authentication is on but no users file is named (the settings check prevents
    /// this).
    #[error("auth.users_file: authentication needs a users file")]
    NoUsersFile,
}

/// The warning to give at start when sipwake is exposed without authentication: a
/// local registrar listening on a non-loopback address with `auth.enabled` off.
pub fn exposure_warning(settings: &Settings) -> Option<String> {
    if settings.auth.enabled || settings.registrar.mode != RegistrarMode::Local {
        return None;
    }
    let exposed: Vec<String> = settings
        .sip
        .listen
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(ToString::to_string)
        .collect();
    if exposed.is_empty() {
        return None;
    }
    Some(format!(
        "SECURITY: sipwake listens on {} (not loopback) as a local registrar with \
         authentication OFF: anyone who can reach it can register as any user, take \
         their calls and their push tokens. Set [auth] enabled = true with a users file \
         (see README, Authentication), or listen on loopback only.",
        exposed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml_str;

    #[test]
    fn warns_only_when_exposed_without_auth() {
        let s = from_toml_str("").unwrap();
        assert_eq!(exposure_warning(&s), None, "loopback");
        let s = from_toml_str("[sip]\nlisten = [\"127.0.0.1:5060\", \"0.0.0.0:5060\"]").unwrap();
        let w = exposure_warning(&s).expect("warning");
        assert!(
            w.contains("0.0.0.0:5060") && w.contains("authentication OFF"),
            "{w}"
        );
        let s = from_toml_str(
            "[sip]\nlisten = [\"[::]:5060\"]\n[auth]\nenabled = true\nusers_file = \"u\"",
        )
        .unwrap();
        assert_eq!(exposure_warning(&s), None, "auth on");
        let s = from_toml_str(
            "[sip]\nlisten = [\"192.0.2.1:5060\"]\n[upstream]\nuri = \"sip:192.0.2.2\"\n[registrar]\nmode = \"relay\"",
        )
        .unwrap();
        assert_eq!(
            exposure_warning(&s),
            None,
            "relay: the upstream authenticates"
        );
    }
}
