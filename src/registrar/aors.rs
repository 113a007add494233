//! The one-node registrar's table of AORs: each AOR's bindings, found by the AOR.
//!
//! Built for memory per binding (issue 13): an entry is the AOR's list of bindings
//! and nothing else. The AOR is not stored again as a key (it is read out of the
//! first binding, which every binding of the list shares), and the usual AOR with one
//! binding keeps it inline, with no list allocated: 24 bytes and a control byte per
//! AOR, against a `HashMap<String, Vec<_>>`'s 48 bytes plus two allocations.
//!
//! The table also knows when each AOR next has a binding to sweep, so that the sweep
//! visits only what is due instead of every binding under the lock the REGISTER path
//! takes (4–7 ms per 60,000 bindings; docs/BENCHMARKS.md, "The latency tail"). The
//! index holds the AOR's 8-byte hash under the second its earliest binding expires,
//! filed when the AOR appears or its earliest expiry moves earlier. A refresh files
//! nothing: the entry it leaves behind comes due early, finds nothing to remove, and
//! files the AOR again under its new earliest expiry. Entries of AORs removed
//! meanwhile find nothing and go. So each AOR has about one entry (8 bytes).
//!
//! A second index of the same kind serves the refresh pushes (`proxy::refresh`),
//! which every second want the push bindings that run out within a window (a day by
//! default) and used to find them by walking every binding under the lock: an AOR
//! with push bindings is filed under the second its first one enters that window,
//! and AORs whose time came are kept in a small set of those ending, looked at each
//! second until none of their bindings is ending any more. It is off (nothing filed)
//! until the first such question, which files every AOR once.
//!
//! The table is kept in [`PARTS`] parts chosen by the AOR's hash, each growing on its
//! own. A hash table doubles when full and rehashes every entry as it does, and here
//! rehashing an entry reads its first binding's AOR (a cache miss) and hashes it
//! again: at 65,000 AORs one doubling held the runtime thread, and every REGISTER
//! behind the lock, for 16 ms (docs/BENCHMARKS.md, "The latency tail at 8,000/s"). In
//! parts, a doubling rehashes a 256th of the AORs; the memory is the same (the parts'
//! empty headers aside, 8 KiB).

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use smallvec::SmallVec;

use super::Binding;

/// One AOR's bindings (never empty, every one of the same AOR).
pub(super) type List = SmallVec<[Arc<Binding>; 1]>;

/// Parts of the table (a power of two; see the module's header).
const PARTS: usize = 256;

/// The part of the table an AOR of `hash` lives in: bits the parts' own hashing does
/// not use (hashbrown places by the low bits and tags by the top seven).
fn part_of(hash: u64) -> usize {
    (hash >> 32) as usize & (PARTS - 1)
}

/// AOR → its bindings.
pub(super) struct AorTable {
    /// The AORs' lists, in [`PARTS`] parts by hash (see [`part_of`]).
    table: Box<[HashTable<List>]>,
    hasher: std::collections::hash_map::RandomState,
    /// Unix second → hashes of the AORs that may have a binding to sweep from then on.
    /// Every AOR in `table` has an entry no later than its next due binding; entries
    /// may be early or stale (checked when due).
    due: BTreeMap<u64, Vec<u64>>,
    /// The refresh pushes' index, once asked for (see [`AorTable::push_ending`]).
    ending: Option<Ending>,
}

/// Which AORs have (or may soon have) push bindings running out within `window_ms`.
struct Ending {
    /// Seconds a push binding is kept past its SIP expiry.
    push_ttl_secs: u64,
    window_ms: u64,
    /// Unix second → hashes of AORs whose first push binding may enter the window then.
    at: BTreeMap<u64, Vec<u64>>,
    /// Hashes of AORs whose time came: looked at on every question until none of
    /// their bindings is ending.
    now: HashSet<u64>,
}

