//! Caps on open inbound connections, in total and per source, checked once at accept
//! (TCP, and TLS before its handshake). A refused connection is closed at once, before
//! any buffer or task is spent on it. An admitted one holds a [`ConnPermit`] that
//! gives its place back when dropped, so every way a connection ends releases it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::IpNet;

/// The source a limit counts against: an IPv4 address (IPv4-mapped IPv6 included), or
/// an IPv6 /64, since one IPv6 host usually holds a whole /64 and could rotate
/// through it.
pub fn source_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            // the high bit keeps IPv6 prefixes apart from IPv4 addresses
            None => (u128::from(v6) >> 64) | (1 << 127),
        },
    }
}

/// Connection caps shared by every stream listener.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_source: usize,
    exempt: Vec<IpNet>,
    total: AtomicUsize,
    /// Sources with at least one open connection: never more entries than
    /// `max_total`, whatever the number of sources.
    per_source: Mutex<HashMap<u128, u32>>,
    refused: AtomicU64,
}

/// One admitted connection's place; dropping it gives the place back.
#[derive(Debug)]
pub struct ConnPermit {
    limits: Arc<ConnLimits>,
    /// `None` for sources exempt from the per-source cap.
    key: Option<u128>,
}

impl ConnLimits {
    /// Caps of `max_total` connections, `max_per_source` from one source; sources in
    /// `exempt` (trusted peers) only count toward the total.
    pub fn new(max_total: usize, max_per_source: usize, exempt: Vec<IpNet>) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max_total,
            max_per_source,
            exempt,
            total: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        })
    }

    /// A place for a new connection from `ip`, or `None` when a cap is reached.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let key = if self.exempt.iter().any(|n| n.contains(ip)) {
            None
        } else {
            let key = source_key(ip);
            let mut map = self.per_source.lock();
            let n = map.entry(key).or_insert(0);
            if *n as usize >= self.max_per_source {
                drop(map);
                self.total.fetch_sub(1, Ordering::AcqRel);
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            *n += 1;
            Some(key)
        };
        Some(ConnPermit {
            limits: self.clone(),
            key,
        })
    }

    /// Connections admitted and still open.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The total cap.
    pub fn max_total(&self) -> usize {
        self.max_total
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut map = self.limits.per_source.lock();
            if let Some(n) = map.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_total_and_per_source_and_permits_give_back() {
        let l = ConnLimits::new(3, 2, vec![IpNet::parse("10.0.0.0/8").unwrap()]);
        let a1 = l.try_admit(ip("127.0.0.2")).expect("first");
        let a2 = l.try_admit(ip("127.0.0.2")).expect("second");
        assert!(l.try_admit(ip("127.0.0.2")).is_none(), "per-source cap");
        let b = l.try_admit(ip("127.0.0.3")).expect("other source");
        assert!(
            l.try_admit(ip("10.1.1.1")).is_none(),
            "total cap, even exempt"
        );
        assert_eq!((l.open(), l.refused()), (3, 2));
        drop(a1);
        let t = l
            .try_admit(ip("10.1.1.1"))
            .expect("exempt source after a close");
        drop((a2, b, t));
        assert_eq!(l.open(), 0);
        assert!(l.per_source.lock().is_empty());
    }

    #[test]
    fn exempt_sources_have_no_per_source_cap() {
        let l = ConnLimits::new(10, 1, vec![IpNet::parse("10.0.0.0/8").unwrap()]);
        let held: Vec<_> = (0..5).filter_map(|_| l.try_admit(ip("10.0.0.1"))).collect();
        assert_eq!(held.len(), 5);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        assert_eq!(
            source_key(ip("2001:db8:1:2::1")),
            source_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            source_key(ip("2001:db8:1:2::1")),
            source_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            source_key(ip("::ffff:127.0.0.2")),
            source_key(ip("127.0.0.2"))
        );
        assert_ne!(source_key(ip("::")), source_key(ip("0.0.0.0")));
    }
}
