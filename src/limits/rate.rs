//! Pure rate arithmetic: GCRA (no double burst at window edges) and the watched night window.
//! Times are Unix milliseconds passed in by the caller.

/// A rate: `count` events per `period_ms`, with a burst of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per period.
    pub count: u64,
    /// The period in milliseconds.
    pub period_ms: i64,
}

impl Rate {
    /// Milliseconds between events at the steady rate.
    pub fn interval(self) -> i64 {
        (self.period_ms / self.count.max(1) as i64).max(1)
    }

    /// How far the theoretical arrival time may run ahead of now (the burst).
    pub fn tolerance(self) -> i64 {
        self.interval() * (self.count.max(1) as i64 - 1)
    }
}

/// The outcome of one GCRA step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Whether the event is allowed.
    pub allowed: bool,
    /// The new theoretical arrival time to store (unchanged when refused).
    pub tat: i64,
    /// When refused: milliseconds until the next event would be allowed.
    pub retry_after_ms: i64,
    /// Events currently counted against the burst (for logs and audit).
    pub used: u64,
}

/// One GCRA step for an event at `now` given the stored theoretical arrival time.
pub fn gcra(stored_tat: Option<i64>, now: i64, rate: Rate) -> Gcra {
    let interval = rate.interval();
    let tat = stored_tat.unwrap_or(now).max(now);
    let ahead = tat - now;
    if ahead > rate.tolerance() {
        return Gcra {
            allowed: false,
            tat,
            retry_after_ms: ahead - rate.tolerance(),
            used: rate.count,
        };
    }
    let new_tat = tat + interval;
    Gcra {
        allowed: true,
        tat: new_tat,
        retry_after_ms: 0,
        used: ((new_tat - now + interval - 1) / interval) as u64,
    }
}

/// A daily local-time window such as 18:00–06:00 (may cross midnight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Start, minutes after local midnight.
    pub start: u32,
    /// End, minutes after local midnight.
    pub end: u32,
    /// The time zone of the local times.
    pub tz: jiff::tz::TimeZone,
}

