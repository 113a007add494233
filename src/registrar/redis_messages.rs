//! MESSAGEs kept for sleeping phones when several nodes share Redis.
//!
//! With one node the kept messages live in the node's own store (`messages.rs`). With
//! several, a MESSAGE may arrive on node A while the phone wakes and registers on
//! node B, so the messages live in Redis next to the bindings, and any node can keep
//! one, and the node that holds the phone's new flow delivers it.
//!
//! Layout, every key carrying the AOR as its hash tag where it concerns one AOR:
//!
//! - `<prefix>:msgs:{<aor>}` is a hash: field `seq` counts the AOR's arrivals, each
//!   field `m:<id>` is one message, `"<seq> <JSON>"`. A Lua script keeps a message
//!   only under `max_per_aor` and numbers it, so arrivals on two nodes keep one order.
//!   The key's TTL is the longest a message in it lives plus a margin.
//! - `<prefix>:msglease:{<aor>}` is the delivery lease: a node hands an AOR's messages
//!   over only while it holds it (`SET NX PX`, renewed before each message, released
//!   by a compare-and-delete), so two nodes never deliver the same message, and the
//!   messages of one AOR go out one at a time, in order. A message is deleted only
//!   after the phone's `2xx`; the lease of a node that dies runs out by itself.
//! - `<prefix>:msgs:total` counts the messages kept (for `max_total`), and
//!   `<prefix>:msgs:due` (a sorted set: AOR by the earliest expiry of its messages)
//!   lets the sweep find expired messages without walking every key. Both are
//!   single-key commands, so they work on Redis Cluster too. `max_total` may be
//!   passed by as many messages as arrive at once on different nodes; it guards
//!   memory, it is not an exact quota.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use parking_lot::Mutex;
use redis::Script;

use super::messages::{KeepError, MessageRules};
use super::redis::RedisBindings;
use super::store::{StoreError, StoredMessage};

/// Added to a message key's TTL beyond its longest-lived message: the sweep (any
/// node, every second) removes expired messages first and counts them out; the TTL
/// only clears what no node was left to sweep.
const TTL_MARGIN_MS: u64 = 3_600_000;

/// Most AORs one sweep looks at.
const SWEEP_BATCH: usize = 1000;

/// Keeps one message. KEYS[1]: the AOR's hash. ARGV[1]: id; ARGV[2]: JSON;
/// ARGV[3]: `max_per_aor`; ARGV[4]: TTL in ms. Returns the message's number, or
/// `-1 - waiting` when the AOR is full.
const KEEP: &str = r"
local n = redis.call('HLEN', KEYS[1])
if redis.call('HEXISTS', KEYS[1], 'seq') == 1 then n = n - 1 end
if n >= tonumber(ARGV[3]) then return -1 - n end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'm:' .. ARGV[1], seq .. ' ' .. ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return seq
";

/// Deletes one message. KEYS[1]: the AOR's hash; ARGV[1]: id. Returns 1 when it
/// was there (so exactly one node counts it out).
const DELETE: &str = r"
local r = redis.call('HDEL', KEYS[1], 'm:' .. ARGV[1])
if r == 1 and redis.call('HLEN', KEYS[1]) <= 1 then redis.call('DEL', KEYS[1]) end
return r
";

/// Renews (ARGV[2] > 0: for that many ms) or releases (ARGV[2] = 0) a lease, only if
/// it is still the holder's. KEYS[1]: the lease; ARGV[1]: the holder's token.
/// Returns 1 when it was the holder's.
const LEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// One message as stored (the body in base64: any bytes, in a JSON string).
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    id: String,
    aor: String,
    from: String,
    to: String,
    call_id: String,
    cseq: u32,
    content_type: Option<String>,
    body: String,
    received_at_ms: u64,
    expires_at_ms: u64,
}

/// The kept messages of every node, in Redis (see the module doc).
pub struct SharedMessages {
    redis: Arc<RedisBindings>,
    rules: Mutex<MessageRules>,
    keep: Script,
    delete: Script,
    lease: Script,
}

impl std::fmt::Debug for SharedMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMessages").finish_non_exhaustive()
    }
}

/// The right to hand over one AOR's messages, for a while (see [`SharedMessages::claim`]).
#[derive(Debug)]
pub struct Lease {
    key: String,
    token: String,
    ttl: Duration,
}

impl SharedMessages {
    /// The kept messages in `redis`.
    pub fn new(redis: Arc<RedisBindings>) -> SharedMessages {
        SharedMessages {
            redis,
            rules: Mutex::new(MessageRules::default()),
            keep: Script::new(KEEP),
            delete: Script::new(DELETE),
            lease: Script::new(LEASE),
        }
    }

    /// Sets the caps (at startup).
    pub fn set_rules(&self, rules: MessageRules) {
        *self.rules.lock() = rules;
    }

    fn key(&self, aor: &str) -> String {
        format!("{}:msgs:{{{aor}}}", self.redis.prefix())
    }

    fn total_key(&self) -> String {
        format!("{}:msgs:total", self.redis.prefix())
    }

