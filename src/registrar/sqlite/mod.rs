//! Embedded on-disk store: one SQLite file in WAL mode, owned by a dedicated thread.
//!
//! The thread owns the only connection, so SQLite never blocks the async runtime and
//! every operation is applied in submission order. Writes use adaptive group commit:
//! the thread blocks for the first job, drains whatever else is already queued (no
//! sleeping, no fixed delay) and commits all of it in one transaction. When idle a
//! job is committed at once; under load one fsync covers many REGISTERs.
//!
//! The write-ahead log is checkpointed by a thread of its own (`checkpoint.rs`).
//!
//! A deferred pure refresh (`behind`) goes to the narrow `refreshes` table rather than
//! rewriting the binding's row: four small columns instead of fifteen, so a flush of
//! thousands of refreshes dirties a quarter of the pages. The newer of the two counts
//! (the `current_bindings` view, which `load` reads); opening the store folds the
//! refreshes into the rows.

mod checkpoint;
mod messages;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::messages::StoredMessage;
use super::store::{Done, Store, StoreError, StoreOp};
use super::{Binding, BindingFields};
use checkpoint::Checkpointer;

/// Schema version kept in `PRAGMA user_version`, so later builds can migrate.
/// 2: the `refreshes` table and the `current_bindings` view (a version 1 file gains
/// them when opened).
const SCHEMA_VERSION: i64 = 2;

