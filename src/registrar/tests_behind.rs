//! Refresh write-behind tests: which REGISTERs may be answered before their write,
//! and that a deferred write never overwrites a newer change or revives a removed
//! binding. Over a hand-operated store, with flushes driven by the test.

use std::sync::Arc;
use std::time::Duration;

use super::tests::{at, contact, header, req, settings, ManualStore, AOR, T0};
use super::*;

/// The longest window: the registrar's own flusher stays out of the way.
const WINDOW: Duration = Duration::from_secs(10);

fn setup() -> (Registrar, Arc<ManualStore>) {
    let store = Arc::new(ManualStore::default());
    let reg = Registrar::new(settings(5), store.clone()).unwrap();
    reg.set_refresh_write_behind(WINDOW);
    (reg, store)
}

/// Registers `r`, completing the store's commits (with `ok`) while it waits.
async fn committed(reg: &Registrar, store: &ManualStore, r: RegisterRequest) -> RegisterOutcome {
    let task = tokio::spawn({
        let reg = reg.clone();
        async move { reg.register(r).await }
    });
    while !task.is_finished() {
        store.complete_all(true);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.await.unwrap().unwrap()
}

/// Registers `r` and expects the answer without any commit.
async fn answered_at_once(reg: &Registrar, store: &ManualStore, r: RegisterRequest) {
    let before = store.pending.lock().len();
    let outcome = tokio::time::timeout(Duration::from_secs(5), reg.register(r))
        .await
        .expect("a pure refresh must not wait for the store")
        .unwrap();
    assert!(matches!(outcome, RegisterOutcome::Ok { .. }), "{outcome:?}");
    assert_eq!(store.pending.lock().len(), before, "nothing submitted");
}

/// Registers `r` and expects it to wait for a commit (left pending).
async fn waits_for_disk(reg: &Registrar, store: &ManualStore, r: RegisterRequest) {
    let before = store.pending.lock().len();
    let task = tokio::spawn({
        let reg = reg.clone();
        async move { reg.register(r).await }
    });
    while store.pending.lock().len() == before {
        assert!(!task.is_finished(), "answered without a write");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!task.is_finished(), "answered before its commit");
    store.complete_all(true);
    assert!(matches!(
        task.await.unwrap().unwrap(),
        RegisterOutcome::Ok { .. }
    ));
}

/// The Put ops waiting in the store, as (contact, Call-ID, CSeq).
fn pending_puts(store: &ManualStore) -> Vec<(String, String, u32)> {
    store
        .pending
        .lock()
        .iter()
        .flat_map(|(ops, _)| ops.iter())
        .filter_map(|op| match op {
            StoreOp::Put(b) => Some((b.contact().to_owned(), b.call_id().to_owned(), b.cseq)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn pure_refresh_is_answered_first_and_written_at_the_flush() {
    let (reg, store) = setup();
    let mut events = reg.subscribe();
    committed(&reg, &store, req("c1", 1, vec![contact(1)])).await;
    // two refreshes (new Call-ID, then its next CSeq) coalesce into one write
    answered_at_once(&reg, &store, at(req("c2", 1, vec![contact(1)]), T0 + 1000)).await;
    answered_at_once(&reg, &store, at(req("c2", 2, vec![contact(1)]), T0 + 2000)).await;
    let kinds: Vec<BindingEventKind> =
        std::iter::from_fn(|| events.try_recv().ok().map(|e| e.kind)).collect();
    use BindingEventKind::{Added, Refreshed};
    assert_eq!(kinds, vec![Added, Refreshed, Refreshed]);
    assert_eq!(reg.lookup(AOR, T0 + 2000)[0].cseq, 2);
    assert_eq!(reg.deferred_refreshes(), 1);

    assert_eq!(reg.flush_refreshes(), 1);
    assert_eq!(
        pending_puts(&store),
        vec![("sip:alice@10.0.0.1:5060".into(), "c2".into(), 2)]
    );
    assert_eq!(reg.deferred_refreshes(), 0);
    assert_eq!(reg.flush_refreshes(), 0, "nothing left to write");
    store.complete_all(true);
    // written: the next refresh is deferred again, on the new stored expiry
    answered_at_once(&reg, &store, at(req("c2", 3, vec![contact(1)]), T0 + 3000)).await;
}

#[tokio::test]
async fn refresh_of_an_uncommitted_binding_waits_for_the_disk() {
    let (reg, store) = setup();
    let task = tokio::spawn({
        let reg = reg.clone();
        async move { reg.register(req("c1", 1, vec![contact(1)])).await }
    });
    while store.pending.lock().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // the first write is not committed: its refresh may not be answered ahead of it
    let refresh = tokio::spawn({
        let reg = reg.clone();
        async move {
            reg.register(at(req("c1", 2, vec![contact(1)]), T0 + 500))
                .await
        }
    });
    while store.pending.lock().len() < 2 {
        assert!(!refresh.is_finished(), "refresh answered before the disk");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    store.complete_all(true);
    task.await.unwrap().unwrap();
    refresh.await.unwrap().unwrap();
    assert_eq!(reg.deferred_refreshes(), 0);
}

#[tokio::test]
async fn a_refresh_that_changes_anything_but_expiry_waits_for_the_disk() {
    let (reg, store) = setup();
    committed(&reg, &store, req("c1", 1, vec![contact(1)])).await;
    // new User-Agent
    let mut r = at(req("c1", 2, vec![contact(1)]), T0 + 1000);
    r.user_agent = Some("TestPhone/2.0".into());
    waits_for_disk(&reg, &store, r).await;
    // new flow
    let mut r = at(req("c1", 3, vec![contact(1)]), T0 + 2000);
    r.user_agent = Some("TestPhone/2.0".into());
    r.flow = Some("udp:203.0.113.5:5062".into());
    waits_for_disk(&reg, &store, r).await;
    // a shorter expiry
    let mut r = header(at(req("c1", 4, vec![contact(1)]), T0 + 3000), 600);
    r.user_agent = Some("TestPhone/2.0".into());
    r.flow = Some("udp:203.0.113.5:5062".into());
    waits_for_disk(&reg, &store, r).await;
    // a second contact (new binding) next to a refresh of the first
    let mut r = header(
        at(req("c1", 5, vec![contact(1), contact(2)]), T0 + 4000),
        600,
    );
    r.user_agent = Some("TestPhone/2.0".into());
    r.flow = Some("udp:203.0.113.5:5062".into());
    waits_for_disk(&reg, &store, r).await;
    assert_eq!(reg.deferred_refreshes(), 0);
}

#[tokio::test]
async fn refresh_near_the_stored_expiry_waits_for_the_disk() {
    let (reg, store) = setup();
    committed(&reg, &store, header(req("c1", 1, vec![contact(1)]), 60)).await;
    // 60 s stored; 52 s later the stored copy would lapse before the next flush (10 s)
    waits_for_disk(
        &reg,
        &store,
        header(at(req("c1", 2, vec![contact(1)]), T0 + 52_000), 60),
    )
    .await;
    // early enough: deferred
    answered_at_once(
        &reg,
        &store,
        header(at(req("c1", 3, vec![contact(1)]), T0 + 60_000), 60),
    )
    .await;
}

#[tokio::test]
async fn removal_after_a_deferred_refresh_is_not_undone_by_the_flush() {
    let (reg, store) = setup();
    committed(&reg, &store, req("c1", 1, vec![contact(1)])).await;
    answered_at_once(&reg, &store, at(req("c1", 2, vec![contact(1)]), T0 + 1000)).await;
    // unregister: a Delete, durable before its 200; the deferred Put is dropped
    waits_for_disk(
        &reg,
        &store,
        header(at(req("c1", 3, vec![contact(1)]), T0 + 2000), 0),
    )
    .await;
    assert_eq!(
        reg.flush_refreshes(),
        0,
        "the removed binding must not be written"
    );
    assert!(reg.lookup(AOR, T0 + 2000).is_empty());
}

#[tokio::test]
async fn change_after_a_flush_in_flight_goes_after_it() {
    let (reg, store) = setup();
    committed(&reg, &store, req("c1", 1, vec![contact(1)])).await;
    answered_at_once(&reg, &store, at(req("c1", 2, vec![contact(1)]), T0 + 1000)).await;
    assert_eq!(reg.flush_refreshes(), 1);
    // a changed binding while the flush is in flight: submitted after it, and the
    // flush's completion does not bring the deferred entry back
    let mut r = at(req("c1", 3, vec![contact(1)]), T0 + 2000);
    r.user_agent = Some("TestPhone/2.0".into());
    let task = tokio::spawn({
        let reg = reg.clone();
        async move { reg.register(r).await }
    });
    while store.pending.lock().len() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let cseqs: Vec<u32> = pending_puts(&store).iter().map(|p| p.2).collect();
    assert_eq!(cseqs, vec![2, 3], "store order must be memory's order");
    store.complete_all(true);
    task.await.unwrap().unwrap();
    assert_eq!(reg.deferred_refreshes(), 0);
    assert_eq!(reg.flush_refreshes(), 0);
}

#[tokio::test]
async fn failed_flush_is_retried() {
    let (reg, store) = setup();
    committed(&reg, &store, req("c1", 1, vec![contact(1)])).await;
    answered_at_once(&reg, &store, at(req("c1", 2, vec![contact(1)]), T0 + 1000)).await;
    assert_eq!(reg.flush_refreshes(), 1);
    store.complete_all(false);
    assert_eq!(
        reg.deferred_refreshes(),
        1,
        "a failed write stays to be written"
    );
    assert_eq!(reg.flush_refreshes(), 1);
    store.complete_all(true);
    assert_eq!(reg.deferred_refreshes(), 0);
}

#[tokio::test]
async fn off_by_default() {
    let store = Arc::new(ManualStore::default());
    let reg = Registrar::new(settings(5), store.clone()).unwrap();
    committed(&reg, &store, req("c1", 1, vec![contact(1)])).await;
    waits_for_disk(&reg, &store, at(req("c1", 2, vec![contact(1)]), T0 + 1000)).await;
}

/// The flusher writes a busy window in chunks in key order, each once the one before
/// is committed, so a new binding's write never queues behind the whole window's
/// refreshes; a binding removed between two chunks is not written back by a later one.
#[tokio::test]
async fn the_flusher_writes_in_chunks_one_commit_at_a_time() {
    let (reg, store) = setup();
    let n = FLUSH_CHUNK * 2 + 5;
    let user = |i: usize, r: RegisterRequest| RegisterRequest {
        aor: format!("sip:u{i}@example.com"),
        ..r
    };
    for i in 0..n {
        committed(&reg, &store, user(i, req("c1", 1, vec![contact(1)]))).await;
    }
    for i in 0..n {
        let r = at(user(i, req("c2", 1, vec![contact(1)])), T0 + 1000);
        answered_at_once(&reg, &store, r).await;
    }
    assert_eq!(reg.deferred_refreshes(), n);
    // the last AOR in key order, written by the last chunk unless removed first
    let last = (0..n)
        .map(|i| format!("sip:u{i}@example.com"))
        .max()
        .unwrap();
    let last_i: usize = last["sip:u".len()..last.len() - "@example.com".len()]
        .parse()
        .unwrap();
    let flusher = std::thread::spawn({
        let reg = reg.clone();
        move || reg.flush_paced()
    });
    let mut written: Vec<Vec<String>> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while written.iter().map(Vec::len).sum::<usize>() < n - 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "flushed only {written:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let jobs: Vec<Vec<String>> = store
            .pending
            .lock()
            .iter()
            .map(|j| {
                j.0.iter()
                    .filter_map(|op| match op {
                        StoreOp::Put(b) => Some(b.aor().to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        match jobs.as_slice() {
            [] => continue,
            [one] => written.push(one.clone()),
            more => panic!("a chunk submitted before the one before was committed: {more:?}"),
        }
        // the next chunk waits for this commit
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            store.pending.lock().len(),
            1,
            "one chunk in the store at a time"
        );
        if written.len() == 1 {
            // unregistered while the first chunk commits
            let removal = at(
                header(user(last_i, req("c3", 1, vec![contact(1)])), 0),
                T0 + 2000,
            );
            waits_for_disk_behind(&reg, &store, removal).await;
        } else {
            store.complete_all(true);
        }
    }
    assert_eq!(flusher.join().unwrap(), n - 1);
    let sizes: Vec<usize> = written.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![FLUSH_CHUNK, FLUSH_CHUNK, 4]);
    let all: Vec<String> = written.concat();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "written in key order");
    assert!(
        !all.contains(&last),
        "the removed binding is not written back"
    );
    assert_eq!(reg.deferred_refreshes(), 0);
}

/// Registers `r` while another job waits in the store, then completes both.
async fn waits_for_disk_behind(reg: &Registrar, store: &ManualStore, r: RegisterRequest) {
    let task = tokio::spawn({
        let reg = reg.clone();
        async move { reg.register(r).await }
    });
    while store.pending.lock().len() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    store.complete_all(true);
    task.await.unwrap().unwrap();
}
