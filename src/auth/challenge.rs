//! Challenges (RFC 3261 §22.1, RFC 8760 §2.4): `401` with `WWW-Authenticate` for
//! REGISTER (sipwake is the registrar), `407` with `Proxy-Authenticate` for what it
//! proxies. One header per algorithm, in the configured order (SHA-256 first by
//! default), all with the same nonce; `qop="auth"` always.

use std::fmt::Write as _;

use crate::config::DigestAlgorithm;

/// Who asks for credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenger {
    /// The registrar: `401 Unauthorized`, `WWW-Authenticate`, answered in
    /// `Authorization`.
    Registrar,
    /// The proxy: `407 Proxy Authentication Required`, `Proxy-Authenticate`,
    /// answered in `Proxy-Authorization`.
    Proxy,
}

impl Challenger {
    /// Status code of the challenge.
    pub fn code(self) -> u16 {
        match self {
            Self::Registrar => 401,
            Self::Proxy => 407,
        }
    }

    /// Reason phrase of the challenge.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Registrar => "Unauthorized",
            Self::Proxy => "Proxy Authentication Required",
        }
    }

    /// The header carrying the challenge.
    pub fn challenge_header(self) -> &'static str {
        match self {
            Self::Registrar => "WWW-Authenticate",
            Self::Proxy => "Proxy-Authenticate",
        }
    }

    /// The header carrying the answer.
    pub fn credentials_header(self) -> &'static str {
        match self {
            Self::Registrar => "Authorization",
            Self::Proxy => "Proxy-Authorization",
        }
    }
}

/// The challenge header lines (without CRLF), one per algorithm.
pub fn lines(
    who: Challenger,
    realm: &str,
    nonce: &str,
    algorithms: &[DigestAlgorithm],
    stale: bool,
) -> Vec<String> {
    algorithms
        .iter()
        .map(|alg| {
            let mut s = String::with_capacity(160);
            // realm is checked at load to need no escaping; the nonce is hex
            let _ = write!(
                s,
                "{}: Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={alg}, qop=\"auth\"",
                who.challenge_header()
            );
            if stale {
                s.push_str(", stale=true");
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_algorithm_in_order() {
        let l = lines(
            Challenger::Registrar,
            "example.com",
            "abc",
            &[DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            false,
        );
        assert_eq!(
            l,
            vec![
                "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc\", algorithm=SHA-256, qop=\"auth\"",
                "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc\", algorithm=MD5, qop=\"auth\"",
            ]
        );
        let l = lines(Challenger::Proxy, "r", "n", &[DigestAlgorithm::Md5], true);
        assert_eq!(
            l,
            vec!["Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\", algorithm=MD5, qop=\"auth\", stale=true"]
        );
    }
}
