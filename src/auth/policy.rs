//! Who must authenticate, and the checks in order: find our credentials, match the
//! user, verify the response, then the nonce and its count.
//!
//! - REGISTER (always, whatever the source): the To user must be in the users file
//!   (else `404`), and the credentials must be that user's (else `403`): nobody
//!   registers another user's address of record.
//! - Other requests get `407` when they are not in one of our dialogs (a To tag and
//!   sipwake's signed Record-Route token in the Route), come from an untrusted
//!   source and are not ACK or CANCEL; the authenticated user must be the From user
//!   (else `403`). Requests for sipwake itself (a Request-URI without user part naming
//!   sipwake, e.g. keep-alive OPTIONS) are not challenged.
//! - A wrong response is refused with `403` at once, never re-challenged, so a
//!   wrong password cannot loop. A correct response on a nonce that expired or that
//!   this process did not issue (e.g. before a restart) gets a fresh challenge with
//!   `stale=true`; so does a correct response whose nonce-count is not higher than
//!   one already used with that nonce (a replay): the request is not processed, and
//!   a phone that really meant it retries with a fresh nonce.
//! - Only `qop=auth` responses are accepted (`403` otherwise): without `qop` there
//!   is no nonce-count, hence no replay protection (RFC 2069 clients are long gone).

use std::ops::Range;

use tracing::debug;

use super::challenge::{self, Challenger};
use super::digest::{self, Credentials, CredentialsError};
use super::nonce::{NonceCheck, Nonces};
use super::users::{UserEntry, Users};
use super::AuthError;
use crate::config::{AuthSettings, DigestAlgorithm};
use crate::sip::{unescape, HeaderName, Message, Method, NameAddr, Scheme, Uri};

/// A response sipwake gives instead of processing the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub code: u16,
    /// Reason phrase.
    pub reason: &'static str,
    /// Extra header lines (challenges), without CRLF.
    pub headers: Vec<String>,
}

impl Answer {
    fn plain(code: u16, reason: &'static str) -> Answer {
        Answer {
            code,
            reason,
            headers: Vec::new(),
        }
    }

    /// The header lines as `&str`, as `Core::reply` takes them.
    pub fn lines(&self) -> Vec<&str> {
        self.headers.iter().map(String::as_str).collect()
    }
}

/// Digest authentication: the users, the realm and the nonces.
#[derive(Debug)]
pub struct Auth {
    realm: String,
    algorithms: Vec<DigestAlgorithm>,
    users: Users,
    nonces: Nonces,
}

impl Auth {
    /// Loads the users file named in `settings`.
    pub fn new(settings: &AuthSettings) -> Result<Auth, AuthError> {
        let path = settings
            .users_file
            .as_deref()
            .ok_or(AuthError::NoUsersFile)?;
        let users = Users::load(path, &settings.realm)?;
        Ok(Auth::with_users(settings, users))
    }

