//! The webhook receiver the push tests run: an HTTP/1.1 server on loopback that
//! records each POST (method, path, content type, JSON body) and answers 200, or holds
//! its answers behind a gate so a test can order the push answer against the phone.

use super::*;

/// One POST the webhook received.
#[derive(Debug, Clone)]
pub(super) struct Hook {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) content_type: Option<String>,
    pub(super) body: Value,
}

/// An HTTP/1.1 server on 127.0.0.1 that answers every request `200 OK` and hands the
/// JSON bodies to the test, in order of arrival.
pub(super) struct Webhook {
    pub(super) url: String,
    pub(super) rx: Receiver<Hook>,
    pub(super) gate: Gate,
}

/// Holds the webhook's answers back until the test opens it.
#[derive(Clone)]
pub(super) struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub(super) fn new(open: bool) -> Gate {
        Gate(Arc::new((Mutex::new(open), Condvar::new())))
    }

    pub(super) fn wait(&self) {
        let (open, cv) = &*self.0;
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(super) fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

impl Webhook {
    pub(super) fn start() -> Webhook {
        Webhook::start_gated(Gate::new(true))
    }

    /// A receiver that records each request at once but answers only after
    /// [`Webhook::release`].
    pub(super) fn start_held() -> Webhook {
        Webhook::start_gated(Gate::new(false))
    }

    pub(super) fn start_gated(gate: Gate) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook listener");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let held = gate.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let tx = tx.clone();
                let gate = held.clone();
                thread::spawn(move || serve_http(conn, tx, gate));
            }
        });
        Webhook {
            url: format!("http://{addr}/push"),
            rx,
            gate,
        }
    }

    /// Lets the held answers go.
    pub(super) fn release(&self) {
        self.gate.open();
    }

    /// The next POST within `wait`.
    pub(super) fn next(&self, wait: Duration) -> Option<Hook> {
        match self.rx.recv_timeout(wait) {
            Ok(h) => Some(h),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("the webhook receiver died"),
        }
    }

    /// The next POST's JSON body; it must be an `event` document.
    pub(super) fn expect(&self, event: &str) -> Value {
        let hook = self
            .next(WAIT)
            .unwrap_or_else(|| panic!("no webhook POST ({event}) within {WAIT:?}"));
        assert_eq!(hook.method, "POST", "{hook:?}");
        assert_eq!(hook.path, "/push", "{hook:?}");
        assert!(
            hook.content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "JSON content type expected: {hook:?}"
        );
        assert_eq!(
            hook.body["event"], event,
            "expected an {event:?} document: {hook:?}"
        );
        hook.body
    }

    /// `n` `event` documents, sorted by token (devices are pushed concurrently).
    pub(super) fn expect_n(&self, event: &str, n: usize) -> Vec<Value> {
        let mut out: Vec<Value> = (0..n).map(|_| self.expect(event)).collect();
        out.sort_by_key(|v| v["token"].as_str().unwrap_or_default().to_owned());
        out
    }

    /// Asserts that nothing is POSTed within `wait`.
    pub(super) fn expect_none(&self, what: &str, wait: Duration) {
        if let Some(h) = self.next(wait) {
            panic!("expected no webhook POST ({what}), got {:#}", h.body);
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.release();
    }
}

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Serves one connection: requests framed by Content-Length, kept alive.
pub(super) fn serve_http(mut conn: TcpStream, tx: Sender<Hook>, gate: Gate) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let mut start = lines.next().unwrap_or("").split(' ');
            let method = start.next().unwrap_or("").to_owned();
            let path = start.next().unwrap_or("").to_owned();
            let (mut len, mut content_type) = (0usize, None);
            for line in lines {
                if let Some((k, v)) = line.split_once(':') {
                    match k.trim().to_ascii_lowercase().as_str() {
                        "content-length" => len = v.trim().parse().unwrap_or(0),
                        "content-type" => content_type = Some(v.trim().to_owned()),
                        _ => {}
                    }
                }
            }
            if buf.len() < end + 4 + len {
                break;
            }
            let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
            let body = serde_json::from_slice(&body).unwrap_or_else(|_| {
                Value::String(format!("not JSON: {}", String::from_utf8_lossy(&body)))
            });
            // recorded before the answer, so a test never sees sipwake act on a push
            // the receiver has not recorded yet
            let _ = tx.send(Hook {
                method,
                path,
                content_type,
                body,
            });
            gate.wait();
            if conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .is_err()
            {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
