//! The shared binding store for several sipwake nodes: Redis (or Valkey).
//!
//! With several nodes the shared store is the truth: a phone registered on node A
//! must be found by node B a moment later, so no node serves lookups from a table of
//! its own. Every lookup reads the AOR from Redis (one `HGETALL`, a fraction of a
//! millisecond on a LAN), and every REGISTER is a read-modify-write of that AOR.
//!
//! Layout (Flexisip keeps an AOR's contacts the same way, one hash per AOR):
//!
//! - `<prefix>:{<aor>}` is a hash: field `v` is a version number, each field
//!   `b:<binding key>` one binding as JSON. The braces make the AOR the key's hash
//!   tag, so one AOR is one key, in one cluster slot, changed in one script.
//! - The key's TTL is the longest time any of its bindings is kept (push bindings:
//!   their expiry plus `push.binding_ttl_secs`), plus a margin; an AOR nobody
//!   refreshes disappears by itself.
//! - `<prefix>:meta:<name>` holds the values every node must agree on (the flow-token
//!   secret), set once with `SET NX`.
//! - `<prefix>:{nodes}:info` (hash: node id → its description) and
//!   `<prefix>:{nodes}:beat` (sorted set: node id → when its heartbeat lapses, by
//!   Redis's clock) are the live nodes, read without walking the keyspace.
//! - `<prefix>:ev:{<aor>}` is the AOR's event channel (same hash tag, so same slot as
//!   its hash): the script that commits a change publishes its binding events there
//!   (`PUBLISH`, or `SPUBLISH` on a Redis Cluster), and a node subscribes to it only
//!   while it has a call parked for the AOR (see [`super::remote`]).
//!
//! A Redis Cluster (`store.redis.cluster`) needs nothing else: every script touches
//! one AOR's key and channel, or the two node keys, in one slot; the other keys are
//! used one at a time, and `SCAN` (admin views and the sweep) walks every primary. How connections are made: [`super::redis_link`].
//!
//! REGISTER ordering across nodes: a node reads the AOR (with its version), applies
//! the RFC 3261 §10.3 rules in Rust exactly as for one node (Call-ID/CSeq check,
//! instance/reg-id identity, max contacts), then writes the difference with a Lua
//! script that applies it only if the version is still the one it read. If another
//! node changed the AOR in between, the script refuses, and the node reads again and
//! re-decides. So two devices of one AOR registering at the same moment on two nodes
//! are both kept, and an old CSeq arriving at another node is still refused. The 200
//! goes out only after the script ran.
//!
//! Expiry: readers drop expired bindings, every write deletes the expired ones of its
//! AOR, and a sweep (one node at a time, under a short lock key) walks every AOR.
//!
//! Failure: each command has `store.redis.timeout_ms`; a failure or timeout is a
//! [`StoreError::Redis`], which the proxy answers with `503` and `Retry-After`.
//! The connection manager reconnects by itself; `/healthz` pings Redis and says why
//! it fails.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{AsyncCommands, Script};

use super::redis_link::{Endpoint, Link, Subscriber};
use super::store::{StoreError, StoreOp};
use super::Binding;
use crate::config::RedisSettings;

/// How often a write is retried when other nodes keep changing the same AOR.
const MAX_TRIES: usize = 16;

/// Added to a key's TTL beyond its longest-kept binding, so clock skew between nodes
/// never drops a binding early.
const TTL_MARGIN_MS: u64 = 60_000;

/// Applies a planned change if nobody changed the AOR since it was read.
///
/// KEYS[1]: the AOR's hash. ARGV[1]: version read ("" when the key was absent);
/// ARGV[2]: new TTL in ms; ARGV[3]: the AOR's event channel; ARGV[4]: the
/// events ("" for none), published only when the change is applied; ARGV[5]: number
/// of fields to delete; then those fields; then field/value pairs to set. Returns 1
/// when applied, 0 on a version mismatch.
const CAS: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if (v or '') ~= ARGV[1] then return 0 end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
local n = tonumber(ARGV[5])
local i = 6
for _ = 1, n do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
while i < #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if redis.call('HLEN', KEYS[1]) - (v and 1 or 0) <= 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Deletes the expired bindings of one AOR. ARGV[1]: now in ms; ARGV[2]: grace of
/// push bindings in seconds. Returns the number of bindings left.
const SWEEP: &str = r"
local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local left, gone = 0, 0
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 2) == 'b:' then
    local ok, b = pcall(cjson.decode, all[i + 1])
    local keep = 0
    if ok and type(b) == 'table' and type(b.expires_at) == 'number' then
      keep = b.expires_at
      if b.push ~= nil and b.push ~= cjson.null then keep = keep + grace end
    end
    if keep * 1000 > now then
      left = left + 1
    else
      redis.call('HDEL', KEYS[1], f)
      gone = gone + 1
    end
  end
