//! Refresh write-behind: a REGISTER that only refreshes a binding already safe on disk
//! is answered before its write reaches the store; such writes are coalesced per
//! binding and written within a bounded time.
//!
//! Why it is safe: a pure refresh (same contact, flow, token, instance, …; only the
//! expiry, Call-ID, CSeq and time moved) changes nothing a restart needs as long as the
//! version on disk is still live. So a refresh is deferred only when the binding's
//! stored expiry lies beyond the next flush (plus a margin), and only when that
//! stored version is known to be committed: a binding whose own write is still in
//! flight, or a refresh of one, waits for the disk as before. New, changed and removed
//! bindings always go through the store before their 200.
//!
//! Bookkeeping, all under one lock taken inside the registrar's map lock:
//! - `pending`: per binding deferred since the last flush (or in flight in a flush),
//!   the newest in-memory version and the expiry known to be on disk;
//! - `in_flight`: bindings (by address) whose synchronous write is not committed yet.
//!
//! Any synchronous op on a binding drops its pending entry, so a flush never writes a
//! stale refresh over a newer change or brings a removed binding back. Flushes and
//! synchronous ops reach the store in memory's order (the registrar's order lock).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use super::{Binding, StoreError, StoreOp};

/// Margin beyond the next flush that a stored expiry must still cover for a refresh
/// to be deferred (the flush's commit takes a little longer than its submit).
const MARGIN_MS: u64 = 1000;

/// Longest write-behind window accepted (the setting is capped here by config).
pub const MAX_WINDOW: Duration = Duration::from_secs(10);

/// One deferred binding.
#[derive(Debug)]
struct Entry {
    /// Newest in-memory version (what memory holds for this key).
    binding: Arc<Binding>,
    /// Expiry (unix s) of the version known to be committed.
    durable_expires_at: u64,
    /// Whether `binding` still has to be written (false while only in flight).
    dirty: bool,
}

#[derive(Debug, Default)]
struct State {
    /// AOR → its deferred bindings (usually one).
    pending: HashMap<String, Vec<Entry>>,
    /// Address of a binding → how many synchronous writes of it are uncommitted.
    in_flight: HashMap<usize, u32>,
}

/// The write-behind state of one registrar. Cheap to share with store callbacks.
#[derive(Debug, Clone, Default)]
pub(super) struct WriteBehind {
    state: Arc<Mutex<State>>,
}

/// Address used as the identity of an in-memory binding version.
fn addr(b: &Arc<Binding>) -> usize {
    Arc::as_ptr(b) as usize
}

/// Whether `new` differs from `old` only in what a refresh moves: expiry, Call-ID,
/// CSeq and the time of the REGISTER (see [`Binding::same_but_refresh`], which names
/// every field, so a new field forces a decision there).
pub(super) fn is_pure_refresh(old: &Binding, new: &Binding) -> bool {
    old.same_but_refresh(new) && new.expires_at >= old.expires_at
}

impl WriteBehind {
    /// Defers `ops` if every one of them is a pure refresh of a binding in
    /// `existing` whose committed version stays live past `now_ms + window_ms`
    /// (plus a margin). Returns false, recording nothing, otherwise.
    /// Call with the registrar's map lock held.
    pub(super) fn try_defer(
        &self,
        existing: &[Arc<Binding>],
        ops: &[StoreOp],
        now_ms: u64,
        window_ms: u64,
    ) -> bool {
        let mut st = self.state.lock();
        let horizon = now_ms.saturating_add(window_ms).saturating_add(MARGIN_MS);
        let mut plan = Vec::with_capacity(ops.len());
        for op in ops {
            let StoreOp::Put(new) = op else {
                return false;
            };
            let Some(old) = existing.iter().find(|b| b.key() == new.key()) else {
                return false;
            };
            if !is_pure_refresh(old, new) {
                return false;
            }
            let durable = match st.entry(old.aor(), old.key()) {
                Some(e) if Arc::ptr_eq(&e.binding, old) => e.durable_expires_at,
                Some(_) => return false,
                None if st.in_flight.contains_key(&addr(old)) => return false,
                None => old.expires_at,
            };
            if durable.saturating_mul(1000) <= horizon {
                return false;
            }
            plan.push((new, durable));
        }
        for (new, durable) in plan {
            match st.entry_mut(new.aor(), new.key()) {
                Some(e) => {
                    e.binding = Arc::clone(new);
                    e.dirty = true;
                }
                None => st
                    .pending
                    .entry(new.aor().to_owned())
                    .or_default()
                    .push(Entry {
                        binding: Arc::clone(new),
                        durable_expires_at: durable,
                        dirty: true,
                    }),
            }
        }
        true
    }

