//! Shared helpers for the integration tests, split by kind: [`proxy`] starts and stops
//! the `sipwake` binary on loopback ports; [`msg`] parses and builds SIP messages as
//! text; [`ua`] is a small SIP phone over UDP and TCP built on blocking std sockets (no
//! async runtime), [`dialog`] its calls, [`tls_ua`] its TLS transport and
//! [`push_phone`] a phone that sleeps and wakes on a push; [`mock_http`] and
//! [`mock_apns`] stand in for the push services; [`redis_server`] runs a real Redis
//! for the tests of several nodes. This file holds what all of them use:
//! unique ids, free ports, scratch directories, a seeded random generator.
//!
//! Messages are built as text and parsed with simple string operations; that is on
//! purpose: the tests should not share a parser with the code under test.

#![allow(dead_code)]

pub mod dialog;
pub mod mock_apns;
pub mod mock_http;
pub mod msg;
pub mod proxy;
pub mod push_phone;
pub mod redis_server;
pub mod tls_ua;
pub mod ua;

pub use dialog::*;
pub use msg::*;
pub use proxy::*;
pub use ua::*;

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default wait for something the proxy should do at once.
pub const WAIT: Duration = Duration::from_secs(5);

/// Path of the binary under test.
pub const SIPWAKE: &str = env!("CARGO_BIN_EXE_sipwake");

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A string unique within this machine and run: pid, counter and clock.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{:x}x{n:x}x{nanos:x}", std::process::id())
}

/// A fresh RFC 3261 branch.
pub fn branch() -> String {
    unique("z9hG4bK-t")
}

/// A fresh tag.
pub fn tag() -> String {
    unique("tg")
}

/// A fresh Call-ID.
pub fn call_id() -> String {
    format!("{}@sipwake.test", unique("cid"))
}

/// A port free for both UDP and TCP on 127.0.0.1, never one of the ports the RFC 4475
/// script or SIPp take by default (5050, 5060, 5061, 5070).
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1:0");
        let port = udp.local_addr().unwrap().port();
        if matches!(port, 5050 | 5060 | 5061 | 5070) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// A fresh directory under cargo's scratch space for integration tests.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique(&format!("{name}-")));
    fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// A deterministic xorshift64* generator (no `rand` crate).
pub struct XorShift(pub u64);

impl XorShift {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
