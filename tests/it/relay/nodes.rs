//! Relay mode with several nodes: two sipwake nodes in relay mode share their
//! bindings in one real `redis-server` in front of one Kamailio (the upstream
//! registrar). Each node relays with a Path (or, rewriting contacts, a contact)
//! naming itself, so the upstream's calls and qualify come back to the node holding
//! the phone's flow; a call parked on one node for a sleeping phone is woken by its
//! REGISTER relayed through the other and reaches it through that node with the
//! push's `X-PushHint`; a dead node's phone is pushed by the node that takes over its
//! address; and the configuration that used to be refused now checks, while one
//! missing what several nodes need fails naming the key.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::*;
use crate::common::redis_server::RedisServer;

/// A relay node in front of `kam`, sharing its bindings in `redis`, pushing through
/// `hook`, with its admin API on `admin`.
fn relay_node(
    name: &str,
    kam: &Kamailio,
    redis: &RedisServer,
    hook: Option<&MockHttp>,
    admin: SocketAddr,
) -> Proxy {
    relay_node_builder(name, kam, redis, hook, admin).start()
}

/// The settings of [`relay_node`], not started yet.
fn relay_node_builder(
    name: &str,
    kam: &Kamailio,
    redis: &RedisServer,
    hook: Option<&MockHttp>,
    admin: SocketAddr,
) -> ProxyBuilder {
    relay_builder(
        name,
        &kam.uri(),
        hook,
        &[
            ("STORE__BACKEND", "redis"),
            ("STORE__REDIS__URL", &redis.url()),
            ("STORE__REDIS__TIMEOUT_MS", "300"),
            ("ADMIN__LISTEN", &admin.to_string()),
        ],
    )
}

fn free_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The body of `GET path` on an admin API.
fn admin_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the admin API");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the answer");
    assert!(raw.starts_with("HTTP/1.1 200"), "GET {path}: {raw}");
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The node (`cluster.node_id`) owning `user`'s only binding, read from the admin API
/// of any node (they all read Redis).
fn owner_of(admin: SocketAddr, user: &str) -> String {
    let body = admin_get(admin, &format!("/registrations?aor={user}@{DOMAIN}"));
    let regs: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(regs["total"], 1, "{regs:#}");
    regs["bindings"][0]["node"]
        .as_str()
        .unwrap_or_else(|| panic!("a node: {regs:#}"))
        .to_owned()
}

/// Registers `ua` through its node (challenged by Kamailio, then accepted).
fn register_through(ua: &mut Ua, contact: &str) {
    let ok = register_auth(ua, Some(contact), "", Some(600));
    assert_eq!(ok.status(), Some(200), "{}: {ok:?}", ua.user);
}

/// `carol` (registered at Kamailio) calls `phone`, registered through `node`: the
/// INVITE comes along the Path to `node` and from it to the phone (never through
/// `other`, when given); answered, ACKed and ended by a BYE from the phone or from carol.
fn call_from_upstream(
    carol: &mut Ua,
    phone: &mut Ua,
    node: &Proxy,
    other: Option<&Proxy>,
    bye_from_phone: bool,
) {
    let user = phone.user.clone();
    let inv = invite_auth(carol, &user);
    let got = phone.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(
        got.from,
        node.addr(),
        "{user}'s call comes through the node its Path names: {got:?}"
    );
    let (host, port) = uri_hostport(got.ruri());
    assert_eq!(format!("{host}:{port}"), phone.contact_hostport, "{got:?}");
    assert!(got.header("route").is_none(), "{got:?}");
    let rr: Vec<String> = got
        .values("record-route")
        .iter()
        .map(|v| uri_of(v))
        .collect();
    assert!(
        rr.iter().any(|r| uri_hostport(r).1 == node.port),
        "{user}'s node stays on the dialog: {rr:?}"
    );
    if let Some(other) = other {
        assert!(
            rr.iter().all(|r| uri_hostport(r).1 != other.port),
            "the other node has no part in it: {rr:?}"
        );
    }
    let t = tag();
    phone.reply(&got, 180, "Ringing", Some(&t));
    carol.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    phone.reply(&got, 200, "OK", Some(&t));
    let ok = carol.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut cd = Dialog::uac(&inv, &ok);
    carol.ack_2xx(&mut cd, inv.cseq);
    let ack = phone.expect_request("ACK", Some(&inv.call_id));
    assert_eq!(ack.from, node.addr(), "{ack:?}");
    let mut pd = Dialog::uas(&got, &t);
    if bye_from_phone {
        phone.send_in_dialog(&mut pd, "BYE", None);
        let bye = carol.expect_request("BYE", Some(&inv.call_id));
        carol.reply(&bye, 200, "OK", None);
        phone.expect_response(&inv.call_id, "BYE", "200 to BYE", |c| c == 200);
    } else {
        carol.send_in_dialog(&mut cd, "BYE", None);
        let bye = phone.expect_request("BYE", Some(&inv.call_id));
        assert_eq!(bye.from, node.addr(), "{bye:?}");
        phone.reply(&bye, 200, "OK", None);
        carol.expect_response(&inv.call_id, "BYE", "200 to BYE", |c| c == 200);
    }
}

