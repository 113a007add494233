//! Push before INVITE, end to end against the real binary: phones register with a push
//! token (each token style), fall asleep, and come back from a new port when pushed;
//! the pushes go to a webhook receiver run by the test (HTTP/1.1 on loopback).
//!
//! A UDP token binding counts as reachable only while its last REGISTER is younger
//! than `push.flow_timeout_secs`; the tests set it to 1 s and wait a little longer, so
//! the phone is asleep when the call comes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::push_phone::register_raw;
use crate::common::*;
use serde_json::Value;

mod cancel;
mod devices;
mod settings;
mod webhook;

use webhook::Webhook;

// ---------------------------------------------------------------------------------
// sipwake and the phones
// ---------------------------------------------------------------------------------

/// sipwake pushing bare tokens to `hook`, with a 1 s flow timeout; `extra` overrides.
fn start(name: &str, hook: &Webhook, extra: &[(&str, &str)]) -> Proxy {
    let mut b = ProxyBuilder::new(name)
        .env("PUSH__WEBHOOK__URL", &hook.url)
        .env("PUSH__DEFAULT_PROVIDER", "webhook")
        .env("PUSH__FLOW_TIMEOUT_SECS", "1");
    for (k, v) in extra {
        b = b.env(k, v);
    }
    b.start()
}

/// Waits until a UDP binding registered just now no longer counts as reachable.
fn fall_asleep() {
    thread::sleep(Duration::from_millis(1150));
}

/// How a phone hands its token to sipwake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// `X-Token: <tok>` header.
    Header,
    /// `;xToken=<tok>` Contact URI parameter.
    Param,
    /// RFC 8599 `;pn-provider=webhook;pn-prid=<tok>`.
    Rfc8599,
}

/// Registers `ua`'s Contact for 600 s with `token` in `style` (and a `+sip.instance`
/// when given); asserts the 200 and that it does not echo the token.
fn register_token(ua: &mut Ua, style: Style, token: &str, instance: Option<&str>) -> Msg {
    register_token_for(ua, style, token, instance, 600)
}

/// [`register_token`] with this Expires (0: unregister).
fn register_token_for(
    ua: &mut Ua,
    style: Style,
    token: &str,
    instance: Option<&str>,
    expires: u32,
) -> Msg {
    let (uri_params, extra) = match style {
        Style::Header => (String::new(), format!("X-Token: {token}\r\n")),
        Style::Param => (format!(";xToken={token}"), String::new()),
        Style::Rfc8599 => (
            format!(";pn-provider=webhook;pn-prid={token}"),
            String::new(),
        ),
    };
    let inst = instance
        .map(|i| format!(";+sip.instance=\"<urn:uuid:{i}>\""))
        .unwrap_or_default();
    let contact = format!("<{}{uri_params}>{inst}", ua.contact_uri());
    let resp = register_raw(ua, &contact, &extra, expires);
    assert_eq!(
        resp.status(),
        Some(200),
        "REGISTER with a {style:?} token refused: {resp:?}"
    );
    assert!(
        !resp.raw.contains(token),
        "the 200 must never echo the push token: {resp:?}"
    );
    resp
}

/// An SDP offer with an active video stream.
const SDP_VIDEO: &str = "v=0\r\n\
o=- 1 1 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n\
m=video 40002 RTP/AVP 96\r\n\
a=rtpmap:96 H264/90000\r\n";

/// Sends an INVITE for `to_user` whose From has `display` as display name, with
/// `extra` header lines and `sdp` as body.
fn invite_as(caller: &mut Ua, to_user: &str, display: &str, extra: &str, sdp: &str) -> Invite {
    let mut inv = caller.build_invite(&format!("sip:{to_user}@{DOMAIN}"), extra);
    let from = format!("\"{display}\" {}", inv.from);
    inv.text = inv.text.replacen(
        &format!("From: {}\r\n", inv.from),
        &format!("From: {from}\r\n"),
        1,
    );
    inv.from = from;
    inv.text = inv.text.replacen(
        &format!("Content-Length: {}\r\n\r\n{SDP}", SDP.len()),
        &format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()),
        1,
    );
    assert!(inv.text.ends_with(sdp), "{}", inv.text);
    caller.send(&inv.text);
    inv
}

