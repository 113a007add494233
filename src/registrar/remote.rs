//! Binding events from the other nodes of a cluster, so that a phone registering on
//! node C wakes the call parked for it on node B exactly as a REGISTER on B would.
//!
//! The node that commits a binding publishes its events in the same Lua step as the
//! write (see [`super::redis`]), on the AOR's own channel (a sharded channel on a
//! Redis Cluster, so only the shard owning the AOR carries it). A node subscribes to
//! an AOR's channel only while it has a call parked for that AOR, told so by the
//! proxy's [`Interest`]s, and unsubscribes when the last one ends: a node hears the
//! events of the AORs it waits for, not every REGISTER of the cluster. Received events
//! skip the node's own and go to one function, the same entry point its local
//! REGISTERs feed (the wake path), so remote and local wakes cannot differ.
//!
//! Never miss a wake: Redis pub/sub forgets messages sent while a subscriber is away.
//! So once a subscription is confirmed the node re-reads the AOR and hands on the
//! bindings registered since the call parked (a REGISTER committed between the call's
//! lookup and the subscription), and after every reconnection it does the same for
//! every AOR it waits for, from a moment before the subscription was lost (a
//! connection that stops answering a `PING` every few seconds counts as lost). A binding
//! handed on twice is harmless: a parked call starts one branch per device and flow.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::redis::RedisBindings;
use super::redis_link::{SubEvent, Subscriber};
use super::{unix_now_ms, Binding, BindingEvent, BindingEventKind, EventOrigin};

/// One batch of events as published: who committed them, and what.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Wire {
    /// `cluster.node_id` of the committing node.
    node: String,
    /// Added or refreshed bindings (removals wake nobody and are not sent).
    bindings: Vec<(char, Binding)>,
}

/// The message for `events` committed by `node`, or "" when none is worth sending.
pub fn encode(node: &str, events: &[BindingEvent]) -> String {
    let bindings: Vec<(char, Binding)> = events
        .iter()
        // another node's events are never sent on: they would echo between nodes
        .filter(|e| e.origin == EventOrigin::Local)
        .filter_map(|e| {
            let k = match e.kind {
                BindingEventKind::Added => 'a',
                BindingEventKind::Refreshed => 'r',
                BindingEventKind::Removed => return None,
            };
            Some((k, Binding::clone(&e.binding)))
        })
        .collect();
    if bindings.is_empty() {
        return String::new();
    }
    serde_json::to_string(&Wire {
        node: node.to_owned(),
        bindings,
    })
    .unwrap_or_default()
}

/// The node and events of a message; `None` when it is not one of ours.
pub fn decode(text: &[u8]) -> Option<(String, Vec<BindingEvent>)> {
    let wire: Wire = serde_json::from_slice(text).ok()?;
    let events = wire
        .bindings
        .into_iter()
        .filter_map(|(k, binding)| {
            let kind = match k {
                'a' => BindingEventKind::Added,
                'r' => BindingEventKind::Refreshed,
                _ => return None,
            };
            Some(BindingEvent::remote(kind, Arc::new(binding)))
        })
        .collect();
    Some((wire.node, events))
}

/// What the proxy tells the subscriber about its parked calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    /// A call was parked for `aor`: subscribe to its events if not yet, then hand on
    /// the bindings registered since `since_ms`.
    Park {
        /// The AOR.
        aor: String,
        /// From when bindings may have been missed (a moment before the call's lookup).
        since_ms: u64,
    },
    /// The last call parked for `aor` ended: unsubscribe.
    Unpark {
        /// The AOR.
        aor: String,
    },
}

/// A margin for "since" times: a commit may have been published a moment before the
/// loss or the parking, and nodes' clocks differ a little.
pub const MARGIN_MS: u64 = 1000;

/// How often the subscriber connection is asked whether it still answers.
const PING_EVERY: Duration = Duration::from_secs(5);

/// The first wait before subscribing again after a loss; it doubles while
/// subscribing keeps failing (Redis down, or refusing), up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(50);

/// The longest wait between two attempts to subscribe again.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The subscriber's view: the AORs waited for, and those whose subscription (and the
/// re-read after it) is still due, with the time from which events may be missed.
#[derive(Debug, Default)]
struct Wants {
    subscribed: HashMap<String, ()>,
    due: HashMap<String, u64>,
}

