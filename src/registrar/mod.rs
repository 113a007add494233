//! Bindings per address-of-record, their durable store and binding events.
//!
//! The [`Registrar`] applies RFC 3261 §10.3 (with RFC 5626 instance/reg-id identity)
//! to a [`RegisterRequest`] the proxy has already parsed. Bindings live in memory for
//! lookups; every change is also written to a [`Store`] ([`MemoryStore`] or
//! [`SqliteStore`]) and the REGISTER is answered only once that write is durable,
//! except a pure refresh of a binding already safely stored, whose write may follow
//! within a bounded time (`behind`, [`Registrar::set_refresh_write_behind`]).
//! Changes are announced as [`BindingEvent`]s, e.g. to wake a call parked for a
//! pushed phone.
//!
//! Ordering guarantee: a REGISTER's store ops are submitted under an order lock taken
//! before the in-memory lock is released, so the store sees concurrent REGISTERs in
//! the same order as memory does.
//!
//! Several nodes ([`Registrar::new_shared`], `store.backend = "redis"`): the
//! in-memory table stays empty and Redis is the truth for every REGISTER and lookup;
//! see [`redis`] for how ordering and expiry hold across nodes. The same `plan`
//! (`plan.rs`) decides what a REGISTER does in both cases; only where the AOR is read from and
//! written to differs. Lookups then go through [`Registrar::find`], which may wait
//! for Redis. Other nodes' events come in through [`remote`] and are published into
//! [`Registrar::events`] as [`BindingEvent::remote`], the same stream as local ones.
//!
//! This file stays one past ~600 lines of code on purpose: each operation's one-node
//! and several-node paths sit side by side here, so a rule changed in one is seen
//! next to the other; what only several nodes need lives in its own files (`redis`,
//! `redis_messages`, `refresh_index`, `remote`, `nodes`).

mod aors;
mod behind;
mod binding;
mod events;
mod journal;
mod manage;
mod memory;
pub mod messages;
pub mod nodes;
mod packed;
mod plan;
pub mod redis;
pub mod redis_link;
pub mod redis_messages;
pub mod refresh_index;
pub mod remote;
mod sqlite;
mod store;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_behind;

pub use binding::{ContactRule, ContactSpec, Contacts, RegisterOutcome, RegisterRequest};
pub use events::{
    BindingEvent, BindingEventKind, BindingEvents, BindingSink, EventOrigin, PendingEvents,
};
pub use journal::JournalStore;
pub use manage::ClusterView;
pub use memory::MemoryStore;
pub use messages::{KeepError, MessageQueue, MessageRules, StoredMessage};
pub use packed::{Binding, BindingFields, BindingRef, DEFAULT_Q};
pub use redis::RedisBindings;
pub use redis_messages::SharedMessages;
pub use refresh_index::{RefreshIndex, RefreshTiming};
pub use sqlite::SqliteStore;
pub use store::{Done, Store, StoreError, StoreOp};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{broadcast, oneshot};

use crate::config::RegistrarSettings;
use plan::plan;

/// Capacity of the event channel; a subscriber that falls further behind than this
/// sees `RecvError::Lagged` rather than slowing REGISTER handling.
const EVENT_CAPACITY: usize = 1024;

/// Most deferred refreshes the flusher writes in one store job (see
/// [`Registrar::flush_paced`]): about a millisecond of the store thread's time.
pub const FLUSH_CHUNK: usize = 128;

/// Reason phrase for `Contact: *` without `Expires: 0`.
const STAR_NEEDS_EXPIRES_0: &str = "Contact * requires Expires: 0";
/// AORs one slice of the sweep visits under one hold of the bindings lock (see
/// [`Registrar::sweep_slice`]): about a tenth of a millisecond of work.
pub const SWEEP_SLICE: usize = 256;

/// Reason phrase for `Contact: *` next to other contacts.
const STAR_MIXED: &str = "Contact * mixed with other contacts";