impl Ending {
    /// Unix second from which a push binding of `list` may be ending (none: `None`).
    fn first(&self, list: &[Arc<Binding>]) -> Option<u64> {
        self.first_of(list.iter().filter(|b| b.has_push()))
    }

    /// [`Ending::first`] over `bindings`, push info or not.
    fn first_of<'a>(&self, bindings: impl Iterator<Item = &'a Arc<Binding>>) -> Option<u64> {
        bindings
            .map(|b| {
                let end_ms = b
                    .expires_at
                    .saturating_add(self.push_ttl_secs)
                    .saturating_mul(1000);
                end_ms.saturating_sub(self.window_ms) / 1000
            })
            .min()
    }

    fn file(&mut self, hash: u64, list: &[Arc<Binding>]) {
        if let Some(at) = self.first(list) {
            self.at.entry(at).or_default().push(hash);
        }
    }

    /// Whether `b` is ending at `now_ms`: kept now, gone by the end of the window.
    fn is_ending(&self, b: &Binding, now_ms: u64) -> bool {
        b.has_push()
            && b.is_kept(now_ms, self.push_ttl_secs)
            && !b.is_kept(now_ms.saturating_add(self.window_ms), self.push_ttl_secs)
    }
}

/// The earliest SIP expiry (unix s) of a non-empty list.
fn earliest_expiry(list: &[Arc<Binding>]) -> u64 {
    list.iter().map(|b| b.expires_at).min().unwrap_or(0)
}

/// When the next binding of `list` (all kept at `now_ms`) is due to be swept: a live
/// one at its SIP expiry (it may still be kept for the push TTL then, and is looked at
/// again), one kept only for the push TTL when that runs out.
fn next_due(list: &[Arc<Binding>], now_ms: u64, push_ttl_secs: u64) -> u64 {
    list.iter()
        .map(|b| {
            if b.is_live(now_ms) || !b.has_push() {
                b.expires_at
            } else {
                b.expires_at.saturating_add(push_ttl_secs)
            }
        })
        .min()
        .unwrap_or(0)
}

impl Default for AorTable {
    fn default() -> Self {
        AorTable {
            table: (0..PARTS).map(|_| HashTable::new()).collect(),
            hasher: Default::default(),
            due: BTreeMap::new(),
            ending: None,
        }
    }
}

impl AorTable {
    fn hash(&self, aor: &str) -> u64 {
        self.hasher.hash_one(aor)
    }

    /// The part of the table an AOR of `hash` lives in.
    fn part(&self, hash: u64) -> &HashTable<List> {
        &self.table[part_of(hash)]
    }

    /// The part of the table an AOR of `hash` lives in, to change.
    fn part_mut(&mut self, hash: u64) -> &mut HashTable<List> {
        &mut self.table[part_of(hash)]
    }

    /// Every AOR's list, part by part.
    fn lists(&self) -> impl Iterator<Item = &List> {
        self.table.iter().flat_map(HashTable::iter)
    }

    /// The bindings of `aor`, if it has any.
    pub(super) fn get(&self, aor: &str) -> Option<&[Arc<Binding>]> {
        let hash = self.hash(aor);
        self.part(hash)
            .find(hash, |l| aor_of(l) == aor)
            .map(|l| l.as_slice())
    }

    /// The bindings of `aor`, to change in place (leave at least one; keep each
    /// binding's expiry, which the sweep's index was filed by).
    pub(super) fn get_mut(&mut self, aor: &str) -> Option<&mut List> {
        let hash = self.hash(aor);
        let list = self.table[part_of(hash)].find(hash, |l| aor_of(l) == aor)?;
        // a change of push info can bring a binding's end earlier (no push TTL): file
        // the AOR again under its earliest expiry, never later than it is due
        let at = earliest_expiry(list);
        // the change may add push info: the refresh pushes' index files the AOR as
        // if every binding had it (early at worst)
        if let Some(ending) = &mut self.ending {
            if let Some(first) = ending.first_of(list.iter()) {
                ending.at.entry(first).or_default().push(hash);
            }
        }
        self.file(hash, at);
        self.part_mut(hash).find_mut(hash, |l| aor_of(l) == aor)
    }

