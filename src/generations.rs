//! A map that forgets entries some time after they were last touched, without ever
//! walking its entries.
//!
//! Why it exists: the flows' last-seen times (`transport::liveness`) and the proxy's
//! dialogs (`proxy::dialogs`) used to be swept with a `retain` over the whole map,
//! under the lock every datagram (or every 2xx and BYE) takes; with 60,000 phones that
//! scan held the message path for a millisecond or more (docs/BENCHMARKS.md, "The
//! latency tail"). Here the entries live in a few generations, newest first: a touch
//! puts its entry in the newest, and a sweep drops the oldest generation whole and
//! starts a new one, which costs the same whatever the number of entries. The
//! generations taken out are handed back, so their memory is freed after the caller's
//! lock is released.
//!
//! The price is precision: with [`GENERATIONS`] generations each spanning a quarter
//! of `max_age`, an entry is forgotten between `max_age` and 1.25 × `max_age` (plus
//! the sweep's own period) after it was last touched, never sooner.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};
use std::time::{Duration, Instant};

/// Generations kept. An entry outlives `GENERATIONS - 1` rotations, each `max_age /
/// (GENERATIONS - 1)` apart, so it is kept at least `max_age`.
pub const GENERATIONS: u32 = 5;

/// Entries by key, in generations by when they were last touched. `S` hashes the keys
/// (`RandomState` unless the keys already are keyed hashes, see `crate::prehashed`).
#[derive(Debug)]
pub struct Generations<K, V, S = RandomState> {
    /// Newest first; never empty.
    gens: VecDeque<HashMap<K, V, S>>,
    /// When the newest generation started.
    started: Instant,
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> Default for Generations<K, V, S> {
    fn default() -> Self {
        Self::starting(Instant::now())
    }
}

impl<K: Hash + Eq, V> Generations<K, V> {
    /// An empty map whose first generation starts at `now`, keys hashed with
    /// `RandomState`.
    pub fn new(now: Instant) -> Self {
        Self::starting(now)
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> Generations<K, V, S> {
    /// An empty map whose first generation starts at `now`, keys hashed with `S`.
    pub fn starting(now: Instant) -> Self {
        let mut gens = VecDeque::with_capacity(GENERATIONS as usize + 1);
        gens.push_back(HashMap::default());
        Generations { gens, started: now }
    }

    fn newest(&mut self) -> &mut HashMap<K, V, S> {
        if self.gens.is_empty() {
            self.gens.push_back(HashMap::default());
        }
        &mut self.gens[0]
    }

    /// Sets `key` to `value` in the newest generation (dropping any older entry), unless
    /// the key is new and `cap` entries are held already. Returns false when the cap
    /// kept it out.
    /// A key already in the newest generation (the usual case) costs one lookup.
    pub fn insert_capped(&mut self, key: K, value: V, cap: usize) -> bool {
        if let Some(v) = self.newest().get_mut(&key) {
            *v = value;
            return true;
        }
        let older = self.gens.iter_mut().skip(1).find_map(|g| g.remove(&key));
        if older.is_none() && self.len() >= cap {
            return false;
        }
        self.newest().insert(key, value);
        true
    }

    /// Sets `key` to `value` in the newest generation (dropping any older entry).
    pub fn insert(&mut self, key: K, value: V) {
        self.insert_capped(key, value, usize::MAX);
    }

    /// The entry of `key`, wherever it is.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.gens.iter().find_map(|g| g.get(key))
    }

    /// Removes the entry of `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.gens.iter_mut().find_map(|g| g.remove(key))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.gens.iter().map(HashMap::len).sum()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.gens.iter().all(HashMap::is_empty)
    }

