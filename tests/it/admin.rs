//! The admin HTTP API and `/metrics`, against the real binary over real sockets:
//! `/metrics` parses as Prometheus text (a strict parser below) and its counters move
//! with REGISTERs, a call through to a UAS and a push-wake call; `/registrations`
//! shows push tokens truncated and `DELETE` removes the binding (a call then gets
//! `480`); `/calls` shows a call parked for a sleeping phone; `/push-test` reaches the
//! webhook and APNs stand-ins and reports their answers; the bearer token is enforced.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::common::mock_apns::{MockApns, Pki, SigningKey};
use crate::common::mock_http::MockHttp;
use crate::common::push_phone::{fall_asleep, register_raw};
use crate::common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------
// A tiny HTTP/1.1 client
// ---------------------------------------------------------------------------------

/// One response: status, headers (names in lower case), body.
#[derive(Debug)]
struct Http {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Http {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
fn http(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> Http {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the admin API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("read the admin API's answer");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Http {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn get(addr: SocketAddr, path: &str) -> Http {
    http(addr, "GET", path, None)
}

// ---------------------------------------------------------------------------------
// A strict Prometheus text (0.0.4) parser
// ---------------------------------------------------------------------------------

/// Samples by `name{labels}` (labels sorted, as `k="v"` joined by commas).
type Samples = BTreeMap<String, f64>;

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses `{k="v",…}` (the braces stripped); panics on anything malformed.
fn parse_labels(s: &str, line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, r) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label without =\": {line}"));
        assert!(valid_name(k), "bad label name {k:?}: {line}");
        let mut v = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => v.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => v.push(c),
                    other => panic!("bad escape {other:?}: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => v.push(c),
                None => panic!("unterminated label value: {line}"),
            }
        };
        out.push((k.to_owned(), v));
        rest = &r[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}

fn parse_value(v: &str, line: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v
            .parse()
            .unwrap_or_else(|_| panic!("value {v:?} is not a float: {line}")),
    }
}

/// Parses the whole text: every sample's metric family has a `# TYPE` before it,
/// names and labels are well formed, values are floats, and every histogram has
/// cumulative buckets ending in `+Inf` equal to its `_count`, plus a `_sum`.
fn parse_prometheus(text: &str) -> Samples {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Samples::new();
    // histogram family → labels without le → [(le, value)]
    let mut buckets: HashMap<(String, String), Vec<(f64, f64)>> = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            match kw {
                Some("TYPE") => {
                    let name = name.expect("TYPE names a metric");
                    assert!(valid_name(name), "{line}");
                    let t = arg.expect("TYPE has a type");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "TYPE given twice: {line}"
                    );
                }
                Some("HELP") => assert!(valid_name(name.unwrap_or("")), "{line}"),
                _ => {}
            }
            continue;
        }
        assert!(!line.starts_with('#'), "comment without a space: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value = parse_value(value, line);
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                parse_labels(
                    l.strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels: {line}")),
                    line,
                ),
            ),
            None => (series, Vec::new()),
        };
        assert!(valid_name(name), "bad metric name: {line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        let t = types
            .get(family)
            .unwrap_or_else(|| panic!("sample without a TYPE for {family}: {line}"));
        if t == "counter" {
            assert!(value >= 0.0, "negative counter: {line}");
        }
        let mut sorted = labels.clone();
        sorted.sort();
        if name.ends_with("_bucket") && t == "histogram" {
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .unwrap_or_else(|| panic!("bucket without le: {line}"));
            let le = parse_value(&le.1, line);
            let rest: Vec<String> = sorted
                .iter()
                .filter(|(k, _)| k != "le")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            buckets
                .entry((family.to_owned(), rest.join(",")))
                .or_default()
                .push((le, value));
        }
        let key = if sorted.is_empty() {
            name.to_owned()
        } else {
            let l: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        assert!(
            samples.insert(key, value).is_none(),
            "sample given twice: {line}"
        );
    }
    for ((family, rest), list) in &buckets {
        assert!(
            list.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{family} {rest}: buckets must be cumulative with increasing le: {list:?}"
        );
        let last = list.last().unwrap();
        assert_eq!(last.0, f64::INFINITY, "{family}: last bucket is +Inf");
        assert!(rest.is_empty(), "these tests have no labelled histograms");
        assert_eq!(
            samples.get(&format!("{family}_count")),
            Some(&last.1),
            "{family}: +Inf bucket equals _count"
        );
        assert!(
            samples.contains_key(&format!("{family}_sum")),
            "{family}: _sum"
        );
    }
    samples
}

