//! A real `redis-server` for the tests of several sipwake nodes: started on a free
//! loopback port with its own directory and append-only file, stopped by its pid.
//! A test that needs it fails (never skips) when `redis-server` is not installed.
//! [`RedisServer::start_with`] adds arguments (TLS, cluster mode); [`RedisCluster`]
//! is three of them in cluster mode, the cluster created with `redis-cli`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its working directory (append-only file, log).
    pub dir: PathBuf,
    /// More `redis-server` arguments.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server` in `dir` on a free port, AOF on.
    pub fn start(dir: PathBuf) -> RedisServer {
        RedisServer::start_with(dir, Vec::new())
    }

    /// Like [`RedisServer::start`], with more arguments for `redis-server` (it still
    /// answers plain TCP on [`RedisServer::port`], where the tests check it is up).
    pub fn start_with(dir: PathBuf, extra: Vec<String>) -> RedisServer {
        let mut r = RedisServer {
            child: None,
            port: super::free_port(),
            dir,
            extra,
        };
        r.spawn();
        r
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("redis log file");
        let child = Command::new("redis-server")
            .current_dir(&self.dir)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "everysec"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server is needed for this test (apt-get install redis-server): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "redis-server did not answer PING on port {} within 20 s:\n{}",
            self.port,
            std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
        );
    }

    /// True if it answers `PING`.
    pub fn ping(&self) -> bool {
        self.command("PING").is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Sends one inline command and returns the raw reply.
    pub fn command(&self, line: &str) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The integer reply of `line` (e.g. `DBSIZE`), or of the last element of an
    /// array reply (e.g. `PUBSUB NUMSUB channel`).
    pub fn integer(&self, line: &str) -> i64 {
        let reply = self
            .command(line)
            .unwrap_or_else(|| panic!("no answer to {line} from port {}", self.port));
        reply
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line}: no integer in {reply:?}"))
    }

    /// Stops it with SIGTERM (it writes its append-only file and exits) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child we started and have not reaped
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (reading its append-only file).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

/// A Redis the sipwake nodes of a test share, as the settings that reach it.
pub trait SharedRedis {
    /// `(variable, value)` pairs for [`super::ProxyBuilder::env`].
    fn store_env(&self) -> Vec<(String, String)>;
    /// How many connections are subscribed to `channel` (sharded on a cluster).
    fn subscribers(&self, channel: &str) -> i64;
    /// Closes every connection in pub/sub mode (`CLIENT KILL TYPE pubsub`).
    fn kill_subscribers(&self);
    /// The cluster, when it is one.
    fn cluster(&self) -> Option<&RedisCluster> {
        None
    }
    /// The one server, when it is one.
    fn server(&self) -> Option<&RedisServer> {
        None
    }
}

impl SharedRedis for RedisServer {
    fn store_env(&self) -> Vec<(String, String)> {
        vec![("STORE__REDIS__URL".into(), self.url())]
    }

    fn subscribers(&self, channel: &str) -> i64 {
        self.integer(&format!("PUBSUB NUMSUB {channel}"))
    }

    fn kill_subscribers(&self) {
        self.integer("CLIENT KILL TYPE pubsub");
    }

    fn server(&self) -> Option<&RedisServer> {
        Some(self)
    }
}

impl SharedRedis for RedisCluster {
    fn store_env(&self) -> Vec<(String, String)> {
        let urls: Vec<String> = if self.tls_ports.is_empty() {
            self.urls()
        } else {
            let tls = |p: &u16| format!("rediss://127.0.0.1:{p}");
            self.tls_ports.iter().map(tls).collect()
        };
        vec![
            ("STORE__REDIS__URL".into(), urls[0].clone()),
            ("STORE__REDIS__CLUSTER".into(), "true".into()),
            ("STORE__REDIS__CLUSTER_URLS".into(), urls[1..].join(",")),
        ]
    }

    fn subscribers(&self, channel: &str) -> i64 {
        self.sum(&format!("PUBSUB SHARDNUMSUB {channel}"))
    }

    fn kill_subscribers(&self) {
        for n in &self.nodes {
            n.integer("CLIENT KILL TYPE pubsub");
        }
    }

    fn cluster(&self) -> Option<&RedisCluster> {
        Some(self)
    }
}

/// `redis-cli` with `args`; panics (never skips) when it is missing or fails.
pub fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("redis-cli is needed for this test (apt-get install redis-tools): {e}")
        });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "redis-cli {args:?} failed:\n{text}");
    text
}

/// Three `redis-server` primaries in cluster mode on free loopback ports, each in its
/// own directory, the cluster created by `redis-cli --cluster create` and ready
/// (`cluster_state:ok` on every node); stopped by pid when dropped.
pub struct RedisCluster {
    /// The primaries.
    pub nodes: Vec<RedisServer>,
    /// Their TLS ports (empty without TLS), in the order of `nodes`.
    pub tls_ports: Vec<u16>,
}

/// The certificate files of a cluster whose nodes speak TLS (to clients and on the
/// cluster bus).
pub struct ClusterTls {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The CA (PEM).
    pub ca: PathBuf,
}

impl RedisCluster {
    /// Starts and creates the cluster; directories under `dir`.
    pub fn start(dir: PathBuf) -> RedisCluster {
        RedisCluster::start_with(dir, None)
    }

    /// Like [`RedisCluster::start`]; with `tls`, every node also listens for TLS on a
    /// port of its own and the cluster bus is TLS (`tls-cluster`), so a client on a
    /// TLS port is told the other nodes' TLS ports.
    pub fn start_with(dir: PathBuf, tls: Option<&ClusterTls>) -> RedisCluster {
        let mut tls_ports = Vec::new();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let d = dir.join(format!("node{i}"));
                std::fs::create_dir_all(&d).expect("node directory");
                let conf = d.join("nodes.conf").to_string_lossy().into_owned();
                let mut extra: Vec<String> = Vec::new();
                if let Some(t) = tls {
                    let port = super::free_port();
                    tls_ports.push(port);
                    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
                    extra.extend([
                        "--tls-port".into(),
                        port.to_string(),
                        "--tls-cluster".into(),
                        "yes".into(),
                        "--tls-cert-file".into(),
                        path(&t.cert),
                        "--tls-key-file".into(),
                        path(&t.key),
                        "--tls-ca-cert-file".into(),
                        path(&t.ca),
                        "--tls-auth-clients".into(),
                        "no".into(),
                    ]);
                }
                extra.extend([
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    conf,
                    // the bus port would be port + 10000, maybe past 65535
                    "--cluster-port".into(),
                    super::free_port().to_string(),
                    "--cluster-node-timeout".into(),
                    "5000".into(),
                ]);
                RedisServer::start_with(d, extra)
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        redis_cli(&args);
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            loop {
                let info = n.command("CLUSTER INFO").unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster not ok on port {}: {info}",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster { nodes, tls_ports }
    }

    /// `redis://127.0.0.1:port` of each primary.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The sum over the primaries of the integer reply of `line`.
    pub fn sum(&self, line: &str) -> i64 {
        self.nodes.iter().map(|n| n.integer(line)).sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
