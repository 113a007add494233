//! Several sipwake nodes on the other ways an operator runs Redis: a real Redis
//! Cluster (three primaries made with `redis-cli --cluster create`,
//! `store.redis.cluster = true`), where bindings spread over the shards and binding
//! events go on sharded channels; and a Redis reached over TLS (`rediss://` with
//! `store.redis.ca_file`, certificates made by the test). The behaviour on one plain
//! Redis is in `cluster.rs`; these tests reuse its helpers.

use std::time::Duration;

use crate::cluster::{
    call_across, contacts_seen_by, get, node, register_pairs_at_once, sleeping_on, woken_through_c,
};
use crate::common::redis_server::{ClusterTls, RedisCluster, RedisServer, SharedRedis};
use crate::common::tls_ua::TlsPki;
use crate::common::*;

fn redis_cluster(name: &str) -> RedisCluster {
    RedisCluster::start(temp_dir(name))
}

#[test]
fn on_a_redis_cluster_a_phone_registered_on_one_node_is_called_through_another() {
    let rc = redis_cluster("rc-call");
    let (a, _) = node("rc-call-a", &rc);
    let (b, admin_b) = node("rc-call-b", &rc);
    let mut phone = Ua::udp("bob", &a);
    phone.register(600);
    let mut tcp_phone = Ua::tcp("tom", &a);
    tcp_phone.register(600);
    // more AORs, so that every shard holds some (names of one pattern, rc0..rc29,
    // happen to hash into two of the three slot ranges)
    let mut others: Vec<Ua> = (0..30).map(|_| Ua::udp(&unique("rc"), &a)).collect();
    for p in &mut others {
        p.register(600);
    }
    for n in &rc.nodes {
        assert!(
            n.integer("DBSIZE") > 0,
            "bindings spread over every shard (port {} holds none)",
            n.port
        );
    }
    for p in others.iter().step_by(7) {
        assert_eq!(contacts_seen_by(&b, &p.user), vec![p.contact_uri()]);
    }
    // the admin views walk every shard: all 32 bindings, both nodes (heartbeats)
    let (code, body) = get(admin_b, "/registrations");
    assert_eq!(code, 200, "{body}");
    let regs: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(regs["total"], 32, "{regs:#}");
    let (code, body) = get(admin_b, "/cluster");
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let owned: Vec<(String, u64)> = view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let id = n["id"].as_str().unwrap_or_default().to_owned();
            (id, n["bindings_owned"].as_u64().unwrap_or(0))
        })
        .collect();
    let mut want = vec![(a.hostport(), 32), (b.hostport(), 0)];
    want.sort();
    assert_eq!(owned, want, "{view:#}");
    for bye_from_callee in [true, false] {
        let mut caller = Ua::udp("alice", &b);
        call_across(&mut caller, &b, &mut phone, &a, bye_from_callee);
        let mut caller = Ua::tcp("carl", &b);
        call_across(&mut caller, &b, &mut tcp_phone, &a, bye_from_callee);
    }
}

#[test]
fn on_a_redis_cluster_a_call_parked_on_one_node_is_woken_by_a_register_on_another() {
    let rc = Box::new(redis_cluster("rc-wake-redis"));
    let s = sleeping_on("rc-wake", rc, &[]);
    // woken_through_c also checks B listens on bob's sharded channel while it waits
    woken_through_c(&s, |_| {});
    drop(s.a);
}

#[test]
fn on_a_redis_cluster_a_register_while_the_subscription_is_down_still_wakes_the_call() {
    let rc = Box::new(redis_cluster("rc-race-redis"));
    let delay = ("SIPWAKE_TEST_SUBSCRIBE_DELAY_MS", "3000");
    let s = sleeping_on("rc-race", rc, &[delay]);
    woken_through_c(&s, |s| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.redis.subscribers(crate::cluster::BOB_CHANNEL) != 1 {
            assert!(std::time::Instant::now() < deadline, "B never subscribed");
            std::thread::sleep(Duration::from_millis(20));
        }
        s.redis.kill_subscribers();
    });
    drop(s.a);
}

#[test]
fn on_a_redis_cluster_two_devices_of_one_aor_registering_at_once_on_two_nodes_are_both_kept() {
    let rc = redis_cluster("rc-race2");
    let (a, _) = node("rc-race2-a", &rc);
    let (b, _) = node("rc-race2-b", &rc);
    const AORS: usize = 30;
    let (on_a, on_b) = register_pairs_at_once(&a, &b, "race", AORS);
    for i in 0..AORS {
        let mut want = vec![on_a[i].contact_uri(), on_b[i].contact_uri()];
        want.sort();
        assert_eq!(
            contacts_seen_by(&b, &format!("race{i}")),
            want,
            "race{i}: both devices kept"
        );
    }
}

