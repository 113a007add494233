//! Wiring: builds the store, registrar, transports and proxy from settings and runs
//! them until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::{Settings, StoreBackend};
use crate::proxy::Core;
use crate::push::{PushError, Pusher};
use crate::registrar::{
    unix_now_ms, MemoryStore, PushRules, Registrar, SqliteStore, Store, StoreError,
};
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
}

const SECRET_KEY: &str = "flow_token_secret";

/// A running sipwake: the proxy core and its transport.
pub struct Server {
    /// The proxy core.
    pub core: Arc<Core>,
}

impl Server {
    /// Opens the store, binds every listener and starts serving.
    pub async fn start(settings: Settings) -> Result<Server, ServerError> {
        let store: Arc<dyn Store> = match settings.store.backend {
            StoreBackend::Sqlite => Arc::new(SqliteStore::open(
                &settings.store.path,
                settings.store.sync_full,
            )?),
            StoreBackend::Memory => Arc::new(MemoryStore::new()),
        };
        let secret = match &settings.proxy.flow_token_secret {
            Some(s) => s.clone(),
            None => match store.get_meta(SECRET_KEY)? {
                Some(s) => s,
                None => {
                    // kept in the store so tokens in live dialogs survive a restart
                    let mut s = vec![0u8; 32];
                    let _ = getrandom::fill(&mut s);
                    store.put_meta(SECRET_KEY, &s)?;
                    s
                }
            },
        };
        let registrar = Registrar::new(settings.registrar.clone(), store)?;
        registrar.set_push_rules(PushRules {
            ttl_secs: settings.push.binding_ttl.as_secs(),
            max_expires: settings.push.max_expires,
        });
        let pusher = Arc::new(Pusher::new(&settings.push)?);
        // open the APNs connections now, so the first call does not pay a TLS handshake
        tokio::spawn(pusher.warm_up());
        let (transport, listeners) = Transport::bind(TransportConfig {
            listen: settings.sip.listen.clone(),
            udp: settings.sip.udp,
            tcp: settings.sip.tcp,
            max_message_size: settings.sip.max_message_size,
            tcp_idle_timeout: settings.sip.tcp_idle_timeout,
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
        let handler = core.make_handler();
        transport.start(listeners, handler);
        crate::metrics::global().mark_start();
        if let Some(addr) = core.settings.admin.listen {
            crate::admin::start(core.clone(), addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })?;
        }
        tokio::spawn(sweeper(core.clone()));
        info!(
            udp = ?transport.udp_addrs(),
            tcp = ?transport.tcp_addrs(),
            bindings = core.registrar.count(),
            "sipwake listening"
        );
        Ok(Server { core })
    }
}

async fn sweeper(core: Arc<Core>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        core.tx.sweep(Instant::now());
        n += 1;
        if n.is_multiple_of(10) {
            core.registrar.sweep(unix_now_ms());
            core.transport
                .liveness()
                .sweep(core.settings.push.flow_timeout.max(Duration::from_secs(60)));
        }
    }
}

/// Runs sipwake until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> Result<(), ServerError> {
    let server = Server::start(settings).await?;
    shutdown_signal().await;
    info!(bindings = server.core.registrar.count(), "shutting down");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "no SIGTERM handler");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