/// Alice registers through A, dave through B; each node's binding is in Redis owned
/// by that node, and Kamailio's calls to each come back through the node its Path
/// names; BYE from the phone on one call and from the caller on the other. Dave's own
/// call goes up through B, challenged by Kamailio.
#[test]
fn relay_nodes_call_each_phone_through_the_node_it_registered_on() {
    let kam = Kamailio::start("relay-nodes-call");
    let redis = RedisServer::start(temp_dir("relay-nodes-call-redis"));
    let (admin_a, admin_b) = (free_admin(), free_admin());
    let a = relay_node("relay-nodes-call-a", &kam, &redis, None, admin_a);
    let b = relay_node("relay-nodes-call-b", &kam, &redis, None, admin_b);

    let mut alice = Ua::udp("alice", &a);
    let c = format!("<{}>", alice.contact_uri());
    register_through(&mut alice, &c);
    let mut dave = Ua::udp("dave", &b);
    let c = format!("<{}>", dave.contact_uri());
    register_through(&mut dave, &c);
    // committed to the shared store, owned by the node holding the flow
    assert_eq!(owner_of(admin_b, "alice"), a.hostport());
    assert_eq!(owner_of(admin_a, "dave"), b.hostport());

    let mut carol = Ua::udp_at("carol", kam.addr(), "127.0.0.1:0");
    let cc = format!("<{}>", carol.contact_uri());
    assert_eq!(
        register_auth(&mut carol, Some(&cc), "", Some(600)).status(),
        Some(200)
    );
    call_from_upstream(&mut carol, &mut alice, &a, Some(&b), true);
    call_from_upstream(&mut carol, &mut dave, &b, Some(&a), false);

    // and the other way: a phone's call goes up through its node, challenged there
    let inv = invite_auth(&mut dave, "carol");
    let got = carol.expect_request("INVITE", Some(&inv.call_id));
    let rr: Vec<String> = got
        .values("record-route")
        .iter()
        .map(|v| uri_of(v))
        .collect();
    assert!(
        rr.iter().any(|r| uri_hostport(r).1 == b.port),
        "dave's node record-routes: {rr:?}"
    );
    carol.reply(&got, 486, "Busy Here", Some(&tag()));
    let fin = dave.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(486), "{fin:?}");
    dave.ack_non2xx(&inv, &fin);
}

/// A sleeping phone registered through A: Kamailio's INVITE comes along A's Path, A
/// pushes and parks the call; the relaunched app registers through B (relayed with
/// B's Path, stored in Redis owned by B), and A's parked call reaches it through B
/// with the push's X-PushHint; ACK and BYE cross Kamailio, A and B.
#[test]
fn relay_nodes_call_parked_on_one_node_is_woken_by_a_register_through_another() {
    wake_across_relay_nodes("relay-nodes-wake", false);
}

/// The same with contact rewriting, against a Kamailio without Path support: each
/// node registers upstream a contact naming itself, Kamailio's INVITE comes to A's.
#[test]
fn relay_nodes_with_contact_rewriting_wake_across_nodes() {
    wake_across_relay_nodes("relay-nodes-rewrite", true);
}

