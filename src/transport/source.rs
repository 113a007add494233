//! The local address a wildcard socket (`0.0.0.0`, `[::]`) speaks from. An
//! unspecified address must never reach the wire: a peer that finds `0.0.0.0` in a
//! Via, Path, Record-Route or rewritten Contact sends its ACK, BYE or call there and
//! reaches nobody. Without `sip.advertised_host`, sipwake writes the address the
//! kernel picks as the source toward that peer (a `connect`ed UDP probe socket asks
//! the routing table the same question a `sendto` from the wildcard socket would),
//! and a wildcard listener counts every address of the host as its own (an address
//! is ours if a socket can bind to it).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Destinations remembered; past this the cache starts over (a probe costs two
/// system calls).
const MAX_CACHED: usize = 4096;

/// How long a learned source address is used before the routing table is asked
/// again (an interface's address may change, e.g. a new DHCP lease).
const FRESH_FOR: Duration = Duration::from_secs(60);

/// Source addresses per destination, and the host's own addresses seen so far.
#[derive(Debug, Default)]
pub struct SourceAddrs {
    toward: Mutex<HashMap<IpAddr, (IpAddr, Instant)>>,
    mine: Mutex<HashSet<IpAddr>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

impl SourceAddrs {
    /// The address the host sends from toward `peer`, or `None` when there is no
    /// route to it.
    pub fn toward(&self, peer: SocketAddr) -> Option<IpAddr> {
        let dest = peer.ip();
        if let Some((ip, at)) = lock(&self.toward).get(&dest) {
            if at.elapsed() < FRESH_FOR {
                return Some(*ip);
            }
        }
        let probe = UdpSocket::bind(SocketAddr::new(unspecified_like(dest), 0)).ok()?;
        // a UDP connect sends nothing: it only fixes the route and the source address
        let port = if peer.port() == 0 { 9 } else { peer.port() };
        probe.connect(SocketAddr::new(dest, port)).ok()?;
        let src = probe.local_addr().ok()?.ip();
        if src.is_unspecified() {
            return None;
        }
        let mut map = lock(&self.toward);
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(dest, (src, Instant::now()));
        lock(&self.mine).insert(src);
        Some(src)
    }

    /// True if `ip` is an address of this host (a wildcard listener answers on it).
    pub fn is_local(&self, ip: IpAddr) -> bool {
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if ip.is_loopback() || lock(&self.mine).contains(&ip) {
            return true;
        }
        // only the host's own addresses can be bound (EADDRNOTAVAIL otherwise); the
        // answer for foreign addresses is not kept, so a peer cannot fill memory
        let ok = UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok();
        if ok {
            let mut mine = lock(&self.mine);
            if mine.len() < MAX_CACHED {
                mine.insert(ip);
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_peer_gets_a_loopback_source() {
        let s = SourceAddrs::default();
        let src = s.toward("127.0.0.2:5060".parse().unwrap()).unwrap();
        assert!(src.is_loopback(), "{src}");
        assert!(!src.is_unspecified());
        assert!(s.is_local(src));
    }

    #[test]
    fn foreign_and_unspecified_addresses_are_not_local() {
        let s = SourceAddrs::default();
        assert!(!s.is_local("0.0.0.0".parse().unwrap()));
        // TEST-NET-3 (RFC 5737) is never configured on a host
        assert!(!s.is_local("203.0.113.77".parse().unwrap()));
    }
}
