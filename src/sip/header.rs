//! Header names and the grammars of the headers sipwake reads: Via, name-addr
//! (To, From, Contact, Route, Record-Route, Path), CSeq and parameter lists.

use super::error::ParseError;
use super::uri::{class, find_byte, is_token, is_token_char, split_host_port, valid_host};

/// Headers sipwake looks at, with their compact forms folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HeaderName {
    /// `Via` / `v`
    Via,
    /// `From` / `f`
    From,
    /// `To` / `t`
    To,
    /// `Call-ID` / `i`
    CallId,
    /// `CSeq`
    CSeq,
    /// `Contact` / `m`
    Contact,
    /// `Content-Length` / `l`
    ContentLength,
    /// `Content-Type` / `c`
    ContentType,
    /// `Max-Forwards`
    MaxForwards,
    /// `Route`
    Route,
    /// `Record-Route`
    RecordRoute,
    /// `Expires`
    Expires,
    /// `Proxy-Require`
    ProxyRequire,
    /// `Require`
    Require,
    /// `Supported` / `k`
    Supported,
    /// `User-Agent`
    UserAgent,
    /// `Path`
    Path,
    /// `P-Asserted-Identity`
    PAssertedIdentity,
    /// `Min-Expires`
    MinExpires,
    /// `Reason`
    Reason,
    /// `Flow-Timer`
    FlowTimer,
    /// Any other header.
    Other,
}

/// Number of distinct known names, for per-name index tables.
pub const KNOWN_HEADERS: usize = HeaderName::Other as usize;

impl HeaderName {
    /// Classifies a header name as written (case-insensitive, compact forms too).
    pub fn from_bytes(n: &[u8]) -> HeaderName {
        if n.len() == 1 {
            return match n[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'k' => HeaderName::Supported,
                _ => HeaderName::Other,
            };
        }
        use HeaderName as H;
        // lower-cased into a stack buffer once, then one match on the bytes (a length
        // switch and a word compare or two), instead of a case-insensitive compare per
        // candidate; no known name is longer than 19 bytes
        let mut buf = [0u8; 20];
        let Some(lower) = buf.get_mut(..n.len()) else {
            return HeaderName::Other;
        };
        for (d, c) in lower.iter_mut().zip(n) {
            *d = c.to_ascii_lowercase();
        }
        match &*lower {
            b"to" => H::To,
            b"via" => H::Via,
            b"from" => H::From,
            b"cseq" => H::CSeq,
            b"path" => H::Path,
            b"route" => H::Route,
            b"reason" => H::Reason,
            b"contact" => H::Contact,
            b"call-id" => H::CallId,
            b"expires" => H::Expires,
            b"require" => H::Require,
            b"supported" => H::Supported,
            b"user-agent" => H::UserAgent,
            b"flow-timer" => H::FlowTimer,
            b"min-expires" => H::MinExpires,
            b"max-forwards" => H::MaxForwards,
            b"content-type" => H::ContentType,
            b"record-route" => H::RecordRoute,
            b"proxy-require" => H::ProxyRequire,
            b"content-length" => H::ContentLength,
            b"p-asserted-identity" => H::PAssertedIdentity,
            _ => HeaderName::Other,
        }
    }

    /// The full name used when sipwake writes this header.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::Contact => "Contact",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Expires => "Expires",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Require => "Require",
            HeaderName::Supported => "Supported",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Path => "Path",
            HeaderName::PAssertedIdentity => "P-Asserted-Identity",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::Reason => "Reason",
            HeaderName::FlowTimer => "Flow-Timer",
            HeaderName::Other => "",
        }
    }

    /// Headers that may carry several comma-separated values.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::ProxyRequire
                | HeaderName::Require
                | HeaderName::Supported
                | HeaderName::Path
                | HeaderName::PAssertedIdentity
        )
    }
}

fn is_lws(c: u8) -> bool {
    c == b' ' || c == b'\t' || c == b'\r' || c == b'\n'
}

