//! Circuit breaker for `/external`: a state machine over an injected clock.
//!
//! - **closed**: calls go through; `failure_threshold` consecutive failures open it.
//! - **open**: calls are refused at once (the caller serves its fallback) until `reset_timeout`
//!   has passed since it opened; then it is half-open.
//! - **half-open**: at most `trial_calls` calls go through at a time; the first success closes
//!   the breaker, a failure opens it again (for another `reset_timeout`).
//!
//! A call holds a [`Permit`]; reporting the outcome consumes it. A permit dropped without an
//! outcome (the request was cancelled) gives its trial slot back, so a cancelled trial cannot
//! wedge the breaker half-open. Outcomes of permits taken before the last transition are
//! ignored: a slow call that started while closed cannot re-open a breaker that has since
//! recovered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The source of time; tests drive a [`ManualClock`] instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }
}

impl ManualClock {
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock::default())
    }

    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub const ALL: [State; 3] = [State::Closed, State::Open, State::HalfOpen];

    /// The spelling of `X-Circuit-State` and of the `/metrics` labels.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How many calls a half-open breaker lets through at once.
pub const DEFAULT_TRIAL_CALLS: u32 = 1;

pub struct Breaker {
    clock: Arc<dyn Clock>,
    failure_threshold: u32,
    reset_timeout: Duration,
    trial_calls: u32,
    inner: Mutex<Inner>,
    /// `transitions[from][to]`.
    transitions: [[AtomicU64; 3]; 3],
}

struct Inner {
    state: State,
    consecutive_failures: u32,
    opened_at: Instant,
    trials_in_flight: u32,
    /// Bumped on every transition; permits remember the one they were taken in.
    generation: u64,
}

/// The call was refused; serve the fallback. `state` is the state that refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub state: State,
}

/// The right to make one call; report its outcome with [`Permit::success`] or
/// [`Permit::failure`].
#[must_use = "report the outcome of the call"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    generation: u64,
    trial: bool,
    reported: bool,
}

