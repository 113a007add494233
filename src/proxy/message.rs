//! MESSAGE (RFC 3428) for a sleeping phone: store and forward.
//!
//! A MESSAGE for a user whose only bindings are sleeping push bindings is kept in the
//! registrar's message store ([`crate::registrar::MessageQueue`], the same durable
//! store as the bindings), answered `202 Accepted`, and announced to each device by a
//! message notice (APNs: an alert to the regular token, never a VoIP push; FCM: a data
//! message; webhook: an `event: message` document). When one of the user's devices
//! registers again, the kept messages are sent to it one at a time, oldest first, each
//! removed only after the phone's `2xx`. A final refusal drops that message; a timeout
//! keeps the rest for the next REGISTER. Expired messages are dropped by a sweep.
//!
//! Several nodes: the messages are kept in Redis
//! ([`crate::registrar::SharedMessages`]) by whichever node the MESSAGE reaches, and
//! handed over by the node that took the phone's REGISTER (the others see it as a
//! remote event and leave it), under the AOR's delivery lease, so a phone waking on
//! two nodes at once gets each message once, in order.
//!
//! Kept apart from the forwarding code: the only hooks are the point where a request
//! for a local user would get `480` ([`keep`]) and the registrar's binding events.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use std::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::wake::push_info;
use super::Core;
use crate::ids::random_hex;
use crate::metrics::{count_push, MessageDrop, PushKind};
use crate::push::{MessageNotice, PushResult, PushSender};
use crate::registrar::nodes::Owner;
use crate::registrar::redis_messages::Lease;
use crate::registrar::{
    unix_now_ms, Binding, BindingEventKind, KeepError, MessageQueue, SharedMessages, StoreError,
    StoredMessage,
};
use crate::sip::{unquote, HeaderName, Message, Method, Uri};
use crate::transaction::{ClientAction, ClientTx, Disposition, Kind, ServerEntry, TxEvent};
use crate::transport::Flow;

/// How often expired messages are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A delivery lease outlasts one MESSAGE transaction (Timer F) by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Longest text a message notice carries.
const NOTICE_TEXT_MAX: usize = 1000;

/// AORs whose kept messages are being handed over right now (one delivery at a time
/// per user keeps them in order).
type Deliveries = Arc<Mutex<HashSet<String>>>;

