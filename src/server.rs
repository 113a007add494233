//! Wiring: builds the store, registrar, transports and proxy from settings and runs
//! them until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::{Settings, StoreBackend};
use crate::proxy::Core;
use crate::push::{PushError, Pusher};
use crate::registrar::nodes::Nodes;
use crate::registrar::{
    unix_now_ms, JournalStore, MemoryStore, MessageRules, PushRules, RedisBindings, Registrar,
    SqliteStore, Store, StoreError,
};
use crate::reload::Reloader;
use crate::shutdown::{self, Signal, Signals};
use crate::transport::{FlowTokens, Transport, TransportConfig};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The binding store could not be opened or read.
    #[error("binding store: {0}")]
    Store(#[from] StoreError),
    /// A setting asks for something this build does not do yet.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A push provider could not be set up (key file, certificate…).
    #[error("push: {0}")]
    Push(#[from] PushError),
    /// Digest authentication could not be set up (users file).
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The TLS certificate or key could not be loaded (the message names the key).
    #[error("{0}")]
    Tls(#[from] crate::transport::tls::TlsError),
    /// A wildcard listener whose address toward the upstream cannot be learned.
    #[error(
        "sip.advertised_host: sip.listen {listen} is a wildcard address and there is no \
         route to the upstream {upstream} to learn which address to write in Via and \
         Path; set sip.advertised_host"
    )]
    NoAdvertisedAddress {
        /// The wildcard listen address.
        listen: SocketAddr,
        /// The upstream's address.
        upstream: SocketAddr,
    },
}

impl ServerError {
    /// True for faults of the configuration (a file a setting names cannot be read
    /// or used, a setting this build does not support, an address that cannot be
    /// advertised, a listen address the host does not have or may not bind): sipwake
    /// exits with status 2 for these, which systemd's `RestartPreventExitStatus=2`
    /// does not restart. The others (a port in use, a store that cannot be opened)
    /// may pass, and exit 1.
    pub fn is_config(&self) -> bool {
        match self {
            ServerError::Bind { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::PermissionDenied
            ),
            ServerError::Store(_) => false,
            ServerError::Unsupported(_)
            | ServerError::Push(_)
            | ServerError::Auth(_)
            | ServerError::Tls(_)
            | ServerError::NoAdvertisedAddress { .. } => true,
        }
    }
}

