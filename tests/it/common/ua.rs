//! The test phone, [`Ua`]: one UDP socket or one TCP (or TLS, see `tls_ua`) connection
//! to the proxy, with a stash of what it received, `expect_*` waits and REGISTER. Its
//! calls and dialogs are in `dialog`.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::*;

/// Transport of a test UA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tp {
    /// UDP.
    Udp,
    /// TCP (one connection to the proxy).
    Tcp,
    /// TLS (one connection to the proxy's TLS listener).
    Tls,
}

impl Tp {
    /// As in a Via header.
    pub fn via(self) -> &'static str {
        match self {
            Tp::Udp => "UDP",
            Tp::Tcp => "TCP",
            Tp::Tls => "TLS",
        }
    }
}

/// A simulated phone: one UDP socket, or one TCP connection to the proxy.
pub struct Ua {
    /// User part of the AOR.
    pub user: String,
    /// Domain of the AOR.
    pub domain: String,
    /// Transport.
    pub tp: Tp,
    pub(super) udp: Option<UdpSocket>,
    pub(super) tcp: Option<TcpStream>,
    pub(super) tcp_buf: Vec<u8>,
    pub(super) tcp_closed: bool,
    /// Local socket address.
    pub local: SocketAddr,
    /// The proxy.
    pub proxy: SocketAddr,
    /// host:port written in Contact (the real address, or a "private" one behind NAT).
    pub contact_hostport: String,
    /// host:port written in Via.
    pub via_hostport: String,
    /// Messages received but not yet consumed by an `expect`.
    pub stash: VecDeque<Msg>,
    /// Every message received, in order.
    pub history: Vec<Msg>,
    /// Call-ID used for this UA's registrations.
    pub reg_call_id: String,
    pub(super) reg_cseq: u32,
    /// Keep-alive bytes (CRLF) received on TCP.
    pub pongs: usize,
    /// The TLS session of a TLS UA (over its own TCP connection).
    pub(super) tls: Option<Box<tls_ua::TlsStream>>,
}

/// The domain of test AORs; every domain is local when `proxy.domains` is empty.
pub const DOMAIN: &str = "example.com";

impl Ua {
    /// A UA on a fresh UDP socket on 127.0.0.1.
    pub fn udp(user: &str, proxy: &Proxy) -> Ua {
        Ua::udp_at(user, proxy.addr(), "127.0.0.1:0")
    }

    /// A UA on a UDP socket bound to `bind`, talking to `proxy`.
    pub fn udp_at(user: &str, proxy: SocketAddr, bind: &str) -> Ua {
        let sock = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let local = sock.local_addr().unwrap();
        Ua::new(user, Tp::Udp, Some(sock), None, local, proxy)
    }

    /// A UA behind a "NAT": its socket is on 127.0.0.1 but its Via and Contact name
    /// `private` (e.g. `127.0.0.9:5999`).
    pub fn udp_nat(user: &str, proxy: &Proxy, private: &str) -> Ua {
        let mut ua = Ua::udp(user, proxy);
        ua.contact_hostport = private.to_owned();
        ua.via_hostport = private.to_owned();
        ua
    }

    /// A UA with one TCP connection to the proxy.
    pub fn tcp(user: &str, proxy: &Proxy) -> Ua {
        let stream = TcpStream::connect_timeout(&proxy.addr(), WAIT)
            .unwrap_or_else(|e| panic!("connect tcp {}: {e}", proxy.addr()));
        stream.set_nodelay(true).ok();
        let local = stream.local_addr().unwrap();
        Ua::new(user, Tp::Tcp, None, Some(stream), local, proxy.addr())
    }

    pub(super) fn new(
        user: &str,
        tp: Tp,
        udp: Option<UdpSocket>,
        tcp: Option<TcpStream>,
        local: SocketAddr,
        proxy: SocketAddr,
    ) -> Ua {
        Ua {
            user: user.to_owned(),
            domain: DOMAIN.to_owned(),
            tp,
            udp,
            tcp,
            tcp_buf: Vec::new(),
            tcp_closed: false,
            local,
            proxy,
            contact_hostport: local.to_string(),
            via_hostport: local.to_string(),
            stash: VecDeque::new(),
            history: Vec::new(),
            reg_call_id: call_id(),
            reg_cseq: 0,
            pongs: 0,
            tls: None,
        }
    }

    /// The UDP socket of a UDP UA.
    pub fn udp_socket(&self) -> &UdpSocket {
        self.udp.as_ref().expect("not a UDP UA")
    }

    /// `sip:user@domain`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    /// Our Contact URI.
    pub fn contact_uri(&self) -> String {
        match self.tp {
            Tp::Udp => format!("sip:{}@{}", self.user, self.contact_hostport),
            Tp::Tcp => format!("sip:{}@{};transport=tcp", self.user, self.contact_hostport),
            Tp::Tls => format!("sip:{}@{};transport=tls", self.user, self.contact_hostport),
        }
    }

