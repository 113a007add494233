//! Which nodes of a cluster are alive, and how to reach each: each node's heartbeat
//! in Redis (a sorted set of lapse times, see [`super::redis`]), and each node's view
//! of the others refreshed from it.
//!
//! A binding belongs to the node holding its flow ([`super::Binding::node`]). When a
//! node must reach a binding another node owns, it asks [`Nodes::owner`]: `Here`
//! (use the flow), `There` (send through that node's `cluster.advertise_uri` with a
//! Route carrying the flow token, RFC 3327 style), or `Gone` (its heartbeat lapsed:
//! the flow died with it, so the binding counts as a failed flow: pushed if it has a
//! token, otherwise not callable).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Duration;

pub use super::redis::NodeInfo;
use super::redis::RedisBindings;
use super::unix_now_ms;

/// How often a node writes its heartbeat and re-reads the others'.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A heartbeat key lives this long: a node silent for three beats is gone.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);

/// Where a binding's flow is, seen from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node holds the flow (or there is one node only).
    Here,
    /// A live node holds it; requests go through its advertise URI.
    There(String),
    /// The owner's heartbeat lapsed: the flow is gone.
    Gone,
}

/// This node and its view of the others.
#[derive(Debug)]
pub struct Nodes {
    me: NodeInfo,
    live: RwLock<HashMap<String, NodeInfo>>,
}

impl Nodes {
    /// This node, named `id`, reachable at `uri`; nobody else known yet.
    pub fn new(id: String, uri: String) -> Nodes {
        Nodes {
            me: NodeInfo { id, uri, at_ms: 0 },
            live: RwLock::new(HashMap::new()),
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me.id
    }

    /// Where the flow of a binding owned by `node` is.
    pub fn owner(&self, node: Option<&str>) -> Owner {
        match node {
            None => Owner::Here,
            Some(n) if n == self.me.id => Owner::Here,
            Some(n) => match self.live.read().get(n) {
                Some(info) => Owner::There(info.uri.clone()),
                None => Owner::Gone,
            },
        }
    }

    /// Writes this node's heartbeat and re-reads every node's.
    pub async fn beat(&self, shared: &RedisBindings) -> Result<(), super::StoreError> {
        let me = NodeInfo {
            at_ms: unix_now_ms(),
            ..self.me.clone()
        };
        shared.heartbeat(&me, HEARTBEAT_TTL).await?;
        let all = shared.nodes().await?;
        *self.live.write() = all.into_iter().map(|n| (n.id.clone(), n)).collect();
        Ok(())
    }

    /// Beats every [`HEARTBEAT`] for as long as the process runs. A failed beat is
    /// counted by the store's metrics; the view of the others is kept until the next
    /// beat works.
    pub async fn run(self: Arc<Self>, shared: Arc<RedisBindings>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.beat(&shared).await {
                tracing::debug!(error = %e, "heartbeat not written");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        let n = Nodes::new("a".into(), "sip:10.0.0.1".into());
        n.live.write().insert(
            "b".into(),
            NodeInfo {
                id: "b".into(),
                uri: "sip:10.0.0.2".into(),
                at_ms: 1,
            },
        );
        assert_eq!(n.owner(None), Owner::Here);
        assert_eq!(n.owner(Some("a")), Owner::Here);
        assert_eq!(n.owner(Some("b")), Owner::There("sip:10.0.0.2".into()));
        assert_eq!(n.owner(Some("c")), Owner::Gone);
    }
}
