//! Server transactions (RFC 3261 §17.2, RFC 6026 §7.1).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Kind, Timers};

/// Server transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No final response yet.
    Proceeding,
    /// Non-2xx final sent; INVITE waits for ACK (timers G, H), non-INVITE absorbs
    /// retransmissions (timer J).
    Completed,
    /// ACK received for a non-2xx final (timer I).
    Confirmed,
    /// 2xx to INVITE sent (timer L): retransmitted INVITEs are absorbed, not forked.
    Accepted,
    /// Gone.
    Terminated,
}

/// What a timer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAction {
    /// Send the final response again (timer G).
    Retransmit(Bytes),
    /// No ACK came (timer H).
    NoAck,
    /// The transaction is over and may be forgotten.
    Terminated,
}

/// One server transaction.
#[derive(Debug, Clone)]
pub struct ServerTx {
    kind: Kind,
    state: State,
    reliable: bool,
    timers: Timers,
    last: Option<Bytes>,
    interval: Duration,
    retransmit_at: Option<Instant>,
    end_at: Option<Instant>,
}

impl ServerTx {
    /// A transaction for a request that just arrived.
    pub fn new(kind: Kind, reliable: bool, timers: Timers) -> ServerTx {
        ServerTx {
            kind,
            state: State::Proceeding,
            reliable,
            timers,
            last: None,
            interval: timers.t1,
            retransmit_at: None,
            end_at: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True once a final response was sent.
    pub fn is_final(&self) -> bool {
        self.state != State::Proceeding
    }

    /// Records a response being sent with status `code`. Returns false if the
    /// transaction may not send it (a final was already sent, except further 2xx to
    /// INVITE, which the proxy forwards end to end).
    pub fn send_response(&mut self, code: u16, bytes: &Bytes, now: Instant) -> bool {
        let t64 = self.timers.t64();
        match self.state {
            State::Proceeding => {}
            State::Accepted if (200..300).contains(&code) => return true,
            _ => return false,
        }
        if code < 200 {
            self.last = Some(bytes.clone());
            return true;
        }
        if self.kind == Kind::Invite && code < 300 {
            // a retransmitted INVITE is absorbed from here on, never answered: the
            // 2xx is not kept (the UAS retransmits it, end to end)
            self.last = None;
            self.state = State::Accepted;
            self.end_at = Some(now + t64);
        } else if self.kind == Kind::Invite {
            self.last = Some(bytes.clone());
            self.state = State::Completed;
            if !self.reliable {
                self.retransmit_at = Some(now + self.timers.t1);
            }
            self.end_at = Some(now + t64);
        } else {
            self.last = Some(bytes.clone());
            self.state = State::Completed;
            self.end_at = Some(if self.reliable { now } else { now + t64 });
        }
        true
    }

    /// A retransmission of the request arrived: what to send back, if anything.
    pub fn on_retransmission(&self) -> Option<Bytes> {
        match self.state {
            State::Proceeding | State::Completed => self.last.clone(),
            _ => None,
        }
    }

    /// An ACK matched this (INVITE) transaction.
    pub fn on_ack(&mut self, now: Instant) {
        if self.state == State::Completed {
            self.state = State::Confirmed;
            // nothing is sent again from here on (timer I only absorbs ACKs)
            self.last = None;
            self.retransmit_at = None;
            self.end_at = Some(if self.reliable {
                now
            } else {
                now + self.timers.t4
            });
        }
    }

    /// The earliest time [`ServerTx::poll`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The response this transaction may still send again (to a retransmitted
    /// request, or on timer G): the last provisional before the final, the final of
    /// a non-2xx INVITE until its ACK, a non-INVITE's final through timer J. Nothing
    /// else is kept once answered.
    pub fn kept_response(&self) -> Option<&Bytes> {
        self.last.as_ref()
    }

    /// Fires the timers due at `now`; call until it returns `None`.
    pub fn poll(&mut self, now: Instant) -> Option<ServerAction> {
        if self.state == State::Terminated {
            return None;
        }
        if self.end_at.is_some_and(|t| t <= now) {
            let no_ack = self.state == State::Completed && self.kind == Kind::Invite;
            self.state = State::Terminated;
            self.retransmit_at = None;
            self.end_at = None;
            return Some(if no_ack {
                ServerAction::NoAck
            } else {
                ServerAction::Terminated
            });
        }
        if let Some(t) = self.retransmit_at.filter(|t| *t <= now) {
            self.interval = (self.interval * 2).min(self.timers.t2);
            self.retransmit_at = Some(t + self.interval);
            return self.last.clone().map(ServerAction::Retransmit);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_non_2xx_retransmits_until_ack() {
        let t0 = Instant::now();
        let mut tx = ServerTx::new(Kind::Invite, false, Timers::default());
        let r = Bytes::from_static(b"SIP/2.0 486 Busy");
        assert!(tx.send_response(486, &r, t0));
        assert!(!tx.send_response(500, &r, t0));
        let d = tx.next_deadline().unwrap();
        assert_eq!(d - t0, Duration::from_millis(500));
        assert_eq!(tx.poll(d), Some(ServerAction::Retransmit(r.clone())));
        assert_eq!(tx.on_retransmission(), Some(r));
        tx.on_ack(d);
        assert_eq!(tx.state(), State::Confirmed);
        assert_eq!(
            tx.poll(d + Duration::from_secs(5)),
            Some(ServerAction::Terminated)
        );
    }

    #[test]
    fn an_answered_transaction_keeps_only_what_it_may_send_again() {
        let t0 = Instant::now();
        let trying = Bytes::from_static(b"SIP/2.0 100 Trying");
        let mut tx = ServerTx::new(Kind::Invite, false, Timers::default());
        tx.send_response(100, &trying, t0);
        assert_eq!(tx.kept_response(), Some(&trying));
        tx.send_response(200, &Bytes::from_static(b"SIP/2.0 200 OK"), t0);
        assert_eq!(tx.kept_response(), None, "a 2xx is never sent again");

        let busy = Bytes::from_static(b"SIP/2.0 486 Busy");
        let mut tx = ServerTx::new(Kind::Invite, false, Timers::default());
        tx.send_response(486, &busy, t0);
        assert_eq!(tx.kept_response(), Some(&busy), "until the ACK");
        tx.on_ack(t0);
        assert_eq!(tx.kept_response(), None);

        let ok = Bytes::from_static(b"SIP/2.0 200 OK");
        let mut tx = ServerTx::new(Kind::NonInvite, false, Timers::default());
        tx.send_response(200, &ok, t0);
        assert_eq!(tx.kept_response(), Some(&ok), "through timer J");
    }

    #[test]
    fn invite_without_ack_reports_timer_h() {
        let t0 = Instant::now();
        let mut tx = ServerTx::new(Kind::Invite, true, Timers::default());
        tx.send_response(480, &Bytes::new(), t0);
        assert_eq!(tx.next_deadline(), Some(t0 + Duration::from_secs(32)));
        assert_eq!(
            tx.poll(t0 + Duration::from_secs(32)),
            Some(ServerAction::NoAck)
        );
    }

    #[test]
    fn accepted_absorbs_invite_retransmissions_and_passes_more_2xx() {
        let t0 = Instant::now();
        let mut tx = ServerTx::new(Kind::Invite, false, Timers::default());
        let ok = Bytes::from_static(b"SIP/2.0 200 OK");
        assert!(tx.send_response(200, &ok, t0));
        assert_eq!(tx.state(), State::Accepted);
        assert_eq!(tx.on_retransmission(), None);
        assert!(tx.send_response(200, &ok, t0));
        assert!(!tx.send_response(486, &ok, t0));
        assert_eq!(
            tx.poll(t0 + Duration::from_secs(32)),
            Some(ServerAction::Terminated)
        );
    }

    #[test]
    fn non_invite_timer_j() {
        let t0 = Instant::now();
        let mut tx = ServerTx::new(Kind::NonInvite, false, Timers::default());
        let ok = Bytes::from_static(b"SIP/2.0 200 OK");
        tx.send_response(200, &ok, t0);
        assert_eq!(tx.on_retransmission(), Some(ok));
        assert_eq!(
            tx.poll(t0 + Duration::from_secs(32)),
            Some(ServerAction::Terminated)
        );
    }
}
