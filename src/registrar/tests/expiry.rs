//! Registrar tests of expiry and `*`: the expires parameter beats the header beats the
//! default, too brief is 423 and changes nothing, long expiry is clamped, and `*`
//! removes all (only in its valid form, only with a newer CSeq).

use super::*;

#[tokio::test]
async fn expires_param_beats_header_beats_default() {
    let (reg, _) = setup(5);
    let base = T0 / 1000;
    let b = ok(&reg, req("c1", 1, vec![contact(1)])).await;
    assert_eq!(b[0].expires_at, base + 3600, "default");

    let b = ok(&reg, header(req("c1", 2, vec![contact(1)]), 300)).await;
    assert_eq!(b[0].expires_at, base + 300, "header");

    let b = ok(
        &reg,
        header(req("c1", 3, vec![with_expires(contact(1), 120)]), 300),
    )
    .await;
    assert_eq!(b[0].expires_at, base + 120, "param");

    // A param of 0 removes even with a nonzero header, and vice versa a nonzero param
    // keeps a contact alive under "Expires: 0".
    let b = ok(
        &reg,
        header(
            req(
                "c1",
                4,
                vec![with_expires(contact(1), 0), with_expires(contact(2), 600)],
            ),
            0,
        ),
    )
    .await;
    assert_eq!(contacts_of(&b), vec!["sip:alice@10.0.0.2:5060"]);
    assert_eq!(b[0].expires_at, base + 600);
}

#[tokio::test]
async fn too_brief_is_423_and_changes_nothing() {
    let (reg, store) = setup(5);
    ok(&reg, req("c1", 1, vec![contact(1)])).await;
    let mut events = reg.subscribe();
    let brief = RegisterOutcome::IntervalTooBrief { min_expires: 60 };

    let r = req(
        "c1",
        2,
        vec![
            with_expires(contact(1), 0),
            contact(2),
            with_expires(contact(3), 59),
        ],
    );
    assert_eq!(reg.register(r).await.unwrap(), brief);
    let r = header(req("c1", 3, vec![contact(2)]), 1);
    assert_eq!(reg.register(r).await.unwrap(), brief);

    assert_eq!(
        contacts_of(&reg.lookup(AOR, T0)),
        vec!["sip:alice@10.0.0.1:5060"]
    );
    assert_eq!(stored_contacts(&store), vec!["sip:alice@10.0.0.1:5060"]);
    assert!(drain(&mut events).is_empty());

    // Exactly the minimum is fine.
    let b = ok(&reg, req("c1", 4, vec![with_expires(contact(2), 60)])).await;
    assert_eq!(b.len(), 2);
}

#[tokio::test]
async fn long_expiry_is_clamped() {
    let (reg, _) = setup(5);
    let b = ok(&reg, header(req("c1", 1, vec![contact(1)]), 100_000)).await;
    assert_eq!(b[0].expires_at, T0 / 1000 + 7200);
    let b = ok(&reg, req("c1", 2, vec![with_expires(contact(1), u32::MAX)])).await;
    assert_eq!(b[0].expires_in(T0), 7200);
}

#[tokio::test]
async fn star_removes_all() {
    let (reg, store) = setup(5);
    ok(&reg, req("c1", 1, vec![contact(1), contact(2)])).await;
    ok(&reg, req("c2", 1, vec![contact(3)])).await;
    let mut events = reg.subscribe();
    let mut r = header(req("c3", 1, vec![]), 0);
    r.contacts = Contacts::Star;
    assert!(ok(&reg, r).await.is_empty());
    assert!(reg.lookup(AOR, T0).is_empty());
    assert!(store.is_empty());
    let ev = drain(&mut events);
    assert_eq!(ev.len(), 3);
    assert!(ev.iter().all(|(k, _)| *k == Removed));

    // On an empty AOR it is simply OK.
    let mut r = header(req("c3", 2, vec![]), 0);
    r.contacts = Contacts::Star;
    assert!(ok(&reg, r).await.is_empty());
}

#[tokio::test]
async fn star_invalid_forms() {
    let (reg, _) = setup(5);
    ok(&reg, req("c1", 1, vec![contact(1)])).await;

    let mut r = req("c2", 1, vec![]);
    r.contacts = Contacts::Star;
    assert_eq!(
        reg.register(r.clone()).await.unwrap(),
        RegisterOutcome::Invalid("Contact * requires Expires: 0")
    );
    assert_eq!(
        reg.register(header(r, 3600)).await.unwrap(),
        RegisterOutcome::Invalid("Contact * requires Expires: 0")
    );

    let star = ContactSpec {
        uri: "*".into(),
        match_key: "*".into(),
        ..Default::default()
    };
    let r = header(req("c2", 2, vec![contact(2), star]), 0);
    assert_eq!(
        reg.register(r).await.unwrap(),
        RegisterOutcome::Invalid("Contact * mixed with other contacts")
    );
    assert_eq!(reg.lookup(AOR, T0).len(), 1);
}

#[tokio::test]
async fn star_respects_cseq() {
    let (reg, _) = setup(5);
    ok(&reg, req("c1", 5, vec![contact(1)])).await;
    ok(&reg, req("c2", 1, vec![contact(2)])).await;
    let mut r = header(req("c1", 5, vec![]), 0);
    r.contacts = Contacts::Star;
    assert_eq!(
        reg.register(r.clone()).await.unwrap(),
        RegisterOutcome::OutOfOrder
    );
    assert_eq!(reg.lookup(AOR, T0).len(), 2, "nothing removed");
    r.cseq = 6;
    assert!(ok(&reg, r).await.is_empty());
}
