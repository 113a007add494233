//! Tests of the packed [`Binding`]: every field comes back as it went in, whatever
//! was left out of the buffer, and what a binding costs.

use super::*;

fn binding(expires_at: u64) -> Binding {
    Binding::new(BindingFields {
        expires_at,
        ..BindingFields::for_test("a@x", "u:k", "sip:a@1.2.3.4")
    })
}

#[test]
fn liveness_boundary_is_exclusive() {
    let b = binding(100);
    assert!(b.is_live(99_999));
    assert!(!b.is_live(100_000));
    assert!(!b.is_live(100_001));
}

#[test]
fn expires_in_rounds_down_and_saturates() {
    let b = binding(100);
    assert_eq!(b.expires_in(40_000), 60);
    assert_eq!(b.expires_in(40_001), 59);
    assert_eq!(b.expires_in(200_000), 0);
}

/// A push binding as `bench/run.py` registers it (and as Linphone-style phones do):
/// RFC 8599 parameters in the Contact, the token in the key and the push JSON.
fn pushed() -> BindingFields {
    let token = "5f3c9a1e7b2d4c6e8a0f1b3d5e7c9a2b4d6f8e0a1c3b5d7f9e2a4c6b8d0f12345";
    BindingFields {
        aor: "pu12345@127.0.0.1".into(),
        key: format!("t:webhook:{token}"),
        contact: format!(
            "sip:pu12345@127.0.0.1:5090;transport=UDP;pn-provider=webhook;\
             pn-param=ABCDE12345.com.example.phone.voip;pn-prid={token}"
        ),
        match_key: "sip:pu12345@127.0.0.1:5090;transport=udp".into(),
        q: None,
        expires_at: 1_800_000_000,
        call_id: "12345-4711@127.0.0.1".into(),
        cseq: 1,
        flow: Some("u4:127.0.0.1:5090".into()),
        instance: None,
        reg_id: None,
        user_agent: Some("SIPp sipwake register_push.xml".into()),
        path: Vec::new(),
        push: Some(format!(
            r#"{{"provider":"webhook","token":"{token}","pn_param":"ABCDE12345.com.example.phone.voip"}}"#
        )),
        updated_at_ms: 1_799_996_400_000,
        node: None,
    }
}

/// Packs `f`, checks every field comes back, and returns the binding.
fn roundtrip(f: &BindingFields) -> Binding {
    let b = Binding::new(f.clone());
    assert_eq!(&b.fields(), f);
    assert_eq!(b.aor(), f.aor);
    assert_eq!(b.key(), f.key);
    assert_eq!(b.contact(), f.contact);
    assert_eq!(b.match_key(), f.match_key);
    assert_eq!(b.call_id(), f.call_id);
    assert_eq!(b.flow(), f.flow.as_deref());
    assert_eq!(b.instance(), f.instance.as_deref());
    assert_eq!(b.user_agent(), f.user_agent.as_deref());
    assert_eq!(b.push().as_deref(), f.push.as_deref());
    assert_eq!(b.has_push(), f.push.is_some());
    assert_eq!(b.node(), f.node.as_deref());
    assert_eq!(Binding::pack(&f.borrowed()), b, "pack and new agree");
    // the JSON form (the shared store's) is that of the fields
    let json = serde_json::to_string(&b).unwrap();
    assert_eq!(json, serde_json::to_string(f).unwrap());
    assert_eq!(serde_json::from_str::<Binding>(&json).unwrap(), b);
    b
}

#[test]
fn a_push_binding_keeps_its_token_once_beside_the_contact() {
    let f = pushed();
    let token = f.key.strip_prefix("t:webhook:").unwrap();
    let b = roundtrip(&f);
    // once in the contact (as the phone sent it) and once in the key; the push JSON
    // is stored without it
    assert_eq!(b.text.matches(token).count(), 2, "{:?}", b.text);
    assert!(b.has(TOKEN_IN_KEY));
    assert!(matches!(b.push(), Some(Cow::Owned(_))));
}

#[test]
fn a_u_key_holds_the_match_key() {
    let f = BindingFields {
        key: "u:sip:a@h".into(),
        match_key: "sip:a@h".into(),
        ..BindingFields::for_test("a@x", "", "sip:a@H;x=1")
    };
    let b = roundtrip(&f);
    assert!(b.has(MATCH_KEY_IN_KEY));
    assert_eq!(b.text.matches("sip:a@h").count(), 1, "{:?}", b.text);
}

#[test]
fn an_i_key_holds_the_instance_with_or_without_reg_id() {
    let inst = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";
    for (key, reg_id) in [
        (format!("i:{inst}"), None),
        (format!("i:{inst};reg-id=1"), Some(1)),
        (format!("i:{inst};reg-id=0"), Some(0)),
    ] {
        let f = BindingFields {
            instance: Some(inst.into()),
            reg_id,
            ..BindingFields::for_test("a@x", &key, "sip:a@h")
        };
        let b = roundtrip(&f);
        assert!(b.has(INSTANCE_IN_KEY), "{key}");
        assert_eq!(b.text.matches(inst).count(), 1, "{:?}", b.text);
    }
}