    fn due_key(&self) -> String {
        format!("{}:msgs:due", self.redis.prefix())
    }

    /// Keeps `msg` (numbered here, in arrival order across nodes) and returns once
    /// Redis has it.
    pub async fn keep(&self, mut msg: StoredMessage) -> Result<Arc<StoredMessage>, KeepError> {
        let rules = *self.rules.lock();
        let total: Option<usize> = self
            .redis
            .run(redis::cmd("GET").arg(self.total_key()).clone())
            .await?;
        let total = total.unwrap_or(0);
        if total >= rules.max_total {
            return Err(KeepError::StoreFull(total));
        }
        let json = encode(&msg)?;
        let ttl = msg
            .expires_at_ms
            .saturating_sub(super::unix_now_ms())
            .saturating_add(TTL_MARGIN_MS);
        let mut inv = self.keep.key(self.key(&msg.aor));
        inv.arg(&msg.id).arg(json).arg(rules.max_per_aor).arg(ttl);
        let seq: i64 = self.redis.invoke(inv).await?;
        if seq < 0 {
            let waiting = usize::try_from(-1 - seq).unwrap_or(usize::MAX);
            return Err(KeepError::AorFull(waiting));
        }
        msg.seq = u64::try_from(seq).unwrap_or(0);
        // the message is kept (a failure from here on must not make the sender send it
        // again); the count and the sweep's index follow
        let counted: Result<i64, _> = self
            .redis
            .run(redis::cmd("INCR").arg(self.total_key()).clone())
            .await;
        let filed: Result<i64, _> = self
            .redis
            .run(
                redis::cmd("ZADD")
                    .arg(self.due_key())
                    .arg("LT")
                    .arg(msg.expires_at_ms)
                    .arg(&msg.aor)
                    .clone(),
            )
            .await;
        if let Err(e) = counted.and(filed) {
            tracing::warn!(aor = %msg.aor, error = %e, "kept message not counted or filed for expiry");
        }
        Ok(Arc::new(msg))
    }

    /// Every message kept for `aor` (expired ones included), in arrival order.
    async fn all(&self, aor: &str) -> Result<Vec<Arc<StoredMessage>>, StoreError> {
        let fields: Vec<(String, Vec<u8>)> = self
            .redis
            .run(redis::cmd("HGETALL").arg(self.key(aor)).clone())
            .await?;
        let mut out: Vec<Arc<StoredMessage>> = fields
            .into_iter()
            .filter(|(f, _)| f.starts_with("m:"))
            .filter_map(|(_, v)| match decode(aor, &v) {
                Some(m) => Some(Arc::new(m)),
                None => {
                    tracing::warn!(aor, "kept message unreadable; skipped");
                    None
                }
            })
            .collect();
        out.sort_by_key(|m| m.seq);
        Ok(out)
    }

    /// The messages waiting for `aor`, oldest first, expired ones left out.
    pub async fn waiting(
        &self,
        aor: &str,
        now_ms: u64,
    ) -> Result<Vec<Arc<StoredMessage>>, StoreError> {
        let mut all = self.all(aor).await?;
        all.retain(|m| m.expires_at_ms > now_ms);
        Ok(all)
    }

    /// Whether anything waits for `aor`.
    pub async fn has_waiting(&self, aor: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .redis
            .run(redis::cmd("EXISTS").arg(self.key(aor)).clone())
            .await?;
        Ok(n > 0)
    }

    /// Removes a message (delivered, or given up); true if this call removed it.
    pub async fn remove(&self, aor: &str, id: &str) -> Result<bool, StoreError> {
        let mut inv = self.delete.key(self.key(aor));
        inv.arg(id);
        let removed: i64 = self.redis.invoke(inv).await?;
        if removed == 1 {
            let _: i64 = self
                .redis
                .run(redis::cmd("DECR").arg(self.total_key()).clone())
                .await?;
        }
        Ok(removed == 1)
    }

    /// Takes the delivery lease of `aor` for `ttl`, unless another node (or another
    /// task) holds it. `holder` names this node in the lease, for an operator reading
    /// Redis.
    pub async fn claim(
        &self,
        aor: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let key = format!("{}:msglease:{{{aor}}}", self.redis.prefix());
        let token = format!("{holder} {}", crate::ids::random_hex(8));
        let got: Option<String> = self
            .redis
            .run(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .clone(),
            )
            .await?;
        Ok(got.map(|_| Lease { key, token, ttl }))
    }

    /// Extends `lease` by its time again; false when it ran out and another holds it.
    pub async fn renew(&self, lease: &Lease) -> Result<bool, StoreError> {
        self.lease_op(lease, millis(lease.ttl)).await
    }

