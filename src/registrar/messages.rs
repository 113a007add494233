//! MESSAGEs (RFC 3428) kept for sleeping phones until they register again.
//!
//! A phone asleep behind a push token cannot take a MESSAGE; sipwake keeps it in the
//! same durable [`Store`] as the bindings (so it survives a restart; several nodes
//! keep them in Redis instead, `redis_messages.rs`), answers `202 Accepted`, and
//! hands the stored messages over in arrival order once the phone registers again. This module is the data side: the
//! stored message, the per-AOR queues in memory, the caps (per AOR, in total) and the
//! time to live. Delivery over SIP is the proxy's (`proxy::message`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

pub use super::store::StoredMessage;
use super::store::{Store, StoreError, StoreOp};

/// Caps of the message store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRules {
    /// Most messages kept for one AOR.
    pub max_per_aor: usize,
    /// Most messages kept in total.
    pub max_total: usize,
}

impl Default for MessageRules {
    fn default() -> Self {
        MessageRules {
            max_per_aor: 100,
            max_total: 100_000,
        }
    }
}

/// Why a message was not stored.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// The AOR already has `max_per_aor` messages waiting.
    #[error("{0} messages already wait for this user")]
    AorFull(usize),
    /// The store holds `max_total` messages.
    #[error("the message store is full ({0} messages)")]
    StoreFull(usize),
    /// The store failed to write it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The messages waiting, per AOR in arrival order, mirrored in the [`Store`].
pub struct MessageQueue {
    store: Arc<dyn Store>,
    rules: Mutex<MessageRules>,
    inner: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    by_aor: HashMap<String, VecDeque<Arc<StoredMessage>>>,
    total: usize,
    next_seq: u64,
}

impl std::fmt::Debug for MessageQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageQueue")
            .field("total", &self.inner.lock().total)
            .finish_non_exhaustive()
    }
}

impl MessageQueue {
    /// The queue over `store`, loading what it holds (blocks: call at startup).
    pub fn load(store: Arc<dyn Store>) -> Result<MessageQueue, StoreError> {
        let mut stored = store.load_messages()?;
        stored.sort_by_key(|m| m.seq);
        let mut q = Queues::default();
        for m in stored {
            q.next_seq = q.next_seq.max(m.seq + 1);
            q.total += 1;
            q.by_aor
                .entry(m.aor.clone())
                .or_default()
                .push_back(Arc::new(m));
        }
        Ok(MessageQueue {
            store,
            rules: Mutex::new(MessageRules::default()),
            inner: Mutex::new(q),
        })
    }

    /// An empty queue over `store`, which is not read.
    pub fn empty(store: Arc<dyn Store>) -> MessageQueue {
        MessageQueue {
            store,
            rules: Mutex::new(MessageRules::default()),
            inner: Mutex::new(Queues::default()),
        }
    }

    /// Sets the caps (at startup).
    pub fn set_rules(&self, rules: MessageRules) {
        *self.rules.lock() = rules;
    }

    /// Keeps `msg` (its `seq` is assigned here) and returns once it is durable.
    pub async fn keep(&self, mut msg: StoredMessage) -> Result<Arc<StoredMessage>, KeepError> {
        let rules = *self.rules.lock();
        let rx = {
            let mut q = self.inner.lock();
            if q.total >= rules.max_total {
                return Err(KeepError::StoreFull(q.total));
            }
            let waiting = q.by_aor.get(&msg.aor).map_or(0, VecDeque::len);
            if waiting >= rules.max_per_aor {
                return Err(KeepError::AorFull(waiting));
            }
            msg.seq = q.next_seq;
            q.next_seq += 1;
            q.total += 1;
            let msg = Arc::new(msg);
            q.by_aor
                .entry(msg.aor.clone())
                .or_default()
                .push_back(Arc::clone(&msg));
            // submitted under the lock: the store sees messages in `seq` order
            (
                msg.clone(),
                self.store.submit(vec![StoreOp::PutMessage(msg)]),
            )
        };
        let (msg, rx) = rx;
        match rx.await.unwrap_or(Err(StoreError::Closed)) {
            Ok(()) => Ok(msg),
            Err(e) => {
                self.forget(&msg.aor, &msg.id);
                Err(e.into())
            }
        }
    }

