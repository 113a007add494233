//! Durability: 1,000 bindings registered on a durable store survive `kill -9`, and
//! so does every binding whose 200 went out during a fast REGISTER run cut by
//! `kill -9` while refreshes were answered ahead of their write (write-behind). Each
//! test runs against both durable stores: SQLite and the append-only journal.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::*;

const USERS: usize = 1000;
const WINDOW: usize = 64;

/// Sends every (Call-ID, request) over `sock`, at most `WINDOW` outstanding, with
/// retransmissions after 1 s, and returns the final response per Call-ID.
fn pipelined(sock: &UdpSocket, to: SocketAddr, reqs: &[(String, String)]) -> HashMap<String, Msg> {
    pipelined_until(sock, to, reqs, reqs.len())
}

/// Like [`pipelined`], but returns as soon as `enough` final responses are in.
fn pipelined_until(
    sock: &UdpSocket,
    to: SocketAddr,
    reqs: &[(String, String)],
    enough: usize,
) -> HashMap<String, Msg> {
    let mut done: HashMap<String, Msg> = HashMap::new();
    let mut pending: HashMap<String, (usize, Instant, u32)> = HashMap::new();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut buf = vec![0u8; 65536];
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    while done.len() < enough.min(reqs.len()) && Instant::now() < deadline {
        while pending.len() < WINDOW && next < reqs.len() {
            let (cid, text) = &reqs[next];
            sock.send_to(text.as_bytes(), to).unwrap();
            pending.insert(cid.clone(), (next, Instant::now(), 1));
            next += 1;
        }
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Some(m) = Msg::parse(&buf[..n], from, false) else {
                continue;
            };
            if m.status().is_some_and(|c| c >= 200) && pending.remove(m.call_id()).is_some() {
                done.insert(m.call_id().to_owned(), m);
            }
        }
        let now = Instant::now();
        for (i, sent, tries) in pending.values_mut() {
            if now.duration_since(*sent) > Duration::from_millis(1000) && *tries < 8 {
                sock.send_to(reqs[*i].1.as_bytes(), to).unwrap();
                *sent = now;
                *tries += 1;
            }
        }
    }
    done
}

fn contact_of(i: usize, local: SocketAddr) -> String {
    format!("sip:dur{i}@{local}")
}

fn register_all(phone: &Ua, proxy: &Proxy, query: bool) -> Vec<(String, String)> {
    let local = phone.local;
    (0..USERS)
        .map(|i| {
            let cid = call_id();
            let contact = format!("<{}>", contact_of(i, local));
            let text = build_register(
                "UDP",
                &local.to_string(),
                &format!("dur{i}"),
                DOMAIN,
                if query { None } else { Some(&contact) },
                if query { None } else { Some(3600) },
                &cid,
                1,
                &branch(),
                &tag(),
            );
            let _ = proxy;
            (cid, text)
        })
        .collect()
}

