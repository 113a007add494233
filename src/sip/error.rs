//! Why a message could not be parsed, and which answer that deserves.

/// A fault found while parsing a SIP message.
///
/// Each variant maps to a status code and a reason phrase that names the fault, so
/// that a peer reading our `400` learns what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes do not start with a request or status line we understand.
    #[error("Malformed start line")]
    StartLine,
    /// The Request-URI is not a URI.
    #[error("Malformed Request-URI")]
    RequestUri,
    /// The Request-URI uses a scheme other than sip, sips or tel.
    #[error("Unsupported URI Scheme")]
    UnsupportedScheme,
    /// The SIP version is not 2.0.
    #[error("Version Not Supported")]
    Version,
    /// A header line has no colon or an invalid name.
    #[error("Malformed header line")]
    HeaderLine,
    /// A CR or LF that is not part of a CRLF, inside a header value.
    #[error("Bare CR or LF in a header value")]
    BareLineBreak,
    /// The end of the header section was not found.
    #[error("Incomplete message")]
    Incomplete,
    /// A mandatory header is missing.
    #[error("Missing {0} header")]
    Missing(&'static str),
    /// A single-valued header appears more than once.
    #[error("Multiple {0} headers")]
    Multiple(&'static str),
    /// A header's value does not follow its grammar.
    #[error("Malformed {0} header")]
    Malformed(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match request method")]
    CSeqMethod,
    /// Content-Length promises more bytes than arrived.
    #[error("Content-Length larger than message")]
    BodyTooShort,
    /// The message exceeds the configured size limit.
    #[error("Message Too Large")]
    TooLarge,
}

impl ParseError {
    /// The status code a request with this fault is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::UnsupportedScheme => 416,
            ParseError::Version => 505,
            ParseError::TooLarge => 513,
            _ => 400,
        }
    }
}
