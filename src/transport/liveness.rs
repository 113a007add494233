//! When each flow last showed life: any datagram or keep-alive from that exact UDP
//! address, any bytes read on a TCP connection. Push decides from this whether a
//! phone can take a request directly or must be woken first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use super::Flow;

/// Most flows remembered. Every datagram touches its flow, and a spoofing attacker can
/// invent flows faster than the sweep forgets them; past this many, only flows
/// already known are updated (a flow not remembered counts as unreachable, so its
/// phone is pushed rather than missed). About 64 MB at most.
pub const MAX_FLOWS: usize = 1 << 20;

/// Last-seen times per flow.
#[derive(Debug, Default)]
pub struct Liveness {
    seen: Mutex<HashMap<Flow, Instant>>,
}

impl Liveness {
    fn lock(&self) -> MutexGuard<'_, HashMap<Flow, Instant>> {
        self.seen.lock()
    }

    /// Records life on `flow` now.
    pub fn touch(&self, flow: Flow) {
        let now = Instant::now();
        let mut map = self.lock();
        if let Some(t) = map.get_mut(&flow) {
            *t = now;
        } else if map.len() < MAX_FLOWS {
            map.insert(flow, now);
        }
    }

    /// When `flow` last showed life, if it did recently enough to be remembered.
    pub fn last(&self, flow: &Flow) -> Option<Instant> {
        self.lock().get(flow).copied()
    }

    /// Forgets flows silent for longer than `max_age`.
    pub fn sweep(&self, max_age: Duration) {
        let now = Instant::now();
        self.lock().retain(|_, t| now.duration_since(*t) < max_age);
    }

    /// Flows remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if no flow is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_last_and_sweep() {
        let l = Liveness::default();
        let f = Flow::Udp {
            socket: 0,
            remote: "127.0.0.1:5999".parse().unwrap(),
        };
        assert!(l.last(&f).is_none());
        l.touch(f);
        assert!(l.last(&f).is_some());
        l.sweep(Duration::from_secs(60));
        assert_eq!(l.len(), 1);
        l.sweep(Duration::ZERO);
        assert!(l.is_empty());
    }
}