    /// Notes synchronous `ops` about to be submitted (call with the map lock held):
    /// their bindings' deferred refreshes are dropped (the op writes something newer),
    /// and each written version counts as in flight until `settled` runs.
    pub(super) fn before_sync(&self, ops: &[StoreOp]) -> Vec<usize> {
        let mut st = self.state.lock();
        let mut written = Vec::new();
        for op in ops {
            let (aor, key) = match op {
                StoreOp::Put(b) => {
                    let a = addr(b);
                    *st.in_flight.entry(a).or_insert(0) += 1;
                    written.push(a);
                    (b.aor(), b.key())
                }
                StoreOp::Delete { aor, key } => (aor.as_str(), key.as_str()),
                // kept MESSAGEs are no binding's business
                StoreOp::PutMessage(_) | StoreOp::DeleteMessage { .. } => continue,
            };
            st.remove(aor, key);
        }
        written
    }

    /// A synchronous write finished. Only a committed version stops counting as in
    /// flight: after a failed write the binding is not on disk, so its refreshes keep
    /// waiting for the disk.
    pub(super) fn settled(&self, written: &[usize], result: &Result<(), StoreError>) {
        if result.is_err() || written.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        for a in written {
            if let Some(n) = st.in_flight.get_mut(a) {
                *n -= 1;
                if *n == 0 {
                    st.in_flight.remove(a);
                }
            }
        }
    }

    /// Takes every binding with a deferred write, marking them in flight (call with
    /// the map lock held, and submit the result before letting go of the order lock).
    pub(super) fn take_dirty(&self) -> Vec<Arc<Binding>> {
        let mut st = self.state.lock();
        let mut out = Vec::new();
        for e in st.pending.values_mut().flatten() {
            if e.dirty {
                e.dirty = false;
                out.push(Arc::clone(&e.binding));
            }
        }
        out
    }

    /// Every binding with a deferred write (its newest version), sorted by (AOR, key):
    /// the order of the store's primary key, so consecutive chunks of it touch
    /// disjoint pages. Only the references are taken under the lock (the REGISTER path
    /// waits for it while holding the map lock); the sort runs after it. Copying
    /// 8,000 keys into strings and sorting them under the lock held it 1.5–3 ms each
    /// window at 8,000 refreshes/s (docs/BENCHMARKS.md, "The latency tail at 8,000/s").
    pub(super) fn dirty_keys(&self) -> Vec<Arc<Binding>> {
        let mut keys: Vec<Arc<Binding>> = {
            let st = self.state.lock();
            st.pending
                .values()
                .flatten()
                .filter(|e| e.dirty)
                .map(|e| Arc::clone(&e.binding))
                .collect()
        };
        keys.sort_unstable_by(|a, b| (a.aor(), a.key()).cmp(&(b.aor(), b.key())));
        keys
    }

    /// Takes, of the bindings named (by AOR and key) in `keys`, those whose deferred
    /// write is still to be done (a synchronous op or an earlier flush may have taken
    /// one since [`WriteBehind::dirty_keys`]), marking them in flight; same locking as
    /// [`WriteBehind::take_dirty`]. What is taken is the newest version, which may be
    /// newer than the one in `keys`.
    pub(super) fn take_keys(&self, keys: &[Arc<Binding>]) -> Vec<Arc<Binding>> {
        let mut st = self.state.lock();
        let mut out = Vec::with_capacity(keys.len());
        for named in keys {
            if let Some(e) = st.entry_mut(named.aor(), named.key()).filter(|e| e.dirty) {
                e.dirty = false;
                out.push(Arc::clone(&e.binding));
            }
        }
        out
    }

    /// A flush of `flushed` finished: committed versions become the known stored
    /// expiry (and an entry with nothing newer is done); failed ones are retried.
    pub(super) fn flushed(&self, flushed: &[Arc<Binding>], result: &Result<(), StoreError>) {
        let mut st = self.state.lock();
        for b in flushed {
            let ok = result.is_ok();
            let Some(e) = st.entry_mut(b.aor(), b.key()) else {
                continue; // a synchronous op took over
            };
            let same = Arc::ptr_eq(&e.binding, b);
            let done = if ok {
                e.durable_expires_at = e.durable_expires_at.max(b.expires_at);
                same && !e.dirty
            } else {
                e.dirty |= same;
                false
            };
            if done {
                st.remove(b.aor(), b.key());
            }
        }
    }

    /// Bindings waiting to be written.
    pub(super) fn dirty_count(&self) -> usize {
        self.state
            .lock()
            .pending
            .values()
            .flatten()
            .filter(|e| e.dirty)
            .count()
    }
}

impl State {
    fn entry(&self, aor: &str, key: &str) -> Option<&Entry> {
        self.pending
            .get(aor)?
            .iter()
            .find(|e| e.binding.key() == key)
    }

    fn entry_mut(&mut self, aor: &str, key: &str) -> Option<&mut Entry> {
        self.pending
            .get_mut(aor)?
            .iter_mut()
            .find(|e| e.binding.key() == key)
    }

    fn remove(&mut self, aor: &str, key: &str) {
        if let Some(list) = self.pending.get_mut(aor) {
            list.retain(|e| e.binding.key() != key);
            if list.is_empty() {
                self.pending.remove(aor);
            }
        }
    }
}
