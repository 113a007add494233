//! Parked INVITEs: calls waiting for a pushed phone to register again.
//!
//! Each parked call is its forwarding task; this index maps an AOR to the tasks
//! waiting on it, so that a binding event reaches only the calls it concerns (one
//! AOR can have several calls parked), and enforces the caps.
//!
//! The index is a [`BindingSink`] of the registrar's event stream, the one source of
//! wakes: every binding added or refreshed, by a REGISTER here or (in a cluster) on
//! another node, is handed to the calls parked for its AOR as a
//! [`CallEvent::Woken`].
//!
//! With several nodes the index also tells the node's event subscriber
//! ([`Parked::watch`]) when a call parks and when an AOR's last call ends, under the
//! same lock that changes the index, so the subscriber sees them in the index's order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::mpsc::UnboundedSender;

use super::data::{CallEvent, TaskEvent};
use crate::registrar::remote::{Interest, MARGIN_MS};
use crate::registrar::{unix_now_ms, Binding, BindingEvent, BindingEventKind, BindingSink};
use crate::transaction::{TaskSender, TxEvent};

/// Why a call could not be parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParkError {
    /// Too many calls parked in total.
    #[error("too many parked calls")]
    Full,
    /// Too many calls parked for this AOR.
    #[error("too many parked calls for this user")]
    FullForAor,
}

#[derive(Default)]
struct Index {
    by_aor: HashMap<String, Vec<(u64, TaskSender<TaskEvent>)>>,
    total: usize,
}

/// The AOR → parked calls index.
#[derive(Clone, Default)]
pub struct Parked {
    inner: Arc<Mutex<Index>>,
    next: Arc<AtomicU64>,
    /// Several nodes: where parkings and AORs left without calls are told.
    watch: Arc<OnceLock<UnboundedSender<Interest>>>,
    max_total: usize,
    max_per_aor: usize,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("total", &self.len())
            .finish()
    }
}

/// Keeps a call parked; dropping it unparks.
#[derive(Debug)]
pub struct ParkGuard {
    parked: Parked,
    aor: String,
    id: u64,
}

impl Drop for ParkGuard {
    fn drop(&mut self) {
        let mut idx = self.parked.lock();
        if let Some(list) = idx.by_aor.get_mut(&self.aor) {
            let before = list.len();
            list.retain(|(id, _)| *id != self.id);
            let removed = before - list.len();
            if list.is_empty() {
                idx.by_aor.remove(&self.aor);
                if let Some(w) = self.parked.watch.get() {
                    let aor = std::mem::take(&mut self.aor);
                    let _ = w.send(Interest::Unpark { aor });
                }
            }
            idx.total -= removed;
        }
    }
}

impl Parked {
    /// An empty index with these caps.
    pub fn new(max_total: usize, max_per_aor: usize) -> Parked {
        Parked {
            max_total,
            max_per_aor,
            ..Parked::default()
        }
    }

    /// Several nodes: tells `to` of every parking (to subscribe to the AOR's events
    /// and re-read it) and of every AOR whose last call ended (to unsubscribe). Set
    /// once, at startup.
    pub fn watch(&self, to: UnboundedSender<Interest>) {
        let _ = self.watch.set(to);
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.inner.lock()
    }

