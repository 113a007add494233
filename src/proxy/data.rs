//! Plain data the proxy's modules hand each other: where a request goes ([`Target`],
//! [`Next`]), our own Route entries popped off it ([`OwnRoutes`]), how a request for
//! a local user is handled ([`Decision`]), the push side of a call ([`PushPlan`]),
//! and what a call's task hears besides its transactions ([`CallEvent`]).
//!
//! A leaf: it imports nothing from the rest of `proxy`, and every module that acts
//! on these types imports them from here, so dependencies between `route`, `relay`,
//! `wake`, `forward` and `pushing` point one way.

use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::push::{CallPush, PushInfo, PushResult};
use crate::registrar::Binding;
use crate::sip::{Message, Scheme};
use crate::transaction::TxEvent;
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
    msg.ruri().is_ok_and(|u| u.scheme == Scheme::Sips)
}

/// What a forwarding task hears from the rest of sipwake, on the channel its
/// transactions use (so it comes in order with their responses).
#[derive(Debug)]
pub enum CallEvent {
    /// A binding of the AOR the call is parked for was added or refreshed (see
    /// [`crate::registrar::BindingEvents`]): a woken phone, local or remote.
    Woken(Arc<Binding>),
    /// The push to device `device` of the call's [`PushPlan`] finished.
    PushDone {
        /// Index into [`PushPlan::devices`].
        device: usize,
        /// What the provider said.
        result: PushResult,
    },
    /// The admin API's `/calls` asks for a [`CallView`]; tasks that are not an
    /// unanswered INVITE drop the sender instead of answering.
    Describe(oneshot::Sender<CallView>),
    /// A woken phone's binding is held by another node of the cluster: the way to
    /// that node, resolved off the task. Boxed: this variant would make every
    /// event twice the size of the others, and a call's task keeps an empty event
    /// node for as long as it lives (issue 13, bytes per parked call).
    WokenVia(Box<WokenVia>),
}

/// A woken phone held by another node, and the way to it ([`CallEvent::WokenVia`]).
#[derive(Debug)]
pub struct WokenVia {
    /// The woken binding.
    pub binding: Arc<Binding>,
    /// To the node holding the phone's flow.
    pub flow: Flow,
    /// Route set: that node (with the flow token), then the binding's Path.
    pub path: Vec<String>,
}

/// The events of a task that owns a transaction: the transaction layer's and ours.
pub type TaskEvent = TxEvent<CallEvent>;

/// One INVITE without a final answer yet.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    /// Call-ID of the INVITE.
    pub call_id: String,
    /// From header as received.
    pub from: String,
    /// To header as received.
    pub to: String,
    /// Milliseconds since the INVITE arrived.
    pub age_ms: u64,
    /// `parked` (waiting for a pushed phone, nothing ringing), `ringing` (a branch
    /// sent a provisional above 100) or `trying` (forwarded, no ringing yet).
    pub state: &'static str,
    /// The call waits for a pushed phone to register (also while something rings).
    pub parked: bool,
    /// The called AOR, when the call pushed.
    pub aor: Option<String>,
    /// Branches forwarded so far.
    pub branches: usize,
    /// Branches still waiting for a final answer.
    pub pending_branches: usize,
    /// Devices pushed for this call.
    pub pushed_devices: usize,
}

/// Waits until the deadline of a call's task, or forever when it has none (a
/// `select!` arm that never fires).
pub async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    /// Each event queued for a call's task is a node of its own
    /// ([`crate::transaction::TaskSender`]), and the queue keeps one empty node: the
    /// event stays small, its rare large variants boxed.
    #[test]
    fn a_call_event_stays_small() {
        let event = std::mem::size_of::<super::TaskEvent>();
        assert!(event <= 32, "{event} bytes");
    }
}
