//! A SIP message as received: the original bytes plus an index of where each part
//! lies. Nothing is copied or re-serialized; forwarding splices edits into the bytes
//! (see [`super::builder::Splice`]).
//!
//! This file is the model and what the rest of sipwake asks of a message; `parse.rs`
//! below it builds the index from the bytes and checks the grammar.

use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;

use super::error::ParseError;
use super::header::{parse_cseq, split_commas, trim_lws, HeaderName, NameAddr, Via, KNOWN_HEADERS};
use super::uri::{is_token, is_token_char, Scheme, Uri, UriError};

mod parse;

pub use parse::{has_bare_line_break, memmem, stream_frame_len};

/// SIP request methods sipwake distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// REGISTER
    Register,
    /// OPTIONS
    Options,
    /// INFO
    Info,
    /// UPDATE
    Update,
    /// PRACK
    Prack,
    /// SUBSCRIBE
    Subscribe,
    /// NOTIFY
    Notify,
    /// REFER
    Refer,
    /// MESSAGE
    Message,
    /// PUBLISH
    Publish,
    /// Any extension method (the name is in the message).
    Other,
}

impl Method {
    /// Classifies a method token (case-sensitive, as RFC 3261 says).
    pub fn parse(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            _ => Method::Other,
        }
    }
}

/// One header line (possibly folded over several physical lines).
#[derive(Debug, Clone)]
pub struct Header {
    /// Known name or [`HeaderName::Other`].
    pub name: HeaderName,
    /// The whole line including its CRLF, in the message buffer.
    pub line: Range<usize>,
    /// The value, trimmed, in the message buffer.
    pub value: Range<usize>,
}

/// Request or status line.
#[derive(Debug, Clone)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`.
    Request {
        /// Method.
        method: Method,
        /// Method token in the buffer.
        method_range: Range<usize>,
        /// Request-URI in the buffer.
        uri: Range<usize>,
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// Status code.
        code: u16,
        /// Reason phrase in the buffer.
        reason: Range<usize>,
    },
}

/// A received SIP message: bytes plus index.
#[derive(Debug, Clone)]
pub struct Message {
    buf: Bytes,
    start: Result<StartLine, ParseError>,
    is_request: bool,
    start_line: Range<usize>,
    headers: Vec<Header>,
    first: [u16; KNOWN_HEADERS],
    count: [u8; KNOWN_HEADERS],
    head_end: usize,
    body: Range<usize>,
    content_length: Result<Option<usize>, ParseError>,
    /// A bare CR or LF in the head: [`Message::validate`] refuses the message.
    bare_line_break: bool,
    /// The headers every handler reads, parsed once (by [`Message::validate`] or the
    /// first accessor that needs them).
    index: OnceLock<Index>,
}

const NONE: u16 = u16::MAX;

/// Where the parts of the top Via, From, To and CSeq lie, found by one parse of each:
/// the transaction key, the loop hash, the answer and the registrar all read these,
/// and before this index each of them parsed the header again.
#[derive(Debug, Clone)]
struct Index {
    top_via: Option<ViaSpans>,
    from: Option<NameAddrSpans>,
    to: Option<NameAddrSpans>,
    cseq: Option<(u32, Range<usize>)>,
    /// The Request-URI (routing reads it several times per request); a response's is
    /// `Malformed`.
    ruri: Result<UriSpans, UriError>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            top_via: None,
            from: None,
            to: None,
            cseq: None,
            ruri: Err(UriError::Malformed),
        }
    }
}

#[derive(Debug, Clone)]
struct UriSpans {
    scheme: Scheme,
    user: Option<Range<usize>>,
    password: Option<Range<usize>>,
    host: Range<usize>,
    port: Option<u16>,
    params: Range<usize>,
    headers: Range<usize>,
}

#[derive(Debug, Clone)]
struct ViaSpans {
    value: Range<usize>,
    transport: Range<usize>,
    host: Range<usize>,
    port: Option<u16>,
    params: Range<usize>,
    branch: Option<Range<usize>>,
}

