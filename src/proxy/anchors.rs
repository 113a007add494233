//! Which TCP connections carry registrations. A phone registered over a connection
//! can only be reached through it, so the idle timeout must not close it while one of
//! its bindings is live. The registrar is the truth: here we only remember which
//! addresses of record registered on each connection, and when the transport asks
//! about an idle connection, their bindings are looked up. Nothing needs clearing
//! when a binding goes: an expired, removed or moved binding simply no longer names
//! the connection's flow.
//!
//! Several nodes: the bindings are in Redis, which the transport's synchronous
//! question cannot wait for; so each connection also remembers until when the
//! bindings registered on it last said they would live, and that answers instead.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::registrar::{unix_now_ms, Registrar};
use crate::transport::Flow;

/// Addresses of record remembered per connection; a phone has one or two accounts,
/// more only if someone is pinning connections on purpose.
const MAX_AORS_PER_CONN: usize = 16;

/// Connection id → addresses of record that registered on it.
#[derive(Debug, Default)]
pub struct Anchors {
    map: Mutex<HashMap<u64, Vec<String>>>,
    /// Several nodes: connection id → (address of record, unix ms until which its
    /// bindings on the connection live, by its latest REGISTER there).
    until: Mutex<HashMap<u64, Vec<(String, u64)>>>,
}

impl Anchors {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<u64, Vec<String>>> {
        self.map.lock()
    }

    /// `aor` registered a binding on `flow` (ignored for UDP).
    pub fn note(&self, flow: &Flow, aor: &str) {
        let Flow::Tcp { conn, .. } = *flow else {
            return;
        };
        let mut map = self.lock();
        let list = map.entry(conn).or_default();
        if !list.iter().any(|a| a == aor) {
            if list.len() >= MAX_AORS_PER_CONN {
                list.remove(0);
            }
            list.push(aor.to_owned());
        }
    }

    /// Several nodes: a REGISTER of `aor` on `flow` left its bindings there live
    /// until `until_ms` (0: none left).
    pub fn note_until(&self, flow: &Flow, aor: &str, until_ms: u64) {
        if let Flow::Tcp { conn, .. } = *flow {
            let mut until = self.until.lock();
            let list = until.entry(conn).or_default();
            list.retain(|(a, _)| a != aor);
            if until_ms > 0 {
                if list.len() >= MAX_AORS_PER_CONN {
                    list.remove(0);
                }
                list.push((aor.to_owned(), until_ms));
            }
        }
    }

    /// True if a live binding's flow is `flow`; forgets the addresses of record
    /// that no longer have one there.
    pub fn keep_open(&self, flow: &Flow, registrar: &Registrar) -> bool {
        let Flow::Tcp { conn, .. } = *flow else {
            return false;
        };
        if registrar.shared().is_some() {
            let now = unix_now_ms();
            let mut until = self.until.lock();
            let live = until
                .get(&conn)
                .is_some_and(|list| list.iter().any(|&(_, t)| t > now));
            if !live {
                until.remove(&conn);
            }
            return live;
        }
        let Some(aors) = self.lock().remove(&conn) else {
            return false;
        };
        let now = unix_now_ms();
        let me = flow.to_string();
        let live: Vec<String> = aors
            .into_iter()
            .filter(|aor| {
                registrar
                    .lookup(aor, now)
                    .iter()
                    .any(|b| b.is_live(now) && b.flow() == Some(me.as_str()))
            })
            .collect();
        if live.is_empty() {
            return false;
        }
        // merge: a REGISTER may have noted this connection meanwhile
        let mut map = self.lock();
        let list = map.entry(conn).or_default();
        for aor in live {
            if !list.contains(&aor) {
                list.push(aor);
            }
        }
        true
    }

    /// The connection is gone.
    pub fn forget(&self, flow: &Flow) {
        if let Flow::Tcp { conn, .. } = *flow {
            self.lock().remove(&conn);
            self.until.lock().remove(&conn);
        }
    }

    /// Connections remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if no connection is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