/// Upper bound on jobs per group commit, so one transaction (and the latency of the
/// first job in it) stays bounded even under a flood.
const MAX_BATCH: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bindings (
    aor           TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    contact       TEXT    NOT NULL,
    match_key     TEXT    NOT NULL,
    q             INTEGER,
    expires_at    INTEGER NOT NULL,
    call_id       TEXT    NOT NULL,
    cseq          INTEGER NOT NULL,
    flow          TEXT,
    instance      TEXT,
    reg_id        INTEGER,
    user_agent    TEXT,
    path          TEXT    NOT NULL,
    push          TEXT,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (aor, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refreshes (
    aor           TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    expires_at    INTEGER NOT NULL,
    call_id       TEXT    NOT NULL,
    cseq          INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (aor, key)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS current_bindings AS
SELECT b.aor, b.key, b.contact, b.match_key, b.q,
    CASE WHEN r.updated_at_ms > b.updated_at_ms THEN r.expires_at ELSE b.expires_at END
        AS expires_at,
    CASE WHEN r.updated_at_ms > b.updated_at_ms THEN r.call_id ELSE b.call_id END
        AS call_id,
    CASE WHEN r.updated_at_ms > b.updated_at_ms THEN r.cseq ELSE b.cseq END AS cseq,
    b.flow, b.instance, b.reg_id, b.user_agent, b.path, b.push,
    MAX(b.updated_at_ms, IFNULL(r.updated_at_ms, 0)) AS updated_at_ms
FROM bindings b LEFT JOIN refreshes r ON r.aor = b.aor AND r.key = b.key;
";

/// Written back into `bindings` when the store opens, so the refresh rows do not
/// outlive a restart.
const FOLD_REFRESHES: &str = "
UPDATE bindings
    SET expires_at = r.expires_at, call_id = r.call_id, cseq = r.cseq,
        updated_at_ms = r.updated_at_ms
    FROM refreshes r
    WHERE r.aor = bindings.aor AND r.key = bindings.key
        AND r.updated_at_ms > bindings.updated_at_ms;
DELETE FROM refreshes;
";

const PUT_BINDING: &str = "INSERT OR REPLACE INTO bindings
    (aor, key, contact, match_key, q, expires_at, call_id, cseq, flow, instance, reg_id,
     user_agent, path, push, updated_at_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";
/// A deferred pure refresh (see `behind`): only what a refresh moves, in a narrow
/// table of its own, about a quarter of a binding row. The newer of a binding's row and
/// its refresh row counts (by `updated_at_ms`: a later `Put` writes the whole row with
/// a later time, so it needs no delete here).
const PUT_REFRESH: &str = "INSERT OR REPLACE INTO refreshes
    (aor, key, expires_at, call_id, cseq, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const DELETE_BINDING: &str = "DELETE FROM bindings WHERE aor = ?1 AND key = ?2";
const DELETE_REFRESH: &str = "DELETE FROM refreshes WHERE aor = ?1 AND key = ?2";
/// Bindings with their refreshes applied; `{}` is `current_bindings`, or `bindings` in
/// a version 1 file read without upgrading it.
const LOAD_BINDINGS: &str = "SELECT aor, key, contact, match_key, q, expires_at, call_id,
    cseq, flow, instance, reg_id, user_agent, path, push, updated_at_ms
    FROM {} ORDER BY aor, updated_at_ms, key";
const PUT_META: &str = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)";
const GET_META: &str = "SELECT value FROM meta WHERE key = ?1";

/// SQLite-backed [`Store`]. Dropping it lets the thread finish every queued job, then
/// waits for it to exit, so a reopen afterwards sees everything submitted.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

/// Work for the store thread.
enum Job {
    Write(WriteJob),
    Read(ReadJob),
}

/// A job that only reads (or, in tests, parks the thread); it runs after the writes
/// queued before it are committed.
enum ReadJob {
    Load {
        reply: mpsc::SyncSender<Result<Vec<Binding>, StoreError>>,
    },
    LoadMessages {
        reply: mpsc::SyncSender<Result<Vec<StoredMessage>, StoreError>>,
    },
    GetMeta {
        key: String,
        reply: mpsc::SyncSender<Result<Option<Vec<u8>>, StoreError>>,
    },
    /// Commit what is queued before it, close the connection (SQLite checkpoints the
    /// write-ahead log into the database and removes it) and stop the thread.
    Close {
        reply: mpsc::SyncSender<Result<(), StoreError>>,
    },
    /// Parks the thread until released, so tests can queue work deterministically.
    #[cfg(test)]
    Hold {
        started: mpsc::SyncSender<()>,
        release: mpsc::Receiver<()>,
    },
}

/// A job that changes the database and can share a transaction with others.
enum WriteJob {
    Ops {
        ops: Vec<StoreOp>,
        done: Done,
    },
    Meta {
        key: String,
        value: Vec<u8>,
        reply: mpsc::SyncSender<Result<(), StoreError>>,
    },
    /// Deferred pure refreshes (`Store::submit_refreshes_then`).
    Refresh {
        bindings: Vec<Arc<Binding>>,
        done: Done,
    },
}

impl Job {
    /// Tells the submitter its job was not taken (the store thread is gone).
    fn answer_closed(self) {
        if let Job::Write(w) = self {
            w.answer(Err(StoreError::Closed));
        }
    }
}

impl WriteJob {
    fn answer(self, result: Result<(), StoreError>) {
        // A requester that stopped waiting is not an error for the store.
        match self {
            WriteJob::Ops { done, .. } | WriteJob::Refresh { done, .. } => done(result),
            WriteJob::Meta { reply, .. } => {
                let _ = reply.send(result);
            }
        }
    }
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and start its thread.
    ///
    /// `sync_full` selects `synchronous=FULL` (a commit survives power loss) instead of
    /// `NORMAL` (a commit survives a process crash; WAL keeps the file consistent).
    pub fn open(path: &Path, sync_full: bool) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let guard = lock_file(path)?;
        let mut conn = Connection::open(path).map_err(open_err)?;
        configure(&conn, sync_full).map_err(open_err)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::UnsupportedSchema {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        create_schema(&mut conn).map_err(open_err)?;
        let checkpointer = Checkpointer::start(path, sync_full)?;

        let (jobs, queue) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let worker_commits = Arc::clone(&commits);
        let worker = std::thread::Builder::new()
            .name("sipwake-store".into())
            .spawn(move || {
                run(conn, queue, &worker_commits, checkpointer);
                drop(guard);
            })
            .map_err(StoreError::Spawn)?;
        Ok(Self {
            path: path.to_path_buf(),
            jobs: Some(jobs),
            worker: Some(worker),
            commits,
        })
    }

    /// Every binding in the database at `path`, read on a read-only connection of its
    /// own (so also while sipwake runs), in the order [`Store::load`] gives them. For
    /// `sipwake bindings dump`.
    pub fn read_bindings(path: &Path) -> Result<Vec<Binding>, StoreError> {
        load(&read_only(path)?)
    }

    /// Everything the database at `path` keeps, read on a read-only connection: for
    /// moving a store to the journal.
    pub(in crate::registrar) fn read_contents(path: &Path) -> Result<Contents, StoreError> {
        let conn = read_only(path)?;
        let meta = conn
            .prepare("SELECT key, value FROM meta")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Contents {
            bindings: load(&conn)?,
            messages: messages::load(&conn)?,
            meta,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write transactions committed so far (diagnostic: compared with the number of
    /// submits it shows how much group commit is batching).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)
    }

    /// Park the store thread until the returned sender is dropped or sent to.
    #[cfg(test)]
    fn hold(&self) -> mpsc::SyncSender<()> {
        let (started_tx, started_rx) = mpsc::sync_channel(1);
        let (release_tx, release_rx) = mpsc::sync_channel(1);
        self.send(Job::Read(ReadJob::Hold {
            started: started_tx,
            release: release_rx,
        }))
        .unwrap();
        started_rx.recv().unwrap();
        release_tx
    }
}

impl Store for SqliteStore {
    fn load(&self) -> Result<Vec<Binding>, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Read(ReadJob::Load { reply }))?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn load_messages(&self) -> Result<Vec<StoredMessage>, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Read(ReadJob::LoadMessages { reply }))?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn submit_then(&self, ops: Vec<StoreOp>, done: Done) {
        let Some(jobs) = self.jobs.as_ref() else {
            return done(Err(StoreError::Closed));
        };
        if let Err(mpsc::SendError(job)) = jobs.send(Job::Write(WriteJob::Ops { ops, done })) {
            job.answer_closed();
        }
    }

    fn submit_refreshes_then(&self, bindings: Vec<Arc<Binding>>, done: Done) {
        let Some(jobs) = self.jobs.as_ref() else {
            return done(Err(StoreError::Closed));
        };
        let job = Job::Write(WriteJob::Refresh { bindings, done });
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            job.answer_closed();
        }
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Read(ReadJob::GetMeta {
            key: key.to_owned(),
            reply,
        }))?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Write(WriteJob::Meta {
            key: key.to_owned(),
            value: value.to_vec(),
            reply,
        }))?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn close(&self) -> Result<(), StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Read(ReadJob::Close { reply }))?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Disconnecting the channel ends the thread's loop once the queue is drained.
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            // Dropped from a commit callback on the store thread itself: it cannot join
            // itself; it ends on its own once the queue it is draining is empty.
            if worker.thread().id() == std::thread::current().id() {
                return;
            }
            if worker.join().is_err() {
                tracing::warn!(path = %self.path.display(), "store thread panicked");
            }
        }
    }
}

