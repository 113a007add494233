//! SIP message model: parsing, header access, building responses and forwarded
//! messages. No I/O here.
//!
//! sipwake parses with its own zero-copy indexer instead of a typed model such as
//! rsip: a proxy must forward every byte it does not change exactly as it came
//! (digest `uri=` checks, parameter order, unknown headers), so it needs byte
//! positions, not a re-serializable tree, and it must not allocate per header on the
//! hot path. Everything outside this module uses only the types re-exported here, so
//! the parser can be swapped.

pub mod builder;
pub mod error;
pub mod header;
pub mod message;
pub mod uri;

pub use builder::{reason_phrase, response, Splice};
pub use error::ParseError;
pub use header::{HeaderName, NameAddr, Via};
pub use message::{Message, Method};
pub use uri::{Scheme, Uri};
