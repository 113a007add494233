//! A stand-in for APNs: HTTP/2 over TLS on 127.0.0.1 (ALPN `h2`) with a server
//! certificate from a test CA made at test time (rcgen), on its own tokio runtime so
//! the blocking tests can use it. It records every POST and answers from a script
//! (default `200` with an `apns-id`); other methods (sipwake's warm-up `GET /`) get
//! `404` and are not recorded.
//!
//! Also: the `.p8` signing key of a test "team", and a decoder for the JWT sipwake
//! signs with it.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::mock_http::{now_ms, Seen};

/// A test CA and a server certificate signed by it for `127.0.0.1` (IP SAN) and
/// `localhost`.
pub struct Pki {
    /// The CA certificate (PEM), for `push.apns.ca_file`.
    pub ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl Pki {
    /// Makes a fresh CA and server certificate.
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sipwake integration-test CA");
        let ca = ca_params.self_signed(&ca_key).expect("self-sign the CA");

        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "api.push.apple.test");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
        Pki {
            ca_pem: ca.pem(),
            chain: vec![cert.der().clone(), ca.der().clone()],
            key_der: key.serialize_der(),
        }
    }

    /// Writes the CA certificate to `dir/apns-ca.pem`.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let p = dir.join("apns-ca.pem");
        std::fs::write(&p, &self.ca_pem).expect("write the CA file");
        p
    }
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

/// An APNs token-auth signing key (P-256, PKCS#8 PEM like Apple's `.p8` files).
pub struct SigningKey {
    /// The private key, PKCS#8 PEM.
    pub p8_pem: String,
    /// The public key, SPKI PEM, to verify the JWT.
    pub public_pem: String,
}

impl SigningKey {
    /// A fresh key.
    pub fn new() -> SigningKey {
        let key = rcgen::KeyPair::generate().expect("P-256 key");
        SigningKey {
            p8_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        }
    }

    /// Writes the key to `dir/AuthKey_<key_id>.p8`.
    pub fn write(&self, dir: &Path, key_id: &str) -> PathBuf {
        let p = dir.join(format!("AuthKey_{key_id}.p8"));
        std::fs::write(&p, &self.p8_pem).expect("write the .p8 file");
        p
    }
}

impl Default for SigningKey {
    fn default() -> SigningKey {
        SigningKey::new()
    }
}

/// The header and claims of a JWT, base64url-decoded (no signature check).
pub fn jwt_parts(jwt: &str) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    let decode = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()
    };
    let mut it = jwt.split('.');
    let (h, c, s) = (it.next(), it.next(), it.next());
    assert!(
        h.is_some() && c.is_some() && s.is_some_and(|s| !s.is_empty()) && it.next().is_none(),
        "a JWT has three non-empty dot-separated parts: {jwt}"
    );
    let parse = |part: &str| -> serde_json::Value {
        serde_json::from_slice(&decode(part).unwrap_or_else(|| panic!("base64url: {part}")))
            .unwrap_or_else(|e| panic!("JWT part is not JSON ({e}): {part}"))
    };
    (parse(h.unwrap()), parse(c.unwrap()))
}

/// A running APNs stand-in.
pub struct MockApns {
    /// `127.0.0.1:port`.
    pub addr: SocketAddr,
    rx: Receiver<Seen>,
    answers: Arc<Mutex<VecDeque<(u16, String)>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl MockApns {
    /// Starts a stand-in serving `pki`'s certificate.
    pub fn start(pki: &Pki) -> MockApns {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the APNs stand-in");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                pki.chain.clone(),
                PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
            )
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the APNs stand-in");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let answers: Arc<Mutex<VecDeque<(u16, String)>>> = Arc::default();
        let script = Arc::clone(&answers);
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let script = Arc::clone(&script);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut conn) = h2::server::handshake(tls).await else {
                        return;
                    };
                    while let Some(Ok((req, send))) = conn.accept().await {
                        let tx = tx.clone();
                        let script = Arc::clone(&script);
                        tokio::spawn(handle(req, send, tx, script));
                    }
                });
            }
        });
        MockApns {
            addr,
            rx,
            answers,
            rt: Some(rt),
        }
    }

    /// `https://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Queues the answer to the next POST (then back to `200`).
    pub fn answer_next(&self, status: u16, body: &str) {
        self.answers
            .lock()
            .unwrap()
            .push_back((status, body.to_owned()));
    }

    /// The next POST within `wait`.
    pub fn next_post(&self, wait: Duration) -> Option<Seen> {
        match self.rx.recv_timeout(wait) {
            Ok(s) => Some(s),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("the APNs stand-in died"),
        }
    }

    /// The next POST; fails the test after `wait`.
    pub fn expect_post(&self, what: &str, wait: Duration) -> Seen {
        self.next_post(wait).unwrap_or_else(|| {
            panic!(
                "APNs stand-in {}: no push ({what}) within {wait:?}",
                self.addr
            )
        })
    }

    /// Asserts that no POST arrives within `wait`.
    pub fn expect_no_post(&self, what: &str, wait: Duration) {
        if let Some(s) = self.next_post(wait) {
            panic!(
                "APNs stand-in {}: expected no push ({what}), got {} {} {:?} {}",
                self.addr,
                s.method,
                s.path,
                s.headers,
                s.text()
            );
        }
    }
}

impl Drop for MockApns {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn handle(
    req: http::Request<h2::RecvStream>,
    mut send: h2::server::SendResponse<bytes::Bytes>,
    tx: mpsc::Sender<Seen>,
    script: Arc<Mutex<VecDeque<(u16, String)>>>,
) {
    let (parts, mut body) = req.into_parts();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let (status, text) = if parts.method == http::Method::POST {
        let headers: HashMap<String, String> = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let answer = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((200, String::new()));
        let _ = tx.send(Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            headers,
            body: data,
            at_ms: now_ms(),
        });
        answer
    } else {
        (404, r#"{"reason":"BadPath"}"#.to_owned())
    };
    let resp = http::Response::builder()
        .status(status)
        .header("apns-id", "00000000-0000-4000-8000-000000000001")
        .body(())
        .unwrap();
    let Ok(mut stream) = send.send_response(resp, text.is_empty()) else {
        return;
    };
    if !text.is_empty() {
        let _ = stream.send_data(text.into_bytes().into(), true);
    }
}
