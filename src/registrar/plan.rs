//! What one REGISTER does to its AOR, decided without touching anything: RFC 3261
//! §10.3 (expiry, `*`, Call-ID/CSeq order) with RFC 5626 instance/reg-id identity,
//! `max_contacts`, and the push binding rules. [`plan`] returns the new binding list
//! with the store ops and events that get there; the registrar applies it in memory
//! or on the shared store alike.

use super::*;

/// The effect of one accepted REGISTER on its AOR.
#[derive(Debug)]
pub(super) struct Plan {
    /// The AOR's new binding list (live only).
    pub(super) bindings: Vec<Arc<Binding>>,
    /// Whether `bindings` differs from what memory holds.
    pub(super) changed: bool,
    /// What the store is to do.
    pub(super) ops: Vec<StoreOp>,
    /// What is announced once the store has done it.
    pub(super) events: Vec<BindingEvent>,
}

/// Decide what `req` does to the AOR currently holding `existing` (which may include
/// expired bindings). `Err` carries a final non-OK outcome; nothing is to be applied.
pub(super) fn plan(
    settings: &RegistrarSettings,
    rules: PushRules,
    existing: &[Arc<Binding>],
    req: &RegisterRequest,
) -> Result<Plan, RegisterOutcome> {
    let now = req.now_ms;
    let out_of_order = |b: &Binding| b.call_id() == req.call_id && req.cseq <= b.cseq;
    let ttl = rules.ttl_secs;
    let live = || existing.iter().filter(|b| b.is_kept(now, ttl));

    let specs = match &req.contacts {
        Contacts::List(specs) if !specs.is_empty() => specs,
        // A query changes nothing, not even expired leftovers.
        Contacts::Query | Contacts::List(_) => {
            return Ok(Plan {
                bindings: existing.to_vec(),
                changed: false,
                ops: Vec::new(),
                events: Vec::new(),
            })
        }
        Contacts::Star => {
            if req.expires_header != Some(0) {
                return Err(RegisterOutcome::Invalid(STAR_NEEDS_EXPIRES_0));
            }
            if live().any(|b| out_of_order(b)) {
                return Err(RegisterOutcome::OutOfOrder);
            }
            return Ok(diff(existing, Vec::new(), now, ttl));
        }
    };

    if specs.iter().any(|c| c.uri.trim() == "*") {
        return Err(RegisterOutcome::Invalid(STAR_MIXED));
    }

    // Every contact's expiry is checked before anything applies: 423 is all or nothing.
    let mut expiries = Vec::with_capacity(specs.len());
    for spec in specs {
        let asked = spec
            .expires
            .or(req.expires_header)
            .unwrap_or(settings.default_expires);
        if asked != 0 && asked < settings.min_expires {
            return Err(RegisterOutcome::IntervalTooBrief {
                min_expires: settings.min_expires,
            });
        }
        let max = if spec.push.is_some() {
            settings.max_expires.max(rules.max_expires)
        } else {
            settings.max_expires
        };
        expiries.push(asked.min(max));
    }

    let keys: Vec<String> = specs.iter().map(ContactSpec::binding_key).collect();
    for ((spec, key), &expiry) in specs.iter().zip(&keys).zip(&expiries) {
        if live().any(|b| matches(b, spec, key, expiry) && out_of_order(b)) {
            return Err(RegisterOutcome::OutOfOrder);
        }
    }

    // Expiry is rounded up to the whole second so a binding never lapses before the
    // time the 200 OK announces.
    let now_s = now.div_ceil(1000);
    let mut next: Vec<Arc<Binding>> = live().cloned().collect();
    let mut touched: HashSet<&str> = HashSet::new();
    for ((spec, key), &expiry) in specs.iter().zip(&keys).zip(&expiries) {
        if expiry == 0 {
            next.retain(|b| !matches(b, spec, key, expiry));
            touched.remove(key.as_str());
            continue;
        }
        let binding = Arc::new(Binding::pack(&BindingRef {
            aor: &req.aor,
            key,
            contact: &spec.uri,
            match_key: &spec.match_key,
            q: spec.q,
            expires_at: now_s.saturating_add(u64::from(expiry)),
            call_id: &req.call_id,
            cseq: req.cseq,
            flow: req.flow.as_deref(),
            instance: spec.instance.as_deref(),
            reg_id: spec.instance.as_ref().and(spec.reg_id),
            user_agent: req.user_agent.as_deref(),
            path: &req.path,
            push: spec.push.as_deref(),
            updated_at_ms: now,
            node: req.node.as_deref(),
        }));
        match next.iter_mut().find(|b| b.key() == *key) {
            Some(slot) => *slot = binding,
            None => next.push(binding),
        }
        touched.insert(key.as_str());
    }

    if next.len() > settings.max_contacts {
        // Evict the least recently registered. Bindings this REGISTER just wrote go
        // last even if the clock stepped back; ties keep list order (oldest first).
        let excess = next.len() - settings.max_contacts;
        let mut order: Vec<usize> = (0..next.len()).collect();
        order.sort_by_key(|&i| (touched.contains(next[i].key()), next[i].updated_at_ms));
        let victims: HashSet<usize> = order.into_iter().take(excess).collect();
        next = next
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !victims.contains(i))
            .map(|(_, b)| b)
            .collect();
    }

    Ok(diff(existing, next, now, ttl))
}

/// Whether the binding `b` is the one a contact of the request addresses.
///
/// By key; in addition, a removal without `+sip.instance` removes any binding with the
/// same contact URI, since RFC 5626 §6 sends such contacts through plain RFC 3261 URI
/// matching (UAs often de-register without repeating their instance).
fn matches(b: &Binding, spec: &ContactSpec, key: &str, expiry: u32) -> bool {
    b.key() == key || (expiry == 0 && spec.instance.is_none() && b.match_key() == spec.match_key)
}

/// Store ops and events that turn `existing` into `next` (live bindings only).
fn diff(existing: &[Arc<Binding>], next: Vec<Arc<Binding>>, now: u64, ttl: u64) -> Plan {
    let mut ops = Vec::new();
    let mut events = Vec::new();
    let event = |kind, binding: &Arc<Binding>| BindingEvent::local(kind, Arc::clone(binding));
    for old in existing {
        match next.iter().find(|b| b.key() == old.key()) {
            Some(new) if Arc::ptr_eq(new, old) => {}
            Some(_) if old.is_kept(now, ttl) => {} // refreshed; announced below
            Some(_) => {
                // Replaced after expiring: close its Added with a Removed; the Put below
                // overwrites the row.
                events.push(event(BindingEventKind::Removed, old));
            }
            None => {
                ops.push(StoreOp::Delete {
                    aor: old.aor().to_owned(),
                    key: old.key().to_owned(),
                });
                events.push(event(BindingEventKind::Removed, old));
            }
        }
    }
    for new in &next {
        match existing.iter().find(|b| b.key() == new.key()) {
            Some(old) if Arc::ptr_eq(old, new) => {}
            Some(old) if old.is_kept(now, ttl) => {
                ops.push(StoreOp::Put(Arc::clone(new)));
                events.push(event(BindingEventKind::Refreshed, new));
            }
            _ => {
                ops.push(StoreOp::Put(Arc::clone(new)));
                events.push(event(BindingEventKind::Added, new));
            }
        }
    }
    let changed = !events.is_empty();
    Plan {
        bindings: next,
        changed,
        ops,
        events,
    }
}
