//! Registrar rule tests (RFC 3261 §10.3, RFC 5626 identity), over the memory store
//! and a hand-operated store for commit ordering.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::*;
use crate::config::{RegistrarMode, RegistrarSettings};

mod expiry;
mod flows;

pub(super) const T0: u64 = 1_700_000_000_000;
pub(super) const AOR: &str = "alice@example.com";

pub(super) fn settings(max_contacts: usize) -> RegistrarSettings {
    RegistrarSettings {
        mode: RegistrarMode::Local,
        min_expires: 60,
        max_expires: 7200,
        default_expires: 3600,
        max_contacts,
    }
}

fn setup(max_contacts: usize) -> (Registrar, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let reg = Registrar::new(settings(max_contacts), store.clone()).unwrap();
    (reg, store)
}

pub(super) fn contact(n: u32) -> ContactSpec {
    let uri = format!("sip:alice@10.0.0.{n}:5060");
    ContactSpec {
        match_key: uri.clone(),
        uri,
        ..Default::default()
    }
}

fn with_instance(mut c: ContactSpec, instance: &str, reg_id: Option<u32>) -> ContactSpec {
    c.instance = Some(instance.into());
    c.reg_id = reg_id;
    c
}

fn with_expires(mut c: ContactSpec, expires: u32) -> ContactSpec {
    c.expires = Some(expires);
    c
}

pub(super) fn req(call_id: &str, cseq: u32, contacts: Vec<ContactSpec>) -> RegisterRequest {
    RegisterRequest {
        aor: AOR.into(),
        call_id: call_id.into(),
        cseq,
        expires_header: None,
        contacts: Contacts::List(contacts),
        flow: Some("udp:203.0.113.5:5060".into()),
        user_agent: Some("TestPhone/1.0".into()),
        path: vec!["<sip:edge.example;lr>".into()],
        now_ms: T0,
        node: None,
    }
}

pub(super) fn at(mut r: RegisterRequest, now_ms: u64) -> RegisterRequest {
    r.now_ms = now_ms;
    r
}

pub(super) fn header(mut r: RegisterRequest, expires: u32) -> RegisterRequest {
    r.expires_header = Some(expires);
    r
}

async fn ok(reg: &Registrar, r: RegisterRequest) -> Vec<Arc<Binding>> {
    match reg.register(r).await.unwrap() {
        RegisterOutcome::Ok { bindings } => bindings,
        other => panic!("expected Ok, got {other:?}"),
    }
}

fn contacts_of(bindings: &[Arc<Binding>]) -> Vec<&str> {
    bindings.iter().map(|b| b.contact()).collect()
}

fn drain(rx: &mut broadcast::Receiver<BindingEvent>) -> Vec<(BindingEventKind, String)> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        out.push((ev.kind, ev.binding.contact().to_owned()));
    }
    out
}

fn stored_contacts(store: &MemoryStore) -> Vec<String> {
    let mut v: Vec<String> = store
        .load()
        .unwrap()
        .into_iter()
        .map(|b| b.contact().to_owned())
        .collect();
    v.sort();
    v
}

use BindingEventKind::{Added, Refreshed, Removed};

