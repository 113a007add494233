//! Binding events, for whoever waits on a registration (e.g. a call parked until a
//! pushed phone re-registers) or mirrors the binding set (admin views, metrics).
//!
//! Accounting is exact: every binding announced `Added` is later announced `Removed`
//! exactly once (expiry, deregistration, eviction or replacement after it expired),
//! and `Refreshed` never changes the count.

use std::sync::Arc;

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

/// One change to the binding set, published after it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingEvent {
    /// What happened.
    pub kind: BindingEventKind,
    /// The binding concerned.
    pub binding: Arc<Binding>,
}