fn scrape(addr: SocketAddr) -> Samples {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.headers
            .get("content-type")
            .is_some_and(|c| c.starts_with("text/plain") && c.contains("version=0.0.4")),
        "{r:?}"
    );
    parse_prometheus(&r.body)
}

fn val(s: &Samples, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in /metrics: {s:#?}"))
}

fn delta(before: &Samples, after: &Samples, key: &str) -> f64 {
    val(after, key) - val(before, key)
}

// ---------------------------------------------------------------------------------
// sipwake and the phones
// ---------------------------------------------------------------------------------

/// sipwake with the admin API on a free port, pushing bare tokens to `hook`, with a
/// 1 s flow timeout; `extra` overrides.
fn start(name: &str, hook: &MockHttp, extra: &[(&str, &str)]) -> (Proxy, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut b = ProxyBuilder::new(name)
        .env("ADMIN__LISTEN", &admin.to_string())
        .env("PUSH__WEBHOOK__URL", &format!("{}/push", hook.base_url()))
        .env("PUSH__DEFAULT_PROVIDER", "webhook")
        .env("PUSH__FLOW_TIMEOUT_SECS", "1");
    for (k, v) in extra {
        b = b.env(k, v);
    }
    (b.start(), admin)
}

fn hook() -> MockHttp {
    let h = MockHttp::start();
    h.route("/push", 200, "{}");
    h
}

/// Registers `ua`'s Contact for 600 s with `X-Token: token`; asserts the 200.
fn register_token(ua: &mut Ua, token: &str) {
    let contact = format!("<{}>", ua.contact_uri());
    let r = register_raw(ua, &contact, &format!("X-Token: {token}\r\n"), 600);
    assert_eq!(r.status(), Some(200), "{r:?}");
}

/// The next webhook POST under `/push`, as JSON.
fn expect_push(hook: &MockHttp, what: &str) -> Value {
    let (seen, _) = hook.next_at("/push", WAIT);
    seen.unwrap_or_else(|| panic!("no webhook POST ({what}) within {WAIT:?}"))
        .json()
}

/// Asleep phone `user` woken by the push: registers from a new socket with the same
/// token and gets the INVITE with the push's hint.
fn wake(proxy: &Proxy, user: &str, token: &str, push: &Value, call_id: &str) -> (Ua, Msg) {
    let mut woken = Ua::udp(user, proxy);
    register_token(&mut woken, token);
    let got = woken.expect_request("INVITE", Some(call_id));
    assert_eq!(
        got.header("x-pushhint"),
        push["pushHint"].as_str(),
        "{got:?}"
    );
    (woken, got)
}

/// The callee answers, the caller ACKs and hangs up.
fn answer_and_hang_up(caller: &mut Ua, inv: &Invite, callee: &mut Ua, got: &Msg) {
    let to_tag = tag();
    callee.reply(got, 180, "Ringing", Some(&to_tag));
    caller.expect_response(&inv.call_id, "INVITE", "180", |c| c == 180);
    callee.reply(got, 200, "OK", Some(&to_tag));
    let ok = caller.expect_response(&inv.call_id, "INVITE", "200", |c| c == 200);
    let mut d = Dialog::uac(inv, &ok);
    caller.ack_2xx(&mut d, inv.cseq);
    callee.expect_request("ACK", Some(&inv.call_id));
    caller.send_in_dialog(&mut d, "BYE", None);
    let bye = callee.expect_request("BYE", Some(&inv.call_id));
    callee.reply(&bye, 200, "OK", None);
    caller.expect_response(&inv.call_id, "BYE", "200 to BYE", |c| c == 200);
}

// ---------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------

#[test]
fn metrics_parse_and_move_with_traffic() {
    let hook = hook();
    let (proxy, admin) = start("admin-metrics", &hook, &[("STORE__BACKEND", "sqlite")]);
    let health = get(admin, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let m0 = scrape(admin);
    for family in [
        "sipwake_bindings",
        "sipwake_parked_calls",
        "sipwake_transactions{side=\"server\"}",
        "sipwake_uptime_seconds",
        "sipwake_dead_tokens_removed_total",
    ] {
        val(&m0, family);
    }

    // a plain REGISTER and a call through to the UAS
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    let mut alice = Ua::udp("alice", &proxy);
    let inv = alice.invite("bob", "");
    let got = bob.expect_request("INVITE", Some(&inv.call_id));
    answer_and_hang_up(&mut alice, &inv, &mut bob, &got);

    // a push-wake call through the webhook
    let token = format!("wh-{}", unique("tok"));
    let mut carol = Ua::udp("carol", &proxy);
    register_token(&mut carol, &token);
    fall_asleep();
    let inv2 = alice.invite("carol", "");
    alice.expect_response(&inv2.call_id, "INVITE", "100", |c| c == 100);
    let push = expect_push(&hook, "call push");
    assert_eq!(push["event"], "call", "{push}");
    let mid = scrape(admin);
    assert_eq!(val(&mid, "sipwake_parked_calls"), 1.0, "the call waits");
    assert_eq!(val(&mid, "sipwake_calls_in_setup"), 1.0, "the parked call");
    assert_eq!(val(&mid, "sipwake_dialogs"), 0.0, "bob's call has ended");
    let (mut woken, got2) = wake(&proxy, "carol", &token, &push, &inv2.call_id);
    answer_and_hang_up(&mut alice, &inv2, &mut woken, &got2);

    let m1 = scrape(admin);
    let d = |k: &str| delta(&m0, &m1, k);
    assert!(d("sipwake_sip_requests_total{method=\"REGISTER\"}") >= 3.0);
    assert!(d("sipwake_sip_requests_total{method=\"INVITE\"}") >= 2.0);
    assert!(d("sipwake_sip_requests_total{method=\"ACK\"}") >= 2.0);
    assert!(d("sipwake_sip_requests_total{method=\"BYE\"}") >= 2.0);
    assert!(d("sipwake_registrations_total{result=\"ok\"}") >= 3.0);
    // 200s to 3 REGISTERs, 2 INVITEs and 2 BYEs at least; 100 and 180 for the calls
    assert!(d("sipwake_sip_responses_sent_total{class=\"2xx\"}") >= 7.0);
    assert!(d("sipwake_sip_responses_sent_total{class=\"1xx\"}") >= 4.0);
    assert!(d("sipwake_sip_responses_received_total{class=\"2xx\"}") >= 4.0);
    assert!(d("sipwake_sip_responses_received_total{class=\"1xx\"}") >= 2.0);
    assert_eq!(
        d("sipwake_pushes_total{kind=\"call\",outcome=\"sent\",provider=\"webhook\"}"),
        1.0
    );
    assert_eq!(d("sipwake_wake_seconds_count"), 1.0);
    assert!(d("sipwake_wake_seconds_sum") > 0.0);
    // one call answered at once (bob), one by a woken phone (carol)
    assert_eq!(d("sipwake_calls_total{outcome=\"answered\"}"), 1.0);
    assert_eq!(d("sipwake_calls_total{outcome=\"woken\"}"), 1.0);
    assert_eq!(d("sipwake_calls_total{outcome=\"push_timeout\"}"), 0.0);
    assert_eq!(d("sipwake_qualify_answered_total"), 0.0);
    assert!(d("sipwake_store_commit_seconds_count") >= 3.0);
    assert!(d("sipwake_store_commits_total{result=\"ok\"}") >= 3.0);
    assert_eq!(val(&m1, "sipwake_bindings"), 2.0, "bob and carol");
    assert_eq!(val(&m1, "sipwake_parked_calls"), 0.0);
    assert_eq!(val(&m1, "sipwake_dialogs"), 0.0, "both calls hung up");
    assert_eq!(val(&m1, "sipwake_calls_in_setup"), 0.0);
    let body = get(admin, "/metrics").body;
    assert!(
        !body.contains(&token[3..]),
        "no push token in /metrics: {body}"
    );
}

#[test]
fn registrations_calls_and_delete() {
    let hook = hook();
    let (proxy, admin) = start("admin-regs", &hook, &[("STORE__BACKEND", "sqlite")]);
    let token = format!("0123456789abcdef{}", unique("tk"));
    let mut alice = Ua::udp("alice", &proxy);
    register_token(&mut alice, &token);
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);

    let all = get(admin, "/registrations").json();
    assert_eq!(all["total"], 2, "{all:#}");
    let r = get(admin, "/registrations?aor=alice@example.com");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.body.contains(&token), "token shown whole: {}", r.body);
    let v = r.json();
    assert_eq!(v["total"], 1, "{v:#}");
    let b = &v["bindings"][0];
    assert_eq!(b["aor"], "alice@example.com", "{v:#}");
    assert_eq!(b["push"]["provider"], "webhook", "{v:#}");
    assert_eq!(b["push"]["token"], "01234567…", "{v:#}");
    assert_eq!(
        b["contact"].as_str().map(uri_hostport),
        Some(uri_hostport(&alice.contact_uri())),
        "{v:#}"
    );
    assert!(
        b["expires_in"]
            .as_u64()
            .is_some_and(|e| e > 500 && e <= 600),
        "{v:#}"
    );
    assert!(
        b["flow"].is_string() && b["last_register_ms"].is_u64(),
        "{v:#}"
    );
    // a bare user name finds the AOR too; paging bounds the list
    assert_eq!(get(admin, "/registrations?aor=alice").json()["total"], 1);
    let page = get(admin, "/registrations?limit=1&offset=1").json();
    assert_eq!(
        (
            page["total"].as_u64(),
            page["bindings"].as_array().map(Vec::len)
        ),
        (Some(2), Some(1)),
        "{page:#}"
    );

    // a call parked for the sleeping phone shows in /calls; one ringing at bob too
    fall_asleep();
    let mut caller = Ua::udp("carol", &proxy);
    let parked = caller.invite("alice", "");
    caller.expect_response(&parked.call_id, "INVITE", "100", |c| c == 100);
    expect_push(&hook, "call push");
    let ringing = caller.invite("bob", "");
    let at_bob = bob.expect_request("INVITE", Some(&ringing.call_id));
    let bob_tag = tag();
    bob.reply(&at_bob, 180, "Ringing", Some(&bob_tag));
    caller.expect_response(&ringing.call_id, "INVITE", "180", |c| c == 180);
    let calls = get(admin, "/calls").json();
    assert_eq!(calls["total"], 2, "{calls:#}");
    assert_eq!(calls["parked"], 1, "{calls:#}");
    let list = calls["calls"].as_array().unwrap();
    let find = |cid: &str| {
        list.iter()
            .find(|c| c["call_id"] == cid)
            .unwrap_or_else(|| panic!("call {cid} not in /calls: {calls:#}"))
    };
    let p = find(&parked.call_id);
    assert_eq!(p["state"], "parked", "{calls:#}");
    assert_eq!(p["aor"], "alice@example.com", "{calls:#}");
    assert!(p["to"].as_str().unwrap().contains("alice@example.com"));
    assert!(p["from"].as_str().unwrap().contains("carol@example.com"));
    assert!(p["age_ms"].is_u64());
    assert_eq!(find(&ringing.call_id)["state"], "ringing", "{calls:#}");
    caller.cancel(&parked);
    let fin = caller.expect_response(&parked.call_id, "INVITE", "487", |c| c == 487);
    caller.ack_non2xx(&parked, &fin);
    assert_eq!(expect_push(&hook, "cancel notice")["event"], "cancel");
    // the notice is counted once the webhook's answer is back
    let cancel = "sipwake_pushes_total{kind=\"cancel\",outcome=\"sent\",provider=\"webhook\"}";
    let deadline = std::time::Instant::now() + WAIT;
    while val(&scrape(admin), cancel) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "cancel notice not counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    caller.cancel(&ringing);
    let cancelled = bob.expect_request("CANCEL", Some(&ringing.call_id));
    bob.reply(&cancelled, 200, "OK", None);
    bob.reply(&at_bob, 487, "Request Terminated", Some(&bob_tag));
    let fin = caller.expect_response(&ringing.call_id, "INVITE", "487", |c| c == 487);
    caller.ack_non2xx(&ringing, &fin);

    // DELETE removes alice's binding (and only hers); her calls then get 480
    let del = http(admin, "DELETE", "/registrations/alice@example.com", None);
    assert_eq!(del.status, 204, "{del:?}");
    assert_eq!(
        get(admin, "/registrations?aor=alice@example.com").json()["total"],
        0
    );
    assert_eq!(get(admin, "/registrations").json()["total"], 1);
    let again = http(admin, "DELETE", "/registrations/alice@example.com", None);
    assert_eq!(again.status, 404, "{again:?}");
    let inv = caller.invite("alice", "");
    let fin = caller.expect_final(&inv.call_id, "INVITE");
    assert_eq!(fin.status(), Some(480), "{fin:?}");
    if let (Some(p), _) = hook.next_at("/push", Duration::from_millis(300)) {
        panic!("no push after DELETE: {}", p.text());
    }
}

