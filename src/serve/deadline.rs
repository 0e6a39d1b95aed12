//! When a connection's peer has waited too long: the first-request budget from accept, the
//! idle timer while no request is in flight, and (HTTP/2) how long a stream's frame may wait
//! for the peer to take it. Pure state, no I/O, so the rules can be tested alone;
//! `connection.rs` acts on what it says.

use std::time::Duration;
use tokio::time::Instant;

/// After an idle connection is told to go away (an HTTP/2 GOAWAY), how long it may take to
/// close by itself before it is dropped: time for the GOAWAY to reach the peer and for a
/// request that crossed it to be refused cleanly.
pub(super) const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// What a connection has carried so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Requests {
    /// Requests received and not yet answered to the end (their response body still open).
    open: usize,
    /// Whether any request has arrived.
    seen: bool,
    /// When the last open request ended (accept, before the first).
    idle_since: Instant,
}

impl Requests {
    /// A connection accepted at `accepted`, no request yet.
    pub(super) fn new(accepted: Instant) -> Self {
        Requests {
            open: 0,
            seen: false,
            idle_since: accepted,
        }
    }

    /// Whether any request has arrived.
    pub(super) fn any(&self) -> bool {
        self.seen
    }

    /// A request arrived.
    pub(super) fn opened(&mut self) {
        self.open += 1;
        self.seen = true;
    }

    /// A request's response ended (or was dropped) at `now`.
    pub(super) fn closed(&mut self, now: Instant) {
        self.open = self.open.saturating_sub(1);
        if self.open == 0 {
            self.idle_since = now;
        }
    }
}

/// Why a connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No request arrived within the budget from accept: drop the connection.
    FirstRequest,
    /// No request was in flight for the idle timeout: ask the connection to go away.
    Idle,
    /// The connection was asked to go away and is still open, idle: drop it.
    Gone,
    /// Time to look for streams whose frame the peer has not taken within the send timeout.
    Sends,
}

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    first_request_by: Instant,
    idle: Duration,
    /// When the connection was asked to go away for being idle.
    going_away: Option<Instant>,
    /// The send timeout of each stream's frames, and when to look at them next.
    sends: Option<(Duration, Instant)>,
}

impl Deadlines {
    /// A connection that must bring its first request by `first_request_by`, then may sit
    /// with no request in flight for `idle` at a time.
    pub(super) fn new(first_request_by: Instant, idle: Duration) -> Self {
        Deadlines {
            first_request_by,
            idle,
            going_away: None,
            sends: None,
        }
    }

    /// While requests are in flight, look at their streams' waiting frames (see
    /// [`SendCheck`]) from `from` on, so that none waits more than `timeout` unseen.
    pub(super) fn watch_sends(mut self, timeout: Duration, from: Instant) -> Self {
        self.sends = Some((timeout, from));
        self
    }

    /// The next deadline for a connection that has carried `requests`, and what it means;
    /// while a request is in flight, only the next look at its frames, if they are watched.
    pub(super) fn next(&self, requests: &Requests) -> Option<(Instant, Expiry)> {
        if !requests.seen {
            return Some((self.first_request_by, Expiry::FirstRequest));
        }
        if requests.open > 0 {
            return self.sends.map(|(_, at)| (at, Expiry::Sends));
        }
        match self.going_away {
            // A request that crossed the GOAWAY restarts the grace when it ends.
            Some(at) => Some((at.max(requests.idle_since) + GOAWAY_GRACE, Expiry::Gone)),
            None => Some((requests.idle_since + self.idle, Expiry::Idle)),
        }
    }

    /// The connection was asked to go away at `now`.
    pub(super) fn go_away(&mut self, now: Instant) {
        self.going_away = Some(now);
    }

    /// A look at the streams' frames at `now`; `None` if they are not watched.
    pub(super) fn check_sends(&self, now: Instant) -> Option<SendCheck> {
        self.sends.map(|(timeout, _)| SendCheck::new(now, timeout))
    }

    /// The look `check` is over: the next one comes when it says.
    pub(super) fn sends_checked(&mut self, check: &SendCheck) {
        if let Some((_, at)) = &mut self.sends {
            *at = check.next();
        }
    }
}

/// One look at a connection's streams for a frame that the body handed over and the peer has
/// left untaken (its flow-control window shut) for the send timeout: such a stream is cut.
/// A body with nothing to send is not judged (an SSE stream idles legitimately).
#[derive(Debug, Clone, Copy)]
pub(super) struct SendCheck {
    now: Instant,
    timeout: Duration,
    next: Instant,
}

impl SendCheck {
    fn new(now: Instant, timeout: Duration) -> Self {
        SendCheck {
            now,
            timeout,
            // A frame handed over after this look is due after this bound, so it is never
            // seen late.
            next: now + timeout,
        }
    }

    /// Whether a frame waiting since `since` has waited the whole timeout; if not, the next
    /// look comes no later than when it would have.
    pub(super) fn stalled(&mut self, since: Instant) -> bool {
        let due = since + self.timeout;
        if due <= self.now {
            return true;
        }
        self.next = self.next.min(due);
        false
    }