end
if left == 0 then
  redis.call('DEL', KEYS[1])
elseif gone > 0 then
  redis.call('HINCRBY', KEYS[1], 'v', 1)
end
return left
";

/// A node's heartbeat. KEYS[1]: hash id → node JSON; KEYS[2]: sorted set id → time
/// its heartbeat lapses (Redis's clock, ms). ARGV: id, JSON, TTL in ms.
const BEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
";

/// The nodes whose heartbeat has not lapsed (KEYS as [`BEAT`]): forgets the others,
/// returns the JSON of each live one.
const LIVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(gone) do redis.call('HDEL', KEYS[1], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')
if #live == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(live))
";

/// The Redis side of the registrar (see the module doc).
pub struct RedisBindings {
    endpoint: Endpoint,
    conn: Link,
    prefix: String,
    timeout: Duration,
    cas: Script,
    sweep: Script,
    beat: Script,
    live: Script,
    /// Why the last command failed; `None` once one succeeds again.
    failing: Mutex<Option<String>>,
    failed: AtomicBool,
}

impl std::fmt::Debug for RedisBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBindings")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// An AOR as read: its version (to write back against) and its bindings, oldest
/// first (the order REGISTERs built, which eviction ties rely on).
#[derive(Debug, Default)]
pub struct AorState {
    /// `v` field ("" when the key does not exist).
    pub version: String,
    /// Every stored binding, expired ones included.
    pub bindings: Vec<Arc<Binding>>,
}

impl RedisBindings {
    /// Connects to Redis and checks that it answers (a node without its store does
    /// not start).
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        let endpoint = Endpoint::new(settings)?;
        let conn = endpoint.connect(settings.timeout).await?;
        let cas = if endpoint.is_cluster() {
            // a cluster's sharded channel, served by the shard owning the AOR's slot
            Script::new(&CAS.replace("'PUBLISH'", "'SPUBLISH'"))
        } else {
            Script::new(CAS)
        };
        let this = Self {
            endpoint,
            conn,
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            cas,
            sweep: Script::new(SWEEP),
            beat: Script::new(BEAT),
            live: Script::new(LIVE),
            failing: Mutex::new(None),
            failed: AtomicBool::new(false),
        };
        let _: String = this.run(redis::cmd("PING")).await?;
        Ok(this)
    }

    /// The key of an AOR's hash.
    fn key(&self, aor: &str) -> String {
        format!("{}:{{{aor}}}", self.prefix)
    }

    /// `None` when the last command worked; otherwise why it failed.
    pub fn health(&self) -> Option<String> {
        if !self.failed.load(Relaxed) {
            return None;
        }
        self.failing.lock().clone()
    }

    /// Asks Redis whether it answers (for `/healthz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.run(redis::cmd("PING")).await?;
        Ok(())
    }

    /// Times `fut`, bounds it by the timeout, and records success or failure.
    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let m = crate::metrics::global();
        let start = Instant::now();
        let r = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(redis_err(e)),
            Err(_) => Err(StoreError::Redis(format!(
                "no answer within {} ms (store.redis.timeout_ms)",
                self.timeout.as_millis()
            ))),
        };
        m.redis_command.observe(start.elapsed());
        match &r {
            Ok(_) => {
                if self.failed.swap(false, Relaxed) {
                    m.redis_reconnects.inc();
                    tracing::info!("Redis answers again");
                }
            }
            Err(e) => {
                m.redis_errors.inc();
                *self.failing.lock() = Some(e.to_string());
                if !self.failed.swap(true, Relaxed) {
                    tracing::warn!(error = %e, "Redis failing");
                }
            }
        }
        r
    }

    /// Runs one command, timed and bounded like every other (for the other shared
    /// parts of the registrar: kept messages, the refresh index).
    pub(super) async fn run<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut c = self.conn.clone();
        self.timed(async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Runs one script invocation, timed and bounded like every command.
    pub(super) async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut c = self.conn.clone();
        self.timed(async move { inv.invoke_async(&mut c).await })
            .await
    }

    /// The prefix of every key (`store.redis.key_prefix`).
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The AOR's version and bindings. A binding that cannot be decoded is skipped
    /// and logged (it is overwritten or swept later), never fatal for the AOR.
    pub async fn read(&self, aor: &str) -> Result<AorState, StoreError> {
        let fields: Vec<(String, Vec<u8>)> = self
            .run(redis::cmd("HGETALL").arg(self.key(aor)).clone())
            .await?;
        Ok(decode(aor, fields))
    }

    /// The channel the binding events of `aor` are published on (hash tag `aor`: in
    /// the slot of its key).
    pub fn channel(&self, aor: &str) -> String {
        format!("{}:ev:{{{aor}}}", self.prefix)
    }

    /// A connection for receiving published events.
    pub async fn subscriber(&self) -> Result<Subscriber, StoreError> {
        self.endpoint.subscriber(self.timeout).await
    }

    /// Writes `ops` for `aor` if its version is still `version`; `keep_ms` is the
    /// longest time any binding left is kept; `events` (may be empty) is published
    /// on the AOR's [`RedisBindings::channel`] in the same step. False: another node
    /// came first.
    pub async fn write(
        &self,
        aor: &str,
        version: &str,
        ops: &[StoreOp],
        keep_ms: u64,
        events: &str,
    ) -> Result<bool, StoreError> {
        let mut inv = self.cas.key(self.key(aor));
        inv.arg(version)
            .arg(keep_ms.saturating_add(TTL_MARGIN_MS))
            .arg(self.channel(aor))
            .arg(events);
        let dels: Vec<String> = ops
            .iter()
            .filter_map(|op| match op {
                StoreOp::Delete { key, .. } => Some(format!("b:{key}")),
                // bindings only: the proxy keeps no MESSAGE with several nodes
                StoreOp::Put(_) | StoreOp::PutMessage(_) | StoreOp::DeleteMessage { .. } => None,
            })
            .collect();
        inv.arg(dels.len()).arg(&dels);
        for op in ops {
            if let StoreOp::Put(b) = op {
                let json = serde_json::to_string(&**b).map_err(|e| StoreError::Corrupt {
                    aor: b.aor().to_owned(),
                    key: b.key().to_owned(),
                    reason: if e.is_data() { "data" } else { "encode" },
                })?;
                inv.arg(format!("b:{}", b.key())).arg(json);
            }
        }
        let mut c = self.conn.clone();
        let applied: i64 = self
            .timed(async move { inv.invoke_async(&mut c).await })
            .await?;
        if applied == 0 {
            crate::metrics::global().redis_conflicts.inc();
        }
        Ok(applied == 1)
    }

    /// Reads, lets `change` decide, and writes back, again and again while other
    /// nodes win the race. `change` returns the ops, the longest keep time in ms,
    /// the events to publish with the write (may be empty) and a result; no ops:
    /// nothing to write.
    pub async fn update<R>(
        &self,
        aor: &str,
        mut change: impl FnMut(&AorState) -> (Vec<StoreOp>, u64, String, R),
    ) -> Result<R, StoreError> {
        for _ in 0..MAX_TRIES {
            let state = self.read(aor).await?;
            let (ops, keep_ms, events, out) = change(&state);
            if ops.is_empty()
                || self
                    .write(aor, &state.version, &ops, keep_ms, &events)
                    .await?
            {
                return Ok(out);
            }
        }
        Err(StoreError::Redis(format!(
            "{MAX_TRIES} writes in a row lost to other nodes changing the same AOR"
        )))
    }

    /// Every AOR with a hash (for the admin views and the sweep), by `SCAN`.
    pub async fn aors(&self) -> Result<Vec<String>, StoreError> {
        let head = self.prefix.len() + 2;
        let keys = self.scan(&format!("{}:{{*", self.prefix)).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| Some(k.get(head..)?.strip_suffix('}')?.to_owned()))
            .collect())
    }

    /// Deletes expired bindings everywhere, if no other node swept within
    /// `interval`. Returns the bindings left, or `None` when another node sweeps.
    pub async fn sweep(
        &self,
        now_ms: u64,
        grace_secs: u64,
        interval: Duration,
    ) -> Result<Option<(usize, usize)>, StoreError> {
        let lock_key = format!("{}:sweep", self.prefix);
        let ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let got: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(&lock_key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .clone(),
            )
            .await?;
        if got.is_none() {
            return Ok(None);
        }
        let (mut bindings, mut aors) = (0usize, 0usize);
        for aor in self.aors().await? {
            let mut inv = self.sweep.key(self.key(&aor));
            inv.arg(now_ms).arg(grace_secs);
            let mut c = self.conn.clone();
            let left: i64 = self
                .timed(async move { inv.invoke_async(&mut c).await })
                .await?;
            if left > 0 {
                aors += 1;
                bindings += usize::try_from(left).unwrap_or(0);
            }
        }
        let mut c = self.conn.clone();
        let stats = format!("{}:stats", self.prefix);
        let _: () = self
            .timed(async move {
                c.hset_multiple(&stats, &[("bindings", bindings), ("aors", aors)])
                    .await
            })
            .await?;
        Ok(Some((bindings, aors)))
    }

    /// Binding and AOR counts from the last sweep by any node.
    pub async fn stats(&self) -> Result<(usize, usize), StoreError> {
        let (b, a): (Option<usize>, Option<usize>) = self
            .run(
                redis::cmd("HMGET")
                    .arg(format!("{}:stats", self.prefix))
                    .arg("bindings")
                    .arg("aors")
                    .clone(),
            )
            .await?;
        Ok((b.unwrap_or(0), a.unwrap_or(0)))
    }

    /// The hash of node descriptions and the sorted set of their lapse times, in one
    /// slot (hash tag `nodes`).
    fn node_keys(&self) -> (String, String) {
        (
            format!("{}:{{nodes}}:info", self.prefix),
            format!("{}:{{nodes}}:beat", self.prefix),
        )
    }

    /// Writes `node`'s heartbeat, kept for `ttl` (by Redis's clock).
    pub async fn heartbeat(&self, node: &NodeInfo, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(node).map_err(|e| StoreError::Redis(e.to_string()))?;
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let (info, beat) = self.node_keys();
        let mut inv = self.beat.key(info);
        inv.key(beat).arg(&node.id).arg(json).arg(ms);
        let mut c = self.conn.clone();
        let _: i64 = self
            .timed(async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    /// Every node whose heartbeat has not lapsed, by id (forgetting the others).
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let (info, beat) = self.node_keys();
        let mut inv = self.live.key(info);
        inv.key(beat);
        let mut c = self.conn.clone();
        let values: Vec<Option<String>> = self
            .timed(async move { inv.invoke_async(&mut c).await })
            .await?;
        let mut out: Vec<NodeInfo> = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Every key matching `pattern`, by `SCAN` (of every primary of a cluster).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn.clone();
        let primaries = self.timed(async move { c.primaries().await }).await?;
        let mut out = Vec::new();
        for node in &primaries {
            let mut cursor: u64 = 0;
            loop {
                let cmd = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .clone();
                let mut c = self.conn.clone();
                let node = node.as_deref();
                let reply = self
                    .timed(async move { c.query_at(cmd, node).await })
                    .await?;
                let (next, keys): (u64, Vec<String>) =
                    redis::from_redis_value(reply).map_err(|e| StoreError::Redis(e.to_string()))?;
                out.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The shared value `name`, set to `fresh` first if no node set it yet.
    pub async fn meta_or_init(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = format!("{}:meta:{name}", self.prefix);
        let _: Option<String> = self
            .run(redis::cmd("SET").arg(&key).arg(fresh).arg("NX").clone())
            .await?;
        let v: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(&key).clone()).await?;
        v.ok_or_else(|| StoreError::Redis(format!("{key} vanished right after being set")))
    }
}

fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

/// Turns the hash fields of `aor` into its state.
fn decode(aor: &str, fields: Vec<(String, Vec<u8>)>) -> AorState {
    let mut state = AorState::default();
    for (field, value) in fields {
        if field == "v" {
            state.version = String::from_utf8_lossy(&value).into_owned();
            continue;
        }
        let Some(key) = field.strip_prefix("b:") else {
            continue;
        };
        match serde_json::from_slice::<Binding>(&value) {
            Ok(b) if b.aor() == aor && b.key() == key => state.bindings.push(Arc::new(b)),
            Ok(_) => tracing::warn!(
                aor,
                "stored binding filed under another AOR or key; skipped"
            ),
            Err(e) => tracing::warn!(aor, error = %e, "stored binding unreadable; skipped"),
        }
    }
    state.bindings.sort_by_key(|b| b.updated_at_ms);
    state
}

/// One node as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// `cluster.node_id`.
    pub id: String,
    /// `cluster.advertise_uri`.
    pub uri: String,
    /// Unix ms of its last heartbeat.
    pub at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::BindingFields;

    #[test]
    fn decode_skips_bad_fields_and_orders_oldest_first() {
        let b = |key: &str, at: u64| {
            Binding::new(BindingFields {
                expires_at: 10,
                path: vec!["<sip:p;lr>".into()],
                push: Some("{}".into()),
                updated_at_ms: at,
                ..BindingFields::for_test("a@x", key, "sip:a@h")
            })
        };
        let json = |b: &Binding| serde_json::to_vec(b).unwrap();
        let fields = vec![
            ("v".to_string(), b"7".to_vec()),
            ("b:k2".to_string(), json(&b("k2", 20))),
            ("b:k1".to_string(), json(&b("k1", 10))),
            ("b:bad".to_string(), b"{not json".to_vec()),
            ("b:moved".to_string(), json(&b("other", 5))),
        ];
        let s = decode("a@x", fields);
        assert_eq!(s.version, "7");
        let keys: Vec<&str> = s.bindings.iter().map(|b| b.key()).collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!(*s.bindings[1], b("k2", 20), "every field round-trips");
    }
}