impl Window {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str, tz: jiff::tz::TimeZone) -> Result<Self, String> {
        let minutes = |t: &str| -> Result<u32, String> {
            let (h, m) = t
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("`{t}` is not HH:MM"))?;
            let (h, m): (u32, u32) = (
                h.parse().map_err(|_| format!("`{t}` is not HH:MM"))?,
                m.parse().map_err(|_| format!("`{t}` is not HH:MM"))?,
            );
            if h > 23 || m > 59 {
                return Err(format!("`{t}` is not a time of day"));
            }
            Ok(h * 60 + m)
        };
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("`{text}` is not HH:MM-HH:MM"))?;
        Ok(Window {
            start: minutes(a)?,
            end: minutes(b)?,
            tz,
        })
    }

    /// The id of the window occurrence containing `now_ms` (the local date it started on),
    /// or `None` outside the window.
    pub fn occurrence(&self, now_ms: i64) -> Option<String> {
        let ts = jiff::Timestamp::from_millisecond(now_ms).ok()?;
        let local = ts.to_zoned(self.tz.clone());
        let minute = local.hour() as u32 * 60 + local.minute() as u32;
        let date = local.date();
        if self.start <= self.end {
            return (self.start <= minute && minute < self.end).then(|| date.to_string());
        }
        if minute >= self.start {
            Some(date.to_string())
        } else if minute < self.end {
            date.yesterday().ok().map(|d| d.to_string())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn gcra_allows_the_burst_then_the_steady_rate_and_never_a_double_burst() {
        let rate = Rate {
            count: 50,
            period_ms: HOUR,
        };
        let mut tat = None;
        let t0 = 1_000_000_000_000;
        for i in 0..50 {
            let g = gcra(tat, t0, rate);
            assert!(g.allowed, "message {i}");
            tat = Some(g.tat);
        }
        let refused = gcra(tat, t0, rate);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 72_000);
        // Just before one interval has passed: still refused; at it: one more.
        assert!(!gcra(tat, t0 + 71_999, rate).allowed);
        let g = gcra(tat, t0 + 72_000, rate);
        assert!(g.allowed);
        tat = Some(g.tat);
        assert!(!gcra(tat, t0 + 72_000, rate).allowed);
        // At the edge of the hour a fixed bucket would allow 50 more at once; GCRA allows
        // only what has drained: 50 in the first hour, then one per 72 s.
        let mut allowed = 0;
        let mut t = t0 + 72_000;
        while t < t0 + HOUR + 60_000 {
            let g = gcra(tat, t, rate);
            if g.allowed {
                allowed += 1;
                tat = Some(g.tat);
            }
            t += 1_000;
        }
        assert!(allowed <= 50, "{allowed} allowed in the next hour");
    }

    #[test]
    fn per_second_rate() {
        let rate = Rate {
            count: 5,
            period_ms: 1000,
        };
        let mut tat = None;
        for _ in 0..5 {
            let g = gcra(tat, 0, rate);
            assert!(g.allowed);
            tat = Some(g.tat);
        }
        assert!(!gcra(tat, 0, rate).allowed);
        assert!(gcra(tat, 200, rate).allowed);
    }

    fn vienna_ms(text: &str) -> i64 {
        text.parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::get("Europe/Vienna").unwrap())
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    #[test]
    fn night_window_crosses_midnight() {
        let w = Window::parse(
            "18:00-06:00",
            jiff::tz::TimeZone::get("Europe/Vienna").unwrap(),
        )
        .unwrap();
        assert_eq!(w.occurrence(vienna_ms("2026-11-27T17:59:59")), None);
        assert_eq!(
            w.occurrence(vienna_ms("2026-11-27T18:00:00")).as_deref(),
            Some("2026-11-27")
        );
        assert_eq!(
            w.occurrence(vienna_ms("2026-11-27T23:59:59")).as_deref(),
            Some("2026-11-27")
        );
        assert_eq!(
            w.occurrence(vienna_ms("2026-11-28T00:00:00")).as_deref(),
            Some("2026-11-27")
        );
        assert_eq!(
            w.occurrence(vienna_ms("2026-11-28T05:59:59")).as_deref(),
            Some("2026-11-27")
        );
        assert_eq!(w.occurrence(vienna_ms("2026-11-28T06:00:00")), None);
        assert_eq!(
            w.occurrence(vienna_ms("2026-11-28T18:00:00")).as_deref(),
            Some("2026-11-28")
        );
    }

    #[test]
    fn night_window_across_daylight_saving_changes() {
        let w = Window::parse(
            "18:00-06:00",
            jiff::tz::TimeZone::get("Europe/Vienna").unwrap(),
        )
        .unwrap();
        // 2026-10-25: clocks go back at 03:00 CEST -> 02:00 CET; the night is 13 hours long.
        let start = vienna_ms("2026-10-24T18:00:00");
        let end = vienna_ms("2026-10-25T06:00:00");
        assert_eq!(end - start, 13 * HOUR);
        assert_eq!(w.occurrence(start).as_deref(), Some("2026-10-24"));
        assert_eq!(w.occurrence(end - 1).as_deref(), Some("2026-10-24"));
        assert_eq!(w.occurrence(end), None);
        // 2026-03-29: clocks go forward at 02:00 -> 03:00; the night is 11 hours long.
        let start = vienna_ms("2026-03-28T18:00:00");
        let end = vienna_ms("2026-03-29T06:00:00");
        assert_eq!(end - start, 11 * HOUR);
        assert_eq!(
            w.occurrence(start + 9 * HOUR).as_deref(),
            Some("2026-03-28")
        );
        assert_eq!(w.occurrence(end), None);
    }

    #[test]
    fn window_parse_errors() {
        let tz = jiff::tz::TimeZone::UTC;
        assert!(Window::parse("18-06", tz.clone()).is_err());
        assert!(Window::parse("25:00-06:00", tz).is_err());
    }
}
