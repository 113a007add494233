//! Binding events, for whoever waits on a registration (a call parked until a pushed
//! phone re-registers: the proxy's parked-call index is a [`BindingSink`]) or mirrors
//! the binding set (admin views, metrics). [`BindingEvents`] is the one stream they
//! all come from, local and (in a cluster) remote alike.
//!
//! Accounting is exact: every binding announced `Added` is later announced `Removed`
//! exactly once (expiry, deregistration, eviction or replacement after it expired),
//! and `Refreshed` never changes the count.

use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;

use tokio::sync::broadcast;

use super::Binding;

/// What happened to a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BindingEventKind {
    /// A new binding (its key had no live binding before).
    Added,
    /// A live binding was re-registered; the event carries its new contents, which may
    /// name a new contact or flow (an instance registering from a new address).
    Refreshed,
    /// The binding is gone; the event carries its last contents.
    Removed,
}

/// Where a binding event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventOrigin {
    /// This node's registrar made the change.
    Local,
    /// Another node announced it (a cluster); whoever forwards local events to other
    /// nodes must skip these, or they would echo back and forth.
    Remote,
}

/// One change to the binding set, published after it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingEvent {
    /// What happened.
    pub kind: BindingEventKind,
    /// The binding concerned.
    pub binding: Arc<Binding>,
    /// This node's change, or another node's.
    pub origin: EventOrigin,
}

impl BindingEvent {
    /// A change this node's registrar made.
    pub fn local(kind: BindingEventKind, binding: Arc<Binding>) -> BindingEvent {
        BindingEvent {
            kind,
            binding,
            origin: EventOrigin::Local,
        }
    }

    /// A change another node announced, to publish into this node's stream.
    pub fn remote(kind: BindingEventKind, binding: Arc<Binding>) -> BindingEvent {
        BindingEvent {
            kind,
            binding,
            origin: EventOrigin::Remote,
        }
    }
}

/// Something that must see every binding event at once, on the thread that
/// publishes it (e.g. the index of parked calls, which hands a woken binding to the
/// calls waiting for it). It must be quick and must not block: it runs on the path
/// of a REGISTER's answer.
pub trait BindingSink: Send + Sync {
    /// One event, as published.
    fn on_binding_event(&self, event: &BindingEvent);
}

/// The one stream of binding events, and its entry point.
///
/// Every change to the binding set reaches it through [`BindingEvents::publish`]: the
/// local registrar's commits ([`EventOrigin::Local`]), and the events another node
/// announces (a cluster subscribes to them and publishes each one here as
/// [`BindingEvent::remote`]), so that a phone registering on any node wakes the calls
/// parked on this one the same way. Each event first goes
/// to the [sinks](BindingSink) in the order they were added, synchronously, then to
/// the async subscribers ([`BindingEvents::subscribe`]).
#[derive(Clone)]
pub struct BindingEvents {
    broadcast: broadcast::Sender<BindingEvent>,
    sinks: Arc<RwLock<Vec<Arc<dyn BindingSink>>>>,
}

impl fmt::Debug for BindingEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindingEvents")
            .field("subscribers", &self.broadcast.receiver_count())
            .finish_non_exhaustive()
    }
}

impl BindingEvents {
    /// A stream whose async subscribers may fall up to `capacity` events behind.
    pub fn new(capacity: usize) -> BindingEvents {
        BindingEvents {
            broadcast: broadcast::channel(capacity).0,
            sinks: Arc::default(),
        }
    }

    /// Announces one event: to every sink, then to every subscriber.
    pub fn publish(&self, event: BindingEvent) {
        for sink in self.sinks.read().iter() {
            sink.on_binding_event(&event);
        }
        // An error only means nobody is subscribed right now.
        let _ = self.broadcast.send(event);
    }

    /// Adds a sink that sees every event published from now on.
    pub fn add_sink(&self, sink: Arc<dyn BindingSink>) {
        self.sinks.write().push(sink);
    }

    /// Receives every event published from now on (a slow receiver loses the oldest
    /// ones and is told so).
    pub fn subscribe(&self) -> broadcast::Receiver<BindingEvent> {
        self.broadcast.subscribe()
    }
}

/// The events of one registrar change, published when this is dropped.
///
/// A REGISTER handler holds it until its answer has gone out, so the INVITE of a
/// call the REGISTER wakes always follows the 200 OK on the phone's flow.
#[must_use = "dropping it publishes the events"]
pub struct PendingEvents {
    events: Vec<BindingEvent>,
    to: BindingEvents,
}

impl PendingEvents {
    pub(super) fn new(events: Vec<BindingEvent>, to: BindingEvents) -> PendingEvents {
        PendingEvents { events, to }
    }

    /// Publishes the events now.
    pub fn publish(self) {
        drop(self);
    }
}

impl fmt::Debug for PendingEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingEvents")
            .field("events", &self.events.len())
            .finish()
    }
}

impl Drop for PendingEvents {
    fn drop(&mut self) {
        for event in self.events.drain(..) {
            self.to.publish(event);
        }
    }
}
