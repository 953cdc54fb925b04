//! The circuit breaker in front of Redis: pure state, time passed in by the caller.
//!
//! While Redis answers, every call goes to it. After [`FAILURES`] failures in a row the
//! breaker opens: calls skip Redis at once (the failure policy applies without waiting for a
//! timeout) for [`OPEN_FOR`]; then one call probes, and its outcome closes the breaker or
//! opens it again. So an outage costs a message microseconds, not `timeout_ms`, and the log
//! gets one line when Redis goes, a reminder at most every [`REMIND_EVERY`], and one when it
//! is back.

use std::time::{Duration, Instant};

/// Failures in a row that open the breaker.
pub const FAILURES: u32 = 3;
/// How long an open breaker skips Redis before one call probes it: short, so that counts
/// are shared again soon after Redis returns (a probe of a dead Redis costs one refused
/// connect, or one `timeout_ms` if it hangs).
pub const OPEN_FOR: Duration = Duration::from_millis(250);
/// How often a still-failing probe is logged.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// What a call should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    /// Call Redis.
    Call,
    /// Call Redis as the one probe of an open breaker.
    Probe,
    /// Do not call Redis; apply the failure policy now.
    Skip,
}

/// A change worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Redis is considered down from now on.
    Opened,
    /// A probe failed again; `skipped` calls went without Redis since the last reminder.
    StillDown {
        /// Since when Redis is down.
        down_for: Duration,
        /// Calls that skipped Redis since the last log line.
        skipped: u64,
    },
    /// Redis answers again.
    Closed {
        /// How long it was down.
        down_for: Duration,
        /// Calls that skipped Redis during the outage.
        skipped: u64,
    },
}

/// The breaker's state.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    failures: u32,
    open: Option<Open>,
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
    /// Whether the breaker is open (Redis considered down).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Decides whether a call at `now` may go to Redis.
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

    /// Records a failed call (a probe or a normal call).
    pub fn failed(&mut self, now: Instant) -> Option<Transition> {
        self.failures = self.failures.saturating_add(1);
        match &mut self.open {
            Some(open) => {
                open.probing = false;
                open.until = now + OPEN_FOR;
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
            None if self.failures >= FAILURES => {
                self.open = Some(Open {
                    since: now,
                    until: now + OPEN_FOR,
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
