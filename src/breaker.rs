//! The circuit breaker in front of a remote service (Redis, the directory): pure state,
//! time passed in by the caller, and the guard that counts a probe given up half way.
//!
//! While the service answers, every call goes to it. After a number of failures in a row
//! ([`FAILURES`] for Redis, one for the directory, whose every failure costs a timeout) the
//! breaker opens: calls skip the service at once (the failure policy applies without
//! waiting for a timeout) for [`OPEN_FOR`] or as long as the caller says; then one call
//! probes, and its outcome closes the breaker or opens it again, while every other call
//! keeps skipping. So an outage costs a message microseconds, not a timeout, and the log
//! gets one line when the service goes, a reminder at most every [`REMIND_EVERY`], and one
//! when it is back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row that open Redis's breaker.
pub const FAILURES: u32 = 3;
/// How long an open breaker skips the service before one call probes it: short, so that
/// counts are shared (and the directory asked) again soon after the service returns (a
/// probe of a dead service costs one refused connect, or one timeout if it hangs).
pub const OPEN_FOR: Duration = Duration::from_millis(250);
/// How often a still-failing probe is logged.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// What a call should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    /// Call the service.
    Call,
    /// Call the service as the one probe of an open breaker.
    Probe,
    /// Do not call the service; apply the failure policy now.
    Skip,
}

/// A change worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The service is considered down from now on.
    Opened,
    /// A probe failed again; `skipped` calls went without the service since the last
    /// reminder.
    StillDown {
        /// Since when Redis is down.
        down_for: Duration,
        /// Calls that skipped Redis since the last log line.
        skipped: u64,
    },
    /// The service answers again.
    Closed {
        /// How long it was down.
        down_for: Duration,
        /// Calls that skipped the service during the outage.
        skipped: u64,
    },
}

/// The breaker's state.
#[derive(Debug, Clone)]
pub struct Breaker {
    opens_after: u32,
    failures: u32,
    open: Option<Open>,
}

/// Redis's breaker: opens after [`FAILURES`] failures in a row.
impl Default for Breaker {
    fn default() -> Self {
        Breaker::opening_after(FAILURES)
    }
}

#[derive(Debug, Clone)]
struct Open {
    since: Instant,
    until: Instant,
    probing: bool,
    skipped: u64,
    skipped_total: u64,
    reminded: Instant,
}

impl Breaker {
    /// A closed breaker that opens after `failures` failures in a row (at least one).
    pub fn opening_after(failures: u32) -> Self {
        Breaker {
            opens_after: failures.max(1),
            failures: 0,
            open: None,
        }
    }

    /// Whether the breaker is open (the service considered down).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Whether one call is probing the service now (the others skip until it has its answer).
    pub fn is_probing(&self) -> bool {
        self.open.as_ref().is_some_and(|open| open.probing)
    }

    /// Decides whether a call at `now` may go to the service.
    pub fn allow(&mut self, now: Instant) -> Allow {
        let Some(open) = &mut self.open else {
            return Allow::Call;
        };
        if open.probing || now < open.until {
            open.skipped += 1;
            open.skipped_total += 1;
            return Allow::Skip;
        }
        open.probing = true;
        Allow::Probe
    }

    /// Records a successful call.
    pub fn succeeded(&mut self, now: Instant) -> Option<Transition> {
        self.failures = 0;
        self.open.take().map(|open| Transition::Closed {
            down_for: now.saturating_duration_since(open.since),
            skipped: open.skipped_total,
        })
    }

    /// Records a failed call (a probe or a normal call); an open breaker skips the service
    /// for [`OPEN_FOR`].
    pub fn failed(&mut self, now: Instant) -> Option<Transition> {
        self.failed_for(now, OPEN_FOR)
    }

    /// Records a failed call; an open breaker skips the service for `open_for` (the
    /// directory, after a lookup that got no answer, waits as long as its timeout).
    pub fn failed_for(&mut self, now: Instant, open_for: Duration) -> Option<Transition> {
        self.failures = self.failures.saturating_add(1);
        match &mut self.open {
            Some(open) => {
                open.probing = false;
                open.until = now + open_for;
                if now.saturating_duration_since(open.reminded) >= REMIND_EVERY {
                    open.reminded = now;
                    let skipped = std::mem::take(&mut open.skipped);
                    return Some(Transition::StillDown {
                        down_for: now.saturating_duration_since(open.since),
                        skipped,
                    });
                }
                None
            }
            None if self.failures >= self.opens_after => {
                self.open = Some(Open {
                    since: now,
                    until: now + open_for,
                    probing: false,
                    skipped: 0,
                    skipped_total: 0,
                    reminded: now,
                });
                Some(Transition::Opened)
            }
            None => None,
        }
    }
}

