//! The Kamailio these tests run as the upstream registrar: found on the machine (the
//! test fails without it), started with `tests/kamailio/registrar.cfg` on a free
//! loopback port, asked what contacts it holds, stopped on drop.

use super::*;

fn kamailio_bin() -> Option<PathBuf> {
    [
        "/usr/sbin/kamailio",
        "/usr/local/sbin/kamailio",
        "/usr/bin/kamailio",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .or_else(|| {
        let out = Command::new("sh")
            .args(["-c", "command -v kamailio"])
            .output()
            .ok()?;
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!p.is_empty()).then(|| PathBuf::from(p))
    })
}

fn modules_dir() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib64/kamailio/modules",
        "/usr/lib/kamailio/modules",
        "/usr/local/lib64/kamailio/modules",
        "/usr/local/lib/kamailio/modules",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.join("registrar.so").exists())
}

/// A Kamailio registrar run by the test; stopped (SIGTERM, then SIGKILL) when dropped.
pub(super) struct Kamailio {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    modules: PathBuf,
    /// Preprocessor defines (`-A`), e.g. `NO_PATH`.
    defines: Vec<String>,
}

impl Kamailio {
    /// Starts Kamailio; fails the test when it is not installed (CI installs it).
    pub(super) fn start(name: &str) -> Kamailio {
        Kamailio::start_with(name, &[])
    }

    /// Starts Kamailio with these preprocessor defines (`NO_PATH`: a registrar
    /// without Path support).
    pub(super) fn start_with(name: &str, defines: &[&str]) -> Kamailio {
        let (Some(bin), Some(modules)) = (kamailio_bin(), modules_dir()) else {
            panic!(
                "relay test {name} needs kamailio and its modules: install the Debian \
                 package kamailio (.ci/run does)"
            );
        };
        let dir = temp_dir(&format!("kamailio-{name}"));
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kamailio/registrar.cfg");
        std::fs::copy(&cfg, dir.join("registrar.cfg")).expect("copy the Kamailio config");
        let mut users = String::new();
        for (u, p) in USERS {
            let _ = writeln!(users, "$sht(users=>{u}) = \"{p}\";");
        }
        std::fs::write(dir.join("users.cfg"), users).expect("write users.cfg");
        let mut k = Kamailio {
            child: None,
            port: 0,
            log: dir.join("kamailio.log"),
            dir,
            bin,
            modules,
            defines: defines.iter().map(|d| d.to_string()).collect(),
        };
        for _ in 0..5 {
            k.port = free_port();
            if k.spawn() {
                return k;
            }
        }
        panic!("kamailio did not start; log:\n{}", k.log_text());
    }

    pub(super) fn spawn(&mut self) -> bool {
        std::fs::write(
            self.dir.join("listen.cfg"),
            format!("listen=udp:127.0.0.1:{}\n", self.port),
        )
        .expect("write listen.cfg");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the Kamailio log");
        // `timeout` bounds its life even if the test process dies
        let child = Command::new("timeout")
            .args(["-s", "TERM", "300"])
            .arg(&self.bin)
            .args([
                "-DD",
                "-E",
                "-f",
                "registrar.cfg",
                "-m",
                "64",
                "-M",
                "8",
                "-L",
            ])
            .arg(&self.modules)
            .arg("-Y")
            .arg(&self.dir)
            .args(self.defines.iter().flat_map(|d| ["-A", d.as_str()]))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("run kamailio");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            if self.ping() {
                return true;
            }
        }
        self.stop();
        false
    }

    /// Answers an OPTIONS (with anything) within 300 ms.
    pub(super) fn ping(&self) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let local = sock.local_addr().unwrap();
        let cid = call_id();
        let req = format!(
            "OPTIONS sip:127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={b};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag={t}\r\nTo: <sip:127.0.0.1:{p}>\r\nCall-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            p = self.port,
            b = branch(),
            t = tag()
        );
        let _ = sock.send_to(req.as_bytes(), self.addr());
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 8192];
        matches!(sock.recv_from(&mut buf), Ok((n, _)) if n > 0)
    }

    pub(super) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(super) fn uri(&self) -> String {
        format!("sip:127.0.0.1:{}", self.port)
    }

    /// SIGTERM to `timeout`, which passes it on; SIGKILL if it lingers.
    pub(super) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            if wait_with_timeout(&mut c, Duration::from_secs(5)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    pub(super) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- kamailio on port {} (last {} lines) ---\n{}\n--- end ---",
                self.port,
                tail.len(),
                tail.join("\n")
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The contacts Kamailio holds for `user` (an authenticated query REGISTER).
pub(super) fn kamailio_contacts(k: &Kamailio, user: &str) -> Vec<String> {
    let mut q = Ua::udp_at(user, k.addr(), "127.0.0.1:0");
    let r = register_auth(&mut q, None, "", None);
    assert_eq!(r.status(), Some(200), "query refused: {r:?}");
    r.values("contact")
}
