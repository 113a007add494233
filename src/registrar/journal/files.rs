//! The journal's files on disk, and the two things done with them as a whole: replay
//! (at start, and for `sipwake bindings dump`) and compaction (a new snapshot, then
//! the files it replaces are deleted).
//!
//! Names, for `store.path = "data/sipwake.journal"`: `data/sipwake.journal.<gen>.log`
//! and `data/sipwake.journal.<gen>.snap`, generations counting up from 1. Log `g`
//! holds what was written after the switch to it; snapshot `g` is the state at that
//! switch (the previous snapshot plus the logs before `g`). The state is therefore the
//! highest snapshot `s` (or nothing) followed by every log from `s` on, in order. A
//! snapshot is written under a temporary name, synced and renamed, so it is either
//! whole or absent; only then are the files it replaces deleted.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::codec::{self, BadHeader, Key, Kind, Tail};
use crate::registrar::StoreError;

/// The journal's file names, from `store.path`.
#[derive(Debug, Clone)]
pub(super) struct Files {
    prefix: PathBuf,
}

/// The files of a journal.
struct Listing {
    /// Generations of the logs, ascending.
    logs: Vec<u64>,
    /// Generations of the snapshots, ascending.
    snaps: Vec<u64>,
    /// Temporary files of an interrupted compaction.
    temps: Vec<PathBuf>,
}

/// The state read back from the files.
#[derive(Debug, Default)]
pub(super) struct Replayed {
    /// Newest payload per live key.
    pub(super) state: HashMap<Key, Vec<u8>>,
    /// Generation of the snapshot replayed, if any.
    pub(super) snapshot: Option<u64>,
    /// The last log replayed: its generation, where its good records end, and whether
    /// its header is missing (a file cut right after creation).
    pub(super) last_log: Option<(u64, u64, bool)>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Files {
    pub(super) fn new(prefix: &Path) -> Files {
        Files {
            prefix: prefix.to_path_buf(),
        }
    }

    fn named(&self, suffix: &str) -> PathBuf {
        let mut name = self.prefix.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }

    /// Log file of generation `gen`.
    pub(super) fn log(&self, gen: u64) -> PathBuf {
        self.named(&format!(".{gen}.log"))
    }

    /// Snapshot file of generation `gen`.
    pub(super) fn snapshot(&self, gen: u64) -> PathBuf {
        self.named(&format!(".{gen}.snap"))
    }

    /// The directory holding the files.
    pub(super) fn dir(&self) -> PathBuf {
        match self.prefix.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The files present.
    fn list(&self) -> Result<Listing, StoreError> {
        let dir = self.dir();
        let stem = self
            .prefix
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (mut logs, mut snaps, mut temps) = (Vec::new(), Vec::new(), Vec::new());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Listing { logs, snaps, temps })
            }
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(rest) = name
                .to_str()
                .and_then(|n| n.strip_prefix(stem.as_str()))
                .and_then(|n| n.strip_prefix('.'))
            else {
                continue;
            };
            let mut parts = rest.splitn(2, '.');
            let (Some(gen), Some(ext)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(gen) = gen.parse::<u64>() else {
                continue;
            };
            match ext {
                "log" => logs.push(gen),
                "snap" => snaps.push(gen),
                "snap.tmp" => temps.push(entry.path()),
                _ => {}
            }
        }
        logs.sort_unstable();
        snaps.sort_unstable();
        Ok(Listing { logs, snaps, temps })
    }

