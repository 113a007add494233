//! The request handler in-process: each input is fed to `ProxyHandler::on_message`,
//! the entry point the UDP and TCP receive loops call, with a made-up flow, and the
//! spawned transaction / routing / registrar / push tasks get to run.
//!
//! Input: one or more chunks separated by `SEP`; each chunk is one flags byte (which
//! proxy and which flow) followed by the message bytes. Several chunks let the fuzzer
//! build sequences (REGISTER, then an INVITE for that AOR, then a CANCEL …). Flags:
//! bits 0-1 the proxy (local, relay, relay with contact rewriting, local with digest
//! auth), bits 2-3 the source address, bit 4 TCP (else UDP), bit 5 TLS, bits 6-7 the
//! connection id.
//!
//! Nothing of the input goes through a socket, but the proxy does send its answers and
//! forwarded requests, to addresses that come from the input (Via, Route, Contact …),
//! and resolves host names. So the process first moves itself into a fresh user +
//! network namespace that has only a loopback interface: nothing can leave the
//! machine. Where that is impossible it refuses to run, unless
//! `SIPWAKE_FUZZ_ALLOW_NETWORK=1` says the operator isolated it some other way.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sipwake::config;
use sipwake::proxy::Core;
use sipwake::server::Server;
use sipwake::transport::{Flow, Handler};

const SEP: &[u8] = b"\0--\0";

struct Proxy {
    core: Arc<Core>,
    handler: Arc<dyn Handler>,
    local: SocketAddr,
}

struct World {
    rt: tokio::runtime::Runtime,
    /// Local registrar, relay, relay with contact rewriting, local with digest auth.
    proxies: Vec<Proxy>,
}

static WORLD: OnceLock<World> = OnceLock::new();

const COMMON: &str = r#"
[sip]
listen = ["127.0.0.1:0", "[::1]:0"]
t1_ms = 5
t2_ms = 40
t4_ms = 50
timer_c_secs = 1
[store]
backend = "memory"
[push]
wake_timeout_ms = 100
default_provider = "webhook"
[push.webhook]
url = "http://127.0.0.1:9/push"
timeout_ms = 50
[admin]
listen = ""
# every input comes from one of four sources: rate limits would soon answer all with 503
[limits]
register_per_source_rate = 0
invite_per_source_rate = 0
register_per_aor_rate = 0
"#;

/// alice's password is "secret" (realm example.com), for the proxy with digest auth.
const USERS: &str = "alice:example.com:b1726872c344b6dc8365b774f8fd6412:ed8925b20f9a77b8f8f8d5f8e4467fe32b866f7208ab9e4b20595e9821a0fdee\n";

fn settings(extra: &str) -> config::Settings {
    config::from_toml_str(&format!("{COMMON}{extra}")).expect("fuzz settings")
}

/// Moves the process into new user and network namespaces with only `lo` (up).
fn isolate() -> Result<(), String> {
    // SAFETY: plain syscalls on this (still single-threaded) process; `ifr` is a
    // zeroed C struct with a NUL-terminated name.
    unsafe {
        let (uid, gid) = (libc::getuid(), libc::getgid());
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        // keep our own uid/gid, so the corpus and crash files can still be written
        let _ = std::fs::write("/proc/self/setgroups", "deny");
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))
            .map_err(|e| format!("uid_map: {e}"))?;
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
            .map_err(|e| format!("gid_map: {e}"))?;
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if s < 0 {
            return Err("socket".into());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, c) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *c as libc::c_char;
        }
        let ok = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) == 0 && {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) == 0
        };
        libc::close(s);
        if !ok {
            return Err(format!("lo up: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn init() {
    if let Err(e) = isolate() {
        if std::env::var_os("SIPWAKE_FUZZ_ALLOW_NETWORK").is_none() {
            eprintln!(
                "handler fuzz target: cannot isolate the network ({e}); refusing to run, \
                 since inputs make the proxy send to arbitrary addresses. Run it where \
                 unprivileged user namespaces work, or isolate it yourself and set \
                 SIPWAKE_FUZZ_ALLOW_NETWORK=1."
            );
            std::process::exit(2);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let users = std::env::temp_dir().join(format!("sipwake-fuzz-users-{}", std::process::id()));
    std::fs::write(&users, USERS).expect("users file");
    let auth = format!(
        "[upstream]\nuri = \"sip:127.0.0.1:9\"\n[proxy]\ndomains = [\"example.com\"]\n\
         [auth]\nenabled = true\nusers_file = \"{}\"\nrealm = \"example.com\"\n",
        users.display()
    );
    let proxies = rt.block_on(async {
        let mut v = Vec::new();
        for extra in [
            "[upstream]\nuri = \"sip:127.0.0.1:9\"\n",
            "[upstream]\nuri = \"sip:127.0.0.1:9\"\n[registrar]\nmode = \"relay\"\n",
            "[upstream]\nuri = \"sip:127.0.0.1:9;transport=tcp\"\n[registrar]\nmode = \"relay\"\n[relay]\ncontact_rewrite = true\nrefresh_throttle_secs = 0\n",
            auth.as_str(),
        ] {
            let server = Server::start(settings(extra)).await.expect("server start");
            let core = server.core.clone();
            let handler = core.handler().expect("handler");
            let local = core.transport.udp_addrs()[0];
            v.push(Proxy {
                core,
                handler,
                local,
            });
        }
        v
    });
    let _ = WORLD.set(World { rt, proxies });
}

fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                rest = Some(&r[i + SEP.len()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

fuzz_target!(init: init(), |data: &[u8]| {
    let w = WORLD.get().expect("init ran");
    w.rt.block_on(async {
        for chunk in split(data).take(8) {
            let Some((&flags, msg)) = chunk.split_first() else {
                continue;
            };
            if msg.len() > 65535 {
                continue;
            }
            let p = &w.proxies[(flags & 3) as usize];
            let remote: SocketAddr = match (flags >> 2) & 3 {
                // trusted (loopback), untrusted, IPv6 loopback, another trusted port
                0 => ([127, 0, 0, 1], 5062).into(),
                1 => ([192, 0, 2, 7], 5062).into(),
                2 => (std::net::Ipv6Addr::LOCALHOST, 5062).into(),
                _ => ([127, 0, 0, 3], 40000).into(),
            };
            let flow = if flags & 0x10 == 0 {
                p.core
                    .transport
                    .udp_flow(remote, Some(p.local))
                    .unwrap_or(Flow::Udp { socket: 0, remote })
            } else {
                Flow::Tcp {
                    conn: 1 + (flags >> 6) as u64,
                    remote,
                    inbound: true,
                    tls: flags & 0x20 != 0,
                }
            };
            p.handler
                .on_message(Bytes::copy_from_slice(msg), flow, p.local);
            // let the spawned transaction / forward / push tasks take their steps
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
        }
    });
    // forget bindings and finished transactions, so inputs stay (mostly) independent
    // and memory does not grow with the number of runs
    for p in &w.proxies {
        p.core.registrar.sweep(u64::MAX);
        p.core.tx.sweep(Instant::now());
    }
});