/// Trims linear white space (including folded line breaks) on both ends.
pub fn trim_lws(s: &str) -> &str {
    // nothing to trim (most calls): the same text back, with no boundary checks
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(&a), Some(&z)) if !is_lws(a) && !is_lws(z) => return s,
        _ => {}
    }
    // on bytes: `str::trim_matches` with a closure decodes chars, and this runs a few
    // dozen times per message
    let t = trim_lws_bytes(s.as_bytes());
    // the cut is at ASCII white space, so both ends are char boundaries
    let a = t.as_ptr() as usize - s.as_ptr() as usize;
    s.get(a..a + t.len()).unwrap_or("")
}

/// Where the list item starting at `from` ends: the index of the first `sep` outside a
/// quoted string (and, with `angles`, outside `<…>`), or past the end. A backslash in a
/// quoted string escapes the next byte.
///
/// Jumps from one byte that matters to the next with `memchr` (a Via or a Contact with
/// a push token runs to a few hundred bytes, scanned several times per message).
fn item_end(b: &[u8], from: usize, sep: u8, angles: bool) -> usize {
    let mut i = from;
    let mut in_angle = false;
    while i < b.len() {
        let rest = &b[i..];
        let next = if in_angle {
            memchr::memchr2(b'>', b'"', rest)
        } else if angles {
            memchr::memchr3(sep, b'"', b'<', rest)
        } else {
            memchr::memchr2(sep, b'"', rest)
        };
        let Some(p) = next else {
            return b.len();
        };
        i += p;
        match b[i] {
            b'"' => {
                // a quoted string: up to its closing quote, skipping escaped bytes
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', b.get(i..).unwrap_or(&[])) {
                        None => return b.len().max(i),
                        Some(q) if b[i + q] == b'\\' => i += q + 2,
                        Some(q) => {
                            i += q + 1;
                            break;
                        }
                    }
                }
            }
            b'<' if !in_angle => {
                in_angle = true;
                i += 1;
            }
            b'>' if in_angle => {
                in_angle = false;
                i += 1;
            }
            _ => return i,
        }
    }
    i
}

/// Byte ranges (relative to `s`) of the comma-separated elements of a list header,
/// respecting quoted strings and angle brackets. Elements are trimmed.
pub fn split_commas(s: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let b = s.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos > b.len() {
            return None;
        }
        let start = pos;
        let i = item_end(b, pos, b',', true);
        pos = i + 1;
        let mut a = start;
        let mut e = i.min(b.len());
        while a < e && is_lws(b[a]) {
            a += 1;
        }
        while e > a && is_lws(b[e - 1]) {
            e -= 1;
        }
        Some((a, e))
    })
}

/// Iterates `;name=value` parameters (leading `;` optional), respecting quoted values.
/// Names and values are trimmed of LWS; a parameter without `=` has value `""`.
pub fn params(s: &str) -> impl Iterator<Item = (&str, &str)> + '_ {
    let b = s.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(move || loop {
        if pos >= b.len() {
            return None;
        }
        let start = pos;
        let i = item_end(b, pos, b';', false);
        pos = i + 1;
        let item = trim_lws(s.get(start..i.min(b.len())).unwrap_or(""));
        if item.is_empty() {
            continue;
        }
        return Some(match find_byte(item, b'=') {
            Some(k) => (trim_lws(&item[..k]), trim_lws(&item[k + 1..])),
            None => (item, ""),
        });
    })
}

