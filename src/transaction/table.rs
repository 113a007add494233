//! The tables that match incoming messages to live transactions.
//!
//! Keys are 64-bit SipHash values with a per-process random key, so matching costs
//! no allocation and a peer cannot aim collisions at us.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use crate::sip::Message;
use crate::transport::Flow;

/// Something for the task that owns a transaction.
#[derive(Debug)]
pub enum TxEvent {
    /// A response for client branch `branch`.
    Response {
        /// Branch index within the owning task.
        branch: usize,
        /// The response.
        msg: Box<Message>,
    },
    /// The request was retransmitted.
    Retransmission,
    /// A CANCEL matched (its 200 was already sent).
    Cancel,
    /// An ACK matched (non-2xx final).
    Ack,
    /// An event from a layer above (a binding appeared, a push finished), for the
    /// owning task to downcast; the transaction layer does not know these types.
    Upper(Box<dyn std::any::Any + Send>),
}

/// A server transaction as the table sees it.
#[derive(Debug)]
pub enum ServerEntry {
    /// Owned by a task (INVITE, or a forwarded non-INVITE).
    Task(UnboundedSender<TxEvent>),
    /// Handled locally, answer not sent yet: retransmissions are dropped.
    Pending,
    /// Handled locally and answered: retransmissions get the same answer until `until`.
    Done {
        /// The final response.
        response: Bytes,
        /// Where it went.
        flow: Flow,
        /// Timer J.
        until: Instant,
    },
}

/// What a request matched in the server table.
#[derive(Debug)]
pub enum ServerMatch {
    /// A task owns the transaction: send it the event.
    Task(UnboundedSender<TxEvent>),
    /// Answered locally: send this response again on this flow.
    Answered(Bytes, Flow),
    /// Being handled locally, no answer yet: drop the retransmission.
    Pending,
}

/// Server and client transaction tables.
#[derive(Debug, Default)]
pub struct TxTable {
    hasher: RandomState,
    server: Mutex<HashMap<u64, ServerEntry>>,
    client: Mutex<HashMap<u64, (UnboundedSender<TxEvent>, usize)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // a panic elsewhere must not take transaction matching down with it
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TxTable {
    /// The hasher keys are made with.
    pub fn hasher(&self) -> &RandomState {
        &self.hasher
    }

    /// Server key of `msg` (see [`super::server_key`]).
    pub fn server_key(&self, msg: &Message, as_method: Option<&str>) -> u64 {
        super::server_key(&self.hasher, msg, as_method)
    }

    /// Client key (see [`super::client_key`]).
    pub fn client_key(&self, branch: &str, method: &str) -> u64 {
        super::client_key(&self.hasher, branch, method)
    }

    /// Inserts a server entry unless one exists. Returns false if it existed (a
    /// retransmission raced us).
    pub fn insert_server(&self, key: u64, entry: ServerEntry) -> bool {
        let mut t = lock(&self.server);
        if t.contains_key(&key) {
            return false;
        }
        t.insert(key, entry);
        true
    }

    /// Replaces a server entry.
    pub fn set_server(&self, key: u64, entry: ServerEntry) {
        lock(&self.server).insert(key, entry);
    }

    /// Looks a request up; `None` means it starts a new transaction.
    pub fn lookup_server(&self, key: u64) -> Option<ServerMatch> {
        let t = lock(&self.server);
        Some(match t.get(&key)? {
            ServerEntry::Task(tx) => ServerMatch::Task(tx.clone()),
            ServerEntry::Pending => ServerMatch::Pending,
            ServerEntry::Done { response, flow, .. } => {
                ServerMatch::Answered(response.clone(), *flow)
            }
        })
    }

    /// Forgets a server transaction.
    pub fn remove_server(&self, key: u64) {
        lock(&self.server).remove(&key);
    }

    /// Registers a client branch owned by a task.
    pub fn insert_client(&self, key: u64, tx: UnboundedSender<TxEvent>, branch: usize) {
        lock(&self.client).insert(key, (tx, branch));
    }

    /// The task and branch index a response belongs to.
    pub fn lookup_client(&self, key: u64) -> Option<(UnboundedSender<TxEvent>, usize)> {
        lock(&self.client).get(&key).cloned()
    }

    /// Forgets a client branch.
    pub fn remove_client(&self, key: u64) {
        lock(&self.client).remove(&key);
    }

    /// Drops locally answered entries whose Timer J ran out. Returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut t = lock(&self.server);
        t.retain(|_, e| !matches!(e, ServerEntry::Done { until, .. } if *until <= now));
        t.len()
    }

    /// Sizes of the server and client tables.
    pub fn sizes(&self) -> (usize, usize) {
        (lock(&self.server).len(), lock(&self.client).len())
    }

    /// The tasks owning server transactions now (for the admin API's `/calls`).
    pub fn server_tasks(&self) -> Vec<UnboundedSender<TxEvent>> {
        lock(&self.server)
            .values()
            .filter_map(|e| match e {
                ServerEntry::Task(tx) => Some(tx.clone()),
                _ => None,
            })
            .collect()
    }
}
