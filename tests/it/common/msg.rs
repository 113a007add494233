//! SIP messages as the tests see them: [`Msg`], a received message parsed with plain
//! string operations (never sipwake's parser), helpers for header and URI parameters,
//! and builders for the requests the tests send as text.

use std::fmt;
use std::net::SocketAddr;

/// A received SIP message, parsed with plain string operations.
#[derive(Clone)]
pub struct Msg {
    /// The whole message as received (lossy UTF-8).
    pub raw: String,
    /// Request line or status line.
    pub start: String,
    /// Header name and value, in order, folded lines joined.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// Where it came from.
    pub from: SocketAddr,
    /// Arrived over TCP.
    pub tcp: bool,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} from {}]\n{}",
            if self.tcp { "tcp" } else { "udp" },
            self.from,
            self.raw
        )
    }
}

pub(super) fn full_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let full = match lower.as_str() {
        "i" => "call-id",
        "m" => "contact",
        "f" => "from",
        "t" => "to",
        "v" => "via",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        "s" => "subject",
        "e" => "content-encoding",
        "o" => "event",
        "r" => "refer-to",
        _ => return lower,
    };
    full.to_owned()
}

/// Splits a header value on commas outside quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut cur = String::new();
    for ch in value.chars() {
        if escaped {
            escaped = false;
            cur.push(ch);
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_owned());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// The URI of a name-addr or addr-spec header value (`"A" <sip:x>;tag=1` → `sip:x`).
pub fn uri_of(value: &str) -> String {
    if let Some(start) = value.find('<') {
        let rest = &value[start + 1..];
        return rest[..rest.find('>').unwrap_or(rest.len())]
            .trim()
            .to_owned();
    }
    let v = value.trim();
    v[..v.find(';').unwrap_or(v.len())].trim().to_owned()
}

/// A header parameter (outside `<>`), e.g. `tag` or `expires`; `Some("")` for a
/// parameter without value.
pub fn header_param(value: &str, name: &str) -> Option<String> {
    let after = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params_of(after, name)
}

/// A URI parameter, e.g. `transport` or `lr`.
pub fn uri_param(uri: &str, name: &str) -> Option<String> {
    let uri = &uri[..uri.find('?').unwrap_or(uri.len())];
    match uri.find(';') {
        Some(i) => params_of(&uri[i..], name),
        None => None,
    }
}

pub(super) fn params_of(text: &str, name: &str) -> Option<String> {
    for p in text.split(';').skip(1) {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (p.trim(), ""),
        };
        if k.eq_ignore_ascii_case(name) {
            return Some(v.trim_matches('"').to_owned());
        }
    }
    None
}

/// Host and port of a SIP URI (`sip:user@host:port;params`), port 5060 when absent.
pub fn uri_hostport(uri: &str) -> (String, u16) {
    let rest = uri
        .trim()
        .strip_prefix("sip:")
        .or_else(|| uri.trim().strip_prefix("sips:"))
        .unwrap_or(uri.trim());
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let hostport = match rest.rfind('@') {
        Some(i) => &rest[i + 1..],
        None => rest,
    };
    if let Some(stripped) = hostport.strip_prefix('[') {
        let close = stripped.find(']').unwrap_or(stripped.len());
        let host = format!("[{}]", &stripped[..close]);
        let port = stripped[close..]
            .strip_prefix("]:")
            .and_then(|p| p.parse().ok())
            .unwrap_or(5060);
        return (host, port);
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(5060)),
        None => (hostport.to_owned(), 5060),
    }
}

/// The socket address a URI names, when its host is an IP literal.
pub fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let (host, port) = uri_hostport(uri);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

