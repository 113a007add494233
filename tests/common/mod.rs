//! Shared helpers for the integration tests: start and stop the `sipwake` binary on
//! loopback ports, and a small SIP user agent over UDP and TCP built on blocking std
//! sockets (no async runtime).
//!
//! Messages are built as text and parsed with simple string operations; that is on
//! purpose: the tests should not share a parser with the code under test.

#![allow(dead_code)]

pub mod mock_apns;
pub mod mock_http;
pub mod push_phone;
pub mod tls_ua;

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

// ---------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------

/// How to start sipwake: environment overrides on top of test defaults (memory store,
/// every domain local, log level warn, UDP and TCP on a free loopback port).
pub struct ProxyBuilder {
    name: String,
    env: Vec<(String, String)>,
    port: Option<u16>,
    args: Vec<String>,
    unset: Vec<String>,
}

impl ProxyBuilder {
    /// A builder; `name` names the temp directory (handy when reading logs).
    pub fn new(name: &str) -> ProxyBuilder {
        ProxyBuilder {
            name: name.to_owned(),
            env: Vec::new(),
            port: None,
            args: Vec::new(),
            unset: Vec::new(),
        }
    }

    /// Sets `SIPWAKE__<key>` (e.g. `env("SIP__T1_MS", "100")`); also accepts the full
    /// variable name.
    pub fn env(mut self, key: &str, value: &str) -> ProxyBuilder {
        let key = if key.starts_with("SIPWAKE") {
            key.to_owned()
        } else {
            format!("SIPWAKE__{key}")
        };
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.to_owned()));
        self
    }

    /// Uses the SQLite store in the test directory.
    pub fn sqlite(self) -> ProxyBuilder {
        self.env("STORE__BACKEND", "sqlite")
    }

    /// Listens on this port instead of a free one.
    pub fn port(mut self, port: u16) -> ProxyBuilder {
        self.port = Some(port);
        self
    }

    /// Passes `arg` on the command line (e.g. `--config`, then the file).
    pub fn arg(mut self, arg: &str) -> ProxyBuilder {
        self.args.push(arg.to_owned());
        self
    }

    /// Removes a variable the harness sets by default (`LOG__LEVEL`, or a full name
    /// such as `SIPWAKE_LOG`), so a `--config` file decides that key.
    pub fn unset(mut self, key: &str) -> ProxyBuilder {
        let key = if key.starts_with("SIPWAKE") {
            key.to_owned()
        } else {
            format!("SIPWAKE__{key}")
        };
        self.env.retain(|(k, _)| *k != key);
        self.unset.push(key);
        self
    }

    /// Starts the binary and waits until it answers an OPTIONS over UDP.
    pub fn start(self) -> Proxy {
        let dir = temp_dir(&self.name);
        let fixed = self.port.is_some();
        let mut proxy = Proxy {
            child: None,
            port: self.port.unwrap_or_else(free_port),
            dir: dir.clone(),
            log: dir.join("sipwake.log"),
            env: self.env,
            starts: 0,
            args: self.args,
            unset: self.unset,
        };
        for attempt in 0..5 {
            match proxy.spawn_and_wait() {
                Ok(()) => return proxy,
                Err(why) if !fixed && attempt < 4 && why.contains("listen") => {
                    // Someone took the port between our probe and sipwake's bind.
                    proxy.port = free_port();
                }
                Err(why) => panic!(
                    "sipwake did not start: {why}\n--- log {} ---\n{}",
                    proxy.log.display(),
                    proxy.log_text()
                ),
            }
        }
        unreachable!()
    }
}

/// A running `sipwake`; killed (SIGKILL) when dropped. When the test failed, the tail
/// of its log is printed.
pub struct Proxy {
    child: Option<Child>,
    /// The UDP and TCP port it listens on (127.0.0.1).
    pub port: u16,
    /// Its working directory (database, log).
    pub dir: PathBuf,
    /// Its standard error.
    pub log: PathBuf,
    env: Vec<(String, String)>,
    starts: u32,
    args: Vec<String>,
    unset: Vec<String>,
}