    /// When to look again.
    pub(super) fn next(&self) -> Instant {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn the_first_request_is_due_one_budget_after_accept_whatever_came_before() {
        let accepted = Instant::now();
        let deadlines = Deadlines::new(accepted + T, IDLE);
        let requests = Requests::new(accepted);
        assert_eq!(
            deadlines.next(&requests),
            Some((accepted + T, Expiry::FirstRequest))
        );
    }

    #[test]
    fn no_deadline_while_a_request_is_in_flight() {
        let accepted = Instant::now();
        let deadlines = Deadlines::new(accepted + T, IDLE);
        let mut requests = Requests::new(accepted);
        requests.opened();
        requests.opened();
        requests.closed(accepted + T);
        assert_eq!(deadlines.next(&requests), None, "one still open");
    }

    #[test]
    fn the_idle_timer_runs_from_the_end_of_the_last_request() {
        let accepted = Instant::now();
        let deadlines = Deadlines::new(accepted + T, IDLE);
        let mut requests = Requests::new(accepted);
        requests.opened();
        let ended = accepted + Duration::from_secs(100);
        requests.closed(ended);
        assert_eq!(
            deadlines.next(&requests),
            Some((ended + IDLE, Expiry::Idle))
        );
        // Closing more than was opened never underflows.
        requests.closed(ended);
        assert_eq!(
            deadlines.next(&requests),
            Some((ended + IDLE, Expiry::Idle))
        );
    }

    #[test]
    fn watched_sends_are_looked_at_while_requests_are_in_flight() {
        let accepted = Instant::now();
        let send = Duration::from_secs(30);
        let mut deadlines = Deadlines::new(accepted + T, IDLE).watch_sends(send, accepted);
        let mut requests = Requests::new(accepted);
        assert_eq!(
            deadlines.check_sends(accepted).map(|c| c.next()),
            Some(accepted + send)
        );
        requests.opened();
        // The first look is at once: nothing waits yet, so it only schedules the next.
        assert_eq!(deadlines.next(&requests), Some((accepted, Expiry::Sends)));
        let now = accepted + Duration::from_secs(3);
        let check = deadlines.check_sends(now).unwrap();
        deadlines.sends_checked(&check);
        assert_eq!(deadlines.next(&requests), Some((now + send, Expiry::Sends)));
        // With no request in flight the idle timer is back.
        requests.closed(now);
        assert_eq!(deadlines.next(&requests), Some((now + IDLE, Expiry::Idle)));
        // Unwatched (HTTP/1.1), nothing is looked at.
        let plain = Deadlines::new(accepted + T, IDLE);
        requests.opened();
        assert_eq!(plain.next(&requests), None);
        assert!(plain.check_sends(now).is_none());
    }

    #[test]
    fn a_frame_left_untaken_for_the_send_timeout_is_stalled_and_no_sooner() {
        let start = Instant::now();
        let send = Duration::from_secs(30);
        let now = start + Duration::from_secs(100);
        let mut check = Deadlines::new(start, IDLE)
            .watch_sends(send, start)
            .check_sends(now)
            .unwrap();
        assert!(check.stalled(now - send), "waited exactly the timeout");
        assert!(check.stalled(start), "waited longer");
        assert_eq!(
            check.next(),
            now + send,
            "stalled frames do not set the next look"
        );
        assert!(!check.stalled(now - send + Duration::from_millis(1)));
        assert_eq!(check.next(), now + Duration::from_millis(1));
        assert!(!check.stalled(now - Duration::from_secs(10)));
        assert_eq!(
            check.next(),
            now + Duration::from_millis(1),
            "the earliest due wins"
        );
    }

    /// A frame that starts waiting at any moment is judged exactly one timeout later, however
    /// its wait falls between looks.
    #[test]
    fn every_stall_is_seen_exactly_one_timeout_after_it_starts() {
        let start = Instant::now();
        let send = Duration::from_secs(30);
        for offset_ms in [0, 1, 7_500, 29_999, 30_000, 30_001, 61_234] {
            let since = start + Duration::from_millis(offset_ms);
            let mut deadlines = Deadlines::new(start, IDLE).watch_sends(send, start);
            let mut at = start;
            let seen = loop {
                let mut check = deadlines.check_sends(at).unwrap();
                // The frame exists only once it has been handed over.
                if since <= at && check.stalled(since) {
                    break at;
                }
                deadlines.sends_checked(&check);
                assert!(check.next() > at, "every look moves time on");
                at = check.next();
            };
            assert_eq!(seen, since + send, "a frame handed over {offset_ms} ms in");
        }
    }

    #[test]
    fn a_connection_asked_to_go_away_gets_a_grace_from_its_last_activity() {
        let accepted = Instant::now();
        let mut deadlines = Deadlines::new(accepted + T, IDLE);
        let mut requests = Requests::new(accepted);
        requests.opened();
        requests.closed(accepted);
        let asked = accepted + IDLE;
        deadlines.go_away(asked);
        assert_eq!(
            deadlines.next(&requests),
            Some((asked + GOAWAY_GRACE, Expiry::Gone))
        );
        // A request that crossed the GOAWAY holds it open; its end restarts the grace.
        requests.opened();
        assert_eq!(deadlines.next(&requests), None);
        let ended = asked + Duration::from_secs(5);
        requests.closed(ended);
        assert_eq!(
            deadlines.next(&requests),
            Some((ended + GOAWAY_GRACE, Expiry::Gone))
        );
    }
}
