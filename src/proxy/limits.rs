//! Rate limits on REGISTER and INVITE, per source and (REGISTER) per address of
//! record, so that one address flooding sipwake cannot crowd out everyone else.
//!
//! Each limit is a table of token buckets of fixed size: a source hashes (with a
//! per-process random key, so an attacker cannot aim at a bucket) to a set of two
//! buckets. A source that finds neither bucket its own takes over the one that has
//! refilled the most; a refilled bucket holds no information, so forgetting it is
//! free. A spoofing attacker who sends from many addresses therefore only makes the
//! table forget sources (which is lenient), never grows it. The hot path is one hash,
//! one clock read and one short uncontended mutex; nothing is held across an await.
//!
//! The per-AOR limit counts only REGISTERs that proved they belong to the AOR: with
//! `auth.enabled`, those whose credentials were accepted; in relay mode, those the
//! upstream registrar answered with a 2xx (it authenticates there). Otherwise anyone
//! could lock a user out by sending REGISTERs for her address of record; unproven
//! REGISTERs are bounded by the per-source limit. Without authentication sipwake cannot
//! tell the owner of an AOR from anyone else (anyone may replace or remove its
//! bindings), so there every REGISTER for a served AOR counts.
//!
//! Trusted peers (`proxy.trusted_networks`, and the upstream PBX when `upstream.uri`
//! names it by IP address) are never limited. Over the limit,
//! the request gets a `503` with `Retry-After` sent once without a transaction (a
//! retransmission meets the limiter again), or nothing (`limits.action = "drop"`).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tracing::debug;

use super::Core;
use std::net::IpAddr;

use crate::config::{OverLimit, RateLimit, Settings};
use crate::sip::{Message, Method};
use crate::transport::conn_limits::source_key;
use crate::transport::Flow;

/// One bucket. `key` 0 marks an empty one.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    key: u64,
    /// Tokens, in millitokens so that integer math keeps fractions of a token.
    milli: u64,
    /// When `milli` was last brought up to date, ms since the limiter started.
    at_ms: u64,
}

/// A fixed-size table of token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    sets: Box<[Mutex<[Bucket; 2]>]>,
    /// Millitokens added per ms (= tokens per second).
    rate: u64,
    /// Bucket size, millitokens.
    cap: u64,
}

impl RateLimiter {
    /// A limiter of `limit` with room for about `buckets` sources at once; `None`
    /// when the limit is off (rate 0).
    pub fn new(limit: RateLimit, buckets: usize) -> Option<RateLimiter> {
        if limit.rate == 0 {
            return None;
        }
        let sets = (buckets / 2).max(1);
        Some(RateLimiter {
            sets: (0..sets)
                .map(|_| Mutex::new([Bucket::default(); 2]))
                .collect(),
            rate: u64::from(limit.rate),
            cap: u64::from(limit.burst.max(1)) * 1000,
        })
    }

    /// Takes one token for `key` (a non-zero hash) at `now_ms`: `Ok`, or `Err` with
    /// the seconds until a token will be there (at least 1).
    pub fn take(&self, key: u64, now_ms: u64) -> Result<(), u32> {
        self.take_or_peek(key, now_ms, true)
    }

    /// Like [`RateLimiter::take`], but leaves the token in the bucket: whether a
    /// request would be within the limit, to be charged once it proved itself.
    pub fn peek(&self, key: u64, now_ms: u64) -> Result<(), u32> {
        self.take_or_peek(key, now_ms, false)
    }

    fn take_or_peek(&self, key: u64, now_ms: u64, take: bool) -> Result<(), u32> {
        let key = key.max(1);
        let idx = (key % self.sets.len() as u64) as usize;
        let mut set = self.sets[idx].lock();
        let level = |b: &Bucket| {
            if b.key == 0 {
                return self.cap;
            }
            let gained = now_ms.saturating_sub(b.at_ms).saturating_mul(self.rate);
            b.milli.saturating_add(gained).min(self.cap)
        };
        let slot = match set.iter().position(|b| b.key == key) {
            Some(i) => i,
            None => {
                // take over the bucket that has the least left to remember
                let i = usize::from(level(&set[1]) > level(&set[0]));
                set[i] = Bucket {
                    key,
                    milli: self.cap,
                    at_ms: now_ms,
                };
                i
            }
        };
        let b = &mut set[slot];
        b.milli = level(b);
        b.at_ms = now_ms;
        if b.milli >= 1000 {
            if take {
                b.milli -= 1000;
            }
            Ok(())
        } else {
            let wait_ms = (1000 - b.milli).div_ceil(self.rate);
            Err(u32::try_from(wait_ms.div_ceil(1000).max(1)).unwrap_or(u32::MAX))
        }
    }
}