/// A probe in flight: if it is dropped before its answer (its message's future given up),
/// the breaker counts it as failed, so it never waits for that answer for ever.
pub struct ProbeGuard<'a> {
    breaker: &'a Mutex<Breaker>,
    answered: bool,
}

impl<'a> ProbeGuard<'a> {
    /// A guard when `allow` is [`Allow::Probe`], else none.
    pub fn new(breaker: &'a Mutex<Breaker>, allow: Allow) -> Option<Self> {
        // Lazily: a guard built and dropped would count as a failed probe.
        (allow == Allow::Probe).then(|| ProbeGuard {
            breaker,
            answered: false,
        })
    }

    /// The probe has its answer; the caller records it.
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if !self.answered
            && let Ok(mut breaker) = self.breaker.lock()
        {
            breaker.failed(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_probes_once_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert_eq!(b.allow(t0), Allow::Call);
        assert_eq!(b.failed(t0), None);
        assert_eq!(b.succeeded(t0), None, "a success resets the count");
        for i in 0..FAILURES {
            assert_eq!(b.allow(t0), Allow::Call);
            let t = b.failed(t0);
            assert_eq!(t.is_some(), i + 1 == FAILURES);
        }
        assert!(b.is_open());
        // Open: everyone skips until the probe time, then exactly one probes.
        assert_eq!(b.allow(t0 + OPEN_FOR / 2), Allow::Skip);
        assert_eq!(b.allow(t0 + OPEN_FOR), Allow::Probe);
        assert_eq!(b.allow(t0 + OPEN_FOR), Allow::Skip);
        // The probe fails: skip for another period.
        assert_eq!(b.failed(t0 + OPEN_FOR), None);
        assert_eq!(
            b.allow(t0 + OPEN_FOR * 2 - Duration::from_millis(1)),
            Allow::Skip
        );
        assert_eq!(b.allow(t0 + OPEN_FOR * 2), Allow::Probe);
        assert_eq!(
            b.succeeded(t0 + OPEN_FOR * 2),
            Some(Transition::Closed {
                down_for: OPEN_FOR * 2,
                skipped: 3
            })
        );
        assert_eq!(b.allow(t0 + OPEN_FOR * 2), Allow::Call);
    }

    #[test]
    fn the_directorys_breaker_opens_on_one_failure_for_as_long_as_it_is_told() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(1);
        let mut b = Breaker::opening_after(1);
        assert_eq!(b.allow(t0), Allow::Call);
        assert_eq!(b.failed_for(t0, timeout), Some(Transition::Opened));
        assert_eq!(b.allow(t0 + timeout - OPEN_FOR), Allow::Skip);
        assert_eq!(b.allow(t0 + timeout), Allow::Probe);
        // While the probe waits, every other call skips.
        assert_eq!(b.allow(t0 + timeout * 2), Allow::Skip);
        // A refused probe: left alone for the default pause only.
        assert_eq!(b.failed(t0 + timeout * 2), None);
        assert_eq!(b.allow(t0 + timeout * 2 + OPEN_FOR), Allow::Probe);
        assert!(matches!(
            b.succeeded(t0 + timeout * 3),
            Some(Transition::Closed { skipped: 2, .. })
        ));
        assert_eq!(
            Breaker::opening_after(0).failed(t0),
            Some(Transition::Opened)
        );
    }

    #[test]
    fn a_probe_given_up_counts_as_failed_and_a_call_needs_no_guard() {
        let t0 = Instant::now();
        let breaker = Mutex::new(Breaker::opening_after(1));
        assert!(ProbeGuard::new(&breaker, Allow::Call).is_none());
        assert!(!breaker.lock().unwrap().is_open(), "no guard, no failure");
        breaker.lock().unwrap().failed(t0);
        let allow = breaker.lock().unwrap().allow(t0 + OPEN_FOR);
        assert_eq!(allow, Allow::Probe);
        drop(ProbeGuard::new(&breaker, allow));
        // Given up: the breaker probes again after a pause instead of waiting for ever.
        let later = Instant::now() + OPEN_FOR;
        assert_eq!(breaker.lock().unwrap().allow(later), Allow::Probe);
        let guard = ProbeGuard::new(&breaker, Allow::Probe).unwrap();
        guard.answered();
        assert!(
            breaker.lock().unwrap().is_open(),
            "an answered probe is the caller's to record"
        );
    }

    #[test]
    fn a_long_outage_is_reminded_once_a_minute() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..FAILURES {
            b.failed(t0);
        }
        let mut reminders = 0;
        let mut t = t0;
        while t < t0 + REMIND_EVERY * 3 {
            t += OPEN_FOR;
            while b.allow(t) == Allow::Skip {}
            if let Some(Transition::StillDown { .. }) = b.failed(t) {
                reminders += 1;
            }
        }
        assert_eq!(reminders, 3);
    }
}
