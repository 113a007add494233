//! Which hosts are sipwake itself: the predicate behind "this Route is ours" (RFC 3261
//! §16.4: removed before routing), "this Request-URI is ours" (§16.5: resolved through
//! the registrar) and "sending there would loop".
//!
//! A host is ours when it is
//! - one of our listen addresses, or, behind a wildcard listener (`0.0.0.0`, `::`),
//!   any address of this machine;
//! - the advertised host (`sip.advertised_host`), a configured alias (`sip.aliases`)
//!   or a DNS name on the TLS certificate (phones dial the name they verify);
//! - a host name that resolves to one of those addresses. Such names are looked up
//!   once, before the request is routed ([`route_new_request`]), and remembered for a
//!   minute either way; the lookups in flight and the names remembered are bounded,
//!   so a peer sending random names cannot make sipwake resolve without end.
//!
//! The port is checked by the caller ([`super::Core::is_me`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::debug;

use super::{route, Core};
use crate::sip::NameAddr;
use crate::sip::{HeaderName, Message, Uri};
use crate::transaction::ServerEntry;
use crate::transport::Flow;

/// How long a lookup's answer (ours or not) is remembered.
const REMEMBER: Duration = Duration::from_secs(60);
/// Names remembered at most (the table is emptied when full).
const MAX_REMEMBERED: usize = 4096;
/// Lookups at once at most; beyond, an unknown name is taken as not ours.
const MAX_IN_FLIGHT: usize = 32;
/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Route values looked at before a request is routed.
const ROUTES_CHECKED: usize = 4;

