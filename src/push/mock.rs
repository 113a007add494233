//! In-process stand-ins for the push services, for tests: a hand-rolled HTTP/1.1
//! server (webhook, FCM, OAuth token endpoint) and an HTTP/2-over-TLS server with a
//! test CA made at test time (APNs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types as rustls_pki;

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Decides the answer (status, JSON body) to a request.
pub(crate) type Responder = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// A running stand-in: its address and the requests it got, in order.
pub(crate) struct Mock {
    pub addr: SocketAddr,
    pub rx: mpsc::UnboundedReceiver<Seen>,
}

impl Mock {
    /// The next request, failing the test after 5 s.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(std::time::Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a request within 5 s")
            .expect("server running")
    }

    /// No further request arrived.
    pub fn none_left(&mut self) -> bool {
        self.rx.try_recv().is_err()
    }
}

/// Answers from a list, one per request; the last one repeats.
pub(crate) fn script(answers: Vec<(u16, String)>) -> Responder {
    let answers = Mutex::new(answers);
    Arc::new(move |_| {
        let mut a = answers.lock().unwrap();
        if a.len() > 1 {
            a.remove(0)
        } else {
            a[0].clone()
        }
    })
}

/// A plain HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length bodies).
pub(crate) async fn http1(respond: Responder) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let respond = Arc::clone(&respond);
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_owned();
                    let path = parts.next().unwrap_or_default().to_owned();
                    let mut headers = HashMap::new();
                    loop {
                        let mut h = String::new();
                        if stream.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((n, v)) = h.split_once(':') {
                            headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_owned());
                        }
                    }
                    let len = headers
                        .get("content-length")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let seen = Seen {
                        method,
                        path,
                        headers,
                        body,
                    };
                    let (status, text) = respond(&seen);
                    let _ = tx.send(seen);
                    let out = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if stream.get_mut().write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Mock { addr, rx }
}

/// A test CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
pub(crate) struct TestPki {
    /// The CA certificate (PEM), for `ca_file`.
    pub ca_pem: String,
    /// The server's certificate chain and key.
    pub server_cert: Vec<rustls_pki::CertificateDer<'static>>,
    pub server_key: rustls_pki::PrivateKeyDer<'static>,
    /// A client certificate + key (PEM, in one file) signed by the CA, for cert auth.
    pub client_pem: String,
}

pub(crate) fn pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sipwake test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["client".to_owned()]).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "com.example.phone");
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

    TestPki {
        ca_pem: ca.pem(),
        server_cert: vec![server.der().clone(), ca.der().clone()],
        server_key: rustls_pki::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        client_pem: format!("{}{}", client.pem(), client_key.serialize_pem()),
    }
}

/// An HTTP/2-over-TLS server on 127.0.0.1 (ALPN h2) with `pki`'s server certificate.
/// With `want_client_cert`, the handshake asks for (and checks) a client certificate
/// signed by the test CA, and [`Seen::headers`] gets `x-client-cert: yes` when one was
/// presented.
pub(crate) async fn h2_tls(pki: &TestPki, want_client_cert: bool, respond: Responder) -> Mock {
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if want_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.server_cert[1].clone()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .allow_unauthenticated()
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(pki.server_cert.clone(), pki.server_key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let respond = Arc::clone(&respond);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client_cert = tls.get_ref().1.peer_certificates().is_some();
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((req, mut send))) = conn.accept().await {
                    let tx = tx.clone();
                    let respond = Arc::clone(&respond);
                    tokio::spawn(async move {
                        let (parts, mut body) = req.into_parts();
                        let mut data = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            data.extend_from_slice(&chunk);
                        }
                        let mut headers: HashMap<String, String> = parts
                            .headers
                            .iter()
                            .map(|(n, v)| {
                                (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect();
                        if client_cert {
                            headers.insert("x-client-cert".into(), "yes".into());
                        }
                        let seen = Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_owned(),
                            headers,
                            body: data,
                        };
                        let (status, text) = respond(&seen);
                        let _ = tx.send(seen);
                        let resp = http::Response::builder()
                            .status(status)
                            .header("apns-id", "00000000-0000-0000-0000-000000000001")
                            .body(())
                            .unwrap();
                        let Ok(mut stream) = send.send_response(resp, text.is_empty()) else {
                            return;
                        };
                        if !text.is_empty() {
                            let _ = stream.send_data(text.into_bytes().into(), true);
                        }
                    });
                }
            });
        }
    });
    Mock { addr, rx }
}

/// Writes `contents` to a fresh file in the temporary directory.
pub(crate) fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sipwake-push-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
