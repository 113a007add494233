//! RFC 3261 §17 transactions (with the RFC 6026 Accepted state), as sans-I/O state
//! machines driven by the proxy, plus the tables that match incoming messages to
//! them.
//!
//! The state machines never touch sockets: they say what to do (retransmit, time
//! out, absorb, pass up) and the owner of the transaction does it. That keeps them
//! testable without a network and lets one task own a whole forked call.

pub mod client;
pub mod key;
pub mod mailbox;
pub mod server;
pub mod table;

use std::time::Duration;

pub use client::{ClientAction, ClientTx, Disposition};
pub use key::{client_key, server_key, BranchGen};
pub use mailbox::{task_channel, TaskReceiver, TaskSender};
pub use server::{ServerAction, ServerTx};
pub use table::{ServerEntry, TxEvent, TxTable};

/// The protocol timers.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// T1, round-trip estimate.
    pub t1: Duration,
    /// T2, largest non-INVITE retransmit interval.
    pub t2: Duration,
    /// T4, how long a message lives in the network.
    pub t4: Duration,
    /// Timer C, proxy INVITE branch lifetime without a final response.
    pub timer_c: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(180),
        }
    }
}

impl Timers {
    /// 64·T1: timers B, F, H, J, L, M.
    pub fn t64(&self) -> Duration {
        self.t1 * 64
    }
}

/// Whether a transaction is for INVITE (different state machines) or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// INVITE.
    Invite,
    /// Every other method but ACK.
    NonInvite,
}
