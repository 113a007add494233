//! The journal store: writes come back after a reopen, a torn tail is dropped and cut
//! off, compaction keeps the state and removes what it replaced, and a file of a newer
//! format is refused.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::registrar::BindingFields;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sipwake-journal-{name}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    fs::create_dir_all(&d).unwrap();
    d.join("sipwake.journal")
}

fn binding(aor: &str, key: &str, expires_at: u64) -> Arc<Binding> {
    Arc::new(Binding::new(BindingFields {
        q: Some(500),
        expires_at,
        flow: Some("udp:1.2.3.4:5060".into()),
        instance: Some("<urn:uuid:1>".into()),
        reg_id: Some(1),
        user_agent: Some("Linphone".into()),
        path: vec!["<sip:p1>".into(), String::new(), "a\nb\\".into()],
        push: Some(r#"{"provider":"apns","token":"ab"}"#.into()),
        updated_at_ms: expires_at,
        ..BindingFields::for_test(aor, key, "sip:x@h")
    }))
}

fn submit(s: &JournalStore, ops: Vec<StoreOp>) {
    let (tx, rx) = mpsc::sync_channel(1);
    s.submit_then(
        ops,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().unwrap().unwrap();
}

fn message(id: &str) -> Arc<StoredMessage> {
    Arc::new(StoredMessage {
        id: id.into(),
        aor: "a@x".into(),
        seq: 7,
        from: "<sip:b@x>;tag=1".into(),
        to: "<sip:a@x>".into(),
        call_id: "m1".into(),
        cseq: 3,
        content_type: Some("text/plain".into()),
        body: b"hi \x00 there".to_vec(),
        received_at_ms: 5,
        expires_at_ms: 9,
    })
}

fn logs(prefix: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(prefix.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    out.sort();
    out
}

#[test]
fn writes_survive_reopen() {
    let p = dir("reopen");
    {
        let s = JournalStore::open(&p, false).unwrap();
        submit(
            &s,
            vec![
                StoreOp::Put(binding("a@x", "1", 10)),
                StoreOp::Put(binding("a@x", "2", 20)),
                StoreOp::Put(binding("b@x", "1", 30)),
                StoreOp::PutMessage(message("m1")),
                StoreOp::PutMessage(message("m2")),
            ],
        );
        submit(
            &s,
            vec![
                StoreOp::Delete {
                    aor: "a@x".into(),
                    key: "1".into(),
                },
                StoreOp::Put(binding("b@x", "1", 40)),
                StoreOp::DeleteMessage { id: "m1".into() },
            ],
        );
        s.put_meta("secret", b"s1").unwrap();
        s.put_meta("secret", b"s2").unwrap();
        s.close().unwrap();
    }
    let s = JournalStore::open(&p, true).unwrap();
    assert_eq!(
        s.load().unwrap(),
        vec![
            (*binding("a@x", "2", 20)).clone(),
            (*binding("b@x", "1", 40)).clone()
        ]
    );
    assert_eq!(s.load_messages().unwrap(), vec![(*message("m2")).clone()]);
    assert_eq!(s.get_meta("secret").unwrap(), Some(b"s2".to_vec()));
    assert_eq!(s.get_meta("other").unwrap(), None);
    drop(s);
    assert_eq!(
        JournalStore::read_bindings(&p).unwrap().len(),
        2,
        "dump reads the same"
    );
}

#[test]
fn second_open_is_refused_while_held() {
    let p = dir("lock");
    let _s = JournalStore::open(&p, false).unwrap();
    assert!(matches!(
        JournalStore::open(&p, false),
        Err(StoreError::InUse { .. })
    ));
}

#[test]
fn torn_tail_is_dropped_and_cut_before_new_appends() {
    let p = dir("torn");
    {
        let s = JournalStore::open(&p, false).unwrap();
        submit(&s, vec![StoreOp::Put(binding("a@x", "1", 10))]);
        submit(&s, vec![StoreOp::Put(binding("b@x", "1", 20))]);
    }
    // a crash in the middle of the next group's write: half a record
    let log = logs(&p).pop().unwrap();
    let mut whole = Vec::new();
    codec::put_binding(&mut whole, &binding("c@x", "1", 30));
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&whole[..whole.len() / 2]).unwrap();
    drop(f);
    {
        let s = JournalStore::open(&p, false).unwrap();
        let aors: Vec<String> = s
            .load()
            .unwrap()
            .into_iter()
            .map(|b| b.aor().to_owned())
            .collect();
        assert_eq!(aors, ["a@x", "b@x"]);
        // appended after the cut, so readable on the next start
        submit(&s, vec![StoreOp::Put(binding("d@x", "1", 40))]);
    }
    // a flipped bit in the last record's payload: its checksum fails
    let mut bytes = fs::read(&log).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    fs::write(&log, &bytes).unwrap();
    let s = JournalStore::open(&p, false).unwrap();
    let aors: Vec<String> = s
        .load()
        .unwrap()
        .into_iter()
        .map(|b| b.aor().to_owned())
        .collect();
    assert_eq!(aors, ["a@x", "b@x"], "the damaged last record is dropped");
}

#[test]
fn compaction_keeps_state_and_removes_replaced_files() {
    let p = dir("compact");
    {
        let s = JournalStore::open(&p, false).unwrap();
        for i in 0..50 {
            submit(&s, vec![StoreOp::Put(binding("a@x", &i.to_string(), i))]);
        }
        for i in 0..40 {
            submit(
                &s,
                vec![StoreOp::Delete {
                    aor: "a@x".into(),
                    key: i.to_string(),
                }],
            );
        }
        s.put_meta("secret", b"s").unwrap();
        s.compact_now();
        // written after the switch: in the new log, not in the snapshot
        submit(&s, vec![StoreOp::Put(binding("b@x", "1", 99))]);
        s.compact_now();
        submit(&s, vec![StoreOp::Put(binding("c@x", "1", 100))]);
    }
    let names: Vec<String> = fs::read_dir(p.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["sipwake.journal.3.log", "sipwake.journal.3.snap"]);
    let s = JournalStore::open(&p, false).unwrap();
    let loaded = s.load().unwrap();
    assert_eq!(loaded.len(), 12);
    assert_eq!(loaded[0].aor(), "a@x");
    assert_eq!(loaded[10].aor(), "b@x");
    assert_eq!(s.get_meta("secret").unwrap(), Some(b"s".to_vec()));
}

#[test]
fn newer_format_is_refused() {
    let p = dir("newer");
    drop(JournalStore::open(&p, false).unwrap());
    let log = logs(&p).pop().unwrap();
    let mut bytes = fs::read(&log).unwrap();
    bytes[8..12].copy_from_slice(&(codec::FORMAT_VERSION + 1).to_le_bytes());
    fs::write(&log, &bytes).unwrap();
    match JournalStore::open(&p, false) {
        Err(StoreError::UnsupportedSchema { found, .. }) => {
            assert_eq!(found, i64::from(codec::FORMAT_VERSION + 1))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_log_file_from_a_crash_at_creation_is_reused() {
    let p = dir("empty");
    {
        let s = JournalStore::open(&p, false).unwrap();
        submit(&s, vec![StoreOp::Put(binding("a@x", "1", 10))]);
        s.compact_now();
    }
    // the new log as a crash right after creating it leaves it
    let log = logs(&p).pop().unwrap();
    fs::write(&log, b"").unwrap();
    {
        let s = JournalStore::open(&p, false).unwrap();
        assert_eq!(s.load().unwrap().len(), 1);
        submit(&s, vec![StoreOp::Put(binding("b@x", "1", 20))]);
    }
    let s = JournalStore::open(&p, false).unwrap();
    assert_eq!(s.load().unwrap().len(), 2);
}

#[test]
fn a_sqlite_store_at_the_same_path_is_imported_once() {
    let p = dir("import");
    {
        let s = crate::registrar::SqliteStore::open(&p, false).unwrap();
        let (tx, rx) = mpsc::sync_channel(1);
        s.submit_then(
            vec![
                StoreOp::Put(binding("a@x", "1", 10)),
                StoreOp::Put(binding("b@x", "1", 20)),
                StoreOp::PutMessage(message("m1")),
            ],
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap().unwrap();
        s.put_meta("secret", b"s").unwrap();
        s.close().unwrap();
    }
    let want = vec![
        (*binding("a@x", "1", 10)).clone(),
        (*binding("b@x", "1", 20)).clone(),
    ];
    {
        let s = JournalStore::open(&p, false).unwrap();
        assert_eq!(s.load().unwrap(), want);
        assert_eq!(s.load_messages().unwrap(), vec![(*message("m1")).clone()]);
        assert_eq!(s.get_meta("secret").unwrap(), Some(b"s".to_vec()));
        submit(
            &s,
            vec![StoreOp::Delete {
                aor: "a@x".into(),
                key: "1".into(),
            }],
        );
    }
    assert!(!p.exists(), "the database is renamed once imported");
    let mut imported = p.as_os_str().to_owned();
    imported.push(".imported");
    assert!(PathBuf::from(imported).exists());
    // the next start reads the journal only
    let s = JournalStore::open(&p, false).unwrap();
    assert_eq!(s.load().unwrap(), want[1..]);
    assert_eq!(s.get_meta("secret").unwrap(), Some(b"s".to_vec()));
}