/// Sends a plain INVITE and waits for the 100 Trying.
fn call(caller: &mut Ua, to_user: &str) -> Invite {
    let inv = caller.invite(to_user, "");
    caller.expect_response(&inv.call_id, "INVITE", "100 Trying", |c| c == 100);
    inv
}

/// The `pushHint` of a call document, checked for form.
fn hint_of(push: &Value) -> String {
    let hint = push["pushHint"]
        .as_str()
        .unwrap_or_else(|| panic!("pushHint missing: {push:#}"))
        .to_owned();
    assert!(
        hint.len() >= 16 && hint.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'),
        "pushHint should be a long random token: {push:#}"
    );
    hint
}

/// Waits for the INVITE of `call_id` at `phone` and checks it carries exactly our
/// hint, and no push token.
fn expect_invite_with_hint(phone: &mut Ua, call_id: &str, hint: &str) -> Msg {
    let got = phone.expect_request("INVITE", Some(call_id));
    assert_eq!(
        got.header_lines("x-pushhint"),
        vec![hint],
        "exactly one X-PushHint, equal to the push's pushHint: {got:?}"
    );
    assert!(
        got.header("x-token").is_none(),
        "no X-Token may leave sipwake: {got:?}"
    );
    let (host, port) = uri_hostport(got.ruri());
    assert_eq!(
        format!("{host}:{port}"),
        phone.contact_hostport,
        "Request-URI must be the woken binding's Contact: {got:?}"
    );
    got
}

/// True for an INVITE of `call_id` sent on another branch than `seen`'s (i.e. not a
/// retransmission of it).
fn another_invite(m: &Msg, call_id: &str, seen: &Msg) -> bool {
    m.method() == Some("INVITE") && m.call_id() == call_id && m.top_branch() != seen.top_branch()
}

/// The callee answers 200, the caller gets it and ACKs, the callee gets the ACK, then
/// the caller hangs up and the BYE goes through.
fn answer_and_hang_up(caller: &mut Ua, inv: &Invite, phone: &mut Ua, got: &Msg, to_tag: &str) {
    phone.reply(got, 200, "OK", Some(to_tag));
    let ok = caller.expect_response(&inv.call_id, "INVITE", "200 OK", |c| c == 200);
    assert_eq!(ok.to_tag().as_deref(), Some(to_tag), "{ok:?}");
    let mut d = Dialog::uac(inv, &ok);
    caller.ack_2xx(&mut d, inv.cseq);
    phone.expect_request("ACK", Some(&inv.call_id));
    caller.send_in_dialog(&mut d, "BYE", None);
    let bye = phone.expect_request("BYE", Some(&inv.call_id));
    phone.reply(&bye, 200, "OK", None);
    caller.expect_response(&inv.call_id, "BYE", "200 to BYE", |c| c == 200);
}

/// Sends an out-of-dialog `method` request for `to_user` and returns the final
/// response.
fn request(caller: &mut Ua, method: &str, to_user: &str) -> Msg {
    let cid = call_id();
    let text = format!(
        "{method} sip:{to_user}@{DOMAIN} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: <{aor}>;tag={t}\r\n\
         To: <sip:{to_user}@{DOMAIN}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 {method}\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 5\r\n\r\nhello",
        via = caller.via(&branch()),
        aor = caller.aor(),
        t = tag(),
    );
    caller.send(&text);
    caller.expect_final(&cid, method)
}

const SHORT: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------