    /// The messages waiting for `aor`, oldest first, expired ones left out.
    pub fn waiting(&self, aor: &str, now_ms: u64) -> Vec<Arc<StoredMessage>> {
        self.inner
            .lock()
            .by_aor
            .get(aor)
            .map(|q| {
                q.iter()
                    .filter(|m| m.expires_at_ms > now_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether anything waits for `aor`.
    pub fn has_waiting(&self, aor: &str) -> bool {
        self.inner.lock().by_aor.contains_key(aor)
    }

    /// Messages waiting in total.
    pub fn len(&self) -> usize {
        self.inner.lock().total
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes a message (delivered, or given up); the store write is not awaited (a
    /// message delivered again after a crash is recognisable by its Call-ID / CSeq).
    pub fn remove(&self, aor: &str, id: &str) {
        if self.forget(aor, id) {
            self.store.submit_then(
                vec![StoreOp::DeleteMessage { id: id.to_owned() }],
                Box::new(|r| {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "message removal not stored");
                    }
                }),
            );
        }
    }

    /// Drops from memory only; true if it was there.
    fn forget(&self, aor: &str, id: &str) -> bool {
        let mut q = self.inner.lock();
        let Some(list) = q.by_aor.get_mut(aor) else {
            return false;
        };
        let Some(i) = list.iter().position(|m| m.id == id) else {
            return false;
        };
        list.remove(i);
        if list.is_empty() {
            q.by_aor.remove(aor);
        }
        q.total -= 1;
        true
    }

    /// Removes every message expired at `now_ms` and returns them.
    pub fn sweep(&self, now_ms: u64) -> Vec<Arc<StoredMessage>> {
        let mut gone = Vec::new();
        {
            let mut q = self.inner.lock();
            q.by_aor.retain(|_, list| {
                list.retain(|m| {
                    if m.expires_at_ms > now_ms {
                        return true;
                    }
                    gone.push(Arc::clone(m));
                    false
                });
                !list.is_empty()
            });
            q.total -= gone.len();
        }
        if !gone.is_empty() {
            let ops = gone
                .iter()
                .map(|m| StoreOp::DeleteMessage { id: m.id.clone() })
                .collect();
            self.store.submit_then(
                ops,
                Box::new(|r| {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "expired messages not removed from the store");
                    }
                }),
            );
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::MemoryStore;

    pub(crate) fn message(aor: &str, id: &str, expires_at_ms: u64) -> StoredMessage {
        StoredMessage {
            id: id.into(),
            aor: aor.into(),
            seq: 0,
            from: "<sip:bob@example.com>;tag=1".into(),
            to: format!("<sip:{aor}>"),
            call_id: format!("{id}@test"),
            cseq: 1,
            content_type: Some("text/plain".into()),
            body: b"hello".to_vec(),
            received_at_ms: 1,
            expires_at_ms,
        }
    }

    #[tokio::test]
    async fn kept_in_order_capped_and_swept() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let q = MessageQueue::load(Arc::clone(&store)).unwrap();
        q.set_rules(MessageRules {
            max_per_aor: 2,
            max_total: 3,
        });
        q.keep(message("a@x", "1", 100)).await.unwrap();
        q.keep(message("a@x", "2", 200)).await.unwrap();
        assert!(matches!(
            q.keep(message("a@x", "3", 200)).await,
            Err(KeepError::AorFull(2))
        ));
        q.keep(message("b@x", "4", 200)).await.unwrap();
        assert!(matches!(
            q.keep(message("c@x", "5", 200)).await,
            Err(KeepError::StoreFull(3))
        ));
        let ids = |v: Vec<Arc<StoredMessage>>| v.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(q.waiting("a@x", 50)), ["1", "2"]);
        assert_eq!(
            ids(q.waiting("a@x", 150)),
            ["2"],
            "expired ones are left out"
        );

        // a restart reads them back in order
        let again = MessageQueue::load(Arc::clone(&store)).unwrap();
        assert_eq!(ids(again.waiting("a@x", 50)), ["1", "2"]);
        assert_eq!(again.len(), 3);

        assert_eq!(ids(q.sweep(150)), ["1"]);
        q.remove("a@x", "2");
        assert!(!q.has_waiting("a@x"));
        assert_eq!(q.len(), 1);
        let again = MessageQueue::load(store).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(ids(again.waiting("b@x", 0)), ["4"]);
        // sequence numbers go on after the stored ones
        let m = again.keep(message("b@x", "6", 200)).await.unwrap();
        assert!(m.seq > again.waiting("b@x", 0)[0].seq);
    }
}