/// Keeps a MESSAGE for `aor` whose `bindings` are all asleep, answers it, and sends the
/// notices. Returns false (nothing done, the caller answers as before) when this is
/// not a MESSAGE, keeping is off, or no binding can be reached by push.
pub fn keep(
    core: &Arc<Core>,
    msg: &Message,
    flow: &Flow,
    key: u64,
    aor: &str,
    bindings: &[Arc<Binding>],
) -> bool {
    let settings = &core.settings.push.messages;
    if msg.method() != Some(Method::Message) || !settings.enabled {
        return false;
    }
    let devices: Vec<_> = bindings
        .iter()
        .filter_map(|b| push_info(core, b).map(|i| (b.key().to_owned(), i)))
        .collect();
    if devices.is_empty() {
        return false;
    }
    let flow = *flow;
    if msg.body().len() > settings.max_body_bytes {
        core.reply(msg, flow, key, 413, "Request Entity Too Large", &[]);
        return true;
    }
    let (Some(from), Some(to)) = (msg.header(HeaderName::From), msg.header(HeaderName::To)) else {
        core.reply(msg, flow, key, 400, "Missing From or To", &[]);
        return true;
    };
    let now = unix_now_ms();
    let ttl_ms = u64::try_from(settings.ttl.as_millis()).unwrap_or(u64::MAX);
    let stored = StoredMessage {
        id: random_hex(16),
        aor: aor.to_owned(),
        seq: 0,
        from: from.to_owned(),
        to: to.to_owned(),
        call_id: msg.call_id().to_owned(),
        cseq: msg.cseq().0,
        content_type: msg.header(HeaderName::ContentType).map(str::to_owned),
        body: msg.body().to_vec(),
        received_at_ms: now,
        expires_at_ms: now.saturating_add(ttl_ms),
    };
    let notice = notice(core, msg, aor, &stored);
    // retransmissions wait for the answer the store decides
    core.tx.set_server(key, ServerEntry::Pending);
    let core = core.clone();
    let msg = msg.clone();
    let span = tracing::debug_span!("message", aor = %aor, call_id = %msg.call_id());
    tokio::spawn(
        async move {
            let kept = match core.registrar.shared_messages() {
                // several nodes: in Redis, for whichever node the phone wakes on
                Some(shared) => shared.keep(stored).await,
                None => core.registrar.messages().keep(stored).await,
            };
            match kept {
                Ok(m) => {
                    crate::metrics::global().messages_kept.inc();
                    debug!(id = %m.id, "message kept for a sleeping phone");
                    core.reply(&msg, flow, key, 202, "Accepted", &[]);
                    for (key, info) in devices {
                        let core = core.clone();
                        let fut = core.pusher().message(&info, &notice);
                        let aor = m.aor.clone();
                        tokio::spawn(async move {
                            let r = count_push(info.provider, PushKind::Message, fut).await;
                            if let PushResult::DeadToken { timestamp_ms } = r {
                                let removed =
                                    core.registrar.set_push(&aor, &key, None, timestamp_ms);
                                crate::metrics::global()
                                    .dead_tokens_removed
                                    .add(u64::from(removed));
                            }
                        });
                    }
                }
                Err(e @ KeepError::AorFull(_)) => {
                    info!(error = %e, "message refused");
                    core.reply(&msg, flow, key, 486, "Busy Here", &[]);
                }
                Err(e @ KeepError::StoreFull(_)) => {
                    warn!(error = %e, "message refused");
                    core.reply(
                        &msg,
                        flow,
                        key,
                        503,
                        "Service Unavailable",
                        &["Retry-After: 60"],
                    );
                }
                Err(KeepError::Store(e)) => {
                    warn!(error = %e, "message not stored");
                    core.reply(&msg, flow, key, 500, "Store Failure", &["Retry-After: 5"]);
                }
            }
        }
        .instrument(span),
    );
    true
}

/// What the notice of `m` says.
fn notice(core: &Core, msg: &Message, aor: &str, m: &StoredMessage) -> MessageNotice {
    let from = msg.from();
    let from_uri = from
        .as_ref()
        .map(|na| na.uri.to_owned())
        .unwrap_or_default();
    let from_name = from
        .as_ref()
        .and_then(|na| na.display)
        .map(|d| unquote(d).replace("\\\"", "\"").trim().to_owned())
        .filter(|d| !d.is_empty());
    let from_number = Uri::parse(&from_uri)
        .ok()
        .map(|u| crate::sip::unescape(u.user.unwrap_or(u.host)).into_owned())
        .unwrap_or_default();
    let settings = &core.settings.push.messages;
    let is_text = m
        .content_type
        .as_deref()
        .is_none_or(|c| c.trim().to_ascii_lowercase().starts_with("text/"));
    let text = (settings.notice_text && is_text)
        .then(|| std::str::from_utf8(&m.body).ok())
        .flatten()
        .map(|t| {
            let mut end = t.len().min(NOTICE_TEXT_MAX);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t[..end].to_owned()
        });
    MessageNotice {
        aor: aor.to_owned(),
        message_id: m.id.clone(),
        from_uri,
        from_name,
        from_number,
        text,
        content_type: m.content_type.clone(),
        ttl: settings.ttl.min(Duration::from_secs(86_400)),
    }
}