#[tokio::test]
async fn add_stores_every_field_and_announces_added() {
    let (reg, store) = setup(5);
    let mut events = reg.subscribe();
    let mut c = with_instance(contact(1), "<urn:uuid:a>", Some(2));
    c.q = Some(800);
    c.push = Some(r#"{"pn-prid":"t"}"#.into());
    let bindings = ok(&reg, req("c1", 1, vec![c])).await;
    let expected = Binding::new(BindingFields {
        aor: AOR.into(),
        key: "i:<urn:uuid:a>;reg-id=2".into(),
        contact: "sip:alice@10.0.0.1:5060".into(),
        match_key: "sip:alice@10.0.0.1:5060".into(),
        q: Some(800),
        expires_at: T0 / 1000 + 3600,
        call_id: "c1".into(),
        cseq: 1,
        flow: Some("udp:203.0.113.5:5060".into()),
        instance: Some("<urn:uuid:a>".into()),
        reg_id: Some(2),
        user_agent: Some("TestPhone/1.0".into()),
        path: vec!["<sip:edge.example;lr>".into()],
        push: Some(r#"{"pn-prid":"t"}"#.into()),
        updated_at_ms: T0,
        node: None,
    });
    assert_eq!(bindings.len(), 1);
    assert_eq!(*bindings[0], expected);
    assert_eq!(bindings[0].expires_in(T0), 3600);
    assert_eq!(store.load().unwrap(), vec![expected]);
    assert_eq!(reg.lookup(AOR, T0), bindings);
    assert_eq!(
        drain(&mut events),
        vec![(Added, "sip:alice@10.0.0.1:5060".into())]
    );
}

#[tokio::test]
async fn expiry_rounds_up_to_whole_seconds() {
    let (reg, _) = setup(5);
    let b = ok(&reg, at(req("c", 1, vec![contact(1)]), T0 + 1)).await;
    assert_eq!(b[0].expires_at, T0 / 1000 + 1 + 3600);
    assert_eq!(b[0].expires_in(T0 + 1), 3600);
}

#[tokio::test]
async fn refresh_then_remove() {
    let (reg, store) = setup(5);
    let mut events = reg.subscribe();
    ok(&reg, req("c1", 1, vec![contact(1)])).await;
    let b = ok(&reg, at(req("c1", 2, vec![contact(1)]), T0 + 60_000)).await;
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].cseq, 2);
    assert_eq!(b[0].expires_at, T0 / 1000 + 60 + 3600);
    assert_eq!(b[0].updated_at_ms, T0 + 60_000);

    let b = ok(&reg, req("c1", 3, vec![with_expires(contact(1), 0)])).await;
    assert!(b.is_empty());
    assert!(reg.lookup(AOR, T0).is_empty());
    assert!(store.is_empty());
    let c = "sip:alice@10.0.0.1:5060".to_string();
    assert_eq!(
        drain(&mut events),
        vec![(Added, c.clone()), (Refreshed, c.clone()), (Removed, c)]
    );
}

#[tokio::test]
async fn removing_unknown_contact_is_ok_and_silent() {
    let (reg, _) = setup(5);
    let mut events = reg.subscribe();
    ok(&reg, req("c1", 1, vec![contact(1)])).await;
    let b = ok(&reg, header(req("c2", 1, vec![contact(9)]), 0)).await;
    assert_eq!(contacts_of(&b), vec!["sip:alice@10.0.0.1:5060"]);
    assert_eq!(drain(&mut events).len(), 1);
}

#[tokio::test]
async fn cseq_ordering_within_call_id() {
    let (reg, store) = setup(5);
    ok(&reg, req("c1", 10, vec![contact(1)])).await;
    let mut events = reg.subscribe();

    for cseq in [10, 9, 1] {
        assert_eq!(
            reg.register(req("c1", cseq, vec![contact(1)]))
                .await
                .unwrap(),
            RegisterOutcome::OutOfOrder,
            "cseq {cseq}"
        );
    }
    // A removal is subject to the same rule.
    assert_eq!(
        reg.register(req("c1", 10, vec![with_expires(contact(1), 0)]))
            .await
            .unwrap(),
        RegisterOutcome::OutOfOrder
    );
    assert!(drain(&mut events).is_empty());
    assert_eq!(store.len(), 1);

    // A new Call-ID (rebooted UA) may use any CSeq and takes the binding over.
    let b = ok(&reg, req("c2", 1, vec![contact(1)])).await;
    assert_eq!((b[0].call_id(), b[0].cseq), ("c2", 1));
    assert_eq!(
        drain(&mut events),
        vec![(Refreshed, "sip:alice@10.0.0.1:5060".into())]
    );
    let b = ok(&reg, req("c2", 2, vec![contact(1)])).await;
    assert_eq!(b[0].cseq, 2);
}