    /// A Via header value with a fresh or given branch.
    pub fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.tp.via(),
            self.via_hostport
        )
    }

    // --- sending ----------------------------------------------------------------

    /// Sends bytes to the proxy over this UA's transport.
    pub fn send_raw(&mut self, data: &[u8]) {
        let proxy = self.proxy;
        self.send_to(proxy, self.tp, data);
    }

    /// Sends text to the proxy.
    pub fn send(&mut self, text: &str) {
        self.send_raw(text.as_bytes());
    }

    /// Sends to `addr` over `tp`. For TCP, `addr` must be the peer of our connection:
    /// a phone has one connection, and everything must flow through the proxy.
    pub fn send_to(&mut self, addr: SocketAddr, tp: Tp, data: &[u8]) {
        assert_eq!(
            tp, self.tp,
            "{}: asked to send over {tp:?} to {addr}, but this UA only has {:?}",
            self.user, self.tp
        );
        match tp {
            Tp::Udp => {
                self.udp
                    .as_ref()
                    .unwrap()
                    .send_to(data, addr)
                    .unwrap_or_else(|e| panic!("udp send to {addr}: {e}"));
            }
            Tp::Tcp => {
                let s = self.tcp.as_mut().unwrap();
                let peer = s.peer_addr().ok();
                assert_eq!(
                    peer,
                    Some(addr),
                    "{}: next hop {addr} is not the peer of our TCP connection",
                    self.user
                );
                s.write_all(data)
                    .unwrap_or_else(|e| panic!("tcp send to {addr}: {e}"));
            }
            Tp::Tls => self.tls_send(addr, data),
        }
    }

    // --- receiving --------------------------------------------------------------

    /// The next message from the network (not the stash), or None at the deadline.
    pub fn recv_until(&mut self, deadline: Instant) -> Option<Msg> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let left = left.max(Duration::from_millis(1));
            match self.tp {
                Tp::Udp => {
                    let sock = self.udp.as_ref().unwrap();
                    sock.set_read_timeout(Some(left)).unwrap();
                    let mut buf = vec![0u8; 65536];
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if let Some(m) = Msg::parse(&buf[..n], from, false) {
                                self.history.push(m.clone());
                                return Some(m);
                            }
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            return None
                        }
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                        Err(e) => panic!("udp recv: {e}"),
                    }
                }
                Tp::Tcp | Tp::Tls => {
                    if let Some(m) = self.frame_tcp() {
                        self.history.push(m.clone());
                        return Some(m);
                    }
                    if self.tcp_closed {
                        std::thread::sleep(left.min(Duration::from_millis(50)));
                        if Instant::now() >= deadline {
                            return None;
                        }
                        continue;
                    }
                    let mut buf = vec![0u8; 65536];
                    match self.stream_read(&mut buf, left) {
                        Ok(0) => self.tcp_closed = true,
                        Ok(n) => self.tcp_buf.extend_from_slice(&buf[..n]),
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            return None
                        }
                        Err(_) => self.tcp_closed = true,
                    }
                }
            }
        }
    }

    /// One complete message out of the TCP buffer, framed by Content-Length.
    fn frame_tcp(&mut self) -> Option<Msg> {
        while self.tcp_buf.starts_with(b"\r\n") {
            self.tcp_buf.drain(..2);
            self.pongs += 1;
        }
        let end = self.tcp_buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&self.tcp_buf[..end]).into_owned();
        let mut len = 0usize;
        for line in head.split("\r\n").skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if full_name(k.trim()) == "content-length" {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let total = end + 4 + len;
        if self.tcp_buf.len() < total {
            return None;
        }
        let data: Vec<u8> = self.tcp_buf.drain(..total).collect();
        let from = self.proxy;
        Msg::parse(&data, from, true)
    }

    /// Waits for a message matching `pred`, first among stashed ones; others are
    /// stashed. Panics with `what` and what did arrive on timeout.
    pub fn expect(&mut self, what: &str, wait: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        match self.try_expect(wait, &pred) {
            Some(m) => m,
            None => panic!(
                "{} ({}, {}): timed out after {:?} waiting for {what}; received meanwhile: {:#?}",
                self.user,
                self.tp.via(),
                self.local,
                wait,
                self.stash.iter().map(|m| m.summary()).collect::<Vec<_>>()
            ),
        }
    }

    /// Like `expect` but returns None on timeout.
    pub fn try_expect(&mut self, wait: Duration, pred: impl Fn(&Msg) -> bool) -> Option<Msg> {
        if let Some(i) = self.stash.iter().position(&pred) {
            return self.stash.remove(i);
        }
        let deadline = Instant::now() + wait;
        while let Some(m) = self.recv_until(deadline) {
            if pred(&m) {
                return Some(m);
            }
            self.stash.push_back(m);
            if self.stash.len() > 500 {
                self.stash.pop_front();
            }
        }
        None
    }

    /// Waits for a request with this method (and Call-ID, when given).
    pub fn expect_request(&mut self, method: &str, call_id: Option<&str>) -> Msg {
        let what = format!("a {method} request (Call-ID {call_id:?})");
        self.expect(&what, WAIT, |m| {
            m.method() == Some(method) && call_id.is_none_or(|c| m.call_id() == c)
        })
    }

    /// Waits for a response to (Call-ID, CSeq method) whose status satisfies `code`.
    pub fn expect_response(
        &mut self,
        call_id: &str,
        method: &str,
        what: &str,
        code: impl Fn(u16) -> bool,
    ) -> Msg {
        let desc = format!("{what} to {method} (Call-ID {call_id})");
        self.expect(&desc, WAIT, |m| {
            m.status().is_some_and(&code) && m.call_id() == call_id && m.cseq_method() == method
        })
    }

    /// Waits for the final response to (Call-ID, method).
    pub fn expect_final(&mut self, call_id: &str, method: &str) -> Msg {
        self.expect_response(call_id, method, "a final response", |c| c >= 200)
    }

    /// Asserts that nothing matching `pred` arrives within `wait` (stash included).
    pub fn expect_nothing(&mut self, what: &str, wait: Duration, pred: impl Fn(&Msg) -> bool) {
        if let Some(m) = self.try_expect(wait, &pred) {
            panic!("{}: expected no {what}, got {m:?}", self.user);
        }
    }

    /// Number of received requests with this method (and Call-ID).
    pub fn count_received(&self, method: &str, call_id: &str) -> usize {
        self.history
            .iter()
            .filter(|m| m.method() == Some(method) && m.call_id() == call_id)
            .count()
    }

    // --- registrar ----------------------------------------------------------------

    /// Sends a REGISTER (our registration Call-ID, next CSeq) with the given Contact
    /// header value (None: query) and Expires header; returns its final response.
    pub fn register_with(&mut self, contact: Option<&str>, expires: Option<u32>) -> Msg {
        self.reg_cseq += 1;
        let text = build_register(
            self.tp.via(),
            &self.via_hostport.clone(),
            &self.user.clone(),
            &self.domain.clone(),
            contact,
            expires,
            &self.reg_call_id.clone(),
            self.reg_cseq,
            &branch(),
            &tag(),
        );
        self.send(&text);
        let cid = self.reg_call_id.clone();
        self.expect_final(&cid, "REGISTER")
    }

    /// Registers our own Contact for `expires` seconds and asserts 200.
    pub fn register(&mut self, expires: u32) -> Msg {
        let contact = format!("<{}>", self.contact_uri());
        let resp = self.register_with(Some(&contact), Some(expires));
        assert_eq!(
            resp.status(),
            Some(200),
            "{}: REGISTER of {contact} not accepted: {resp:?}",
            self.user
        );
        resp
    }

    /// Closes the TCP connection (both directions).
    pub fn close(&mut self) {
        if let Some(s) = self.tcp.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.close_tls();
        self.udp = None;
    }
}

