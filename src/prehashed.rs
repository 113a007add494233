//! A hasher for maps whose `u64` keys already are keyed hashes.
//!
//! Why it exists: the transaction tables and the dialog map are keyed by 64-bit
//! SipHash values made with a per-process random key (`transaction::key`,
//! `proxy::dialogs`), so that a peer cannot aim collisions at them. A `HashMap<u64, _>`
//! with the standard `RandomState` then runs SipHash a second time over that key on
//! every insert, lookup and removal (several per message). The key is as good a hash
//! as a second SipHash would make of it, and a peer can predict neither, so it is used
//! as is: hash-flooding resistance comes from the random key of the first hash.
//!
//! Only for keys that are such hashes: any other key (an address, a Call-ID) would be
//! chosen by a peer and needs `RandomState`. A leaf module.

use std::hash::{BuildHasher, Hasher};

/// Builds [`PreHashed`] hashers (a `HashMap`'s `S`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PreHashedState;

impl BuildHasher for PreHashedState {
    type Hasher = PreHashed;

    fn build_hasher(&self) -> PreHashed {
        PreHashed(0)
    }
}

/// Passes a `u64` key through as its own hash.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // not reached with `u64` keys (they call `write_u64`); kept total for any other
        // use: the bytes folded in, eight at a time
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_u64_key_is_its_own_hash() {
        assert_eq!(
            PreHashedState.hash_one(0x1234_5678_9abc_def0u64),
            0x1234_5678_9abc_def0
        );
        let mut m: HashMap<u64, u32, PreHashedState> = HashMap::default();
        for k in 0..1000u64 {
            m.insert(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), k as u32);
        }
        assert_eq!(m.get(&7u64.wrapping_mul(0x9e37_79b9_7f4a_7c15)), Some(&7));
        assert_eq!(m.len(), 1000);
    }
}
