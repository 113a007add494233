//! SIP message model: parsing, header access, building responses and forwarded
//! messages. No I/O here.
//!
//! sipwake parses with its own zero-copy indexer instead of a typed model such as
//! rsip: a proxy must forward every byte it does not change exactly as it came
//! (digest `uri=` checks, parameter order, unknown headers), so it needs byte
//! positions, not a re-serializable tree, and it must not allocate per header on the
//! hot path. The submodules are private: everything outside uses only what is re-exported here, so
//! the parser can be swapped.

mod builder;
mod error;
mod header;
mod message;
mod uri;

pub use builder::{
    host_is_ip, local_tag, push_decimal, push_ip, push_socket_addr, reason_phrase, response,
    write_top_via, Splice,
};
pub use error::ParseError;
pub use header::{param, params, parse_cseq, split_commas, unquote, HeaderName, NameAddr, Via};
pub use message::{memmem, stream_frame_len, Message, Method};
pub use uri::{param_in, unescape, Scheme, Uri};
