//! A tiny HTTP/1.1 stand-in for push services (FCM, its OAuth token endpoint, a
//! webhook), on std threads and 127.0.0.1: it records every request and answers from
//! a script (default `200`), so a test can read what sipwake sent, in order.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One request as a stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path (with query, if any).
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
    /// When it arrived (unix ms).
    pub at_ms: u64,
}

impl Seen {
    /// A header value (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A status and a body.
type Answer = (u16, String);

/// Answers for requests whose path starts with a prefix: scripted ones first, then
/// the default.
type Rule = (String, VecDeque<Answer>, Answer);

/// The rules of a stand-in, first matching prefix wins.
#[derive(Default)]
pub struct Script {
    rules: Vec<Rule>,
}

impl Script {
    fn answer(&mut self, path: &str) -> Answer {
        for (prefix, queue, default) in self.rules.iter_mut() {
            if path.starts_with(prefix.as_str()) {
                return queue.pop_front().unwrap_or_else(|| default.clone());
            }
        }
        (
            404,
            r#"{"error":"no such path in the test stand-in"}"#.to_owned(),
        )
    }
}

/// A running HTTP/1.1 stand-in.
pub struct MockHttp {
    /// `127.0.0.1:port`.
    pub addr: SocketAddr,
    rx: Receiver<Seen>,
    script: Arc<Mutex<Script>>,
}

impl MockHttp {
    /// Starts a server with no routes (everything `404`); add them with
    /// [`MockHttp::route`].
    pub fn start() -> MockHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the HTTP stand-in");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let script = Arc::new(Mutex::new(Script::default()));
        let s = Arc::clone(&script);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                let s = Arc::clone(&s);
                thread::spawn(move || serve(conn, tx, s));
            }
        });
        MockHttp { addr, rx, script }
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests whose path starts with `prefix` get `default` unless a scripted answer
    /// is queued (first matching prefix wins, in the order added).
    pub fn route(&self, prefix: &str, status: u16, body: &str) {
        self.script.lock().unwrap().rules.push((
            prefix.to_owned(),
            VecDeque::new(),
            (status, body.to_owned()),
        ));
    }

    /// Queues one answer for the next request under `prefix` (a route must exist).
    pub fn answer_next(&self, prefix: &str, status: u16, body: &str) {
        let mut s = self.script.lock().unwrap();
        let rule = s
            .rules
            .iter_mut()
            .find(|(p, _, _)| p == prefix)
            .unwrap_or_else(|| panic!("no route {prefix} in the HTTP stand-in"));
        rule.1.push_back((status, body.to_owned()));
    }

    /// The next request within `wait`.
    pub fn next(&self, wait: Duration) -> Option<Seen> {
        match self.rx.recv_timeout(wait) {
            Ok(s) => Some(s),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("the HTTP stand-in died"),
        }
    }

    /// The next request whose path starts with `prefix` within `wait`; others that
    /// arrive meanwhile are returned in the second element.
    pub fn next_at(&self, prefix: &str, wait: Duration) -> (Option<Seen>, Vec<Seen>) {
        let deadline = Instant::now() + wait;
        let mut other = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(s) if s.path.starts_with(prefix) => return (Some(s), other),
                Some(s) => other.push(s),
                None => return (None, other),
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Serves one connection: requests framed by Content-Length, kept alive.
fn serve(mut conn: TcpStream, tx: Sender<Seen>, script: Arc<Mutex<Script>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let mut start = lines.next().unwrap_or("").split(' ');
            let method = start.next().unwrap_or("").to_owned();
            let path = start.next().unwrap_or("").to_owned();
            let mut headers = HashMap::new();
            for l in lines {
                if let Some((k, v)) = l.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            let (status, text) = script.lock().unwrap().answer(&path);
            let _ = tx.send(Seen {
                method,
                path,
                headers,
                body,
                at_ms: now_ms(),
            });
            let out = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n{text}",
                text.len()
            );
            if conn.write_all(out.as_bytes()).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