fn wake_across_relay_nodes(name: &str, rewrite: bool) {
    let kam = if rewrite {
        Kamailio::start_with(name, &["NO_PATH"])
    } else {
        Kamailio::start(name)
    };
    let redis = RedisServer::start(temp_dir(&format!("{name}-redis")));
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let (admin_a, admin_b) = (free_admin(), free_admin());
    let node = |n: &str, admin| {
        let b = relay_node_builder(&format!("{name}-{n}"), &kam, &redis, Some(&hook), admin);
        b.env(
            "RELAY__CONTACT_REWRITE",
            if rewrite { "true" } else { "false" },
        )
        .start()
    };
    let a = node("a", admin_a);
    let b = node("b", admin_b);

    let token = unique("tok");
    let instance = "6f1a2b3c-0000-4000-8000-0000000000c2";
    let mut phone = Ua::udp("alice", &a);
    let contact = contact_with_token(&phone, &token, instance);
    register_through(&mut phone, &contact);
    assert_eq!(owner_of(admin_b, "alice"), a.hostport());
    if rewrite {
        let held = kamailio_contacts(&kam, "alice");
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(
            uri_hostport(&uri_of(&held[0])).1,
            a.port,
            "A's own: {held:?}"
        );
    }

    // the phone falls asleep (its flow older than the 1 s flow timeout)
    thread::sleep(Duration::from_millis(1200));
    let mut carol = Ua::udp_at("carol", kam.addr(), "127.0.0.1:0");
    let cc = format!("<{}>", carol.contact_uri());
    assert_eq!(
        register_auth(&mut carol, Some(&cc), "", Some(600)).status(),
        Some(200)
    );
    let inv = invite_auth(&mut carol, "alice");
    let push = hook
        .next(WAIT)
        .unwrap_or_else(|| panic!("no push for the call\n{}", a.log_text()));
    let doc = push.json();
    assert_eq!(doc["event"], "call", "{doc:#}");
    assert_eq!(doc["token"], token.as_str(), "{doc:#}");
    let hint = doc["pushHint"].as_str().expect("pushHint").to_owned();

    // the relaunched app reaches B this time, from a new port
    let mut woken = Ua::udp("alice", &b);
    let contact2 = contact_with_token(&woken, &token, instance);
    register_through(&mut woken, &contact2);
    assert_eq!(owner_of(admin_a, "alice"), b.hostport());

    let got = woken.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(
        got.from,
        b.addr(),
        "through the node holding the new flow: {got:?}"
    );
    assert_eq!(
        got.header_lines("x-pushhint"),
        vec![hint.as_str()],
        "X-PushHint equal to the push's pushHint: {got:?}"
    );
    let (host, port) = uri_hostport(got.ruri());
    assert_eq!(format!("{host}:{port}"), woken.contact_hostport, "{got:?}");
    assert!(
        hook.next(Duration::from_millis(200)).is_none(),
        "one push for one call"
    );
    assert!(phone
        .try_expect(Duration::from_millis(100), |m| m.method() == Some("INVITE"))
        .is_none());

    woken.reply(&got, 180, "Ringing", Some("ph1"));
    carol.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    woken.reply(&got, 200, "OK", Some("ph1"));
    let ok = carol.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut d = Dialog::uac(&inv, &ok);
    assert_eq!(
        d.route_set.len(),
        3,
        "Kamailio, A and B record-route: {ok:?}"
    );
    carol.ack_2xx(&mut d, inv.cseq);
    let ack = woken.expect_request("ACK", Some(&inv.call_id));
    assert_eq!(ack.from, b.addr(), "{ack:?}");
    let mut pd = Dialog::uas(&got, "ph1");
    woken.send_in_dialog(&mut pd, "BYE", None);
    let bye = carol.expect_request("BYE", Some(&inv.call_id));
    carol.reply(&bye, 200, "OK", None);
    woken.expect_response(&inv.call_id, "BYE", "200 to BYE", |c| c == 200);

    let held = kamailio_contacts(&kam, "alice");
    if rewrite {
        // B registered a contact of its own for the phone's new flow
        assert!(
            held.iter().any(|c| uri_hostport(&uri_of(c)).1 == b.port),
            "{held:?}"
        );
        return;
    }
    // Kamailio followed the phone to B: the old contact is gone, the new one held
    assert!(
        held.iter().any(|c| c.contains(&woken.contact_hostport)),
        "{held:?}"
    );
    assert!(
        held.iter().all(|c| !c.contains(&phone.contact_hostport)),
        "{held:?}"
    );
}

