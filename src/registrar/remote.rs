//! Binding events from the other nodes of a cluster, so that a phone registering on
//! node C wakes the call parked for it on node B exactly as a REGISTER on B would.
//!
//! The node that commits a binding publishes its events in the same Lua step as the
//! write (see [`super::redis`]), on one channel every node subscribes to. A node
//! receiving them skips its own and hands each event to one function, the same entry
//! point its local REGISTERs feed (the wake path), so remote and local wakes cannot
//! differ.
//!
//! Never miss a wake: Redis pub/sub forgets messages sent while a subscriber is away.
//! So after every (re)subscription the node re-reads the AORs it has calls parked for
//! and hands on the bindings registered since it last knew it was subscribed ([`run`]'s
//! `resync`); the proxy does the same right after parking a call, which covers a
//! REGISTER committed between its lookup and its parking. A binding handed on twice
//! is harmless: a parked call starts one branch per device and flow.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::redis::RedisBindings;
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

/// Receives the other nodes' events for as long as the process runs: each goes to
/// `deliver`. After every subscription, `resync(since_ms)` is called with the time
/// from which events may have been missed (0 the first time).
pub async fn run(
    shared: Arc<RedisBindings>,
    me: String,
    deliver: impl Fn(BindingEvent) + Send + Sync + 'static,
    resync: impl Fn(u64) + Send + Sync + 'static,
) {
    let channel = shared.channel();
    let mut since_ms = 0;
    loop {
        let mut ps = match shared.pubsub().await {
            Ok(ps) => ps,
            Err(e) => {
                tracing::debug!(error = %e, "event subscription not opened");
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        if let Err(e) = ps.subscribe(&channel).await {
            tracing::debug!(error = %e, "event subscription refused");
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        if since_ms != 0 {
            tracing::info!("binding events from other nodes flow again");
        }
        resync(since_ms);
        let mut stream = ps.into_on_message();
        while let Some(msg) = stream.next().await {
            let Some((node, events)) = decode(msg.get_payload_bytes()) else {
                tracing::debug!("unreadable binding event message; skipped");
                continue;
            };
            if node == me {
                continue; // already delivered when committed here
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
        // a second of margin: a commit may have been published just before the loss
        since_ms = unix_now_ms().saturating_sub(1000);
        crate::metrics::global().redis_reconnects.inc();
        tracing::warn!("binding events from other nodes lost; subscribing again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_roundtrip_drops_removals() {
        let b = |key: &str| {
            Arc::new(Binding {
                expires_at: 10,
                flow: Some("udp/0/1.2.3.4:5".into()),
                updated_at_ms: 7,
                node: Some("n1".into()),
                ..Binding::for_test("a@x", key, "sip:a@h")
            })
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