    /// Parks a call for `aor`; its task gets a [`CallEvent::Woken`] for every binding
    /// of the AOR that is added or refreshed while the guard lives.
    pub fn park(&self, aor: &str, tx: TaskSender<TaskEvent>) -> Result<ParkGuard, ParkError> {
        let mut idx = self.lock();
        if idx.total >= self.max_total {
            return Err(ParkError::Full);
        }
        let per = idx.by_aor.get(aor).map_or(0, Vec::len);
        if per >= self.max_per_aor {
            return Err(ParkError::FullForAor);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        idx.by_aor
            .entry(aor.to_string())
            .or_default()
            .push((id, tx));
        idx.total += 1;
        if let Some(w) = self.watch.get() {
            // a REGISTER committed since the call's lookup (a moment ago) is re-read
            let since_ms = unix_now_ms().saturating_sub(MARGIN_MS);
            let aor = aor.to_string();
            let _ = w.send(Interest::Park { aor, since_ms });
        }
        Ok(ParkGuard {
            parked: self.clone(),
            aor: aor.to_string(),
            id,
        })
    }

    /// Calls parked now.
    pub fn len(&self) -> usize {
        self.lock().total
    }

    /// True if nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The AORs with calls parked now.
    pub fn aors(&self) -> Vec<String> {
        self.lock().by_aor.keys().cloned().collect()
    }

    /// True if a call waits for a phone of `aor` (one map lookup; none when nothing
    /// is parked).
    pub fn waits_for(&self, aor: &str) -> bool {
        let idx = self.lock();
        idx.total > 0 && idx.by_aor.contains_key(aor)
    }

    /// Hands a binding that was just created or refreshed to the calls parked for its
    /// AOR; costs one map lookup when nothing is parked.
    fn wake(&self, binding: &Arc<Binding>) {
        let idx = self.lock();
        if idx.total == 0 {
            return;
        }
        if let Some(list) = idx.by_aor.get(binding.aor()) {
            for (_, tx) in list {
                let _ = tx.send(TxEvent::Upper(CallEvent::Woken(binding.clone())));
            }
        }
    }
}

/// The binding events wake parked calls. They arrive on the thread that published
/// them: for a local REGISTER, right after its 200 OK went out (see
/// [`crate::registrar::PendingEvents`]), so the INVITE follows without a task hop.
impl BindingSink for Parked {
    fn on_binding_event(&self, event: &BindingEvent) {
        match event.kind {
            BindingEventKind::Added | BindingEventKind::Refreshed => self.wake(&event.binding),
            BindingEventKind::Removed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_unpark_on_drop() {
        let p = Parked::new(3, 2);
        let (tx, _rx) = crate::transaction::task_channel();
        let a = p.park("alice@x", tx.clone()).unwrap();
        let _b = p.park("alice@x", tx.clone()).unwrap();
        assert_eq!(
            p.park("alice@x", tx.clone()).unwrap_err(),
            ParkError::FullForAor
        );
        let _c = p.park("bob@x", tx.clone()).unwrap();
        assert_eq!(p.park("carol@x", tx.clone()).unwrap_err(), ParkError::Full);
        drop(a);
        assert_eq!(p.len(), 2);
        assert!(p.park("carol@x", tx).is_ok());
    }

    #[test]
    fn the_watcher_hears_every_parking_and_each_aors_last_call_ending() {
        let p = Parked::new(10, 10);
        let (wtx, mut wrx) = tokio::sync::mpsc::unbounded_channel();
        p.watch(wtx);
        let (tx, _rx) = crate::transaction::task_channel();
        let a1 = p.park("alice@x", tx.clone()).unwrap();
        let a2 = p.park("alice@x", tx.clone()).unwrap();
        let b = p.park("bob@x", tx).unwrap();
        drop(a1); // alice still has a call
        drop(b);
        drop(a2);
        let mut seen = Vec::new();
        while let Ok(i) = wrx.try_recv() {
            seen.push(match i {
                Interest::Park { aor, since_ms } => {
                    assert!(since_ms + MARGIN_MS <= unix_now_ms());
                    format!("park {aor}")
                }
                Interest::Unpark { aor } => format!("unpark {aor}"),
            });
        }
        assert_eq!(
            seen,
            [
                "park alice@x",
                "park alice@x",
                "park bob@x",
                "unpark bob@x",
                "unpark alice@x"
            ]
        );
    }

    fn binding(aor: &str) -> Arc<Binding> {
        Arc::new(Binding::for_test(aor, "k1", &format!("sip:{aor}")))
    }

    #[test]
    fn a_published_event_wakes_the_calls_parked_for_its_aor() {
        let p = Parked::new(10, 10);
        let events = crate::registrar::BindingEvents::new(8);
        events.add_sink(Arc::new(p.clone()));
        let (tx, mut rx) = crate::transaction::task_channel();
        let _guard = p.park("alice@x", tx).unwrap();
        // what another node announces comes in as a local REGISTER's event does
        let publish = |kind, aor| events.publish(BindingEvent::remote(kind, binding(aor)));
        publish(BindingEventKind::Refreshed, "alice@x");
        publish(BindingEventKind::Added, "bob@x");
        publish(BindingEventKind::Removed, "alice@x");
        publish(BindingEventKind::Added, "alice@x");
        let mut woken = Vec::new();
        while let Some(ev) = rx.try_recv() {
            match ev {
                TxEvent::Upper(CallEvent::Woken(b)) => woken.push(b.aor().to_owned()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(woken, ["alice@x", "alice@x"]);
    }
}