/// What a SQLite store keeps.
pub(in crate::registrar) struct Contents {
    /// The bindings.
    pub(in crate::registrar) bindings: Vec<Binding>,
    /// The kept MESSAGEs.
    pub(in crate::registrar) messages: Vec<StoredMessage>,
    /// The meta values (the flow-token secret).
    pub(in crate::registrar) meta: Vec<(String, Vec<u8>)>,
}

/// Whether `path` is a SQLite database file (by its header).
pub(in crate::registrar) fn is_database(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"SQLite format 3\0")
}

fn read_only(path: &Path) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn configure(conn: &Connection, sync_full: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "store could not switch to WAL journal mode");
    }
    conn.pragma_update(
        None,
        "synchronous",
        if sync_full { "FULL" } else { "NORMAL" },
    )?;
    // Checkpoints (copying the log into the database and syncing it) take 100 ms and
    // more; done by a commit they hold up every REGISTER queued behind it. The
    // checkpointer thread does them on its own connection instead.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // once checkpointed and started over, the log file is cut back to this size
    conn.pragma_update(None, "journal_size_limit", 64 << 20)?;
    Ok(())
}

/// Keeps a second sipwake off the same store: an exclusive `flock` on `<db>.lock`,
/// held for as long as the returned file is open.
pub(super) fn lock_file(db: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StoreError::InUse { path });
        }
    }
    Ok(file)
}

