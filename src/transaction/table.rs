//! The tables that match incoming messages to live transactions.
//!
//! Keys are 64-bit SipHash values with a per-process random key, so matching costs
//! no allocation and a peer cannot aim collisions at us. The maps use those keys as
//! their own hash ([`PreHashedState`]) instead of hashing them again.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;

use super::mailbox::TaskSender;
use crate::parted::Parted;
use crate::prehashed::PreHashedState;
use crate::sip::Message;
use crate::transport::Flow;

/// Something for the task that owns a transaction. `U` is what the layer above
/// sends its own tasks on the same channel (the proxy's call events), so that they
/// arrive in order with the transaction's own events and typed.
#[derive(Debug)]
pub enum TxEvent<U> {
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
    /// An event from the layer above (a binding woke, a push finished); the
    /// transaction layer only carries it.
    Upper(U),
}

/// A server transaction as the table sees it.
#[derive(Debug)]
pub enum ServerEntry<U> {
    /// Owned by a task (INVITE, or a forwarded non-INVITE).
    Task(TaskSender<TxEvent<U>>),
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
pub enum ServerMatch<U> {
    /// A task owns the transaction: send it the event.
    Task(TaskSender<TxEvent<U>>),
    /// Answered locally: send this response again on this flow.
    Answered(Bytes, Flow),
    /// Being handled locally, no answer yet: drop the retransmission.
    Pending,
}

/// The task a client branch belongs to, and the branch's index within it.
type ClientEntry<U> = (TaskSender<TxEvent<U>>, usize);

/// Server and client transaction tables.
#[derive(Debug)]
pub struct TxTable<U> {
    hasher: RandomState,
    // in parts: a quarter of a million REGISTERs in Timer J made one map's doubling
    // hold this lock for 9–26 ms (see `crate::parted`)
    server: Mutex<Parted<ServerEntry<U>, PreHashedState>>,
    client: Mutex<Parted<ClientEntry<U>, PreHashedState>>,
    /// When each answered entry's Timer J runs out, in the order they were answered.
    /// Timer J is the same length for all, so this is (nearly) sorted and the sweep
    /// only looks at what expired instead of walking the whole table under its lock.
    expiries: Mutex<VecDeque<(Instant, u64)>>,
}

/// Entries the sweep removes per hold of the table's lock, so matching never waits
/// long behind it (a few tenths of a millisecond).
pub const SWEEP_CHUNK: usize = 128;

fn done_until<U>(e: &ServerEntry<U>) -> Option<Instant> {
    match e {
        ServerEntry::Done { until, .. } => Some(*until),
        _ => None,
    }
}

impl<U> Default for TxTable<U> {
    fn default() -> Self {
        TxTable {
            hasher: RandomState::default(),
            server: Mutex::default(),
            client: Mutex::default(),
            expiries: Mutex::default(),
        }
    }
}

impl<U> TxTable<U> {
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
    pub fn insert_server(&self, key: u64, entry: ServerEntry<U>) -> bool {
        let until = done_until(&entry);
        {
            let mut t = self.server.lock();
            if t.contains_key(&key) {
                return false;
            }
            t.insert(key, entry);
        }
        self.expire_at(until, key);
        true
    }

    /// Replaces a server entry.
    pub fn set_server(&self, key: u64, entry: ServerEntry<U>) {
        let until = done_until(&entry);
        self.server.lock().insert(key, entry);
        self.expire_at(until, key);
    }

    fn expire_at(&self, until: Option<Instant>, key: u64) {
        if let Some(until) = until {
            self.expiries.lock().push_back((until, key));
        }
    }

    /// Looks a request up; `None` means it starts a new transaction.
    pub fn lookup_server(&self, key: u64) -> Option<ServerMatch<U>> {
        let t = self.server.lock();
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
        self.server.lock().remove(&key);
    }

    /// Registers a client branch owned by a task.
    pub fn insert_client(&self, key: u64, tx: TaskSender<TxEvent<U>>, branch: usize) {
        self.client.lock().insert(key, (tx, branch));
    }