#[test]
fn token_styles_feature_caps_and_555() {
    let hook = Webhook::start();
    let proxy = start("push-register", &hook, &[]);

    let mut ua = Ua::udp("hdr", &proxy);
    let r = register_token(&mut ua, Style::Header, &unique("tokh"), Some("a-1"));
    assert!(r.header("feature-caps").is_none(), "{r:?}");
    let mut ua = Ua::udp("prm", &proxy);
    let r = register_token(&mut ua, Style::Param, &unique("tokp"), None);
    assert!(r.header("feature-caps").is_none(), "{r:?}");
    let mut ua = Ua::udp("pns", &proxy);
    let r = register_token(&mut ua, Style::Rfc8599, &unique("tokr"), None);
    assert_eq!(
        r.header("feature-caps"),
        Some("*;+sip.pns=\"webhook\";+sip.pnsreg"),
        "RFC 8599 §5.4: {r:?}"
    );
    assert!(
        !r.raw.contains("pn-prid") && !r.raw.contains("pn-provider"),
        "push parameters are removed from the 200's Contact: {r:?}"
    );

    // APNs is not configured: RFC 8599 §5.4
    let apns = "0123456789abcdef".repeat(4);
    for params in [
        format!(";pn-provider=apns;pn-prid={apns};pn-param=ABCDE12345.com.example.phone.voip"),
        format!(";pn-provider=webpush;pn-prid={}", unique("tokw")),
    ] {
        let mut ua = Ua::udp("nopns", &proxy);
        let contact = format!("<{}{params}>", ua.contact_uri());
        let r = register_raw(&mut ua, &contact, "", 600);
        assert_eq!(r.status(), Some(555), "{params}: {r:?}");
        assert_eq!(
            r.reason(),
            "Push Notification Service Not Supported",
            "{r:?}"
        );
        assert!(r.header("feature-caps").is_none(), "{r:?}");
    }
    hook.expect_none("no call, no push", Duration::from_millis(100));
}

// ---------------------------------------------------------------------------------
// The call flow
// ---------------------------------------------------------------------------------

#[test]
fn sleeping_phone_pushed_then_woken_from_a_new_port_answers() {
    let hook = Webhook::start();
    let proxy = start("push-wake", &hook, &[]);
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &token, Some("bob-phone-1"));
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = invite_as(
        &mut alice,
        "bob",
        "Alice Liddell",
        "X-PushHint: forged-by-the-caller\r\nX-Token: forged-token\r\n",
        SDP_VIDEO,
    );
    alice.expect_response(&inv.call_id, "INVITE", "100 Trying", |c| c == 100);

    let push = hook.expect("call");
    let hint = hint_of(&push);
    assert_ne!(hint, "forged-by-the-caller");
    assert_eq!(push["reason"], Value::Null, "{push:#}");
    assert_eq!(push["aor"], format!("bob@{DOMAIN}"), "{push:#}");
    assert_eq!(push["token"], token.as_str(), "{push:#}");
    assert_eq!(push["provider"], "webhook", "{push:#}");
    assert_eq!(push["callId"], inv.call_id.as_str(), "{push:#}");
    assert_eq!(push["callerId"], "alice", "{push:#}");
    assert_eq!(push["callerName"], "Alice Liddell", "{push:#}");
    assert_eq!(push["callerNumber"], "alice", "{push:#}");
    assert_eq!(push["withVideo"], true, "m=video with a port: {push:#}");
    let uuid = push["callUUID"].as_str().unwrap_or_default();
    assert!(
        uuid.len() == 36 && uuid.matches('-').count() == 4,
        "callUUID should be a UUID: {push:#}"
    );

    // parked: the sleeping phone's dead flow gets nothing, the caller hears nothing
    asleep.expect_nothing("an INVITE on the sleeping flow", SHORT, |m| {
        m.method() == Some("INVITE")
    });
    alice.expect_nothing("a response while the call is parked", Duration::ZERO, |m| {
        m.status().is_some_and(|c| c > 100)
    });

    // the relaunched app: new socket, new Call-ID, no +sip.instance, same token
    let mut woken = Ua::udp("bob", &proxy);
    register_token(&mut woken, Style::Header, &token, None);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    assert!(got.body.contains("m=video 40002"), "offer kept: {got:?}");
    let btag = tag();
    woken.reply(&got, 180, "Ringing", Some(&btag));
    alice.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);

    // the same device registering again on the same flow adds nothing
    register_token(&mut woken, Style::Header, &token, None);
    woken.expect_nothing("a second INVITE branch", SHORT, |m| {
        another_invite(m, &inv.call_id, &got)
    });

    answer_and_hang_up(&mut alice, &inv, &mut woken, &got, &btag);
    assert_eq!(
        asleep.count_received("INVITE", &inv.call_id),
        0,
        "the old flow never got the call"
    );
    hook.expect_none("a cancel notice for a device that got the INVITE", SHORT);
}