/// Asterisk's qualify along a node's Path (`OPTIONS <contact>`, To = the contact,
/// Route = the Path entry Kamailio returned) reaches the node holding the flow, which
/// answers it for the sleeping phone and counts it, as one node does.
#[test]
fn relay_nodes_qualify_along_the_path_is_answered_by_the_node_holding_the_flow() {
    let kam = Kamailio::start("relay-nodes-qualify");
    let redis = RedisServer::start(temp_dir("relay-nodes-qualify-redis"));
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let (admin_a, admin_b) = (free_admin(), free_admin());
    let a = relay_node("relay-nodes-qualify-a", &kam, &redis, Some(&hook), admin_a);
    let _b = relay_node("relay-nodes-qualify-b", &kam, &redis, Some(&hook), admin_b);

    let token = unique("tok");
    let mut phone = Ua::udp("alice", &a);
    let contact = contact_with_token(&phone, &token, "6f1a2b3c-0000-4000-8000-0000000000c4");
    // a phone that supports Path sees the upstream's Path entry: A's own
    let ok = register_auth(&mut phone, Some(&contact), "Supported: path\r\n", Some(600));
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    let path = uri_of(
        ok.header("path")
            .unwrap_or_else(|| panic!("a Path: {ok:?}")),
    );
    assert_eq!(uri_hostport(&path).1, a.port, "A's Path names A: {path}");
    assert!(path.contains(";sw-aor="), "{path}");
    thread::sleep(Duration::from_millis(1200));

    let mut pbx = Ua::udp_at("pbx", a.addr(), "127.0.0.1:0");
    let c = phone.contact_uri();
    let cid = call_id();
    let options = format!(
        "OPTIONS {c} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};rport;branch={b}\r\n\
         From: <sip:asterisk@{me}>;tag={t}\r\n\
         To: <{c}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Route: <{path}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        me = pbx.via_hostport,
        b = branch(),
        t = tag(),
    );
    pbx.send(&options);
    let r = pbx.expect_final(&cid, "OPTIONS");
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert!(
        phone
            .try_expect(Duration::from_millis(200), |m| m.method()
                == Some("OPTIONS"))
            .is_none(),
        "a sleeping phone's qualify is answered, not sent to its dead flow"
    );
    assert_eq!(metric(admin_a, "sipwake_qualify_answered_total"), 1.0);
    assert_eq!(metric(admin_b, "sipwake_qualify_answered_total"), 0.0);
}