impl Proxy {
    /// Started with the test defaults.
    pub fn start(name: &str) -> Proxy {
        ProxyBuilder::new(name).start()
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `127.0.0.1:port` as text.
    pub fn hostport(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open {}: {e}", self.log.display()))?;
        self.starts += 1;
        let mut cmd = Command::new(SIPWAKE);
        for (k, _) in std::env::vars() {
            if k.starts_with("SIPWAKE") {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .env("SIPWAKE__SIP__LISTEN", self.hostport())
            .env("SIPWAKE__SIP__TRANSPORTS", "udp,tcp")
            .env("SIPWAKE__STORE__BACKEND", "memory")
            .env(
                "SIPWAKE__STORE__PATH",
                self.dir.join("sipwake.db").to_string_lossy().as_ref(),
            )
            .env("SIPWAKE__PROXY__DOMAINS", "")
            .env("SIPWAKE__UPSTREAM__URI", "")
            .env("SIPWAKE__LOG__LEVEL", "warn")
            .env("SIPWAKE__ADMIN__LISTEN", "");
        if let Ok(level) = std::env::var("SIPWAKE_TEST_LOG") {
            cmd.env("SIPWAKE_LOG", level);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.unset {
            cmd.env_remove(k);
        }
        cmd.args(&self.args);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {SIPWAKE}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                let text = self.log_text();
                let listen = text.to_lowercase().contains("listen")
                    || text.to_lowercase().contains("address already in use");
                return Err(format!(
                    "exited with {status} before answering OPTIONS{}",
                    if listen { " (cannot listen)" } else { "" }
                ));
            }
            if self.ping_once(Duration::from_millis(200)).is_some() {
                return Ok(());
            }
        }
        Err(format!(
            "no answer to OPTIONS on udp {} within 20 s",
            self.hostport()
        ))
    }

    /// Sends one OPTIONS over UDP from a fresh socket and returns the first response.
    pub fn ping_once(&self, wait: Duration) -> Option<Msg> {
        let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
        let local = sock.local_addr().ok()?;
        let cid = call_id();
        let req = format!(
            "OPTIONS sip:{hp} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={b};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:probe@{local}>;tag={t}\r\n\
             To: <sip:{hp}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n",
            hp = self.hostport(),
            b = branch(),
            t = tag(),
        );
        sock.send_to(req.as_bytes(), self.addr()).ok()?;
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(m) = Msg::parse(&buf[..n], from, false) {
                        if m.status().is_some() && m.call_id() == cid {
                            return Some(m);
                        }
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Pings with retransmissions (up to about 3 s); the response, if any.
    pub fn ping(&self) -> Option<Msg> {
        for wait in [500, 1000, 1500] {
            if let Some(m) = self.ping_once(Duration::from_millis(wait)) {
                return Some(m);
            }
        }
        None
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// The exit status, if it exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal by name (`TERM`, `HUP`, `INT`) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("sipwake is not running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed: {status}");
    }

    /// Waits up to `limit` for the process to exit by itself; its status, or None if
    /// it still runs (it is left running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` until the log contains `needle`; true if it does.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again with the same settings, port and directory; waits until ready.
    pub fn restart(&mut self) {
        self.kill9();
        let mut last = String::new();
        // The port may need a moment to become free again.
        for _ in 0..10 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "sipwake did not restart: {last}\n--- log ---\n{}",
            self.log_text()
        );
    }

    /// Everything sipwake wrote to stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- sipwake on port {} (started {}x), log {} (last {} lines) ---\n{}\n--- end of log ---",
                self.port,
                self.starts,
                self.log.display(),
                tail.len(),
                tail.join("\n")
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------

/// A received SIP message, parsed with plain string operations.
#[derive(Clone)]
pub struct Msg {
    /// The whole message as received (lossy UTF-8).
    pub raw: String,
    /// Request line or status line.
    pub start: String,
    /// Header name and value, in order, folded lines joined.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// Where it came from.
    pub from: SocketAddr,
    /// Arrived over TCP.
    pub tcp: bool,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} from {}]\n{}",
            if self.tcp { "tcp" } else { "udp" },
            self.from,
            self.raw
        )
    }
}

fn full_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let full = match lower.as_str() {
        "i" => "call-id",
        "m" => "contact",
        "f" => "from",
        "t" => "to",
        "v" => "via",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        "s" => "subject",
        "e" => "content-encoding",
        "o" => "event",
        "r" => "refer-to",
        _ => return lower,
    };
    full.to_owned()
}

/// Splits a header value on commas outside quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut cur = String::new();
    for ch in value.chars() {
        if escaped {
            escaped = false;
            cur.push(ch);
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_owned());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// The URI of a name-addr or addr-spec header value (`"A" <sip:x>;tag=1` → `sip:x`).
pub fn uri_of(value: &str) -> String {
    if let Some(start) = value.find('<') {
        let rest = &value[start + 1..];
        return rest[..rest.find('>').unwrap_or(rest.len())]
            .trim()
            .to_owned();
    }
    let v = value.trim();
    v[..v.find(';').unwrap_or(v.len())].trim().to_owned()
}

/// A header parameter (outside `<>`), e.g. `tag` or `expires`; `Some("")` for a
/// parameter without value.
pub fn header_param(value: &str, name: &str) -> Option<String> {
    let after = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params_of(after, name)
}

/// A URI parameter, e.g. `transport` or `lr`.
pub fn uri_param(uri: &str, name: &str) -> Option<String> {
    let uri = &uri[..uri.find('?').unwrap_or(uri.len())];
    match uri.find(';') {
        Some(i) => params_of(&uri[i..], name),
        None => None,
    }
}

fn params_of(text: &str, name: &str) -> Option<String> {
    for p in text.split(';').skip(1) {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (p.trim(), ""),
        };
        if k.eq_ignore_ascii_case(name) {
            return Some(v.trim_matches('"').to_owned());
        }
    }
    None
}