/// Looks up one parameter (case-insensitive name) in a parameter list: what
/// `params(s).find(..)` answers.
///
/// Several lookups run per message (the top Via's `branch` and `rport`, the From and
/// To tags, a Route's `lr`): without a quoted string in the list (the common case)
/// every `;` separates two parameters, and the name is compared where it lies, with no
/// iterator state, trimming or `=` search per parameter that is not the one wanted.
pub fn param<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let b = s.as_bytes();
    let n = name.as_bytes();
    let slow = || {
        params(s)
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    if n.is_empty() || n.iter().any(|&c| is_lws(c) || c == b'=') {
        return slow();
    }
    let mut pos = 0;
    loop {
        // up to the next ';', or to a quote: before the first quote every ';'
        // separates two parameters; from a quote on, the quoting rules apply
        let end = memchr::memchr2(b';', b'"', &b[pos..]).map_or(b.len(), |p| pos + p);
        if b.get(end) == Some(&b'"') {
            return slow();
        }
        let mut a = pos;
        while a < end && is_lws(b[a]) {
            a += 1;
        }
        if end - a >= n.len() && b[a..a + n.len()].eq_ignore_ascii_case(n) {
            let mut k = a + n.len();
            while k < end && is_lws(b[k]) {
                k += 1;
            }
            if k == end {
                return Some("");
            }
            if b[k] == b'=' {
                // cut at ASCII bytes (';', '=', LWS): char boundaries
                return Some(trim_lws(s.get(k + 1..end).unwrap_or("")));
            }
        }
        if end >= b.len() {
            return None;
        }
        pos = end + 1;
    }
}

/// Strips the quotes of a quoted-string value, if quoted.
pub fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Checks a parameter list strictly: every parameter has a token name and a token,
/// host or quoted-string value.
fn check_params(s: &str) -> bool {
    let s = trim_lws(s);
    if s.is_empty() {
        return true;
    }
    let Some(rest) = s.strip_prefix(';') else {
        return false;
    };
    // empty elements (";;") are a grammar violation
    let b = rest.as_bytes();
    if let Some(ok) = check_plain_params(b) {
        // no quoted string (the common case): checked in one walk
        return ok;
    }
    let mut in_quote = false;
    let mut seg_start = 0;
    let mut i = 0;
    while i <= b.len() {
        if i == b.len() || (!in_quote && b[i] == b';') {
            if !check_param(&b[seg_start..i]) {
                return false;
            }
            seg_start = i + 1;
        } else if in_quote && b[i] == b'\\' {
            i += 1;
        } else if b[i] == b'"' {
            in_quote = !in_quote;
        }
        i += 1;
    }
    !in_quote
}

const P_BAD: u8 = 0;
const P_TOKEN: u8 = 1;
const P_VALUE: u8 = 2;
const P_LWS: u8 = 3;
const P_EQ: u8 = 4;
const P_SEMI: u8 = 5;
const P_QUOTE: u8 = 6;

/// What each byte is to [`check_plain_params`]: a token character (also a value
/// character), a value-only character, LWS, `=`, `;`, a quote, or none of these.
static PARAM_BYTE: [u8; 256] = {
    let token = class(b"-.!%*_+`'~");
    let mut t = [P_BAD; 256];
    let mut c = 0;
    while c < 256 {
        if token[c] {
            t[c] = P_TOKEN;
        } else if PARAM_VALUE[c] {
            t[c] = P_VALUE;
        }
        c += 1;
    }
    t[b' ' as usize] = P_LWS;
    t[b'\t' as usize] = P_LWS;
    t[b'\r' as usize] = P_LWS;
    t[b'\n' as usize] = P_LWS;
    t[b'=' as usize] = P_EQ;
    t[b';' as usize] = P_SEMI;
    t[b'"' as usize] = P_QUOTE;
    t
};

/// The parameters after the leading `;`, checked in one walk as [`check_param`] checks
/// each: `Some(ok)`, or `None` at a quote (the quoting rules then apply). Before, each
/// parameter was trimmed, searched for `=`, and its name and value scanned apart.
fn check_plain_params(b: &[u8]) -> Option<bool> {
    // 0 before a name, 1 in the name, 2 after it, 3 after '=', 4 in the value, 5 after it
    let mut state = 0u8;
    for &c in b {
        state = match (state, PARAM_BYTE[c as usize]) {
            (_, P_QUOTE) => return None,
            (0, P_LWS) => 0,
            (0 | 1, P_TOKEN) => 1,
            (1 | 2, P_LWS) => 2,
            (1 | 2, P_EQ) => 3,
            (3, P_LWS) => 3,
            (3 | 4, P_TOKEN | P_VALUE) => 4,
            (4 | 5, P_LWS) => 5,
            (1 | 2 | 4 | 5, P_SEMI) => 0,
            _ => return Some(false),
        };
    }
    Some(matches!(state, 1 | 2 | 4 | 5))
}

