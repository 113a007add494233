//! Registrar behaviour of the real binary over UDP and TCP (RFC 3261 §10.3).

use crate::common::*;

/// (Contact URI, expires param) of every Contact in a REGISTER response.
fn listed(resp: &Msg) -> Vec<(String, Option<u32>)> {
    resp.contacts()
        .iter()
        .map(|c| {
            (
                uri_of(c),
                header_param(c, "expires").and_then(|e| e.parse().ok()),
            )
        })
        .collect()
}

fn expires_of(resp: &Msg, uri: &str) -> u32 {
    let all = listed(resp);
    match all.iter().find(|(u, _)| u == uri) {
        Some((_, Some(e))) => *e,
        Some((_, None)) => panic!("Contact {uri} listed without ;expires=N: {resp:?}"),
        None => panic!("Contact {uri} not listed in {all:?}: {resp:?}"),
    }
}

fn assert_200(resp: &Msg) {
    assert_eq!(resp.status(), Some(200), "expected 200 OK, got {resp:?}");
}

#[test]
fn register_lists_every_contact_with_its_expiry() {
    let proxy = Proxy::start("reg-list");
    let mut a = Ua::udp("alice", &proxy);
    let mut b = Ua::udp("alice", &proxy);

    let r1 = a.register(600);
    let e = expires_of(&r1, &a.contact_uri());
    assert!(
        (590..=600).contains(&e),
        "expires {e} for 600 requested: {r1:?}"
    );
    assert_eq!(listed(&r1).len(), 1, "one binding expected: {r1:?}");
    assert!(
        r1.to_tag().is_some(),
        "200 to REGISTER without To tag: {r1:?}"
    );

    let r2 = b.register(300);
    assert_eq!(listed(&r2).len(), 2, "both bindings expected: {r2:?}");
    let ea = expires_of(&r2, &a.contact_uri());
    let eb = expires_of(&r2, &b.contact_uri());
    assert!((580..=600).contains(&ea), "alice's first binding: {ea}");
    assert!((290..=300).contains(&eb), "alice's second binding: {eb}");

    // The query form: no Contact, answers the current bindings, changes nothing.
    let mut q = Ua::udp("alice", &proxy);
    let r3 = q.register_with(None, None);
    assert_200(&r3);
    assert_eq!(listed(&r3).len(), 2, "query lists both bindings: {r3:?}");
    expires_of(&r3, &a.contact_uri());
    expires_of(&r3, &b.contact_uri());

    // Someone else's AOR is empty.
    let mut other = Ua::udp("bob", &proxy);
    let r4 = other.register_with(None, None);
    assert_200(&r4);
    assert!(r4.contacts().is_empty(), "bob has no bindings: {r4:?}");
}

#[test]
fn expires_zero_removes_and_star_removes_all() {
    let proxy = Proxy::start("reg-remove");
    let mut a = Ua::udp("carol", &proxy);
    let mut b = Ua::udp("carol", &proxy);
    let mut c = Ua::tcp("carol", &proxy);
    a.register(600);
    b.register(600);
    let rc = c.register(600);
    assert_eq!(listed(&rc).len(), 3, "{rc:?}");

    // Expires: 0 on one Contact removes just that one.
    let contact = format!("<{}>", a.contact_uri());
    let r = a.register_with(Some(&contact), Some(0));
    assert_200(&r);
    let now: Vec<String> = listed(&r).into_iter().map(|(u, _)| u).collect();
    assert_eq!(now.len(), 2, "one binding removed: {r:?}");
    assert!(
        !now.contains(&a.contact_uri()),
        "removed contact still listed: {r:?}"
    );

    // ;expires=0 as a Contact parameter does the same.
    let contact = format!("<{}>;expires=0", b.contact_uri());
    let r = b.register_with(Some(&contact), Some(600));
    assert_200(&r);
    let now: Vec<String> = listed(&r).into_iter().map(|(u, _)| u).collect();
    assert_eq!(now, vec![c.contact_uri()], "{r:?}");

    // Contact: * with Expires: 0 removes everything.
    let r = c.register_with(Some("*"), Some(0));
    assert_200(&r);
    assert!(r.contacts().is_empty(), "no bindings left: {r:?}");
    let mut q = Ua::udp("carol", &proxy);
    let r = q.register_with(None, None);
    assert_200(&r);
    assert!(r.contacts().is_empty(), "query after removal: {r:?}");
}

