//! Which calls are up: dialogs from the 2xx to an INVITE until the final response to
//! their BYE, and initial INVITEs still being set up. A graceful shutdown waits for
//! both to reach zero; the metrics read [`Dialogs::count`].
//!
//! Only the proxy's own view is kept: a dialog is a 64-bit SipHash of its Call-ID and
//! its two tags (in sorted order, so a BYE from either side finds it), mapped to the
//! time it was last confirmed. Nothing is allocated per message; the map is touched
//! once per answered INVITE and once per BYE. A dialog whose BYE never passes through
//! sipwake (a phone that vanished, a BYE sent around the proxy) is forgotten after
//! `max_age`; a re-INVITE's 2xx confirms it again, so long calls with session timers
//! stay counted. The forgetting never walks the map under its lock: the dialogs live
//! in [`Generations`] and a sweep drops the oldest generation whole, so a dialog is
//! forgotten between `max_age` and 1.25 × `max_age` after its last 2xx.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::generations::Generations;
use crate::prehashed::PreHashedState;
use crate::sip::Message;

/// Live dialogs and calls in setup.
#[derive(Debug)]
pub struct Dialogs {
    /// Dialog keys, in generations by when they were last confirmed. The keys are
    /// keyed hashes already: the map uses them as they are (`crate::prehashed`).
    map: Mutex<Generations<u64, (), PreHashedState>>,
    /// Keys are SipHash with per-process random keys: a peer cannot aim collisions.
    hasher: RandomState,
    /// Initial INVITEs forwarded and not yet answered with a final response.
    setup: Arc<AtomicUsize>,
    max_age: Duration,
}

/// Counts one call in setup until dropped.
#[derive(Debug)]
pub struct SetupGuard(Arc<AtomicUsize>);

impl Drop for SetupGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Dialogs {
    /// An empty tracker that forgets dialogs not confirmed for `max_age`.
    pub fn new(max_age: Duration) -> Dialogs {
        Dialogs {
            map: Mutex::new(Generations::starting(Instant::now())),
            hasher: RandomState::new(),
            setup: Arc::new(AtomicUsize::new(0)),
            max_age,
        }
    }

    fn key(&self, call_id: &str, tag_a: &str, tag_b: &str) -> u64 {
        let (lo, hi) = if tag_a <= tag_b {
            (tag_a, tag_b)
        } else {
            (tag_b, tag_a)
        };
        self.hasher.hash_one((call_id, lo, hi))
    }

    fn key_of(&self, msg: &Message) -> u64 {
        self.key(msg.call_id(), msg.from_tag(), msg.to_tag())
    }

    /// A 2xx to an INVITE passed through: its dialog is up (or still up).
    pub fn confirmed(&self, resp: &Message) {
        if resp.to_tag().is_empty() {
            return; // not a dialog anyone can end with a BYE
        }
        let k = self.key_of(resp);
        self.map.lock().insert(k, ());
    }

    /// A BYE got its final response `code`: its dialog is over. Challenges (401/407)
    /// are not: the BYE comes again with credentials.
    pub fn bye_answered(&self, bye: &Message, code: u16) {
        if code < 200 || code == 401 || code == 407 {
            return;
        }
        let k = self.key_of(bye);
        self.map.lock().remove(&k);
    }

    /// Dialogs up now.
    pub fn count(&self) -> usize {
        self.map.lock().len()
    }

    /// Initial INVITEs forwarded and not yet answered.
    pub fn in_setup(&self) -> usize {
        self.setup.load(Ordering::Relaxed)
    }

    /// Counts an initial INVITE as being set up until the guard is dropped.
    pub fn setup_started(&self) -> SetupGuard {
        self.setup.fetch_add(1, Ordering::Relaxed);
        SetupGuard(self.setup.clone())
    }

    /// Forgets dialogs not confirmed for `max_age` at `now` (within a quarter more:
    /// see [`Generations`]); returns how many. Costs the same however many dialogs
    /// are up.
    pub fn sweep(&self, now: Instant) -> usize {
        let dropped = self.map.lock().rotate(now, self.max_age);
        // counted and freed with the lock released
        dropped.iter().map(|g| g.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(text: &str) -> Message {
        Message::parse(Bytes::from(text.replace('\n', "\r\n")), true).unwrap()
    }

    fn ok(from_tag: &str, to_tag: &str) -> Message {
        msg(&format!(
            "SIP/2.0 200 OK\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\n\
             From: <sip:a@x>;tag={from_tag}\n\
             To: <sip:b@x>;tag={to_tag}\n\
             Call-ID: c1\n\
             CSeq: 1 INVITE\n\
             Content-Length: 0\n\n"
        ))
    }

    fn bye(from_tag: &str, to_tag: &str) -> Message {
        msg(&format!(
            "BYE sip:b@x SIP/2.0\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK2\n\
             Max-Forwards: 70\n\
             From: <sip:b@x>;tag={from_tag}\n\
             To: <sip:a@x>;tag={to_tag}\n\
             Call-ID: c1\n\
             CSeq: 2 BYE\n\
             Content-Length: 0\n\n"
        ))
    }

    #[test]
    fn bye_from_either_side_ends_the_dialog() {
        let d = Dialogs::new(Duration::from_secs(60));
        d.confirmed(&ok("caller", "callee"));
        d.confirmed(&ok("caller", "callee")); // a retransmitted 2xx
        d.confirmed(&ok("caller", "other")); // a second fork answered
        assert_eq!(d.count(), 2);
        // the callee hangs up: its From tag is the dialog's To tag
        d.bye_answered(&bye("callee", "caller"), 407);
        assert_eq!(d.count(), 2, "a challenged BYE ends nothing");
        d.bye_answered(&bye("callee", "caller"), 200);
        assert_eq!(d.count(), 1);
        d.bye_answered(&bye("caller", "other"), 481);
        assert_eq!(d.count(), 0);
        d.bye_answered(&bye("caller", "other"), 200);
        assert_eq!(d.count(), 0);
    }

    #[test]
    fn untagged_2xx_is_not_a_dialog() {
        let d = Dialogs::new(Duration::from_secs(60));
        d.confirmed(&ok("caller", ""));
        assert_eq!(d.count(), 0);
    }

    #[test]
    fn old_dialogs_are_swept() {
        let d = Dialogs::new(Duration::from_secs(60));
        d.confirmed(&ok("caller", "callee"));
        let t0 = Instant::now();
        assert_eq!(d.sweep(t0), 0);
        assert_eq!(d.sweep(t0 + Duration::from_secs(59)), 0, "kept max_age");
        assert_eq!(d.count(), 1);
        assert_eq!(
            d.sweep(t0 + Duration::from_secs(76)),
            1,
            "gone by 1.25 max_age"
        );
        assert_eq!(d.count(), 0);
    }

    #[test]
    fn setup_guards_count() {
        let d = Dialogs::new(Duration::from_secs(60));
        let a = d.setup_started();
        let b = d.setup_started();
        assert_eq!(d.in_setup(), 2);
        drop(a);
        drop(b);
        assert_eq!(d.in_setup(), 0);
    }
}