/// Hands kept messages to phones that register again, and drops expired ones; runs
/// for the life of the server.
pub async fn run(core: Arc<Core>) {
    let mut events = core.registrar.subscribe();
    let active = Deliveries::default();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) if matches!(ev.kind, BindingEventKind::Added | BindingEventKind::Refreshed) => {
                    let b = ev.binding;
                    // several nodes: the node holding the phone's flow delivers (the
                    // others see the REGISTER as a remote event); whether anything
                    // waits is asked of Redis by the delivery itself
                    let shared = core.registrar.shared_messages().is_some();
                    if core.registrar.owner(&b) == Owner::Here
                        && (shared || core.registrar.messages().has_waiting(b.aor()))
                        && active.lock().insert(b.aor().to_owned())
                    {
                        tokio::spawn(deliver(core.clone(), b, active.clone()));
                    }
                }
                Ok(_) => {}
                // missed events: the next REGISTER of those phones delivers instead
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = sweep.tick() => {
                let gone = match core.registrar.shared_messages() {
                    // one node a second sweeps for all
                    Some(shared) => shared.sweep(unix_now_ms()).await.unwrap_or_else(|e| {
                        debug!(error = %e, "kept messages not swept");
                        Vec::new()
                    }),
                    None => core.registrar.messages().sweep(unix_now_ms()),
                };
                for m in gone {
                    info!(aor = %m.aor, id = %m.id, call_id = %m.call_id, "kept message expired undelivered; dropped");
                    crate::metrics::global().message_dropped(MessageDrop::Expired);
                }
            }
        }
    }
}

/// Where the kept messages are: this node's store, or Redis for several nodes.
enum Queue<'a> {
    Local(&'a MessageQueue),
    Shared(&'a SharedMessages, Lease),
}

impl Queue<'_> {
    /// The oldest message waiting for `aor`, if any.
    async fn next(&self, aor: &str) -> Result<Option<Arc<StoredMessage>>, StoreError> {
        let now = unix_now_ms();
        Ok(match self {
            Queue::Local(q) => q.waiting(aor, now).into_iter().next(),
            Queue::Shared(q, lease) => {
                if !q.renew(lease).await? {
                    // held too long: another node may deliver now
                    return Ok(None);
                }
                q.waiting(aor, now).await?.into_iter().next()
            }
        })
    }

    /// Removes a delivered (or refused) message; an error stops the delivery.
    async fn remove(&self, aor: &str, id: &str) -> Result<(), StoreError> {
        match self {
            Queue::Local(q) => q.remove(aor, id),
            Queue::Shared(q, _) => {
                q.remove(aor, id).await?;
            }
        }
        Ok(())
    }
}

/// Sends the messages waiting for `b.aor` to the binding `b`, oldest first. With
/// several nodes this node first takes the AOR's delivery lease in Redis, so a phone
/// registering on two nodes at once gets each message once, in order.
async fn deliver(core: Arc<Core>, b: Arc<Binding>, active: Deliveries) {
    let span = tracing::debug_span!("deliver", aor = %b.aor());
    async {
        let flow: Option<Flow> = b.flow().and_then(|f| f.parse().ok());
        if let Some(flow) = flow.filter(|f| core.transport.is_open(f)) {
            let queue = match core.registrar.shared_messages() {
                Some(shared) => claim(&core, shared, b.aor())
                    .await
                    .map(|l| Queue::Shared(shared, l)),
                None => Some(Queue::Local(core.registrar.messages())),
            };
            if let Some(queue) = queue {
                hand_over(&core, &flow, &b, &queue).await;
                if let Queue::Shared(shared, lease) = queue {
                    if let Err(e) = shared.release(lease).await {
                        debug!(error = %e, "delivery lease not released; it runs out");
                    }
                }
            }
        }
        active.lock().remove(b.aor());
        // a message kept while this delivery was finishing goes with the next REGISTER
    }
    .instrument(span)
    .await
}

/// Several nodes: the delivery lease of `aor` when something waits and no other node
/// (or task) delivers right now. It outlasts one MESSAGE transaction (Timer F).
async fn claim(core: &Core, shared: &SharedMessages, aor: &str) -> Option<Lease> {
    let ttl = core.timers.t1 * 64 + LEASE_MARGIN;
    let me = &core.settings.cluster.node_id;
    let r = match shared.has_waiting(aor).await {
        Ok(true) => shared.claim(aor, me, ttl).await,
        Ok(false) => Ok(None),
        Err(e) => Err(e),
    };
    r.unwrap_or_else(|e| {
        debug!(error = %e, "kept messages not read; they wait for the next REGISTER");
        None
    })
}