#[tokio::test]
async fn out_of_order_contact_aborts_whole_request() {
    let (reg, store) = setup(5);
    ok(&reg, req("c1", 3, vec![contact(1)])).await;
    let r = req(
        "c1",
        3,
        vec![contact(2), with_expires(contact(3), 0), contact(1)],
    );
    assert_eq!(reg.register(r).await.unwrap(), RegisterOutcome::OutOfOrder);
    assert_eq!(
        contacts_of(&reg.lookup(AOR, T0)),
        vec!["sip:alice@10.0.0.1:5060"]
    );
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn query_returns_bindings_unchanged() {
    let (reg, store) = setup(5);
    ok(&reg, req("c1", 1, vec![contact(1)])).await;
    ok(
        &reg,
        at(req("c2", 1, vec![with_expires(contact(2), 60)]), T0 + 1),
    )
    .await;
    let mut events = reg.subscribe();
    let before = store.load().unwrap();

    let mut r = req("c9", 1, vec![]);
    r.contacts = Contacts::Query;
    let b = ok(&reg, r.clone()).await;
    assert_eq!(b, reg.lookup(AOR, T0));
    assert_eq!(b.len(), 2);
    // An empty list is a query too.
    assert_eq!(ok(&reg, req("c9", 2, vec![])).await, b);

    // Later, the short one has expired: a query no longer shows it but removes nothing.
    let b = ok(&reg, at(r, T0 + 61_001)).await;
    assert_eq!(contacts_of(&b), vec!["sip:alice@10.0.0.1:5060"]);
    assert!(drain(&mut events).is_empty());
    assert_eq!(store.load().unwrap(), before);

    // Query of an unknown AOR.
    let mut r = req("c9", 3, vec![]);
    r.aor = "nobody@example.com".into();
    assert!(ok(&reg, r).await.is_empty());
}

#[tokio::test]
async fn lookup_orders_by_q_then_newest() {
    let (reg, _) = setup(10);
    let q = |n, q| {
        let mut c = contact(n);
        c.q = q;
        c
    };
    ok(&reg, at(req("a", 1, vec![q(1, Some(500))]), T0)).await;
    ok(&reg, at(req("b", 1, vec![q(2, None)]), T0 + 1)).await;
    ok(&reg, at(req("c", 1, vec![q(3, Some(500))]), T0 + 2)).await;
    ok(&reg, at(req("d", 1, vec![q(4, Some(1000))]), T0 + 3)).await;
    ok(&reg, at(req("e", 1, vec![q(5, Some(100))]), T0 + 4)).await;
    let b = ok(
        &reg,
        at(req("f", 1, vec![with_expires(q(6, Some(900)), 60)]), T0 + 5),
    )
    .await;
    let expected = vec![
        "sip:alice@10.0.0.4:5060", // q=1.0, newest
        "sip:alice@10.0.0.2:5060", // no q counts as 1.0
        "sip:alice@10.0.0.6:5060",
        "sip:alice@10.0.0.3:5060", // q=0.5, newer
        "sip:alice@10.0.0.1:5060",
        "sip:alice@10.0.0.5:5060",
    ];
    assert_eq!(contacts_of(&b), expected);
    assert_eq!(contacts_of(&reg.lookup(AOR, T0 + 10)), expected);
    // Expired bindings are absent.
    let later = reg.lookup(AOR, T0 + 61_000);
    assert_eq!(later.len(), 5);
    assert!(!contacts_of(&later).contains(&"sip:alice@10.0.0.6:5060"));
    assert!(reg.lookup("bob@example.com", T0).is_empty());
}

#[tokio::test]
async fn sweep_removes_expired() {
    let (reg, store) = setup(5);
    ok(
        &reg,
        req(
            "c1",
            1,
            vec![with_expires(contact(1), 60), with_expires(contact(2), 120)],
        ),
    )
    .await;
    let mut bob = req("c2", 1, vec![with_expires(contact(3), 60)]);
    bob.aor = "bob@example.com".into();
    ok(&reg, bob).await;
    let mut events = reg.subscribe();

    assert_eq!(reg.sweep(T0 + 59_999), 0);
    assert_eq!(reg.sweep(T0 + 60_000), 2);
    let mut ev = drain(&mut events);
    ev.sort();
    assert_eq!(
        ev,
        vec![
            (Removed, "sip:alice@10.0.0.1:5060".into()),
            (Removed, "sip:alice@10.0.0.3:5060".into())
        ]
    );
    tokio::task::yield_now().await;
    assert_eq!(stored_contacts(&store), vec!["sip:alice@10.0.0.2:5060"]);
    assert_eq!(reg.sweep(T0 + 60_000), 0);
    assert_eq!(reg.sweep(T0 + 200_000), 1);
    assert!(store.is_empty());
    assert_eq!(reg.inner.bindings.lock().len(), 0, "empty AORs are dropped");
}

#[test]
fn sweep_works_outside_a_runtime() {
    let store = Arc::new(MemoryStore::new());
    store
        .submit(vec![StoreOp::Put(Arc::new(Binding::new(BindingFields {
            expires_at: 1,
            ..BindingFields::for_test(AOR, "u:x", "sip:x")
        })))])
        .try_recv()
        .unwrap()
        .unwrap();
    let reg = Registrar::new(settings(5), store.clone()).unwrap();
    assert_eq!(reg.sweep(T0), 1);
    assert!(store.is_empty());
}

#[tokio::test]
async fn expired_binding_is_absent_for_cseq_and_events() {
    let (reg, store) = setup(5);
    ok(&reg, req("c1", 5, vec![with_expires(contact(1), 60)])).await;
    ok(&reg, req("c1", 6, vec![with_expires(contact(2), 60)])).await;
    let mut events = reg.subscribe();
    // After expiry, an old CSeq of the same Call-ID is no longer "out of order".
    let later = T0 + 61_000;
    let b = ok(&reg, at(req("c1", 1, vec![contact(1)]), later)).await;
    assert_eq!(contacts_of(&b), vec!["sip:alice@10.0.0.1:5060"]);
    // Both expired bindings are closed with Removed; the reused key is Added anew.
    let mut ev = drain(&mut events);
    ev.sort();
    assert_eq!(
        ev,
        vec![
            (Added, "sip:alice@10.0.0.1:5060".into()),
            (Removed, "sip:alice@10.0.0.1:5060".into()),
            (Removed, "sip:alice@10.0.0.2:5060".into()),
        ]
    );
    assert_eq!(stored_contacts(&store), vec!["sip:alice@10.0.0.1:5060"]);
    assert_eq!(reg.sweep(later), 0);
}

#[tokio::test]
async fn aors_are_independent_and_reload_from_store() {
    let store = Arc::new(MemoryStore::new());
    let reg = Registrar::new(settings(5), store.clone()).unwrap();
    let now = unix_now_ms();
    ok(&reg, at(req("c1", 1, vec![contact(1), contact(2)]), now)).await;
    let mut bob = at(req("c1", 1, vec![contact(1)]), now);
    bob.aor = "bob@example.com".into();
    ok(&reg, bob).await;
    assert_eq!(reg.count(), 3);
    assert_eq!(reg.aors(), 2);
    assert_eq!(reg.lookup("bob@example.com", now).len(), 1);

    let again = Registrar::new(settings(5), store).unwrap();
    assert_eq!(again.count(), 3);
    assert_eq!(again.lookup(AOR, now), reg.lookup(AOR, now));
}

#[tokio::test]
async fn clones_share_state_and_store_handle() {
    let (reg, store) = setup(5);
    let other = reg.clone();
    ok(&other, req("c1", 1, vec![contact(1)])).await;
    assert_eq!(reg.lookup(AOR, T0).len(), 1);
    reg.store().put_meta("k", b"v").unwrap();
    assert_eq!(store.get_meta("k").unwrap(), Some(b"v".to_vec()));
    assert!(format!("{reg:?}").contains("Registrar"));
}

/// A submitted batch and what completes its commit.
type Pending = (Vec<StoreOp>, crate::registrar::store::Done);

/// A store whose commits complete only when the test says so.
#[derive(Default)]
pub(super) struct ManualStore {
    pub(super) pending: Mutex<Vec<Pending>>,
}

impl ManualStore {
    pub(super) fn complete_all(&self, ok: bool) -> usize {
        let pending = std::mem::take(&mut *self.pending.lock());
        let n = pending.len();
        for (_, done) in pending {
            done(if ok { Ok(()) } else { Err(StoreError::Closed) });
        }
        n
    }
}

impl Store for ManualStore {
    fn load(&self) -> Result<Vec<Binding>, StoreError> {
        Ok(Vec::new())
    }
    fn load_messages(&self) -> Result<Vec<crate::registrar::StoredMessage>, StoreError> {
        Ok(Vec::new())
    }
    fn submit_then(&self, ops: Vec<StoreOp>, done: crate::registrar::store::Done) {
        self.pending.lock().push((ops, done));
    }
    fn get_meta(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    fn put_meta(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn answers_and_announces_only_after_commit() {
    let store = Arc::new(ManualStore::default());
    let reg = Registrar::new(settings(5), store.clone()).unwrap();
    let mut events = reg.subscribe();
    let task = tokio::spawn({
        let reg = reg.clone();
        async move { reg.register(req("c1", 1, vec![contact(1)])).await }
    });
    while store.pending.lock().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!task.is_finished(), "must wait for the commit");
    assert!(drain(&mut events).is_empty(), "no event before the commit");
    assert_eq!(store.complete_all(true), 1);
    assert!(matches!(
        task.await.unwrap().unwrap(),
        RegisterOutcome::Ok { .. }
    ));
    assert_eq!(
        drain(&mut events),
        vec![(Added, "sip:alice@10.0.0.1:5060".into())]
    );
}

#[tokio::test]
async fn store_failure_is_reported() {
    let store = Arc::new(ManualStore::default());
    let reg = Registrar::new(settings(5), store.clone()).unwrap();
    let task = tokio::spawn({
        let reg = reg.clone();
        async move { reg.register(req("c1", 1, vec![contact(1)])).await }
    });
    while store.complete_all(false) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(matches!(task.await.unwrap(), Err(StoreError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ops_reach_the_store_in_memory_order() {
    let store = Arc::new(ManualStore::default());
    let reg = Registrar::new(settings(5), store.clone()).unwrap();
    let tasks: Vec<_> = (1..=20u32)
        .map(|cseq| {
            let reg = reg.clone();
            tokio::spawn(async move { reg.register(req("c1", cseq, vec![contact(1)])).await })
        })
        .collect();
    // Each task either submitted (and waits for its commit) or lost the race to a
    // higher CSeq and finished with OutOfOrder.
    loop {
        let finished = tasks.iter().filter(|t| t.is_finished()).count();
        if store.pending.lock().len() + finished == tasks.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let cseqs: Vec<u32> = store
        .pending
        .lock()
        .iter()
        .map(|(ops, _)| match &ops[0] {
            StoreOp::Put(b) => b.cseq,
            other => panic!("{other:?}"),
        })
        .collect();
    // Memory only accepts increasing CSeqs, so the store must see them increasing too.
    assert!(!cseqs.is_empty());
    assert!(cseqs.windows(2).all(|w| w[0] < w[1]), "{cseqs:?}");
    store.complete_all(true);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(reg.lookup(AOR, T0)[0].cseq, *cseqs.last().unwrap());
}