/// One `name[=value]` of a parameter list, as [`check_params`] wants it.
fn check_param(seg: &[u8]) -> bool {
    let seg = trim_lws_bytes(seg);
    if seg.is_empty() {
        return false;
    }
    let (n, v) = match seg.iter().position(|&c| c == b'=') {
        Some(k) => (
            trim_lws_bytes(&seg[..k]),
            Some(trim_lws_bytes(&seg[k + 1..])),
        ),
        None => (seg, None),
    };
    if n.is_empty() || !n.iter().all(|&c| is_token_char(c)) {
        return false;
    }
    match v {
        None => true,
        Some(v) if v.first() == Some(&b'"') => v.len() >= 2 && v.last() == Some(&b'"'),
        Some(v) => !v.is_empty() && v.iter().all(|&c| PARAM_VALUE[c as usize]),
    }
}

fn trim_lws_bytes(b: &[u8]) -> &[u8] {
    let mut a = 0;
    let mut e = b.len();
    while a < e && is_lws(b[a]) {
        a += 1;
    }
    while e > a && is_lws(b[e - 1]) {
        e -= 1;
    }
    &b[a..e]
}

/// token / host characters a parameter value may hold unquoted.
static PARAM_VALUE: [bool; 256] = class(b"-.!%*_+`'~[]:");

/// One Via value: `SIP/2.0/UDP host:port;params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport token as written (e.g. `UDP`).
    pub transport: &'a str,
    /// sent-by host (IPv6 bracketed).
    pub host: &'a str,
    /// sent-by port, if given.
    pub port: Option<u16>,
    /// Parameters including the leading `;`, or empty.
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// Parses one Via value (already split at commas).
    pub fn parse(s: &'a str) -> Result<Via<'a>, ParseError> {
        const E: ParseError = ParseError::Malformed("Via");
        let mut rest = trim_lws(s);
        let part = |rest: &mut &'a str, sep: bool| -> Result<&'a str, ParseError> {
            let r = trim_lws(rest);
            let end = r
                .bytes()
                .position(|c| c == b'/' || is_lws(c))
                .unwrap_or(r.len());
            let tok = &r[..end];
            let mut r2 = trim_lws(&r[end..]);
            if sep {
                r2 = r2.strip_prefix('/').ok_or(E)?;
            }
            *rest = r2;
            Ok(tok)
        };
        let proto = part(&mut rest, true)?;
        let version = part(&mut rest, true)?;
        if !proto.eq_ignore_ascii_case("SIP") {
            return Err(E);
        }
        if version != "2.0" {
            return Err(ParseError::Version);
        }
        let r = trim_lws(rest);
        let end = r.bytes().position(is_lws).ok_or(E)?;
        let transport = &r[..end];
        if !is_token(transport) {
            return Err(E);
        }
        let r = trim_lws(&r[end..]);
        let pend = find_byte(r, b';').unwrap_or(r.len());
        let sent_by = trim_lws(&r[..pend]);
        let params = &r[pend..];
        // sent-by may have LWS around ':' in theory; phones never do that
        let (host, port) = split_host_port(sent_by).ok_or(E)?;
        if !valid_host(host) || !check_params(params) {
            return Err(E);
        }
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        param(self.params, "branch")
    }

    /// `rport`: `None` absent, `Some(None)` without value, `Some(Some(p))` filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        param(self.params, "rport").map(|v| v.parse().ok())
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a str> {
        param(self.params, "received")
    }

    /// True if the transport is reliable (anything but UDP).
    pub fn is_udp(&self) -> bool {
        self.transport.eq_ignore_ascii_case("UDP")
    }
}

