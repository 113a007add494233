//! Append-only binding journal (`store.backend = "journal"`): a binding change costs
//! one small record appended to a log file, not the B-tree pages SQLite rewrites.
//!
//! One thread owns the log, like the SQLite store's: it blocks for the first job,
//! drains whatever else is queued and appends all of it with one `write` (group
//! commit), then answers every job. With `store.synchronous = "normal"` that write
//! survives a crash of sipwake (the kernel holds it), as SQLite's WAL with
//! `synchronous=NORMAL` does; with `"full"` the log is also synced (`fdatasync`)
//! before the answers, so it survives power loss.
//!
//! Once the log passes a size, the thread switches to a new log file and a
//! compaction thread writes a snapshot of everything before it, then deletes the
//! files it replaces (`files.rs`). At start the snapshot and the logs after it are
//! replayed; a torn record at the end of a log (a write cut by `kill -9`) is dropped
//! and cut off before new appends. Every file starts with a format version
//! (`codec.rs`). `sipwake bindings dump` prints what the files hold, also while
//! sipwake runs.

mod codec;
mod files;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::messages::StoredMessage;
use super::store::{Done, Store, StoreError, StoreOp};
use super::Binding;
use codec::{Key, Kind, Value};
use files::Files;

/// Upper bound on jobs per group commit, so one write (and the latency of the first
/// job in it) stays bounded even under a flood.
const MAX_BATCH: usize = 4096;

/// Log size from which the log is switched and compacted. Compaction also waits for
/// the log to reach twice the last snapshot: it reads both, so each byte appended is
/// read back at most 1.5 times on average, however many bindings there are.
const COMPACT_AT: u64 = 64 << 20;

/// Journal-backed [`Store`]. Dropping it lets the thread finish every queued job, then
/// waits for it (and a running compaction) to end.
#[derive(Debug)]
pub struct JournalStore {
    files: Files,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

enum Job {
    Ops {
        ops: Vec<StoreOp>,
        done: Done,
    },
    Meta {
        key: String,
        value: Vec<u8>,
        reply: mpsc::SyncSender<Result<(), StoreError>>,
    },
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
    Close {
        reply: mpsc::SyncSender<Result<(), StoreError>>,
    },
    /// Switch the log and compact now, whatever its size (tests).
    #[cfg(test)]
    Compact {
        reply: mpsc::SyncSender<()>,
    },
}

impl Job {
    fn answer_closed(self) {
        match self {
            Job::Ops { done, .. } => done(Err(StoreError::Closed)),
            Job::Meta { reply, .. } | Job::Close { reply } => {
                let _ = reply.send(Err(StoreError::Closed));
            }
            Job::Load { reply } => {
                let _ = reply.send(Err(StoreError::Closed));
            }
            Job::LoadMessages { reply } => {
                let _ = reply.send(Err(StoreError::Closed));
            }
            Job::GetMeta { reply, .. } => {
                let _ = reply.send(Err(StoreError::Closed));
            }
            #[cfg(test)]
            Job::Compact { .. } => {}
        }
    }
}

/// A write whose answer waits for its group's append.
enum Waiting {
    Ops(Done),
    Meta(String, Vec<u8>, mpsc::SyncSender<Result<(), StoreError>>),
}

impl JournalStore {
    /// Open (creating if needed) the journal whose files are named after `prefix`
    /// (`<prefix>.<gen>.log`, `<prefix>.<gen>.snap`, `<prefix>.lock`) and start its
    /// thread. `sync_full`: sync the log before answering (survives power loss).
    pub fn open(prefix: &Path, sync_full: bool) -> Result<Self, StoreError> {
        let files = Files::new(prefix);
        let dir = files.dir();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let guard = super::sqlite::lock_file(prefix)?;
        let replayed = files.replay(None)?;
        let snapshot = replayed.snapshot.unwrap_or(0);
        files.remove_below(snapshot)?;
        let import = (replayed.snapshot.is_none()
            && replayed.last_log.is_none()
            && super::sqlite::is_database(prefix))
        .then(|| super::sqlite::SqliteStore::read_contents(prefix))
        .transpose()?;
        let mut meta: HashMap<String, Vec<u8>> = replayed
            .state
            .iter()
            .filter_map(|(k, p)| match (k, codec::decode(p)) {
                (Key::Meta(_), Some(Value::Meta(k, v))) => Some((k, v)),
                _ => None,
            })
            .collect();
        let snapshot_size = (snapshot > 0)
            .then(|| std::fs::metadata(files.snapshot(snapshot)).map(|m| m.len()))
            .transpose()
            .map_err(|source| StoreError::Io {
                path: files.snapshot(snapshot),
                source,
            })?
            .unwrap_or(0);
        let mut log = match replayed.last_log {
            Some((gen, end, headerless)) => Log::reopen(&files, gen, end, headerless, sync_full)?,
            None => Log::create(&files, snapshot.max(1), sync_full)?,
        };
        drop(replayed);
        if let Some(contents) = import {
            import_sqlite(prefix, &files, &mut log, contents, &mut meta)?;
        }

        let (jobs, queue) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let mut thread = Thread {
            files: files.clone(),
            log,
            meta,
            commits: Arc::clone(&commits),
            compactor: Compactor {
                busy: Arc::new(AtomicBool::new(false)),
                snapshot_size: Arc::new(AtomicU64::new(snapshot_size)),
                deleting: Arc::new(Mutex::new(())),
                running: None,
            },
        };
        let worker = std::thread::Builder::new()
            .name("sipwake-store".into())
            .spawn(move || {
                thread.run(queue);
                drop(guard);
            })
            .map_err(StoreError::Spawn)?;
        Ok(Self {
            files,
            jobs: Some(jobs),
            worker: Some(worker),
            commits,
        })
    }

