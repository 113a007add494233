//! Digest credentials (RFC 3261 §22.4, RFC 7616 §3.4): reading an `Authorization` or
//! `Proxy-Authorization` value, and the hashes that check its `response`.
//!
//! Only `qop=auth` is computed here; whether a response without `qop` is acceptable is
//! the policy's decision (it is not: see `super::policy`).

use md5::Md5;
use sha2::Sha256;

use crate::config::DigestAlgorithm;

/// The parameters of one `Digest` credentials value, unquoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `uri` (the digest-uri, normally the Request-URI).
    pub uri: String,
    /// `response`, hex.
    pub response: String,
    /// `algorithm` as written; absent means MD5 (RFC 2617 §3.2.2).
    pub algorithm: Option<String>,
    /// `qop` as written.
    pub qop: Option<String>,
    /// `nc` (nonce-count), 8 hex digits.
    pub nc: Option<String>,
    /// `cnonce`.
    pub cnonce: Option<String>,
}

/// Why a credentials value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Another scheme than Digest (e.g. Basic): not for us to read.
    #[error("not a Digest scheme")]
    OtherScheme,
    /// A Digest value that breaks the grammar or lacks a required parameter.
    #[error("malformed Digest credentials: {0}")]
    Malformed(&'static str),
}

impl Credentials {
    /// Parses `Digest name=value, …`. Unknown parameters are ignored; a parameter
    /// given twice is an error (which value would the client mean?).
    pub fn parse(value: &str) -> Result<Credentials, CredentialsError> {
        use CredentialsError::Malformed;
        let value = value.trim_start();
        let scheme_end = value
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(value.len());
        if !value[..scheme_end].eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::OtherScheme);
        }
        let mut c = Credentials::default();
        let mut seen = 0u16;
        for item in AuthParams::new(&value[scheme_end..]) {
            let (name, val) = item.map_err(Malformed)?;
            let (bit, slot): (u16, &mut String) = match name.to_ascii_lowercase().as_str() {
                "username" => (1, &mut c.username),
                "realm" => (2, &mut c.realm),
                "nonce" => (4, &mut c.nonce),
                "uri" => (8, &mut c.uri),
                "response" => (16, &mut c.response),
                "algorithm" => (32, c.algorithm.insert(String::new())),
                "qop" => (64, c.qop.insert(String::new())),
                "nc" => (128, c.nc.insert(String::new())),
                "cnonce" => (256, c.cnonce.insert(String::new())),
                _ => continue,
            };
            if seen & bit != 0 {
                return Err(Malformed("a parameter is given twice"));
            }
            seen |= bit;
            *slot = val;
        }
        if seen & 31 != 31 {
            return Err(Malformed(
                "username, realm, nonce, uri and response are required",
            ));
        }
        Ok(c)
    }

    /// The algorithm these credentials were computed with; `None` when it is one
    /// sipwake does not know (e.g. `MD5-sess`).
    pub fn algorithm(&self) -> Option<DigestAlgorithm> {
        match &self.algorithm {
            None => Some(DigestAlgorithm::Md5),
            Some(a) => DigestAlgorithm::parse(a),
        }
    }
}

/// Iterates `name=value` auth-params separated by commas; values are tokens or
/// quoted strings (unescaped here).
struct AuthParams<'a> {
    rest: &'a str,
    done: bool,
}

impl<'a> AuthParams<'a> {
    fn new(s: &'a str) -> Self {
        AuthParams {
            rest: s,
            done: false,
        }
    }

    fn next_param(&mut self) -> Result<Option<(&'a str, String)>, &'static str> {
        let s = self.rest.trim_start_matches(is_lws_char);
        // empty list elements (", ,") are allowed by RFC 7230's #rule
        let s = s.trim_start_matches(|c: char| c == ',' || is_lws_char(c));
        if s.is_empty() {
            return Ok(None);
        }
        let name_end = s
            .find(|c: char| c == '=' || is_lws_char(c))
            .ok_or("a parameter without a value")?;
        let name = &s[..name_end];
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err("a parameter name is not a token");
        }
        let s = s[name_end..].trim_start_matches(is_lws_char);
        let s = s.strip_prefix('=').ok_or("a parameter without a value")?;
        let s = s.trim_start_matches(is_lws_char);
        let (value, rest) = if let Some(q) = s.strip_prefix('"') {
            let mut out = String::with_capacity(q.len().min(256));
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => match chars.next() {
                        Some((_, e)) => out.push(e),
                        None => break,
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => out.push(ch),
                }
            }
            let end = end.ok_or("an unterminated quoted string")?;
            (out, &q[end..])
        } else {
            let end = s
                .find(|c: char| c == ',' || is_lws_char(c))
                .unwrap_or(s.len());
            let v = &s[..end];
            if v.is_empty() || !v.bytes().all(is_token_byte) {
                return Err("a parameter value is neither a token nor a quoted string");
            }
            (v.to_owned(), &s[end..])
        };
        let rest = rest.trim_start_matches(is_lws_char);
        self.rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None if rest.is_empty() => rest,
            None => return Err("parameters must be separated by commas"),
        };
        Ok(Some((name, value)))
    }
}

