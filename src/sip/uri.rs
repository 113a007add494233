//! SIP URIs (RFC 3261 §19.1), parsed without copying.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

/// URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:`
    Tel,
}

impl Scheme {
    /// The scheme as written in a URI, without the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
        }
    }
}

/// Why a URI did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Scheme other than sip, sips, tel.
    #[error("unsupported URI scheme")]
    Scheme,
    /// Anything else.
    #[error("malformed URI")]
    Malformed,
}

/// A parsed `sip:`, `sips:` or `tel:` URI borrowing from the message buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    /// Scheme.
    pub scheme: Scheme,
    /// User part (still %-escaped), if any. For `tel:` the number.
    pub user: Option<&'a str>,
    /// Password (still escaped), if any.
    pub password: Option<&'a str>,
    /// Host: hostname, IPv4 or bracketed IPv6 (`[::1]`).
    pub host: &'a str,
    /// Port, if given.
    pub port: Option<u16>,
    /// URI parameters including the leading `;`, or empty.
    pub params: &'a str,
    /// Headers after `?`, or empty.
    pub headers: &'a str,
}

/// A byte class as a table: alphanumerics plus `extra`. One load per byte instead of a
/// walk over the extra characters (URIs with push tokens run to 200 bytes).
pub(super) const fn class(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

static TOKEN: [bool; 256] = class(b"-.!%*_+`'~");
// unreserved / escaped / user-unreserved (RFC 3261 §25.1)
static USER: [bool; 256] = class(b"-_.!~*'()%&=+$,;?/");
static PASSWORD: [bool; 256] = class(b"-_.!~*'()%&=+$,");
// paramchar = param-unreserved / unreserved / escaped
static PARAM: [bool; 256] = class(b"[]/:&+$-_.!~*'()%");
static HEADER: [bool; 256] = class(b"[]/?:+$-_.!~*'()%=&");
// hostname or IPv4 characters
static HOST: [bool; 256] = class(b"-.");

const MARK_BAD: u8 = 1;
const MARK_AT: u8 = 2;
const MARK_QUERY: u8 = 3;
const MARK_SEMI: u8 = 4;

/// What [`Uri::parse`]'s walk does with each byte: 0 nothing, or one of the marks.
static URI_MARK: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c <= b' ' as usize {
        t[c] = MARK_BAD;
        c += 1;
    }
    t[b'<' as usize] = MARK_BAD;
    t[b'>' as usize] = MARK_BAD;
    t[b'@' as usize] = MARK_AT;
    t[b'?' as usize] = MARK_QUERY;
    t[b';' as usize] = MARK_SEMI;
    t
};

pub(super) fn is_token_char(c: u8) -> bool {
    TOKEN[c as usize]
}

fn is_user_char(c: u8) -> bool {
    USER[c as usize]
}

fn is_password_char(c: u8) -> bool {
    PASSWORD[c as usize]
}

fn is_param_char(c: u8) -> bool {
    PARAM[c as usize]
}

fn is_header_char(c: u8) -> bool {
    HEADER[c as usize]
}

/// Index of the first `b` in `s`: `str::find` for one ASCII byte, with the `memchr`
/// crate's SIMD search (the standard library's char search walks a word at a time;
/// Contact URIs with push tokens run to 250 bytes).
pub(super) fn find_byte(s: &str, b: u8) -> Option<usize> {
    memchr::memchr(b, s.as_bytes())
}

/// True if `host` is a hostname, an IPv4 address or a bracketed IPv6 reference.
pub fn valid_host(host: &str) -> bool {
    if host.is_empty() {
        return false;
    }
    if let Some(inner) = host.strip_prefix('[') {
        return inner
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
    }
    host.bytes().all(|c| HOST[c as usize])
}