// ---------------------------------------------------------------------------------
// Sources other than 127.0.0.1 (flood tests: attacker and honest phone on their own
// loopback addresses)
// ---------------------------------------------------------------------------------

/// A TCP connection to `to` from the local address `bind` (e.g. `127.0.0.2`), which
/// std cannot do on its own.
pub fn tcp_connect_from(bind: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(bind, 0).into())?;
    sock.connect_timeout(&to.into(), WAIT)?;
    let stream: TcpStream = sock.into();
    stream.set_nodelay(true).ok();
    Ok(stream)
}

impl Ua {
    /// A UA with one TCP connection to the proxy from the local address `bind`.
    pub fn tcp_from(user: &str, proxy: &Proxy, bind: &str) -> Ua {
        let ip: std::net::IpAddr = bind.parse().expect("an IP address");
        let stream = tcp_connect_from(ip, proxy.addr())
            .unwrap_or_else(|e| panic!("connect tcp {} from {bind}: {e}", proxy.addr()));
        let local = stream.local_addr().unwrap();
        Ua::new(user, Tp::Tcp, None, Some(stream), local, proxy.addr())
    }

    /// True once the proxy has closed our TCP connection, waiting up to `wait`;
    /// messages that arrive meanwhile are stashed.
    pub fn wait_tcp_closed(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while !self.tcp_closed && Instant::now() < deadline {
            let step = (Instant::now() + Duration::from_millis(100)).min(deadline);
            if let Some(m) = self.recv_until(step) {
                self.stash.push_back(m);
            }
        }
        self.tcp_closed
    }
}