/// The names and addresses of this sipwake.
#[derive(Debug)]
pub struct OurNames {
    /// Listen addresses (IPv4-mapped ones as IPv4).
    ips: Vec<IpAddr>,
    /// A wildcard listener: every address of this machine is ours.
    wildcard: bool,
    /// Listen ports.
    ports: Vec<u16>,
    /// Advertised host and aliases: lower case, IPv6 without brackets.
    names: Vec<String>,
    /// DNS names of the TLS certificate (lower case, wildcards left out).
    cert_names: RwLock<Vec<String>>,
    /// Host names looked up: ours or not, until when.
    resolved: Mutex<HashMap<String, (bool, Instant)>>,
    /// Behind a wildcard listener: whether an address is this machine's.
    local: Mutex<HashMap<IpAddr, bool>>,
    in_flight: AtomicUsize,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

impl OurNames {
    /// The names of a sipwake listening on `listen`, known as `names` (advertised host,
    /// aliases) and presenting a certificate for `cert_names`.
    pub fn new(
        listen: impl IntoIterator<Item = SocketAddr>,
        names: impl IntoIterator<Item = String>,
        cert_names: Vec<String>,
    ) -> OurNames {
        let mut ips = Vec::new();
        let mut ports = Vec::new();
        for a in listen {
            ips.push(canonical(a.ip()));
            ports.push(a.port());
        }
        ips.sort();
        ips.dedup();
        ports.sort();
        ports.dedup();
        let mut names: Vec<String> = names
            .into_iter()
            .map(|n| bare(&n).to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        OurNames {
            wildcard: ips.iter().any(IpAddr::is_unspecified),
            ips,
            ports,
            names,
            cert_names: RwLock::new(normal_cert_names(cert_names)),
            resolved: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Replaces the certificate's names (after a reload).
    pub fn set_cert_names(&self, cert_names: Vec<String>) {
        *self.cert_names.write() = normal_cert_names(cert_names);
    }

    /// True if we listen on `port`.
    pub fn has_port(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    /// True if `host` (a name, an IPv4 address or an IPv6 one, bracketed or not) is
    /// this sipwake, as far as is known without a lookup.
    pub fn is_my_host(&self, host: &str) -> bool {
        let h = bare(host);
        if self.named(h) {
            return true;
        }
        match h.parse::<IpAddr>() {
            Ok(ip) => self.is_my_ip(ip),
            Err(_) => self.remembered(h) == Some(true),
        }
    }

    /// True if `ip` is one of our listen addresses, or, behind a wildcard listener,
    /// an address of this machine.
    pub fn is_my_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.ips.contains(&ip) {
            return true;
        }
        self.wildcard && (ip.is_loopback() || self.is_local(ip))
    }

    fn named(&self, h: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(h))
            || self
                .cert_names
                .read()
                .iter()
                .any(|n| n.eq_ignore_ascii_case(h))
    }

    /// Whether `ip` is assigned to this machine: an address one can bind to is.
    fn is_local(&self, ip: IpAddr) -> bool {
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        let mut cache = self.local.lock();
        if let Some(&known) = cache.get(&ip) {
            return known;
        }
        let local = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok();
        if cache.len() >= MAX_REMEMBERED {
            cache.clear();
        }
        cache.insert(ip, local);
        local
    }

    fn remembered(&self, name: &str) -> Option<bool> {
        let cache = self.resolved.lock();
        let key = name.to_ascii_lowercase();
        cache
            .get(&key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(ours, _)| *ours)
    }

    /// True for a host name (not an address) that is not known to be ours or not.
    fn needs_lookup(&self, host: &str) -> bool {
        let h = bare(host);
        !h.is_empty()
            && h.parse::<IpAddr>().is_err()
            && !self.named(h)
            && self.remembered(h).is_none()
    }

    /// Looks `name` up and remembers whether it resolves to us.
    async fn resolve(&self, name: &str) {
        let lookup = tokio::net::lookup_host((name, 0));
        let ours = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => addrs.into_iter().any(|a| self.is_my_ip(a.ip())),
            _ => false,
        };
        debug!(name, ours, "host name looked up");
        let mut cache = self.resolved.lock();
        if cache.len() >= MAX_REMEMBERED {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_REMEMBERED {
                cache.clear();
            }
        }
        cache.insert(name.to_ascii_lowercase(), (ours, Instant::now() + REMEMBER));
    }
}

fn normal_cert_names(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        // a wildcard would make every name under it ours
        .filter(|n| !n.contains('*'))
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

/// The host names in the first Route values and the Request-URI of `msg` that must be
/// looked up before it can be routed.
fn names_to_look_up(core: &Core, msg: &Message) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut consider = |host: &str| {
        if core.names.needs_lookup(host) && !out.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            out.push(host.to_string());
        }
    };
    for v in msg.values(HeaderName::Route).take(ROUTES_CHECKED) {
        if let Some(u) = NameAddr::parse(v, "Route")
            .ok()
            .and_then(|na| Uri::parse(na.uri).ok())
        {
            if core.names.has_port(u.port_or_default()) {
                consider(u.host_bare());
            }
        }
    }
    if let Ok(u) = msg.ruri() {
        // a served domain goes to the registrar whatever it resolves to
        if core.names.has_port(u.port_or_default()) && !core.is_local_domain(u.host_bare()) {
            consider(u.host_bare());
        }
    }
    out
}

/// Routes a request that starts a new server transaction ([`route::new_request`]),
/// first looking up the host names in its Route and Request-URI that might be ours.
pub fn route_new_request(core: &Arc<Core>, msg: Message, flow: Flow, local: SocketAddr, key: u64) {
    let names = names_to_look_up(core, &msg);
    if names.is_empty() {
        return route::new_request(core, msg, flow, local, key);
    }
    if core.names.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
        core.names.in_flight.fetch_sub(1, Ordering::AcqRel);
        debug!("too many host name lookups at once: routed without");
        return route::new_request(core, msg, flow, local, key);
    }
    // retransmissions meanwhile are absorbed
    core.tx.set_server(key, ServerEntry::Pending);
    let core = core.clone();
    tokio::spawn(async move {
        for n in &names {
            core.names.resolve(n).await;
        }
        core.names.in_flight.fetch_sub(1, Ordering::AcqRel);
        core.tx.remove_server(key);
        route::new_request(&core, msg, flow, local, key);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(listen: &[&str], known: &[&str], cert: &[&str]) -> OurNames {
        OurNames::new(
            listen.iter().map(|a| a.parse().unwrap()),
            known.iter().map(|s| (*s).to_owned()),
            cert.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    #[test]
    fn listen_addresses_names_aliases_and_certificate_names() {
        let n = names(
            &["127.0.0.1:5060", "[::1]:5061"],
            &["SIP.example.com", "[2001:db8::7]"],
            &["Phone.Example.net", "*.example.org"],
        );
        for ours in [
            "127.0.0.1",
            "::1",
            "[::1]",
            "sip.example.com",
            "2001:db8::7",
            "[2001:DB8::7]",
            "phone.example.net",
        ] {
            assert!(n.is_my_host(ours), "{ours}");
        }
        for not in ["127.0.0.2", "a.example.org", "example.com", "10.0.0.1"] {
            assert!(!n.is_my_host(not), "{not}");
        }
        assert!(n.has_port(5061) && !n.has_port(5062));
        n.set_cert_names(vec!["new.example.net".into()]);
        assert!(n.is_my_host("new.example.net") && !n.is_my_host("phone.example.net"));
    }

    #[test]
    fn a_wildcard_listener_owns_every_local_address() {
        let n = names(&["0.0.0.0:5060"], &[], &[]);
        assert!(n.is_my_host("127.0.0.1") && n.is_my_host("127.9.9.9"));
        assert!(n.is_my_host("0.0.0.0"));
        // TEST-NET-1 is nobody's address
        assert!(!n.is_my_host("192.0.2.1"));
        let only = names(&["127.0.0.1:5060"], &[], &[]);
        assert!(!only.is_my_host("127.0.0.2"));
    }

    #[tokio::test]
    async fn names_that_resolve_to_us_are_ours_once_looked_up() {
        let n = names(&["127.0.0.1:5060"], &[], &[]);
        assert!(n.needs_lookup("localhost"));
        assert!(!n.is_my_host("localhost"), "unknown until looked up");
        n.resolve("localhost").await;
        assert!(!n.needs_lookup("LOCALHOST"));
        assert!(n.is_my_host("LocalHost"));
        n.resolve("name.invalid").await;
        assert!(!n.needs_lookup("name.invalid") && !n.is_my_host("name.invalid"));
        assert!(!n.needs_lookup("127.0.0.1"), "addresses need no lookup");
    }
}