impl<'a> Iterator for AuthParams<'a> {
    type Item = Result<(&'a str, String), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_param() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn is_lws_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_token_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

/// `H(p1:p2:…)` in lower-case hex, with the algorithm's hash.
fn h(alg: DigestAlgorithm, parts: &[&str]) -> String {
    fn run<D: md5::Digest>(parts: &[&str]) -> String {
        let mut d = D::new();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                d.update(b":");
            }
            d.update(p.as_bytes());
        }
        hex::encode(d.finalize())
    }
    match alg {
        DigestAlgorithm::Md5 => run::<Md5>(parts),
        DigestAlgorithm::Sha256 => run::<Sha256>(parts),
    }
}

/// `HA1 = H(username:realm:password)` in hex: what the users file holds.
pub fn ha1(alg: DigestAlgorithm, username: &str, realm: &str, password: &str) -> String {
    h(alg, &[username, realm, password])
}

/// The `response` expected for `qop=auth` (RFC 7616 §3.4.1):
/// `H(HA1:nonce:nc:cnonce:qop:H(method:uri))`.
pub fn response_auth(alg: DigestAlgorithm, ha1_hex: &str, c: &Credentials, method: &str) -> String {
    let ha2 = h(alg, &[method, &c.uri]);
    h(
        alg,
        &[
            ha1_hex,
            &c.nonce,
            c.nc.as_deref().unwrap_or(""),
            c.cnonce.as_deref().unwrap_or(""),
            c.qop.as_deref().unwrap_or(""),
            &ha2,
        ],
    )
}

/// The RFC 2069 response without `qop`: `H(HA1:nonce:H(method:uri))`. Only used by
/// the tests' known vectors; sipwake does not accept such responses.
#[cfg(test)]
fn response_no_qop(alg: DigestAlgorithm, ha1_hex: &str, c: &Credentials, method: &str) -> String {
    let ha2 = h(alg, &[method, &c.uri]);
    h(alg, &[ha1_hex, &c.nonce, &ha2])
}

/// Compares two hex strings in time independent of where they differ (ASCII case
/// folded), so that a response cannot be guessed digit by digit from timing.
pub fn hex_eq(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    let fold = |s: &str| {
        s.bytes()
            .map(|c| c.to_ascii_lowercase())
            .collect::<Vec<u8>>()
    };
    fold(expected).ct_eq(&fold(given)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5: Mufasa, "Circle Of Life", realm testrealm@host.com.
    #[test]
    fn rfc2617_md5_example() {
        let v = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = Credentials::parse(v).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.realm, "testrealm@host.com");
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(c.algorithm(), Some(DigestAlgorithm::Md5));
        let ha1 = ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert_eq!(ha1, "939e7578ed9e3c518a452acee763bce9");
        let r = response_auth(DigestAlgorithm::Md5, &ha1, &c, "GET");
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
        assert!(hex_eq(&r, &c.response));
    }

    /// RFC 7616 §3.9.1: Mufasa, "Circle of Life", realm http-auth@example.org.
    #[test]
    fn rfc7616_sha256_and_md5_examples() {
        let base = Credentials {
            username: "Mufasa".into(),
            realm: "http-auth@example.org".into(),
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into(),
            uri: "/dir/index.html".into(),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ".into()),
            ..Default::default()
        };
        let sha = ha1(
            DigestAlgorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert_eq!(
            response_auth(DigestAlgorithm::Sha256, &sha, &base, "GET"),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let md5 = ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert_eq!(
            response_auth(DigestAlgorithm::Md5, &md5, &base, "GET"),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    /// RFC 2069's example (no qop), as a check of the hash plumbing.
    #[test]
    fn rfc2069_response() {
        let c = Credentials {
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            uri: "/dir/index.html".into(),
            ..Default::default()
        };
        let ha1 = ha1(
            DigestAlgorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "CircleOfLife",
        );
        assert_eq!(
            response_no_qop(DigestAlgorithm::Md5, &ha1, &c, "GET"),
            "1949323746fe6a43ef61f9606e7febea"
        );
    }

    #[test]
    fn parsing_edge_cases() {
        assert_eq!(
            Credentials::parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Err(CredentialsError::OtherScheme)
        );
        let c = Credentials::parse(
            "digest USERNAME=\"a\\\"b\",realm=\"r, with comma\" ,nonce=\"n\",uri=\"sip:x;a=b,c\",response=\"00\",algorithm=SHA-256,,foo=\"bar\"",
        )
        .unwrap();
        assert_eq!(c.username, "a\"b");
        assert_eq!(c.realm, "r, with comma");
        assert_eq!(c.uri, "sip:x;a=b,c");
        assert_eq!(c.algorithm(), Some(DigestAlgorithm::Sha256));
        assert_eq!(c.qop, None);
        for bad in [
            "Digest",
            "Digest username=\"a\"",
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x",
            "Digest username=\"a\" realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"",
            "Digest username=\"a\", username=\"b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"",
            "Digest username, realm=\"r\"",
            "Digest username=, realm=\"r\"",
        ] {
            assert!(
                matches!(
                    Credentials::parse(bad),
                    Err(CredentialsError::Malformed(_))
                ),
                "{bad}"
            );
        }
        let c = Credentials::parse(
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", algorithm=MD5-sess",
        )
        .unwrap();
        assert_eq!(c.algorithm(), None);
    }

    #[test]
    fn hex_compare() {
        assert!(hex_eq("abcdef", "ABCDEF"));
        assert!(!hex_eq("abcdef", "abcdee"));
        assert!(!hex_eq("abcdef", "abcde"));
    }
}
