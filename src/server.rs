//! Wiring: builds the store, registrar, transports and proxy from settings and runs them.

use crate::config::Settings;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs sipwake until SIGINT/SIGTERM.
pub async fn run(settings: Settings) -> Result<(), ServerError> {
    let _ = settings;
    Ok(())
}