/// Which limit a request went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// REGISTERs from its source.
    RegisterPerSource,
    /// INVITEs from its source.
    InvitePerSource,
    /// REGISTERs for its address of record.
    RegisterPerAor,
}

impl Exceeded {
    /// Every limit, in the order of [`Limits::limited`].
    pub const ALL: [Exceeded; 3] = [
        Exceeded::RegisterPerSource,
        Exceeded::InvitePerSource,
        Exceeded::RegisterPerAor,
    ];

    /// Name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Exceeded::RegisterPerSource => "register_per_source",
            Exceeded::InvitePerSource => "invite_per_source",
            Exceeded::RegisterPerAor => "register_per_aor",
        }
    }
}

/// The request rate limits of one sipwake.
#[derive(Debug)]
pub struct Limits {
    action: OverLimit,
    register_src: Option<RateLimiter>,
    invite_src: Option<RateLimiter>,
    register_aor: Option<RateLimiter>,
    hasher: RandomState,
    start: Instant,
    /// The upstream's address, exempt like a trusted network.
    upstream: Option<IpAddr>,
    /// Requests refused (answered 503 or dropped) so far, per [`Exceeded`] limit.
    pub limited: [AtomicU64; 3],
}

impl Limits {
    /// Limits as set in `[limits]`.
    pub fn new(settings: &Settings) -> Limits {
        let s = &settings.limits;
        Limits {
            upstream: settings.upstream.uri.as_ref().and_then(|u| u.ip()),
            action: s.action,
            register_src: RateLimiter::new(s.register_per_source, s.table_size),
            invite_src: RateLimiter::new(s.invite_per_source, s.table_size),
            register_aor: RateLimiter::new(s.register_per_aor, s.table_size),
            hasher: RandomState::new(),
            start: Instant::now(),
            limited: Default::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Checks a new request from an untrusted source: `Err` with the limit it went
    /// over and the seconds to wait.
    pub fn check(&self, msg: &Message, flow: &Flow) -> Result<(), (Exceeded, u32)> {
        let (limiter, what) = match msg.method() {
            Some(Method::Register) => (&self.register_src, Exceeded::RegisterPerSource),
            Some(Method::Invite) => (&self.invite_src, Exceeded::InvitePerSource),
            _ => return Ok(()),
        };
        let now = self.now_ms();
        if let Some(l) = limiter {
            let key = self
                .hasher
                .hash_one((what as u8, source_key(flow.remote().ip())));
            l.take(key, now).map_err(|s| (what, s))?;
        }
        Ok(())
    }

    /// Checks the per-AOR REGISTER limit for `aor`, taking a token when `take` (else
    /// only looking whether one is there): `Err` with the seconds to wait.
    fn check_aor(&self, aor: &str, take: bool) -> Result<(), u32> {
        let Some(l) = &self.register_aor else {
            return Ok(());
        };
        let key = self.hasher.hash_one(aor.as_bytes());
        if take {
            l.take(key, self.now_ms())
        } else {
            l.peek(key, self.now_ms())
        }
    }

    fn exempt(&self, settings: &Settings, ip: IpAddr) -> bool {
        self.upstream == Some(ip) || settings.is_trusted(ip)
    }
}

/// The per-AOR hook for a REGISTER that proved it belongs to `aor` (or, without
/// authentication, any REGISTER for a served `aor`): true if over the limit (answered
/// `503` or dropped), and it must go no further. `take`: charge the AOR now; false
/// only looks (relay mode charges when the upstream accepts, see
/// [`charge_aor`]).
pub fn register_over_aor_limit(
    core: &Core,
    msg: &Message,
    flow: &Flow,
    aor: &str,
    take: bool,
) -> bool {
    if core.limits.exempt(&core.settings, flow.remote().ip()) {
        return false;
    }
    let Err(retry_after) = core.limits.check_aor(aor, take) else {
        return false;
    };
    refused(core, msg, flow, Exceeded::RegisterPerAor, retry_after);
    true
}

/// Charges `aor` one REGISTER from `flow` without refusing anything: for a REGISTER
/// that was let through and then proved itself (relay mode: the upstream accepted it).
pub fn charge_aor(core: &Core, flow: &Flow, aor: &str) {
    if !core.limits.exempt(&core.settings, flow.remote().ip()) {
        let _ = core.limits.check_aor(aor, true);
    }
}

fn refused(core: &Core, msg: &Message, flow: &Flow, what: Exceeded, retry_after: u32) {
    core.limits.limited[what as usize].fetch_add(1, Ordering::Relaxed);
    debug!(remote = %flow.remote(), limit = ?what, "request over rate limit");
    if core.limits.action == OverLimit::Reject {
        let line = format!("Retry-After: {retry_after}");
        // stateless: a transaction per refused request would be what the flood wants
        core.respond(msg, flow, 503, "Service Unavailable (rate limit)", &[&line]);
    }
}

/// The hook for a request that starts a new transaction: true if a limit took it
/// (answered `503` or dropped), and it must go no further.
pub fn over_limit(core: &Arc<Core>, msg: &Message, flow: &Flow) -> bool {
    if !matches!(msg.method(), Some(Method::Register | Method::Invite)) {
        return false;
    }
    if core.limits.exempt(&core.settings, flow.remote().ip()) {
        return false;
    }
    let Err((what, retry_after)) = core.limits.check(msg, flow) else {
        return false;
    };
    refused(core, msg, flow, what, retry_after);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32, buckets: usize) -> RateLimiter {
        RateLimiter::new(RateLimit { rate, burst }, buckets).expect("on")
    }

    #[test]
    fn burst_then_rate() {
        let l = limiter(10, 5, 64);
        for _ in 0..5 {
            assert_eq!(l.take(7, 0), Ok(()));
        }
        assert_eq!(l.take(7, 0), Err(1));
        // 10 per second: one token every 100 ms
        assert_eq!(l.take(7, 99), Err(1));
        assert_eq!(l.take(7, 100), Ok(()));
        assert_eq!(l.take(7, 150), Err(1));
        // a long pause refills only up to the burst
        for _ in 0..5 {
            assert_eq!(l.take(7, 60_000), Ok(()));
        }
        assert!(l.take(7, 60_000).is_err());
    }

    #[test]
    fn retry_after_covers_a_slow_rate() {
        let l = limiter(1, 1, 64);
        assert_eq!(l.take(3, 0), Ok(()));
        assert_eq!(l.take(3, 0), Err(1));
        assert_eq!(l.take(3, 999), Err(1));
        assert_eq!(l.take(3, 1000), Ok(()));
    }

    #[test]
    fn sources_do_not_share_buckets() {
        let l = limiter(1, 2, 64);
        assert!(l.take(1, 0).is_ok() && l.take(1, 0).is_ok());
        assert!(l.take(1, 0).is_err());
        // same set (64 buckets = 32 sets), other key
        assert!(l.take(33, 0).is_ok() && l.take(33, 0).is_ok());
        assert!(l.take(33, 0).is_err());
        assert!(l.take(1, 0).is_err(), "the flooder keeps its empty bucket");
    }

    #[test]
    fn a_spoofed_crowd_cannot_grow_the_table_and_only_makes_it_forget() {
        let l = limiter(1, 1, 2);
        assert_eq!(l.sets.len(), 1);
        assert!(l.take(1, 0).is_ok());
        assert!(l.take(1, 0).is_err());
        for k in 2..10_000 {
            let _ = l.take(k, 0);
        }
        assert_eq!(l.sets.len(), 1);
        // the table forgot key 1: it starts again with a full bucket (lenient, never
        // stricter than its own limit)
        assert!(l.take(1, 0).is_ok());
    }

    #[test]
    fn the_emptier_bucket_is_kept_when_a_newcomer_arrives() {
        let l = limiter(1, 3, 2);
        for _ in 0..3 {
            assert!(l.take(1, 0).is_ok());
        }
        assert!(l.take(2, 0).is_ok()); // key 2 takes the empty slot
        assert!(l.take(3, 0).is_ok()); // replaces key 2 (2 tokens left), not key 1 (0)
        assert!(l.take(1, 0).is_err(), "the flooder is still remembered");
    }

    #[test]
    fn peeking_takes_nothing() {
        let l = limiter(1, 1, 64);
        for _ in 0..5 {
            assert_eq!(l.peek(9, 0), Ok(()));
        }
        assert_eq!(l.take(9, 0), Ok(()));
        assert_eq!(l.peek(9, 0), Err(1));
    }

    #[test]
    fn off_when_rate_is_zero() {
        assert!(RateLimiter::new(RateLimit { rate: 0, burst: 0 }, 64).is_none());
    }
}
