//! Registrar tests of devices and their flows (RFC 5626): an instance from a new address
//! replaces its binding, reg-ids are distinct flows, a reg-id without instance is
//! ignored, and `max_contacts` evicts the oldest while an oversized request keeps its
//! last contacts.

use super::*;

#[tokio::test]
async fn instance_from_new_address_replaces_binding() {
    let (reg, store) = setup(5);
    let mut events = reg.subscribe();
    ok(
        &reg,
        req(
            "c1",
            1,
            vec![with_instance(contact(1), "<urn:uuid:phone>", None)],
        ),
    )
    .await;
    // The app was relaunched: new port/address, new Call-ID, same instance.
    let mut r = at(
        req(
            "c2",
            1,
            vec![with_instance(contact(2), "<urn:uuid:phone>", None)],
        ),
        T0 + 5_000,
    );
    r.flow = Some("tcp:203.0.113.5:40001".into());
    let b = ok(&reg, r).await;
    assert_eq!(contacts_of(&b), vec!["sip:alice@10.0.0.2:5060"]);
    assert_eq!(b[0].key(), "i:<urn:uuid:phone>");
    assert_eq!(b[0].flow(), Some("tcp:203.0.113.5:40001"));
    assert_eq!(stored_contacts(&store), vec!["sip:alice@10.0.0.2:5060"]);
    assert_eq!(
        drain(&mut events),
        vec![
            (Added, "sip:alice@10.0.0.1:5060".into()),
            (Refreshed, "sip:alice@10.0.0.2:5060".into())
        ]
    );

    // Without an instance the same move makes a second binding.
    let (reg, _) = setup(5);
    ok(&reg, req("c1", 1, vec![contact(1)])).await;
    assert_eq!(ok(&reg, req("c2", 1, vec![contact(2)])).await.len(), 2);
}

#[tokio::test]
async fn reg_ids_are_distinct_flows() {
    let (reg, _) = setup(5);
    let i = "<urn:uuid:phone>";
    let b = ok(
        &reg,
        req(
            "c1",
            1,
            vec![
                with_instance(contact(1), i, Some(1)),
                with_instance(contact(2), i, Some(2)),
            ],
        ),
    )
    .await;
    assert_eq!(b.len(), 2);
    // Flow 1 moves; flow 2 is untouched.
    let b = ok(
        &reg,
        at(
            req("c2", 1, vec![with_instance(contact(3), i, Some(1))]),
            T0 + 1,
        ),
    )
    .await;
    let mut keys: Vec<(&str, &str)> = b.iter().map(|b| (b.key(), b.contact())).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("i:<urn:uuid:phone>;reg-id=1", "sip:alice@10.0.0.3:5060"),
            ("i:<urn:uuid:phone>;reg-id=2", "sip:alice@10.0.0.2:5060"),
        ]
    );
}

#[tokio::test]
async fn reg_id_without_instance_is_ignored() {
    let (reg, _) = setup(5);
    let mut c = contact(1);
    c.reg_id = Some(1);
    let b = ok(&reg, req("c1", 1, vec![c])).await;
    assert_eq!(b[0].key(), "u:sip:alice@10.0.0.1:5060");
    assert_eq!(b[0].reg_id, None);
}

#[tokio::test]
async fn deregistering_uri_without_instance_removes_instance_binding() {
    let (reg, _) = setup(5);
    ok(
        &reg,
        req(
            "c1",
            1,
            vec![with_instance(contact(1), "<urn:uuid:p>", None)],
        ),
    )
    .await;
    ok(&reg, req("c1", 2, vec![contact(2)])).await;
    let b = ok(&reg, req("c1", 3, vec![with_expires(contact(1), 0)])).await;
    assert_eq!(contacts_of(&b), vec!["sip:alice@10.0.0.2:5060"]);
}

#[tokio::test]
async fn max_contacts_evicts_oldest() {
    let (reg, store) = setup(3);
    for n in 1..=3 {
        ok(
            &reg,
            at(
                req(&format!("c{n}"), 1, vec![contact(n)]),
                T0 + u64::from(n),
            ),
        )
        .await;
    }
    // Refreshing #1 makes #2 the oldest.
    ok(&reg, at(req("c1", 2, vec![contact(1)]), T0 + 10)).await;
    let mut events = reg.subscribe();
    let b = ok(&reg, at(req("c4", 1, vec![contact(4)]), T0 + 20)).await;
    let mut got = contacts_of(&b);
    got.sort();
    assert_eq!(
        got,
        vec![
            "sip:alice@10.0.0.1:5060",
            "sip:alice@10.0.0.3:5060",
            "sip:alice@10.0.0.4:5060"
        ]
    );
    assert_eq!(
        drain(&mut events),
        vec![
            (Removed, "sip:alice@10.0.0.2:5060".into()),
            (Added, "sip:alice@10.0.0.4:5060".into())
        ]
    );
    assert_eq!(store.len(), 3);
    assert!(!stored_contacts(&store).contains(&"sip:alice@10.0.0.2:5060".to_string()));
}

#[tokio::test]
async fn oversized_request_keeps_its_last_contacts() {
    let (reg, store) = setup(2);
    let mut events = reg.subscribe();
    let b = ok(&reg, req("c1", 1, vec![contact(1), contact(2), contact(3)])).await;
    let mut got = contacts_of(&b);
    got.sort();
    assert_eq!(
        got,
        vec!["sip:alice@10.0.0.2:5060", "sip:alice@10.0.0.3:5060"]
    );
    // The evicted newcomer was never announced, so it is not "removed" either.
    assert_eq!(drain(&mut events).len(), 2);
    assert_eq!(store.len(), 2);
}
