//! A map from 64-bit keyed hashes to values, kept in parts that grow one at a time.
//!
//! A hash map doubles when full and moves every entry as it does: the transaction
//! table holds a quarter of a million answered REGISTERs waiting out Timer J at
//! 8,000/s, and one doubling held the runtime thread (and every message behind the
//! table's lock) for 9–26 ms (docs/BENCHMARKS.md, "The latency tail at 8,000/s").
//! [`Parted`] splits the map in [`PARTS`] by bits of the key the parts' own hashing
//! does not use, so a doubling moves a 64th of the entries. A map never shrinks by
//! itself, and each part crosses its own power-of-two thresholds, so after a peak the
//! parts may keep a little more room than one map would: [`Parted::shrink_emptied`]
//! gives back the room of parts that emptied, a few at a time (one map could only be
//! shrunk whole, a pause as long as a doubling). The keys must already be hashes
//! (uniform bits), as the transaction keys are.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Parts of a [`Parted`] map (a power of two).
pub const PARTS: usize = 64;

/// `u64` → `V`, in [`PARTS`] hash maps chosen by the key (see the module's header).
#[derive(Debug)]
pub struct Parted<V, S = RandomState> {
    parts: Box<[HashMap<u64, V, S>]>,
}

impl<V, S: Default> Default for Parted<V, S> {
    fn default() -> Self {
        Parted {
            parts: (0..PARTS).map(|_| HashMap::default()).collect(),
        }
    }
}

/// The part of key `k`: bits 32 and up (hashbrown places by the low bits and tags by
/// the top seven, so a part's own table still sees uniform bits there).
fn part_of(k: u64) -> usize {
    (k >> 32) as usize & (PARTS - 1)
}

impl<V, S: BuildHasher> Parted<V, S> {
    /// The value of `k`.
    pub fn get(&self, k: &u64) -> Option<&V> {
        self.parts[part_of(*k)].get(k)
    }

    /// Whether `k` has a value.
    pub fn contains_key(&self, k: &u64) -> bool {
        self.parts[part_of(*k)].contains_key(k)
    }

    /// Sets the value of `k`; returns the one it replaced.
    pub fn insert(&mut self, k: u64, v: V) -> Option<V> {
        self.parts[part_of(k)].insert(k, v)
    }

    /// Removes `k` and returns its value.
    pub fn remove(&mut self, k: &u64) -> Option<V> {
        self.parts[part_of(*k)].remove(k)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.parts.iter().map(HashMap::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(HashMap::is_empty)
    }

    /// Every value, part by part.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.parts.iter().flat_map(HashMap::values)
    }

    /// Gives back the room of at most `max` parts that have emptied since they grew (a
    /// part with room for four times its entries and more keeps room for twice them),
    /// and returns how many it shrank. A map never shrinks by itself: after a peak
    /// (the REGISTERs of a busy minute waiting out Timer J) it kept the peak's room;
    /// in parts, each shrink rehashes one small part, so the caller can bound the
    /// work per call.
    pub fn shrink_emptied(&mut self, max: usize) -> usize {
        let mut shrunk = 0;
        for part in self.parts.iter_mut() {
            if shrunk == max {
                break;
            }
            // small parts are not worth it: a few buckets
            if part.capacity() > 64 && part.len() * 4 < part.capacity() {
                part.shrink_to(part.len() * 2);
                shrunk += 1;
            }
        }
        shrunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyed hashes, as the transaction table's keys are.
    fn keys(n: u64) -> Vec<u64> {
        let h = RandomState::new();
        (0..n).map(|i| h.hash_one(i)).collect()
    }

    #[test]
    fn behaves_as_one_map() {
        let mut m: Parted<u64> = Parted::default();
        let mut plain = HashMap::new();
        assert!(m.is_empty());
        let ks = keys(5_000);
        for (i, k) in ks.iter().enumerate() {
            assert_eq!(m.insert(*k, i as u64), plain.insert(*k, i as u64));
        }
        // replacing returns the old value
        assert_eq!(m.insert(ks[7], 70), Some(7));
        plain.insert(ks[7], 70);
        for k in ks.iter().step_by(3) {
            assert_eq!(m.remove(k), plain.remove(k));
            assert_eq!(m.remove(k), None);
        }
        assert_eq!(m.len(), plain.len());
        for k in &ks {
            assert_eq!(m.get(k), plain.get(k));
            assert_eq!(m.contains_key(k), plain.contains_key(k));
        }
        let mut a: Vec<u64> = m.values().copied().collect();
        let mut b: Vec<u64> = plain.values().copied().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }

    #[test]
    fn emptied_parts_give_their_room_back_a_few_at_a_time() {
        let mut m: Parted<u64> = Parted::default();
        let ks = keys(64_000);
        for k in &ks {
            m.insert(*k, 1);
        }
        let room = |m: &Parted<u64>| m.parts.iter().map(HashMap::capacity).sum::<usize>();
        let peak = room(&m);
        // a full map has nothing to give back
        assert_eq!(m.shrink_emptied(PARTS), 0);
        for k in &ks[..60_000] {
            m.remove(k);
        }
        // a map does not shrink by itself (its room only loses the removed slots
        // that stay marked)
        assert!(room(&m) * 2 > peak, "{} of {peak}", room(&m));
        // bounded per call
        assert_eq!(m.shrink_emptied(3), 3);
        while m.shrink_emptied(8) > 0 {}
        assert!(room(&m) * 4 < peak, "{} of {peak}", room(&m));
        // what is left is all there
        assert_eq!(m.len(), 4_000);
        for k in &ks[60_000..] {
            assert_eq!(m.get(k), Some(&1));
        }
    }

    #[test]
    fn hashed_keys_spread_over_every_part() {
        let mut m: Parted<()> = Parted::default();
        let n = 64_000;
        for k in keys(n) {
            m.insert(k, ());
        }
        // 1,000 per part on average: none near empty, none holding several parts' worth
        assert!(m.parts.iter().all(|p| p.len() > 500));
        let largest = m.parts.iter().map(HashMap::len).max().unwrap_or(0);
        assert!(largest < 2_000, "{largest}");
    }
}
