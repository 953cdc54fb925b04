//! Where a login's signals are kept: the [`SignalBook`] seam and the in-memory book (one
//! host); Redis keeps them for a cluster ([`super::redis`]). The state itself is
//! [`super::state`].

pub use super::observation::Observation;
pub use super::state::LoginState;

use super::{Rules, Signals};
use crate::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;

/// Where signals are kept, as the anomaly check sees it.
pub trait SignalBook: Send + Sync {
    /// Records one message of `login` and returns its signals after it.
    fn observe<'a>(
        &'a self,
        login: &'a str,
        seen: &'a Observation,
        now_ms: i64,
        rules: &'a Rules,
    ) -> BoxFuture<'a, Result<Signals, String>>;

    /// The signals of `login` now, without recording anything.
    fn peek<'a>(
        &'a self,
        login: &'a str,
        now_ms: i64,
        rules: &'a Rules,
    ) -> BoxFuture<'a, Result<Signals, String>>;
}

/// Signals in this process's memory (one host), for up to 200,000 logins; the least
/// recently active are forgotten first.
pub struct MemoryBook {
    logins: Mutex<HashMap<String, LoginState>>,
    max_logins: usize,
}

impl Default for MemoryBook {
    fn default() -> Self {
        MemoryBook {
            logins: Mutex::new(HashMap::new()),
            max_logins: 200_000,
        }
    }
}

impl MemoryBook {
    /// Records a message synchronously (the simulator and the Redis fallback use this).
    pub fn observe_now(
        &self,
        login: &str,
        seen: &Observation,
        now_ms: i64,
        rules: &Rules,
    ) -> Signals {
        let mut logins = self.logins.lock().expect("signal lock");
        if logins.len() >= self.max_logins && !logins.contains_key(login) {
            // Forget the tenth least recently active.
            let mut ages: Vec<i64> = logins.values().map(|s| s.last_ms).collect();
            let cut = ages.len() / 10;
            ages.select_nth_unstable(cut);
            let oldest = ages[cut];
            logins.retain(|_, s| s.last_ms > oldest);
        }
        logins
            .entry(login.to_string())
            .or_default()
            .observe(seen, now_ms, rules)
    }

    /// The signals of a login now.
    pub fn peek_now(&self, login: &str, now_ms: i64, rules: &Rules) -> Signals {
        let mut logins = self.logins.lock().expect("signal lock");
        logins
            .get_mut(login)
            .map(|s| s.peek(now_ms, rules))
            .unwrap_or_default()
    }

    /// A copy of a login's state: what an attacker who knows the rule could compute (the
    /// simulation's adaptive attacker asks it before every message).
    pub fn state(&self, login: &str) -> LoginState {
        self.logins
            .lock()
            .expect("signal lock")
            .get(login)
            .cloned()
            .unwrap_or_default()
    }
}