/// Opens and checks every file a setting names, as the start would (the users file,
/// APNs key or certificate and CA, the payload template, the FCM service account,
/// the TLS certificate and key when `tls.listen` is set, the TLS CA), and that a
/// wildcard listener can learn its address toward the upstream: the checks of
/// `--check-config` beyond the settings themselves, and the first thing a start does.
pub fn preflight(settings: &Settings) -> Result<(), ServerError> {
    if settings.auth.enabled {
        crate::auth::Auth::new(&settings.auth)?;
    }
    Pusher::new(&settings.push)?;
    server_cert(settings)?;
    crate::transport::tls::client_config(settings.tls.ca_file.as_deref())?;
    if settings.sip.advertised_host.is_none() {
        let upstream = settings
            .upstream
            .uri
            .as_ref()
            .and_then(|u| u.ip().map(|ip| SocketAddr::new(ip, u.port)));
        let sources = crate::transport::source::SourceAddrs::default();
        for &listen in &settings.sip.listen {
            if let Some(up) = upstream.filter(|_| listen.ip().is_unspecified()) {
                if listen.is_ipv4() == up.is_ipv4() && sources.toward(up).is_none() {
                    return Err(ServerError::NoAdvertisedAddress {
                        listen,
                        upstream: up,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The TLS server certificate, loaded only when a TLS listener will use it.
fn server_cert(
    settings: &Settings,
) -> Result<Option<Arc<crate::transport::tls::ServerCert>>, ServerError> {
    if settings.tls.listen.is_empty() {
        return Ok(None);
    }
    match (&settings.tls.cert_file, &settings.tls.key_file) {
        (Some(cert), Some(key)) => Ok(Some(crate::transport::tls::ServerCert::load(cert, key)?)),
        _ => Ok(None),
    }
}

const SECRET_KEY: &str = "flow_token_secret";
/// Several nodes: the digest nonce secret, shared in Redis.
const NONCE_KEY: &str = "nonce_secret";

/// A running sipwake: the proxy core and its transport.
pub struct Server {
    /// The proxy core.
    pub core: Arc<Core>,
}

impl Server {
    /// Opens the store, binds every listener and starts serving.
    pub async fn start(settings: Settings) -> Result<Server, ServerError> {
        preflight(&settings)?;
        if let Some(w) = crate::proxy::relay::expiry_warning(&settings) {
            warn!("{w}");
        }
        let mut auth = start_auth(&settings)?;
        let (registrar, secret) = match settings.store.backend {
            StoreBackend::Redis => {
                let shared = Arc::new(RedisBindings::connect(&settings.store.redis).await?);
                // every node signs and checks flow tokens with the same secret
                let secret = match &settings.proxy.flow_token_secret {
                    Some(s) => s.clone(),
                    None => shared.meta_or_init(SECRET_KEY, &fresh_secret()).await?,
                };
                info!(
                    url = %crate::config::redact_url(&settings.store.redis.url),
                    node = %settings.cluster.node_id,
                    advertise = %settings.cluster.advertise_uri,
                    "bindings shared in Redis"
                );
                if let Some(auth) = auth.as_mut() {
                    // a phone may answer one node's challenge at another
                    let key = shared.meta_or_init(NONCE_KEY, &fresh_secret()).await?;
                    let key: [u8; 32] = key.as_slice().try_into().map_err(|_| {
                        StoreError::Redis(format!("{NONCE_KEY} in Redis is not 32 bytes"))
                    })?;
                    auth.share_nonces(key);
                }
                let nodes = Arc::new(Nodes::new(
                    settings.cluster.node_id.clone(),
                    settings.cluster.advertise_uri.clone(),
                ));
                // the others are known before the first call is routed
                nodes.beat(&shared).await?;
                tokio::spawn(nodes.clone().run(shared.clone()));
                let registrar = Registrar::new_shared(settings.registrar.clone(), shared, nodes);
                (registrar, secret)
            }
            StoreBackend::Sqlite | StoreBackend::Journal | StoreBackend::Memory => {
                let store: Arc<dyn Store> = match settings.store.backend {
                    StoreBackend::Sqlite => Arc::new(SqliteStore::open(
                        &settings.store.path,
                        settings.store.sync_full,
                    )?),
                    StoreBackend::Journal => Arc::new(JournalStore::open(
                        &settings.store.path,
                        settings.store.sync_full,
                    )?),
                    _ => Arc::new(MemoryStore::new()),
                };
                let secret = match &settings.proxy.flow_token_secret {
                    Some(s) => s.clone(),
                    None => match store.get_meta(SECRET_KEY)? {
                        Some(s) => s,
                        None => {
                            // kept in the store so tokens in live dialogs survive a restart
                            let s = fresh_secret();
                            store.put_meta(SECRET_KEY, &s)?;
                            s
                        }
                    },
                };
                (Registrar::new(settings.registrar.clone(), store)?, secret)
            }
        };
        registrar.set_push_rules(PushRules {
            ttl_secs: settings.push.binding_ttl.as_secs(),
            max_expires: settings.push.max_expires,
        });
        if matches!(
            settings.store.backend,
            StoreBackend::Sqlite | StoreBackend::Journal
        ) {
            // the memory store has no disk to wait for
            registrar.set_refresh_write_behind(settings.store.refresh_write_behind);
        }
        let message_rules = MessageRules {
            max_per_aor: settings.push.messages.max_per_aor,
            max_total: settings.push.messages.max_total,
        };
        registrar.messages().set_rules(message_rules);
        if let Some(shared) = registrar.shared_messages() {
            shared.set_rules(message_rules);
        }
        let pusher = Arc::new(Pusher::new(&settings.push)?);
        // open the APNs connections now, so the first call does not pay a TLS handshake
        tokio::spawn(pusher.warm_up());
        let max_conns = crate::rlimit::fit_connections(settings.limits.max_connections);
        if max_conns < settings.limits.max_connections {
            warn!(
                max_connections = max_conns,
                "limits.max_connections lowered to fit the open-file limit"
            );
        }
        // a bad certificate stops the start, before anything listens; without a TLS
        // listener the files are not read at all
        let tls_cert = server_cert(&settings)?;
        let tls = match &tls_cert {
            Some(c) => Some(crate::transport::tls::server_config(c.clone())?),
            None => None,
        };
        let (transport, listeners) = Transport::bind(TransportConfig {
            listen: settings.sip.listen.clone(),
            udp: settings.sip.udp,
            tcp: settings.sip.tcp,
            max_message_size: settings.sip.max_message_size,
            tcp_idle_timeout: settings.sip.tcp_idle_timeout,
            max_connections: max_conns,
            max_connections_per_source: settings.limits.max_connections_per_source,
            // the upstream PBX opens as many connections as it likes, like a trusted peer
            trusted: settings
                .proxy
                .trusted_networks
                .iter()
                .copied()
                .chain(
                    settings
                        .upstream
                        .uri
                        .as_ref()
                        .and_then(|u| u.ip())
                        .map(crate::config::IpNet::host),
                )
                .collect(),
            first_message_timeout: settings.limits.first_message_timeout,
            tls_listen: settings.tls.listen.clone(),
            tls,
            tls_client: Some(crate::transport::tls::client_config(
                settings.tls.ca_file.as_deref(),
            )?),
            tls_cert,
        })
        .await
        .map_err(|(addr, source)| ServerError::Bind { addr, source })?;
        let core = Arc::new(Core::new(
            settings,
            transport.clone(),
            registrar,
            FlowTokens::new(&secret),
            pusher,
        ));
        if let Some(auth) = auth {
            core.set_auth(auth);
        }
        crate::proxy::cluster::start(&core);
        let handler = core.make_handler();
        transport.start(listeners, handler);
        crate::metrics::global().mark_start();
        if let Some(addr) = core.settings.admin.listen {
            crate::admin::start(core.clone(), addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
        }
        tokio::spawn(sweeper(core.clone()));
        tokio::spawn(crate::proxy::message::run(core.clone()));
        tokio::spawn(crate::proxy::refresh::run(core.clone()));
        info!(
            udp = ?transport.udp_addrs(),
            tcp = ?transport.tcp_addrs(),
            tls = ?transport.tls_addrs(),
            bindings = core.registrar.count(),
            "sipwake listening"
        );
        Ok(Server { core })
    }
}

/// 32 random bytes for a new flow-token secret.
fn fresh_secret() -> Vec<u8> {
    let mut s = vec![0u8; 32];
    let _ = getrandom::fill(&mut s);
    s
}

/// Loads the users file when authentication is on, and warns when sipwake is
/// exposed without it.
fn start_auth(settings: &Settings) -> Result<Option<crate::auth::Auth>, ServerError> {
    if let Some(w) = crate::auth::exposure_warning(settings) {
        warn!("{w}");
    }
    if !settings.auth.enabled {
        return Ok(None);
    }
    let auth = crate::auth::Auth::new(&settings.auth)?;
    for user in auth.users().unusable(&settings.auth.algorithms) {
        warn!(
            user,
            "users file: no hash for any of auth.algorithms; this user cannot log in"
        );
    }
    info!(
        users = auth.users().len(),
        realm = auth.realm(),
        "digest authentication on"
    );
    Ok(Some(auth))
}

/// The periodic work, on the runtime: every second the transactions whose Timer J ran
/// out (a slice per hold of the table's lock) and the bindings due (the registrar
/// visits only AORs due, a slice per hold of its lock), pausing between slices so
/// messages are not held up behind a burst of expiries; every 10 s dialogs and flows (each a constant-cost rotation) and, with
/// a shared store, the shared sweep.
async fn sweeper(core: Arc<Core>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    let mut trim = TrimWatch::default();
    let mut removed = 0;
    loop {
        tick.tick().await;
        // the longest slice of each kind: how long the message path may have waited
        // (logged at debug level from a millisecond)
        let mut tx_slice = Duration::ZERO;
        let mut pauses = 0;
        let mut reg_slice = Duration::ZERO;
        let now = Instant::now();
        loop {
            let started = Instant::now();
            let more = core
                .tx
                .sweep_slice(now, crate::transaction::table::SWEEP_CHUNK)
                .1;
            tx_slice = tx_slice.max(started.elapsed());
            if !more {
                break;
            }
            pauses = pause_between_slices(pauses).await;
        }
        n += 1;
        if core.registrar.shared().is_none() {
            let now = unix_now_ms();
            loop {
                let started = Instant::now();
                let (gone, more) = core
                    .registrar
                    .sweep_slice(now, crate::registrar::SWEEP_SLICE);
                reg_slice = reg_slice.max(started.elapsed());
                removed += gone;
                if !more {
                    break;
                }
                pauses = pause_between_slices(pauses).await;
            }
        }
        if tx_slice.max(reg_slice) >= Duration::from_millis(1) {
            tracing::debug!(
                tx_slice_us = tx_slice.as_micros(),
                registrar_slice_us = reg_slice.as_micros(),
                "a slice of the periodic sweep took a millisecond or more"
            );
        }
        if n.is_multiple_of(10) {
            let started = Instant::now();
            core.dialogs.sweep(Instant::now());
            if core.registrar.shared().is_some() {
                core.registrar.sweep(unix_now_ms());
            }
            core.transport
                .liveness()
                .sweep(core.settings.push.flow_timeout.max(Duration::from_secs(60)));
            tracing::debug!(
                took_us = started.elapsed().as_micros(),
                "dialog and flow sweep"
            );
            let (server, client) = core.tx.sizes();
            if trim.due(server + client, std::mem::take(&mut removed)) {
                tokio::task::spawn_blocking(release_freed_memory);
            }
        }
    }
}

/// Most pauses between sweep slices per tick (see [`pause_between_slices`]): 200 ms
/// of a second, enough for 25,000 expiries a second; past that the slices only yield.
const MAX_PAUSES: u32 = 200;

/// Lets the rest of the process run between two slices of the sweep. A bare yield
/// is not enough: the runtime thread goes straight back to the next slice, and the
/// store thread (which answers a new binding's REGISTER once committed) waits for the
/// scheduler to take the core from it, up to a time slice of the kernel's (3 ms and
/// more). A millisecond's sleep hands the core over; after [`MAX_PAUSES`] pauses in
/// one tick (a backlog) the slices only yield, so the sweep keeps up. Returns the
/// pauses taken so far.
async fn pause_between_slices(pauses: u32) -> u32 {
    if pauses < MAX_PAUSES {
        tokio::time::sleep(Duration::from_millis(1)).await;
        pauses + 1
    } else {
        tokio::task::yield_now().await;
        pauses
    }
}

/// Decides when a burst is over: a registration storm leaves tens of thousands of
/// finished transactions (each holds its response for 32 s) that are freed together.
#[derive(Debug, Default)]
struct TrimWatch {
    peak: usize,
    swept: usize,
}

impl TrimWatch {
    /// Entries freed before memory is worth handing back.
    const FREED: usize = 10_000;

    fn due(&mut self, transactions: usize, bindings_removed: usize) -> bool {
        self.peak = self.peak.max(transactions);
        self.swept += bindings_removed;
        let freed = self.peak - transactions + self.swept;
        if freed >= Self::FREED && transactions <= self.peak / 2 {
            self.peak = transactions;
            self.swept = 0;
            return true;
        }
        false
    }
}

/// Hands memory freed after a burst back to the OS. glibc keeps freed small blocks in
/// its heaps for reuse, so without this the resident size stays at the burst's peak.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists; it is
        // thread-safe and has no preconditions.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(released, "returned freed memory to the OS");
    }
}

/// Runs sipwake until SIGINT/SIGTERM, then stops gracefully (see [`run_with`]);
/// SIGHUP changes nothing without a [`Reloader`].
pub async fn run(settings: Settings) -> Result<(), ServerError> {
    run_with(settings, None).await
}

/// Runs sipwake: SIGHUP reloads through `reloader`; SIGTERM/SIGINT drains the calls
/// in progress (new calls get `503`) for at most `server.drain_timeout_secs`, then
/// closes the store and returns.
pub async fn run_with(
    settings: Settings,
    mut reloader: Option<Reloader>,
) -> Result<(), ServerError> {
    // before serving: from here on SIGHUP no longer kills the process
    let mut signals = Signals::new();
    let drain_timeout = settings.server.drain_timeout;
    let server = Server::start(settings).await?;
    let core = server.core;
    let mut reload = |core: &Core| match reloader.as_mut() {
        Some(r) => r.reload_and_log(core),
        None => warn!("SIGHUP ignored: started without a reloadable configuration"),
    };
    while signals.next().await == Signal::Reload {
        info!("SIGHUP: reloading the configuration");
        reload(&core);
    }
    info!(bindings = core.registrar.count(), "shutting down");
    shutdown::drain(&core, drain_timeout, &mut signals, || {
        info!("SIGHUP: reloading the configuration");
        reload(&core);
    })
    .await;
    shutdown::close_store(&core).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TrimWatch;

    #[test]
    fn trims_once_a_burst_has_drained() {
        let mut w = TrimWatch::default();
        assert!(!w.due(5_000, 0), "nothing freed yet");
        assert!(!w.due(60_000, 0), "burst still running");
        assert!(!w.due(40_000, 0), "only 20k of 60k freed");
        assert!(w.due(1_000, 0), "burst drained");
        assert!(!w.due(500, 0), "already trimmed");
        assert!(!w.due(500, 6_000));
        assert!(w.due(500, 6_000), "12k bindings swept since");
    }
}