#[test]
fn too_brief_gets_423_with_min_expires() {
    let proxy = ProxyBuilder::new("reg-423")
        .env("REGISTRAR__MIN_EXPIRES", "120")
        .start();
    let mut a = Ua::udp("dave", &proxy);
    let contact = format!("<{}>", a.contact_uri());
    let r = a.register_with(Some(&contact), Some(30));
    assert_eq!(r.status(), Some(423), "Expires 30 < min 120: {r:?}");
    assert_eq!(
        r.header("min-expires").map(str::trim),
        Some("120"),
        "423 must carry Min-Expires: 120: {r:?}"
    );

    let contact = format!("<{}>;expires=5", a.contact_uri());
    let r = a.register_with(Some(&contact), None);
    assert_eq!(r.status(), Some(423), "expires param 5 < 120: {r:?}");

    // Nothing was bound.
    let r = a.register_with(None, None);
    assert_200(&r);
    assert!(r.contacts().is_empty(), "{r:?}");

    // The minimum itself is fine.
    let r = a.register(120);
    let e = expires_of(&r, &a.contact_uri());
    assert!((110..=120).contains(&e), "{r:?}");
}

#[test]
fn expiry_defaults_and_caps() {
    let proxy = ProxyBuilder::new("reg-caps")
        .env("REGISTRAR__MAX_EXPIRES", "1800")
        .env("REGISTRAR__DEFAULT_EXPIRES", "1200")
        .start();
    let mut a = Ua::udp("erin", &proxy);
    let contact = format!("<{}>", a.contact_uri());
    let r = a.register_with(Some(&contact), Some(100_000));
    assert_200(&r);
    let e = expires_of(&r, &a.contact_uri());
    assert!(
        (1790..=1800).contains(&e),
        "capped to max 1800, got {e}: {r:?}"
    );

    let mut b = Ua::udp("erin", &proxy);
    let contact = format!("<{}>", b.contact_uri());
    let r = b.register_with(Some(&contact), None);
    assert_200(&r);
    let e = expires_of(&r, &b.contact_uri());
    assert!((1190..=1200).contains(&e), "default 1200, got {e}: {r:?}");

    // A Contact expires parameter wins over the Expires header.
    let mut c = Ua::udp("erin", &proxy);
    let contact = format!("<{}>;expires=300", c.contact_uri());
    let r = c.register_with(Some(&contact), Some(900));
    assert_200(&r);
    let e = expires_of(&r, &c.contact_uri());
    assert!((290..=300).contains(&e), "param 300 wins, got {e}: {r:?}");
}

#[test]
fn aor_is_user_at_host_of_to() {
    let proxy = Proxy::start("reg-aor");
    let mut a = Ua::udp("frank", &proxy);
    a.register(600);
    let mut b = Ua::udp("frank", &proxy);
    b.domain = "example.org".to_owned();
    let r = b.register(600);
    assert_eq!(listed(&r).len(), 1, "example.org is another AOR: {r:?}");

    let mut q = Ua::udp("frank", &proxy);
    let r = q.register_with(None, None);
    assert_200(&r);
    let uris: Vec<String> = listed(&r).into_iter().map(|(u, _)| u).collect();
    assert_eq!(uris, vec![a.contact_uri()], "{r:?}");
}

#[test]
fn register_over_tcp() {
    let proxy = Proxy::start("reg-tcp");
    let mut a = Ua::tcp("gina", &proxy);
    let r = a.register(600);
    assert!(r.tcp, "response over the connection");
    let e = expires_of(&r, &a.contact_uri());
    assert!((590..=600).contains(&e), "{r:?}");
    let mut q = Ua::udp("gina", &proxy);
    let r = q.register_with(None, None);
    assert_200(&r);
    expires_of(&r, &a.contact_uri());
}

#[test]
fn stale_cseq_on_same_call_id_is_refused() {
    let proxy = Proxy::start("reg-cseq");
    let sock = Ua::udp("hank", &proxy);
    let mut a = sock;
    let contact = format!("<{}>", a.contact_uri());
    let cid = call_id();
    let send = |a: &mut Ua, cseq: u32, expires: u32| -> Msg {
        let text = build_register(
            "UDP",
            &a.via_hostport.clone(),
            "hank",
            DOMAIN,
            Some(&contact),
            Some(expires),
            &cid,
            cseq,
            &branch(),
            &tag(),
        );
        a.send(&text);
        a.expect_final(&cid, "REGISTER")
    };
    assert_eq!(send(&mut a, 10, 600).status(), Some(200));
    // An older CSeq on the same Call-ID must not remove the binding.
    let r = send(&mut a, 5, 0);
    assert!(
        r.status().unwrap_or(0) >= 400,
        "stale CSeq 5 < 10 on the same Call-ID must fail (RFC 3261 §10.3 step 7): {r:?}"
    );
    let r = a.register_with(None, None);
    assert_eq!(listed(&r).len(), 1, "binding kept: {r:?}");
    // A newer one works.
    let r = send(&mut a, 11, 0);
    assert_200(&r);
    assert!(r.contacts().is_empty(), "{r:?}");
}

