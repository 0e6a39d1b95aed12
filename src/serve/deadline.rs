//! When a connection's peer has waited too long: the first-request budget from accept, and the
//! idle timer while no request is in flight. Pure state, no I/O, so the rules can be tested
//! alone; `connection.rs` acts on what it says.

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
}

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    first_request_by: Instant,
    idle: Duration,
    /// When the connection was asked to go away for being idle.
    going_away: Option<Instant>,
}

impl Deadlines {
    /// A connection that must bring its first request by `first_request_by`, then may sit
    /// with no request in flight for `idle` at a time.
    pub(super) fn new(first_request_by: Instant, idle: Duration) -> Self {
        Deadlines {
            first_request_by,
            idle,
            going_away: None,
        }
    }

    /// The next deadline for a connection that has carried `requests`, and what it means;
    /// `None` while a request is in flight.
    pub(super) fn next(&self, requests: &Requests) -> Option<(Instant, Expiry)> {
        if !requests.seen {
            return Some((self.first_request_by, Expiry::FirstRequest));
        }
        if requests.open > 0 {
            return None;
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