    /// Group appends made so far (diagnostic, as [`crate::registrar::SqliteStore::commits`]).
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

    /// Every binding the journal at `prefix` holds, read without taking the store's
    /// lock (so also while sipwake runs; a write in progress may be missing), in the
    /// order [`Store::load`] gives them. For `sipwake bindings dump`.
    pub fn read_bindings(prefix: &Path) -> Result<Vec<Binding>, StoreError> {
        let files = Files::new(prefix);
        if !files.dir().is_dir() {
            return Err(StoreError::Io {
                path: files.dir(),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        // a compaction may delete a file between listing and reading it: read again
        let mut tries = 0;
        loop {
            match files.replay(None) {
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && tries < 3 =>
                {
                    tries += 1;
                }
                r => return bindings_of(&files, &r?.state),
            }
        }
    }

    /// Switch the log and compact it now; returns once the compaction has ended.
    #[cfg(test)]
    fn compact_now(&self) {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Compact { reply }).unwrap();
        answer.recv().unwrap();
    }
}

fn bindings_of(files: &Files, state: &HashMap<Key, Vec<u8>>) -> Result<Vec<Binding>, StoreError> {
    let mut out = Vec::new();
    for (key, payload) in state {
        if let Key::Binding(..) = key {
            match codec::decode(payload) {
                Some(Value::Binding(b)) => out.push(b),
                _ => return Err(damaged_record(files)),
            }
        }
    }
    out.sort_by(|a, b| {
        (a.aor(), a.updated_at_ms, a.key()).cmp(&(b.aor(), b.updated_at_ms, b.key()))
    });
    Ok(out)
}

fn damaged_record(files: &Files) -> StoreError {
    StoreError::Damaged {
        path: files.dir(),
        reason: "a record with a good checksum does not decode",
    }
}

impl Store for JournalStore {
    fn load(&self) -> Result<Vec<Binding>, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Load { reply })?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn load_messages(&self) -> Result<Vec<StoredMessage>, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::LoadMessages { reply })?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn submit_then(&self, ops: Vec<StoreOp>, done: Done) {
        let Some(jobs) = self.jobs.as_ref() else {
            return done(Err(StoreError::Closed));
        };
        if let Err(mpsc::SendError(job)) = jobs.send(Job::Ops { ops, done }) {
            job.answer_closed();
        }
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::GetMeta {
            key: key.to_owned(),
            reply,
        })?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Meta {
            key: key.to_owned(),
            value: value.to_vec(),
            reply,
        })?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }

    fn close(&self) -> Result<(), StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Close { reply })?;
        answer.recv().map_err(|_| StoreError::Closed)?
    }
}

impl Drop for JournalStore {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            // dropped from a commit callback on the store thread: it ends on its own
            if worker.thread().id() == std::thread::current().id() {
                return;
            }
            if worker.join().is_err() {
                tracing::warn!(path = %self.files.dir().display(), "store thread panicked");
            }
        }
    }
}

/// The log being appended to.
struct Log {
    file: File,
    path: PathBuf,
    gen: u64,
    size: u64,
    sync_full: bool,
}

impl Log {
    fn create(files: &Files, gen: u64, sync_full: bool) -> Result<Log, StoreError> {
        let path = files.log(gen);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        let mut log = Log {
            file,
            path,
            gen,
            size: 0,
            sync_full,
        };
        log.append(&codec::header(Kind::Log))?;
        if sync_full {
            log.file.sync_data().map_err(|e| log.err(e))?;
            files.sync_dir()?;
        }
        Ok(log)
    }