#[test]
fn each_token_style_is_pushed_and_woken_without_instance() {
    let hook = Webhook::start();
    let proxy = start("push-styles", &hook, &[]);
    let styles = [
        ("hdr", Style::Header, unique("tokh")),
        ("prm", Style::Param, unique("tokp")),
        ("pns", Style::Rfc8599, unique("tokr")),
    ];
    for (user, style, token) in &styles {
        let mut ua = Ua::udp(user, &proxy);
        register_token(&mut ua, *style, token, Some(&format!("{user}-inst")));
    }
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    for (i, (user, style, token)) in styles.iter().enumerate() {
        let inv = call(&mut alice, user);
        let push = hook.expect("call");
        assert_eq!(push["token"], token.as_str(), "{style:?}: {push:#}");
        assert_eq!(push["provider"], "webhook", "{style:?}: {push:#}");
        assert_eq!(push["aor"], format!("{user}@{DOMAIN}"), "{push:#}");
        assert_eq!(push["withVideo"], false, "audio only: {push:#}");
        // no display name: the caller's number, never null
        assert_eq!(push["callerName"], push["callerNumber"], "{push:#}");
        assert_ne!(push["callerName"], Value::Null, "{push:#}");
        let hint = hint_of(&push);
        // one of them wakes over TCP
        let mut woken = if i == 1 {
            Ua::tcp(user, &proxy)
        } else {
            Ua::udp(user, &proxy)
        };
        register_token(&mut woken, *style, token, None);
        let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
        if *style != Style::Header {
            // (the phone's own Contact may carry its parameters back to it, but no
            // header may carry the token)
            let head = &got.raw[..got.raw.find("\r\n\r\n").unwrap_or(got.raw.len())];
            let after_start = &head[head.find("\r\n").unwrap_or(0)..];
            assert!(
                !after_start.contains(token.as_str()),
                "{style:?}: the token must not appear in the INVITE's headers: {got:?}"
            );
        }
        answer_and_hang_up(&mut alice, &inv, &mut woken, &got, &tag());
    }
    hook.expect_none("cancel notices", SHORT);
}

#[test]
fn no_wake_gives_480_after_the_wake_timeout_and_a_timeout_notice() {
    let hook = Webhook::start();
    let proxy = start("push-timeout", &hook, &[("PUSH__WAKE_TIMEOUT_MS", "1500")]);
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &token, None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let t0 = Instant::now();
    let inv = call(&mut alice, "bob");
    let push = hook.expect("call");
    let hint = hint_of(&push);
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    let waited = t0.elapsed();
    assert_eq!(fin.status(), Some(480), "{fin:?}");
    assert!(
        waited >= Duration::from_millis(1400),
        "480 should come after the 1.5 s wake timeout, came after {waited:?}"
    );
    alice.ack_non2xx(&inv, &fin);

    let notice = hook.expect("cancel");
    assert_eq!(notice["reason"], "timeout", "{notice:#}");
    assert_eq!(notice["token"], token.as_str(), "{notice:#}");
    assert_eq!(notice["pushHint"], hint.as_str(), "{notice:#}");
    assert_eq!(notice["callUUID"], push["callUUID"], "{notice:#}");
    assert_eq!(notice["callId"], inv.call_id.as_str(), "{notice:#}");

    // a phone waking late gets nothing
    let mut late = Ua::udp("bob", &proxy);
    register_token(&mut late, Style::Header, &token, None);
    late.expect_nothing("an INVITE after the 480", SHORT, |m| {
        m.method() == Some("INVITE")
    });
    hook.expect_none("anything more", Duration::ZERO);
}

