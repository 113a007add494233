//! UDP, TCP and TLS sockets, stream framing, flows and keep-alives.
//!
//! Every received message is handed to one [`Handler`] together with the [`Flow`] it
//! came on; everything sent goes out through [`Transport::send`] on a flow, so that a
//! reply or a request for a phone leaves from the socket the phone talks to.
//!
//! This file holds what the three share (binding, the connection table, sending on a
//! flow); `udp.rs`, `tcp.rs` and `tls.rs` hold each transport's own loops.

pub mod conn_limits;
pub mod flow;
pub mod liveness;
pub mod source;
mod stun;
mod tcp;
pub mod tls;
mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

pub use conn_limits::{ConnLimits, ConnPermit};
pub use flow::{Flow, FlowTokens};
pub use liveness::Liveness;

/// Receives every message sipwake reads.
pub trait Handler: Send + Sync + 'static {
    /// One SIP message (datagram or framed stream message) from `flow`, which
    /// arrived on local address `local`.
    fn on_message(&self, data: Bytes, flow: Flow, local: SocketAddr);

    /// Asked when an inbound connection has been idle for the idle timeout: true
    /// keeps it open for another period (it carries a live registration, and the
    /// phone can only be reached through it).
    fn keep_open(&self, _flow: &Flow) -> bool {
        false
    }

    /// A connection is gone (closed by either side).
    fn on_closed(&self, _flow: &Flow) {}
}

/// Why something could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The TCP connection of this flow is gone and may not be reopened.
    #[error("flow failed: connection closed")]
    FlowFailed,
    /// No local socket for this flow or address family.
    #[error("no local socket for {0}")]
    NoSocket(SocketAddr),
    /// Socket error.
    #[error("send failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Transport settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Open UDP sockets.
    pub udp: bool,
    /// Open TCP listeners.
    pub tcp: bool,
    /// Largest accepted message.
    pub max_message_size: usize,
    /// Idle TCP connections are closed after this.
    pub tcp_idle_timeout: Duration,
    /// Most open inbound connections.
    pub max_connections: usize,
    /// Most open inbound connections from one source.
    pub max_connections_per_source: usize,
    /// Sources without a per-source connection cap.
    pub trusted: Vec<crate::config::IpNet>,
    /// Inbound connections must deliver a whole message within this of accept.
    pub first_message_timeout: Duration,
    /// TLS listen addresses (none: no TLS listener).
    pub tls_listen: Vec<SocketAddr>,
    /// Server certificate and key for the TLS listeners; required when `tls_listen`
    /// is not empty.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Trust roots for outgoing TLS connections; `None`: none are made.
    pub tls_client: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// The certificate inside `tls`, for reloads.
    pub tls_cert: Option<Arc<tls::ServerCert>>,
}

struct Conn {
    tx: mpsc::UnboundedSender<Bytes>,
    local: SocketAddr,
    /// Its place under the connection caps (inbound only), given back on removal.
    _permit: Option<ConnPermit>,
}

/// What the task of one stream connection needs besides its stream: the transport,
/// the connection's id and addresses, its queue of bytes to write, and the handler.
struct ConnTask {
    t: Transport,
    id: u64,
    remote: SocketAddr,
    local: SocketAddr,
    rx: mpsc::UnboundedReceiver<Bytes>,
    handler: Arc<dyn Handler>,
}

struct Inner {
    udp: Vec<(Arc<UdpSocket>, SocketAddr)>,
    tcp_listen: Vec<SocketAddr>,
    tls_listen: Vec<SocketAddr>,
    conns: Mutex<HashMap<u64, Conn>>,
    outbound: Mutex<HashMap<SocketAddr, u64>>,
    outbound_tls: Mutex<HashMap<SocketAddr, u64>>,
    next_conn: AtomicU64,
    cfg: TransportConfig,
    liveness: Arc<Liveness>,
    conn_limits: Arc<ConnLimits>,
    sources: source::SourceAddrs,
}