/// Host and port of a SIP URI (`sip:user@host:port;params`), port 5060 when absent.
pub fn uri_hostport(uri: &str) -> (String, u16) {
    let rest = uri
        .trim()
        .strip_prefix("sip:")
        .or_else(|| uri.trim().strip_prefix("sips:"))
        .unwrap_or(uri.trim());
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let hostport = match rest.rfind('@') {
        Some(i) => &rest[i + 1..],
        None => rest,
    };
    if let Some(stripped) = hostport.strip_prefix('[') {
        let close = stripped.find(']').unwrap_or(stripped.len());
        let host = format!("[{}]", &stripped[..close]);
        let port = stripped[close..]
            .strip_prefix("]:")
            .and_then(|p| p.parse().ok())
            .unwrap_or(5060);
        return (host, port);
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(5060)),
        None => (hostport.to_owned(), 5060),
    }
}

/// The socket address a URI names, when its host is an IP literal.
pub fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let (host, port) = uri_hostport(uri);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

impl Msg {
    /// Parses one message; `None` when it does not look like SIP at all.
    pub fn parse(data: &[u8], from: SocketAddr, tcp: bool) -> Option<Msg> {
        let raw = String::from_utf8_lossy(data).into_owned();
        let trimmed = raw.trim_start_matches(['\r', '\n']);
        let (head, body) = match trimmed.find("\r\n\r\n") {
            Some(i) => (&trimmed[..i], &trimmed[i + 4..]),
            None => (trimmed.trim_end(), ""),
        };
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_owned();
        if !(start.starts_with("SIP/2.0 ") || start.ends_with(" SIP/2.0")) {
            return None;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((full_name(k.trim()), v.trim().to_owned()));
            }
        }
        Some(Msg {
            raw: raw.clone(),
            start,
            headers,
            body: body.to_owned(),
            from,
            tcp,
        })
    }

    /// True for a request.
    pub fn is_request(&self) -> bool {
        !self.start.starts_with("SIP/2.0 ")
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.is_request() {
            self.start.split(' ').next()
        } else {
            None
        }
    }

    /// The Request-URI of a request.
    pub fn ruri(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        if self.is_request() {
            None
        } else {
            self.start.split(' ').nth(1).and_then(|c| c.parse().ok())
        }
    }

    /// The reason phrase of a response.
    pub fn reason(&self) -> &str {
        self.start.splitn(3, ' ').nth(2).unwrap_or("")
    }

    /// First value of a header (compact forms understood), not split on commas.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = full_name(name);
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every line of a header, not split on commas.
    pub fn header_lines(&self, name: &str) -> Vec<&str> {
        let name = full_name(name);
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every value of a list header (Via, Route, Record-Route, Contact), in order,
    /// split on commas.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.header_lines(name)
            .into_iter()
            .flat_map(split_list)
            .collect()
    }

    /// Call-ID.
    pub fn call_id(&self) -> &str {
        self.header("call-id").unwrap_or("")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> (u32, String) {
        let v = self.header("cseq").unwrap_or("");
        let mut it = v.split_whitespace();
        let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (n, it.next().unwrap_or("").to_owned())
    }

    /// The method in CSeq.
    pub fn cseq_method(&self) -> String {
        self.cseq().1
    }

    /// To tag.
    pub fn to_tag(&self) -> Option<String> {
        self.header("to").and_then(|v| header_param(v, "tag"))
    }

    /// From tag.
    pub fn tag_from(&self) -> Option<String> {
        self.header("from").and_then(|v| header_param(v, "tag"))
    }

    /// Branch of the topmost Via.
    pub fn top_branch(&self) -> Option<String> {
        self.values("via")
            .first()
            .and_then(|v| params_of(v, "branch"))
    }

    /// Max-Forwards as a number.
    pub fn max_forwards(&self) -> Option<u32> {
        self.header("max-forwards")
            .and_then(|v| v.trim().parse().ok())
    }

    /// Contact values (each as sent, with its header parameters).
    pub fn contacts(&self) -> Vec<String> {
        self.values("contact")
    }

    /// The URI of the first Contact.
    pub fn contact_uri(&self) -> Option<String> {
        self.contacts().first().map(|c| uri_of(c))
    }

    /// One-line summary for failure messages.
    pub fn summary(&self) -> String {
        format!(
            "{} [{} {}] via {}",
            self.start,
            self.cseq().0,
            self.cseq().1,
            self.from
        )
    }
}

// ---------------------------------------------------------------------------------
// Message building
// ---------------------------------------------------------------------------------

/// A minimal SDP offer/answer body.
pub const SDP: &str = "v=0\r\n\
o=- 1 1 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// A REGISTER as text. `contact` None gives the query form (no Contact).
#[allow(clippy::too_many_arguments)]
pub fn build_register(
    transport: &str,
    via_hostport: &str,
    user: &str,
    domain: &str,
    contact: Option<&str>,
    expires: Option<u32>,
    call_id: &str,
    cseq: u32,
    branch: &str,
    from_tag: &str,
) -> String {
    let mut s = format!(
        "REGISTER sip:{domain} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {via_hostport};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{domain}>;tag={from_tag}\r\n\
         To: <sip:{user}@{domain}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n"
    );
    if let Some(c) = contact {
        s.push_str(&format!("Contact: {c}\r\n"));
    }
    if let Some(e) = expires {
        s.push_str(&format!("Expires: {e}\r\n"));
    }
    s.push_str("User-Agent: sipwake-tests\r\nContent-Length: 0\r\n\r\n");
    s
}