    /// The task and branch index a response belongs to.
    pub fn lookup_client(&self, key: u64) -> Option<ClientEntry<U>> {
        self.client.lock().get(&key).cloned()
    }

    /// Forgets a client branch.
    pub fn remove_client(&self, key: u64) {
        self.client.lock().remove(&key);
    }

    /// Drops locally answered entries whose Timer J ran out. Returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        loop {
            let (left, more) = self.sweep_slice(now, SWEEP_CHUNK);
            if !more {
                return left;
            }
        }
    }

    /// One slice of [`TxTable::sweep`]: drops at most `max` entries whose Timer J ran
    /// out by `now`, under one hold of each lock; their memory is freed after the
    /// locks are released. Returns how many server entries remain and whether more
    /// may be due. At 8,000 REGISTERs/s, 8,000 entries run out every second: a caller
    /// on the runtime pauses between slices so messages do not wait behind them all.
    pub fn sweep_slice(&self, now: Instant, max: usize) -> (usize, bool) {
        let due: Vec<u64> = {
            let mut q = self.expiries.lock();
            let n = q.iter().take(max).take_while(|e| e.0 <= now).count();
            q.drain(..n).map(|e| e.1).collect()
        };
        let mut gone = Vec::with_capacity(due.len());
        let left = {
            let mut t = self.server.lock();
            for key in &due {
                // the key may have been reused by a newer transaction since
                if matches!(t.get(key), Some(ServerEntry::Done { until, .. }) if *until <= now) {
                    gone.extend(t.remove(key));
                }
            }
            // the room a peak left behind goes back, one part per slice
            t.shrink_emptied(1);
            t.len()
        };
        drop(gone);
        (left, due.len() == max)
    }

    /// Sizes of the server and client tables.
    pub fn sizes(&self) -> (usize, usize) {
        (self.server.lock().len(), self.client.lock().len())
    }

    /// The tasks owning server transactions now (for the admin API's `/calls`).
    pub fn server_tasks(&self) -> Vec<TaskSender<TxEvent<U>>> {
        self.server
            .lock()
            .values()
            .filter_map(|e| match e {
                ServerEntry::Task(tx) => Some(tx.clone()),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn done(until: Instant) -> ServerEntry<()> {
        ServerEntry::Done {
            response: Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n"),
            flow: Flow::Udp {
                socket: 0,
                remote: "127.0.0.1:5060".parse().unwrap(),
            },
            until,
        }
    }

    #[test]
    fn sweep_removes_only_what_expired() {
        let t = TxTable::<()>::default();
        let now = Instant::now();
        for k in 0..3000u64 {
            t.set_server(k, done(now - Duration::from_millis(1)));
        }
        t.set_server(5000, done(now + Duration::from_secs(30)));
        // a key answered long ago, now owned by a new transaction
        t.set_server(7, ServerEntry::Pending);
        assert_eq!(t.sweep(now), 2, "the live entry and the reused key");
        assert!(matches!(t.lookup_server(7), Some(ServerMatch::Pending)));
        assert!(t.lookup_server(1).is_none());
        assert!(t.lookup_server(5000).is_some());
        assert_eq!(t.sweep(now + Duration::from_secs(31)), 1, "Pending stays");
    }

    #[test]
    fn sweep_slices_take_at_most_max_and_say_when_more_is_due() {
        let t = TxTable::<()>::default();
        let now = Instant::now();
        for k in 0..10u64 {
            t.set_server(k, done(now - Duration::from_millis(1)));
        }
        t.set_server(99, done(now + Duration::from_secs(30)));
        assert_eq!(t.sweep_slice(now, 4), (7, true));
        assert_eq!(t.sweep_slice(now, 4), (3, true));
        assert_eq!(
            t.sweep_slice(now, 4),
            (1, false),
            "only the live entry stays"
        );
        assert_eq!(t.sweep_slice(now, 4), (1, false), "nothing due stays");
        assert!(t.lookup_server(99).is_some());
    }
}
