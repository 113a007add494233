//! The durable store behind the registrar: a back-end-neutral trait (no SQL in it, so a
//! Redis back end fits), the write operations, the errors, and the stored MESSAGE
//! the operations carry (here, not in `messages.rs`, so the store does not depend on
//! the queue that uses it).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::Binding;

/// One write to the store. A batch of ops passed to [`Store::submit`] is applied
/// atomically and in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Insert or replace the binding identified by its `(aor, key)`.
    Put(Arc<Binding>),
    /// Delete the binding `(aor, key)`, if present.
    Delete {
        /// AOR of the binding.
        aor: String,
        /// Key of the binding within the AOR.
        key: String,
    },
    /// Insert or replace a MESSAGE kept for a sleeping phone, by its id.
    PutMessage(Arc<StoredMessage>),
    /// Delete the kept MESSAGE with this id, if present.
    DeleteMessage {
        /// [`StoredMessage::id`].
        id: String,
    },
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite engine reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database's parent directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be opened or prepared.
    #[error("cannot open store {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer sipwake with an unknown schema.
    #[error("store {path} has schema version {found}; this build supports up to {supported}")]
    UnsupportedSchema {
        /// The database file.
        path: PathBuf,
        /// Schema version found in the file.
        found: i64,
        /// Highest schema version this build understands.
        supported: i64,
    },
    /// The store's worker thread could not be started.
    #[error("cannot start store thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// A stored record could not be decoded.
    #[error("corrupt stored binding {aor} {key}: {reason}")]
    Corrupt {
        /// AOR of the record.
        aor: String,
        /// Key of the record.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A journal file could not be read or written (`store.backend = "journal"`).
    #[error("journal {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A journal file is damaged in a way a crash cannot explain.
    #[error("journal {path}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another process (a second sipwake) holds the store.
    #[error("store is in use by another process (lock file {path})")]
    InUse {
        /// The lock file.
        path: PathBuf,
    },
    /// The store's worker has stopped, so the operation was not performed.
    #[error("store thread stopped")]
    Closed,
    /// Redis failed, timed out or is unreachable (`store.backend = "redis"`).
    #[error("redis: {0}")]
    Redis(String),
}

/// What to run once a submitted batch is durable (or failed). It runs on whichever
/// thread finished the batch (the store's own thread for SQLite, the submitter's for
/// memory), so it must be short and must not block.
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Durable keeping of bindings plus a small key/value area.
///
/// `load`, `get_meta` and `put_meta` may block briefly: call them at startup or from
/// blocking contexts. `submit` and `submit_then` never block; their result comes once
/// the ops are durable (or failed).
pub trait Store: Send + Sync + 'static {
    /// Every stored binding, expired ones included (the registrar sweeps those).
    fn load(&self) -> Result<Vec<Binding>, StoreError>;

    /// Every kept MESSAGE, expired ones included (swept after loading), in any order.
    fn load_messages(&self) -> Result<Vec<StoredMessage>, StoreError>;

    /// Queue `ops` for atomic application in submission order; the receiver yields the
    /// outcome once committed. Ops submitted earlier are committed no later than ops
    /// submitted after them.
    fn submit(&self, ops: Vec<StoreOp>) -> oneshot::Receiver<Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        self.submit_then(
            ops,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx
    }

    /// Like [`Store::submit`], but calls `done` with the outcome instead of waking a
    /// waiter: a REGISTER is answered straight from the thread that committed it,
    /// without a hand-off back to the runtime.
    fn submit_then(&self, ops: Vec<StoreOp>, done: Done);

    /// Writes deferred pure refreshes (see `behind`): each binding is stored already
    /// and differs from its stored version only in expiry, Call-ID, CSeq and
    /// `updated_at_ms`, so a store may write just those. Ordered with
    /// [`Store::submit_then`] like any submit. By default, a `Put` each.
    fn submit_refreshes_then(&self, bindings: Vec<Arc<Binding>>, done: Done) {
        self.submit_then(bindings.into_iter().map(StoreOp::Put).collect(), done);
    }

    /// Read a small value (e.g. the flow-token secret).
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Write a small value durably.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Commits everything submitted so far and closes the store (graceful shutdown);
    /// later operations fail with [`StoreError::Closed`]. Blocks until done.
    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// One stored MESSAGE.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Unique id (random hex), the store's key.
    pub id: String,
    /// The AOR it is for (`user@domain`).
    pub aor: String,
    /// Arrival order across the whole store: messages of an AOR are delivered by it.
    pub seq: u64,
    /// `From` header value as received (with its tag).
    pub from: String,
    /// `To` header value as received.
    pub to: String,
    /// `Call-ID` as received, kept so a phone can recognise a repeated delivery.
    pub call_id: String,
    /// `CSeq` number as received.
    pub cseq: u32,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
    /// When it arrived (unix ms).
    pub received_at_ms: u64,
    /// When it is dropped undelivered (unix ms).
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the text is the users' own: never in logs
        f.debug_struct("StoredMessage")
            .field("id", &self.id)
            .field("aor", &self.aor)
            .field("seq", &self.seq)
            .field("call_id", &self.call_id)
            .field("bytes", &self.body.len())
            .field("received_at_ms", &self.received_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish_non_exhaustive()
    }
}