    /// Sets the bindings of their AOR to `list` at `now_ms`; an empty list removes
    /// nothing (use [`AorTable::remove`]).
    pub(super) fn insert(&mut self, list: Vec<Arc<Binding>>, now_ms: u64) {
        let Some(first) = list.first() else { return };
        let hash = self.hash(first.aor());
        let earliest = earliest_expiry(&list);
        let ending_at = self.ending.as_ref().and_then(|e| e.first(&list));
        // `from_vec` keeps the Vec's buffer unless its capacity fits inline
        let list = if list.len() <= 1 {
            list.into_iter().collect()
        } else {
            List::from_vec(list)
        };
        let aor = aor_of(&list);
        let hasher = &self.hasher;
        let part = &mut self.table[part_of(hash)];
        let (file, file_ending) = match part.find_mut(hash, |l| aor_of(l) == aor) {
            Some(slot) => {
                // the AOR's entry lies no later than the old list's next due binding:
                // enough unless the new list has one due earlier. An old list that
                // held an expired binding may have been filed again later (under its
                // push TTL), so it is filed anew then. The same rule for the refresh
                // pushes' index (an old time that came: the AOR may be in its set, or
                // filed again later).
                let old = earliest_expiry(slot);
                let old_ending = self.ending.as_ref().and_then(|e| e.first(slot));
                *slot = list;
                let file_ending = match (old_ending, ending_at) {
                    (Some(old), Some(new)) => new < old || old.saturating_mul(1000) <= now_ms,
                    (None, new) => new.is_some(),
                    (Some(_), None) => false,
                };
                (
                    earliest < old || old.saturating_mul(1000) <= now_ms,
                    file_ending,
                )
            }
            None => {
                part.insert_unique(hash, list, |l| hasher.hash_one(aor_of(l)));
                (true, ending_at.is_some())
            }
        };
        if file {
            self.file(hash, earliest);
        }
        if let (true, Some(at), Some(ending)) = (file_ending, ending_at, &mut self.ending) {
            ending.at.entry(at).or_default().push(hash);
        }
    }

    /// The push bindings kept at `now_ms` that run out (SIP expiry plus
    /// `push_ttl_secs`) within `window_ms` of it. Visits only AORs whose time came
    /// (see the module's header); the first question, or one with another window or
    /// TTL, files every AOR once.
    pub(super) fn push_ending(
        &mut self,
        now_ms: u64,
        window_ms: u64,
        push_ttl_secs: u64,
    ) -> Vec<Arc<Binding>> {
        let same = self
            .ending
            .as_ref()
            .is_some_and(|e| e.window_ms == window_ms && e.push_ttl_secs == push_ttl_secs);
        if !same {
            let mut ending = Ending {
                push_ttl_secs,
                window_ms,
                at: BTreeMap::new(),
                now: HashSet::new(),
            };
            for list in self.lists() {
                ending.file(self.hasher.hash_one(aor_of(list)), list);
            }
            self.ending = Some(ending);
        }
        let Some(ending) = &mut self.ending else {
            return Vec::new();
        };
        // every entry whose second came moves into the set (filed again below, for
        // next time, when nothing is ending yet)
        let later = ending.at.split_off(&(now_ms / 1000 + 1));
        let came = std::mem::replace(&mut ending.at, later);
        ending.now.extend(came.into_values().flatten());
        let mut out = Vec::new();
        let mut done = Vec::new();
        for &hash in &ending.now {
            let mut any = false;
            for list in self.table[part_of(hash)].iter_hash(hash) {
                if list.is_empty() || self.hasher.hash_one(aor_of(list)) != hash {
                    continue;
                }
                let before = out.len();
                out.extend(list.iter().filter(|b| ending.is_ending(b, now_ms)).cloned());
                any |= out.len() > before;
            }
            if !any {
                done.push(hash);
            }
        }
        for hash in done {
            ending.now.remove(&hash);
            let lists = self.table[part_of(hash)].iter_hash(hash);
            for list in lists.filter(|l| !l.is_empty() && self.hasher.hash_one(aor_of(l)) == hash) {
                ending.file(hash, list);
            }
        }
        out
    }