fn create_schema(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(messages::SCHEMA)?;
    tx.execute_batch(FOLD_REFRESHES)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// The store thread: group commit until every handle is gone and the queue is empty,
/// or until a `Close` job.
fn run(
    mut conn: Connection,
    queue: mpsc::Receiver<Job>,
    commits: &AtomicU64,
    checkpointer: Checkpointer,
) {
    let close_reply = group_commit(&mut conn, &queue, commits);
    // Jobs queued after the close fail; once the queue is gone, senders see `Closed`.
    while let Ok(job) = queue.try_recv() {
        job.answer_closed();
    }
    drop(queue);
    drop(checkpointer);
    let result = conn.close().map_err(|(_, e)| StoreError::Sqlite(e));
    if let Some(reply) = close_reply {
        let _ = reply.send(result);
    } else if let Err(e) = result {
        tracing::warn!(error = %e, "store not closed cleanly");
    }
}

/// Runs jobs until the queue is disconnected (`None`) or a `Close` job arrives (its
/// reply channel).
fn group_commit(
    conn: &mut Connection,
    queue: &mpsc::Receiver<Job>,
    commits: &AtomicU64,
) -> Option<mpsc::SyncSender<Result<(), StoreError>>> {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut writes = Vec::new();
        let mut jobs = batch.into_iter();
        while let Some(job) = jobs.next() {
            match job {
                Job::Write(w) => writes.push(w),
                Job::Read(ReadJob::Close { reply }) => {
                    commit_group(conn, std::mem::take(&mut writes), commits);
                    jobs.for_each(Job::answer_closed);
                    return Some(reply);
                }
                Job::Read(read) => {
                    // Reads see every write queued before them.
                    commit_group(conn, std::mem::take(&mut writes), commits);
                    run_read(conn, read);
                }
            }
        }
        commit_group(conn, writes, commits);
    }
    None
}

/// Commit `group` in one transaction and answer each job. If it fails, retry each job
/// on its own so one bad job cannot fail the others batched with it.
fn commit_group(conn: &mut Connection, group: Vec<WriteJob>, commits: &AtomicU64) {
    if group.is_empty() {
        return;
    }
    match crate::metrics::global().timed_commit(|| apply_group(conn, &group)) {
        Ok(()) => {
            commits.fetch_add(1, Ordering::Relaxed);
            for job in group {
                job.answer(Ok(()));
            }
        }
        Err(e) if group.len() == 1 => {
            if let Some(job) = group.into_iter().next() {
                job.answer(Err(e));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = group.len(), "group commit failed; retrying jobs one by one");
            for job in group {
                commit_group(conn, vec![job], commits);
            }
        }
    }
}

/// One transaction for `group`. BEGIN and COMMIT are cached statements: at a few
/// REGISTERs per commit, parsing them each time (what `Connection::transaction` does)
/// cost as much as writing the row.
fn apply_group(conn: &mut Connection, group: &[WriteJob]) -> Result<(), StoreError> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let applied = apply_jobs(conn, group)
        .and_then(|()| Ok(conn.prepare_cached("COMMIT")?.execute([]).map(drop)?));
    if applied.is_err() && !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "store rollback failed");
        }
    }
    applied
}

fn apply_jobs(conn: &Connection, group: &[WriteJob]) -> Result<(), StoreError> {
    for job in group {
        match job {
            WriteJob::Ops { ops, .. } => {
                for op in ops {
                    apply_op(conn, op)?;
                }
            }
            WriteJob::Meta { key, value, .. } => {
                conn.prepare_cached(PUT_META)?
                    .execute(params![key, value])?;
            }
            WriteJob::Refresh { bindings, .. } => {
                let mut put = conn.prepare_cached(PUT_REFRESH)?;
                for b in bindings {
                    put.execute(params![
                        b.aor(),
                        b.key(),
                        b.expires_at,
                        b.call_id(),
                        b.cseq,
                        b.updated_at_ms
                    ])?;
                }
            }
        }
    }
    Ok(())
}

