//! Signals and the graceful stop: on SIGTERM (or SIGINT) new calls get `503` with
//! `Retry-After` while REGISTER, in-dialog requests and responses go on, until the
//! last call in progress ends or `server.drain_timeout_secs` runs out; then the store
//! commits what is queued and closes. A second SIGTERM/SIGINT ends the wait at once.
//! SIGHUP asks for a reload, also while draining.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::proxy::Core;

/// A signal sipwake acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop.
    Stop,
    /// SIGHUP: reload.
    Reload,
}

/// The process's stop and reload signals. Create it before serving: until then
/// SIGHUP would kill the process.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers (a handler that cannot be installed is logged and
    /// skipped).
    pub fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let open = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "no {name} handler");
                    None
                }
            };
            Signals {
                term: open(SignalKind::terminate(), "SIGTERM"),
                int: open(SignalKind::interrupt(), "SIGINT"),
                hup: open(SignalKind::hangup(), "SIGHUP"),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        if s.recv().await.is_none() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.term) => Signal::Stop,
                _ = recv(&mut self.int) => Signal::Stop,
                _ = recv(&mut self.hup) => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals::new()
    }
}

/// How often the drain looks at the counts.
const POLL: Duration = Duration::from_millis(100);
/// Progress is logged when the counts change, at most this often…
const REPORT_MIN: Duration = Duration::from_secs(1);
/// …and at least this often.
const REPORT_MAX: Duration = Duration::from_secs(10);

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// No dialog and no call in setup was left.
    Idle,
    /// The drain timeout ran out with calls left.
    Timeout,
    /// A second stop signal.
    Interrupted,
}

/// Refuses new calls and waits until no dialog and no call in setup is left, or
/// `timeout`, or another stop signal; `on_reload` runs for SIGHUP meanwhile.
pub async fn drain(
    core: &Arc<Core>,
    timeout: Duration,
    signals: &mut Signals,
    mut on_reload: impl FnMut(),
) -> DrainEnd {
    core.start_draining();
    let started = Instant::now();
    let deadline = started + timeout;
    let counts = || (core.dialogs.count(), core.dialogs.in_setup());
    let (dialogs, in_setup) = counts();
    info!(
        dialogs,
        calls_in_setup = in_setup,
        drain_timeout_secs = timeout.as_secs(),
        "draining: new calls get 503, calls in progress go on"
    );
    let mut reported = ((dialogs, in_setup), started);
    loop {
        let (dialogs, in_setup) = counts();
        if dialogs == 0 && in_setup == 0 {
            info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "drained: no call left"
            );
            return DrainEnd::Idle;
        }
        let now = Instant::now();
        if now >= deadline {
            info!(
                dialogs,
                calls_in_setup = in_setup,
                "drain timeout: stopping with calls in progress"
            );
            return DrainEnd::Timeout;
        }
        let since = now.duration_since(reported.1);
        if (reported.0 != (dialogs, in_setup) && since >= REPORT_MIN) || since >= REPORT_MAX {
            info!(
                dialogs,
                calls_in_setup = in_setup,
                secs_left = deadline.duration_since(now).as_secs(),
                "draining"
            );
            reported = ((dialogs, in_setup), now);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL.min(deadline.duration_since(now))) => {}
            sig = signals.next() => match sig {
                Signal::Reload => on_reload(),
                Signal::Stop => {
                    warn!(dialogs, calls_in_setup = in_setup, "second stop signal: stopping now");
                    return DrainEnd::Interrupted;
                }
            },
        }
    }
}

/// Commits what the store has queued and closes it (blocking work, off the runtime's
/// threads).
pub async fn close_store(core: &Arc<Core>) {
    core.registrar.flush_refreshes();
    let store = core.registrar.store().clone();
    match tokio::task::spawn_blocking(move || store.close()).await {
        Ok(Ok(())) => info!("store closed"),
        Ok(Err(e)) => warn!(error = %e, "store not closed cleanly"),
        Err(e) => warn!(error = %e, "store not closed cleanly"),
    }
}