#[test]
fn every_push_failing_gives_480_at_once() {
    // a webhook nobody listens on: every push fails, nothing else can ring
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/push", dead.local_addr().unwrap());
    drop(dead);
    let proxy = ProxyBuilder::new("push-fail")
        .env("PUSH__WEBHOOK__URL", &url)
        .env("PUSH__DEFAULT_PROVIDER", "webhook")
        .env("PUSH__FLOW_TIMEOUT_SECS", "1")
        .start();
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &unique("tok"), None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let t0 = Instant::now();
    let inv = call(&mut alice, "bob");
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(480), "{fin:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "480 at once, not after the 10 s wake timeout: {:?}",
        t0.elapsed()
    );
    alice.ack_non2xx(&inv, &fin);
}

#[test]
fn options_to_a_sleeping_binding_gets_200_message_480_and_no_push() {
    let hook = Webhook::start();
    // MESSAGEs are not kept here (see messages.rs for keeping them)
    let proxy = start(
        "push-options",
        &hook,
        &[("PUSH__MESSAGES__ENABLED", "false")],
    );
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &unique("tok"), None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let r = request(&mut alice, "OPTIONS", "bob");
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert_eq!(r.from, proxy.addr(), "{r:?}");
    hook.expect_none("a push for an OPTIONS", SHORT);
    let r = request(&mut alice, "MESSAGE", "bob");
    assert_eq!(r.status(), Some(480), "{r:?}");
    hook.expect_none("a push for a MESSAGE", SHORT);
    asleep.expect_nothing("any request on the sleeping flow", Duration::ZERO, |m| {
        m.is_request()
    });
}

/// A PBX's qualify for a UDP phone that registered and went to sleep less than
/// `push.flow_timeout_secs` ago: its flow still counts as reachable for a call, but
/// nothing came from it since the REGISTER, so sipwake answers the OPTIONS rather
/// than let it time out at the PBX. Once the phone sends a keep-alive, the qualify
/// goes to the phone and its own answer comes back.
#[test]
fn qualify_of_a_udp_phone_just_asleep_is_answered_until_it_keeps_alive() {
    let hook = Webhook::start();
    let proxy = start("push-qualify", &hook, &[("PUSH__FLOW_TIMEOUT_SECS", "120")]);
    let mut phone = Ua::udp("bob", &proxy);
    register_token(&mut phone, Style::Header, &unique("tok"), None);
    // a second, so that a later datagram is plainly not the REGISTER itself
    thread::sleep(Duration::from_millis(1300));

    let mut pbx = Ua::udp("pbx", &proxy);
    let r = request(&mut pbx, "OPTIONS", "bob");
    assert_eq!(r.status(), Some(200), "{r:?}");
    phone.expect_nothing("the qualify on the sleeping flow", SHORT, |m| {
        m.method() == Some("OPTIONS")
    });
    hook.expect_none("a push for a qualify", SHORT);

    // the phone is awake after all: its keep-alive shows it
    let proxy_addr = proxy.addr();
    phone.send_to(proxy_addr, Tp::Udp, b"\r\n\r\n");
    thread::sleep(Duration::from_millis(200));
    let cid = call_id();
    let text = format!(
        "OPTIONS sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: {via}\r\n\
         Max-Forwards: 70\r\n\
         From: <{aor}>;tag={t}\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        via = pbx.via(&branch()),
        aor = pbx.aor(),
        t = tag(),
    );
    pbx.send(&text);
    let got = phone.expect_request("OPTIONS", Some(&cid));
    phone.reply(&got, 200, "OK", Some("ph"));
    let r = pbx.expect_final(&cid, "OPTIONS");
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert_eq!(
        r.to_tag().as_deref(),
        Some("ph"),
        "the phone's own answer: {r:?}"
    );
}