impl Msg {
    /// Parses one message; `None` when it does not look like SIP at all.
    pub fn parse(data: &[u8], from: SocketAddr, tcp: bool) -> Option<Msg> {
        let raw = String::from_utf8_lossy(data).into_owned();
        let trimmed = raw.trim_start_matches(['\r', '\n']);
        let (head, body) = match trimmed.find("\r\n\r\n") {
            Some(i) => (&trimmed[..i], &trimmed[i + 4..]),
            None => (trimmed.trim_end(), ""),
        };
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_owned();
        if !(start.starts_with("SIP/2.0 ") || start.ends_with(" SIP/2.0")) {
            return None;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((full_name(k.trim()), v.trim().to_owned()));
            }
        }
        Some(Msg {
            raw: raw.clone(),
            start,
            headers,
            body: body.to_owned(),
            from,
            tcp,
        })
    }

    /// True for a request.
    pub fn is_request(&self) -> bool {
        !self.start.starts_with("SIP/2.0 ")
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.is_request() {
            self.start.split(' ').next()
        } else {
            None
        }
    }

    /// The Request-URI of a request.
    pub fn ruri(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        if self.is_request() {
            None
        } else {
            self.start.split(' ').nth(1).and_then(|c| c.parse().ok())
        }
    }

    /// The reason phrase of a response.
    pub fn reason(&self) -> &str {
        self.start.splitn(3, ' ').nth(2).unwrap_or("")
    }

    /// First value of a header (compact forms understood), not split on commas.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = full_name(name);
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every line of a header, not split on commas.
    pub fn header_lines(&self, name: &str) -> Vec<&str> {
        let name = full_name(name);
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every value of a list header (Via, Route, Record-Route, Contact), in order,
    /// split on commas.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.header_lines(name)
            .into_iter()
            .flat_map(split_list)
            .collect()
    }

    /// Call-ID.
    pub fn call_id(&self) -> &str {
        self.header("call-id").unwrap_or("")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> (u32, String) {
        let v = self.header("cseq").unwrap_or("");
        let mut it = v.split_whitespace();
        let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (n, it.next().unwrap_or("").to_owned())
    }

    /// The method in CSeq.
    pub fn cseq_method(&self) -> String {
        self.cseq().1
    }

    /// To tag.
    pub fn to_tag(&self) -> Option<String> {
        self.header("to").and_then(|v| header_param(v, "tag"))
    }

    /// From tag.
    pub fn tag_from(&self) -> Option<String> {
        self.header("from").and_then(|v| header_param(v, "tag"))
    }

    /// Branch of the topmost Via.
    pub fn top_branch(&self) -> Option<String> {
        self.values("via")
            .first()
            .and_then(|v| params_of(v, "branch"))
    }

    /// Max-Forwards as a number.
    pub fn max_forwards(&self) -> Option<u32> {
        self.header("max-forwards")
            .and_then(|v| v.trim().parse().ok())
    }

    /// Contact values (each as sent, with its header parameters).
    pub fn contacts(&self) -> Vec<String> {
        self.values("contact")
    }

    /// The URI of the first Contact.
    pub fn contact_uri(&self) -> Option<String> {
        self.contacts().first().map(|c| uri_of(c))
    }

    /// One-line summary for failure messages.
    pub fn summary(&self) -> String {
        format!(
            "{} [{} {}] via {}",
            self.start,
            self.cseq().0,
            self.cseq().1,
            self.from
        )
    }
}

/// A minimal SDP offer/answer body.
pub const SDP: &str = "v=0\r\n\
o=- 1 1 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// A REGISTER as text. `contact` None gives the query form (no Contact).
#[allow(clippy::too_many_arguments)]
pub fn build_register(
    transport: &str,
    via_hostport: &str,
    user: &str,
    domain: &str,
    contact: Option<&str>,
    expires: Option<u32>,
    call_id: &str,
    cseq: u32,
    branch: &str,
    from_tag: &str,
) -> String {
    let mut s = format!(
        "REGISTER sip:{domain} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {via_hostport};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{domain}>;tag={from_tag}\r\n\
         To: <sip:{user}@{domain}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n"
    );
    if let Some(c) = contact {
        s.push_str(&format!("Contact: {c}\r\n"));
    }
    if let Some(e) = expires {
        s.push_str(&format!("Expires: {e}\r\n"));
    }
    s.push_str("User-Agent: sipwake-tests\r\nContent-Length: 0\r\n\r\n");
    s
}

/// Puts `extra` header lines (each ending in CRLF) before the blank line, and fixes
/// Content-Length for `body`.
pub fn with_body(head_without_length: &str, extra: &str, body: &str) -> String {
    format!(
        "{head_without_length}{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// RFC 3261 §18.2.2 / RFC 3581: where a response to `req` goes over UDP.
pub fn response_dest(req: &Msg) -> Option<SocketAddr> {
    let via = req.values("via").into_iter().next()?;
    let sent_by = via.split_whitespace().nth(1)?.split(';').next()?.trim();
    let (host, port) = uri_hostport(&format!("sip:{sent_by}"));
    let host = header_or_via_param(&via, "received").unwrap_or(host);
    let port = match header_or_via_param(&via, "rport") {
        Some(p) if !p.is_empty() => p.parse().ok()?,
        _ => port,
    };
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port))
}

fn header_or_via_param(via: &str, name: &str) -> Option<String> {
    params_of(via, name)
}
