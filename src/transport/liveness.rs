//! When each flow last showed life: any datagram or keep-alive from that exact UDP
//! address, any bytes read on a TCP connection. Push decides from this whether a
//! phone can take a request directly or must be woken first.
//!
//! Every datagram takes this map's lock, so the sweep that forgets silent flows must
//! not walk the map under it: the flows live in [`Generations`], and a sweep drops
//! the oldest generation whole (a flow silent for `max_age` is forgotten within a
//! quarter more).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use super::Flow;
use crate::generations::Generations;

/// Most flows remembered. Every datagram touches its flow, and a spoofing attacker can
/// invent flows faster than the sweep forgets them; past this many, only flows
/// already known are updated (a flow not remembered counts as unreachable, so its
/// phone is pushed rather than missed). About 64 MB at most.
pub const MAX_FLOWS: usize = 1 << 20;

/// Last-seen times per flow.
#[derive(Debug, Default)]
pub struct Liveness {
    seen: Mutex<Generations<Flow, Instant>>,
}

impl Liveness {
    fn lock(&self) -> MutexGuard<'_, Generations<Flow, Instant>> {
        self.seen.lock()
    }

    /// Records life on `flow` now.
    pub fn touch(&self, flow: Flow) {
        self.touch_at(flow, Instant::now(), MAX_FLOWS);
    }

    fn touch_at(&self, flow: Flow, now: Instant, cap: usize) {
        self.lock().insert_capped(flow, now, cap);
    }

    /// When `flow` last showed life, if it did recently enough to be remembered.
    pub fn last(&self, flow: &Flow) -> Option<Instant> {
        self.lock().get(flow).copied()
    }

    /// Forgets flows silent for longer than `max_age` (within a quarter more; see
    /// [`Generations`]). Costs the same however many flows are remembered.
    pub fn sweep(&self, max_age: Duration) {
        self.sweep_at(Instant::now(), max_age);
    }

    fn sweep_at(&self, now: Instant, max_age: Duration) {
        let dropped: Vec<HashMap<Flow, Instant>> = self.lock().rotate(now, max_age);
        // freed here, with the lock released
        drop(dropped);
    }

    /// Flows remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if no flow is remembered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(port: u16) -> Flow {
        Flow::Udp {
            socket: 0,
            remote: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn touch_last_and_sweep() {
        let l = Liveness::default();
        let f = flow(5999);
        assert!(l.last(&f).is_none());
        l.touch(f);
        assert!(l.last(&f).is_some());
        l.sweep(Duration::from_secs(60));
        assert_eq!(l.len(), 1);
        l.sweep(Duration::ZERO);
        assert!(l.is_empty());
    }

    #[test]
    fn silent_flows_go_talking_flows_stay() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let age = Duration::from_secs(60);
        l.touch_at(flow(1), t0, MAX_FLOWS);
        l.touch_at(flow(2), t0, MAX_FLOWS);
        for s in 1..=100u64 {
            let now = t0 + Duration::from_secs(s);
            l.touch_at(flow(2), now, MAX_FLOWS);
            l.sweep_at(now, age);
            if s < 60 {
                assert!(l.last(&flow(1)).is_some(), "kept for max_age ({s} s)");
            }
        }
        assert!(l.last(&flow(1)).is_none(), "a silent flow is forgotten");
        assert_eq!(l.last(&flow(2)), Some(t0 + Duration::from_secs(100)));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn capped_only_known_flows_update() {
        let l = Liveness::default();
        let t0 = Instant::now();
        l.touch_at(flow(1), t0, 2);
        l.touch_at(flow(2), t0, 2);
        l.touch_at(flow(3), t0, 2);
        assert!(
            l.last(&flow(3)).is_none(),
            "past the cap a new flow is not kept"
        );
        // known flows in an older generation still update at the cap
        l.sweep_at(t0 + Duration::from_secs(30), Duration::from_secs(60));
        let later = t0 + Duration::from_secs(31);
        l.touch_at(flow(1), later, 2);
        assert_eq!(l.last(&flow(1)), Some(later));
        assert_eq!(l.len(), 2);
    }
}
