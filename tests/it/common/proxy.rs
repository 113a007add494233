//! The binary under test: [`ProxyBuilder`] sets its environment (memory store, every
//! domain local, log level warn, UDP and TCP on a free loopback port) and starts it;
//! [`Proxy`] restarts, signals and kills it and prints its log when a test fails.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// How to start sipwake: environment overrides on top of test defaults (memory store,
/// every domain local, log level warn, UDP and TCP on a free loopback port).
pub struct ProxyBuilder {
    name: String,
    env: Vec<(String, String)>,
    port: Option<u16>,
    wildcard: bool,
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
            wildcard: false,
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

    /// Uses the append-only journal store in the test directory (files named
    /// `sipwake.journal.*`).
    pub fn journal(self) -> ProxyBuilder {
        // relative to the test directory, where the proxy runs
        self.env("STORE__BACKEND", "journal")
            .env("STORE__PATH", "sipwake.journal")
    }

    /// Listens on this port instead of a free one.
    pub fn port(mut self, port: u16) -> ProxyBuilder {
        self.port = Some(port);
        self
    }

    /// Listens on `0.0.0.0:port` (the wildcard) instead of `127.0.0.1:port`; the port
    /// is one free on every address and, like any port the harness picks, picked
    /// again when another test took it before sipwake bound it.
    pub fn wildcard(mut self) -> ProxyBuilder {
        self.wildcard = true;
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
            port: self.port.unwrap_or_else(|| pick_port(self.wildcard)),
            wildcard: self.wildcard,
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
                    proxy.port = pick_port(proxy.wildcard);
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

/// A port free on 127.0.0.1, or on every address for a wildcard listener (a port free
/// on 127.0.0.1 may still be held on 127.0.0.2 by another test's phone).
fn pick_port(wildcard: bool) -> u16 {
    if !wildcard {
        return free_port();
    }
    for _ in 0..200 {
        let port = free_port();
        if std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 0.0.0.0");
}

/// A running `sipwake`; killed (SIGKILL) when dropped. When the test failed, the tail
/// of its log is printed.
pub struct Proxy {
    child: Option<Child>,
    /// The UDP and TCP port it listens on (127.0.0.1).
    pub port: u16,
    /// Listening on `0.0.0.0:port` rather than `127.0.0.1:port`.
    wildcard: bool,
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
            .env(
                "SIPWAKE__SIP__LISTEN",
                if self.wildcard {
                    format!("0.0.0.0:{}", self.port)
                } else {
                    self.hostport()
                },
            )
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

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("sipwake is not running").id()
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

/// The value of one sample of sipwake's `/metrics` at `admin` (the whole line's name
/// and labels as written, e.g. `sipwake_calls_total{outcome="woken"}`); 0 when absent.
pub fn metric(admin: SocketAddr, key: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&admin, WAIT)
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