/// Puts `extra` header lines (each ending in CRLF) before the blank line, and fixes
/// Content-Length for `body`.
pub fn with_body(head_without_length: &str, extra: &str, body: &str) -> String {
    format!(
        "{head_without_length}{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

// ---------------------------------------------------------------------------------
// The test user agent
// ---------------------------------------------------------------------------------

/// Transport of a test UA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tp {
    /// UDP.
    Udp,
    /// TCP (one connection to the proxy).
    Tcp,
    /// TLS (one connection to the proxy's TLS listener).
    Tls,
}

impl Tp {
    /// As in a Via header.
    pub fn via(self) -> &'static str {
        match self {
            Tp::Udp => "UDP",
            Tp::Tcp => "TCP",
            Tp::Tls => "TLS",
        }
    }
}

/// An INVITE we sent, with what is needed to CANCEL or ACK it.
#[derive(Clone, Debug)]
pub struct Invite {
    /// The request as sent.
    pub text: String,
    /// Request-URI.
    pub ruri: String,
    /// Call-ID.
    pub call_id: String,
    /// From header value (with tag).
    pub from: String,
    /// To header value (no tag).
    pub to: String,
    /// From tag.
    pub from_tag: String,
    /// Top Via branch.
    pub branch: String,
    /// CSeq number.
    pub cseq: u32,
    /// Route header lines sent with it (none normally).
    pub route: Vec<String>,
}

/// One side of a dialog, RFC 3261 §12.
#[derive(Clone, Debug)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our URI (From of our requests), without tag.
    pub local_uri: String,
    /// Our tag.
    pub local_tag: String,
    /// Peer URI, without tag.
    pub remote_uri: String,
    /// Peer tag.
    pub remote_tag: String,
    /// Peer's Contact URI: the Request-URI of our in-dialog requests.
    pub remote_target: String,
    /// Route set (URIs, in the order of our Route headers).
    pub route_set: Vec<String>,
    /// Last CSeq we used.
    pub local_cseq: u32,
}

impl Dialog {
    /// UAC side, from our INVITE and the 2xx (or 1xx with tag) that answered it: the
    /// route set is the response's Record-Route reversed.
    pub fn uac(inv: &Invite, resp: &Msg) -> Dialog {
        let mut route_set: Vec<String> = resp
            .values("record-route")
            .iter()
            .map(|v| uri_of(v))
            .collect();
        route_set.reverse();
        Dialog {
            call_id: inv.call_id.clone(),
            local_uri: uri_of(&inv.from),
            local_tag: inv.from_tag.clone(),
            remote_uri: uri_of(&inv.to),
            remote_tag: resp
                .to_tag()
                .unwrap_or_else(|| panic!("response without To tag: {resp:?}")),
            remote_target: resp
                .contact_uri()
                .unwrap_or_else(|| panic!("2xx without Contact: {resp:?}")),
            route_set,
            local_cseq: inv.cseq,
        }
    }

    /// UAS side, from the INVITE we received and the tag we answer with: the route set
    /// is the INVITE's Record-Route as is.
    pub fn uas(req: &Msg, local_tag: &str) -> Dialog {
        Dialog {
            call_id: req.call_id().to_owned(),
            local_uri: uri_of(req.header("to").unwrap_or("")),
            local_tag: local_tag.to_owned(),
            remote_uri: uri_of(req.header("from").unwrap_or("")),
            remote_tag: req.tag_from().unwrap_or_default(),
            remote_target: req
                .contact_uri()
                .unwrap_or_else(|| panic!("INVITE without Contact: {req:?}")),
            route_set: req
                .values("record-route")
                .iter()
                .map(|v| uri_of(v))
                .collect(),
            local_cseq: 100,
        }
    }

    /// Where in-dialog requests go: the first Route (loose routing) or else the remote
    /// target; transport from its `transport` parameter.
    pub fn next_hop(&self) -> (SocketAddr, Tp) {
        let uri = self.route_set.first().unwrap_or(&self.remote_target);
        let addr = uri_addr(uri)
            .unwrap_or_else(|| panic!("next hop {uri} is not an IP address (dialog {self:?})"));
        let tp = match uri_param(uri, "transport") {
            Some(t) if t.eq_ignore_ascii_case("tcp") => Tp::Tcp,
            Some(t) if t.eq_ignore_ascii_case("tls") => Tp::Tls,
            _ if uri.starts_with("sips:") => Tp::Tls,
            _ => Tp::Udp,
        };
        (addr, tp)
    }
}

/// A simulated phone: one UDP socket, or one TCP connection to the proxy.
pub struct Ua {
    /// User part of the AOR.
    pub user: String,
    /// Domain of the AOR.
    pub domain: String,
    /// Transport.
    pub tp: Tp,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
    tcp_buf: Vec<u8>,
    tcp_closed: bool,
    /// Local socket address.
    pub local: SocketAddr,
    /// The proxy.
    pub proxy: SocketAddr,
    /// host:port written in Contact (the real address, or a "private" one behind NAT).
    pub contact_hostport: String,
    /// host:port written in Via.
    pub via_hostport: String,
    /// Messages received but not yet consumed by an `expect`.
    pub stash: VecDeque<Msg>,
    /// Every message received, in order.
    pub history: Vec<Msg>,
    /// Call-ID used for this UA's registrations.
    pub reg_call_id: String,
    reg_cseq: u32,
    /// Keep-alive bytes (CRLF) received on TCP.
    pub pongs: usize,
    /// The TLS session of a TLS UA (over its own TCP connection).
    tls: Option<Box<tls_ua::TlsStream>>,
}

