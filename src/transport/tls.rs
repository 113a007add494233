//! SIP over TLS (RFC 3261 §26): the server certificate, and the handshake that
//! precedes a TLS connection's life as an ordinary stream flow. Once the handshake is
//! done the connection is handed to the same reader and writer as plain TCP
//! ([`super::tcp::run_conn`]), so framing, keep-alives, liveness, the idle timeout and
//! every connection cap apply to both alike.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{tcp, Conn, Flow, Handler, SendError, Transport};

/// A peer gets this long to finish its handshake; a connection that never does
/// (a port scanner, a slow-loris, a plain-TCP client on the TLS port) is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the certificate or key could not be loaded. Each message starts with the
/// setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain file is missing, unreadable or holds no certificate.
    #[error("tls.cert_file: {0}")]
    Cert(String),
    /// The key file is missing, unreadable or holds no usable private key.
    #[error("tls.key_file: {0}")]
    Key(String),
    /// The extra CA file is missing, unreadable or holds no certificate.
    #[error("tls.ca_file: {0}")]
    Ca(String),
}

/// The DNS names (subject alternative names) of `key`'s end-entity certificate: the
/// names phones reach sipwake by over TLS, hence names of sipwake itself.
pub fn dns_names_of(key: &CertifiedKey) -> Vec<String> {
    key.cert
        .first()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .map(|c| c.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Reads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8,
/// PKCS#1 or SEC1), checking that they belong together.
pub fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let pem = std::fs::read(cert_file)
        .map_err(|e| TlsError::Cert(format!("cannot read {}: {e}", shown(cert_file))))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(format!("{}: bad PEM: {e}", shown(cert_file))))?;
    if chain.is_empty() {
        return Err(TlsError::Cert(format!(
            "{}: no PEM certificate (BEGIN CERTIFICATE) in it",
            shown(cert_file)
        )));
    }
    let pem = std::fs::read(key_file)
        .map_err(|e| TlsError::Key(format!("cannot read {}: {e}", shown(key_file))))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        TlsError::Key(format!(
            "{}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            shown(key_file)
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        TlsError::Key(format!(
            "{}: does not fit the certificate in tls.cert_file: {e}",
            shown(key_file)
        ))
    })?;
    Ok(Arc::new(key))
}

/// The certificate the TLS listeners present. A reload (SIGHUP) replaces it in
/// place, so a renewed certificate is served without a restart; connections already
/// open keep the session they have.
#[derive(Debug)]
pub struct ServerCert(RwLock<Arc<CertifiedKey>>);

impl ServerCert {
    /// Loads the certificate and key files.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerCert>, TlsError> {
        let key = load_certified_key(cert_file, key_file)?;
        Ok(Arc::new(ServerCert(RwLock::new(key))))
    }

    /// The DNS names (subject alternative names) of the certificate presented now.
    pub fn dns_names(&self) -> Vec<String> {
        let cur = self.0.read();
        dns_names_of(&cur)
    }

    /// Presents `key` from the next handshake on; true if it differs from the
    /// certificate presented so far.
    pub fn replace(&self, key: Arc<CertifiedKey>) -> bool {
        let mut cur = self.0.write();
        let changed = cur.cert != key.cert;
        *cur = key;
        changed
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// Builds the server side of TLS around `cert`. No client certificates are asked
/// for: phones authenticate with SIP digest, not certificates.
pub fn server_config(cert: Arc<ServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Cert(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    Ok(Arc::new(config))
}

/// Builds the client side of TLS for outgoing connections: the built-in web roots
/// (`webpki-roots`) plus the CA certificates in `ca_file`, for a PBX with a
/// certificate of its own making. Server names are always checked.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let shown = path.display();
        let pem =
            std::fs::read(path).map_err(|e| TlsError::Ca(format!("cannot read {shown}: {e}")))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| TlsError::Ca(format!("{shown}: bad PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| TlsError::Ca(format!("{shown}: unusable CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError::Ca(format!(
                "{shown}: no PEM certificate (BEGIN CERTIFICATE) in it"
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How long an outgoing connection may take, TCP connect and TLS handshake each.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Transport {
    /// A TLS flow to `remote`, whose certificate must be valid for `name` (a host
    /// name or IP literal): an open connection we made earlier, else a new one. Like
    /// [`Transport::connect_tcp`], only for peers reachable by address (upstream,
    /// routes), never for phones.
    pub async fn connect_tls(
        &self,
        remote: SocketAddr,
        name: &str,
        handler: Arc<dyn Handler>,
    ) -> Result<Flow, SendError> {
        if let Some(flow) = self.open_outbound(remote, true) {
            return Ok(flow);
        }
        let config = self.inner.cfg.tls_client.clone().ok_or_else(|| {
            SendError::Io(std::io::Error::other("outgoing TLS is not configured"))
        })?;
        let server_name = ServerName::try_from(name.to_owned()).map_err(|_| {
            SendError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name:?} is not a TLS server name"),
            ))
        })?;
        let timed_out = || SendError::Io(std::io::ErrorKind::TimedOut.into());
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(remote))
            .await
            .map_err(|_| timed_out())??;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        let connector = TlsConnector::from(config);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, stream))
            .await
            .map_err(|_| timed_out())?
            .inspect_err(
                |e| tracing::debug!(%remote, error = %e, "outgoing tls handshake failed"),
            )?;
        let id = self.new_conn_id();
        let (tx, rx) = mpsc::unbounded_channel();
        // connections we open are not under the inbound caps
        self.conns().insert(
            id,
            Conn {
                tx,
                local,
                _permit: None,
            },
        );
        let (rd, wr) = tokio::io::split(stream);
        tokio::spawn(tcp::run_conn(
            self.clone(),
            rd,
            wr,
            id,
            remote,
            local,
            false,
            true,
            rx,
            handler,
        ));
        self.inner.outbound_tls.lock().insert(remote, id);
        Ok(Flow::Tcp {
            conn: id,
            remote,
            inbound: false,
            tls: true,
        })
    }
}