fn apply_op(tx: &Connection, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::Put(b) => {
            tx.prepare_cached(PUT_BINDING)?.execute(params![
                b.aor(),
                b.key(),
                b.contact(),
                b.match_key(),
                b.q,
                b.expires_at,
                b.call_id(),
                b.cseq,
                b.flow(),
                b.instance(),
                b.reg_id,
                b.user_agent(),
                encode_path(&b.path),
                b.push(),
                b.updated_at_ms,
            ])?;
        }
        StoreOp::Delete { aor, key } => {
            tx.prepare_cached(DELETE_BINDING)?
                .execute(params![aor, key])?;
            tx.prepare_cached(DELETE_REFRESH)?
                .execute(params![aor, key])?;
        }
        StoreOp::PutMessage(m) => messages::put(tx, m)?,
        StoreOp::DeleteMessage { id } => messages::delete(tx, id)?,
    }
    Ok(())
}

fn run_read(conn: &Connection, job: ReadJob) {
    // A requester that stopped waiting is not an error for the store.
    match job {
        ReadJob::Load { reply } => {
            let _ = reply.send(load(conn));
        }
        ReadJob::LoadMessages { reply } => {
            let _ = reply.send(messages::load(conn));
        }
        ReadJob::Close { reply } => {
            // handled by the thread's loop; answered here only if it ever gets this far
            let _ = reply.send(Ok(()));
        }
        ReadJob::GetMeta { key, reply } => {
            let result = conn
                .prepare_cached(GET_META)
                .and_then(|mut s| s.query_row([&key], |r| r.get(0)).optional())
                .map_err(StoreError::from);
            let _ = reply.send(result);
        }
        #[cfg(test)]
        ReadJob::Hold { started, release } => {
            let _ = started.send(());
            let _ = release.recv();
        }
    }
}

fn load(conn: &Connection) -> Result<Vec<Binding>, StoreError> {
    // a version 1 file, read-only (`bindings dump`, the journal's import), has no view
    let view: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'current_bindings')",
        [],
        |r| r.get(0),
    )?;
    let from = if view { "current_bindings" } else { "bindings" };
    let mut stmt = conn.prepare(&LOAD_BINDINGS.replace("{}", from))?;
    let rows = stmt.query_map([], |r| {
        Ok((
            BindingFields {
                aor: r.get(0)?,
                key: r.get(1)?,
                contact: r.get(2)?,
                match_key: r.get(3)?,
                q: r.get(4)?,
                expires_at: r.get(5)?,
                call_id: r.get(6)?,
                cseq: r.get(7)?,
                flow: r.get(8)?,
                instance: r.get(9)?,
                reg_id: r.get(10)?,
                user_agent: r.get(11)?,
                path: Vec::new(),
                push: r.get(13)?,
                updated_at_ms: r.get(14)?,
                node: None,
            },
            r.get::<_, String>(12)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut binding, path) = row?;
        binding.path = decode_path(&path).map_err(|reason| StoreError::Corrupt {
            aor: binding.aor.clone(),
            key: binding.key.clone(),
            reason,
        })?;
        out.push(Binding::new(binding));
    }
    Ok(out)
}

/// Path values as text: each entry with `\` and newline escaped, then terminated by a
/// newline. Unambiguous for any entries, including empty ones and an empty list.
fn encode_path(path: &[String]) -> String {
    let mut out = String::with_capacity(path.iter().map(|p| p.len() + 1).sum());
    for entry in path {
        for c in entry.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    out
}

fn decode_path(text: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut entry = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => entry.push('\\'),
                Some('n') => entry.push('\n'),
                _ => return Err("bad escape in path"),
            },
            '\n' => out.push(std::mem::take(&mut entry)),
            c => entry.push(c),
        }
    }
    if !entry.is_empty() {
        return Err("unterminated path entry");
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