/// Cheap handle to all sockets and connections.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl Transport {
    /// Binds every listener. Nothing is received until [`Transport::start`].
    pub async fn bind(
        cfg: TransportConfig,
    ) -> Result<(Transport, Listeners), (SocketAddr, std::io::Error)> {
        let mut udp = Vec::new();
        let mut listeners = Vec::new();
        for &addr in &cfg.listen {
            if cfg.udp {
                let s = udp::bind_udp(addr).map_err(|e| (addr, e))?;
                let local = s.local_addr().map_err(|e| (addr, e))?;
                udp.push((Arc::new(s), local));
            }
            if cfg.tcp {
                // bind TCP on the port UDP got, so "port 0" in tests gives one port for both
                let port = udp
                    .last()
                    .map(|u| u.1.port())
                    .filter(|_| cfg.udp)
                    .unwrap_or(addr.port());
                let a = SocketAddr::new(addr.ip(), port);
                let l = bind_tcp(a).map_err(|e| (a, e))?;
                listeners.push(l);
            }
        }
        let tcp_listen = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let mut tls = Vec::new();
        if let Some(config) = cfg.tls.clone().filter(|_| !cfg.tls_listen.is_empty()) {
            let acceptor = TlsAcceptor::from(config);
            for &a in &cfg.tls_listen {
                let l = bind_tcp(a).map_err(|e| (a, e))?;
                tls.push((l, acceptor.clone()));
            }
        }
        let tls_listen = tls.iter().filter_map(|l| l.0.local_addr().ok()).collect();
        let mut seed = [0u8; 8];
        // a random start keeps connection ids from a previous run from matching new ones
        let _ = getrandom::fill(&mut seed);
        let start = u64::from_be_bytes(seed) >> 16 << 16;
        let conn_limits = ConnLimits::new(
            cfg.max_connections,
            cfg.max_connections_per_source,
            cfg.trusted.clone(),
        );
        let inner = Arc::new(Inner {
            udp,
            tcp_listen,
            tls_listen,
            conns: Mutex::new(HashMap::new()),
            outbound: Mutex::new(HashMap::new()),
            outbound_tls: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(start.max(1)),
            cfg,
            liveness: Arc::new(Liveness::default()),
            conn_limits,
            sources: source::SourceAddrs::default(),
        });
        Ok((
            Transport { inner },
            Listeners {
                tcp: listeners,
                tls,
            },
        ))
    }

    /// Starts the receive loops, delivering to `handler`.
    pub fn start(&self, listeners: Listeners, handler: Arc<dyn Handler>) {
        for (i, (sock, local)) in self.inner.udp.iter().enumerate() {
            let sock = sock.clone();
            let local = *local;
            let handler = handler.clone();
            let max = self.inner.cfg.max_message_size;
            let live = self.inner.liveness.clone();
            tokio::spawn(udp::receive_loop(sock, i as u8, local, max, handler, live));
        }
        for l in listeners.tcp {
            tokio::spawn(tcp::accept_loop(self.clone(), l, handler.clone(), None));
        }
        for (l, acceptor) in listeners.tls {
            let h = handler.clone();
            tokio::spawn(tcp::accept_loop(self.clone(), l, h, Some(acceptor)));
        }
    }

    /// When each flow last showed life.
    pub fn liveness(&self) -> &Liveness {
        &self.inner.liveness
    }

    /// The host's source address toward `peer` (for a wildcard socket), see
    /// [`source::SourceAddrs`].
    pub fn source_toward(&self, peer: SocketAddr) -> Option<std::net::IpAddr> {
        self.inner.sources.toward(peer)
    }

    /// Local UDP addresses, in socket-index order.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.inner.udp.iter().map(|u| u.1).collect()
    }

    /// Local TCP listen addresses.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.inner.tcp_listen.clone()
    }

    /// Local TLS listen addresses.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.inner.tls_listen.clone()
    }

    /// The certificate the TLS listeners present, when there are any.
    pub fn tls_cert(&self) -> Option<&Arc<tls::ServerCert>> {
        self.inner
            .cfg
            .tls_cert
            .as_ref()
            .filter(|_| !self.inner.tls_listen.is_empty())
    }

    /// The local address a flow uses.
    pub fn local_addr(&self, flow: &Flow) -> Option<SocketAddr> {
        match *flow {
            Flow::Udp { socket, .. } => self.inner.udp.get(socket as usize).map(|u| u.1),
            Flow::Tcp { conn, .. } => self.conns().get(&conn).map(|c| c.local),
        }
    }

    fn conns(&self) -> parking_lot::MutexGuard<'_, HashMap<u64, Conn>> {
        self.inner.conns.lock()
    }

    /// True if the flow can carry a message now (UDP always can; TCP while open).
    pub fn is_open(&self, flow: &Flow) -> bool {
        match *flow {
            Flow::Udp { .. } => true,
            Flow::Tcp { conn, .. } => self.conns().contains_key(&conn),
        }
    }

    /// Sends on a flow without waiting. For TCP the message is queued on the
    /// connection; a closed connection gives [`SendError::FlowFailed`].
    pub fn send(&self, flow: &Flow, data: Bytes) -> Result<(), SendError> {
        match *flow {
            Flow::Udp { socket, remote } => self.send_udp(socket, remote, data),
            Flow::Tcp { conn, .. } => {
                let conns = self.conns();
                let c = conns.get(&conn).ok_or(SendError::FlowFailed)?;
                c.tx.send(data).map_err(|_| SendError::FlowFailed)
            }
        }
    }

    /// The connection we opened to `remote` earlier (over TLS or plain TCP), if it is
    /// still open.
    fn open_outbound(&self, remote: SocketAddr, tls: bool) -> Option<Flow> {
        let map = if tls {
            &self.inner.outbound_tls
        } else {
            &self.inner.outbound
        };
        let conn = *map.lock().get(&remote)?;
        self.conns().contains_key(&conn).then_some(Flow::Tcp {
            conn,
            remote,
            inbound: false,
            tls,
        })
    }

    /// A TCP flow to `remote`: an open connection we made earlier, else a new one.
    /// Only for peers that are reachable by address (upstream, routes), never for
    /// phones, whose flows are the connections they opened.
    pub async fn connect_tcp(
        &self,
        remote: SocketAddr,
        handler: Arc<dyn Handler>,
    ) -> Result<Flow, SendError> {
        if let Some(flow) = self.open_outbound(remote, false) {
            return Ok(flow);
        }
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(remote),
        )
        .await
        .map_err(|_| SendError::Io(std::io::ErrorKind::TimedOut.into()))??;
        let conn = self.register_conn(stream, remote, false, handler, None, None);
        self.inner.outbound.lock().insert(remote, conn);
        Ok(Flow::Tcp {
            conn,
            remote,
            inbound: false,
            tls: false,
        })
    }

    fn new_conn_id(&self) -> u64 {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a new connection and starts its task. With `tls`, the task first
    /// does the server handshake; the connection counts as open from now on either way.
    fn register_conn(
        &self,
        stream: tokio::net::TcpStream,
        remote: SocketAddr,
        inbound: bool,
        handler: Arc<dyn Handler>,
        permit: Option<ConnPermit>,
        tls: Option<TlsAcceptor>,
    ) -> u64 {
        let local = stream.local_addr().unwrap_or(remote);
        let task = self.add_conn(remote, local, permit, handler);
        let id = task.id;
        let _ = stream.set_nodelay(true);
        if let Some(acceptor) = tls {
            tokio::spawn(tls::run_conn(task, acceptor, stream));
        } else {
            let (rd, wr) = stream.into_split();
            tokio::spawn(tcp::run_conn(task, rd, wr, inbound, false));
        }
        id
    }

    /// Enters a new stream connection in the table (with its place under the caps, for
    /// an inbound one) and returns what its task needs.
    fn add_conn(
        &self,
        remote: SocketAddr,
        local: SocketAddr,
        permit: Option<ConnPermit>,
        handler: Arc<dyn Handler>,
    ) -> ConnTask {
        let id = self.new_conn_id();
        let (tx, rx) = mpsc::unbounded_channel();
        self.conns().insert(
            id,
            Conn {
                tx,
                local,
                _permit: permit,
            },
        );
        ConnTask {
            t: self.clone(),
            id,
            remote,
            local,
            rx,
            handler,
        }
    }

    fn drop_conn(&self, id: u64, remote: SocketAddr) {
        self.conns().remove(&id);
        let mut out = self.inner.outbound.lock();
        if out.get(&remote) == Some(&id) {
            out.remove(&remote);
        }
        drop(out);
        let mut out = self.inner.outbound_tls.lock();
        if out.get(&remote) == Some(&id) {
            out.remove(&remote);
        }
    }

    fn config(&self) -> &TransportConfig {
        &self.inner.cfg
    }

    /// A place under the connection caps for a connection just accepted from
    /// `remote`, or `None`: then close it at once. Every stream listener (TCP, TLS
    /// before its handshake) asks here first.
    pub fn admit(&self, remote: SocketAddr) -> Option<ConnPermit> {
        let permit = self.inner.conn_limits.try_admit(remote.ip());
        if permit.is_none() {
            tracing::debug!(%remote, "connection refused: connection cap reached");
        }
        permit
    }

    /// The connection caps and their counters.
    pub fn conn_limits(&self) -> &ConnLimits {
        &self.inner.conn_limits
    }
}