#[test]
fn push_test_reports_each_provider_answer() {
    const KEY_ID: &str = "KEYID12345";
    const TEAM: &str = "ABCDE12345";
    let dir: PathBuf = temp_dir("admin-apns");
    let pki = Pki::new();
    let key = SigningKey::new();
    let apns = MockApns::start(&pki);
    let hook = hook();
    let (proxy, admin) = start(
        "admin-push-test",
        &hook,
        &[
            (
                "PUSH__APNS__KEY_FILE",
                key.write(&dir, KEY_ID).to_str().unwrap(),
            ),
            ("PUSH__APNS__KEY_ID", KEY_ID),
            ("PUSH__APNS__TEAM_ID", TEAM),
            ("PUSH__APNS__BUNDLE_ID", "com.example.bundle"),
            ("PUSH__APNS__PRODUCTION_URL", &apns.url()),
            ("PUSH__APNS__SANDBOX_URL", &apns.url()),
            ("PUSH__APNS__CA_FILE", pki.write_ca(&dir).to_str().unwrap()),
        ],
    );
    // one webhook device, one iPhone (RFC 8599), one plain binding
    let hook_token = format!("wh-{}", unique("tok"));
    let mut phone = Ua::udp("alice", &proxy);
    register_token(&mut phone, &hook_token);
    let voip: String = (0..4u64)
        .map(|i| format!("{:016x}", 0xabcd_0000 + i))
        .collect();
    let mut iphone = Ua::udp("alice", &proxy);
    let contact = format!(
        "<{};pn-provider=apns;pn-prid={voip};pn-param={TEAM}.com.example.app.voip>",
        iphone.contact_uri()
    );
    assert_eq!(
        register_raw(&mut iphone, &contact, "", 600).status(),
        Some(200)
    );
    let mut desk = Ua::udp("alice", &proxy);
    desk.register(600);

    let r = http(admin, "POST", "/push-test/alice", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        !r.body.contains(&voip) && !r.body.contains(&hook_token),
        "tokens shown whole: {}",
        r.body
    );
    let v = r.json();
    let devices = v["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 3, "{v:#}");
    let by = |p: &str| {
        devices
            .iter()
            .find(|d| d["provider"] == p)
            .unwrap_or_else(|| panic!("no {p} device: {v:#}"))
    };
    assert_eq!(by("webhook")["result"], "sent", "{v:#}");
    assert_eq!(by("apns")["result"], "sent", "{v:#}");
    assert_eq!(by("apns")["token"], format!("{}…", &voip[..8]), "{v:#}");
    assert!(
        devices.iter().any(|d| d["result"] == "no_push_token"),
        "{v:#}"
    );

    // the webhook got a call-shaped document marked as a test
    let doc = expect_push(&hook, "test push");
    assert_eq!(doc["event"], "call", "{doc}");
    assert_eq!(doc["test"], true, "{doc}");
    assert_eq!(doc["callerName"], "sipwake push test", "{doc}");
    assert_eq!(doc["token"], hook_token.as_str(), "{doc}");
    // APNs got a full VoIP call push (PushKit demands one)
    let seen = apns.expect_post("test push", WAIT);
    assert_eq!(seen.header("apns-push-type"), Some("voip"), "{seen:?}");
    assert!(seen.path.ends_with(&voip), "{seen:?}");
    let body = seen.json();
    assert_eq!(body["aps"]["callerName"], "sipwake push test", "{body}");
    assert!(body["callUUID"].is_string(), "{body}");

    // provider refusals come back per device
    hook.answer_next("/push", 403, "{}");
    apns.answer_next(400, r#"{"reason":"BadDeviceToken"}"#);
    let v = http(admin, "POST", "/push-test/alice@example.com", None).json();
    let devices = v["devices"].as_array().expect("devices");
    let by = |p: &str| devices.iter().find(|d| d["provider"] == p).unwrap();
    assert_eq!(by("webhook")["result"], "failed", "{v:#}");
    assert!(
        by("webhook")["detail"].as_str().unwrap().contains("403"),
        "{v:#}"
    );
    assert_eq!(by("apns")["result"], "failed", "{v:#}");
    assert!(
        by("apns")["detail"]
            .as_str()
            .unwrap()
            .contains("BadDeviceToken"),
        "{v:#}"
    );
    let m = scrape(admin);
    assert_eq!(
        val(
            &m,
            "sipwake_pushes_total{kind=\"test\",outcome=\"sent\",provider=\"apns\"}"
        ),
        1.0
    );
    assert_eq!(
        val(
            &m,
            "sipwake_pushes_total{kind=\"test\",outcome=\"failed\",provider=\"webhook\"}"
        ),
        1.0
    );
    assert_eq!(http(admin, "POST", "/push-test/nobody", None).status, 404);
}

#[test]
fn bearer_token_is_enforced() {
    let hook = hook();
    let secret = "s3cret-admin-token-0123456789";
    let (proxy, admin) = start("admin-token", &hook, &[("ADMIN__TOKEN", secret)]);
    let mut bob = Ua::udp("bob", &proxy);
    bob.register(600);
    // healthz stays open for probes
    assert_eq!(get(admin, "/healthz").status, 200);
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/registrations"),
        ("GET", "/calls"),
        ("DELETE", "/registrations/bob"),
        ("POST", "/push-test/bob"),
    ] {
        let r = http(admin, method, path, None);
        assert_eq!(r.status, 401, "{method} {path} without a token: {r:?}");
        assert!(
            r.headers
                .get("www-authenticate")
                .is_some_and(|w| w.starts_with("Bearer")),
            "{r:?}"
        );
        let wrong = http(
            admin,
            method,
            path,
            Some("Bearer s3cret-admin-token-0123456788"),
        );
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong token");
        assert!(!wrong.body.contains(secret));
    }
    let ok = http(admin, "GET", "/metrics", Some(&format!("Bearer {secret}")));
    assert_eq!(ok.status, 200, "{ok:?}");
    let regs = http(
        admin,
        "GET",
        "/registrations",
        Some(&format!("Bearer {secret}")),
    );
    assert_eq!(regs.json()["total"], 1);
    // the bindings are untouched by the refused DELETE
    assert!(
        !proxy.log_text().contains(secret),
        "the token is never logged"
    );
}