/// Sends `queue`'s messages for `b.aor` over `flow` one at a time until none is left,
/// the phone is not ready, or the store fails.
async fn hand_over(core: &Arc<Core>, flow: &Flow, b: &Binding, queue: &Queue<'_>) {
    loop {
        let m = match queue.next(b.aor()).await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                debug!(error = %e, "kept messages not read; kept");
                break;
            }
        };
        let removed = match send_one(core, flow, b, &m).await {
            Ok(code) if (200..300).contains(&code) => {
                crate::metrics::global().messages_delivered.inc();
                debug!(id = %m.id, code, "kept message delivered");
                queue.remove(&m.aor, &m.id).await
            }
            Ok(code) if matches!(code, 408 | 480 | 503) => {
                debug!(id = %m.id, code, "phone not ready; messages kept");
                break;
            }
            Ok(code) => {
                crate::metrics::global().message_dropped(MessageDrop::Undeliverable);
                info!(id = %m.id, call_id = %m.call_id, code, "kept message refused by the phone; dropped");
                queue.remove(&m.aor, &m.id).await
            }
            Err(why) => {
                debug!(id = %m.id, error = why, "kept message not sent; kept");
                break;
            }
        };
        if let Err(e) = removed {
            // it may go out again with the next REGISTER, with its own Call-ID/CSeq
            warn!(id = %m.id, error = %e, "handed-over message not removed; delivery stops");
            break;
        }
    }
}

/// Sends one kept message to `b` over `flow` as a non-INVITE client transaction and
/// returns the final status (`408` when none came).
async fn send_one(
    core: &Arc<Core>,
    flow: &Flow,
    b: &Binding,
    m: &StoredMessage,
) -> Result<u16, &'static str> {
    let local = core
        .transport
        .local_addr(flow)
        .ok_or("no local address for the flow")?;
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let branch = core.branches.next(u64::from_le_bytes(seed));
    let request = build(core, flow, local, &branch, b, m);
    let (tx, mut rx) = crate::transaction::task_channel();
    let key = core.tx.client_key(&branch, "MESSAGE");
    core.tx.insert_client(key, tx, 0);
    let result = async {
        let mut client = ClientTx::new(Kind::NonInvite, !flow.is_udp(), core.timers, Instant::now());
        core.transport
            .send(flow, request.clone())
            .map_err(|_| "send failed")?;
        loop {
            let deadline = client.next_deadline();
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(TxEvent::Response { msg, .. }) => {
                        let Some(code) = msg.code() else { continue };
                        if client.on_response(code, Instant::now()) == Disposition::Pass && code >= 200 {
                            return Ok(code);
                        }
                    }
                    Some(_) => {}
                    None => return Err("transaction table closed"),
                },
                _ = sleep_until(deadline) => {
                    while let Some(a) = client.poll(Instant::now()) {
                        match a {
                            ClientAction::Retransmit => {
                                let _ = core.transport.send(flow, request.clone());
                            }
                            ClientAction::Timeout => return Ok(408),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    .await;
    core.tx.remove_client(key);
    result
}

async fn sleep_until(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The MESSAGE as sent to the phone: its registered Contact as Request-URI, the
/// registration's Path as Route, and From, To, Call-ID, CSeq, Content-Type and body
/// as the sender sent them (so a phone can recognise a repeated delivery).
fn build(
    core: &Core,
    flow: &Flow,
    local: std::net::SocketAddr,
    branch: &str,
    b: &Binding,
    m: &StoredMessage,
) -> bytes::Bytes {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(512 + m.body.len());
    let _ = write!(
        s,
        "MESSAGE {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n",
        b.contact(),
        flow.via_transport(),
        core.advertised(local, flow.remote())
    );
    for r in &b.path {
        let _ = write!(s, "Route: {r}\r\n");
    }
    let _ = write!(
        s,
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} MESSAGE\r\n",
        m.from, m.to, m.call_id, m.cseq
    );
    if let Some(ct) = &m.content_type {
        let _ = write!(s, "Content-Type: {ct}\r\n");
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n", m.body.len());
    let mut out = s.into_bytes();
    out.extend_from_slice(&m.body);
    out.into()
}