    /// With users already loaded.
    pub fn with_users(settings: &AuthSettings, users: Users) -> Auth {
        Auth {
            realm: settings.realm.clone(),
            algorithms: settings.algorithms.clone(),
            users,
            nonces: Nonces::new(settings.nonce_ttl),
        }
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The users.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// Checks a REGISTER for a served domain: `Ok` when its credentials belong to the
    /// user of its To address.
    pub fn register(&self, msg: &Message) -> Result<(), Answer> {
        let Some(user) = aor_user(msg.to()) else {
            return Err(Answer::plain(400, "To is not a SIP address-of-record"));
        };
        let Some(entry) = self.users.get(&user) else {
            debug!(user = %user, "REGISTER for a user not in the users file");
            return Err(Answer::plain(404, "Not Found"));
        };
        self.verify(msg, Challenger::Registrar, &user, Some(entry))
            .map(|_| ())
    }

    /// Checks a request that starts a transaction (REGISTER aside, see
    /// [`Auth::register`]). `Ok(Some(line))`: authenticated, and `line` holds our
    /// credentials, which must not be forwarded (RFC 3261 §22.3). `trusted`: it
    /// comes from `proxy.trusted_networks`; `dialog_token`: its Route names sipwake
    /// with a valid flow token (which only our Record-Route hands out); `names_us`
    /// tells whether a host and port are sipwake's.
    pub fn request(
        &self,
        msg: &Message,
        trusted: bool,
        dialog_token: bool,
        names_us: impl FnOnce(&str, Option<u16>) -> bool,
    ) -> Result<Option<Range<usize>>, Answer> {
        let exempt_method = matches!(
            msg.method(),
            Some(Method::Ack | Method::Cancel | Method::Register)
        );
        // a To tag alone does not make a dialog of ours: anyone can write one, and
        // with a Route through sipwake to elsewhere it would bypass the challenge
        let in_our_dialog = !msg.to_tag().is_empty() && dialog_token;
        if trusted || exempt_method || in_our_dialog {
            return Ok(None);
        }
        if let Ok(u) = Uri::parse(msg.request_uri()) {
            if u.user.is_none() && names_us(u.host, u.port) {
                return Ok(None);
            }
        }
        let user = aor_user(msg.from());
        let entry = user.as_deref().and_then(|u| self.users.get(u));
        self.verify(msg, Challenger::Proxy, user.as_deref().unwrap_or(""), entry)
            .map(Some)
    }

    /// The algorithms to offer `entry`: those configured that it has a hash for.
    fn offered(&self, entry: Option<&UserEntry>) -> Vec<DigestAlgorithm> {
        let mut v: Vec<DigestAlgorithm> = self
            .algorithms
            .iter()
            .copied()
            .filter(|a| entry.is_none_or(|e| e.ha1(*a).is_some()))
            .collect();
        if v.is_empty() {
            v.clone_from(&self.algorithms);
        }
        v
    }

    fn challenge(&self, who: Challenger, entry: Option<&UserEntry>, stale: bool) -> Answer {
        Answer {
            code: who.code(),
            reason: who.reason(),
            headers: challenge::lines(
                who,
                &self.realm,
                &self.nonces.issue(),
                &self.offered(entry),
                stale,
            ),
        }
    }

    /// Our credentials in `msg` (the first value for our realm) and their line.
    fn find(
        &self,
        msg: &Message,
        who: Challenger,
    ) -> Result<Option<(Credentials, Range<usize>)>, &'static str> {
        let mut malformed = None;
        for h in msg
            .header_list()
            .iter()
            .filter(|h| h.name == HeaderName::Other)
        {
            let line = msg.slice(h.line.clone());
            let name = line.split(':').next().unwrap_or("").trim();
            if !name.eq_ignore_ascii_case(who.credentials_header()) {
                continue;
            }
            match Credentials::parse(msg.value_of(h)) {
                Ok(c) if c.realm == self.realm => return Ok(Some((c, h.line.clone()))),
                Ok(_) | Err(CredentialsError::OtherScheme) => {}
                Err(CredentialsError::Malformed(why)) => malformed = Some(why),
            }
        }
        match malformed {
            Some(why) => Err(why),
            None => Ok(None),
        }
    }