/// Runs one accepted TLS connection: the handshake (bounded by
/// [`HANDSHAKE_TIMEOUT`]), then the shared stream loop. The connection is already
/// registered under `id`; a failed handshake unregisters it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_conn(
    t: Transport,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    id: u64,
    remote: SocketAddr,
    local: SocketAddr,
    rx: mpsc::UnboundedReceiver<Bytes>,
    handler: Arc<dyn Handler>,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "tls handshake failed");
            t.drop_conn(id, remote);
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "tls handshake timed out");
            t.drop_conn(id, remote);
            return;
        }
    };
    let (rd, wr) = tokio::io::split(stream);
    tcp::run_conn(t, rd, wr, id, remote, local, true, true, rx, handler).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, data: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sipwake-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn loads_a_pem_pair_and_names_the_key_on_errors() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = temp("cert.pem", cert.pem().as_bytes());
        let key_file = temp("key.pem", key.serialize_pem().as_bytes());
        let first = load_certified_key(&cert_file, &key_file).unwrap();
        let store = ServerCert::load(&cert_file, &key_file).unwrap();
        assert!(server_config(store.clone()).is_ok());
        assert!(!store.replace(first), "the same certificate again");

        let missing = cert_file.with_file_name("nope.pem");
        let e = load_certified_key(&missing, &key_file)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tls.cert_file: cannot read"), "{e}");
        let e = load_certified_key(&cert_file, &missing)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tls.key_file: cannot read"), "{e}");
        // a key where the certificate belongs, and the other way round
        let e = load_certified_key(&key_file, &key_file)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tls.cert_file:"), "{e}");
        let e = load_certified_key(&cert_file, &cert_file)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tls.key_file:"), "{e}");
        // a key that is not the certificate's
        let other = temp(
            "other.pem",
            rcgen::KeyPair::generate()
                .unwrap()
                .serialize_pem()
                .as_bytes(),
        );
        let e = load_certified_key(&cert_file, &other)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tls.key_file:"), "{e}");
    }

    #[test]
    fn client_roots_take_an_extra_ca_and_name_the_key_on_errors() {
        assert!(client_config(None).is_ok());
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let ca_file = temp("ca.pem", ca.pem().as_bytes());
        assert!(client_config(Some(&ca_file)).is_ok());
        let e = client_config(Some(&ca_file.with_file_name("nope.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tls.ca_file: cannot read"), "{e}");
        let not_pem = temp("not-a-ca.pem", key.serialize_pem().as_bytes());
        let e = client_config(Some(&not_pem)).unwrap_err().to_string();
        assert!(e.starts_with("tls.ca_file:"), "{e}");
    }
}
