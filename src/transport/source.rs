//! The local address a wildcard socket (`0.0.0.0`, `[::]`) speaks from. An
//! unspecified address must never reach the wire: a peer that finds `0.0.0.0` in a
//! Via, Path, Record-Route or rewritten Contact sends its ACK, BYE or call there and
//! reaches nobody. Without `sip.advertised_host`, sipwake writes the address the
//! kernel picks as the source toward that peer (a `connect`ed UDP probe socket asks
//! the routing table the same question a `sendto` from the wildcard socket would).
//! That a wildcard listener answers to every address of the host is
//! `proxy::names`' business.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Destinations remembered; past this the cache starts over (a probe costs two
/// system calls).
const MAX_CACHED: usize = 4096;

/// How long a learned source address is used before the routing table is asked
/// again (an interface's address may change, e.g. a new DHCP lease).
const FRESH_FOR: Duration = Duration::from_secs(60);

/// Source addresses per destination.
#[derive(Debug, Default)]
pub struct SourceAddrs {
    toward: Mutex<HashMap<IpAddr, (IpAddr, Instant)>>,
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
        if let Some((ip, at)) = self.toward.lock().get(&dest) {
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
        let mut map = self.toward.lock();
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(dest, (src, Instant::now()));
        Some(src)
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
        // the learned address is one a socket can bind: the host's own
        assert!(UdpSocket::bind(SocketAddr::new(src, 0)).is_ok());
    }
}