/// A `redis-server` that speaks TLS only on its TLS port (its plain port is for the
/// harness), with a certificate from `pki`, not asking for client certificates.
struct TlsRedis {
    server: RedisServer,
    tls_port: u16,
    ca_file: std::path::PathBuf,
}

impl SharedRedis for TlsRedis {
    fn store_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "STORE__REDIS__URL".into(),
                format!("rediss://127.0.0.1:{}", self.tls_port),
            ),
            (
                "STORE__REDIS__CA_FILE".into(),
                self.ca_file.to_string_lossy().into_owned(),
            ),
        ]
    }

    fn subscribers(&self, channel: &str) -> i64 {
        self.server.subscribers(channel)
    }

    fn kill_subscribers(&self) {
        self.server.kill_subscribers()
    }
}

fn tls_redis(name: &str) -> TlsRedis {
    let dir = temp_dir(name);
    let pki = TlsPki::new();
    let (cert, key) = pki.write(&dir);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).expect("write ca.pem");
    let tls_port = free_port();
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let server = RedisServer::start_with(
        dir.clone(),
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(&cert),
            "--tls-key-file".into(),
            path(&key),
            "--tls-ca-cert-file".into(),
            path(&ca_file),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    );
    TlsRedis {
        server,
        tls_port,
        ca_file,
    }
}