/// Bound TCP and TLS listeners waiting for [`Transport::start`].
pub struct Listeners {
    tcp: Vec<TcpListener>,
    tls: Vec<(TcpListener, TlsAcceptor)>,
}

/// A non-blocking socket for `addr`. IPv6 sockets are IPv6-only: otherwise Linux
/// lets `[::]:5060` take IPv4 too, and listening on both `0.0.0.0:5060` and
/// `[::]:5060` fails with "address in use".
fn new_socket(addr: SocketAddr, ty: socket2::Type) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = new_socket(addr, socket2::Type::STREAM)?;
    // as tokio's own bind: a restart must not wait for TIME_WAIT connections
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

#[cfg(test)]
mod bind_tests {
    use super::bind_tcp;
    use super::udp::bind_udp;
    use std::net::SocketAddr;

    /// Both wildcards on one port: what a dual-stack deployment lists. Only binds;
    /// nothing is sent.
    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_share_a_port() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            return; // no IPv6 on this machine
        }
        // Another process may hold the port on some other address (a TCP client's
        // ephemeral port, a test's [::1] socket): try fresh ports until one is free of
        // that. Without IPV6_V6ONLY on the [::] sockets every attempt fails.
        let mut last = String::new();
        for _ in 0..20 {
            let v4 = bind_udp("0.0.0.0:0".parse().unwrap()).unwrap();
            let port = v4.local_addr().unwrap().port();
            let v6: SocketAddr = format!("[::]:{port}").parse().unwrap();
            let shared = bind_udp(v6)
                .and_then(|_u6| {
                    let _t4 = bind_tcp(format!("0.0.0.0:{port}").parse().unwrap())?;
                    bind_tcp(v6).map(drop)
                })
                .map_err(|e| e.to_string());
            match shared {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        panic!("[::] never bound next to 0.0.0.0 on the same port: {last}");
    }
}