    /// Files the AOR of `hash` under unix second `at`.
    fn file(&mut self, hash: u64, at: u64) {
        self.due.entry(at).or_default().push(hash);
    }

    /// Removes the bindings no longer kept at `now_ms` (see [`Binding::is_kept`]) from
    /// at most `max` AORs due by then, handing each to `removed`; an AOR left without
    /// bindings goes. Returns true when more AORs are due (call again).
    pub(super) fn sweep_due(
        &mut self,
        now_ms: u64,
        push_ttl_secs: u64,
        max: usize,
        mut removed: impl FnMut(&Arc<Binding>),
    ) -> bool {
        let now_s = now_ms / 1000;
        for _ in 0..max {
            let Some(mut first) = self.due.first_entry() else {
                return false;
            };
            if *first.key() > now_s {
                return false;
            }
            let hashes = first.get_mut();
            let hash = hashes.pop();
            if hashes.is_empty() {
                first.remove();
            }
            if let Some(hash) = hash {
                self.sweep_hash(hash, now_ms, push_ttl_secs, &mut removed);
            }
        }
        self.due
            .first_key_value()
            .is_some_and(|(at, _)| *at <= now_s)
    }

    /// Sweeps the AOR(s) of one hash and files what is left under its next due time.
    fn sweep_hash(
        &mut self,
        hash: u64,
        now_ms: u64,
        push_ttl_secs: u64,
        removed: &mut impl FnMut(&Arc<Binding>),
    ) {
        let mut emptied = false;
        let mut again: SmallVec<[u64; 1]> = SmallVec::new();
        let hasher = &self.hasher;
        // the iterator may also yield lists of other hashes (it matches the hash's
        // top bits only): check each
        let part = &mut self.table[part_of(hash)];
        let lists = part.iter_hash_mut(hash);
        for list in lists.filter(|l| !l.is_empty() && hasher.hash_one(aor_of(l)) == hash) {
            list.retain(|b| {
                let keep = b.is_kept(now_ms, push_ttl_secs);
                if !keep {
                    removed(b);
                }
                keep
            });
            if list.is_empty() {
                emptied = true;
            } else {
                again.push(next_due(list, now_ms, push_ttl_secs));
            }
        }
        if emptied {
            // an emptied list's AOR is gone with its bindings; a list is empty nowhere else
            while let Ok(entry) = part.find_entry(hash, |l| l.is_empty()) {
                entry.remove();
            }
        }
        for at in again {
            self.file(hash, at);
        }
    }

    /// Entries in the sweep's index (for tests and the memory figures).
    #[cfg(test)]
    pub(super) fn due_entries(&self) -> usize {
        self.due.values().map(Vec::len).sum()
    }

    /// Removes `aor` and returns its bindings.
    pub(super) fn remove(&mut self, aor: &str) -> Option<List> {
        let hash = self.hash(aor);
        let entry = self
            .part_mut(hash)
            .find_entry(hash, |l| aor_of(l) == aor)
            .ok()?;
        Some(entry.remove().0)
    }

    /// Number of AORs.
    pub(super) fn len(&self) -> usize {
        self.table.iter().map(HashTable::len).sum()
    }

    /// Every AOR's bindings.
    pub(super) fn values(&self) -> impl Iterator<Item = &[Arc<Binding>]> {
        self.lists().map(|l| l.as_slice())
    }
}

