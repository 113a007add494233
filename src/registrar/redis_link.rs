//! How the shared store reaches Redis, kept apart from what it stores there
//! (`redis.rs`): one server through a connection manager that reconnects by itself, or
//! a Redis Cluster (`store.redis.cluster`) through the cluster client, which sends
//! each command to the shard owning its key's slot and follows the cluster when slots
//! move; over TCP or TLS (`rediss://`, with `store.redis.ca_file`). Also the
//! connection binding events arrive on ([`Subscriber`]): a plain pub/sub connection
//! on one server, a RESP3 cluster connection with sharded subscriptions on a cluster.
//!
//! Everything the store does fits a cluster: each AOR is one key whose hash tag is the
//! AOR, its scripts touch that key only and publish on a channel with the same hash
//! tag (so in the same slot, as `SPUBLISH` inside a script requires); the other keys
//! (heartbeats, shared secrets, sweep lock) are read and written one at a time, and
//! `SCAN` walks every primary.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use tokio::sync::mpsc;

use super::store::StoreError;
use crate::config::RedisSettings;

/// A connection for commands: to one server or to a cluster.
#[derive(Clone)]
pub enum Link {
    /// One Redis server.
    One(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::One(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::One(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::One(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

impl Link {
    /// Sends `cmd` to the primary at `node` (`host:port`, from [`Link::primaries`]),
    /// or as usual when `node` is `None`.
    pub async fn query_at(&mut self, cmd: Cmd, node: Option<&str>) -> redis::RedisResult<Value> {
        match (self, node) {
            (Link::Cluster(c), Some(addr)) => {
                let (host, port) = split_addr(addr).ok_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "cluster node address without a port",
                    ))
                })?;
                let to = SingleNodeRoutingInfo::ByAddress {
                    host: host.to_owned(),
                    port,
                };
                c.route_command(cmd, RoutingInfo::SingleNode(to)).await
            }
            (link, _) => cmd.query_async(link).await,
        }
    }

    /// The primaries a `SCAN` must walk: `[None]` for one server, each primary's
    /// `host:port` for a cluster.
    pub async fn primaries(&mut self) -> redis::RedisResult<Vec<Option<String>>> {
        let Link::Cluster(c) = self else {
            return Ok(vec![None]);
        };
        let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        // no response policy: one answer per node, keyed by its address
        let answers = c.route_command(redis::cmd("PING"), all).await?;
        let Value::Map(answers) = answers else {
            return Err((redis::ErrorKind::Client, "PING of every primary: not a map").into());
        };
        let mut out: Vec<Option<String>> = answers
            .into_iter()
            .filter_map(|(addr, _)| redis::from_redis_value::<String>(addr).ok().map(Some))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// `host:port` (the host possibly an IPv6 address in brackets) into its parts.
fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// What is needed to open connections: the clients built from the settings.
#[derive(Clone)]
pub enum Endpoint {
    /// One Redis server.
    One(redis::Client),
    /// A Redis Cluster: its seed nodes and how to reach them.
    Cluster {
        /// The seed nodes, credentials applied.
        nodes: Vec<ConnectionInfo>,
        /// PEM of `store.redis.ca_file`.
        ca: Option<Vec<u8>>,
        /// `store.redis.timeout_ms`.
        timeout: Duration,
    },
}

/// `store.redis.url` (and `cluster_urls`) with the user and password settings
/// applied.
fn connection_infos(settings: &RedisSettings) -> Result<Vec<ConnectionInfo>, StoreError> {
    let mut urls = vec![("store.redis.url", settings.url.as_str())];
    urls.extend(
        settings
            .cluster_urls
            .iter()
            .map(|u| ("store.redis.cluster_urls", u.as_str())),
    );
    urls.into_iter()
        .map(|(key, url)| {
            let info = url
                .into_connection_info()
                .map_err(|e| StoreError::Redis(format!("{key}: {e}")))?;
            let mut rs = info.redis_settings().clone();
            if let Some(u) = &settings.username {
                rs = rs.set_username(u);
            }
            if let Some(p) = &settings.password {
                rs = rs.set_password(p);
            }
            Ok(info.set_redis_settings(rs))
        })
        .collect()
}

/// Reads `store.redis.ca_file`.
fn read_ca(settings: &RedisSettings) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(path) = &settings.ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path)
        .map_err(|e| StoreError::Redis(format!("store.redis.ca_file {}: {e}", path.display())))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(StoreError::Redis(format!(
            "store.redis.ca_file {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(Some(pem))
}

fn tls_certs(ca: Option<Vec<u8>>) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: ca,
    }
}

impl Endpoint {
    /// The clients for `settings` (nothing is connected yet).
    pub fn new(settings: &RedisSettings) -> Result<Endpoint, StoreError> {
        let mut infos = connection_infos(settings)?;
        let ca = read_ca(settings)?;
        if settings.cluster {
            return Ok(Endpoint::Cluster {
                nodes: infos,
                ca,
                timeout: settings.timeout,
            });
        }
        let info = infos.remove(0);
        let client = match ca {
            Some(pem) => redis::Client::build_with_tls(info, tls_certs(Some(pem))),
            None => redis::Client::open(info),
        }
        .map_err(|e| StoreError::Redis(format!("store.redis.url: {e}")))?;
        Ok(Endpoint::One(client))
    }

    fn cluster_builder(
        nodes: &[ConnectionInfo],
        ca: &Option<Vec<u8>>,
        timeout: Duration,
    ) -> redis::cluster::ClusterClientBuilder {
        let mut b = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .max_retry_wait(500);
        if let Some(first) = nodes.first() {
            // nodes learnt from the cluster are reached with the seeds' credentials
            let rs = first.redis_settings();
            if let Some(u) = rs.username() {
                b = b.username(u);
            }
            if let Some(p) = rs.password() {
                b = b.password(p);
            }
        }
        if let Some(pem) = ca {
            b = b.certs(tls_certs(Some(pem.clone())));
        }
        b
    }

    /// Opens the connection for commands, giving up after `timeout` × 3.
    pub async fn connect(&self, timeout: Duration) -> Result<Link, StoreError> {
        let fut = async {
            match self {
                Endpoint::One(client) => {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout))
                        .set_number_of_retries(2)
                        .set_max_delay(Duration::from_millis(500));
                    ConnectionManager::new_with_config(client.clone(), config)
                        .await
                        .map(Link::One)
                }
                Endpoint::Cluster { nodes, ca, timeout } => {
                    Self::cluster_builder(nodes, ca, *timeout)
                        .build()?
                        .get_async_connection()
                        .await
                        .map(Link::Cluster)
                }
            }
        };
        tokio::time::timeout(timeout * 3, fut)
            .await
            .map_err(|_| StoreError::Redis("no answer from Redis".into()))?
            .map_err(|e| StoreError::Redis(e.to_string()))
    }