/// Current unix time in ms, for filling [`RegisterRequest::now_ms`] and the `now_ms`
/// arguments (0 if the clock is before 1970).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The registrar: a cheap, cloneable handle to the bindings of every AOR.
#[derive(Clone)]
pub struct Registrar {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RegistrarSettings,
    store: Arc<dyn Store>,
    /// AOR → its bindings. Expired bindings may linger until the next sweep or
    /// REGISTER for the AOR; readers filter them with [`Binding::is_live`].
    /// Never held across an `.await`.
    bindings: Mutex<aors::AorTable>,
    events: BindingEvents,
    push: parking_lot::RwLock<PushRules>,
    /// Taken before `bindings` is released and held while submitting to the store,
    /// so the store applies changes in the order memory made them.
    order: Mutex<()>,
    /// Deferred writes of pure refreshes (see `behind`).
    behind: behind::WriteBehind,
    /// Longest a deferred refresh waits for its write, in ms; 0: none is deferred.
    window_ms: AtomicU64,
    /// Whether the thread that flushes deferred refreshes runs.
    flusher: AtomicBool,
    /// MESSAGEs kept for sleeping phones, in the same store.
    messages: MessageQueue,
    /// Several nodes: the shared store that replaces `bindings` and `store`.
    shared: Option<Arc<RedisBindings>>,
    /// Shared mode: bindings and AORs counted by the last sweep (any node's).
    shared_counts: (AtomicUsize, AtomicUsize),
    /// Shared mode: this node and the live others.
    nodes: Option<Arc<nodes::Nodes>>,
    /// Shared mode: the MESSAGEs kept for sleeping phones, in Redis.
    shared_messages: Option<Arc<SharedMessages>>,
    /// Shared mode with refresh pushes on: when each push binding is due for one.
    refresh: parking_lot::RwLock<Option<Arc<RefreshIndex>>>,
    /// Shared mode: applied to each REGISTER against the AOR as read from Redis.
    contact_rule: parking_lot::RwLock<Option<ContactRule>>,
}

/// How bindings that carry push info differ from plain ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushRules {
    /// Seconds a push binding stays callable after its SIP expiry.
    pub ttl_secs: u64,
    /// Longest registration a push binding may ask for (if above the plain maximum).
    pub max_expires: u32,
}

impl fmt::Debug for Registrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registrar")
            .field("settings", &self.inner.settings)
            .field("aors", &self.inner.bindings.lock().len())
            .finish_non_exhaustive()
    }
}