/// Node loss: A, holding a sleeping phone's flow, dies (`kill -9`) and a replacement
/// node (its own `cluster.node_id`) takes over A's address, as a floating address
/// moves to a standby. Kamailio's call along A's Path reaches the replacement, which
/// finds the binding's owner gone: a failed flow, so the phone is pushed; it registers
/// through B and gets the call there with the push's X-PushHint.
#[test]
fn relay_nodes_a_dead_nodes_phone_is_pushed_by_the_node_taking_its_address() {
    let kam = Kamailio::start("relay-nodes-loss");
    let redis = RedisServer::start(temp_dir("relay-nodes-loss-redis"));
    let hook = MockHttp::start();
    hook.route("/push", 200, "{}");
    let (admin_a, admin_b, admin_d) = (free_admin(), free_admin(), free_admin());
    let mut a = relay_node("relay-nodes-loss-a", &kam, &redis, Some(&hook), admin_a);
    let b = relay_node("relay-nodes-loss-b", &kam, &redis, Some(&hook), admin_b);

    let token = unique("tok");
    let instance = "6f1a2b3c-0000-4000-8000-0000000000c3";
    let mut phone = Ua::udp("alice", &a);
    let contact = contact_with_token(&phone, &token, instance);
    register_through(&mut phone, &contact);
    assert_eq!(owner_of(admin_b, "alice"), a.hostport());

    let a_id = a.hostport();
    a.kill9();
    // past A's heartbeat (3 s), then the replacement starts on A's address
    thread::sleep(Duration::from_millis(3500));
    let d = relay_node_builder("relay-nodes-loss-d", &kam, &redis, Some(&hook), admin_d)
        .env("CLUSTER__NODE_ID", "standby-d")
        .port(a.port)
        .start();
    let deadline = Instant::now() + WAIT;
    loop {
        let view: serde_json::Value =
            serde_json::from_str(&admin_get(admin_d, "/cluster")).expect("JSON");
        let ids: Vec<&str> = view["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .filter_map(|n| n["id"].as_str())
            .collect();
        if ids.contains(&b.hostport().as_str()) && !ids.contains(&a_id.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "D never saw B alone: {view}");
        thread::sleep(Duration::from_millis(100));
    }

    let mut carol = Ua::udp_at("carol", kam.addr(), "127.0.0.1:0");
    let cc = format!("<{}>", carol.contact_uri());
    assert_eq!(
        register_auth(&mut carol, Some(&cc), "", Some(600)).status(),
        Some(200)
    );
    let inv = invite_auth(&mut carol, "alice");
    let push = hook
        .next(WAIT)
        .unwrap_or_else(|| panic!("no push for the call\n{}", d.log_text()));
    let doc = push.json();
    assert_eq!(doc["event"], "call", "{doc:#}");
    assert_eq!(doc["token"], token.as_str(), "{doc:#}");
    let hint = doc["pushHint"].as_str().expect("pushHint").to_owned();
    assert!(
        phone
            .try_expect(Duration::from_millis(200), |m| m.method() == Some("INVITE"))
            .is_none(),
        "nothing is sent over the dead node's flow"
    );

    let mut woken = Ua::udp("alice", &b);
    let contact2 = contact_with_token(&woken, &token, instance);
    register_through(&mut woken, &contact2);
    let got = woken.expect_request("INVITE", Some(&inv.call_id));
    assert_eq!(got.from, b.addr(), "{got:?}");
    assert_eq!(
        got.header_lines("x-pushhint"),
        vec![hint.as_str()],
        "X-PushHint equal to the push's pushHint: {got:?}"
    );
    woken.reply(&got, 200, "OK", Some("ph2"));
    let ok = carol.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    let mut cd = Dialog::uac(&inv, &ok);
    carol.ack_2xx(&mut cd, inv.cseq);
    woken.expect_request("ACK", Some(&inv.call_id));
    carol.send_in_dialog(&mut cd, "BYE", None);
    let bye = woken.expect_request("BYE", Some(&inv.call_id));
    assert_eq!(bye.from, b.addr(), "{bye:?}");
    woken.reply(&bye, 200, "OK", None);
    carol.expect_response(&inv.call_id, "BYE", "200 to BYE", |c| c == 200);
    drop(d);
}

/// Redis down: a relay node never answers 200 for a binding it could not store. A
/// REGISTER gets `503` with `Retry-After` (not relayed: the AOR cannot be read), the
/// PBX's call along the Path gets a failure at once (the bindings cannot be read),
/// and once Redis is back the phone's REGISTER goes through again.
#[test]
fn relay_node_answers_503_while_redis_is_down_then_recovers() {
    let kam = Kamailio::start("relay-nodes-down");
    let mut redis = RedisServer::start(temp_dir("relay-nodes-down-redis"));
    let a = relay_node("relay-nodes-down-a", &kam, &redis, None, free_admin());
    let mut alice = Ua::udp("alice", &a);
    let c = format!("<{}>", alice.contact_uri());
    register_through(&mut alice, &c);
    let mut carol = Ua::udp_at("carol", kam.addr(), "127.0.0.1:0");
    let cc = format!("<{}>", carol.contact_uri());
    assert_eq!(
        register_auth(&mut carol, Some(&cc), "", Some(600)).status(),
        Some(200)
    );

    redis.stop();
    // a changed registration (new expiry: never throttled)
    let r = register_once(&mut alice, Some(&c), "", Some(900));
    assert_eq!(r.status(), Some(503), "REGISTER while Redis is down: {r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    let inv = invite_auth(&mut carol, "alice");
    let fin = carol.expect_final(&inv.call_id, "INVITE");
    assert!(
        matches!(fin.status(), Some(500 | 503)),
        "the bindings cannot be read: {fin:?}"
    );
    carol.ack_non2xx(&inv, &fin);
    assert!(
        alice
            .try_expect(Duration::from_millis(200), |m| m.method() == Some("INVITE"))
            .is_none(),
        "nothing reaches the phone unread"
    );
    assert!(a.ping().is_some(), "sipwake stays up");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = register_auth_or_fail(&mut alice, &c);
        if r.status() == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {r:?}");
        thread::sleep(Duration::from_millis(200));
    }
    call_from_upstream(&mut carol, &mut alice, &a, None, true);
}

/// A REGISTER that may be refused before the upstream sees it (`503`), or challenged
/// and then answered: the final answer.
fn register_auth_or_fail(ua: &mut Ua, contact: &str) -> Msg {
    let first = register_once(ua, Some(contact), "", Some(900));
    if first.status() != Some(401) {
        return first;
    }
    let auth = digest_line(
        &first,
        &ua.user.clone(),
        password(&ua.user),
        "REGISTER",
        &format!("sip:{DOMAIN}"),
    );
    register_once(ua, Some(contact), &auth, Some(900))
}

/// Runs `sipwake --check-config` on `toml` with nothing from the environment;
/// returns its exit status and standard error.
fn check_config(name: &str, toml: &str) -> (Option<i32>, String) {
    let dir = temp_dir(name);
    let conf = dir.join("sipwake.toml");
    std::fs::write(&conf, toml).unwrap();
    check_config_file(&conf, &[])
}

/// Runs `sipwake --check-config` on the file `conf` with these `SIPWAKE__…`
/// variables; returns its exit status and output.
fn check_config_file(conf: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(SIPWAKE)
        .arg("--check-config")
        .arg(conf)
        .envs(env.iter().copied())
        .env_remove("SIPWAKE_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run sipwake --check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// Relay mode on the shared Redis store checks; on a wildcard listener without
/// `cluster.advertise_uri` (the other nodes could not reach this one) it fails,
/// naming the key, with the configuration-fault status.
#[test]
fn relay_with_redis_checks_and_names_what_it_misses() {
    let base = "[registrar]\nmode = \"relay\"\n\n[upstream]\nuri = \"sip:10.0.0.5:5080\"\n\n\
                [store]\nbackend = \"redis\"\n\n[store.redis]\nurl = \"redis://127.0.0.1:6379\"\n";
    let ok = format!("{base}\n[sip]\nlisten = [\"127.0.0.1:5060\"]\n");
    let (code, out) = check_config("relay-redis-check-ok", &ok);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok"), "{out}");

    let wildcard = format!("{base}\n[sip]\nlisten = [\"0.0.0.0:5060\"]\n");
    let (code, out) = check_config("relay-redis-check-wild", &wildcard);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("cluster.advertise_uri"), "{out}");

    let named = format!(
        "{wildcard}advertised_host = \"10.0.0.11\"\n\n[cluster]\nadvertise_uri = \"sip:10.0.0.11:5060\"\n"
    );
    let (code, out) = check_config("relay-redis-check-named", &named);
    assert_eq!(code, Some(0), "{out}");

    // the compose profile `cluster-relay`: the shipped relay settings with a node's
    // port, advertise URI and the shared store
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let node_env = [
        ("SIPWAKE__SIP__LISTEN", "0.0.0.0:5062"),
        ("SIPWAKE__CLUSTER__ADVERTISE_URI", "sip:127.0.0.1:5062"),
        ("SIPWAKE__STORE__BACKEND", "redis"),
        ("SIPWAKE__STORE__REDIS__URL", "redis://127.0.0.1:6379"),
    ];
    for (k, v) in node_env {
        let v = v.replace("sip:127.0.0.1", "sip:${NODE_IP:-127.0.0.1}");
        assert!(
            compose.contains(&format!("{k}: \"{v}\"")) || compose.contains(&format!("{k}: {v}")),
            "docker-compose.yml sets {k}"
        );
    }
    assert!(compose.contains("profiles: [cluster-relay]"));
    let shipped = root.join("conf/asterisk/sipwake-relay.toml");
    let (code, out) = check_config_file(&shipped, &node_env);
    assert_eq!(code, Some(0), "{out}");

    let no_upstream = ok.replace("[upstream]\nuri = \"sip:10.0.0.5:5080\"\n", "");
    let (code, out) = check_config("relay-redis-check-no-up", &no_upstream);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("upstream.uri"), "{out}");
}