    /// True for a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Endpoint::Cluster { .. })
    }

    /// Opens a connection binding events arrive on (nothing subscribed yet).
    pub async fn subscriber(&self, timeout: Duration) -> Result<Subscriber, StoreError> {
        let (tx, events) = mpsc::unbounded_channel();
        let fut = async {
            match self {
                Endpoint::One(client) => {
                    let (sink, mut stream) = client.get_async_pubsub().await?.split();
                    tokio::spawn(async move {
                        use futures_util::StreamExt;
                        while let Some(msg) = stream.next().await {
                            let ev = SubEvent::Message(msg.get_payload_bytes().to_vec());
                            if tx.send(ev).is_err() {
                                return; // a newer subscriber took over
                            }
                        }
                        let _ = tx.send(SubEvent::Lost);
                    });
                    Ok(Sub::One(sink))
                }
                Endpoint::Cluster { nodes, ca, timeout } => {
                    let nodes: Vec<ConnectionInfo> = nodes
                        .iter()
                        .map(|n| {
                            let rs = n
                                .redis_settings()
                                .clone()
                                .set_protocol(redis::ProtocolVersion::RESP3);
                            n.clone().set_redis_settings(rs)
                        })
                        .collect();
                    // RESP3: messages arrive as pushes on the connection of their shard
                    let conn = Self::cluster_builder(&nodes, ca, *timeout)
                        .use_protocol(redis::ProtocolVersion::RESP3)
                        .push_sender(move |info: redis::PushInfo| {
                            let ev = match info.kind {
                                redis::PushKind::SMessage | redis::PushKind::Message => {
                                    match info.data.into_iter().nth(1) {
                                        Some(Value::BulkString(b)) => SubEvent::Message(b),
                                        _ => return Ok(()),
                                    }
                                }
                                // a shard connection broke
                                redis::PushKind::Disconnection => SubEvent::Lost,
                                // ours, or the server's when the slot moved away
                                redis::PushKind::SUnsubscribe => match info.data.first() {
                                    Some(Value::BulkString(b)) => {
                                        SubEvent::Dropped(String::from_utf8_lossy(b).into_owned())
                                    }
                                    _ => return Ok(()),
                                },
                                _ => return Ok(()),
                            };
                            tx.send(ev).map_err(|_| ())
                        })
                        .build()?
                        .get_async_connection()
                        .await?;
                    Ok(Sub::Cluster(conn))
                }
            }
        };
        let sub = tokio::time::timeout(timeout * 3, fut)
            .await
            .map_err(|_| StoreError::Redis("no answer from Redis".into()))?
            .map_err(|e: redis::RedisError| StoreError::Redis(e.to_string()))?;
        Ok(Subscriber {
            sub,
            events,
            timeout,
        })
    }
}

