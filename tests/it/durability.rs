//! Durability: 1,000 bindings registered on the SQLite store survive `kill -9`.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::*;

const USERS: usize = 1000;
const WINDOW: usize = 64;

/// Sends every (Call-ID, request) over `sock`, at most `WINDOW` outstanding, with
/// retransmissions after 1 s, and returns the final response per Call-ID.
fn pipelined(sock: &UdpSocket, to: SocketAddr, reqs: &[(String, String)]) -> HashMap<String, Msg> {
    let mut done: HashMap<String, Msg> = HashMap::new();
    let mut pending: HashMap<String, (usize, Instant, u32)> = HashMap::new();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut buf = vec![0u8; 65536];
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    while done.len() < reqs.len() && Instant::now() < deadline {
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

#[test]
fn thousand_bindings_survive_kill_9() {
    let mut proxy = ProxyBuilder::new("durability").sqlite().start();
    let mut phone = Ua::udp("phones", &proxy);
    let local = phone.local;

    let started = Instant::now();
    let reqs = register_all(&phone, &proxy, false);
    let got = pipelined(phone.udp_socket(), proxy.addr(), &reqs);
    check_bindings(&reqs, &got, local, "REGISTER before the kill");
    eprintln!("registered {USERS} users in {:?}", started.elapsed());

    // Every 200 has gone out: each binding must be in the WAL now.
    proxy.kill9();
    assert!(
        proxy.dir.join("sipwake.db").exists(),
        "no database file in {}",
        proxy.dir.display()
    );
    proxy.restart();

    let queries = register_all(&phone, &proxy, true);
    let got = pipelined(phone.udp_socket(), proxy.addr(), &queries);
    check_bindings(&queries, &got, local, "query after kill -9 and restart");

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