impl<'a> Uri<'a> {
    /// Parses a URI. The input must not contain angle brackets or whitespace.
    pub fn parse(s: &'a str) -> Result<Uri<'a>, UriError> {
        let colon = find_byte(s, b':').ok_or(UriError::Malformed)?;
        let scheme_str = &s[..colon];
        let scheme = if scheme_str.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_str.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme_str.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else if !scheme_str.is_empty()
            && scheme_str.as_bytes()[0].is_ascii_alphabetic()
            && scheme_str
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c))
        {
            return Err(UriError::Scheme);
        } else {
            return Err(UriError::Malformed);
        };
        let rest = &s[colon + 1..];
        if rest.is_empty() {
            return Err(UriError::Malformed);
        }
        // one walk over the bytes refuses blanks, controls and angle brackets and notes
        // where the first '@' is and, after it, the first '?' and ';' (four `memchr`
        // calls and a scan before, each with its own setup on a 30-byte URI)
        let (mut at, mut q, mut semi) = (None, None, None);
        for (i, &c) in rest.as_bytes().iter().enumerate() {
            match URI_MARK[c as usize] {
                0 => {}
                MARK_BAD => return Err(UriError::Malformed),
                MARK_AT => {
                    if at.is_none() {
                        at = Some(i);
                        q = None;
                        semi = None;
                    }
                }
                MARK_QUERY => {
                    q.get_or_insert(i);
                }
                _ => {
                    semi.get_or_insert(i);
                }
            }
        }
        if scheme == Scheme::Tel {
            let (number, params) = match find_byte(rest, b';') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            return Ok(Uri {
                scheme,
                user: Some(number),
                password: None,
                host: "",
                port: None,
                params,
                headers: "",
            });
        }
        let (userinfo, host_from) = match at {
            Some(i) => (Some(&rest[..i]), i + 1),
            None => (None, 0),
        };
        let (user, password) = match userinfo {
            Some(ui) => {
                let (u, p) = match find_byte(ui, b':') {
                    Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() || !u.bytes().all(is_user_char) {
                    return Err(UriError::Malformed);
                }
                if let Some(p) = p {
                    if !p.bytes().all(is_password_char) {
                        return Err(UriError::Malformed);
                    }
                }
                (Some(u), p)
            }
            None => (None, None),
        };
        // positions from the walk: '?' and ';' after the '@' (the user part may hold
        // both); a ';' past the '?' is in the headers. All cuts are at ASCII bytes.
        let host_end = q.unwrap_or(rest.len());
        let headers = q.map_or("", |i| &rest[i + 1..]);
        let (hostport, params) = match semi.filter(|&i| i < host_end) {
            Some(i) => (&rest[host_from..i], &rest[i..host_end]),
            None => (&rest[host_from..host_end], ""),
        };
        let (host, port) = split_host_port(hostport).ok_or(UriError::Malformed)?;
        if !valid_host(host) {
            return Err(UriError::Malformed);
        }
        if !params.is_empty() {
            // on bytes: `str::split(char)` runs the char searcher
            for p in params.as_bytes()[1..].split(|&c| c == b';') {
                let (n, v) = match memchr::memchr(b'=', p) {
                    Some(i) => (&p[..i], &p[i + 1..]),
                    None => (p, &[][..]),
                };
                if n.is_empty()
                    || !n.iter().all(|&c| is_param_char(c))
                    || !v.iter().all(|&c| is_param_char(c))
                {
                    return Err(UriError::Malformed);
                }
            }
        }
        if !headers.is_empty() && !headers.bytes().all(is_header_char) {
            return Err(UriError::Malformed);
        }
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The value of URI parameter `name` (case-insensitive name): `Some("")` for a
    /// parameter without value, `None` when absent.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param_in(self.params, name)
    }

    /// The host without IPv6 brackets, lower case not applied.
    pub fn host_bare(&self) -> &'a str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(self.host)
    }

    /// The host as an IP address if it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host_bare().parse().ok()
    }

    /// The `transport` parameter, lower-cased by the caller's comparison.
    pub fn transport(&self) -> Option<&'a str> {
        self.param("transport")
    }

    /// True if reaching this URI takes TLS: a `sips:` URI (RFC 3261 §26.2.2) or one
    /// with the (deprecated but common) `transport=tls`.
    pub fn wants_tls(&self) -> bool {
        self.scheme == Scheme::Sips
            || self
                .transport()
                .is_some_and(|t| t.eq_ignore_ascii_case("tls"))
    }

    /// The port, or the default for the URI: 5061 when it takes TLS, else 5060.
    pub fn port_or_default(&self) -> u16 {
        self.port
            .unwrap_or(if self.wants_tls() { 5061 } else { 5060 })
    }

    /// Canonical key for RFC 3261 §19.1.4 comparison: scheme, unescaped user and
    /// password, lower-case host, port, and the parameters that must match when present
    /// (`user`, `ttl`, `method`, `maddr`, `transport`). Other parameters (such as push
    /// parameters) do not take part, so a phone's refresh with different `pn-*` values
    /// still matches its binding.
    pub fn match_key(&self) -> String {
        let mut k = String::with_capacity(64);
        k.push_str(self.scheme.as_str());
        k.push(':');
        if let Some(u) = self.user {
            k.push_str(&unescape(u));
            if let Some(p) = self.password {
                k.push(':');
                k.push_str(&unescape(p));
            }
            k.push('@');
        }
        for c in self.host.chars() {
            k.push(c.to_ascii_lowercase());
        }
        if let Some(p) = self.port {
            let _ = write!(k, ":{p}");
        }
        // the parameters that take part in URI comparison, in one pass over the list
        // (the first occurrence of each counts, as in `param`)
        const COMPARED: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];
        let mut found: [Option<&str>; 5] = [None; 5];
        for p in self.params.split(';') {
            let p = p.trim();
            let (n, v) = match find_byte(p, b'=') {
                Some(i) => (p[..i].trim_end(), p[i + 1..].trim_start()),
                None => (p, ""),
            };
            if let Some(i) = COMPARED.iter().position(|c| n.eq_ignore_ascii_case(c)) {
                found[i].get_or_insert(v);
            }
        }
        for (name, v) in COMPARED.iter().zip(found) {
            if let Some(v) = v {
                let _ = write!(k, ";{name}={}", unescape(v).to_ascii_lowercase());
            }
        }
        k
    }

    /// The address-of-record key `user@host` (host lower case, user unescaped), as
    /// the registrar indexes bindings.
    pub fn aor(&self) -> String {
        let mut k = String::with_capacity(32);
        if let Some(u) = self.user {
            k.push_str(&unescape(u));
            k.push('@');
        }
        for c in self.host_bare().chars() {
            k.push(c.to_ascii_lowercase());
        }
        k
    }
}