#[test]
fn over_rediss_two_nodes_register_call_and_wake() {
    let redis = tls_redis("rediss");
    let (a, _) = node("rediss-a", &redis);
    let (b, _) = node("rediss-b", &redis);
    let mut phone = Ua::udp("bob", &a);
    phone.register(600);
    assert_eq!(contacts_seen_by(&b, "bob"), vec![phone.contact_uri()]);
    let mut caller = Ua::udp("alice", &b);
    call_across(&mut caller, &b, &mut phone, &a, false);
    // the bindings went over TLS: every client but this harness's came in on the TLS port
    let clients = redis.server.command("CLIENT LIST").unwrap_or_default();
    let tls_laddr = format!("laddr=127.0.0.1:{} ", redis.tls_port);
    let theirs: Vec<&str> = clients
        .lines()
        .filter(|l| l.contains("laddr=") && !l.contains("cmd=client"))
        .collect();
    assert!(!theirs.is_empty(), "{clients}");
    assert!(
        theirs.iter().all(|l| l.contains(&tls_laddr)),
        "sipwake used the TLS port only: {clients}"
    );
    drop(a);

    // a node that does not trust the server's CA does not start
    let wrong = TlsRedis {
        ca_file: {
            let f = temp_dir("rediss-wrong-ca").join("other-ca.pem");
            std::fs::write(&f, TlsPki::new().ca_pem).unwrap();
            f
        },
        ..tls_redis("rediss-wrong")
    };
    let out = std::process::Command::new(SIPWAKE)
        .envs(
            wrong
                .store_env()
                .into_iter()
                .map(|(k, v)| (format!("SIPWAKE__{k}"), v)),
        )
        .env("SIPWAKE__STORE__BACKEND", "redis")
        .env("SIPWAKE__SIP__LISTEN", format!("127.0.0.1:{}", free_port()))
        .current_dir(temp_dir("rediss-wrong-run"))
        .output()
        .expect("run sipwake");
    assert!(!out.status.success(), "started against an untrusted Redis");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn over_rediss_a_call_parked_on_one_node_is_woken_by_a_register_on_another() {
    let redis = Box::new(tls_redis("rediss-wake-redis"));
    let s = sleeping_on("rediss-wake", redis, &[]);
    woken_through_c(&s, |_| {});
    drop(s.a);
}

/// The `addr=` ports of the clients of `server` other than the one asking, and the
/// `laddr=` port each came in on.
fn client_ports(server: &RedisServer) -> Vec<String> {
    let clients = server.command("CLIENT LIST").unwrap_or_default();
    clients
        .lines()
        .filter(|l| l.contains("laddr=") && !l.contains("cmd=client"))
        .filter_map(|l| {
            let laddr = l.split(' ').find_map(|f| f.strip_prefix("laddr="))?;
            Some(laddr.rsplit_once(':')?.1.to_owned())
        })
        .collect()
}

#[test]
fn over_rediss_on_a_redis_cluster_a_phone_registered_on_one_node_is_called_through_another() {
    let dir = temp_dir("rc-tls");
    let pki = TlsPki::new();
    let (cert, key) = pki.write(&dir);
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write ca.pem");
    let tls = ClusterTls { cert, key, ca };
    let rc = RedisCluster::start_with(dir.join("cluster"), Some(&tls));
    let mut env = rc.store_env();
    env.push((
        "STORE__REDIS__CA_FILE".into(),
        tls.ca.to_string_lossy().into_owned(),
    ));
    let start = |name: &str| {
        let mut b = ProxyBuilder::new(name)
            .env("STORE__BACKEND", "redis")
            .env("STORE__REDIS__TIMEOUT_MS", "300");
        for (k, v) in &env {
            b = b.env(k, v);
        }
        b.start()
    };
    let a = start("rc-tls-a");
    let b = start("rc-tls-b");
    let mut phones: Vec<Ua> = (0..12).map(|_| Ua::udp(&unique("tl"), &a)).collect();
    for p in &mut phones {
        p.register(600);
    }
    for p in &phones {
        assert_eq!(contacts_seen_by(&b, &p.user), vec![p.contact_uri()]);
    }
    let mut caller = Ua::udp("alice", &b);
    call_across(&mut caller, &b, &mut phones[0], &a, false);
    // every shard was reached, and over its TLS port only
    for (n, tls_port) in rc.nodes.iter().zip(&rc.tls_ports) {
        let ports = client_ports(n);
        assert!(!ports.is_empty(), "nobody on port {}", n.port);
        assert!(
            ports.iter().all(|p| *p == tls_port.to_string()),
            "clients of the shard with TLS port {tls_port} came in on {ports:?}"
        );
    }
}

/// The id of the cluster node at `server` (`CLUSTER MYID`).
fn node_id(server: &RedisServer) -> String {
    let reply = server.command("CLUSTER MYID").unwrap_or_default();
    let id = reply.lines().nth(1).unwrap_or_default().trim().to_owned();
    assert_eq!(id.len(), 40, "CLUSTER MYID: {reply:?}");
    id
}

/// Moves the slot of `key` to another primary, its keys with it, as `redis-cli
/// --cluster reshard` does slot by slot; returns the index of the new owner.
fn migrate_slot_of(rc: &RedisCluster, key: &str) -> usize {
    let slot = rc.nodes[0].integer(&format!("CLUSTER KEYSLOT {key}"));
    let owns = |n: &RedisServer| {
        // only the owner answers without a redirection (-MOVED)
        let r = n.command(&format!("EXISTS {key}"));
        r.is_some_and(|r| r.starts_with(':'))
    };
    let from = rc
        .nodes
        .iter()
        .position(owns)
        .expect("an owner of the slot");
    let to = (from + 1) % rc.nodes.len();
    let (src, dst) = (&rc.nodes[from], &rc.nodes[to]);
    let (src_id, dst_id) = (node_id(src), node_id(dst));
    let ok = |n: &RedisServer, line: &str| {
        let r = n.command(line).unwrap_or_default();
        assert!(
            r.starts_with("+OK") || r.starts_with("+NOKEY"),
            "{line}: {r}"
        );
    };
    ok(dst, &format!("CLUSTER SETSLOT {slot} IMPORTING {src_id}"));
    ok(src, &format!("CLUSTER SETSLOT {slot} MIGRATING {dst_id}"));
    let keys = src
        .command(&format!("CLUSTER GETKEYSINSLOT {slot} 100"))
        .unwrap_or_default();
    for k in keys.lines().filter(|l| !l.starts_with(['*', '$'])) {
        ok(src, &format!("MIGRATE 127.0.0.1 {} {k} 0 5000", dst.port));
    }
    for n in &rc.nodes {
        ok(n, &format!("CLUSTER SETSLOT {slot} NODE {dst_id}"));
    }
    to
}

#[test]
fn on_a_redis_cluster_a_call_waiting_while_its_slot_moves_is_still_woken() {
    // the AOR's slot moves to another shard while B waits for bob: the old shard
    // drops B's sharded subscription (SUNSUBSCRIBE), B subscribes again where the slot
    // now is (the client follows the MOVED) and re-reads; the REGISTER on C then lands
    // on the new shard and its event reaches B there
    let rc = Box::new(redis_cluster("rc-move-redis"));
    let s = sleeping_on("rc-move", rc, &[]);
    woken_through_c(&s, |s| {
        let channel = crate::cluster::BOB_CHANNEL;
        let rc = s.redis.cluster().expect("a cluster");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.redis.subscribers(channel) != 1 {
            assert!(std::time::Instant::now() < deadline, "B never subscribed");
            std::thread::sleep(Duration::from_millis(20));
        }
        let to = migrate_slot_of(rc, "sipwake:{bob@example.com}");
        let new_owner = &rc.nodes[to];
        let line = format!("PUBSUB SHARDNUMSUB {channel}");
        while new_owner.integer(&line) != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "B never subscribed on the slot's new shard"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    drop(s.a);
}