#[test]
fn same_instance_from_new_address_replaces_binding() {
    let proxy = Proxy::start("reg-instance");
    let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-00a0c91e6bf6>\"";
    let mut a = Ua::udp("ivy", &proxy);
    let contact = format!("<{}>;{inst}", a.contact_uri());
    let r = a.register_with(Some(&contact), Some(600));
    assert_200(&r);
    // The "relaunched app": new socket, new Call-ID, same instance.
    let mut b = Ua::udp("ivy", &proxy);
    let contact = format!("<{}>;{inst}", b.contact_uri());
    let r = b.register_with(Some(&contact), Some(600));
    assert_200(&r);
    let uris: Vec<String> = listed(&r).into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        uris,
        vec![b.contact_uri()],
        "the device's new binding replaces its old one: {r:?}"
    );
}

#[test]
fn push_parameters_never_echoed() {
    let proxy = Proxy::start("reg-push");
    let mut a = Ua::udp("jane", &proxy);
    let contact = format!(
        // no pn-provider: with none configured that would be 555 (tests/it/push.rs)
        "<{};pn-param=ABCD1234.com.example.voip;pn-prid=00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0;xToken=secret-token>",
        a.contact_uri()
    );
    let r = a.register_with(Some(&contact), Some(600));
    assert_200(&r);
    assert_eq!(r.contacts().len(), 1, "{r:?}");
    let lower = r.raw.to_ascii_lowercase();
    assert!(
        !lower.contains("pn-prid")
            && !lower.contains("pn-param")
            && !lower.contains("pn-provider")
            && !lower.contains("xtoken")
            && !lower.contains("00fc13adff785122"),
        "push parameters must not leave sipwake: {r:?}"
    );
    let uri = uri_of(&r.contacts()[0]);
    assert!(
        uri.starts_with(&a.contact_uri()),
        "listed contact {uri} should still be ours ({})",
        a.contact_uri()
    );
}

/// A REGISTER from `ua` for `user@example.com` with this Request-URI and Route
/// lines (each with CRLF); its final response.
fn register_via(ua: &mut Ua, ruri: &str, routes: &str) -> Msg {
    let cid = call_id();
    let contact = format!("<{}>", ua.contact_uri());
    let text = build_register(
        "UDP",
        &ua.via_hostport,
        &ua.user,
        DOMAIN,
        Some(&contact),
        Some(600),
        &cid,
        1,
        &branch(),
        &tag(),
    )
    .replacen(
        &format!("REGISTER sip:{DOMAIN} "),
        &format!("REGISTER {ruri} "),
        1,
    )
    .replacen("Max-Forwards:", &format!("{routes}Max-Forwards:"), 1);
    ua.send(&text);
    ua.expect_final(&cid, "REGISTER")
}

/// Every name that is sipwake's counts as sipwake in a Route (removed, RFC 3261
/// §16.4) and in the Request-URI (the registrar): a configured alias, and a name that
/// resolves to the listen address (`localhost`), on sipwake's port, while the domains
/// served are only `example.com`. A name on another port is not sipwake.
#[test]
fn route_and_request_uri_naming_us_by_any_name_are_ours() {
    let proxy = ProxyBuilder::new("names")
        .env("PROXY__DOMAINS", DOMAIN)
        .env("SIP__ALIASES", "sip.example.net")
        .start();
    let p = proxy.port;
    let mut ua = Ua::udp("alice", &proxy);
    for (what, ruri, routes) in [
        (
            "Route by a resolving name",
            format!("sip:{DOMAIN}"),
            format!("Route: <sip:localhost:{p};lr>\r\n"),
        ),
        (
            "Route by an alias",
            format!("sip:{DOMAIN}"),
            format!("Route: <sip:SIP.example.net:{p};lr>\r\n"),
        ),
        (
            "two Routes of ours",
            format!("sip:{DOMAIN}"),
            format!("Route: <sip:sip.example.net:{p};lr>, <sip:localhost:{p};lr>\r\n"),
        ),
        (
            "Request-URI by a resolving name",
            format!("sip:localhost:{p}"),
            String::new(),
        ),
        (
            "Request-URI by an alias",
            format!("sip:sip.example.net:{p}"),
            String::new(),
        ),
    ] {
        let r = register_via(&mut ua, &ruri, &routes);
        assert_eq!(r.status(), Some(200), "{what}: {r:?}");
    }
    // sipwake answers an OPTIONS for itself by its alias (a keep-alive)
    let cid = call_id();
    let text = format!(
        "OPTIONS sip:sip.example.net:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {hp};branch={b};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag={t}\r\nTo: <sip:sip.example.net:{p}>\r\n\
         Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        hp = ua.via_hostport,
        b = branch(),
        t = tag(),
    );
    ua.send(&text);
    let r = ua.expect_final(&cid, "OPTIONS");
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert!(
        r.header("allow").is_some(),
        "answered by sipwake itself: {r:?}"
    );

    // the same name on a port sipwake does not listen on is somebody else
    let r = register_via(&mut ua, &format!("sip:localhost:{}", free_port()), "");
    assert_eq!(r.status(), Some(403), "{r:?}");
}