    /// The checks shared by REGISTER and other requests; `user` is the user the
    /// credentials must belong to.
    fn verify(
        &self,
        msg: &Message,
        who: Challenger,
        user: &str,
        entry: Option<&UserEntry>,
    ) -> Result<Range<usize>, Answer> {
        let (c, line) = match self.find(msg, who) {
            Ok(Some(found)) => found,
            Ok(None) => {
                debug!(user = %user, realm = %self.realm, "challenged");
                return Err(self.challenge(who, entry, false));
            }
            Err(why) => {
                debug!(user = %user, why, "malformed credentials");
                return Err(Answer::plain(400, "Bad Request (malformed credentials)"));
            }
        };
        let refuse = |reason: &'static str| {
            debug!(username = %c.username, realm = %self.realm, reason, "credentials refused");
            Err(Answer::plain(403, reason))
        };
        if c.username != user {
            return refuse("Forbidden (credentials of another user)");
        }
        let Some(entry) = entry else {
            return refuse("Forbidden");
        };
        let Some(alg) = c.algorithm().filter(|a| self.algorithms.contains(a)) else {
            return refuse("Forbidden (algorithm not offered)");
        };
        let Some(ha1) = entry.ha1(alg) else {
            return refuse("Forbidden (no hash for this algorithm)");
        };
        if !c
            .qop
            .as_deref()
            .is_some_and(|q| q.eq_ignore_ascii_case("auth"))
        {
            return refuse("Forbidden (qop=auth required)");
        }
        let nc =
            c.nc.as_deref()
                .filter(|n| n.len() == 8)
                .and_then(|n| u32::from_str_radix(n, 16).ok());
        let has_cnonce = c.cnonce.as_deref().is_some_and(|s| !s.is_empty());
        let Some(nc) = nc.filter(|_| has_cnonce) else {
            return Err(Answer::plain(
                400,
                "Bad Request (qop=auth needs nc and cnonce)",
            ));
        };
        if !same_uri(&c.uri, msg.request_uri()) {
            return Err(Answer::plain(
                400,
                "Bad Request (digest uri is not the Request-URI)",
            ));
        }
        let expected = digest::response_auth(alg, ha1, &c, msg.method_str());
        if !digest::hex_eq(&expected, &c.response) {
            return refuse("Forbidden (wrong credentials)");
        }
        match self.nonces.check(&c.nonce, nc) {
            NonceCheck::Fresh => {
                debug!(username = %c.username, realm = %self.realm, algorithm = %alg, "authenticated");
                Ok(line)
            }
            NonceCheck::Stale => {
                debug!(username = %c.username, "stale nonce: challenged again");
                Err(self.challenge(who, Some(entry), true))
            }
            NonceCheck::Replay => {
                debug!(username = %c.username, nc, "nonce-count not increasing: challenged again");
                Err(self.challenge(who, Some(entry), true))
            }
            NonceCheck::Full => Err(Answer {
                code: 503,
                reason: "Service Unavailable",
                headers: vec!["Retry-After: 5".to_owned()],
            }),
        }
    }
}

/// The user part (unescaped) of a SIP or SIPS address.
fn aor_user(na: Option<NameAddr<'_>>) -> Option<String> {
    let uri = Uri::parse(na?.uri).ok()?;
    if uri.scheme == Scheme::Tel {
        return None;
    }
    Some(unescape(uri.user?).into_owned())
}

/// The digest `uri` names the Request-URI: the same text, or the same scheme, user,
/// host and port (phones differ in which URI parameters they repeat).
fn same_uri(digest_uri: &str, ruri: &str) -> bool {
    if digest_uri == ruri {
        return true;
    }
    match (Uri::parse(digest_uri), Uri::parse(ruri)) {
        (Ok(a), Ok(b)) => {
            a.scheme == b.scheme
                && a.user == b.user
                && a.host_bare().eq_ignore_ascii_case(b.host_bare())
                && a.port == b.port
        }
        _ => false,
    }
}