impl Breaker {
    pub fn new(
        failure_threshold: u32,
        reset_timeout: Duration,
        trial_calls: u32,
        clock: Arc<dyn Clock>,
    ) -> Breaker {
        let now = clock.now();
        Breaker {
            clock,
            failure_threshold: failure_threshold.max(1),
            reset_timeout,
            trial_calls: trial_calls.max(1),
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                opened_at: now,
                trials_in_flight: 0,
                generation: 0,
            }),
            transitions: Default::default(),
        }
    }

    /// The current state (an open breaker whose timeout has passed reports half-open).
    pub fn state(&self) -> State {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        inner.state
    }

    /// How many times the breaker went from `from` to `to`.
    pub fn transitions(&self, from: State, to: State) -> u64 {
        self.transitions[from.index()][to.index()].load(Ordering::Relaxed)
    }

    /// Asks to make a call.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let mut inner = self.lock();
        self.refresh(&mut inner);
        let trial = match inner.state {
            State::Closed => false,
            State::Open => return Err(Rejected { state: State::Open }),
            State::HalfOpen if inner.trials_in_flight >= self.trial_calls => {
                return Err(Rejected {
                    state: State::HalfOpen,
                })
            }
            State::HalfOpen => {
                inner.trials_in_flight += 1;
                true
            }
        };
        Ok(Permit {
            breaker: self,
            generation: inner.generation,
            trial,
            reported: false,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent state (every update is one
        // assignment sequence without await points): keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open -> half-open once the reset timeout has passed.
    fn refresh(&self, inner: &mut Inner) {
        if inner.state == State::Open
            && self.clock.now().saturating_duration_since(inner.opened_at) >= self.reset_timeout
        {
            self.transition(inner, State::HalfOpen);
        }
    }

    fn transition(&self, inner: &mut Inner, to: State) {
        let from = inner.state;
        if from == to {
            return;
        }
        log::warn!("circuit breaker: {} -> {}", from.as_str(), to.as_str());
        self.transitions[from.index()][to.index()].fetch_add(1, Ordering::Relaxed);
        inner.state = to;
        inner.generation += 1;
        inner.trials_in_flight = 0;
        inner.consecutive_failures = 0;
        if to == State::Open {
            inner.opened_at = self.clock.now();
        }
    }

    fn report(&self, permit: &Permit<'_>, ok: bool) -> State {
        let mut inner = self.lock();
        if permit.generation != inner.generation {
            // Taken before the last transition: its outcome says nothing about now.
            self.refresh(&mut inner);
            return inner.state;
        }
        match (inner.state, ok) {
            (State::Closed, true) => inner.consecutive_failures = 0,
            (State::Closed, false) => {
                inner.consecutive_failures += 1;
                if inner.consecutive_failures >= self.failure_threshold {
                    self.transition(&mut inner, State::Open);
                }
            }
            (State::HalfOpen, true) => self.transition(&mut inner, State::Closed),
            (State::HalfOpen, false) => self.transition(&mut inner, State::Open),
            // Same generation as an open breaker: impossible (open hands out no permits).
            (State::Open, _) => {}
        }
        inner.state
    }

    fn release_trial(&self, permit: &Permit<'_>) {
        let mut inner = self.lock();
        if permit.trial && permit.generation == inner.generation {
            inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
        }
    }
}

impl Permit<'_> {
    /// The call succeeded; returns the breaker's state afterwards.
    pub fn success(mut self) -> State {
        self.reported = true;
        self.breaker.report(&self, true)
    }

    /// The call failed; returns the breaker's state afterwards.
    pub fn failure(mut self) -> State {
        self.reported = true;
        self.breaker.report(&self, false)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.release_trial(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, reset_s: u64) -> (Breaker, Arc<ManualClock>) {
        let clock = ManualClock::new();
        let b = Breaker::new(
            threshold,
            Duration::from_secs(reset_s),
            DEFAULT_TRIAL_CALLS,
            clock.clone(),
        );
        (b, clock)
    }

    fn fail(b: &Breaker) -> State {
        b.try_acquire().expect("permit").failure()
    }

    fn succeed(b: &Breaker) -> State {
        b.try_acquire().expect("permit").success()
    }

    #[test]
    fn it_opens_after_the_threshold_of_consecutive_failures() {
        let (b, _) = breaker(3, 10);
        assert_eq!(fail(&b), State::Closed);
        assert_eq!(fail(&b), State::Closed);
        assert_eq!(fail(&b), State::Open);
        assert_eq!(b.try_acquire().err(), Some(Rejected { state: State::Open }));
        assert_eq!(b.transitions(State::Closed, State::Open), 1);
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let (b, _) = breaker(3, 10);
        fail(&b);
        fail(&b);
        assert_eq!(succeed(&b), State::Closed);
        fail(&b);
        assert_eq!(fail(&b), State::Closed);
        assert_eq!(fail(&b), State::Open);
    }

    #[test]
    fn it_turns_half_open_only_after_the_reset_timeout() {
        let (b, clock) = breaker(1, 10);
        fail(&b);
        clock.advance(Duration::from_millis(9_999));
        assert_eq!(b.state(), State::Open);
        assert!(b.try_acquire().is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.transitions(State::Open, State::HalfOpen), 1);
    }

    #[test]
    fn half_open_lets_one_trial_through_at_a_time() {
        let (b, clock) = breaker(1, 10);
        fail(&b);
        clock.advance(Duration::from_secs(10));
        let trial = b.try_acquire().expect("the trial");
        assert_eq!(
            b.try_acquire().err(),
            Some(Rejected {
                state: State::HalfOpen
            })
        );
        assert_eq!(trial.success(), State::Closed);
        assert!(b.try_acquire().is_ok());
    }

    #[test]
    fn a_successful_trial_closes_the_breaker() {
        let (b, clock) = breaker(2, 5);
        fail(&b);
        fail(&b);
        clock.advance(Duration::from_secs(5));
        assert_eq!(succeed(&b), State::Closed);
        assert_eq!(b.transitions(State::HalfOpen, State::Closed), 1);
        // Closed again with a fresh count: one failure does not re-open it.
        assert_eq!(fail(&b), State::Closed);
    }

    #[test]
    fn a_failed_trial_opens_the_breaker_for_another_timeout() {
        let (b, clock) = breaker(1, 5);
        fail(&b);
        clock.advance(Duration::from_secs(5));
        assert_eq!(fail(&b), State::Open);
        assert_eq!(b.transitions(State::HalfOpen, State::Open), 1);
        clock.advance(Duration::from_secs(4));
        assert_eq!(b.state(), State::Open);
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.state(), State::HalfOpen);
    }

    #[test]
    fn a_cancelled_trial_gives_its_slot_back() {
        let (b, clock) = breaker(1, 5);
        fail(&b);
        clock.advance(Duration::from_secs(5));
        let trial = b.try_acquire().expect("the trial");
        drop(trial);
        assert_eq!(b.state(), State::HalfOpen);
        assert!(b.try_acquire().is_ok(), "the slot was released");
    }

    #[test]
    fn a_late_outcome_from_before_a_transition_is_ignored() {
        let (b, clock) = breaker(1, 5);
        let slow = b.try_acquire().expect("closed");
        fail(&b);
        clock.advance(Duration::from_secs(5));
        assert_eq!(succeed(&b), State::Closed);
        // The slow call started in an earlier closed period; its failure does not count.
        assert_eq!(slow.failure(), State::Closed);
        assert_eq!(b.transitions(State::Closed, State::Open), 1);
    }

    #[test]
    fn states_are_spelled_as_the_header_shows_them() {
        let names: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["closed", "open", "half_open"]);
    }
}
