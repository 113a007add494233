//! Client transactions (RFC 3261 §17.1, RFC 6026 §7.2), one per forwarded branch.

use std::time::{Duration, Instant};

use super::{Kind, Timers};

/// Client transaction states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Request sent, nothing heard (INVITE "Calling", non-INVITE "Trying").
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived (non-2xx for INVITE); absorbing retransmissions.
    Completed,
    /// A 2xx to INVITE arrived; further 2xx pass through (Timer M).
    Accepted,
    /// Gone.
    Terminated,
}

/// What to do with a response the transaction received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Pass it to the proxy core.
    Pass,
    /// First non-2xx final to INVITE: pass it on and send ACK downstream.
    PassAndAck,
    /// Retransmitted non-2xx final to INVITE: send the ACK again, nothing else.
    Ack,
    /// Drop it.
    Absorb,
}

/// What a timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Send the request again (timers A, E).
    Retransmit,
    /// No final response in time (timers B, F): treat as 408.
    Timeout,
    /// Timer C fired on a proceeding INVITE: cancel the branch.
    TimerC,
    /// The transaction is over and may be forgotten.
    Terminated,
}

/// One client transaction.
#[derive(Debug, Clone)]
pub struct ClientTx {
    kind: Kind,
    state: State,
    reliable: bool,
    timers: Timers,
    interval: Duration,
    retransmit_at: Option<Instant>,
    timeout_at: Option<Instant>,
    timer_c_at: Option<Instant>,
    end_at: Option<Instant>,
}

impl ClientTx {
    /// A transaction whose request was just sent at `now`.
    pub fn new(kind: Kind, reliable: bool, timers: Timers, now: Instant) -> ClientTx {
        ClientTx {
            kind,
            state: State::Calling,
            reliable,
            timers,
            interval: timers.t1,
            retransmit_at: (!reliable).then(|| now + timers.t1),
            timeout_at: Some(now + timers.t64()),
            timer_c_at: (kind == Kind::Invite).then(|| now + timers.timer_c),
            end_at: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True once a provisional (or any) response arrived: only then may the branch be
    /// cancelled (RFC 3261 §9.1).
    pub fn heard_back(&self) -> bool {
        self.state != State::Calling
    }

    /// True while no final response arrived.
    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Calling | State::Proceeding)
    }

    /// Feeds a response with status `code`.
    pub fn on_response(&mut self, code: u16, now: Instant) -> Disposition {
        let t64 = self.timers.t64();
        match (self.kind, self.state, code) {
            (_, State::Terminated, _) => Disposition::Absorb,
            (_, State::Calling | State::Proceeding, 100..=199) => {
                if self.kind == Kind::Invite {
                    // Timer B guards Calling only; from here Timer C rules
                    self.retransmit_at = None;
                    self.timeout_at = None;
                    // Timer C restarts on every provisional but 100 (RFC 3261 §16.7 step 2)
                    if code > 100 {
                        self.timer_c_at = Some(now + self.timers.timer_c);
                    }
                } else if let Some(r) = self.retransmit_at {
                    // non-INVITE keeps retransmitting, but at T2 (RFC 3261 §17.1.2.2)
                    self.interval = self.timers.t2;
                    self.retransmit_at = Some(r.max(now));
                }
                self.state = State::Proceeding;
                Disposition::Pass
            }
            (_, _, 100..=199) => Disposition::Absorb,
            (Kind::Invite, State::Calling | State::Proceeding, 200..=299) => {
                self.enter(State::Accepted, Some(now + t64));
                Disposition::Pass
            }
            (Kind::Invite, State::Accepted, 200..=299) => Disposition::Pass,
            (Kind::Invite, State::Calling | State::Proceeding, _) => {
                let linger = if self.reliable { None } else { Some(now + t64) };
                self.enter(State::Completed, linger);
                Disposition::PassAndAck
            }
            (Kind::Invite, State::Completed, 300..=699) => Disposition::Ack,
            (Kind::Invite, _, _) => Disposition::Absorb,
            (Kind::NonInvite, State::Calling | State::Proceeding, _) => {
                let linger = if self.reliable {
                    None
                } else {
                    Some(now + self.timers.t4)
                };
                self.enter(State::Completed, linger);
                Disposition::Pass
            }
            (Kind::NonInvite, _, _) => Disposition::Absorb,
        }
    }

    fn enter(&mut self, state: State, end_at: Option<Instant>) {
        self.state = state;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.timer_c_at = None;
        self.end_at = end_at;
        if end_at.is_none() {
            self.state = if state == State::Accepted {
                // Timer M applies on every transport: 2xx retransmissions are end to end
                State::Accepted
            } else {
                State::Terminated
            };
        }
    }

