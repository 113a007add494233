//! Plain data the proxy's modules hand each other: where a request goes ([`Target`],
//! [`Next`]), our own Route entries popped off it ([`OwnRoutes`]), how a request for
//! a local user is handled ([`Decision`]) and the push side of a call ([`PushPlan`]).
//!
//! A leaf: it imports nothing from the rest of `proxy`, and every module that acts
//! on these types imports them from here, so dependencies between `route`, `relay`,
//! `wake`, `forward` and `pushing` point one way.

use std::ops::Range;

use crate::push::{CallPush, PushInfo};
use crate::sip::{Message, Scheme, Uri};
use crate::transport::Flow;

/// Where a branch goes.
#[derive(Debug, Clone)]
pub enum Next {
    /// A known flow (a binding's, or a dialog leg from a flow token).
    Flow(Flow),
    /// The address a URI names (Route, Request-URI).
    Uri(String),
    /// The configured upstream.
    Upstream,
}

/// One destination of a fork.
#[derive(Debug, Clone)]
pub struct Target {
    /// New Request-URI (a binding's Contact), or keep.
    pub ruri: Option<String>,
    /// Next hop.
    pub next: Next,
    /// Path of the binding: becomes Route headers.
    pub path: Vec<String>,
    /// Index of the pushed device this target reaches, if any.
    pub device: Option<usize>,
}

impl Target {
    /// One destination that keeps the Request-URI and adds no Route.
    pub fn to(next: Next) -> Target {
        Target {
            ruri: None,
            next,
            path: Vec::new(),
            device: None,
        }
    }
}

/// Our own Route entries at the top of a request, and the flow token they carried.
#[derive(Debug, Default)]
pub struct OwnRoutes {
    /// Ranges of the Route values that name us.
    pub ranges: Vec<Range<usize>>,
    /// Flows from the first valid flow token.
    pub token: Option<(Option<Flow>, Option<Flow>)>,
    /// The first Route value that is not ours, if any.
    pub next: Option<String>,
    /// Several nodes: the request comes from another node for a phone whose flow we
    /// hold (its Route carried a token only nodes mint), so the wake hint it carries
    /// is ours and passes.
    pub from_node: bool,
}

/// A device to push for one call.
#[derive(Debug, Clone)]
pub struct PushDevice {
    /// Binding key (device identity within the AOR).
    pub key: String,
    /// Where to push.
    pub info: PushInfo,
    /// The device got the INVITE (so no cancel notice is due).
    pub got_invite: bool,
    /// The push went out (only then a cancel notice makes sense).
    pub pushed: bool,
    /// The provider refused the push or reported the token dead: no notice follows.
    pub failed: bool,
}

/// The push side of one call.
#[derive(Debug, Clone)]
pub struct PushPlan {
    /// The called AOR (where woken bindings appear).
    pub aor: String,
    /// The per-call hint, in the push and in `X-PushHint`.
    pub hint: String,
    /// What the pushes carry.
    pub call: CallPush,
    /// Devices pushed.
    pub devices: Vec<PushDevice>,
}

/// How a local user's request is to be handled.
#[derive(Debug)]
pub enum Decision {
    /// Forward to these targets (with pushes when a plan is given).
    Forward(Vec<Target>, Option<Box<PushPlan>>),
    /// Answer this final response.
    Answer(u16, &'static str),
}

/// True for a request whose Request-URI is `sips:`: every hop it takes must be TLS
/// (RFC 3261 §26.2.2, RFC 5630).
pub fn sips_request(msg: &Message) -> bool {
    Uri::parse(msg.request_uri()).is_ok_and(|u| u.scheme == Scheme::Sips)
}