    /// Opens log `gen` for appending after its last good record at `end`, cutting off
    /// a torn tail (or writing the header a cut-short file lacks).
    fn reopen(
        files: &Files,
        gen: u64,
        end: u64,
        headerless: bool,
        sync_full: bool,
    ) -> Result<Log, StoreError> {
        if headerless {
            return Log::create(files, gen, sync_full);
        }
        let path = files.log(gen);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        let log = Log {
            file,
            path,
            gen,
            size: end,
            sync_full,
        };
        log.file.set_len(end).map_err(|e| log.err(e))?;
        Ok(log)
    }

    fn err(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends `bytes` at the end (and syncs with `synchronous = "full"`). On failure
    /// the log is cut back to where it was, so a half-written group is not replayed.
    fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let r = self.file.write_all_at(bytes, self.size).and_then(|()| {
            if self.sync_full {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match r {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.size);
                Err(self.err(e))
            }
        }
    }
}

/// Runs compactions on a thread of their own, one at a time.
struct Compactor {
    busy: Arc<AtomicBool>,
    snapshot_size: Arc<AtomicU64>,
    /// Held while compaction deletes files, so a replay never sees a file vanish.
    deleting: Arc<Mutex<()>>,
    running: Option<JoinHandle<()>>,
}

impl Compactor {
    /// Whether a log of `size` bytes is due for compaction now.
    fn due(&self, size: u64) -> bool {
        !self.busy.load(Ordering::Acquire)
            && size >= COMPACT_AT.max(2 * self.snapshot_size.load(Ordering::Relaxed))
    }

    /// Compacts every file up to log `upto` on a new thread.
    fn start(&mut self, files: &Files, upto: u64) {
        if let Some(t) = self.running.take() {
            let _ = t.join();
        }
        self.busy.store(true, Ordering::Release);
        let (files, busy, size, deleting) = (
            files.clone(),
            Arc::clone(&self.busy),
            Arc::clone(&self.snapshot_size),
            Arc::clone(&self.deleting),
        );
        let spawned = std::thread::Builder::new()
            .name("sipwake-compact".into())
            .spawn(move || {
                // no answer waits for it: step aside for the runtime and store threads
                crate::background::lower_background_thread("sipwake-compact");
                match files.compact(upto, &deleting) {
                    Ok(bytes) => size.store(bytes, Ordering::Relaxed),
                    Err(e) => tracing::warn!(error = %e, "journal compaction failed"),
                }
                release_freed_memory();
                busy.store(false, Ordering::Release);
            });
        match spawned {
            Ok(t) => self.running = Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start journal compaction");
                self.busy.store(false, Ordering::Release);
            }
        }
    }

    fn wait(&mut self) {
        if let Some(t) = self.running.take() {
            let _ = t.join();
        }
    }
}

/// The store thread's state.
struct Thread {
    files: Files,
    log: Log,
    meta: HashMap<String, Vec<u8>>,
    commits: Arc<AtomicU64>,
    compactor: Compactor,
}