/// The domain of test AORs; every domain is local when `proxy.domains` is empty.
pub const DOMAIN: &str = "example.com";

impl Ua {
    /// A UA on a fresh UDP socket on 127.0.0.1.
    pub fn udp(user: &str, proxy: &Proxy) -> Ua {
        Ua::udp_at(user, proxy.addr(), "127.0.0.1:0")
    }

    /// A UA on a UDP socket bound to `bind`, talking to `proxy`.
    pub fn udp_at(user: &str, proxy: SocketAddr, bind: &str) -> Ua {
        let sock = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let local = sock.local_addr().unwrap();
        Ua::new(user, Tp::Udp, Some(sock), None, local, proxy)
    }

    /// A UA behind a "NAT": its socket is on 127.0.0.1 but its Via and Contact name
    /// `private` (e.g. `127.0.0.9:5999`).
    pub fn udp_nat(user: &str, proxy: &Proxy, private: &str) -> Ua {
        let mut ua = Ua::udp(user, proxy);
        ua.contact_hostport = private.to_owned();
        ua.via_hostport = private.to_owned();
        ua
    }

    /// A UA with one TCP connection to the proxy.
    pub fn tcp(user: &str, proxy: &Proxy) -> Ua {
        let stream = TcpStream::connect_timeout(&proxy.addr(), WAIT)
            .unwrap_or_else(|e| panic!("connect tcp {}: {e}", proxy.addr()));
        stream.set_nodelay(true).ok();
        let local = stream.local_addr().unwrap();
        Ua::new(user, Tp::Tcp, None, Some(stream), local, proxy.addr())
    }

    fn new(
        user: &str,
        tp: Tp,
        udp: Option<UdpSocket>,
        tcp: Option<TcpStream>,
        local: SocketAddr,
        proxy: SocketAddr,
    ) -> Ua {
        Ua {
            user: user.to_owned(),
            domain: DOMAIN.to_owned(),
            tp,
            udp,
            tcp,
            tcp_buf: Vec::new(),
            tcp_closed: false,
            local,
            proxy,
            contact_hostport: local.to_string(),
            via_hostport: local.to_string(),
            stash: VecDeque::new(),
            history: Vec::new(),
            reg_call_id: call_id(),
            reg_cseq: 0,
            pongs: 0,
            tls: None,
        }
    }

    /// The UDP socket of a UDP UA.
    pub fn udp_socket(&self) -> &UdpSocket {
        self.udp.as_ref().expect("not a UDP UA")
    }

    /// `sip:user@domain`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    /// Our Contact URI.
    pub fn contact_uri(&self) -> String {
        match self.tp {
            Tp::Udp => format!("sip:{}@{}", self.user, self.contact_hostport),
            Tp::Tcp => format!("sip:{}@{};transport=tcp", self.user, self.contact_hostport),
            Tp::Tls => format!("sip:{}@{};transport=tls", self.user, self.contact_hostport),
        }
    }