/// The AOR a (non-empty) list belongs to.
fn aor_of(list: &List) -> &str {
    list.first().map_or("", |b| b.aor())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::BindingFields;

    fn b(aor: &str, key: &str) -> Arc<Binding> {
        Arc::new(Binding::for_test(aor, key, "sip:x@h"))
    }

    /// A binding expiring at unix second `at`, with push info or not.
    fn exp(aor: &str, key: &str, at: u64, push: bool) -> Arc<Binding> {
        let mut f = BindingFields::for_test(aor, key, "sip:x@h");
        f.expires_at = at;
        if push {
            f.push = Some("pn-provider=webhook;pn-prid=t".into());
        }
        Arc::new(Binding::new(f))
    }

    fn keys(t: &AorTable, aor: &str) -> Vec<String> {
        t.get(aor)
            .map(|l| l.iter().map(|b| b.key().to_owned()).collect())
            .unwrap_or_default()
    }

    /// Sweeps everything due at `now_s`, in slices of 2 AORs; the keys removed.
    fn sweep(t: &mut AorTable, now_s: u64, ttl: u64) -> Vec<String> {
        let mut gone = Vec::new();
        while t.sweep_due(now_s * 1000, ttl, 2, |b| gone.push(b.key().to_owned())) {}
        gone.sort();
        gone
    }

    #[test]
    fn insert_get_replace_remove() {
        let mut t = AorTable::default();
        assert!(t.get("a@x").is_none());
        t.insert(vec![b("a@x", "1")], 0);
        t.insert(vec![b("b@x", "1"), b("b@x", "2")], 0);
        t.insert(Vec::new(), 0);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("a@x").unwrap().len(), 1);
        t.insert(vec![b("a@x", "2"), b("a@x", "3")], 0);
        assert_eq!(keys(&t, "a@x"), ["2", "3"], "replaced, not added to");
        t.get_mut("b@x").unwrap().retain(|b| b.key() == "2");
        assert_eq!(t.get("b@x").unwrap().len(), 1);
        assert_eq!(t.remove("b@x").unwrap()[0].key(), "2");
        assert!(t.remove("b@x").is_none());
        assert!(t.get("b@x").is_none());
        t.insert(vec![b("c@x", "1")], 0);
        let mut left: Vec<(&str, usize)> = t.values().map(|l| (l[0].aor(), l.len())).collect();
        left.sort();
        assert_eq!(left, [("a@x", 2), ("c@x", 1)]);
    }

    #[test]
    fn many_aors_spread_over_the_parts_and_each_is_found() {
        let mut t = AorTable::default();
        let n = 20 * PARTS;
        for i in 0..n {
            t.insert(vec![b(&format!("u{i}@x"), "1")], 0);
        }
        assert_eq!(t.len(), n);
        assert_eq!(t.values().count(), n);
        // every part holds some: none grows alone
        assert!(t.table.iter().all(|p| !p.is_empty()));
        for i in (0..n).step_by(2) {
            assert!(t.remove(&format!("u{i}@x")).is_some());
        }
        assert_eq!(t.len(), n / 2);
        for i in 0..n {
            assert_eq!(t.get(&format!("u{i}@x")).is_some(), i % 2 == 1, "u{i}");
        }
    }

    #[test]
    fn one_binding_is_kept_inline() {
        let mut t = AorTable::default();
        let mut list = Vec::with_capacity(4);
        list.push(b("a@x", "1"));
        t.insert(list, 0);
        assert!(!t.get_mut("a@x").unwrap().spilled());
        assert!(std::mem::size_of::<List>() <= 24);
    }

    #[test]
    fn sweep_takes_what_is_due_and_nothing_else() {
        let mut t = AorTable::default();
        t.insert(
            vec![exp("a@x", "a1", 100, false), exp("a@x", "a2", 300, false)],
            0,
        );
        t.insert(vec![exp("b@x", "b1", 200, false)], 0);
        t.insert(vec![exp("c@x", "c1", 100, true)], 0);
        assert!(sweep(&mut t, 99, 50).is_empty(), "nothing due yet");
        assert_eq!(t.len(), 3);
        assert_eq!(
            sweep(&mut t, 100, 50),
            ["a1"],
            "a push binding waits its TTL"
        );
        assert_eq!(keys(&t, "a@x"), ["a2"]);
        assert_eq!(keys(&t, "c@x"), ["c1"]);
        assert!(sweep(&mut t, 149, 50).is_empty());
        assert_eq!(sweep(&mut t, 150, 50), ["c1"], "the push TTL ran out");
        assert!(t.get("c@x").is_none(), "an AOR left without bindings goes");
        assert_eq!(sweep(&mut t, 250, 50), ["b1"]);
        assert_eq!(sweep(&mut t, 300, 50), ["a2"]);
        assert_eq!(t.len(), 0);
        assert_eq!(t.due_entries(), 0, "nothing left behind in the index");
    }

    #[test]
    fn refreshed_aors_stay_and_file_once() {
        let mut t = AorTable::default();
        for i in 0..100 {
            t.insert(vec![exp(&format!("u{i}@x"), "k", 100, false)], 0);
        }
        assert_eq!(t.due_entries(), 100);
        // every AOR refreshed before it expires: nothing new filed
        for round in 1..=5u64 {
            for i in 0..100 {
                t.insert(
                    vec![exp(&format!("u{i}@x"), "k", 100 + round * 60, false)],
                    0,
                );
            }
            assert_eq!(t.due_entries(), 100, "a refresh files nothing");
            // the old entries come due early, find nothing, and file once again
            assert!(sweep(&mut t, 100 + (round - 1) * 60 + 30, 0).is_empty());
            assert_eq!(t.len(), 100, "nothing due stays");
            assert!(t.due_entries() <= 100, "{} entries", t.due_entries());
        }
        // a shorter expiry than the one filed is filed again, earlier
        t.insert(vec![exp("u7@x", "k", 150, false)], 0);
        assert_eq!(sweep(&mut t, 151, 0), ["k"]);
        assert!(t.get("u7@x").is_none());
        // removed AORs' entries find nothing
        for i in 0..50 {
            t.remove(&format!("u{i}@x"));
        }
        assert_eq!(
            sweep(&mut t, 1000, 0).len(),
            50,
            "every one due went, eventually"
        );
        assert_eq!(t.len(), 0);
        assert_eq!(t.due_entries(), 0);
    }

    #[test]
    fn push_info_removed_after_expiry_is_swept_without_its_ttl() {
        let mut t = AorTable::default();
        t.insert(vec![exp("a@x", "k", 100, true)], 0);
        assert!(sweep(&mut t, 100, 500).is_empty(), "kept for the push TTL");
        // the push token is dropped (a dead token): no TTL any more
        let list = t.get_mut("a@x").unwrap();
        list[0] = Arc::new(list[0].with_push(None));
        assert_eq!(sweep(&mut t, 101, 500), ["k"]);
    }

    #[test]
    fn many_due_are_taken_a_slice_at_a_time() {
        let mut t = AorTable::default();
        for i in 0..10 {
            t.insert(vec![exp(&format!("u{i}@x"), "k", 100 + i, false)], 0);
        }
        let mut n = 0;
        let more = t.sweep_due(200_000, 0, 4, |_| n += 1);
        assert!(more, "more AORs due");
        assert_eq!((n, t.len()), (4, 6));
        while t.sweep_due(200_000, 0, 4, |_| n += 1) {}
        assert_eq!((n, t.len()), (10, 0));
        assert!(!t.sweep_due(200_000, 0, 4, |_| n += 1));
    }

    #[test]
    fn re_registered_after_expiry_is_filed_again() {
        let mut t = AorTable::default();
        t.insert(vec![exp("a@x", "k", 100, true)], 0);
        assert!(sweep(&mut t, 120, 500).is_empty(), "kept, filed under 600");
        // the phone wakes and registers for a short while, without push
        t.insert(vec![exp("a@x", "k", 130, false)], 125_000);
        assert_eq!(sweep(&mut t, 130, 500), ["k"]);
    }

    /// What the refresh pushes asked before the index: a walk over every binding.
    fn ending_by_walk(t: &AorTable, now_ms: u64, window_ms: u64, ttl: u64) -> Vec<String> {
        let mut v: Vec<String> = t
            .values()
            .flatten()
            .filter(|b| {
                b.has_push() && b.is_kept(now_ms, ttl) && !b.is_kept(now_ms + window_ms, ttl)
            })
            .map(|b| format!("{}/{}", b.aor(), b.key()))
            .collect();
        v.sort();
        v
    }

    fn ending(t: &mut AorTable, now_ms: u64, window_ms: u64, ttl: u64) -> Vec<String> {
        let mut v: Vec<String> = t
            .push_ending(now_ms, window_ms, ttl)
            .iter()
            .map(|b| format!("{}/{}", b.aor(), b.key()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn push_ending_matches_a_walk_over_every_binding() {
        let (window, ttl) = (50_000, 100);
        let mut t = AorTable::default();
        for i in 0..40u64 {
            let aor = format!("u{i}@x");
            let mut list = vec![exp(&aor, "p", 1000 + i * 7, true)];
            if i % 3 == 0 {
                list.push(exp(&aor, "plain", 1000 + i, false));
            }
            if i % 5 == 0 {
                list.push(exp(&aor, "p2", 990 + i * 11, true));
            }
            t.insert(list, 0);
        }
        let mut seen_any = false;
        for s in (900..1600u64).step_by(3) {
            let now = s * 1000 + 500;
            // some phones register again (their end moves on), some go away
            if s % 60 == 0 {
                let i = s % 40;
                let aor = format!("u{i}@x");
                t.insert(vec![exp(&aor, "p", s + 200, true)], now);
            }
            if s == 1200 {
                t.remove("u3@x");
            }
            let got = ending(&mut t, now, window, ttl);
            assert_eq!(got, ending_by_walk(&t, now, window, ttl), "at {s} s");
            seen_any |= !got.is_empty();
            let _ = t.sweep_due(now, ttl, usize::MAX, |_| {});
        }
        assert!(seen_any, "the test covered bindings ending");
        let e = t.ending.as_ref().unwrap();
        assert!(
            e.now.len() <= t.len(),
            "the set holds AORs, at most once each"
        );
    }

    #[test]
    fn push_ending_visits_only_aors_near_their_end() {
        let mut t = AorTable::default();
        for i in 0..100u64 {
            t.insert(vec![exp(&format!("u{i}@x"), "p", 10_000, true)], 0);
        }
        t.insert(vec![exp("soon@x", "p", 1_000, true)], 0);
        t.insert(vec![exp("plain@x", "k", 1_000, false)], 0);
        assert!(ending(&mut t, 500_000, 100_000, 50).is_empty());
        assert_eq!(ending(&mut t, 960_000, 100_000, 50), ["soon@x/p"]);
        assert_eq!(t.ending.as_ref().unwrap().now.len(), 1, "one AOR looked at");
        assert_eq!(
            ending(&mut t, 961_000, 100_000, 50),
            ["soon@x/p"],
            "asked again"
        );
        // the phone registers again: no longer ending, and out of the set next time
        t.insert(vec![exp("soon@x", "p", 5_000, true)], 962_000);
        assert!(ending(&mut t, 963_000, 100_000, 50).is_empty());
        assert!(t.ending.as_ref().unwrap().now.is_empty());
        // a binding that gains push info later is found too
        t.insert(vec![exp("late@x", "k", 2_000, false)], 963_000);
        let list = t.get_mut("late@x").unwrap();
        list[0] = Arc::new(list[0].with_push(Some("pn-provider=webhook;pn-prid=t".into())));
        assert_eq!(ending(&mut t, 1_960_000, 100_000, 50), ["late@x/k"]);
    }
}