/// Splits `host[:port]` (with bracketed IPv6). `None` if the port is not a number.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.starts_with('[') {
        let end = find_byte(s, b']')?;
        let host = &s[..=end];
        let rest = &s[end + 1..];
        if rest.is_empty() {
            return Some((host, None));
        }
        let port = rest.strip_prefix(':')?;
        return parse_port(port).map(|p| (host, Some(p)));
    }
    match memchr::memrchr(b':', s.as_bytes()) {
        Some(i) => parse_port(&s[i + 1..]).map(|p| (&s[..i], Some(p))),
        None => Some((s, None)),
    }
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 {
        return None;
    }
    // at most five digits: summed in a u32 without `str::parse`'s generic machinery
    let mut n: u32 = 0;
    for c in s.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    u16::try_from(n).ok()
}

/// Finds parameter `name` in a `;a=b;c` list (leading `;` optional).
pub fn param_in<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    // split at ';' with memchr: `str::split(char)` runs the char searcher
    let b = params.as_bytes();
    let mut pos = 0;
    while pos <= b.len() {
        let end = memchr::memchr(b';', &b[pos..]).map_or(b.len(), |i| pos + i);
        // cut at ';': char boundaries
        let p = params.get(pos..end).unwrap_or("").trim();
        pos = end + 1;
        let (n, v) = match find_byte(p, b'=') {
            Some(i) => (p[..i].trim_end(), p[i + 1..].trim_start()),
            None => (p, ""),
        };
        if n.eq_ignore_ascii_case(name) {
            return Some(v);
        }
    }
    None
}