/// `msg` without the header line `line` (our credentials), parsed again; `msg`
/// itself if that fails, which cannot happen for a line the parser found.
pub fn without_line(msg: Message, line: Range<usize>, datagram: bool) -> Message {
    let mut sp = crate::sip::Splice::new(&msg);
    sp.remove(line);
    Message::parse(sp.finish(), datagram).unwrap_or(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::users;
    use bytes::Bytes;
    use std::path::Path;
    use std::time::Duration;

    const REALM: &str = "example.com";

    fn auth() -> Auth {
        let text = format!(
            "{}\n{}\n",
            users::line("alice", REALM, "secret"),
            users::line("bob", REALM, "hunter2")
        );
        let u = Users::parse(&text, Path::new("u"), REALM).unwrap();
        let s = AuthSettings {
            enabled: true,
            users_file: None,
            realm: REALM.into(),
            nonce_ttl: Duration::from_secs(60),
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
        };
        Auth::with_users(&s, u)
    }

    fn nonce_of(a: &Answer) -> String {
        let l = &a.headers[0];
        let i = l.find("nonce=\"").unwrap() + 7;
        l[i..i + 64].to_owned()
    }

    fn request(method: &str, to: &str, from: &str, creds: Option<&str>) -> Message {
        let mut s = format!(
            "{method} sip:{to}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:{from}@example.com>;tag=1\r\nTo: <sip:{to}@example.com>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\n"
        );
        if let Some(c) = creds {
            s.push_str(c);
            s.push_str("\r\n");
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        Message::parse(Bytes::from(s), true).unwrap()
    }

    #[allow(clippy::too_many_arguments)]
    fn creds(
        header: &str,
        alg: DigestAlgorithm,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nonce: &str,
        nc: &str,
    ) -> String {
        let c = Credentials {
            username: user.into(),
            realm: REALM.into(),
            nonce: nonce.into(),
            uri: uri.into(),
            qop: Some("auth".into()),
            nc: Some(nc.into()),
            cnonce: Some("c0ffee".into()),
            ..Default::default()
        };
        let ha1 = digest::ha1(alg, user, REALM, password);
        let r = digest::response_auth(alg, &ha1, &c, method);
        format!(
            "{header}: Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={alg}, qop=auth, nc={nc}, cnonce=\"c0ffee\""
        )
    }

    #[test]
    fn register_flow() {
        let a = auth();
        let ch = a
            .register(&request("REGISTER", "alice", "alice", None))
            .unwrap_err();
        assert_eq!(ch.code, 401);
        assert_eq!(ch.headers.len(), 2);
        assert!(ch.headers[0].contains("algorithm=SHA-256"));
        assert!(ch.headers[1].contains("algorithm=MD5"));
        let n = nonce_of(&ch);
        let uri = "sip:alice@example.com";
        for (alg, nc) in [
            (DigestAlgorithm::Sha256, "00000001"),
            (DigestAlgorithm::Md5, "00000002"),
        ] {
            let c = creds(
                "Authorization",
                alg,
                "alice",
                "secret",
                "REGISTER",
                uri,
                &n,
                nc,
            );
            assert_eq!(
                a.register(&request("REGISTER", "alice", "alice", Some(&c))),
                Ok(())
            );
        }
        // replay of nc 2
        let c = creds(
            "Authorization",
            DigestAlgorithm::Md5,
            "alice",
            "secret",
            "REGISTER",
            uri,
            &n,
            "00000002",
        );
        let r = a
            .register(&request("REGISTER", "alice", "alice", Some(&c)))
            .unwrap_err();
        assert_eq!(r.code, 401);
        assert!(r.headers[0].ends_with("stale=true"));
        // wrong password
        let c = creds(
            "Authorization",
            DigestAlgorithm::Md5,
            "alice",
            "nope",
            "REGISTER",
            uri,
            &n,
            "00000003",
        );
        let r = a.register(&request("REGISTER", "alice", "alice", Some(&c)));
        assert_eq!(r.unwrap_err().code, 403);
        // alice's credentials for bob's AOR
        let c = creds(
            "Authorization",
            DigestAlgorithm::Md5,
            "alice",
            "secret",
            "REGISTER",
            "sip:bob@example.com",
            &n,
            "00000004",
        );
        let r = a.register(&request("REGISTER", "bob", "alice", Some(&c)));
        assert_eq!(r.unwrap_err().code, 403);
        // unknown user
        let r = a.register(&request("REGISTER", "mallory", "mallory", None));
        assert_eq!(r.unwrap_err().code, 404);
        // a nonce from elsewhere: stale
        let other = Nonces::new(Duration::from_secs(60)).issue();
        let c = creds(
            "Authorization",
            DigestAlgorithm::Md5,
            "alice",
            "secret",
            "REGISTER",
            uri,
            &other,
            "00000001",
        );
        let r = a
            .register(&request("REGISTER", "alice", "alice", Some(&c)))
            .unwrap_err();
        assert_eq!(r.code, 401);
        assert!(r.headers.iter().all(|h| h.ends_with("stale=true")));
    }

    #[test]
    fn requests_and_exemptions() {
        let a = auth();
        let inv = request("INVITE", "bob", "alice", None);
        let ch = a.request(&inv, false, false, |_, _| false).unwrap_err();
        assert_eq!(ch.code, 407);
        assert!(ch.headers[0].starts_with("Proxy-Authenticate: Digest realm=\"example.com\""));
        assert_eq!(
            a.request(&inv, true, false, |_, _| false),
            Ok(None),
            "trusted"
        );
        for m in ["ACK", "CANCEL"] {
            assert_eq!(
                a.request(&request(m, "bob", "alice", None), false, false, |_, _| {
                    false
                }),
                Ok(None)
            );
        }
        // a To tag counts only with our dialog token
        let bye = Message::parse(
            Bytes::from(
                String::from_utf8_lossy(request("BYE", "bob", "alice", None).bytes()).replace(
                    "To: <sip:bob@example.com>",
                    "To: <sip:bob@example.com>;tag=9",
                ),
            ),
            true,
        )
        .unwrap();
        assert_eq!(a.request(&bye, false, true, |_, _| false), Ok(None));
        assert_eq!(
            a.request(&bye, false, false, |_, _| false)
                .unwrap_err()
                .code,
            407
        );
        // sipwake itself (no user part) is not challenged
        let ping = Message::parse(
            Bytes::from(
                String::from_utf8_lossy(request("OPTIONS", "x", "alice", None).bytes())
                    .replace("OPTIONS sip:x@example.com", "OPTIONS sip:example.com"),
            ),
            true,
        )
        .unwrap();
        assert_eq!(a.request(&ping, false, false, |_, _| true), Ok(None));
        assert!(a.request(&ping, false, false, |_, _| false).is_err());
        let n = nonce_of(&ch);
        let uri = "sip:bob@example.com";
        let c = creds(
            "Proxy-Authorization",
            DigestAlgorithm::Sha256,
            "alice",
            "secret",
            "INVITE",
            uri,
            &n,
            "00000001",
        );
        let m = request("INVITE", "bob", "alice", Some(&c));
        let line = a.request(&m, false, false, |_, _| false).unwrap().unwrap();
        assert!(m.slice(line.clone()).starts_with("Proxy-Authorization:"));
        let stripped = without_line(m, line, true);
        assert!(stripped.header_named("Proxy-Authorization").is_none());
        stripped.validate().unwrap();
        // bob's credentials with alice's From
        let c = creds(
            "Proxy-Authorization",
            DigestAlgorithm::Sha256,
            "bob",
            "hunter2",
            "INVITE",
            uri,
            &n,
            "00000002",
        );
        let r = a.request(
            &request("INVITE", "bob", "alice", Some(&c)),
            false,
            false,
            |_, _| false,
        );
        assert_eq!(r.unwrap_err().code, 403);
        // credentials in the wrong header (Authorization is for the UAS): challenged
        let c = creds(
            "Authorization",
            DigestAlgorithm::Sha256,
            "alice",
            "secret",
            "INVITE",
            uri,
            &n,
            "00000003",
        );
        let r = a.request(
            &request("INVITE", "bob", "alice", Some(&c)),
            false,
            false,
            |_, _| false,
        );
        assert_eq!(r.unwrap_err().code, 407);
        // credentials for another realm are left alone
        let r = a.request(
            &request("INVITE", "bob", "alice", Some("Proxy-Authorization: Digest username=\"alice\", realm=\"pbx\", nonce=\"x\", uri=\"sip:bob@example.com\", response=\"0\"")),
            false,
            false,
            |_, _| false,
        );
        assert_eq!(r.unwrap_err().code, 407);
        // malformed credentials
        let r = a.request(
            &request(
                "INVITE",
                "bob",
                "alice",
                Some("Proxy-Authorization: Digest username=\"alice"),
            ),
            false,
            false,
            |_, _| false,
        );
        assert_eq!(r.unwrap_err().code, 400);
    }

    #[test]
    fn uri_comparison() {
        assert!(same_uri("sip:a@h", "sip:a@h"));
        assert!(same_uri("sip:a@H;transport=tcp", "sip:a@h"));
        assert!(!same_uri("sip:b@h", "sip:a@h"));
        assert!(!same_uri("sip:a@h:5070", "sip:a@h"));
        assert!(!same_uri("nonsense", "sip:a@h"));
    }
}
