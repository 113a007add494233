//! When a sleeping push binding is due for its refresh push, and, with several nodes,
//! the index in Redis that lets exactly one node send it.
//!
//! One node walks its bindings in memory every second (`proxy::refresh`). Several
//! nodes keep no bindings in memory, and a binding's owner node may be gone while
//! the binding lives on (a push needs no flow), so the times are kept in Redis:
//!
//! - `<prefix>:refresh:due` is a sorted set, one member per push binding
//!   (`["<aor>","<key>"]`), scored by the time a node should next look at it: its
//!   refresh time ([`due_ms`]) when a REGISTER wrote it, then the time it runs out
//!   once its push went. Every node asks for the members due each second
//!   (`ZRANGE … BYSCORE`), re-reads each binding from its AOR (the truth), and claims
//!   the push with `SET <prefix>:refresh:{<aor>}:<key>:<REGISTER time> NX`: the one
//!   node that sets the key pushes, so each registration gets one refresh push
//!   however many nodes run, and also when the node that took the REGISTER died.
//! - The index is written after the REGISTER's own write (a separate single-key
//!   command, which Redis Cluster allows; the AOR's key lives in another slot). A
//!   member that is stale (the binding was re-registered, de-registered, or its
//!   token removed) is corrected when it comes due: the binding is read again and
//!   the member moved or dropped, only if nobody moved it meanwhile (a Lua
//!   compare-and-set on the one key).

use std::sync::Arc;

use redis::Script;

use super::redis::RedisBindings;
use super::store::{StoreError, StoreOp};
use super::Binding;

/// When refresh pushes go, as the proxy's settings say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshTiming {
    /// `push.refresh.before_secs`, in ms: how long before a binding runs out.
    pub before_ms: u64,
    /// `push.flow_timeout_secs`, in ms: a phone that registered this recently is
    /// awake and refreshes by itself.
    pub awake_ms: u64,
    /// `push.binding_ttl_secs`, in ms: how long a push binding is kept past its expiry.
    pub ttl_ms: u64,
}

/// Unix ms at which the push binding `b` runs out (its SIP expiry plus the push TTL).
pub fn end_ms(b: &Binding, t: &RefreshTiming) -> u64 {
    b.expires_at.saturating_mul(1000).saturating_add(t.ttl_ms)
}

/// Unix ms from which `b` is due for its refresh push: `before_ms` before it runs
/// out, or halfway through its life when that is shorter (short TTLs must not refresh
/// every binding right after its REGISTER), and not while its phone is awake.
pub fn due_ms(b: &Binding, t: &RefreshTiming) -> u64 {
    let end = end_ms(b, t);
    let life = end.saturating_sub(b.updated_at_ms);
    end.saturating_sub(t.before_ms.min(life / 2))
        .max(b.updated_at_ms.saturating_add(t.awake_ms))
}

/// Moves a member to a new score (ARGV[3] = "": removes it), only if its score is
/// still ARGV[2]. KEYS[1]: the index; ARGV[1]: the member. Returns 1 when changed.
const MOVE: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
";

/// A push binding whose time to be looked at has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Its AOR.
    pub aor: String,
    /// Its key within the AOR.
    pub key: String,
    /// The index's member for it.
    member: String,
    /// Its score when read.
    score: u64,
}

/// The refresh index of a cluster (see the module doc).
pub struct RefreshIndex {
    redis: Arc<RedisBindings>,
    timing: RefreshTiming,
    mover: Script,
}