    /// Reads the state: the highest snapshot up to generation `upto` (all when
    /// `None`), then every log from it up to `upto`. A torn end of a log (a write cut
    /// by a crash) ends that log; a damaged snapshot or a newer format is an error.
    pub(super) fn replay(&self, upto: Option<u64>) -> Result<Replayed, StoreError> {
        let Listing { logs, snaps, .. } = self.list()?;
        let within = |g: &u64| upto.is_none_or(|u| *g <= u);
        let snapshot = snaps.iter().copied().filter(within).max();
        let mut out = Replayed {
            snapshot,
            ..Replayed::default()
        };
        if let Some(s) = snapshot {
            let path = self.snapshot(s);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            header_ok(&path, &bytes, Kind::Snapshot)?;
            let (_, tail) = codec::scan(&bytes, |p| apply(&mut out.state, p));
            if tail != Tail::Clean {
                return Err(StoreError::Damaged {
                    path,
                    reason: "snapshot record damaged",
                });
            }
        }
        for gen in logs
            .into_iter()
            .filter(|g| within(g) && *g >= snapshot.unwrap_or(0))
        {
            let path = self.log(gen);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            match codec::check_header(&bytes, Kind::Log) {
                Err(BadHeader::Short) => {
                    out.last_log = Some((gen, 0, true));
                    continue;
                }
                Err(_) => header_ok(&path, &bytes, Kind::Log)?,
                Ok(()) => {}
            }
            let (end, tail) = codec::scan(&bytes, |p| apply(&mut out.state, p));
            if let Tail::Torn(at) = tail {
                tracing::warn!(
                    file = %path.display(),
                    offset = at,
                    dropped = bytes.len() - at,
                    "journal ends in a torn record (a write cut by a crash); it is ignored"
                );
            }
            out.last_log = Some((gen, end as u64, false));
        }
        Ok(out)
    }

    /// Writes snapshot `upto + 1`: the state of every file up to log `upto` (which the
    /// store thread no longer writes). Then deletes the files it replaces. Returns the
    /// snapshot's size.
    pub(super) fn compact(
        &self,
        upto: u64,
        deleting: &parking_lot::Mutex<()>,
    ) -> Result<u64, StoreError> {
        let replayed = self.replay(Some(upto))?;
        let gen = upto + 1;
        let path = self.snapshot(gen);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(&codec::header(Kind::Snapshot));
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut size = 0u64;
        for payload in replayed.state.values() {
            codec::frame(&mut buf, payload);
            if buf.len() >= 1 << 20 {
                file.write_all(&buf).map_err(io_err(&tmp))?;
                size += buf.len() as u64;
                buf.clear();
            }
        }
        file.write_all(&buf).map_err(io_err(&tmp))?;
        size += buf.len() as u64;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        drop(replayed);
        let _guard = deleting.lock();
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.sync_dir()?;
        self.remove_below(gen)?;
        Ok(size)
    }

    /// Deletes snapshots and logs older than snapshot `gen` and any leftover
    /// temporary file (which an interrupted compaction leaves).
    pub(super) fn remove_below(&self, gen: u64) -> Result<(), StoreError> {
        let Listing { logs, snaps, temps } = self.list()?;
        let old = |g: &&u64| **g < gen;
        let paths = (logs.iter().filter(old).map(|g| self.log(*g)))
            .chain(snaps.iter().filter(old).map(|g| self.snapshot(*g)))
            .chain(temps);
        for path in paths {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes a file creation or rename in the directory durable.
    pub(super) fn sync_dir(&self) -> Result<(), StoreError> {
        let dir = self.dir();
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))
    }
}

/// Applies one record's payload to the state: the newest put per key wins, a delete
/// removes it. A payload of an unknown kind is skipped.
fn apply(state: &mut HashMap<Key, Vec<u8>>, payload: &[u8]) {
    match codec::key_of(payload) {
        Some((key, true)) => {
            state.remove(&key);
        }
        Some((key, false)) => {
            state.insert(key, payload.to_vec());
        }
        None => tracing::warn!(
            len = payload.len(),
            "journal record of unknown kind skipped"
        ),
    }
}

fn header_ok(path: &Path, bytes: &[u8], kind: Kind) -> Result<(), StoreError> {
    match codec::check_header(bytes, kind) {
        Ok(()) => Ok(()),
        Err(BadHeader::Newer(found)) => Err(StoreError::UnsupportedSchema {
            path: path.to_path_buf(),
            found: i64::from(found),
            supported: i64::from(codec::FORMAT_VERSION),
        }),
        Err(BadHeader::Short) => Err(StoreError::Damaged {
            path: path.to_path_buf(),
            reason: "file shorter than its header",
        }),
        Err(BadHeader::Foreign) => Err(StoreError::Damaged {
            path: path.to_path_buf(),
            reason: "not a sipwake journal file of this kind",
        }),
    }
}
