//! A SIP message as received: the original bytes plus an index of where each part
//! lies. Nothing is copied or re-serialized; forwarding splices edits into the bytes
//! (see [`super::builder::Splice`]).
//!
//! This file is the model and what the rest of sipwake asks of a message; `parse.rs`
//! below it builds the index from the bytes and checks the grammar.

use std::ops::Range;

use bytes::Bytes;

use super::error::ParseError;
use super::header::{parse_cseq, split_commas, trim_lws, HeaderName, NameAddr, Via, KNOWN_HEADERS};
use super::uri::{is_token, Uri, UriError};

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
}

const NONE: u16 = u16::MAX;

impl Message {
    /// The whole buffer as received.
    pub fn bytes(&self) -> &Bytes {
        &self.buf
    }

    /// A range of the buffer as text (empty if not UTF-8, which parse rules out for
    /// the header section).
    pub fn slice(&self, r: Range<usize>) -> &str {
        self.buf
            .get(r)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
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
        self.headers
            .iter()
            .find(|h| {
                let line = self.slice(h.line.clone());
                line.split(':')
                    .next()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
            })
            .map(|h| self.value_of(h))
    }

    /// Call-ID value.
    pub fn call_id(&self) -> &str {
        self.header(HeaderName::CallId).unwrap_or("")
    }

    /// CSeq number and method (after [`Message::validate`] succeeded).
    pub fn cseq(&self) -> (u32, &str) {
        parse_cseq(self.header(HeaderName::CSeq).unwrap_or("")).unwrap_or((0, ""))
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> Option<Via<'_>> {
        self.values(HeaderName::Via)
            .next()
            .and_then(|v| Via::parse(v).ok())
    }

    /// From as a name-addr.
    pub fn from(&self) -> Option<NameAddr<'_>> {
        self.header(HeaderName::From)
            .and_then(|v| NameAddr::parse(v, "From").ok())
    }

    /// To as a name-addr.
    pub fn to(&self) -> Option<NameAddr<'_>> {
        self.header(HeaderName::To)
            .and_then(|v| NameAddr::parse(v, "To").ok())
    }

    /// From tag.
    pub fn from_tag(&self) -> &str {
        self.from().and_then(|f| f.tag()).unwrap_or("")
    }

    /// To tag.
    pub fn to_tag(&self) -> &str {
        self.to().and_then(|f| f.tag()).unwrap_or("")
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