impl std::fmt::Debug for RefreshIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshIndex")
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl RefreshIndex {
    /// The index in `redis`, for refresh pushes sent at `timing`.
    pub fn new(redis: Arc<RedisBindings>, timing: RefreshTiming) -> RefreshIndex {
        RefreshIndex {
            redis,
            timing,
            mover: Script::new(MOVE),
        }
    }

    /// The timing it was made with.
    pub fn timing(&self) -> &RefreshTiming {
        &self.timing
    }

    fn key(&self) -> String {
        format!("{}:refresh:due", self.redis.prefix())
    }

    /// [`RefreshIndex::note`] in the background, after the REGISTER's answer (a
    /// stale or missing entry is corrected when it comes due, or by the phone's next
    /// REGISTER).
    pub fn note_soon(self: Arc<Self>, ops: Vec<StoreOp>) {
        if ops.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = self.note(&ops).await {
                    tracing::debug!(error = %e, "refresh index not updated");
                }
            });
        }
    }

    /// Files what a committed change did to push bindings: a push binding written
    /// comes due at its refresh time; a binding deleted, or written without push
    /// info, leaves.
    pub async fn note(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut add = redis::cmd("ZADD");
        add.arg(self.key());
        let mut rem = redis::cmd("ZREM");
        rem.arg(self.key());
        let (mut adds, mut rems) = (0, 0);
        for op in ops {
            match op {
                StoreOp::Put(b) if b.has_push() => {
                    add.arg(due_ms(b, &self.timing))
                        .arg(member(b.aor(), b.key()));
                    adds += 1;
                }
                StoreOp::Put(b) => {
                    rem.arg(member(b.aor(), b.key()));
                    rems += 1;
                }
                StoreOp::Delete { aor, key } => {
                    rem.arg(member(aor, key));
                    rems += 1;
                }
                StoreOp::PutMessage(_) | StoreOp::DeleteMessage { .. } => {}
            }
        }
        if adds > 0 {
            let _: i64 = self.redis.run(add).await?;
        }
        if rems > 0 {
            let _: i64 = self.redis.run(rem).await?;
        }
        Ok(())
    }

    /// Up to `limit` members due at `now_ms`, earliest first.
    pub async fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<Due>, StoreError> {
        let found: Vec<(String, f64)> = self
            .redis
            .run(
                redis::cmd("ZRANGE")
                    .arg(self.key())
                    .arg("-inf")
                    .arg(now_ms)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .arg("WITHSCORES")
                    .clone(),
            )
            .await?;
        let mut out = Vec::with_capacity(found.len());
        for (member, score) in found {
            match serde_json::from_str::<(String, String)>(&member) {
                Ok((aor, key)) => out.push(Due {
                    aor,
                    key,
                    member,
                    // scores are whole ms, exact in a double
                    score: score as u64,
                }),
                Err(_) => {
                    // not ours: out of the way
                    let _: i64 = self
                        .redis
                        .run(redis::cmd("ZREM").arg(self.key()).arg(&member).clone())
                        .await?;
                }
            }
        }
        Ok(out)
    }

    /// Looks at `d` again at `at_ms` (`None`: never; the binding is gone), unless
    /// another node or a REGISTER moved it since it was read.
    pub async fn reschedule(&self, d: &Due, at_ms: Option<u64>) -> Result<(), StoreError> {
        let mut inv = self.mover.key(self.key());
        inv.arg(&d.member)
            .arg(d.score)
            .arg(at_ms.map(|t| t.to_string()).unwrap_or_default());
        let _: i64 = self.redis.invoke(inv).await?;
        Ok(())
    }

    /// Claims the refresh push of `b`'s registration: true for exactly one caller
    /// in the cluster. The claim lasts until the binding runs out.
    pub async fn claim(&self, b: &Binding, now_ms: u64) -> Result<bool, StoreError> {
        let key = format!(
            "{}:refresh:{{{}}}:{}:{}",
            self.redis.prefix(),
            b.aor(),
            b.key(),
            b.updated_at_ms
        );
        let ms = end_ms(b, &self.timing)
            .saturating_sub(now_ms)
            .saturating_add(60_000);
        let got: Option<String> = self
            .redis
            .run(
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .clone(),
            )
            .await?;
        Ok(got.is_some())
    }
}

/// The index's member for a binding.
fn member(aor: &str, key: &str) -> String {
    serde_json::to_string(&(aor, key)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::BindingFields;

    #[test]
    fn due_before_the_end_halfway_for_short_lives_never_while_awake() {
        let t = RefreshTiming {
            before_ms: 3_600_000,
            awake_ms: 30_000,
            ttl_ms: 7 * 86_400_000,
        };
        let b = |registered_ms: u64, expires_at: u64| {
            Binding::new(BindingFields {
                push: Some("{}".into()),
                updated_at_ms: registered_ms,
                expires_at,
                ..BindingFields::for_test("a@x", "k", "sip:a@h")
            })
        };
        // a week and an hour: pushed an hour before the end
        let long = b(1_000_000, 1_000 + 3600);
        assert_eq!(end_ms(&long, &t), 1_000_000 + 3_600_000 + 7 * 86_400_000);
        assert_eq!(due_ms(&long, &t), end_ms(&long, &t) - 3_600_000);
        // a short life: halfway through
        let t2 = RefreshTiming {
            ttl_ms: 2_000,
            before_ms: 3_000,
            awake_ms: 1_000,
        };
        let short = b(10_000, 12);
        assert_eq!(due_ms(&short, &t2), 12_000);
        // never within the awake time after the REGISTER
        let awake = RefreshTiming {
            awake_ms: 3_000,
            ..t2
        };
        assert_eq!(due_ms(&short, &awake), 13_000);
        assert_eq!(member("a@x", "i:<urn:x>"), r#"["a@x","i:<urn:x>"]"#);
    }
}
