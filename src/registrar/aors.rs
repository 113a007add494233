//! The one-node registrar's table of AORs: each AOR's bindings, found by the AOR.
//!
//! Built for memory per binding (issue 13): an entry is the AOR's list of bindings
//! and nothing else. The AOR is not stored again as a key (it is read out of the
//! first binding, which every binding of the list shares), and the usual AOR with one
//! binding keeps it inline, with no list allocated: 24 bytes and a control byte per
//! AOR, against a `HashMap<String, Vec<_>>`'s 48 bytes plus two allocations.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use smallvec::SmallVec;

use super::Binding;

/// One AOR's bindings (never empty, every one of the same AOR).
pub(super) type List = SmallVec<[Arc<Binding>; 1]>;

/// AOR → its bindings.
#[derive(Default)]
pub(super) struct AorTable {
    table: HashTable<List>,
    hasher: std::collections::hash_map::RandomState,
}

impl AorTable {
    fn hash(&self, aor: &str) -> u64 {
        self.hasher.hash_one(aor)
    }

    /// The bindings of `aor`, if it has any.
    pub(super) fn get(&self, aor: &str) -> Option<&[Arc<Binding>]> {
        self.table
            .find(self.hash(aor), |l| aor_of(l) == aor)
            .map(|l| l.as_slice())
    }

    /// The bindings of `aor`, to change in place (leave at least one).
    pub(super) fn get_mut(&mut self, aor: &str) -> Option<&mut List> {
        let hash = self.hash(aor);
        self.table.find_mut(hash, |l| aor_of(l) == aor)
    }

    /// Sets the bindings of their AOR to `list`; an empty list removes nothing (use
    /// [`AorTable::remove`]).
    pub(super) fn insert(&mut self, list: Vec<Arc<Binding>>) {
        let Some(first) = list.first() else { return };
        let hash = self.hash(first.aor());
        // `from_vec` keeps the Vec's buffer unless its capacity fits inline
        let list = if list.len() <= 1 {
            list.into_iter().collect()
        } else {
            List::from_vec(list)
        };
        let aor = aor_of(&list);
        let hasher = &self.hasher;
        match self.table.find_mut(hash, |l| aor_of(l) == aor) {
            Some(slot) => *slot = list,
            None => {
                self.table
                    .insert_unique(hash, list, |l| hasher.hash_one(aor_of(l)));
            }
        }
    }

    /// Removes `aor` and returns its bindings.
    pub(super) fn remove(&mut self, aor: &str) -> Option<List> {
        let hash = self.hash(aor);
        let entry = self.table.find_entry(hash, |l| aor_of(l) == aor).ok()?;
        Some(entry.remove().0)
    }

    /// Keeps the AORs for which `keep` returns true; `keep` may drop bindings, and
    /// must return false when it leaves none.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&mut List) -> bool) {
        self.table.retain(|l| keep(l) && !l.is_empty());
    }

    /// Number of AORs.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Every AOR's bindings.
    pub(super) fn values(&self) -> impl Iterator<Item = &[Arc<Binding>]> {
        self.table.iter().map(|l| l.as_slice())
    }
}

/// The AOR a (non-empty) list belongs to.
fn aor_of(list: &List) -> &str {
    list.first().map_or("", |b| b.aor())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(aor: &str, key: &str) -> Arc<Binding> {
        Arc::new(Binding::for_test(aor, key, "sip:x@h"))
    }

    #[test]
    fn insert_get_replace_remove_retain() {
        let mut t = AorTable::default();
        assert!(t.get("a@x").is_none());
        t.insert(vec![b("a@x", "1")]);
        t.insert(vec![b("b@x", "1"), b("b@x", "2")]);
        t.insert(Vec::new());
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("a@x").unwrap().len(), 1);
        t.insert(vec![b("a@x", "2"), b("a@x", "3")]);
        let keys: Vec<&str> = t.get("a@x").unwrap().iter().map(|b| b.key()).collect();
        assert_eq!(keys, ["2", "3"], "replaced, not added to");
        t.get_mut("b@x").unwrap().retain(|b| b.key() == "2");
        assert_eq!(t.get("b@x").unwrap().len(), 1);
        assert_eq!(t.remove("b@x").unwrap()[0].key(), "2");
        assert!(t.remove("b@x").is_none());
        assert!(t.get("b@x").is_none());
        t.insert(vec![b("c@x", "1")]);
        t.retain(|l| {
            l.retain(|b| b.key() != "2");
            true
        });
        let mut left: Vec<(&str, usize)> = t.values().map(|l| (l[0].aor(), l.len())).collect();
        left.sort();
        assert_eq!(left, [("a@x", 1), ("c@x", 1)]);
        t.retain(|l| {
            l.clear();
            true
        });
        assert_eq!(t.len(), 0, "an AOR left without bindings goes");
    }

    #[test]
    fn one_binding_is_kept_inline() {
        let mut t = AorTable::default();
        let mut list = Vec::with_capacity(4);
        list.push(b("a@x", "1"));
        t.insert(list);
        assert!(!t.get_mut("a@x").unwrap().spilled());
        assert!(std::mem::size_of::<List>() <= 24);
    }
}