#[test]
fn a_plain_register_without_token_also_wakes_the_call() {
    let hook = Webhook::start();
    let proxy = start("push-plain-wake", &hook, &[]);
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &unique("tok"), None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let hint = hint_of(&hook.expect("call"));
    let mut woken = Ua::tcp("bob", &proxy);
    woken.register(600);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got, &tag());
}

#[test]
fn expired_token_binding_is_still_pushed_unregistered_one_is_not() {
    let hook = Webhook::start();
    let proxy = start("push-expiry", &hook, &[("REGISTRAR__MIN_EXPIRES", "1")]);
    // SIP expiry after 1 s; kept callable by push for push.binding_ttl_secs
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_token_for(&mut asleep, Style::Header, &token, None, 1);
    // unregistered: binding and token are gone
    let gone = unique("tokgone");
    let mut leaving = Ua::udp("carl", &proxy);
    register_token(&mut leaving, Style::Header, &gone, None);
    register_token_for(&mut leaving, Style::Header, &gone, None, 0);
    thread::sleep(Duration::from_millis(1300));

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let push = hook.expect("call");
    assert_eq!(push["token"], token.as_str(), "{push:#}");
    let hint = hint_of(&push);
    let mut woken = Ua::udp("bob", &proxy);
    register_token(&mut woken, Style::Header, &token, None);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got, &tag());

    let inv = alice.invite("carl", "");
    let fin = alice.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(480), "{fin:?}");
    alice.ack_non2xx(&inv, &fin);
    hook.expect_none("a push to an unregistered token", SHORT);
}

#[test]
fn parked_calls_per_aor_are_capped_with_503() {
    let hook = Webhook::start();
    let proxy = start("push-cap", &hook, &[("PUSH__MAX_PARKED_PER_AOR", "1")]);
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &unique("tok"), None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let first = call(&mut alice, "bob");
    hook.expect("call");
    let second = alice.invite("bob", "");
    let fin = alice.expect_final(&second.call_id, "INVITE");
    assert_eq!(fin.status(), Some(503), "{fin:?}");
    alice.ack_non2xx(&second, &fin);
    hook.expect_none("a push for a refused call", SHORT);
    alice.cancel(&first);
    let fin = alice.expect_final(&first.call_id, "INVITE");
    assert_eq!(fin.status(), Some(487), "{fin:?}");
    alice.ack_non2xx(&first, &fin);
}

#[test]
fn the_woken_phone_gets_the_invite_before_the_push_is_answered() {
    // the push service answers only when the test lets it
    let hook = Webhook::start_held();
    let proxy = start("push-slow-hook", &hook, &[]);
    let token = unique("tok");
    let mut asleep = Ua::udp("bob", &proxy);
    register_token(&mut asleep, Style::Header, &token, None);
    fall_asleep();

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let push = hook.expect("call");
    let hint = hint_of(&push);
    let mut woken = Ua::udp("bob", &proxy);
    register_token(&mut woken, Style::Header, &token, None);
    // the push's HTTP response is still held back: the INVITE must not wait for it
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    hook.release();
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got, &tag());
}

#[test]
fn a_closed_tcp_flow_is_pushed_and_the_phone_wakes_over_a_new_connection() {
    let hook = Webhook::start();
    let proxy = start(
        "push-tcp-dead",
        &hook,
        &[("PUSH__FLOW_TIMEOUT_SECS", "120")],
    );
    let token = unique("tok");
    let mut gone = Ua::tcp("bob", &proxy);
    register_token(&mut gone, Style::Param, &token, Some("bob-tcp"));
    gone.close();
    thread::sleep(Duration::from_millis(200));

    let mut alice = Ua::udp("alice", &proxy);
    let inv = call(&mut alice, "bob");
    let push = hook.expect("call");
    assert_eq!(push["token"], token.as_str(), "{push:#}");
    let hint = hint_of(&push);
    let mut woken = Ua::tcp("bob", &proxy);
    register_token(&mut woken, Style::Param, &token, None);
    let got = expect_invite_with_hint(&mut woken, &inv.call_id, &hint);
    answer_and_hang_up(&mut alice, &inv, &mut woken, &got, &tag());
}
