//! The kernel floor of a UDP SIP request: a responder that does nothing but one
//! `recvfrom` and one `sendto` per request, answering each with a fixed `200 OK` that
//! echoes Via, From, To, Call-ID and CSeq (what SIPp needs to match it).
//!
//! It exists only as a measuring stick for `bench/run.py`: run beside sipwake and
//! Kamailio on the same core, its CPU per REGISTER is what the kernel charges for the
//! datagram in and the datagram out (loopback delivery, waking the reader), so the
//! report can say which share of each proxy's cost is the kernel's and which its own.
//! It stores nothing, checks nothing and is no SIP server.
//!
//! It also relays a call, so a call step has a floor too: the kernel's cost of the
//! datagrams a stateful proxy takes and sends per call. The source of the last
//! REGISTER is taken as the callee (bench/run.py registers its UAS just before a call
//! step); an INVITE, ACK, BYE or CANCEL from anyone else is relayed to it (an INVITE
//! answered `100 Trying` first, as a proxy does), and what the callee sends is relayed
//! to the last caller. That is six datagrams in and seven out per call, as for a
//! proxy; SIPp sends every message to the address it talks to, so nothing bypasses
//! the relay. Other requests (the probe's OPTIONS) get the fixed 200.
//!
//! With `batch` it takes what waits in the socket with one `recvmmsg` (blocking for
//! the first datagram only, up to 32) and answers all of it with one `sendmmsg`: the
//! floor of the batched receive/send shape, to tell whether that shape is worth
//! building into sipwake. It answers requests only and relays no call.
//!
//!     cargo build --release --example udp_floor
//!     target/release/examples/udp_floor 127.0.0.1:5070 [batch]

use std::net::{SocketAddr, UdpSocket};

/// Header names copied from the request into the answer (long and compact forms).
const ECHOED: &[&str] = &["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"];

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5070".into());
    let sock = match UdpSocket::bind(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_floor: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    // as sipwake and Kamailio do: a burst waits in the kernel, not on the floor
    let _ = set_buffers(&sock, 4 << 20);
    if std::env::args().nth(2).as_deref() == Some("batch") {
        batched(&sock);
    }
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(2048);
    let mut relay = Relay::default();
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let msg = &buf[..n];
        if !msg.contains(&b'\n') {
            continue; // keep-alive
        }
        match relay.route(msg, from) {
            Step::Answer => {
                answer(msg, b"200 OK", true, &mut out);
                let _ = sock.send_to(&out, from);
            }
            Step::Relay(to, trying) => {
                if trying {
                    answer(msg, b"100 Trying", false, &mut out);
                    let _ = sock.send_to(&out, from);
                }
                let _ = sock.send_to(msg, to);
            }
            Step::Drop => {}
        }
    }
}

/// What to do with one datagram.
enum Step {
    /// Answer it with the fixed 200 OK.
    Answer,
    /// Send it on to this address (after a `100 Trying` to its sender if set).
    Relay(SocketAddr, bool),
    /// Nothing (a response nobody waits for).
    Drop,
}

/// The two ends of the call being relayed.
#[derive(Default)]
struct Relay {
    /// The source of the last REGISTER.
    callee: Option<SocketAddr>,
    /// The last sender of a relayed request that was not the callee.
    caller: Option<SocketAddr>,
}

impl Relay {
    fn route(&mut self, msg: &[u8], from: SocketAddr) -> Step {
        let from_callee = self.callee == Some(from);
        if msg.starts_with(b"SIP/2.0") {
            let to = if from_callee {
                self.caller
            } else {
                self.callee
            };
            return to.map_or(Step::Drop, |to| Step::Relay(to, false));
        }
        if msg.starts_with(b"REGISTER ") {
            self.callee = Some(from);
            return Step::Answer;
        }
        let dialog = [&b"INVITE "[..], b"ACK ", b"BYE ", b"CANCEL "];
        if !dialog.iter().any(|m| msg.starts_with(m)) {
            return Step::Answer;
        }
        if from_callee {
            return self.caller.map_or(Step::Drop, |to| Step::Relay(to, false));
        }
        self.caller = Some(from);
        match self.callee {
            Some(to) => Step::Relay(to, msg.starts_with(b"INVITE ")),
            None => Step::Answer,
        }
    }
}

/// Writes into `out` the answer `status` (e.g. `200 OK`) to request `req`, with a
/// To tag added when `tag` is set and the request has none.
fn answer(req: &[u8], status: &[u8], tag: bool, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"SIP/2.0 ");
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\n");
    let head = match req.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &req[..end],
        None => req,
    };
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !ECHOED
            .iter()
            .any(|e| name.eq_ignore_ascii_case(e.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(line);
        let is_to = name.eq_ignore_ascii_case(b"to") || name.eq_ignore_ascii_case(b"t");
        if tag && is_to && !line.windows(5).any(|w| w.eq_ignore_ascii_case(b";tag=")) {
            out.extend_from_slice(b";tag=floor");
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
}

/// Most datagrams taken or answered by one call in `batch` mode.
const BATCH: usize = 32;

/// The batched loop: one `recvmmsg` (blocking until the first datagram, then taking
/// what else waits) and one `sendmmsg` of every answer.
fn batched(sock: &UdpSocket) -> ! {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; 4096]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(2048)).collect();
    // SAFETY (all four): plain C structs, zero is a valid value for each.
    let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut replies: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut out_iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    loop {
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: bufs[i].len(),
            };
            msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_len = 0;
        }
        // SAFETY: every header points into buffers that outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let mut k = 0;
        for i in 0..n as usize {
            let req = &bufs[i][..msgs[i].msg_len as usize];
            if req.starts_with(b"SIP/2.0") || !req.contains(&b'\n') {
                continue;
            }
            answer(req, b"200 OK", true, &mut outs[k]);
            out_iovs[k] = libc::iovec {
                iov_base: outs[k].as_mut_ptr().cast(),
                iov_len: outs[k].len(),
            };
            replies[k].msg_hdr.msg_name = msgs[i].msg_hdr.msg_name;
            replies[k].msg_hdr.msg_namelen = msgs[i].msg_hdr.msg_namelen;
            replies[k].msg_hdr.msg_iov = &mut out_iovs[k];
            replies[k].msg_hdr.msg_iovlen = 1;
            k += 1;
        }
        if k > 0 {
            // SAFETY: as above; the answers and addresses live until the call returns.
            unsafe { libc::sendmmsg(fd, replies.as_mut_ptr(), k as _, 0) };
        }
    }
}

/// Asks for `bytes` of receive and send buffer (the kernel caps it at rmem_max/wmem_max).
fn set_buffers(sock: &UdpSocket, bytes: usize) -> std::io::Result<()> {
    let s = socket2::SockRef::from(sock);
    s.set_recv_buffer_size(bytes)?;
    s.set_send_buffer_size(bytes)
}

#[cfg(test)]
mod tests {
    use super::answer;

    #[test]
    fn echoes_what_sipp_matches_on() {
        let req = b"REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5;branch=z9hG4bKx\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:a@h>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:a@1.2.3.4:5>\r\nContent-Length: 0\r\n\r\n";
        let mut out = Vec::new();
        answer(req, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4:5;branch=z9hG4bKx\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:a@h>;tag=floor\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n\
Content-Length: 0\r\n\r\n"
        );
    }
}