    /// Gives `lease` back (nothing happens if it already ran out).
    pub async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        self.lease_op(&lease, 0).await.map(|_| ())
    }

    async fn lease_op(&self, lease: &Lease, ms: u64) -> Result<bool, StoreError> {
        let mut inv = self.lease.key(&lease.key);
        inv.arg(&lease.token).arg(ms);
        let held: i64 = self.redis.invoke(inv).await?;
        Ok(held == 1)
    }

    /// Removes the messages expired at `now_ms` and returns them, unless another
    /// node swept within the last second (then nothing). Each expired message is
    /// returned by exactly one node.
    pub async fn sweep(&self, now_ms: u64) -> Result<Vec<Arc<StoredMessage>>, StoreError> {
        let lock = format!("{}:msgs:sweep", self.redis.prefix());
        let got: Option<String> = self
            .redis
            .run(
                redis::cmd("SET")
                    .arg(lock)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(900)
                    .clone(),
            )
            .await?;
        if got.is_none() {
            return Ok(Vec::new());
        }
        let due: Vec<String> = self
            .redis
            .run(
                redis::cmd("ZRANGE")
                    .arg(self.due_key())
                    .arg("-inf")
                    .arg(now_ms)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(SWEEP_BATCH)
                    .clone(),
            )
            .await?;
        let mut gone = Vec::new();
        for aor in due {
            let mut next = None;
            for m in self.all(&aor).await? {
                if m.expires_at_ms > now_ms {
                    next = Some(next.unwrap_or(u64::MAX).min(m.expires_at_ms));
                } else if self.remove(&aor, &m.id).await? {
                    gone.push(m);
                }
            }
            self.reindex(&aor, next).await?;
        }
        Ok(gone)
    }

    /// Files `aor` in the sweep's index under its earliest expiry, or takes it out
    /// when nothing is left (then looks again: a message kept meanwhile is put back).
    async fn reindex(&self, aor: &str, next: Option<u64>) -> Result<(), StoreError> {
        let due = self.due_key();
        if let Some(at) = next {
            let _: i64 = self
                .redis
                .run(redis::cmd("ZADD").arg(&due).arg(at).arg(aor).clone())
                .await?;
            return Ok(());
        }
        let _: i64 = self
            .redis
            .run(redis::cmd("ZREM").arg(&due).arg(aor).clone())
            .await?;
        // a keep that ran after our read filed its expiry before this ZREM; it is
        // seen here
        if let Some(at) = self.all(aor).await?.iter().map(|m| m.expires_at_ms).min() {
            let _: i64 = self
                .redis
                .run(
                    redis::cmd("ZADD")
                        .arg(&due)
                        .arg("LT")
                        .arg(at)
                        .arg(aor)
                        .clone(),
                )
                .await?;
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The JSON of `m` (without its number, which Redis assigns).
fn encode(m: &StoredMessage) -> Result<String, StoreError> {
    let wire = Wire {
        id: m.id.clone(),
        aor: m.aor.clone(),
        from: m.from.clone(),
        to: m.to.clone(),
        call_id: m.call_id.clone(),
        cseq: m.cseq,
        content_type: m.content_type.clone(),
        body: base64::engine::general_purpose::STANDARD.encode(&m.body),
        received_at_ms: m.received_at_ms,
        expires_at_ms: m.expires_at_ms,
    };
    serde_json::to_string(&wire).map_err(|_| StoreError::Corrupt {
        aor: m.aor.clone(),
        key: m.id.clone(),
        reason: "encode",
    })
}

/// A stored `"<seq> <JSON>"` value of `aor`; `None` when it is not one.
fn decode(aor: &str, value: &[u8]) -> Option<StoredMessage> {
    let text = std::str::from_utf8(value).ok()?;
    let (seq, json) = text.split_once(' ')?;
    let w: Wire = serde_json::from_str(json).ok()?;
    if w.aor != aor {
        return None;
    }
    Some(StoredMessage {
        id: w.id,
        aor: w.aor,
        seq: seq.parse().ok()?,
        from: w.from,
        to: w.to,
        call_id: w.call_id,
        cseq: w.cseq,
        content_type: w.content_type,
        body: base64::engine::general_purpose::STANDARD
            .decode(w.body)
            .ok()?,
        received_at_ms: w.received_at_ms,
        expires_at_ms: w.expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_message_round_trips_with_its_number_and_any_bytes() {
        let m = StoredMessage {
            id: "ab12".into(),
            aor: "bob@x".into(),
            seq: 0,
            from: "\"Alice\" <sip:alice@x>;tag=1".into(),
            to: "<sip:bob@x>".into(),
            call_id: "c1@x".into(),
            cseq: 7,
            content_type: Some("application/octet-stream".into()),
            body: vec![0, 255, b' ', b'\n'],
            received_at_ms: 1_765_000_000_000,
            expires_at_ms: 1_765_000_600_000,
        };
        let value = format!("42 {}", encode(&m).unwrap());
        let back = decode("bob@x", value.as_bytes()).expect("decoded");
        assert_eq!(back, StoredMessage { seq: 42, ..m });
        assert!(
            decode("eve@x", value.as_bytes()).is_none(),
            "filed under another AOR"
        );
        assert!(decode("bob@x", b"42 {nope").is_none());
        assert!(decode("bob@x", b"no-number").is_none());
    }
}