enum Sub {
    One(redis::aio::PubSubSink),
    Cluster(ClusterConnection),
}

/// What a [`Subscriber`] hears.
#[derive(Debug)]
pub enum SubEvent {
    /// A message published on a subscribed channel.
    Message(Vec<u8>),
    /// The subscription broke (a connection lost): messages may have been missed;
    /// subscribe again on a new [`Subscriber`].
    Lost,
    /// Unsubscribed from this channel: by us, or on a cluster by the server when the
    /// channel's slot moved to another shard (then subscribe again if still wanted).
    Dropped(String),
}

/// A connection binding events arrive on: per-AOR channels subscribed and
/// unsubscribed as calls park and end (`SUBSCRIBE` on one server, `SSUBSCRIBE` on a
/// cluster, on the shard that owns the channel's slot).
pub struct Subscriber {
    sub: Sub,
    events: mpsc::UnboundedReceiver<SubEvent>,
    /// `store.redis.timeout_ms`: a connection that does not answer within it is lost.
    timeout: Duration,
}

impl Subscriber {
    /// Subscribes to `channel`; returns once Redis confirmed it, so that every message
    /// published afterwards arrives.
    pub async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        let fut = async {
            match &mut self.sub {
                Sub::One(s) => s.subscribe(channel).await,
                Sub::Cluster(c) => c.ssubscribe(channel).await,
            }
        };
        bounded(self.timeout, fut).await
    }

    /// Unsubscribes from `channel`.
    pub async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        let fut = async {
            match &mut self.sub {
                Sub::One(s) => s.unsubscribe(channel).await,
                Sub::Cluster(c) => c.sunsubscribe(channel).await,
            }
        };
        bounded(self.timeout, fut).await
    }

    /// Checks the connection answers (a connection cut without a word, e.g. by a
    /// firewall, would otherwise look like a quiet one while messages are lost).
    pub async fn ping(&mut self) -> redis::RedisResult<()> {
        let fut = async {
            match &mut self.sub {
                Sub::One(s) => s.ping::<Value>().await.map(drop),
                Sub::Cluster(c) => redis::cmd("PING").query_async::<Value>(c).await.map(drop),
            }
        };
        bounded(self.timeout, fut).await
    }

    /// The next message, or [`SubEvent::Lost`].
    pub async fn next(&mut self) -> SubEvent {
        self.events.recv().await.unwrap_or(SubEvent::Lost)
    }
}

/// `fut`, failing with a timeout error past `limit`.
async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer within store.redis.timeout_ms",
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses() {
        assert_eq!(split_addr("10.0.0.1:7000"), Some(("10.0.0.1", 7000)));
        assert_eq!(split_addr("[::1]:7001"), Some(("::1", 7001)));
        assert_eq!(split_addr("::1:7001"), Some(("::1", 7001)));
        assert_eq!(split_addr("nohost"), None);
    }
}