    /// Starts as many new generations as `now` calls for, so that nothing touched
    /// within `max_age` of `now` is dropped, and hands back the generations dropped
    /// (drop them once the lock is released). A zero `max_age` drops everything.
    /// Costs a few moves of map headers, whatever the number of entries.
    #[must_use = "the dropped generations: drop them after releasing the lock"]
    pub fn rotate(&mut self, now: Instant, max_age: Duration) -> Vec<HashMap<K, V, S>> {
        let step = max_age / (GENERATIONS - 1);
        if step.is_zero() {
            self.started = now;
            let all = std::mem::take(&mut self.gens).into_iter().collect();
            self.gens.push_back(HashMap::default());
            return all;
        }
        let mut dropped = Vec::new();
        let mut turns = 0;
        while now.saturating_duration_since(self.started) >= step {
            self.gens.push_front(HashMap::default());
            if self.gens.len() > GENERATIONS as usize {
                dropped.extend(self.gens.pop_back());
            }
            turns += 1;
            if turns >= GENERATIONS {
                // everything before is gone already: catch up at once
                self.started = now;
                break;
            }
            self.started += step;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(40);

    #[test]
    fn nothing_touched_within_max_age_goes_everything_older_goes_eventually() {
        let t0 = Instant::now();
        let mut g = Generations::new(t0);
        for k in 0..100u32 {
            g.insert(k, 0u32);
        }
        let mut dropped = 0;
        // keep touching the even keys every 5 s for 3 × AGE, sweeping every second
        for s in 1..=120u64 {
            let now = t0 + Duration::from_secs(s);
            if s % 5 == 0 {
                for k in (0..100u32).step_by(2) {
                    assert!(g.get(&k).is_some(), "a touched key is never dropped");
                    g.insert(k, 1);
                }
            }
            dropped += g.rotate(now, AGE).iter().map(HashMap::len).sum::<usize>();
            if s < AGE.as_secs() {
                assert_eq!(g.len(), 100, "nothing goes before max_age ({s} s)");
            }
        }
        assert_eq!(dropped, 50, "every silent key went");
        assert_eq!(g.len(), 50);
        assert!((0..100u32).all(|k| g.get(&k).is_some() == (k % 2 == 0)));
    }

    #[test]
    fn silent_entry_goes_between_max_age_and_a_quarter_more() {
        let t0 = Instant::now();
        let mut g = Generations::new(t0);
        g.insert("a", ());
        let mut gone_at = None;
        for s in 1..=100u64 {
            let _ = g.rotate(t0 + Duration::from_secs(s), AGE);
            if gone_at.is_none() && g.get(&"a").is_none() {
                gone_at = Some(s);
            }
        }
        let s = gone_at.expect("forgotten");
        assert!((40..=50).contains(&s), "forgotten after {s} s");
    }

    #[test]
    fn insert_replaces_remove_and_cap() {
        let t0 = Instant::now();
        let mut g = Generations::new(t0);
        g.insert(1, 'a');
        let _ = g.rotate(t0 + AGE / 2, AGE);
        assert_eq!(g.get(&1), Some(&'a'));
        assert!(g.get(&2).is_none());
        g.insert(1, 'b');
        assert_eq!(g.len(), 1, "replaced, not added to");
        assert!(g.insert_capped(3, 'c', 2));
        assert!(
            !g.insert_capped(4, 'd', 2),
            "past the cap a new key stays out"
        );
        assert!(g.insert_capped(3, 'e', 2), "a known key is still updated");
        let _ = g.rotate(t0 + AGE, AGE);
        assert!(
            g.insert_capped(1, 'f', 2),
            "a known key in an older generation too"
        );
        assert_eq!(g.remove(&3), Some('e'));
        assert_eq!(g.remove(&3), None);
        assert_eq!(g.get(&1), Some(&'f'));
        assert_eq!(g.rotate(t0 + AGE * 10, AGE).len(), GENERATIONS as usize);
        assert!(g.is_empty());
        assert!(g.insert_capped(9, 'g', 2), "usable after a long gap");
        let all = g.rotate(t0 + AGE * 10, Duration::ZERO);
        assert_eq!(all.iter().map(HashMap::len).sum::<usize>(), 1);
        assert!(g.is_empty());
    }
}
