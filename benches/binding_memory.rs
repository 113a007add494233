//! Memory per binding, counted by the allocator: what the registrar holds for each
//! registered contact (the binding and its share of the AOR table), without the
//! store, the allocator's page-level waste or the transactions RSS includes.
//!
//! `cargo bench --bench binding_memory` registers 20,000 distinct AORs through
//! `parse_register` and the registrar, as a phone fleet's REGISTERs do, and prints the
//! bytes and allocations still held per binding: bytes as asked for, and as glibc's
//! malloc hands them out (a chunk is the request plus 8 bytes, rounded up to 16, at
//! least 32). `bench/run.py` measures the same from outside, as RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use sipwake::proxy::register::parse_register;
use sipwake::registrar::{Binding, Done, Registrar, Store, StoreError, StoreOp, StoredMessage};
use sipwake::sip::Message;
use sipwake::transport::Flow;

/// Counts what is held: bytes asked for, bytes as glibc chunks, allocations.
struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static CHUNKS: AtomicIsize = AtomicIsize::new(0);
static COUNT: AtomicIsize = AtomicIsize::new(0);

fn chunk(size: usize) -> isize {
    ((size + 8).div_ceil(16).max(2) * 16) as isize
}

// SAFETY: every call is passed on to the system allocator unchanged; the counters
// are only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as isize, Relaxed);
        CHUNKS.fetch_add(chunk(layout.size()), Relaxed);
        COUNT.fetch_add(1, Relaxed);
        // SAFETY: the caller's layout, as given
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as isize, Relaxed);
        CHUNKS.fetch_sub(chunk(layout.size()), Relaxed);
        COUNT.fetch_sub(1, Relaxed);
        // SAFETY: allocated by `alloc` above with this layout
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn held() -> (isize, isize, isize) {
    (
        BYTES.load(Relaxed),
        CHUNKS.load(Relaxed),
        COUNT.load(Relaxed),
    )
}

/// A store that keeps nothing, so only the registrar's own memory is counted.
struct Nowhere;

impl Store for Nowhere {
    fn load(&self) -> Result<Vec<Binding>, StoreError> {
        Ok(Vec::new())
    }
    fn load_messages(&self) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(Vec::new())
    }
    fn submit_then(&self, _ops: Vec<StoreOp>, done: Done) {
        done(Ok(()));
    }
    fn get_meta(&self, _key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    fn put_meta(&self, _key: &str, _value: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A REGISTER of user `i` with a bare push token (`X-Token`), with or without
/// `+sip.instance`, as the SIPp fleet of `bench/run.py` sends them (its Contact with
/// RFC 8599 parameters adds their length to the contact).
fn register(i: usize, instance: bool) -> Bytes {
    let inst = if instance {
        format!(";+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-{i:012}>\"")
    } else {
        String::new()
    };
    Bytes::from(format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{i}-1;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:user{i}@127.0.0.1:5061;transport=udp;ob>{inst}\r\n\
X-Token: 5f3c9a1e7b2d4c6e8a0f1b3d5e7c9a2b4d6f8e0a1c3b5d7f9e2a4c6b{i:08}\r\n\
To: <sip:user{i}@example.com>\r\n\
From: <sip:user{i}@example.com>;tag=e3a1f0\r\n\
Call-ID: reg-{i}-4711@127.0.0.1\r\n\
CSeq: 20 REGISTER\r\n\
Expires: 3600\r\n\
User-Agent: bench/1.0\r\n\
Content-Length: 0\r\n\r\n"
    ))
}

fn main() {
    const N: usize = 20_000;
    let push = sipwake::config::PushSettings::default();
    let pusher = sipwake::push::Pusher::new(&push).unwrap();
    let flow = Flow::Udp {
        socket: 0,
        remote: "127.0.0.1:5061".parse().unwrap(),
    };
    let now = sipwake::registrar::unix_now_ms();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (what, instance) in [("+sip.instance", true), ("push token, no instance", false)] {
        let settings = sipwake::config::RegistrarSettings {
            mode: sipwake::config::RegistrarMode::Local,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        };
        let registrar = Registrar::new(settings, Arc::new(Nowhere)).unwrap();
        let before = held();
        let mut outcomes = 0;
        for i in 0..N {
            let msg = Message::parse(register(i, instance), true).unwrap();
            let req = parse_register(&msg, &flow, now, &push, &pusher).expect("accepted");
            // the outcome dropped at once, as the proxy drops it once it answered
            outcomes += usize::from(rt.block_on(registrar.register(req)).is_ok());
        }
        let after = held();
        assert_eq!(outcomes, N);
        assert_eq!(registrar.count(), N);
        let per = |a: isize, b: isize| (a - b) as f64 / N as f64;
        let b = registrar.lookup("user7@example.com", now);
        println!(
            "{what:<26} {:>6.0} B asked, {:>6.0} B in malloc chunks, {:>4.1} allocations \
             per binding (key {}…)",
            per(after.0, before.0),
            per(after.1, before.1),
            per(after.2, before.2),
            &b[0].key()[..12],
        );
    }
}
