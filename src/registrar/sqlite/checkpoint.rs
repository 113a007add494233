//! The checkpointer: copies SQLite's write-ahead log into the database from a thread
//! and connection of its own, so commits never wait for a checkpoint.
//!
//! The thread runs in the background class (`crate::background`): a checkpoint copies
//! and syncs megabytes and took the core from the runtime and store threads for 2–3 ms
//! at a time when they share one.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::configure;
use crate::registrar::StoreError;

/// Log size above which the checkpointer copies the log into the database.
pub(super) const CHECKPOINT_AT: u64 = 16 << 20;

/// Checkpoints the write-ahead log from a connection of its own, off the commit path:
/// a PASSIVE checkpoint copies what it can while the store thread goes on committing.
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path, sync_full: bool) -> Result<Checkpointer, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        configure(&conn, sync_full).map_err(open_err)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sipwake-ckpt".into())
            .spawn(move || {
                crate::background::lower_background_thread("sipwake-ckpt");
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Duration::from_secs(1))
                {
                    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > CHECKPOINT_AT) {
                        let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                        if let Err(e) = r {
                            tracing::warn!(error = %e, "store checkpoint failed");
                        }
                    }
                }
            })
            .map_err(StoreError::Spawn)?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    /// Stops the thread and closes its connection, so the store thread's own close is
    /// the last one (SQLite then merges the log into the database and removes it).
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