/// A `name-addr` or `addr-spec` with header parameters: To, From, Contact, Route…
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name as written (quoted or tokens), if any.
    pub display: Option<&'a str>,
    /// The URI without angle brackets.
    pub uri: &'a str,
    /// Header parameters including the leading `;`, or empty.
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// Parses one value (already split at commas). `what` names the header in errors.
    pub fn parse(s: &'a str, what: &'static str) -> Result<NameAddr<'a>, ParseError> {
        let e = ParseError::Malformed(what);
        let s = trim_lws(s);
        let b = s.as_bytes();
        let (display, rest) = if b.first() == Some(&b'"') {
            let mut i = 1;
            loop {
                match b.get(i) {
                    None => return Err(e),
                    Some(b'\\') => i += 2,
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            let rest = trim_lws(&s[i + 1..]);
            if !rest.starts_with('<') {
                return Err(e);
            }
            (Some(&s[..=i]), rest)
        } else if let Some(lt) = find_byte(s, b'<') {
            let d = trim_lws(&s[..lt]);
            if !d.is_empty()
                && !d
                    .split(|c: char| c.is_ascii_whitespace())
                    .all(|t| t.is_empty() || is_token(t))
            {
                return Err(e);
            }
            (if d.is_empty() { None } else { Some(d) }, &s[lt..])
        } else {
            // addr-spec: the URI ends at the first ';', which starts header params
            let end = find_byte(s, b';').unwrap_or(s.len());
            let uri = trim_lws(&s[..end]);
            if uri.is_empty()
                || uri
                    .bytes()
                    .any(|c| matches!(c, b'?' | b',' | b'"' | b'>') || is_lws(c))
            {
                return Err(e);
            }
            let params = &s[end..];
            if !check_params(params) {
                return Err(e);
            }
            return Ok(NameAddr {
                display: None,
                uri,
                params,
            });
        };
        let gt = find_byte(rest, b'>').ok_or(e.clone())?;
        let uri = &rest[1..gt];
        if uri.is_empty() || uri.bytes().any(|c| c == b'<' || is_lws(c)) {
            return Err(e);
        }
        let params = &rest[gt + 1..];
        if !check_params(params) {
            return Err(e);
        }
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        param(self.params, "tag")
    }

    /// A header parameter.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param(self.params, name)
    }
}