fn check_bindings(
    reqs: &[(String, String)],
    got: &HashMap<String, Msg>,
    local: SocketAddr,
    when: &str,
) {
    let mut missing = Vec::new();
    for (i, (cid, _)) in reqs.iter().enumerate() {
        match got.get(cid) {
            None => missing.push(format!("dur{i}: no final response")),
            Some(m) if m.status() != Some(200) => {
                missing.push(format!("dur{i}: {}", m.start));
            }
            Some(m) => {
                let uris: Vec<String> = m.contacts().iter().map(|c| uri_of(c)).collect();
                if uris != vec![contact_of(i, local)] {
                    missing.push(format!("dur{i}: contacts {uris:?}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{when}: {} of {USERS} users wrong, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// A durable store back end under test.
#[derive(Clone, Copy)]
enum Durable {
    Sqlite,
    Journal,
}

impl Durable {
    fn builder(self, name: &str) -> ProxyBuilder {
        match self {
            Durable::Sqlite => ProxyBuilder::new(name).sqlite(),
            Durable::Journal => ProxyBuilder::new(name).journal(),
        }
    }

    /// The file the store must have written before the kill.
    fn file(self, proxy: &Proxy) -> std::path::PathBuf {
        match self {
            Durable::Sqlite => proxy.dir.join("sipwake.db"),
            Durable::Journal => proxy.dir.join("sipwake.journal.1.log"),
        }
    }
}

#[test]
fn thousand_bindings_survive_kill_9() {
    thousand_bindings_survive_kill_9_on(Durable::Sqlite);
}

#[test]
fn thousand_bindings_survive_kill_9_journal() {
    thousand_bindings_survive_kill_9_on(Durable::Journal);
}

fn thousand_bindings_survive_kill_9_on(store: Durable) {
    let mut proxy = store.builder("durability").start();
    let mut phone = Ua::udp("phones", &proxy);
    let local = phone.local;

    let started = Instant::now();
    let reqs = register_all(&phone, &proxy, false);
    let got = pipelined(phone.udp_socket(), proxy.addr(), &reqs);
    check_bindings(&reqs, &got, local, "REGISTER before the kill");
    eprintln!("registered {USERS} users in {:?}", started.elapsed());

    // Every 200 has gone out: each binding must be in the WAL (or the log) now.
    proxy.kill9();
    assert!(
        store.file(&proxy).exists(),
        "no store file in {}",
        proxy.dir.display()
    );
    proxy.restart();

    let queries = register_all(&phone, &proxy, true);
    let got = pipelined(phone.udp_socket(), proxy.addr(), &queries);
    check_bindings(&queries, &got, local, "query after kill -9 and restart");

    // An operator can look inside while sipwake runs: `sipwake bindings dump`.
    let (backend, path) = match store {
        Durable::Sqlite => ("sqlite", "sipwake.db"),
        Durable::Journal => ("journal", "sipwake.journal"),
    };
    let out = std::process::Command::new(SIPWAKE)
        .args(["bindings", "dump"])
        .current_dir(&proxy.dir)
        .env("SIPWAKE__STORE__BACKEND", backend)
        .env("SIPWAKE__STORE__PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), USERS, "one line per binding");
    let dumped: std::collections::HashSet<&str> =
        lines.iter().filter_map(|b| b["contact"].as_str()).collect();
    for i in 0..USERS {
        assert!(
            dumped.contains(contact_of(i, local).as_str()),
            "dur{i} not dumped"
        );
    }

    // And the restored bindings are used: an INVITE reaches the phone's flow.
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("dur500", "");
    let got = phone.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(got.ruri(), contact_of(500, local));
    phone.reply(&got, 486, "Busy Here", Some(&tag()));
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(486), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
}

/// A REGISTER of `user` from `local` (a query without `expires`).
fn register_of(user: &str, local: SocketAddr, expires: Option<u32>) -> (String, String) {
    let cid = call_id();
    let contact = format!("<sip:{user}@{local}>");
    let text = build_register(
        "UDP",
        &local.to_string(),
        user,
        DOMAIN,
        expires.map(|_| contact.as_str()),
        expires,
        &cid,
        1,
        &branch(),
        &tag(),
    );
    (cid, text)
}

/// The `expires` parameter of the only Contact of a 200 to a query, if it lists
/// exactly the contact of `user` at `local`.
fn listed_expiry(m: &Msg, user: &str, local: SocketAddr) -> Option<u32> {
    let contacts = m.contacts();
    let [c] = contacts.as_slice() else {
        return None;
    };
    if uri_of(c) != format!("sip:{user}@{local}") {
        return None;
    }
    let e = c
        .split(';')
        .find_map(|p| p.trim().strip_prefix("expires="))?;
    e.trim().parse().ok()
}

#[test]
fn kill_9_during_refresh_write_behind_loses_no_answered_binding() {
    kill_9_during_refresh_write_behind_on(Durable::Sqlite);
}

#[test]
fn kill_9_during_refresh_write_behind_loses_no_answered_binding_journal() {
    kill_9_during_refresh_write_behind_on(Durable::Journal);
}

fn kill_9_during_refresh_write_behind_on(store: Durable) {
    const FIRST: u32 = 1800;
    const REFRESH: u32 = 3600;
    // the longest window, so that the kill lands while refreshes are still unwritten
    let mut proxy = store
        .builder("write-behind")
        .env("STORE__REFRESH_WRITE_BEHIND_MS", "10000")
        .start();
    let phone = Ua::udp("phones", &proxy);
    let local = phone.local;
    let old: Vec<String> = (0..USERS).map(|i| format!("wb{i}")).collect();
    let new: Vec<String> = (0..USERS / 2).map(|i| format!("wbnew{i}")).collect();

    let first: Vec<(String, String)> = old
        .iter()
        .map(|u| register_of(u, local, Some(FIRST)))
        .collect();
    let got = pipelined(phone.udp_socket(), proxy.addr(), &first);
    let ok = |m: Option<&Msg>| m.is_some_and(|m| m.status() == Some(200));
    assert!(
        first.iter().all(|(cid, _)| ok(got.get(cid))),
        "first REGISTERs: {} of {USERS} answered 200",
        first.iter().filter(|(cid, _)| ok(got.get(cid))).count()
    );

    // The fast run: every old user refreshes (same contact, new Call-ID, longer
    // expiry: a pure refresh), and a new user registers after every second one.
    let mut run = Vec::new();
    let mut who = Vec::new();
    for (i, u) in old.iter().enumerate() {
        run.push(register_of(u, local, Some(REFRESH)));
        who.push(u.clone());
        if i % 2 == 1 {
            let n = &new[i / 2];
            run.push(register_of(n, local, Some(REFRESH)));
            who.push(n.clone());
        }
    }
    let cut = run.len() * 2 / 3;
    let mut got = pipelined_until(phone.udp_socket(), proxy.addr(), &run, cut);
    proxy.kill9();
    // 200s already sent but not yet read went out too
    let sock = phone.udp_socket();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        if let Some(m) = Msg::parse(&buf[..n], from, false) {
            if m.status().is_some_and(|c| c >= 200) {
                got.insert(m.call_id().to_owned(), m);
            }
        }
    }
    let answered: Vec<&String> = run
        .iter()
        .zip(&who)
        .filter(|((cid, _), _)| ok(got.get(cid)))
        .map(|(_, u)| u)
        .collect();
    let refreshed = answered.iter().filter(|u| !u.starts_with("wbnew")).count();
    let added = answered.len() - refreshed;
    assert!(
        refreshed > 0 && added > 0 && answered.len() < run.len(),
        "the kill did not land mid-run: {refreshed} refreshes and {added} new users \
         answered of {}",
        run.len()
    );
    eprintln!(
        "killed after {refreshed} refreshes and {added} new users were answered, of {}",
        run.len()
    );

    proxy.restart();
    // every old user (registered before the run) and every new user answered in it
    let must: Vec<&String> = old
        .iter()
        .chain(answered.iter().copied().filter(|u| u.starts_with("wbnew")))
        .collect();
    let queries: Vec<(String, String)> = must.iter().map(|u| register_of(u, local, None)).collect();
    let got = pipelined(phone.udp_socket(), proxy.addr(), &queries);
    let refreshed_users: std::collections::HashSet<&String> = answered
        .iter()
        .copied()
        .filter(|u| !u.starts_with("wbnew"))
        .collect();
    let mut lost = Vec::new();
    let mut expiry_before_refresh = 0;
    for ((cid, _), u) in queries.iter().zip(&must) {
        match got.get(cid).and_then(|m| listed_expiry(m, u, local)) {
            None => lost.push(u.as_str()),
            Some(e) if e <= FIRST && refreshed_users.contains(u) => expiry_before_refresh += 1,
            Some(_) => {}
        }
    }
    assert!(
        lost.is_empty(),
        "{} bindings whose 200 went out are gone after kill -9, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    // Some answered refreshes were still unwritten at the kill: the write-behind was
    // on, and those bindings came back with the expiry of their last write.
    assert!(
        expiry_before_refresh > 0,
        "every answered refresh was written before the kill: nothing was deferred"
    );
}
