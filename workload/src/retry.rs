//! When a client sends an operation again. Retries of a mutating operation
//! carry the same idempotency key, so at most one attempt can apply; the
//! operation's outcome is [`run_log::Outcome::fold`] over its attempts.
//!
//! The policy is a pure function of the attempts so far and the time since
//! the first, so the live load generator (wall clock) and the simulator
//! (simulated clock) retry alike.

use std::time::Duration;

use run_log::{Attempt, Outcome};
use service_kit::Backoff;

/// The pause doubles from the first to the longest; no retry starts later
/// than the window after the first attempt. A killed wallet is back in
/// about 2 s, so the window outlasts an outage with room: a retry reaches
/// the restarted service, which replays the first result or applies the
/// operation once.
pub const RETRY_PAUSE_FIRST_MS: u64 = 200;
pub const RETRY_PAUSE_LONGEST_MS: u64 = 2_000;
pub const RETRY_WINDOW_MS: u64 = 10_000;
/// With the pauses above, the window allows 7 retries; this bounds them
/// should the constants change.
pub const ATTEMPTS_MAX: usize = 8;

/// The retry state of one operation: [`Retry::next_pause`] after each
/// attempt.
pub struct Retry {
    backoff: Backoff,
}

impl Retry {
    pub fn new() -> Self {
        Self {
            backoff: Backoff::new(
                Duration::from_millis(RETRY_PAUSE_FIRST_MS),
                Duration::from_millis(RETRY_PAUSE_LONGEST_MS),
            ),
        }
    }

    /// The pause before the next attempt, or `None` to stop, given the
    /// attempts so far and the time since the first began. Only an
    /// operation with an idempotency key is retried, and only while its
    /// folded outcome is open and the last attempt was not answered by the
    /// service with a refusal: a 4xx to a retry is the service's word on
    /// that key, and asking again would only repeat it. A connection
    /// refused (the service is down) or cut off is asked again.
    pub fn next_pause(
        &mut self,
        keyed: bool,
        attempts: &[Attempt],
        since_first: Duration,
    ) -> Option<Duration> {
        let last = attempts.last()?;
        let open =
            Outcome::fold(attempts.iter().map(|a| a.outcome)) == Some(Outcome::Indeterminate);
        let answered = last.status.is_some_and(|status| status < 500);
        if !keyed || !open || answered || attempts.len() >= ATTEMPTS_MAX {
            return None;
        }
        let pause = self.backoff.next_pause();
        let in_window = since_first + pause <= Duration::from_millis(RETRY_WINDOW_MS);
        in_window.then_some(pause)
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: Outcome, status: Option<u16>) -> Attempt {
        Attempt {
            outcome,
            status,
            error_code: None,
            started_us: 0,
            latency_us: 0,
            observed: None,
        }
    }

    #[test]
    fn retries_an_open_operation_until_the_window_closes() {
        let mut retry = Retry::new();
        let cut_off = [attempt(Outcome::Indeterminate, None)];
        let ms = Duration::from_millis;
        assert_eq!(retry.next_pause(true, &cut_off, ms(0)), Some(ms(200)));
        // Refused at connect after a cut-off: still open, asked again.
        let refused = [
            attempt(Outcome::Indeterminate, None),
            attempt(Outcome::Failed, None),
        ];
        assert_eq!(retry.next_pause(true, &refused, ms(300)), Some(ms(400)));
        assert_eq!(retry.next_pause(true, &refused, ms(9_500)), None, "window");
        assert_eq!(
            Retry::new().next_pause(false, &cut_off, ms(0)),
            None,
            "no key"
        );
    }

    #[test]
    fn an_answer_ends_the_retries() {
        let ms = Duration::from_millis;
        let answered = [
            attempt(Outcome::Indeterminate, None),
            attempt(Outcome::Failed, Some(422)),
        ];
        assert_eq!(Retry::new().next_pause(true, &answered, ms(0)), None);
        let ok = [attempt(Outcome::Ok, Some(200))];
        assert_eq!(Retry::new().next_pause(true, &ok, ms(0)), None);
        let first_refused = [attempt(Outcome::Failed, None)];
        assert_eq!(
            Retry::new().next_pause(true, &first_refused, ms(0)),
            None,
            "never sent"
        );
    }
}