/// Decodes `%HH` escapes. Invalid escapes are kept as written.
pub fn unescape(s: &str) -> Cow<'_, str> {
    if memchr::memchr(b'%', s.as_bytes()).is_none() {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// True if `s` is a non-empty RFC 3261 token.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split of `Uri::parse` as it was before its one walk: a scan for bad bytes
    /// and a search for each of '@', '?' and ';'. Returns (user part, host part,
    /// params, headers) or `None` for a refused URI.
    fn split_reference(rest: &str) -> Option<(Option<&str>, &str, &str, &str)> {
        if rest.is_empty() || rest.bytes().any(|c| c <= b' ' || c == b'<' || c == b'>') {
            return None;
        }
        let (userinfo, hostpart) = match find_byte(rest, b'@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostport, headers) = match find_byte(hostpart, b'?') {
            Some(i) => (&hostpart[..i], &hostpart[i + 1..]),
            None => (hostpart, ""),
        };
        let (hostport, params) = match find_byte(hostport, b';') {
            Some(i) => (&hostport[..i], &hostport[i..]),
            None => (hostport, ""),
        };
        Some((userinfo, hostport, params, headers))
    }

    proptest::proptest! {
        #[test]
        fn the_walk_splits_as_the_searches_did(rest in "[ab@?;:=<> .1\\[\\]]{0,16}") {
            let uri = format!("sip:{rest}");
            let parsed = Uri::parse(&uri);
            match split_reference(&rest) {
                None => proptest::prop_assert!(parsed.is_err()),
                Some((ui, hostport, params, headers)) => {
                    let user = ui.map(|u| u.split(':').next().unwrap_or(""));
                    let host = split_host_port(hostport).map(|(h, _)| h);
                    if let Ok(u) = parsed {
                        proptest::prop_assert_eq!(u.user, user);
                        proptest::prop_assert_eq!(Some(u.host), host);
                        proptest::prop_assert_eq!(u.params, params);
                        proptest::prop_assert_eq!(u.headers, headers);
                    }
                }
            }
        }
    }

    #[test]
    fn byte_classes_are_the_grammar_sets() {
        for c in 0..=255u8 {
            let alnum = c.is_ascii_alphanumeric();
            assert_eq!(is_token_char(c), alnum || b"-.!%*_+`'~".contains(&c));
            assert_eq!(is_user_char(c), alnum || b"-_.!~*'()%&=+$,;?/".contains(&c));
            assert_eq!(
                is_password_char(c),
                alnum || b"-_.!~*'()%&=+$,".contains(&c)
            );
            assert_eq!(is_param_char(c), alnum || b"[]/:&+$-_.!~*'()%".contains(&c));
            assert_eq!(
                is_header_char(c),
                alnum || b"[]/?:+$-_.!~*'()%=&".contains(&c)
            );
        }
    }

    #[test]
    fn parses_full_sip_uri() {
        let u = Uri::parse("sip:alice:pw@Example.COM:5080;transport=tcp;lr?subject=x").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("pw"));
        assert_eq!(u.host, "Example.COM");
        assert_eq!(u.port, Some(5080));
        assert_eq!(u.param("transport"), Some("tcp"));
        assert_eq!(u.param("lr"), Some(""));
        assert_eq!(u.headers, "subject=x");
        assert_eq!(u.aor(), "alice@example.com");
    }

    #[test]
    fn ipv6_and_user_with_semicolon() {
        let u = Uri::parse("sip:[::1]:5060").unwrap();
        assert_eq!(u.host, "[::1]");
        assert_eq!(u.ip(), Some("::1".parse().unwrap()));
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host, "example.com");
    }

    #[test]
    fn rejects_bad_uris() {
        assert_eq!(Uri::parse("soap.beep://x"), Err(UriError::Scheme));
        assert_eq!(Uri::parse("mailto:x@y"), Err(UriError::Scheme));
        assert_eq!(Uri::parse("<sip:x@y>"), Err(UriError::Malformed));
        assert_eq!(Uri::parse("sip:x@y:port"), Err(UriError::Malformed));
        assert_eq!(Uri::parse("sip:x y@z"), Err(UriError::Malformed));
        assert_eq!(Uri::parse("sip:"), Err(UriError::Malformed));
    }

    #[test]
    fn match_key_ignores_unknown_params_and_escapes() {
        let a = Uri::parse("sip:%61lice@EXAMPLE.com;pn-prid=abc;transport=TCP").unwrap();
        let b = Uri::parse("sip:alice@example.com;transport=tcp;xToken=1").unwrap();
        assert_eq!(a.match_key(), b.match_key());
        let c = Uri::parse("sip:alice@example.com:5061;transport=tcp").unwrap();
        assert_ne!(a.match_key(), c.match_key());
    }

    #[test]
    fn tls_uris_default_to_5061() {
        let u = Uri::parse("sips:alice@example.com").unwrap();
        assert!(u.wants_tls());
        assert_eq!(u.port_or_default(), 5061);
        let u = Uri::parse("sip:alice@example.com;transport=TLS").unwrap();
        assert!(u.wants_tls());
        assert_eq!(u.port_or_default(), 5061);
        let u = Uri::parse("sip:alice@example.com:5070;transport=tcp").unwrap();
        assert!(!u.wants_tls());
        assert_eq!(u.port_or_default(), 5070);
        assert_eq!(Uri::parse("sip:h").unwrap().port_or_default(), 5060);
        // the scheme takes part in URI comparison (RFC 3261 §19.1.4), not in the AOR
        let s = Uri::parse("sips:alice@example.com").unwrap();
        let p = Uri::parse("sip:alice@example.com").unwrap();
        assert_ne!(s.match_key(), p.match_key());
        assert_eq!(s.aor(), p.aor());
    }

    #[test]
    fn unescape_keeps_nul_and_bad_escapes() {
        assert_eq!(unescape("a%00b"), "a\0b");
        assert_eq!(unescape("%zz%4"), "%zz%4");
    }
}