impl SignalBook for MemoryBook {
    fn observe<'a>(
        &'a self,
        login: &'a str,
        seen: &'a Observation,
        now_ms: i64,
        rules: &'a Rules,
    ) -> BoxFuture<'a, Result<Signals, String>> {
        let signals = self.observe_now(login, seen, now_ms, rules);
        Box::pin(std::future::ready(Ok(signals)))
    }

    fn peek<'a>(
        &'a self,
        login: &'a str,
        now_ms: i64,
        rules: &'a Rules,
    ) -> BoxFuture<'a, Result<Signals, String>> {
        Box::pin(std::future::ready(Ok(self.peek_now(login, now_ms, rules))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn seen(net: &str, rcpts: &[&str]) -> Observation {
        let rules = Rules::default();
        let mut o = Observation::new(None, rcpts, &rules, None, &|d| d.ends_with("tugraz.at"));
        o.network = Some(net.into());
        o
    }

    #[test]
    fn windows_count_the_last_hour_and_day_and_recipients_stay_known() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let t0 = 1_000 * H;
        let s = book.observe_now("a", &seen("n1", &["x@one.org"]), t0, r);
        assert_eq!((s.networks, s.domains, s.new_recipients), (1, 1, 1));
        let s = book.observe_now("a", &seen("n2", &["x@one.org", "y@two.org"]), t0 + H / 2, r);
        assert_eq!((s.networks, s.domains, s.new_recipients), (2, 2, 2));
        // Next hour: the previous bucket still counts.
        let s = book.observe_now("a", &seen("n3", &["x@one.org"]), t0 + H + 1, r);
        assert_eq!((s.networks, s.new_recipients), (3, 2));
        assert_eq!(s.strangers_day, 2.0);
        // Two hours later the hour signals are gone; the day still counts both strangers.
        let s = book.peek_now("a", t0 + 3 * H + 1, r);
        assert_eq!((s.networks, s.domains, s.new_recipients), (0, 0, 0));
        assert_eq!(s.strangers_day, 2.0);
        // A day later they are history; the baseline took the hours only then.
        assert_eq!(book.peek_now("a", t0 + 12 * H, r).baseline, 0.0);
        let s = book.peek_now("a", t0 + 26 * H + 1, r);
        assert_eq!(s.strangers_day, 0.0);
        assert!(s.baseline > 0.0);
        // x@one.org is still known ten days later.
        let s = book.observe_now("a", &seen("n1", &["x@one.org"]), t0 + 240 * H, r);
        assert_eq!(s.new_recipients, 0);
        // ... and new again after twice the recipient memory.
        let s = book.observe_now(
            "a",
            &seen("n1", &["x@one.org"]),
            t0 + 240 * H + 60 * 24 * H,
            r,
        );
        assert_eq!(s.new_recipients, 1);
    }

    #[test]
    fn every_stranger_counts_campus_ones_half() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let bcc: Vec<String> = (0..20).map(|i| format!("s{i}@victim{i}.example")).collect();
        let bcc: Vec<&str> = bcc.iter().map(String::as_str).collect();
        let s = book.observe_now("a", &seen("n", &bcc), 1_000 * H, r);
        assert_eq!((s.new_recipients, s.strangers_hour), (3, 20.0));
        assert_eq!(s.domains, 20, "every domain counts");
        let students: Vec<String> = (0..20).map(|i| format!("s{i}@student.tugraz.at")).collect();
        let students: Vec<&str> = students.iter().map(String::as_str).collect();
        let s = book.observe_now("b", &seen("n", &students), 1_000 * H, r);
        assert_eq!(s.strangers_hour, 10.0);
    }

    #[test]
    fn no_hour_and_no_day_of_strangers_hides_at_a_clock_edge() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let bcc: Vec<String> = (0..50).map(|i| format!("s{i}@victim.example")).collect();
        let bcc: Vec<&str> = bcc.iter().map(String::as_str).collect();
        // 50 strangers at 10:59:59; a minute later, and 59 minutes later, they still count
        // for the hour, and until 24 hours later for the day.
        let t = 1_000 * H + H - 1_000;
        book.observe_now("a", &seen("n", &bcc), t, r);
        for later in [60_000, 59 * 60_000] {
            assert_eq!(book.peek_now("a", t + later, r).strangers_hour, 50.0);
        }
        assert_eq!(book.peek_now("a", t + 75 * 60_000, r).strangers_hour, 0.0);
        assert_eq!(
            book.peek_now("a", t + 24 * H - 1_000, r).strangers_day,
            50.0
        );
        assert_eq!(
            book.peek_now("a", t + 24 * H + 15 * 60_000, r)
                .strangers_day,
            0.0
        );
    }

    #[test]
    fn the_known_recipient_sketch_is_renewed_before_it_saturates() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let mut t = 1_000 * H;
        // 24,000 strangers in a day: each still counts as new (a full sketch would call
        // most of them known).
        let mut total = 0.0;
        for batch in 0..1_200 {
            let rcpts: Vec<String> = (0..20).map(|i| format!("t{batch}x{i}@v.example")).collect();
            let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
            let before = book.peek_now("a", t, r).strangers_day;
            let s = book.observe_now("a", &seen("n", &rcpts), t, r);
            total += s.strangers_day - before;
            t += 60_000;
        }
        assert!(total > 0.9 * 24_000.0, "{total}");
    }

    #[test]
    fn a_network_is_familiar_a_week_after_its_first_use() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let day = 24 * H;
        let t = 1_000 * day;
        assert!(
            book.observe_now("a", &seen("home", &["x@y.org"]), t, r)
                .unfamiliar
        );
        assert!(
            book.observe_now("a", &seen("home", &["x@y.org"]), t + 6 * day, r)
                .unfamiliar
        );
        assert!(
            !book
                .observe_now("a", &seen("home", &["x@y.org"]), t + 7 * day, r)
                .unfamiliar
        );
        assert!(
            book.observe_now("a", &seen("hotel", &["x@y.org"]), t + 7 * day, r)
                .unfamiliar
        );
        // Unused for longer than the recipient memory: it starts over.
        assert!(
            book.observe_now("a", &seen("home", &["x@y.org"]), t + 40 * day, r)
                .unfamiliar
        );
        assert!(
            book.observe_now("a", &seen("home", &["x@y.org"]), t + 44 * day, r)
                .unfamiliar
        );
        // A campus network is never unfamiliar.
        let mut campus = seen("129.27.3.0/24", &["x@y.org"]);
        campus.campus_client = true;
        assert!(!book.observe_now("b", &campus, t, r).unfamiliar);
    }

    #[test]
    fn the_baseline_follows_the_login_s_active_hours() {
        let book = MemoryBook::default();
        let r = &Rules::default();
        let mut t = 10_000 * H;
        // A list owner: 40 messages in one hour a day for 20 days.
        for _ in 0..20 {
            for i in 0..40 {
                book.observe_now("list", &seen("n", &["l@x.org"]), t + i * 60_000, r);
            }
            t += 24 * H;
        }
        let s = book.peek_now("list", t, r);
        assert!(s.baseline > 35.0, "{s:?}");
        // Quiet for four weeks: the busiest hour lately is a quarter of what it was.
        let s = book.peek_now("list", t + 28 * 24 * H, r);
        assert!(s.baseline < 11.0 && s.baseline > 9.0, "{s:?}");
    }
}
