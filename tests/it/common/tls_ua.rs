//! SIP over TLS for the test UA: a test CA and a server certificate for `127.0.0.1`
//! and `localhost` made at test time (rcgen), written as PEM files for sipwake's
//! `[tls]` settings, and a blocking TLS client (rustls) that trusts that CA.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use super::{Tp, Ua, WAIT};

/// A TLS session of a test UA over its TCP connection.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A test CA and a server certificate it signed.
pub struct TlsPki {
    /// The CA certificate (PEM): what clients trust.
    pub ca_pem: String,
    /// The server certificate followed by the CA (PEM), for `tls.cert_file`.
    pub chain_pem: String,
    /// The server's private key (PKCS#8 PEM), for `tls.key_file`.
    pub key_pem: String,
}

impl TlsPki {
    /// A fresh CA and a server certificate for `127.0.0.1` (IP SAN) and `localhost`.
    pub fn new() -> TlsPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "sipwake TLS test CA");
        let ca = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "sipwake.test");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
        TlsPki {
            ca_pem: ca.pem(),
            chain_pem: format!("{}{}", cert.pem(), ca.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes `cert.pem` (chain) and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.chain_pem).expect("write cert.pem");
        std::fs::write(&key, &self.key_pem).expect("write key.pem");
        (cert, key)
    }

    /// A client configuration that trusts only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.expect("CA PEM")).expect("add the CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Default for TlsPki {
    fn default() -> TlsPki {
        TlsPki::new()
    }
}

impl Ua {
    /// A UA with one TLS connection to `addr` (sipwake's TLS listener), checking the
    /// server certificate against `config`'s roots for the name `127.0.0.1`. The
    /// handshake is done here, so a refused certificate fails at once.
    pub fn tls(user: &str, addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Ua {
        let tcp = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("connect tls {addr}: {e}"));
        tcp.set_nodelay(true).ok();
        tcp.set_read_timeout(Some(WAIT)).ok();
        let local = tcp.local_addr().unwrap();
        let name = ServerName::try_from(addr.ip().to_string()).expect("server name");
        let conn = rustls::ClientConnection::new(config, name).expect("client connection");
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .unwrap_or_else(|e| panic!("tls handshake with {addr}: {e}"));
        }
        let mut ua = Ua::new(user, Tp::Tls, None, None, local, addr);
        ua.tls = Some(Box::new(stream));
        ua
    }

    /// Sends over the TLS session; `addr` must be its peer (everything goes through
    /// the proxy).
    pub(super) fn tls_send(&mut self, addr: SocketAddr, data: &[u8]) {
        let user = self.user.clone();
        let s = self.tls.as_mut().expect("not a TLS UA");
        assert_eq!(
            s.sock.peer_addr().ok(),
            Some(addr),
            "{user}: next hop {addr} is not the peer of our TLS connection",
        );
        s.write_all(data)
            .and_then(|()| s.flush())
            .unwrap_or_else(|e| panic!("tls send to {addr}: {e}"));
    }

    /// Reads from the stream of a TCP or TLS UA, waiting at most `wait`.
    pub(super) fn stream_read(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<usize> {
        if let Some(s) = self.tls.as_mut() {
            s.sock.set_read_timeout(Some(wait))?;
            return s.read(buf);
        }
        let s = self.tcp.as_mut().expect("not a stream UA");
        s.set_read_timeout(Some(wait))?;
        s.read(buf)
    }

    /// Ends the TLS session (close_notify) and closes its connection.
    pub(super) fn close_tls(&mut self) {
        if let Some(mut s) = self.tls.take() {
            s.conn.send_close_notify();
            let _ = s.flush();
            let _ = s.sock.shutdown(Shutdown::Both);
        }
    }
}