    /// A Via header value with a fresh or given branch.
    pub fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.tp.via(),
            self.via_hostport
        )
    }

    // --- sending ----------------------------------------------------------------

    /// Sends bytes to the proxy over this UA's transport.
    pub fn send_raw(&mut self, data: &[u8]) {
        let proxy = self.proxy;
        self.send_to(proxy, self.tp, data);
    }

    /// Sends text to the proxy.
    pub fn send(&mut self, text: &str) {
        self.send_raw(text.as_bytes());
    }

    /// Sends to `addr` over `tp`. For TCP, `addr` must be the peer of our connection:
    /// a phone has one connection, and everything must flow through the proxy.
    pub fn send_to(&mut self, addr: SocketAddr, tp: Tp, data: &[u8]) {
        assert_eq!(
            tp, self.tp,
            "{}: asked to send over {tp:?} to {addr}, but this UA only has {:?}",
            self.user, self.tp
        );
        match tp {
            Tp::Udp => {
                self.udp
                    .as_ref()
                    .unwrap()
                    .send_to(data, addr)
                    .unwrap_or_else(|e| panic!("udp send to {addr}: {e}"));
            }
            Tp::Tcp => {
                let s = self.tcp.as_mut().unwrap();
                let peer = s.peer_addr().ok();
                assert_eq!(
                    peer,
                    Some(addr),
                    "{}: next hop {addr} is not the peer of our TCP connection",
                    self.user
                );
                s.write_all(data)
                    .unwrap_or_else(|e| panic!("tcp send to {addr}: {e}"));
            }
            Tp::Tls => self.tls_send(addr, data),
        }
    }

    // --- receiving --------------------------------------------------------------

    /// The next message from the network (not the stash), or None at the deadline.
    pub fn recv_until(&mut self, deadline: Instant) -> Option<Msg> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let left = left.max(Duration::from_millis(1));
            match self.tp {
                Tp::Udp => {
                    let sock = self.udp.as_ref().unwrap();
                    sock.set_read_timeout(Some(left)).unwrap();
                    let mut buf = vec![0u8; 65536];
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if let Some(m) = Msg::parse(&buf[..n], from, false) {
                                self.history.push(m.clone());
                                return Some(m);
                            }
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            return None
                        }
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                        Err(e) => panic!("udp recv: {e}"),
                    }
                }
                Tp::Tcp | Tp::Tls => {
                    if let Some(m) = self.frame_tcp() {
                        self.history.push(m.clone());
                        return Some(m);
                    }
                    if self.tcp_closed {
                        std::thread::sleep(left.min(Duration::from_millis(50)));
                        if Instant::now() >= deadline {
                            return None;
                        }
                        continue;
                    }
                    let mut buf = vec![0u8; 65536];
                    match self.stream_read(&mut buf, left) {
                        Ok(0) => self.tcp_closed = true,
                        Ok(n) => self.tcp_buf.extend_from_slice(&buf[..n]),
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            return None
                        }
                        Err(_) => self.tcp_closed = true,
                    }
                }
            }
        }
    }

    /// One complete message out of the TCP buffer, framed by Content-Length.
    fn frame_tcp(&mut self) -> Option<Msg> {
        while self.tcp_buf.starts_with(b"\r\n") {
            self.tcp_buf.drain(..2);
            self.pongs += 1;
        }
        let end = self.tcp_buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&self.tcp_buf[..end]).into_owned();
        let mut len = 0usize;
        for line in head.split("\r\n").skip(1) {
            if let Some((k, v)) = line.split_once(':') {
                if full_name(k.trim()) == "content-length" {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let total = end + 4 + len;
        if self.tcp_buf.len() < total {
            return None;
        }
        let data: Vec<u8> = self.tcp_buf.drain(..total).collect();
        let from = self.proxy;
        Msg::parse(&data, from, true)
    }

    /// Waits for a message matching `pred`, first among stashed ones; others are
    /// stashed. Panics with `what` and what did arrive on timeout.
    pub fn expect(&mut self, what: &str, wait: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        match self.try_expect(wait, &pred) {
            Some(m) => m,
            None => panic!(
                "{} ({}, {}): timed out after {:?} waiting for {what}; received meanwhile: {:#?}",
                self.user,
                self.tp.via(),
                self.local,
                wait,
                self.stash.iter().map(|m| m.summary()).collect::<Vec<_>>()
            ),
        }
    }

    /// Like `expect` but returns None on timeout.
    pub fn try_expect(&mut self, wait: Duration, pred: impl Fn(&Msg) -> bool) -> Option<Msg> {
        if let Some(i) = self.stash.iter().position(&pred) {
            return self.stash.remove(i);
        }
        let deadline = Instant::now() + wait;
        while let Some(m) = self.recv_until(deadline) {
            if pred(&m) {
                return Some(m);
            }
            self.stash.push_back(m);
            if self.stash.len() > 500 {
                self.stash.pop_front();
            }
        }
        None
    }

    /// Waits for a request with this method (and Call-ID, when given).
    pub fn expect_request(&mut self, method: &str, call_id: Option<&str>) -> Msg {
        let what = format!("a {method} request (Call-ID {call_id:?})");
        self.expect(&what, WAIT, |m| {
            m.method() == Some(method) && call_id.is_none_or(|c| m.call_id() == c)
        })
    }

    /// Waits for a response to (Call-ID, CSeq method) whose status satisfies `code`.
    pub fn expect_response(
        &mut self,
        call_id: &str,
        method: &str,
        what: &str,
        code: impl Fn(u16) -> bool,
    ) -> Msg {
        let desc = format!("{what} to {method} (Call-ID {call_id})");
        self.expect(&desc, WAIT, |m| {
            m.status().is_some_and(&code) && m.call_id() == call_id && m.cseq_method() == method
        })
    }

    /// Waits for the final response to (Call-ID, method).
    pub fn expect_final(&mut self, call_id: &str, method: &str) -> Msg {
        self.expect_response(call_id, method, "a final response", |c| c >= 200)
    }

    /// Asserts that nothing matching `pred` arrives within `wait` (stash included).
    pub fn expect_nothing(&mut self, what: &str, wait: Duration, pred: impl Fn(&Msg) -> bool) {
        if let Some(m) = self.try_expect(wait, &pred) {
            panic!("{}: expected no {what}, got {m:?}", self.user);
        }
    }

    /// Number of received requests with this method (and Call-ID).
    pub fn count_received(&self, method: &str, call_id: &str) -> usize {
        self.history
            .iter()
            .filter(|m| m.method() == Some(method) && m.call_id() == call_id)
            .count()
    }

    // --- registrar ----------------------------------------------------------------

    /// Sends a REGISTER (our registration Call-ID, next CSeq) with the given Contact
    /// header value (None: query) and Expires header; returns its final response.
    pub fn register_with(&mut self, contact: Option<&str>, expires: Option<u32>) -> Msg {
        self.reg_cseq += 1;
        let text = build_register(
            self.tp.via(),
            &self.via_hostport.clone(),
            &self.user.clone(),
            &self.domain.clone(),
            contact,
            expires,
            &self.reg_call_id.clone(),
            self.reg_cseq,
            &branch(),
            &tag(),
        );
        self.send(&text);
        let cid = self.reg_call_id.clone();
        self.expect_final(&cid, "REGISTER")
    }

    /// Registers our own Contact for `expires` seconds and asserts 200.
    pub fn register(&mut self, expires: u32) -> Msg {
        let contact = format!("<{}>", self.contact_uri());
        let resp = self.register_with(Some(&contact), Some(expires));
        assert_eq!(
            resp.status(),
            Some(200),
            "{}: REGISTER of {contact} not accepted: {resp:?}",
            self.user
        );
        resp
    }

    // --- calls --------------------------------------------------------------------

    /// Sends an INVITE for `to_user@domain` through the proxy, with extra header lines.
    pub fn invite(&mut self, to_user: &str, extra: &str) -> Invite {
        let ruri = format!("sip:{to_user}@{}", self.domain);
        self.invite_uri(&ruri, extra)
    }

    /// Sends an INVITE with this Request-URI (To = the same URI).
    pub fn invite_uri(&mut self, ruri: &str, extra: &str) -> Invite {
        let inv = self.build_invite(ruri, extra);
        self.send(&inv.text);
        inv
    }

    /// Builds (does not send) an INVITE with this Request-URI (To = the same URI).
    pub fn build_invite(&self, ruri: &str, extra: &str) -> Invite {
        let cid = call_id();
        let ftag = tag();
        let br = branch();
        let from = format!("<{}>;tag={ftag}", self.aor());
        let to = format!("<{ruri}>");
        let head = format!(
            "INVITE {ruri} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <{contact}>\r\n\
             Content-Type: application/sdp\r\n",
            via = self.via(&br),
            contact = self.contact_uri(),
        );
        let text = with_body(&head, extra, SDP);
        Invite {
            text,
            ruri: ruri.to_owned(),
            call_id: cid,
            from,
            to,
            from_tag: ftag,
            branch: br,
            cseq: 1,
            route: extra
                .split("\r\n")
                .filter(|l| l.to_ascii_lowercase().starts_with("route:"))
                .map(|l| l.to_owned())
                .collect(),
        }
    }

    /// CANCELs an INVITE we sent (same branch, Request-URI, Call-ID, From, To, CSeq).
    pub fn cancel(&mut self, inv: &Invite) {
        let mut text = format!(
            "CANCEL {ruri} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {n} CANCEL\r\n",
            ruri = inv.ruri,
            via = self.via(&inv.branch),
            from = inv.from,
            to = inv.to,
            cid = inv.call_id,
            n = inv.cseq,
        );
        for r in &inv.route {
            text.push_str(r);
            text.push_str("\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        self.send(&text);
    }

    /// ACK for a non-2xx final response: same branch, hop by hop to the proxy.
    pub fn ack_non2xx(&mut self, inv: &Invite, resp: &Msg) {
        let text = format!(
            "ACK {ruri} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {n} ACK\r\n\
             Content-Length: 0\r\n\r\n",
            ruri = inv.ruri,
            via = self.via(&inv.branch),
            from = inv.from,
            to = resp.header("to").unwrap_or(&inv.to),
            cid = inv.call_id,
            n = inv.cseq,
        );
        self.send(&text);
    }

    /// Builds an in-dialog request (new branch) and sends it along the route set;
    /// returns its text. `cseq` None: the next local CSeq.
    pub fn send_in_dialog(&mut self, d: &mut Dialog, method: &str, cseq: Option<u32>) -> String {
        let n = match cseq {
            Some(n) => n,
            None => {
                d.local_cseq += 1;
                d.local_cseq
            }
        };
        let mut text = format!(
            "{method} {target} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n",
            target = d.remote_target,
            via = self.via(&branch()),
        );
        for r in &d.route_set {
            text.push_str(&format!("Route: <{r}>\r\n"));
        }
        text.push_str(&format!(
            "From: <{}>;tag={}\r\n\
             To: <{}>;tag={}\r\n\
             Call-ID: {}\r\n\
             CSeq: {n} {method}\r\n\
             Contact: <{}>\r\n\
             Content-Length: 0\r\n\r\n",
            d.local_uri,
            d.local_tag,
            d.remote_uri,
            d.remote_tag,
            d.call_id,
            self.contact_uri(),
        ));
        let (addr, tp) = d.next_hop();
        self.send_to(addr, tp, text.as_bytes());
        text
    }

    /// ACK for a 2xx: end to end, along the route set, CSeq number of the INVITE.
    pub fn ack_2xx(&mut self, d: &mut Dialog, invite_cseq: u32) {
        self.send_in_dialog(d, "ACK", Some(invite_cseq));
    }

    /// Sends a response to `req` back where it came from (UDP: the address in the top
    /// Via, honouring received/rport; TCP: our connection). `to_tag` is added to To
    /// when To has none. Record-Route is copied for 1xx/2xx to INVITE, and a Contact
    /// added for 101..=299 to INVITE. A 2xx to INVITE carries an SDP answer.
    pub fn reply(&mut self, req: &Msg, code: u16, reason: &str, to_tag: Option<&str>) {
        let text = self.response_text(req, code, reason, to_tag, "");
        self.send_response(req, &text);
    }

    /// The text of a response to `req` (see [`Ua::reply`]); `extra` header lines.
    pub fn response_text(
        &self,
        req: &Msg,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
        extra: &str,
    ) -> String {
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for v in req.header_lines("via") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        let invite = req.method() == Some("INVITE");
        if invite && (101..300).contains(&code) {
            for rr in req.header_lines("record-route") {
                s.push_str(&format!("Record-Route: {rr}\r\n"));
            }
        }
        s.push_str(&format!("From: {}\r\n", req.header("from").unwrap_or("")));
        let to = req.header("to").unwrap_or("");
        match to_tag {
            Some(t) if header_param(to, "tag").is_none() && code > 100 => {
                s.push_str(&format!("To: {to};tag={t}\r\n"))
            }
            _ => s.push_str(&format!("To: {to}\r\n")),
        }
        s.push_str(&format!("Call-ID: {}\r\n", req.call_id()));
        s.push_str(&format!("CSeq: {}\r\n", req.header("cseq").unwrap_or("")));
        if invite && (101..300).contains(&code) {
            s.push_str(&format!("Contact: <{}>\r\n", self.contact_uri()));
        }
        s.push_str(extra);
        if invite && (200..300).contains(&code) {
            s.push_str("Content-Type: application/sdp\r\n");
            s.push_str(&format!("Content-Length: {}\r\n\r\n{SDP}", SDP.len()));
        } else {
            s.push_str("Content-Length: 0\r\n\r\n");
        }
        s
    }

    /// Sends a response text for `req` to where responses to it go.
    pub fn send_response(&mut self, req: &Msg, text: &str) {
        match self.tp {
            Tp::Tcp | Tp::Tls => {
                let peer = self.proxy;
                self.send_to(peer, self.tp, text.as_bytes());
            }
            Tp::Udp => {
                let dest = response_dest(req).unwrap_or(req.from);
                self.send_to(dest, Tp::Udp, text.as_bytes());
            }
        }
    }

    /// Closes the TCP connection (both directions).
    pub fn close(&mut self) {
        if let Some(s) = self.tcp.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.close_tls();
        self.udp = None;
    }
}

/// RFC 3261 §18.2.2 / RFC 3581: where a response to `req` goes over UDP.
pub fn response_dest(req: &Msg) -> Option<SocketAddr> {
    let via = req.values("via").into_iter().next()?;
    let sent_by = via.split_whitespace().nth(1)?.split(';').next()?.trim();
    let (host, port) = uri_hostport(&format!("sip:{sent_by}"));
    let host = header_or_via_param(&via, "received").unwrap_or(host);
    let port = match header_or_via_param(&via, "rport") {
        Some(p) if !p.is_empty() => p.parse().ok()?,
        _ => port,
    };
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, port))
}

fn header_or_via_param(via: &str, name: &str) -> Option<String> {
    params_of(via, name)
}

/// Waits for a child process up to `limit`; kills it when the time is up. Returns the
/// status, or None after a kill.
pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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

// ---------------------------------------------------------------------------------
// Sources other than 127.0.0.1 (flood tests: attacker and honest phone on their own
// loopback addresses)
// ---------------------------------------------------------------------------------

/// A TCP connection to `to` from the local address `bind` (e.g. `127.0.0.2`), which
/// std cannot do on its own.
pub fn tcp_connect_from(bind: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    sock.bind(&SocketAddr::new(bind, 0).into())?;
    sock.connect_timeout(&to.into(), WAIT)?;
    let stream: TcpStream = sock.into();
    stream.set_nodelay(true).ok();
    Ok(stream)
}

impl Ua {
    /// A UA with one TCP connection to the proxy from the local address `bind`.
    pub fn tcp_from(user: &str, proxy: &Proxy, bind: &str) -> Ua {
        let ip: std::net::IpAddr = bind.parse().expect("an IP address");
        let stream = tcp_connect_from(ip, proxy.addr())
            .unwrap_or_else(|e| panic!("connect tcp {} from {bind}: {e}", proxy.addr()));
        let local = stream.local_addr().unwrap();
        Ua::new(user, Tp::Tcp, None, Some(stream), local, proxy.addr())
    }

    /// True once the proxy has closed our TCP connection, waiting up to `wait`;
    /// messages that arrive meanwhile are stashed.
    pub fn wait_tcp_closed(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while !self.tcp_closed && Instant::now() < deadline {
            let step = (Instant::now() + Duration::from_millis(100)).min(deadline);
            if let Some(m) = self.recv_until(step) {
                self.stash.push_back(m);
            }
        }
        self.tcp_closed
    }
}

/// The value of one sample of sipwake's `/metrics` at `admin` (the whole line's name
/// and labels as written, e.g. `sipwake_calls_total{outcome="woken"}`); 0 when absent.
pub fn metric(admin: SocketAddr, key: &str) -> f64 {
    let mut s = TcpStream::connect_timeout(&admin, WAIT)
        .unwrap_or_else(|e| panic!("connect to the admin API at {admin}: {e}"));
    s.set_read_timeout(Some(WAIT)).ok();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n").expect("send GET /metrics");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read /metrics");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == key).then(|| v.parse::<f64>().ok()).flatten()
        })
        .unwrap_or(0.0)
}