#[test]
fn fields_that_do_not_follow_from_the_key_are_stored_as_they_are() {
    // read from an older store or another node: nothing assumed
    let odd = [
        BindingFields {
            instance: Some("<urn:b>".into()),
            ..BindingFields::for_test("a@x", "i:<urn:a>", "sip:a@h")
        },
        BindingFields {
            instance: Some("<urn:a>".into()),
            reg_id: Some(1),
            ..BindingFields::for_test("a@x", "i:<urn:a>;reg-id=01", "sip:a@h")
        },
        BindingFields {
            instance: Some("<urn:a>".into()),
            reg_id: Some(2),
            ..BindingFields::for_test("a@x", "i:<urn:a>;reg-id=1", "sip:a@h")
        },
        BindingFields {
            instance: None,
            reg_id: Some(1),
            ..BindingFields::for_test("a@x", "u:sip:a@h", "sip:a@h")
        },
        BindingFields {
            match_key: "sip:b@h".into(),
            ..BindingFields::for_test("a@x", "u:sip:a@h", "sip:a@h")
        },
        // a token the push JSON does not carry, or carries twice, or escaped
        BindingFields {
            push: Some(r#"{"provider":"webhook","token":"other"}"#.into()),
            ..BindingFields::for_test("a@x", "t:webhook:tok", "sip:a@h")
        },
        BindingFields {
            push: Some(r#"{"token":"tok","x":{"token":"tok"}}"#.into()),
            ..BindingFields::for_test("a@x", "t:webhook:tok", "sip:a@h")
        },
        BindingFields {
            push: Some(r#"{"provider":"webhook","token":"tok"}"#.into()),
            ..BindingFields::for_test("a@x", "t:webhook:", "sip:a@h")
        },
        BindingFields {
            push: Some(r#"{"provider":"webhook","token":"tokx"}"#.into()),
            ..BindingFields::for_test("a@x", "t:webhook:tok", "sip:a@h")
        },
        BindingFields {
            push: Some(String::new()),
            path: vec!["<sip:p1;lr>".into(), String::new()],
            node: Some("n1".into()),
            flow: Some(String::new()),
            user_agent: Some(String::new()),
            ..BindingFields::for_test("", "", "")
        },
    ];
    for f in &odd {
        roundtrip(f);
    }
}

#[test]
fn a_refresh_differs_only_in_what_a_refresh_moves() {
    let old = Binding::new(pushed());
    let refreshed = Binding::new(BindingFields {
        call_id: "another-call-id-of-a-different-length".into(),
        cseq: 7,
        expires_at: pushed().expires_at + 60,
        updated_at_ms: pushed().updated_at_ms + 60_000,
        ..pushed()
    });
    assert!(old.same_but_refresh(&refreshed));
    assert!(refreshed.same_but_refresh(&old));
    let token = "5f3c9a1e7b2d4c6e8a0f1b3d5e7c9a2b4d6f8e0a1c3b5d7f9e2a4c6b8d0f12346";
    let changes = [
        BindingFields {
            contact: "sip:pu12345@127.0.0.2:5090".into(),
            ..pushed()
        },
        BindingFields {
            flow: None,
            ..pushed()
        },
        BindingFields {
            q: Some(500),
            ..pushed()
        },
        BindingFields {
            user_agent: Some("SIPp 2".into()),
            ..pushed()
        },
        BindingFields {
            path: vec!["<sip:edge;lr>".into()],
            ..pushed()
        },
        BindingFields {
            node: Some("n2".into()),
            ..pushed()
        },
        // the token moves in the key and the push JSON together
        BindingFields {
            key: format!("t:webhook:{token}"),
            push: Some(format!(r#"{{"provider":"webhook","token":"{token}"}}"#)),
            ..pushed()
        },
        BindingFields {
            push: None,
            ..pushed()
        },
    ];
    for f in changes {
        assert!(!old.same_but_refresh(&Binding::new(f.clone())), "{f:?}");
    }
}

#[test]
fn with_push_changes_the_push_info_only() {
    let b = Binding::new(pushed());
    let gone = b.with_push(None);
    assert_eq!(
        gone.fields(),
        BindingFields {
            push: None,
            ..pushed()
        }
    );
    assert!(!gone.has_push());
}

/// What a binding costs in memory, counted as glibc's malloc hands out chunks (the
/// request plus 8 bytes, rounded up to 16, at least 32): the `Arc` allocation
/// holding the struct and the text buffer. Before the packed layout the same binding
/// took 10 allocations (the struct and 9 strings), about 1,000 bytes.
#[test]
fn a_push_binding_takes_two_allocations_under_650_bytes() {
    let chunk = |n: usize| (n + 8).div_ceil(16).max(2) * 16;
    let b = Binding::new(pushed());
    assert!(
        b.path.is_empty() && b.path.capacity() == 0,
        "no Path, no allocation"
    );
    // the Arc's counts and the struct
    let arc = chunk(2 * std::mem::size_of::<usize>() + std::mem::size_of::<Binding>());
    let text = chunk(b.heap_bytes());
    let unpacked: usize = {
        let f = pushed();
        let strings = [
            &f.aor,
            &f.key,
            &f.contact,
            &f.match_key,
            &f.call_id,
            f.flow.as_ref().unwrap(),
            f.user_agent.as_ref().unwrap(),
            f.push.as_ref().unwrap(),
        ];
        chunk(2 * std::mem::size_of::<usize>() + std::mem::size_of::<BindingFields>())
            + strings.iter().map(|s| chunk(s.len())).sum::<usize>()
    };
    assert!(arc + text < 650, "{arc} + {text} bytes");
    assert!(
        (arc + text) * 3 < unpacked * 2,
        "packed {} vs unpacked {unpacked}",
        arc + text
    );
}