impl Thread {
    fn run(&mut self, queue: mpsc::Receiver<Job>) {
        let close = self.group_commit(&queue);
        while let Ok(job) = queue.try_recv() {
            job.answer_closed();
        }
        drop(queue);
        self.compactor.wait();
        let result = self.log.file.sync_all().map_err(|e| self.log.err(e));
        match close {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "journal not closed cleanly");
                }
            }
        }
    }

    /// Runs jobs until the queue is disconnected (`None`) or a `Close` job arrives
    /// (its reply channel).
    fn group_commit(
        &mut self,
        queue: &mpsc::Receiver<Job>,
    ) -> Option<mpsc::SyncSender<Result<(), StoreError>>> {
        let mut buf = Vec::with_capacity(64 << 10);
        let mut waiting = Vec::new();
        while let Ok(first) = queue.recv() {
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(job) = next.take() {
                taken += 1;
                match job {
                    Job::Ops { ops, done } => {
                        for op in &ops {
                            encode(&mut buf, op);
                        }
                        waiting.push(Waiting::Ops(done));
                    }
                    Job::Meta { key, value, reply } => {
                        codec::put_meta(&mut buf, &key, &value);
                        waiting.push(Waiting::Meta(key, value, reply));
                    }
                    Job::Close { reply } => {
                        self.flush(&mut buf, &mut waiting);
                        return Some(reply);
                    }
                    read => {
                        // reads see every write queued before them
                        self.flush(&mut buf, &mut waiting);
                        self.read(read);
                    }
                }
                if taken < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            self.flush(&mut buf, &mut waiting);
            if self.compactor.due(self.log.size) {
                self.switch_and_compact();
            }
        }
        None
    }

    /// Appends the group in `buf` and answers its jobs.
    fn flush(&mut self, buf: &mut Vec<u8>, waiting: &mut Vec<Waiting>) {
        if waiting.is_empty() {
            return;
        }
        let result = crate::metrics::global().timed_commit(|| self.log.append(buf));
        buf.clear();
        if result.is_ok() {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        for w in waiting.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Io {
                    path: self.log.path.clone(),
                    source: std::io::Error::other(e.to_string()),
                }),
            };
            match w {
                Waiting::Ops(done) => done(r),
                Waiting::Meta(key, value, reply) => {
                    if r.is_ok() {
                        self.meta.insert(key, value);
                    }
                    let _ = reply.send(r);
                }
            }
        }
    }

    /// Starts a new log and compacts the files before it in the background.
    fn switch_and_compact(&mut self) {
        match Log::create(&self.files, self.log.gen + 1, self.log.sync_full) {
            Ok(log) => {
                let old = std::mem::replace(&mut self.log, log);
                self.compactor.start(&self.files, old.gen);
            }
            Err(e) => tracing::warn!(error = %e, "cannot start a new journal log"),
        }
    }

    fn read(&mut self, job: Job) {
        let replay = |files: &Files, deleting: &Mutex<()>| {
            let _guard = deleting.lock();
            files.replay(None)
        };
        match job {
            Job::Load { reply } => {
                let r = replay(&self.files, &self.compactor.deleting)
                    .and_then(|r| bindings_of(&self.files, &r.state));
                let _ = reply.send(r);
            }
            Job::LoadMessages { reply } => {
                let r = replay(&self.files, &self.compactor.deleting).and_then(|r| {
                    let mut out = Vec::new();
                    for (key, payload) in &r.state {
                        if let Key::Message(_) = key {
                            match codec::decode(payload) {
                                Some(Value::Message(m)) => out.push(m),
                                _ => return Err(damaged_record(&self.files)),
                            }
                        }
                    }
                    Ok(out)
                });
                let _ = reply.send(r);
            }
            Job::GetMeta { key, reply } => {
                let _ = reply.send(Ok(self.meta.get(&key).cloned()));
            }
            #[cfg(test)]
            Job::Compact { reply } => {
                self.compactor.wait();
                self.switch_and_compact();
                self.compactor.wait();
                let _ = reply.send(());
            }
            Job::Ops { .. } | Job::Meta { .. } | Job::Close { .. } => {}
        }
    }
}

/// Moves what the SQLite database at `prefix` keeps into the new, empty journal
/// (`store.backend` switched from `"sqlite"` with the same `store.path`), syncs it,
/// then renames the database (and its log files) to `<name>.imported`.
fn import_sqlite(
    prefix: &Path,
    files: &Files,
    log: &mut Log,
    contents: super::sqlite::Contents,
    meta: &mut HashMap<String, Vec<u8>>,
) -> Result<(), StoreError> {
    let mut buf = Vec::new();
    for b in &contents.bindings {
        codec::put_binding(&mut buf, b);
    }
    for m in &contents.messages {
        codec::put_message(&mut buf, m);
    }
    for (k, v) in &contents.meta {
        codec::put_meta(&mut buf, k, v);
    }
    log.append(&buf)?;
    log.file.sync_data().map_err(|e| log.err(e))?;
    files.sync_dir()?;
    meta.extend(contents.meta);
    for suffix in ["", "-wal", "-shm"] {
        let mut from = prefix.as_os_str().to_owned();
        from.push(suffix);
        let mut to = from.clone();
        to.push(".imported");
        match std::fs::rename(&from, &to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %PathBuf::from(from).display(), error = %e, "cannot rename the imported SQLite store");
            }
            _ => {}
        }
    }
    tracing::info!(
        bindings = contents.bindings.len(),
        messages = contents.messages.len(),
        from = %prefix.display(),
        "SQLite store imported into the journal"
    );
    Ok(())
}

/// Hands the memory a compaction used (the files read, the newest record per key)
/// back to the OS; glibc would otherwise keep it in the compaction thread's heap.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists; it is
        // thread-safe and has no preconditions.
        unsafe { libc::malloc_trim(0) };
    }
}

fn encode(buf: &mut Vec<u8>, op: &StoreOp) {
    match op {
        StoreOp::Put(b) => codec::put_binding(buf, b),
        StoreOp::Delete { aor, key } => codec::delete_binding(buf, aor, key),
        StoreOp::PutMessage(m) => codec::put_message(buf, m),
        StoreOp::DeleteMessage { id } => codec::delete_message(buf, id),
    }
}

#[cfg(test)]
mod tests;
