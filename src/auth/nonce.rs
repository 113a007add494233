//! Nonces: issued without state, checked by their own MAC, and remembered only once a
//! correct response used them, for nonce-count replay protection (RFC 7616 §3.4).
//!
//! A nonce is 64 hex digits: the issue time (ms since this process started, 8 bytes),
//! a counter (8 bytes, starting at a random value) and the first 16 bytes of
//! HMAC-SHA-256 over both under a secret drawn at start. Nothing is stored when a
//! challenge goes out, so a flood of unauthenticated requests costs no memory. The
//! highest nonce-count seen is stored per nonce only after a response verified, so
//! only holders of a password can add entries; entries leave with their nonce.
//!
//! The secret lives only in this process: after a restart every earlier nonce is
//! unknown, and a phone answering one with the right password gets `stale=true` and
//! retries without asking its user. Replay protection does not survive a restart
//! otherwise, because the counts are not stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

use super::digest::hex_eq;

/// Most nonces whose count is remembered at once. A nonce is remembered only after a
/// correct response and for at most two nonce lifetimes, so a busy server with a
/// 300 s lifetime needs far fewer; reaching the cap answers `503` rather than
/// forgetting counts (forgetting would allow replays).
pub const MAX_TRACKED: usize = 1 << 18;

/// What a nonce and nonce-count are worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, within its lifetime, and the count is higher than any seen: accepted and
    /// remembered.
    Fresh,
    /// Not ours (another process, forged) or too old: the client should retry with
    /// a fresh nonce (`stale=true`).
    Stale,
    /// The count is not higher than one already used with this nonce.
    Replay,
    /// Too many nonces remembered; nothing was recorded.
    Full,
}

/// Issues and checks nonces.
pub struct Nonces {
    key: [u8; 32],
    start: Instant,
    ttl: Duration,
    counter: AtomicU64,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Seen {
    /// Issue time and counter of a nonce → (highest nc, forget after ms).
    counts: HashMap<[u8; 16], (u32, u64)>,
    next_sweep_ms: u64,
}

type HmacSha256 = Hmac<Sha256>;

impl Nonces {
    /// Nonces valid for `ttl`, under a fresh random secret.
    pub fn new(ttl: Duration) -> Nonces {
        let mut key = [0u8; 32];
        let mut seed = [0u8; 8];
        // without the OS generator the key would be guessable; fall back to the
        // clock only so that sipwake still starts, and say so
        if getrandom::fill(&mut key).is_err() || getrandom::fill(&mut seed).is_err() {
            tracing::warn!("no OS random numbers: nonce secret taken from the clock");
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            key[..16].copy_from_slice(&t.to_le_bytes());
        }
        Nonces {
            key,
            start: Instant::now(),
            ttl,
            counter: AtomicU64::new(u64::from_le_bytes(seed)),
            seen: Mutex::new(Seen::default()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mac(&self, id: &[u8; 16]) -> [u8; 16] {
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(id);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A fresh nonce.
    pub fn issue(&self) -> String {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.now_ms().to_be_bytes());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        id[8..].copy_from_slice(&n.to_be_bytes());
        let mac = self.mac(&id);
        let mut s = hex::encode(id);
        s.push_str(&hex::encode(mac));
        s
    }

    /// Checks `nonce` with nonce-count `nc` and, when both are good, records `nc`.
    /// Call it only after the response was verified.
    pub fn check(&self, nonce: &str, nc: u32) -> NonceCheck {
        let Some((id, issued_ms)) = self.decode(nonce) else {
            return NonceCheck::Stale;
        };
        let now = self.now_ms();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(issued_ms) > ttl_ms {
            return NonceCheck::Stale;
        }
        let forget_at = issued_ms.saturating_add(ttl_ms).saturating_add(1000);
        let mut seen = self.seen.lock();
        if now >= seen.next_sweep_ms {
            seen.counts.retain(|_, (_, until)| *until > now);
            seen.next_sweep_ms = now.saturating_add(ttl_ms.clamp(1000, 60_000));
        }
        if let Some((last, _)) = seen.counts.get_mut(&id) {
            if nc <= *last {
                return NonceCheck::Replay;
            }
            *last = nc;
            return NonceCheck::Fresh;
        }
        if seen.counts.len() >= MAX_TRACKED {
            seen.counts.retain(|_, (_, until)| *until > now);
            if seen.counts.len() >= MAX_TRACKED {
                return NonceCheck::Full;
            }
        }
        seen.counts.insert(id, (nc, forget_at));
        NonceCheck::Fresh
    }

    /// The id and issue time of one of our nonces; `None` if the MAC is wrong.
    fn decode(&self, nonce: &str) -> Option<([u8; 16], u64)> {
        if nonce.len() != 64 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(nonce.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        let mac = hex::encode(self.mac(&id));
        if !hex_eq(&mac, nonce.get(32..)?) {
            return None;
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&id[..8]);
        Some((id, u64::from_be_bytes(t)))
    }

    /// How many nonces have their count remembered.
    pub fn tracked(&self) -> usize {
        self.seen.lock().counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_must_grow() {
        let n = Nonces::new(Duration::from_secs(60));
        let a = n.issue();
        let b = n.issue();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(n.tracked(), 0, "issuing stores nothing");
        assert_eq!(n.check(&a, 1), NonceCheck::Fresh);
        assert_eq!(n.check(&a, 1), NonceCheck::Replay);
        assert_eq!(n.check(&a, 3), NonceCheck::Fresh);
        assert_eq!(n.check(&a, 2), NonceCheck::Replay);
        assert_eq!(n.check(&b, 1), NonceCheck::Fresh);
        assert_eq!(n.tracked(), 2);
    }

    #[test]
    fn foreign_and_tampered_nonces_are_stale() {
        let n = Nonces::new(Duration::from_secs(60));
        let other = Nonces::new(Duration::from_secs(60));
        assert_eq!(n.check(&other.issue(), 1), NonceCheck::Stale);
        let mut a = n.issue();
        let last = if a.ends_with('0') { "1" } else { "0" };
        a.replace_range(63.., last);
        assert_eq!(n.check(&a, 1), NonceCheck::Stale);
        assert_eq!(n.check("short", 1), NonceCheck::Stale);
        assert_eq!(n.check(&"zz".repeat(32), 1), NonceCheck::Stale);
        assert_eq!(n.tracked(), 0);
    }

    #[test]
    fn old_nonces_are_stale() {
        let n = Nonces::new(Duration::from_millis(1));
        let a = n.issue();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(n.check(&a, 1), NonceCheck::Stale);
    }
}
