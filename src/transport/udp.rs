//! UDP: binding the listening sockets, the receive loop of each (keep-alives and STUN
//! answered here, SIP handed to the [`Handler`]), and sending on a UDP flow. Every
//! phone and the PBX share these sockets; a flow is a socket index and a remote
//! address. TCP and TLS are in `tcp.rs` and `tls.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{new_socket, stun, Flow, Handler, Liveness, SendError, Transport};

/// Socket buffer asked for on UDP sockets. Every phone and the PBX share one socket, so
/// a burst (a registration storm after a network change, a load test) must wait in the
/// kernel while sipwake catches up; Linux's default of 208 KiB holds only ~400
/// REGISTERs. The kernel caps the request at `net.core.rmem_max`/`wmem_max`.
const UDP_BUFFER: usize = 4 << 20;

pub(super) fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = new_socket(addr, socket2::Type::DGRAM)?;
    // best effort: a smaller buffer still works, it only drops sooner under bursts
    let _ = s.set_recv_buffer_size(UDP_BUFFER);
    let _ = s.set_send_buffer_size(UDP_BUFFER);
    tracing::debug!(
        %addr,
        recv = s.recv_buffer_size().unwrap_or(0),
        send = s.send_buffer_size().unwrap_or(0),
        "udp socket buffers"
    );
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

impl Transport {
    /// The UDP flow toward `remote` from the socket of its address family
    /// (preferring the socket with local address `prefer`).
    pub fn udp_flow(&self, remote: SocketAddr, prefer: Option<SocketAddr>) -> Option<Flow> {
        let idx = self
            .inner
            .udp
            .iter()
            .position(|u| Some(u.1) == prefer && u.1.is_ipv4() == remote.is_ipv4())
            .or_else(|| {
                self.inner
                    .udp
                    .iter()
                    .position(|u| u.1.is_ipv4() == remote.is_ipv4())
            })?;
        Some(Flow::Udp {
            socket: idx as u8,
            remote,
        })
    }

    /// Sends one datagram on UDP socket `socket`; when the socket buffer is full the
    /// send waits on a task of its own.
    pub(super) fn send_udp(
        &self,
        socket: u8,
        remote: SocketAddr,
        data: Bytes,
    ) -> Result<(), SendError> {
        let (sock, local) = self
            .inner
            .udp
            .get(socket as usize)
            .ok_or(SendError::NoSocket(remote))?;
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(SendError::NoSocket(remote));
        }
        match sock.try_send_to(&data, remote) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let sock = sock.clone();
                tokio::spawn(async move {
                    let _ = sock.send_to(&data, remote).await;
                });
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

pub(super) async fn receive_loop(
    sock: Arc<UdpSocket>,
    idx: u8,
    local: SocketAddr,
    max: usize,
    handler: Arc<dyn Handler>,
    live: Arc<Liveness>,
) {
    // one reused receive buffer; each datagram is copied out at its exact size, so a
    // message kept by a long transaction pins only its own bytes
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, remote) = match sock.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems; keep going
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        if n == 0 || n > max {
            continue;
        }
        let data = Bytes::copy_from_slice(&buf[..n]);
        let flow = Flow::Udp {
            socket: idx,
            remote,
        };
        live.touch(flow);
        if is_keepalive(&data) {
            continue;
        }
        if stun::is_binding_request(&data) {
            if let Some(resp) = stun::binding_response(&data, remote) {
                let _ = sock.try_send_to(&resp, remote);
            }
            continue;
        }
        handler.on_message(data, flow, local);
    }
}

/// Bare CRLF keep-alives (RFC 5626 §3.5.1 on UDP, and what phones send anyway).
fn is_keepalive(d: &[u8]) -> bool {
    d.iter().all(|&c| c == b'\r' || c == b'\n' || c == 0)
}