impl Wants {
    /// Applies `i`; returns the AOR to re-read at once (already subscribed) and the
    /// channel to leave.
    fn apply(&mut self, i: Interest) -> (Option<(String, u64)>, Option<String>) {
        match i {
            Interest::Park { aor, since_ms } => {
                if self.subscribed.contains_key(&aor) {
                    return (Some((aor, since_ms)), None);
                }
                let e = self.due.entry(aor).or_insert(since_ms);
                *e = (*e).min(since_ms);
                (None, None)
            }
            Interest::Unpark { aor } => {
                self.due.remove(&aor);
                let was = self.subscribed.remove(&aor).is_some();
                (None, was.then_some(aor))
            }
        }
    }

    /// The subscription broke at `now_ms`: every AOR is due again.
    fn lost(&mut self, now_ms: u64) {
        let since = now_ms.saturating_sub(MARGIN_MS);
        for (aor, ()) in self.subscribed.drain() {
            let e = self.due.entry(aor).or_insert(since);
            *e = (*e).min(since);
        }
    }
}

/// How long to wait before each subscription: debug builds only, from
/// `SIPWAKE_TEST_SUBSCRIBE_DELAY_MS`, so the tests can commit a REGISTER in the
/// window between a call's lookup and its subscription (or while it is resubscribing)
/// and check the re-read still wakes the call. Always zero in release builds.
fn test_subscribe_delay() -> Option<Duration> {
    #[cfg(debug_assertions)]
    {
        static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
        *DELAY.get_or_init(|| {
            std::env::var("SIPWAKE_TEST_SUBSCRIBE_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
        })
    }
    #[cfg(not(debug_assertions))]
    None
}

/// Receives the other nodes' events for as long as the process runs: subscribes and
/// unsubscribes as `interests` say, hands each event to `deliver`, and calls
/// `reread(aor, since_ms)` once a subscription is in place (first time and after
/// every reconnection).
pub async fn run(
    shared: Arc<RedisBindings>,
    me: String,
    mut interests: UnboundedReceiver<Interest>,
    deliver: impl Fn(BindingEvent) + Send + Sync + 'static,
    reread: impl Fn(String, u64) + Send + Sync + 'static,
) {
    let m = crate::metrics::global();
    let mut wants = Wants::default();
    // whether the last connection was lost and no later one subscribed yet
    let mut outage = false;
    let mut backoff = RETRY_MIN;
    loop {
        let mut sub = match shared.subscriber().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "event subscription not opened");
                // keep up with the parked calls meanwhile
                while let Ok(i) = interests.try_recv() {
                    let _ = wants.apply(i);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
        };
        let mut check = tokio::time::interval(PING_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await; // the first tick is at once
        let alive = 'conn: loop {
            if !subscribe_due(&shared, &mut sub, &mut wants, &reread).await {
                break 'conn false;
            }
            if outage {
                outage = false;
                m.redis_reconnects.inc();
                tracing::info!("binding events from other nodes flow again");
            }
            backoff = RETRY_MIN;
            m.redis_subscriptions
                .store(wants.subscribed.len() as u64, Relaxed);
            tokio::select! {
                i = interests.recv() => {
                    let Some(i) = i else { break 'conn true };
                    let (now, leave) = wants.apply(i);
                    if let Some((aor, since)) = now {
                        reread(aor, since);
                    }
                    if let Some(aor) = leave {
                        if let Err(e) = sub.unsubscribe(&shared.channel(&aor)).await {
                            tracing::debug!(error = %e, "unsubscribe failed");
                            break 'conn false;
                        }
                    }
                }
                _ = check.tick() => {
                    if let Err(e) = sub.ping().await {
                        tracing::debug!(error = %e, "event subscription does not answer");
                        break 'conn false;
                    }
                }
                ev = sub.next() => match ev {
                    SubEvent::Message(payload) => on_message(&me, &payload, &deliver),
                    SubEvent::Lost => break 'conn false,
                    SubEvent::Dropped(channel) => {
                        // the server's doing (the slot moved): subscribe again, re-read
                        let aor = wants
                            .subscribed
                            .keys()
                            .find(|a| shared.channel(a) == channel)
                            .cloned();
                        if let Some(aor) = aor {
                            wants.subscribed.remove(&aor);
                            let since = unix_now_ms().saturating_sub(MARGIN_MS);
                            wants.due.insert(aor, since);
                        }
                    }
                },
            }
        };
        if alive {
            return; // the proxy is gone
        }
        wants.lost(unix_now_ms());
        m.redis_subscriptions.store(0, Relaxed);
        if !outage {
            outage = true;
            tracing::warn!("binding events from other nodes lost; subscribing again");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// Subscribes to every due AOR's channel and re-reads each once confirmed. False when
/// the connection failed (the AORs left stay due).
async fn subscribe_due(
    shared: &RedisBindings,
    sub: &mut Subscriber,
    wants: &mut Wants,
    reread: &impl Fn(String, u64),
) -> bool {
    while let Some(aor) = wants.due.keys().next().cloned() {
        if let Some(d) = test_subscribe_delay() {
            tokio::time::sleep(d).await;
        }
        if let Err(e) = sub.subscribe(&shared.channel(&aor)).await {
            tracing::debug!(%aor, error = %e, "subscribe failed");
            return false;
        }
        let since = wants.due.remove(&aor).unwrap_or(0);
        wants.subscribed.insert(aor.clone(), ());
        // anything committed before this point is in Redis; anything after, published
        reread(aor, since);
    }
    true
}

/// One received message: its events, unless this node sent them, to `deliver`.
fn on_message(me: &str, payload: &[u8], deliver: &impl Fn(BindingEvent)) {
    let Some((node, events)) = decode(payload) else {
        tracing::debug!("unreadable binding event message; skipped");
        return;
    };
    if node == me {
        return; // already delivered when committed here
    }
    let now = unix_now_ms();
    for event in events {
        crate::metrics::global()
            .redis_event_lag
            .observe(Duration::from_millis(
                now.saturating_sub(event.binding.updated_at_ms),
            ));
        deliver(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::BindingFields;

    #[test]
    fn wants_subscribe_once_reread_each_parking_and_recover_from_a_loss() {
        let mut w = Wants::default();
        let park = |aor: &str, since_ms| Interest::Park {
            aor: aor.into(),
            since_ms,
        };
        // a first call: due for subscription from its time; a second before it is in
        // place keeps the earlier time
        assert_eq!(w.apply(park("a@x", 500)), (None, None));
        assert_eq!(w.apply(park("a@x", 400)), (None, None));
        assert_eq!(w.due.get("a@x"), Some(&400));
        // subscribed: another call is re-read at once, no new subscription
        w.due.remove("a@x");
        w.subscribed.insert("a@x".into(), ());
        assert_eq!(w.apply(park("a@x", 900)), (Some(("a@x".into(), 900)), None));
        assert!(w.due.is_empty());
        // a loss: every AOR is due again from a moment before it
        w.lost(10_000);
        assert!(w.subscribed.is_empty());
        assert_eq!(w.due.get("a@x"), Some(&(10_000 - MARGIN_MS)));
        // the last call ends: nothing due, and a subscribed AOR is left
        let unpark = |aor: &str| Interest::Unpark { aor: aor.into() };
        assert_eq!(w.apply(unpark("a@x")), (None, None));
        assert!(w.due.is_empty());
        w.subscribed.insert("b@x".into(), ());
        assert_eq!(w.apply(unpark("b@x")), (None, Some("b@x".into())));
        assert!(w.subscribed.is_empty());
    }

    #[test]
    fn wire_roundtrip_drops_removals() {
        let b = |key: &str| {
            Arc::new(Binding::new(BindingFields {
                expires_at: 10,
                flow: Some("udp/0/1.2.3.4:5".into()),
                updated_at_ms: 7,
                node: Some("n1".into()),
                ..BindingFields::for_test("a@x", key, "sip:a@h")
            }))
        };
        let ev = |kind, key| BindingEvent::local(kind, b(key));
        let remote = |kind, key| BindingEvent::remote(kind, b(key));
        let text = encode(
            "n1",
            &[
                ev(BindingEventKind::Added, "k1"),
                ev(BindingEventKind::Removed, "k2"),
                ev(BindingEventKind::Refreshed, "k3"),
            ],
        );
        let (node, events) = decode(text.as_bytes()).unwrap();
        assert_eq!(node, "n1");
        assert_eq!(
            events,
            vec![
                remote(BindingEventKind::Added, "k1"),
                remote(BindingEventKind::Refreshed, "k3")
            ],
            "received events are remote ones"
        );
        assert_eq!(encode("n1", &[remote(BindingEventKind::Added, "k1")]), "");
        assert_eq!(encode("n1", &[ev(BindingEventKind::Removed, "k2")]), "");
        assert!(decode(b"{nope").is_none());
    }
}