/// Parses `CSeq: number method`.
pub fn parse_cseq(s: &str) -> Result<(u32, &str), ParseError> {
    const E: ParseError = ParseError::Malformed("CSeq");
    let s = trim_lws(s);
    let end = s.find(|c: char| !c.is_ascii_digit()).ok_or(E)?;
    let num = &s[..end];
    if num.is_empty() || num.len() > 10 {
        return Err(E);
    }
    let n: u64 = num.parse().map_err(|_| E)?;
    let n = u32::try_from(n).map_err(|_| E)?;
    let method = trim_lws(&s[end..]);
    if !s[end..].starts_with([' ', '\t', '\r', '\n']) || !is_token(method) {
        return Err(E);
    }
    Ok((n, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `item_end` as it was before it jumped with memchr: one byte at a time.
    fn item_end_bytewise(b: &[u8], from: usize, sep: u8, angles: bool) -> usize {
        let (mut i, mut in_quote, mut in_angle) = (from, false, false);
        while i < b.len() {
            let c = b[i];
            if in_quote {
                if c == b'\\' {
                    i += 1;
                } else if c == b'"' {
                    in_quote = false;
                }
            } else if c == b'"' {
                in_quote = true;
            } else if angles && c == b'<' {
                in_angle = true;
            } else if angles && c == b'>' {
                in_angle = false;
            } else if c == sep && !in_angle {
                break;
            }
            i += 1;
        }
        i
    }

    proptest::proptest! {
        #[test]
        fn item_end_jumps_to_where_the_bytewise_walk_stops(
            s in "[a<>\\\\\",;= ]{0,24}",
            from in 0usize..24,
            angles: bool,
        ) {
            let b = s.as_bytes();
            let from = from.min(b.len());
            for sep in [b',', b';'] {
                proptest::prop_assert_eq!(
                    item_end(b, from, sep, angles),
                    item_end_bytewise(b, from, sep, angles)
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn param_finds_what_the_params_iterator_finds(
            s in "[abt=; \\t\r\n\"]{0,24}",
            name in "(a|b|t|ab|tag|x)",
        ) {
            let slow = params(&s)
                .find(|(k, _)| k.eq_ignore_ascii_case(&name))
                .map(|(_, v)| v);
            proptest::prop_assert_eq!(param(&s, &name), slow);
            let upper = name.to_ascii_uppercase();
            proptest::prop_assert_eq!(param(&s, &upper), slow);
        }
    }

    /// `check_params` as it was before its one walk: split at ';', each checked apart.
    fn check_params_reference(s: &str) -> bool {
        let s = trim_lws(s);
        if s.is_empty() {
            return true;
        }
        let Some(rest) = s.strip_prefix(';') else {
            return false;
        };
        let b = rest.as_bytes();
        if memchr::memchr(b'"', b).is_none() {
            return b.split(|&c| c == b';').all(check_param);
        }
        check_params(s)
    }

    proptest::proptest! {
        #[test]
        fn the_params_walk_checks_as_each_parameter_apart(
            s in "[;a=\\[: \t\r\n\",]{0,14}",
        ) {
            proptest::prop_assert_eq!(check_params(&s), check_params_reference(&s));
        }
    }

    #[test]
    fn param_byte_classes_are_the_grammar_sets() {
        for c in 0..=255u8 {
            let k = PARAM_BYTE[c as usize];
            assert_eq!(k == P_TOKEN, is_token_char(c), "{c}");
            assert_eq!(k == P_TOKEN || k == P_VALUE, PARAM_VALUE[c as usize], "{c}");
        }
    }

    #[test]
    fn via_with_odd_lws() {
        let v = Via::parse("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v = Via::parse("SIP/2.0/TCP [::1]:5070;branch=z9hG4bKx;rport").unwrap();
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport(), Some(None));
        assert!(!v.is_udp());
    }

    #[test]
    fn via_rejects_empty_params_and_bad_version() {
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert_eq!(
            Via::parse("SIP/7.0/UDP h;branch=z9hG4bK1"),
            Err(ParseError::Version)
        );
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
            "From",
        )
        .unwrap();
        assert_eq!(n.uri, "sip:jdrosen@example.com");
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323", "From").unwrap();
        assert_eq!(n.display, Some("caller"));
        let n = NameAddr::parse("sip:user@example.com;tag=1", "To").unwrap();
        assert_eq!(n.uri, "sip:user@example.com");
        assert_eq!(n.tag(), Some("1"));
        let n = NameAddr::parse(
            "<sip:a@127.0.0.1:5060;ob>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1",
            "Contact",
        )
        .unwrap();
        assert_eq!(
            n.param("+sip.instance").map(unquote),
            Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>")
        );
        assert_eq!(n.param("reg-id"), Some("1"));
    }

    #[test]
    fn name_addr_rejects_torture_faults() {
        assert!(NameAddr::parse("\"Mr. J. User <sip:j.user@example.com>", "To").is_err());
        assert!(NameAddr::parse("Bell, Alexander <sip:a.g.bell@bell-tel.com>", "From").is_err());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:x%3E", "Contact").is_err());
        assert!(NameAddr::parse("\"Joe\" <sip:joe@example.org>;;;;", "Contact").is_err());
        assert!(NameAddr::parse("<sip:user@example.com>;tag=", "To").is_err());
    }

    #[test]
    fn commas_respect_quotes_and_brackets() {
        let s = "\"a,b\" <sip:x@y>, <sip:z@w;p=1,2>,sip:q@r";
        let parts: Vec<&str> = split_commas(s).map(|(a, b)| &s[a..b]).collect();
        assert_eq!(
            parts,
            vec!["\"a,b\" <sip:x@y>", "<sip:z@w;p=1,2>", "sip:q@r"]
        );
    }

    #[test]
    fn item_end_cuts_as_the_byte_loop_did() {
        // every string of up to 6 bytes over the bytes that matter, from every start
        let alphabet = b"a,;\"<>\\ ";
        let mut buf = Vec::new();
        for len in 0..=6u32 {
            for mut n in 0..alphabet.len().pow(len) {
                buf.clear();
                for _ in 0..len {
                    buf.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                for from in 0..=buf.len() {
                    for (sep, angles) in [(b',', true), (b';', false), (b';', true)] {
                        assert_eq!(
                            item_end(&buf, from, sep, angles),
                            item_end_bytewise(&buf, from, sep, angles),
                            "{:?} from {from} sep {} angles {angles}",
                            String::from_utf8_lossy(&buf),
                            sep as char
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn header_names_any_case_and_compact() {
        for (n, h) in [
            ("Via", HeaderName::Via),
            ("v", HeaderName::Via),
            ("CONTACT", HeaderName::Contact),
            ("call-id", HeaderName::CallId),
            ("Content-Length", HeaderName::ContentLength),
            ("content-type", HeaderName::ContentType),
            ("RECORD-route", HeaderName::RecordRoute),
            ("Max-Forwards", HeaderName::MaxForwards),
            ("expires", HeaderName::Expires),
            ("Require", HeaderName::Require),
            ("p-asserted-identity", HeaderName::PAssertedIdentity),
            ("", HeaderName::Other),
            ("Contacts", HeaderName::Other),
            ("Xontact", HeaderName::Other),
            ("Call-IE", HeaderName::Other),
        ] {
            assert_eq!(HeaderName::from_bytes(n.as_bytes()), h, "{n:?}");
        }
        // every known name as sipwake writes it, in any case, and one byte off
        use HeaderName as H;
        let all = [
            H::Via,
            H::From,
            H::To,
            H::CallId,
            H::CSeq,
            H::Contact,
            H::ContentLength,
            H::ContentType,
            H::MaxForwards,
            H::Route,
            H::RecordRoute,
            H::Expires,
            H::ProxyRequire,
            H::Require,
            H::Supported,
            H::UserAgent,
            H::Path,
            H::PAssertedIdentity,
            H::MinExpires,
            H::Reason,
            H::FlowTimer,
        ];
        assert_eq!(all.len(), KNOWN_HEADERS);
        for h in all {
            let name = h.as_str();
            assert_eq!(
                HeaderName::from_bytes(name.to_ascii_uppercase().as_bytes()),
                h
            );
            assert_eq!(
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                h
            );
            let mut off = name.as_bytes().to_vec();
            *off.last_mut().unwrap() ^= 0x01;
            assert_eq!(HeaderName::from_bytes(&off), HeaderName::Other, "{name}");
        }
    }

    #[test]
    fn parameter_lists_checked_strictly() {
        for ok in [
            "",
            ";lr",
            " ; branch=z9hG4bK1 ; rport",
            ";x=\"a;b\";y",
            ";maddr=[::1]:5060",
            ";q=\"a\\\"b\"",
        ] {
            assert!(check_params(ok), "{ok:?}");
        }
        for bad in [
            "lr",
            ";",
            ";;lr",
            ";lr;",
            ";x=",
            ";x=\"open",
            ";x=a b",
            ";x y=1",
            ";x=\"a\"b",
            ";x=a,b",
        ] {
            assert!(!check_params(bad), "{bad:?}");
        }
    }

    #[test]
    fn cseq_bounds() {
        assert_eq!(parse_cseq("0009\r\n  INVITE").unwrap(), (9, "INVITE"));
        assert!(parse_cseq("36893488147419103232 INVITE").is_err());
        assert!(parse_cseq("4294967296 INVITE").is_err());
        assert!(parse_cseq("1").is_err());
    }
}