impl Registrar {
    /// Build the registrar over `store`, loading every stored binding into memory.
    ///
    /// Loading blocks on the store; call this at startup.
    pub fn new(settings: RegistrarSettings, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let mut loaded: HashMap<String, Vec<Arc<Binding>>> = HashMap::new();
        for b in store.load()? {
            match loaded.get_mut(b.aor()) {
                Some(list) => list.push(Arc::new(b)),
                None => {
                    loaded.insert(b.aor().to_owned(), vec![Arc::new(b)]);
                }
            }
        }
        let mut bindings = aors::AorTable::default();
        let now_ms = unix_now_ms();
        for (_, mut list) in loaded {
            // Oldest first, the order REGISTERs would have built; eviction ties rely on it.
            list.sort_by_key(|b| b.updated_at_ms);
            bindings.insert(list, now_ms);
        }
        let events = BindingEvents::new(EVENT_CAPACITY);
        let messages = MessageQueue::load(Arc::clone(&store))?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                store,
                bindings: Mutex::new(bindings),
                events,
                push: parking_lot::RwLock::new(PushRules::default()),
                order: Mutex::new(()),
                behind: behind::WriteBehind::default(),
                window_ms: AtomicU64::new(0),
                flusher: AtomicBool::new(false),
                messages,
                shared: None,
                shared_counts: (AtomicUsize::new(0), AtomicUsize::new(0)),
                nodes: None,
                shared_messages: None,
                refresh: parking_lot::RwLock::new(None),
                contact_rule: parking_lot::RwLock::new(None),
            }),
        })
    }

    /// The registrar of one node among several, over the shared store: nothing is
    /// loaded; every REGISTER and lookup goes to Redis.
    pub fn new_shared(
        settings: RegistrarSettings,
        shared: Arc<RedisBindings>,
        nodes: Arc<nodes::Nodes>,
    ) -> Self {
        let events = BindingEvents::new(EVENT_CAPACITY);
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        Self {
            inner: Arc::new(Inner {
                settings,
                // not used: with several nodes the kept MESSAGEs are in Redis
                // (`shared_messages`)
                messages: MessageQueue::empty(Arc::clone(&store)),
                shared_messages: Some(Arc::new(SharedMessages::new(Arc::clone(&shared)))),
                store,
                // Redis is written before every 200: nothing is deferred
                behind: behind::WriteBehind::default(),
                window_ms: AtomicU64::new(0),
                flusher: AtomicBool::new(false),
                bindings: Mutex::new(aors::AorTable::default()),
                events,
                push: parking_lot::RwLock::new(PushRules::default()),
                order: Mutex::new(()),
                shared: Some(shared),
                shared_counts: (AtomicUsize::new(0), AtomicUsize::new(0)),
                nodes: Some(nodes),
                refresh: parking_lot::RwLock::new(None),
                contact_rule: parking_lot::RwLock::new(None),
            }),
        }
    }

    /// Where the flow of `b` is, seen from this node (always `Here` for one node).
    pub fn owner(&self, b: &Binding) -> nodes::Owner {
        match &self.inner.nodes {
            Some(n) => n.owner(b.node()),
            None => nodes::Owner::Here,
        }
    }

    /// This node and its view of the others, when it is one of several.
    pub fn nodes(&self) -> Option<&Arc<nodes::Nodes>> {
        self.inner.nodes.as_ref()
    }

    /// The shared store, when this node is one of several.
    pub fn shared(&self) -> Option<&Arc<RedisBindings>> {
        self.inner.shared.as_ref()
    }

    /// Sets the [`ContactRule`] a shared store applies to every REGISTER (at startup).
    pub fn set_contact_rule(&self, rule: ContactRule) {
        *self.inner.contact_rule.write() = Some(rule);
    }

    /// Sets the rules for bindings that carry push info (at startup).
    pub fn set_push_rules(&self, rules: PushRules) {
        *self.inner.push.write() = rules;
    }

    /// Lets a pure refresh of a binding whose stored version stays live be answered
    /// before its write reaches the store; such writes are coalesced and flushed every
    /// `window` by a thread of the registrar's own (at startup; zero turns it off).
    pub fn set_refresh_write_behind(&self, window: Duration) {
        let window = window.min(behind::MAX_WINDOW);
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.inner.window_ms.store(ms, Ordering::Relaxed);
        if ms == 0 || self.inner.flusher.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("sipwake-write-behind".into())
            .spawn(move || {
                // a paced flush takes a while under load: the window counts from the
                // start of the one before, so a refresh is written within the window
                // plus one flush
                let mut spent = Duration::ZERO;
                loop {
                    let ms = match weak.upgrade() {
                        Some(inner) => inner.window_ms.load(Ordering::Relaxed).max(1),
                        None => return,
                    };
                    let pause = Duration::from_millis(ms).saturating_sub(spent);
                    std::thread::sleep(pause.max(Duration::from_millis(1)));
                    let Some(inner) = weak.upgrade() else { return };
                    let started = std::time::Instant::now();
                    Registrar { inner }.flush_paced();
                    spent = started.elapsed();
                }
            });
        if let Err(e) = spawned {
            // without the flusher nothing may be deferred
            tracing::warn!(error = %e, "refresh write-behind off: no thread");
            self.inner.window_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Hands every deferred refresh to the store now, in one job (shutdown calls this
    /// before closing the store; the flusher writes them in chunks instead, see
    /// [`Registrar::flush_paced`]). Returns how many.
    pub fn flush_refreshes(&self) -> usize {
        let map = self.inner.bindings.lock();
        let dirty = self.inner.behind.take_dirty();
        self.submit_flush(map, dirty).0
    }

    /// What the flusher does each window: hands the deferred refreshes to the store
    /// [`FLUSH_CHUNK`] at a time, in the store's key order, each chunk once the one
    /// before is committed. A busy window's refreshes (8,000 at 8,000/s) written in one
    /// transaction hold the store thread for tens of milliseconds, and every new
    /// binding's 200 queued behind that job waits as long; chunked, a new binding waits
    /// behind one chunk at most, and the map and write-behind locks the REGISTER path
    /// takes are held per chunk only. In key order the chunks touch disjoint pages, so
    /// the log gets no more page writes than from one transaction. Returns how many
    /// were written.
    pub fn flush_paced(&self) -> usize {
        let keys = self.inner.behind.dirty_keys();
        let mut total = 0;
        for chunk in keys.chunks(FLUSH_CHUNK) {
            let map = self.inner.bindings.lock();
            let dirty = self.inner.behind.take_keys(chunk);
            let (n, committed) = self.submit_flush(map, dirty);
            total += n;
            // bounded: a store that stopped answering must not stop the flusher for
            // good (what is left stays dirty for the next window)
            if n > 0 && committed.recv_timeout(Duration::from_secs(5)).is_err() {
                break;
            }
        }
        total
    }

    /// Submits `dirty` (just taken from the write-behind under `map`) as one store job,
    /// in memory's order; returns how many, and a receiver that hears when their
    /// commit is over (nothing when none was submitted).
    fn submit_flush(
        &self,
        map: MutexGuard<'_, aors::AorTable>,
        dirty: Vec<Arc<Binding>>,
    ) -> (usize, std::sync::mpsc::Receiver<()>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if dirty.is_empty() {
            return (0, rx);
        }
        let n = dirty.len();
        let behind = self.inner.behind.clone();
        let order = self.inner.order.lock();
        drop(map);
        self.inner.store.submit_refreshes_then(
            dirty.clone(),
            Box::new(move |result| {
                behind.flushed(&dirty, &result);
                log_unawaited(result, "refresh (write-behind)");
                let _ = tx.try_send(());
            }),
        );
        drop(order);
        (n, rx)
    }

    /// Refreshes answered but not yet handed to the store.
    pub fn deferred_refreshes(&self) -> usize {
        self.inner.behind.dirty_count()
    }

    fn rules(&self) -> PushRules {
        *self.inner.push.read()
    }

    /// Apply one REGISTER. Returns once its changes are durable in the store (a pure
    /// refresh under the write-behind: at once, see `behind`); events are published
    /// just before returning.
    ///
    /// On a store error the in-memory change stays (and its events are published,
    /// since lookups already see it); the caller should answer 500, and the UA's next
    /// refresh writes the binding again.
    pub async fn register(&self, req: RegisterRequest) -> Result<RegisterOutcome, StoreError> {
        let (outcome, events) = self.register_held(req).await;
        events.publish();
        outcome
    }

    /// Like [`Registrar::register`], but the events are handed back unpublished: they
    /// go out when the caller drops them, after its answer to the REGISTER.
    pub async fn register_held(
        &self,
        req: RegisterRequest,
    ) -> (Result<RegisterOutcome, StoreError>, PendingEvents) {
        let (tx, rx) = oneshot::channel();
        self.register_then(req, move |outcome, events| {
            let _ = tx.send((outcome, events));
        });
        rx.await.unwrap_or_else(|_| {
            let none = PendingEvents::new(Vec::new(), self.inner.events.clone());
            (Err(StoreError::Closed), none)
        })
    }

    /// Like [`Registrar::register_held`], but calls `then` with the outcome and the
    /// events once the change is durable, on the thread that made it so (see
    /// [`store::Done`]): the answer to a REGISTER then goes out from the store thread
    /// right after the commit, without waking the runtime in between. The events are
    /// published when `then` drops them (at the latest when it returns).
    pub fn register_then<F>(&self, req: RegisterRequest, then: F)
    where
        F: FnOnce(Result<RegisterOutcome, StoreError>, PendingEvents) + Send + 'static,
    {
        if let Some(shared) = &self.inner.shared {
            let (this, shared) = (self.clone(), Arc::clone(shared));
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        let (outcome, events) = this.register_shared(&shared, req).await;
                        then(outcome, this.pending(events));
                    });
                }
                Err(_) => then(Err(StoreError::Closed), self.pending(Vec::new())),
            }
            return;
        }
        let now = req.now_ms;
        let mut map = self.inner.bindings.lock();
        let existing: &[Arc<Binding>] = map.get(&req.aor).unwrap_or_default();
        let rules = self.rules();
        let plan = match plan(&self.inner.settings, rules, existing, &req) {
            Ok(plan) => plan,
            Err(outcome) => {
                drop(map);
                return then(Ok(outcome), self.pending(Vec::new()));
            }
        };
        let window = self.inner.window_ms.load(Ordering::Relaxed);
        let deferred = window > 0
            && !plan.ops.is_empty()
            && self
                .inner
                .behind
                .try_defer(existing, &plan.ops, now, window);
        let bindings = live_sorted(&plan.bindings, now, rules.ttl_secs);
        let events = plan.events;
        if plan.bindings.is_empty() {
            map.remove(&req.aor);
        } else if plan.changed {
            map.insert(plan.bindings, now);
        }
        if plan.ops.is_empty() || deferred {
            drop(map);
            return then(Ok(RegisterOutcome::Ok { bindings }), self.pending(events));
        }
        let this = self.clone();
        let aor = req.aor;
        self.submit_in_order(
            map,
            plan.ops,
            Box::new(move |result| {
                let events = this.pending(events);
                // Let go of the registrar before the waiter runs on: otherwise this
                // thread (the store's) may hold the last handle and drop the store
                // from inside its own thread.
                drop(this);
                let outcome = match result {
                    Ok(()) => Ok(RegisterOutcome::Ok { bindings }),
                    Err(e) => {
                        tracing::warn!(aor = %aor, error = %e, "registration not stored");
                        Err(e)
                    }
                };
                then(outcome, events)
            }),
        );
    }

    /// Hands `ops` to the store in the order their in-memory changes were made, then
    /// lets go of `map`.
    ///
    /// The order lock is taken before the map lock is released, so ops reach the store
    /// in memory's order; the submit itself happens outside the map lock, so a store
    /// that completes inline (memory) runs `done` without holding it.
    fn submit_in_order(
        &self,
        map: MutexGuard<'_, aors::AorTable>,
        ops: Vec<StoreOp>,
        done: store::Done,
    ) {
        let done: store::Done = if self.inner.window_ms.load(Ordering::Relaxed) > 0 {
            let written = self.inner.behind.before_sync(&ops);
            let behind = self.inner.behind.clone();
            Box::new(move |result| {
                behind.settled(&written, &result);
                done(result);
            })
        } else {
            done
        };
        let order = self.inner.order.lock();
        drop(map);
        self.inner.store.submit_then(ops, done);
        drop(order);
    }

    /// One REGISTER against the shared store: read the AOR, decide with the same
    /// rules as one node, write back only if no other node changed the AOR meanwhile
    /// (else read again). Returns the outcome and the events of the change, to be
    /// published here once the REGISTER is answered (Redis already published them to
    /// the other nodes with the write).
    async fn register_shared(
        &self,
        shared: &RedisBindings,
        mut req: RegisterRequest,
    ) -> (Result<RegisterOutcome, StoreError>, Vec<BindingEvent>) {
        let now = req.now_ms;
        let rules = self.rules();
        let settings = &self.inner.settings;
        let contact_rule = self.inner.contact_rule.read().clone();
        let aor = req.aor.clone();
        let decided = shared
            .update(&aor, |state| {
                if let Some(rule) = &contact_rule {
                    // on the bindings just read: no extra round trip
                    rule(&mut req, &state.bindings);
                }
                match plan(settings, rules, &state.bindings, &req) {
                    Ok(plan) => {
                        let keep = keep_ms(&plan.bindings, now, rules.ttl_secs);
                        let bindings = live_sorted(&plan.bindings, now, rules.ttl_secs);
                        // published with the write, for calls parked on other nodes
                        let wire = remote::encode(req.node.as_deref().unwrap_or(""), &plan.events);
                        let out = (
                            RegisterOutcome::Ok { bindings },
                            plan.events,
                            plan.ops.clone(),
                        );
                        (plan.ops, keep, wire, out)
                    }
                    Err(outcome) => (
                        Vec::new(),
                        0,
                        String::new(),
                        (outcome, Vec::new(), Vec::new()),
                    ),
                }
            })
            .await;
        match decided {
            Ok((outcome, events, ops)) => {
                if let Some(index) = self.refresh_index() {
                    index.note_soon(ops);
                }
                (Ok(outcome), events)
            }
            Err(e) => {
                tracing::warn!(aor = %aor, error = %e, "registration not stored");
                (Err(e), Vec::new())
            }
        }
    }

    /// Several nodes: keeps the index of refresh push times in Redis from now on (at
    /// startup, when refresh pushes are on). One node needs none.
    pub fn set_refresh_timing(&self, timing: RefreshTiming) {
        if let Some(shared) = &self.inner.shared {
            let index = RefreshIndex::new(Arc::clone(shared), timing);
            *self.inner.refresh.write() = Some(Arc::new(index));
        }
    }

    /// Several nodes with refresh pushes on: the index of their times in Redis.
    pub fn refresh_index(&self) -> Option<Arc<RefreshIndex>> {
        self.inner.refresh.read().clone()
    }

    /// Live bindings of `aor` at `now_ms`, ordered as [`Registrar::lookup`] orders
    /// them, from wherever the truth is: memory for one node, Redis for several.
    pub async fn find(&self, aor: &str, now_ms: u64) -> Result<Vec<Arc<Binding>>, StoreError> {
        match &self.inner.shared {
            Some(shared) => {
                let state = shared.read(aor).await?;
                Ok(live_sorted(&state.bindings, now_ms, self.rules().ttl_secs))
            }
            None => Ok(self.lookup(aor, now_ms)),
        }
    }

    /// Live bindings of `aor` at `now_ms`, highest q first, then most recently
    /// registered first. One node only: with a shared store this table is empty, so
    /// callers that may run on several nodes use [`Registrar::find`].
    pub fn lookup(&self, aor: &str, now_ms: u64) -> Vec<Arc<Binding>> {
        let list = self
            .inner
            .bindings
            .lock()
            .get(aor)
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        live_sorted(&list, now_ms, self.rules().ttl_secs)
    }

    /// Remove every binding expired at `now_ms` from memory and the store, announce
    /// them as `Removed`, and return how many there were.
    ///
    /// The store commit is not awaited (an expired binding reloaded after a crash is
    /// just swept again); a failure is logged. Only the AORs due are visited, in
    /// slices of [`SWEEP_SLICE`] per hold of the bindings lock; a caller on the
    /// runtime should rather call [`Registrar::sweep_slice`] and pause between slices.
    ///
    /// With a shared store this only starts the shared sweep (see
    /// [`Registrar::sweep_shared`]) and returns 0.
    pub fn sweep(&self, now_ms: u64) -> usize {
        if self.inner.shared.is_some() {
            let this = self.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { this.sweep_shared(now_ms).await });
            }
            return 0;
        }
        let mut removed = 0;
        loop {
            let (n, more) = self.sweep_slice(now_ms, SWEEP_SLICE);
            removed += n;
            if !more {
                return removed;
            }
        }
    }

    /// One slice of [`Registrar::sweep`] (one node only): removes what expired at
    /// `now_ms` from at most `max_aors` AORs due, under one hold of the bindings lock.
    /// Returns how many bindings went, and whether more AORs are due.
    pub fn sweep_slice(&self, now_ms: u64, max_aors: usize) -> (usize, bool) {
        if self.inner.shared.is_some() {
            return (0, false);
        }
        let mut ops = Vec::new();
        let mut events = Vec::new();
        let ttl = self.rules().ttl_secs;
        let more;
        {
            let mut map = self.inner.bindings.lock();
            more = map.sweep_due(now_ms, ttl, max_aors, |b| {
                ops.push(StoreOp::Delete {
                    aor: b.aor().to_owned(),
                    key: b.key().to_owned(),
                });
                events.push(BindingEvent::local(
                    BindingEventKind::Removed,
                    Arc::clone(b),
                ));
            });
            if !ops.is_empty() {
                self.submit_in_order(map, ops, Box::new(|r| log_unawaited(r, "sweep")));
            }
        }
        let removed = events.len();
        self.publish(events);
        (removed, more)
    }

    /// Replaces the push info of one binding (e.g. removes a dead token, or records the
    /// APNs environment that worked). With `only_if_registered_before_ms`, nothing
    /// changes when the binding was registered again after that time (APNs reports a
    /// token dead with the time it died; a REGISTER after it revived the token).
    /// Returns true if the binding changed. The store write is not awaited.
    ///
    /// With a shared store the change is made in the background (read, change, write
    /// back like a REGISTER) and this returns false; the outcome is logged.
    pub fn set_push(
        &self,
        aor: &str,
        key: &str,
        push: Option<String>,
        only_if_registered_before_ms: Option<u64>,
    ) -> bool {
        self.update_push(aor, key, move |b| {
            if only_if_registered_before_ms.is_some_and(|t| b.updated_at_ms >= t) {
                return None;
            }
            Some(push.clone())
        })
    }

    /// Changes the push info of one binding to what `change` makes of the binding as
    /// it is now (`None`: leave it). Unlike [`Registrar::set_push`] this sees a
    /// REGISTER that replaced the binding meanwhile, so what a push learnt about a
    /// token can be added to the newest push info rather than overwrite it. Returns
    /// true if the binding changed. The store write is not awaited.
    ///
    /// With a shared store the change is made in the background (read, change, write
    /// back like a REGISTER, again if another node wrote meanwhile) and this returns
    /// false; a removed token is counted there and the outcome logged.
    pub fn update_push(
        &self,
        aor: &str,
        key: &str,
        change: impl Fn(&Binding) -> Option<Option<String>> + Send + Sync + 'static,
    ) -> bool {
        if let Some(shared) = &self.inner.shared {
            let (shared, aor, key) = (Arc::clone(shared), aor.to_owned(), key.to_owned());
            let ttl = self.rules().ttl_secs;
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let r = shared
                        .update(&aor, |state| {
                            let unchanged = (Vec::new(), 0, String::new(), false);
                            let now = unix_now_ms();
                            let Some(old) = state.bindings.iter().find(|b| b.key() == key) else {
                                return unchanged;
                            };
                            let Some(push) = change(old) else {
                                return unchanged;
                            };
                            if old.push().as_deref() == push.as_deref() {
                                return unchanged;
                            }
                            let removed = push.is_none();
                            let b = Arc::new(old.with_push(push));
                            let mut all = state.bindings.clone();
                            if let Some(slot) = all.iter_mut().find(|x| x.key() == key) {
                                *slot = Arc::clone(&b);
                            }
                            let keep = keep_ms(&all, now, ttl);
                            (vec![StoreOp::Put(b)], keep, String::new(), removed)
                        })
                        .await;
                    match r {
                        Ok(true) => crate::metrics::global().dead_tokens_removed.inc(),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "push info not stored"),
                    }
                });
            }
            return false;
        }
        {
            let mut map = self.inner.bindings.lock();
            let Some(list) = map.get_mut(aor) else {
                return false;
            };
            let Some(slot) = list.iter_mut().find(|b| b.key() == key) else {
                return false;
            };
            let Some(push) = change(slot) else {
                return false;
            };
            if slot.push().as_deref() == push.as_deref() {
                return false;
            }
            let b = Arc::new(slot.with_push(push));
            *slot = Arc::clone(&b);
            let done = Box::new(|r| log_unawaited(r, "push info"));
            self.submit_in_order(map, vec![StoreOp::Put(b)], done);
        }
        true
    }

    /// Receive every binding event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BindingEvent> {
        self.inner.events.subscribe()
    }

    /// Bindings with push info that are kept now but run out (SIP expiry plus the push
    /// TTL) within `within_ms` of `now_ms`. Visits only the AORs whose bindings came
    /// near their end (an index kept from the first call on; that call, or one with
    /// another `within_ms`, walks every AOR once).
    pub fn push_bindings_ending(&self, now_ms: u64, within_ms: u64) -> Vec<Arc<Binding>> {
        let ttl = self.rules().ttl_secs;
        self.inner
            .bindings
            .lock()
            .push_ending(now_ms, within_ms, ttl)
    }

    /// Shared store: deletes expired bindings of every AOR (unless another node swept
    /// lately) and refreshes the counts [`Registrar::count`] reports.
    pub async fn sweep_shared(&self, now_ms: u64) {
        let Some(shared) = &self.inner.shared else {
            return;
        };
        // a walk over every AOR: rare, since reads skip expired bindings and keys
        // expire by themselves; one node per interval does it
        let interval = std::time::Duration::from_secs(300);
        let r = match shared.sweep(now_ms, self.rules().ttl_secs, interval).await {
            Ok(Some(counts)) => Ok(counts),
            Ok(None) => shared.stats().await,
            Err(e) => Err(e),
        };
        match r {
            Ok((bindings, aors)) => {
                self.inner.shared_counts.0.store(bindings, Relaxed);
                self.inner.shared_counts.1.store(aors, Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "shared sweep failed"),
        }
    }

    /// The stream every binding event goes through: add a [`BindingSink`] to it, or
    /// [`BindingEvents::publish`] the events of another node into it.
    pub fn events(&self) -> &BindingEvents {
        &self.inner.events
    }

    /// Live bindings across all AORs, by the wall clock (shared store: as counted by
    /// the last sweep).
    pub fn count(&self) -> usize {
        if self.inner.shared.is_some() {
            return self.inner.shared_counts.0.load(Relaxed);
        }
        self.sum_live(|n| n)
    }

    /// AORs with at least one live binding, by the wall clock (shared store: as
    /// counted by the last sweep).
    pub fn aors(&self) -> usize {
        if self.inner.shared.is_some() {
            return self.inner.shared_counts.1.load(Relaxed);
        }
        self.sum_live(|n| usize::from(n > 0))
    }

    /// The sum over AORs of `f(live bindings of the AOR)`, by the wall clock.
    fn sum_live(&self, f: impl Fn(usize) -> usize) -> usize {
        let now = unix_now_ms();
        let ttl = self.rules().ttl_secs;
        self.inner
            .bindings
            .lock()
            .values()
            .map(|list| f(list.iter().filter(|b| b.is_kept(now, ttl)).count()))
            .sum()
    }

    /// The MESSAGEs kept for sleeping phones.
    pub fn messages(&self) -> &MessageQueue {
        &self.inner.messages
    }

    /// Several nodes: the MESSAGEs kept for sleeping phones, in Redis (one node
    /// keeps them in [`Registrar::messages`]).
    pub fn shared_messages(&self) -> Option<&Arc<SharedMessages>> {
        self.inner.shared_messages.as_ref()
    }

    /// The store behind this registrar (e.g. for its meta values).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The limits in force.
    pub fn settings(&self) -> &RegistrarSettings {
        &self.inner.settings
    }

    fn publish(&self, events: Vec<BindingEvent>) {
        for event in events {
            self.inner.events.publish(event);
        }
    }

    fn pending(&self, events: Vec<BindingEvent>) -> PendingEvents {
        PendingEvents::new(events, self.inner.events.clone())
    }
}

/// Logs the failure of a store commit nobody waits for.
fn log_unawaited(result: Result<(), StoreError>, what: &'static str) {
    if let Err(e) = result {
        tracing::warn!(error = %e, "{what} not stored");
    }
}

/// Milliseconds from `now_ms` until the last of `list` stops being kept.
fn keep_ms(list: &[Arc<Binding>], now_ms: u64, ttl: u64) -> u64 {
    list.iter()
        .map(|b| {
            let grace = if b.has_push() { ttl } else { 0 };
            b.expires_at
                .saturating_add(grace)
                .saturating_mul(1000)
                .saturating_sub(now_ms)
        })
        .max()
        .unwrap_or(0)
}

/// Live bindings of `list`, in lookup order.
fn live_sorted(list: &[Arc<Binding>], now_ms: u64, ttl: u64) -> Vec<Arc<Binding>> {
    let mut live: Vec<Arc<Binding>> = list
        .iter()
        .filter(|b| b.is_kept(now_ms, ttl))
        .cloned()
        .collect();
    live.sort_by(|a, b| {
        b.effective_q()
            .cmp(&a.effective_q())
            .then(b.updated_at_ms.cmp(&a.updated_at_ms))
            .then_with(|| a.key().cmp(b.key()))
    });
    live
}