    /// Gives up on the branch at once (after CANCEL went unanswered, or on shutdown).
    pub fn terminate(&mut self) {
        self.enter(State::Terminated, None);
    }

    /// The earliest time [`ClientTx::poll`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_at,
            self.timeout_at,
            self.timer_c_at,
            self.end_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires the timers due at `now`; call until it returns `None`.
    pub fn poll(&mut self, now: Instant) -> Option<ClientAction> {
        if self.state == State::Terminated {
            return None;
        }
        if self.end_at.is_some_and(|t| t <= now) {
            self.end_at = None;
            self.state = State::Terminated;
            return Some(ClientAction::Terminated);
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            // Timer B only guards Calling for INVITE; in Proceeding Timer C rules
            if self.kind == Kind::NonInvite || self.state == State::Calling {
                self.enter(State::Terminated, None);
                return Some(ClientAction::Timeout);
            }
            self.timeout_at = None;
        }
        if self.timer_c_at.is_some_and(|t| t <= now) {
            self.timer_c_at = None;
            if self.state == State::Proceeding {
                return Some(ClientAction::TimerC);
            }
            self.enter(State::Terminated, None);
            return Some(ClientAction::Timeout);
        }
        if let Some(t) = self.retransmit_at.filter(|t| *t <= now) {
            let cap = if self.kind == Kind::Invite {
                Duration::MAX
            } else {
                self.timers.t2
            };
            self.interval = if self.state == State::Proceeding {
                self.timers.t2
            } else {
                (self.interval * 2).min(cap)
            };
            self.retransmit_at = Some(t + self.interval);
            return Some(ClientAction::Retransmit);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn invite_over_udp_retransmits_with_doubling_then_times_out() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(Kind::Invite, false, Timers::default(), t0);
        let mut sends = vec![];
        let mut now;
        loop {
            now = tx.next_deadline().unwrap();
            match tx.poll(now) {
                Some(ClientAction::Retransmit) => sends.push(now - t0),
                Some(ClientAction::Timeout) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sends[..4], [ms(500), ms(1500), ms(3500), ms(7500)]);
        assert_eq!(now - t0, ms(32_000));
        assert_eq!(tx.state(), State::Terminated);
    }

    #[test]
    fn invite_provisional_stops_retransmits_and_final_is_acked() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(Kind::Invite, false, Timers::default(), t0);
        assert!(!tx.heard_back());
        assert_eq!(tx.on_response(180, t0), Disposition::Pass);
        assert!(tx.heard_back());
        // Timer B no longer applies; Timer C does
        assert_eq!(tx.next_deadline(), Some(t0 + Duration::from_secs(180)));
        assert_eq!(tx.on_response(486, t0), Disposition::PassAndAck);
        assert_eq!(tx.on_response(486, t0), Disposition::Ack);
        assert_eq!(tx.poll(t0 + ms(32_000)), Some(ClientAction::Terminated));
    }

    #[test]
    fn invite_2xx_accepted_passes_retransmissions() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(Kind::Invite, true, Timers::default(), t0);
        assert_eq!(tx.on_response(200, t0), Disposition::Pass);
        assert_eq!(tx.state(), State::Accepted);
        assert_eq!(tx.on_response(200, t0 + ms(500)), Disposition::Pass);
        assert_eq!(tx.poll(t0 + ms(32_000)), Some(ClientAction::Terminated));
        assert_eq!(tx.on_response(200, t0 + ms(33_000)), Disposition::Absorb);
    }

    #[test]
    fn timer_c_on_proceeding_branch() {
        let t0 = Instant::now();
        let timers = Timers {
            timer_c: Duration::from_secs(5),
            ..Timers::default()
        };
        let mut tx = ClientTx::new(Kind::Invite, true, timers, t0);
        tx.on_response(183, t0);
        assert_eq!(
            tx.poll(t0 + Duration::from_secs(5)),
            Some(ClientAction::TimerC)
        );
    }

    #[test]
    fn non_invite_caps_at_t2_and_times_out_with_timer_f() {
        let t0 = Instant::now();
        let mut tx = ClientTx::new(Kind::NonInvite, false, Timers::default(), t0);
        let mut gaps = vec![];
        let mut last = t0;
        while let Some(d) = tx.next_deadline() {
            match tx.poll(d) {
                Some(ClientAction::Retransmit) => {
                    gaps.push(d - last);
                    last = d;
                }
                Some(ClientAction::Timeout) => {
                    assert_eq!(d - t0, ms(32_000));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(gaps[..5], [ms(500), ms(1000), ms(2000), ms(4000), ms(4000)]);
    }
}