#[derive(Debug, Clone)]
struct NameAddrSpans {
    display: Option<Range<usize>>,
    uri: Range<usize>,
    params: Range<usize>,
    tag: Option<Range<usize>>,
}

impl Message {
    /// The whole buffer as received.
    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }

    /// A range of the buffer as text (empty if not UTF-8, which parse rules out for
    /// the header section).
    pub fn slice(&self, r: Range<usize>) -> &str {
        if r.end <= self.head_end {
            // the head was checked once by parse: only the char boundaries are checked here
            return self.head().get(r).unwrap_or("");
        }
        self.buf
            .get(r)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The start line and headers as text.
    fn head(&self) -> &str {
        let head = self.buf.get(..self.head_end).unwrap_or(&[]);
        // SAFETY: `Message::parse` refuses a message whose bytes up to `head_end` are not
        // UTF-8 (it runs `std::str::from_utf8` on exactly this range), and neither `buf`
        // nor `head_end` changes afterwards (the only truncation, to Content-Length,
        // happens in `parse` and cuts the body, past `head_end`).
        unsafe { std::str::from_utf8_unchecked(head) }
    }

    /// Offset of `part`, a slice of this message's head, in the buffer.
    fn span_of(&self, part: &str) -> Range<usize> {
        if part.is_empty() {
            // possibly a literal "", not a slice of the buffer
            return 0..0;
        }
        let start = (part.as_ptr() as usize).wrapping_sub(self.buf.as_ptr() as usize);
        start..start + part.len()
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| self.build_index())
    }

    fn build_index(&self) -> Index {
        let first_via = self
            .header(HeaderName::Via)
            .and_then(|line| split_commas(line).next().map(|(a, b)| &line[a..b]));
        let top_via = first_via.and_then(|v| {
            let via = Via::parse(v).ok()?;
            Some(ViaSpans {
                value: self.span_of(v),
                transport: self.span_of(via.transport),
                host: self.span_of(via.host),
                port: via.port,
                params: self.span_of(via.params),
                branch: via.branch().map(|b| self.span_of(b)),
            })
        });
        let name_addr = |h: HeaderName, what: &'static str| {
            let na = NameAddr::parse(self.header(h)?, what).ok()?;
            Some(NameAddrSpans {
                display: na.display.map(|d| self.span_of(d)),
                uri: self.span_of(na.uri),
                params: self.span_of(na.params),
                tag: na.tag().map(|t| self.span_of(t)),
            })
        };
        let cseq = self
            .header(HeaderName::CSeq)
            .and_then(|v| parse_cseq(v).ok())
            .map(|(n, m)| (n, self.span_of(m)));
        let ruri = match &self.start {
            Ok(StartLine::Request { uri, .. }) => {
                Uri::parse(self.slice(uri.clone())).map(|u| UriSpans {
                    scheme: u.scheme,
                    user: u.user.map(|x| self.span_of(x)),
                    password: u.password.map(|x| self.span_of(x)),
                    host: self.span_of(u.host),
                    port: u.port,
                    params: self.span_of(u.params),
                    headers: self.span_of(u.headers),
                })
            }
            _ => Err(UriError::Malformed),
        };
        Index {
            top_via,
            from: name_addr(HeaderName::From, "From"),
            to: name_addr(HeaderName::To, "To"),
            cseq,
            ruri,
        }
    }

    /// The Request-URI parsed (once, into the index).
    pub fn ruri(&self) -> Result<Uri<'_>, UriError> {
        let u = self.index().ruri.as_ref().map_err(|e| *e)?;
        Ok(Uri {
            scheme: u.scheme,
            user: u.user.clone().map(|r| self.slice(r)),
            password: u.password.clone().map(|r| self.slice(r)),
            host: self.slice(u.host.clone()),
            port: u.port,
            params: self.slice(u.params.clone()),
            headers: self.slice(u.headers.clone()),
        })
    }

    fn name_addr(&self, s: &NameAddrSpans) -> NameAddr<'_> {
        NameAddr {
            display: s.display.clone().map(|d| self.slice(d)),
            uri: self.slice(s.uri.clone()),
            params: self.slice(s.params.clone()),
        }
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        self.is_request
    }

    /// The start line, if it parsed.
    pub fn start(&self) -> Option<&StartLine> {
        self.start.as_ref().ok()
    }

    /// Range of the start line (without CRLF).
    pub fn start_line_range(&self) -> Range<usize> {
        self.start_line.clone()
    }

    /// Request method (`None` for responses or an unparsed start line).
    pub fn method(&self) -> Option<Method> {
        match self.start {
            Ok(StartLine::Request { method, .. }) => Some(method),
            _ => None,
        }
    }

    /// Request method as written.
    pub fn method_str(&self) -> &str {
        match &self.start {
            Ok(StartLine::Request { method_range, .. }) => self.slice(method_range.clone()),
            _ => "",
        }
    }

    /// Request-URI as written.
    pub fn request_uri(&self) -> &str {
        match &self.start {
            Ok(StartLine::Request { uri, .. }) => self.slice(uri.clone()),
            _ => "",
        }
    }

    /// Range of the Request-URI in the buffer.
    pub fn request_uri_range(&self) -> Option<Range<usize>> {
        match &self.start {
            Ok(StartLine::Request { uri, .. }) => Some(uri.clone()),
            _ => None,
        }
    }

    /// Response status code.
    pub fn code(&self) -> Option<u16> {
        match self.start {
            Ok(StartLine::Response { code, .. }) => Some(code),
            _ => None,
        }
    }

    /// Response reason phrase.
    pub fn reason(&self) -> &str {
        match &self.start {
            Ok(StartLine::Response { reason, .. }) => self.slice(reason.clone()),
            _ => "",
        }
    }

    /// All header lines in order.
    pub fn header_list(&self) -> &[Header] {
        &self.headers
    }

    /// Value of a header line.
    pub fn value_of(&self, h: &Header) -> &str {
        self.slice(h.value.clone())
    }

    /// First value (whole line) of a known header.
    pub fn header(&self, name: HeaderName) -> Option<&str> {
        let i = *self.first.get(name as usize)?;
        if i == NONE {
            return None;
        }
        self.headers.get(i as usize).map(|h| self.value_of(h))
    }

    /// How many lines of a known header there are.
    pub fn count(&self, name: HeaderName) -> usize {
        self.count.get(name as usize).copied().unwrap_or(0) as usize
    }

    /// Every line of a known header, in order.
    pub fn all(&self, name: HeaderName) -> impl Iterator<Item = &str> + '_ {
        let start = self.first.get(name as usize).copied().unwrap_or(NONE);
        let skip = if start == NONE {
            self.headers.len()
        } else {
            start as usize
        };
        self.headers[skip..]
            .iter()
            .filter(move |h| h.name == name)
            .map(move |h| self.value_of(h))
    }

    /// Every comma-separated value of a list header, in order.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &str> + '_ {
        self.all(name)
            .flat_map(|v| split_commas(v).map(move |(a, b)| &v[a..b]))
    }

    /// Header line index, value range (absolute) of each comma-separated value.
    pub fn value_spans(&self, name: HeaderName) -> Vec<(usize, Range<usize>)> {
        let mut out = Vec::new();
        for (i, h) in self.headers.iter().enumerate() {
            if h.name != name {
                continue;
            }
            let v = self.value_of(h);
            for (a, b) in split_commas(v) {
                out.push((i, h.value.start + a..h.value.start + b));
            }
        }
        out
    }

    /// A header by any name, case-insensitive, for headers without a [`HeaderName`].
    pub fn header_named(&self, name: &str) -> Option<&str> {
        let want = name.trim().as_bytes();
        self.headers
            .iter()
            .find(|h| {
                // the name as written, up to the colon (blanks before it allowed), in
                // place: no text made per header line
                let Some(line) = self.buf.get(h.line.start..h.value.start) else {
                    return false;
                };
                line.get(..want.len())
                    .is_some_and(|n| n.eq_ignore_ascii_case(want))
                    && line[want.len()..]
                        .iter()
                        .find(|&&c| c != b' ' && c != b'\t')
                        == Some(&b':')
            })
            .map(|h| self.value_of(h))
    }

    /// Call-ID value.
    pub fn call_id(&self) -> &str {
        self.header(HeaderName::CallId).unwrap_or("")
    }

    /// CSeq number and method (after [`Message::validate`] succeeded).
    pub fn cseq(&self) -> (u32, &str) {
        match &self.index().cseq {
            Some((n, m)) => (*n, self.slice(m.clone())),
            None => (0, ""),
        }
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> Option<Via<'_>> {
        self.index().top_via.as_ref().map(|v| Via {
            transport: self.slice(v.transport.clone()),
            host: self.slice(v.host.clone()),
            port: v.port,
            params: self.slice(v.params.clone()),
        })
    }

    /// The CSeq method, when the CSeq header parsed.
    fn index_cseq(&self) -> Option<&str> {
        let (_, m) = self.index().cseq.as_ref()?;
        Some(self.slice(m.clone()))
    }

    /// The topmost Via value as written, if it parses.
    pub fn top_via_value(&self) -> Option<&str> {
        let v = self.index().top_via.as_ref()?;
        Some(self.slice(v.value.clone()))
    }

    /// Where the topmost Via value lies in the buffer, if it parses.
    pub fn top_via_range(&self) -> Option<Range<usize>> {
        Some(self.index().top_via.as_ref()?.value.clone())
    }

    /// The `branch` parameter of the topmost Via.
    pub fn top_branch(&self) -> Option<&str> {
        let b = self.index().top_via.as_ref()?.branch.clone()?;
        Some(self.slice(b))
    }

    /// From as a name-addr.
    pub fn from(&self) -> Option<NameAddr<'_>> {
        self.index().from.as_ref().map(|s| self.name_addr(s))
    }

    /// To as a name-addr.
    pub fn to(&self) -> Option<NameAddr<'_>> {
        self.index().to.as_ref().map(|s| self.name_addr(s))
    }

    /// From tag.
    pub fn from_tag(&self) -> &str {
        match self.index().from.as_ref().and_then(|f| f.tag.clone()) {
            Some(t) => self.slice(t),
            None => "",
        }
    }

    /// To tag.
    pub fn to_tag(&self) -> &str {
        match self.index().to.as_ref().and_then(|f| f.tag.clone()) {
            Some(t) => self.slice(t),
            None => "",
        }
    }

    /// Max-Forwards value, if present and valid.
    pub fn max_forwards(&self) -> Option<u32> {
        self.header(HeaderName::MaxForwards)
            .and_then(|v| trim_lws(v).parse().ok())
    }

    /// Message body.
    pub fn body(&self) -> &[u8] {
        self.buf.get(self.body.clone()).unwrap_or(&[])
    }

    /// Range of the body.
    pub fn body_range(&self) -> Range<usize> {
        self.body.clone()
    }

    /// End of the header section (after the last header's CRLF).
    pub fn head_end(&self) -> usize {
        self.head_end
    }

    /// Declared Content-Length, if a valid one was present.
    pub fn content_length(&self) -> Option<usize> {
        self.content_length.clone().ok().flatten()
    }

    /// True if the message can be answered: a request (not ACK) with a Via to
    /// copy. Missing From/To/Call-ID/CSeq are left out of the answer.
    pub fn answerable(&self) -> bool {
        self.is_request
            && self.count(HeaderName::Via) > 0
            && !self.start_line_bytes().starts_with(b"ACK ")
            // a Via with a bare CR or LF cannot be copied into an answer safely
            && !(self.bare_line_break
                && self
                    .values(HeaderName::Via)
                    .any(|v| has_bare_line_break(v.as_bytes())))
    }

    fn start_line_bytes(&self) -> &[u8] {
        self.buf.get(self.start_line.clone()).unwrap_or(&[])
    }
}
