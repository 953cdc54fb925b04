//! Sending limits: client classes, per-class and per-login limits, abuse locks, and the
//! counter stores (in memory for one host, Redis for a cluster).

pub mod breaker;
pub mod locks;
pub mod peers;
pub mod rate;
pub mod store;

use rate::{Rate, Window};
use std::collections::BTreeMap;
use store::{CounterStore, StoreDown};

/// The counter keys (before the store's prefix): the only place that names them, for the
/// checks below and for [`inspect`].
pub mod keys {
    /// New connections of a login (GCRA).
    pub fn connections(subject: &str) -> String {
        format!("conn:{subject}")
    }

    /// Messages of a login (GCRA).
    pub fn messages(subject: &str) -> String {
        format!("msg:{subject}")
    }

    /// Authentications of a login in one watched night.
    pub fn authentications(subject: &str, night: &str) -> String {
        format!("auth:{subject}:{night}")
    }

    /// Sender-ownership refusals of a login in the lock window.
    pub fn ownership_refusals(login: &str) -> String {
        format!("own:{login}")
    }

    /// Limit hits of a login on one day (days since the epoch).
    pub fn limit_hits(login: &str, day: i64) -> String {
        format!("hits:{login}:{day}")
    }

    /// Limit hits of a login in one minute (minutes since the epoch).
    pub fn limit_hit_minute(login: &str, minute: i64) -> String {
        format!("hitmin:{login}:{minute}")
    }
}

/// The limits of one class (or a per-login override); `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassLimits {
    /// New connections per second per login (or client address).
    pub connections_per_second: Option<u64>,
    /// Messages per SMTP connection.
    pub messages_per_connection: Option<u64>,
    /// Messages per hour per login (sliding, GCRA).
    pub messages_per_hour: Option<u64>,
    /// Recipients per message.
    pub recipients_per_message: Option<u64>,
    /// Authenticated connections per watched window (e.g. 18:00–06:00) per login.
    pub authentications_per_window: Option<u64>,
}

impl ClassLimits {
    /// `self` with every limit that `over` sets replaced.
    pub fn overlay(&self, over: &ClassLimits) -> ClassLimits {
        ClassLimits {
            connections_per_second: over.connections_per_second.or(self.connections_per_second),
            messages_per_connection: over
                .messages_per_connection
                .or(self.messages_per_connection),
            messages_per_hour: over.messages_per_hour.or(self.messages_per_hour),
            recipients_per_message: over.recipients_per_message.or(self.recipients_per_message),
            authentications_per_window: over
                .authentications_per_window
                .or(self.authentications_per_window),
        }
    }
}

/// A named class chosen by `{daemon_name}` or by login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassRule {
    /// Class name (`eas`, `robot`, `listserver`, ...).
    pub name: String,
    /// `{daemon_name}` values that select it.
    pub daemon_names: Vec<String>,
    /// Logins (normalised) that select it.
    pub logins: Vec<String>,
    /// Its limits.
    pub limits: ClassLimits,
}

/// What locks an account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockRules {
    /// Lock after this many sender-ownership refusals within `ownership_window_ms`.
    pub ownership_refusals: Option<u64>,
    /// The window for ownership refusals.
    pub ownership_window_ms: i64,
    /// Lock after limits were hit in this many minutes of a day (a minute counts once: an
    /// MTA retrying what a limit refused is one hit per minute, not one per try).
    pub limit_hits_per_day: Option<u64>,
}

/// The reloadable limit policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsPolicy {
    /// Unauthenticated or authenticated clients from the internal networks.
    pub internal: ClassLimits,
    /// Everyone else.
    pub external: ClassLimits,
    /// Named classes, first match wins.
    pub classes: Vec<ClassRule>,
    /// Per-login overrides on top of the class.
    pub overrides: BTreeMap<String, ClassLimits>,
    /// The watched window for authentications.
    pub auth_window: Window,
    /// Abuse locks.
    pub lock: LockRules,
    /// Who to contact about a locked account (shown in the reply).
    pub contact: String,
}

/// The client's class: a `[[limits.class]]` name when the limits name one for it, else
/// `internal` or `external` (also without `[limits]`).
pub fn class_name<'a>(
    limits: Option<&'a LimitsPolicy>,
    daemon_name: Option<&str>,
    login: Option<&str>,
    internal: bool,
) -> &'a str {
    match limits {
        Some(limits) => limits.class(daemon_name, login, internal).0,
        None if internal => "internal",
        None => "external",
    }
}

impl LimitsPolicy {
    /// The client's class and its effective limits.
    pub fn class(
        &self,
        daemon_name: Option<&str>,
        login: Option<&str>,
        internal: bool,
    ) -> (&str, ClassLimits) {
        let named = self.classes.iter().find(|c| {
            daemon_name.is_some_and(|d| c.daemon_names.iter().any(|n| n == d))
                || login.is_some_and(|l| c.logins.iter().any(|n| n == l))
        });
        let (name, base) = match named {
            Some(c) => (c.name.as_str(), c.limits),
            None if internal => ("internal", self.internal),
            None => ("external", self.external),
        };
        let limits = match login.and_then(|l| self.overrides.get(l)) {
            Some(over) => base.overlay(over),
            None => base,
        };
        (name, limits)
    }
}

/// A limit that was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Stable name (`messages_per_hour`, ...); the audit reason is `limit_<name>`.
    pub limit: &'static str,
    /// The configured maximum.
    pub max: u64,
    /// When the client may retry, for rate limits.
    pub retry_after_s: Option<i64>,
}

impl Hit {
    /// The SMTP reply: code, enhanced code, text.
    pub fn reply(&self, subject: &str) -> (&'static str, &'static str, String) {
        match self.limit {
            "recipients_per_message" => (
                "452",
                "4.5.3",
                format!("too many recipients: at most {} per message", self.max),
            ),
            "messages_per_connection" => (
                "450",
                "4.7.1",
                format!(
                    "{subject}: limit of {} messages per connection reached; send the rest on a new connection",
                    self.max
                ),
            ),
            "authentications_per_window" => (
                "450",
                "4.7.1",
                format!(
                    "{subject}: limit of {} authentications per night reached; try again after the watched window ends",
                    self.max
                ),
            ),
            _ => {
                let what = if self.limit == "connections_per_second" {
                    "connections per second"
                } else {
                    "messages per hour"
                };
                let retry = self.retry_after_s.unwrap_or(1).max(1);
                (
                    "450",
                    "4.7.1",
                    format!(
                        "{subject}: limit of {} {what} reached; try again in {retry} s",
                        self.max
                    ),
                )
            }
        }
    }
}

/// Why a limit check did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// A limit was reached.
    Hit(Hit),
    /// The store is down and fail-closed.
    Down(StoreDown),
}

impl From<StoreDown> for LimitError {
    fn from(d: StoreDown) -> Self {
        LimitError::Down(d)
    }
}

/// Counter values that mattered, for the audit record.
pub type Used = BTreeMap<&'static str, u64>;

const HOUR_MS: i64 = 3_600_000;

/// At the first MAIL of a connection: connections per second and, for authenticated
/// sessions inside the watched window, authentications per window.
pub async fn check_connection(
    counters: &dyn CounterStore,
    policy: &LimitsPolicy,
    limits: &ClassLimits,
    subject: &str,
    authenticated: bool,
    now_ms: i64,
    used: &mut Used,
) -> Result<(), LimitError> {
    if let Some(max) = limits.connections_per_second {
        let g = counters
            .gcra(
                &keys::connections(subject),
                now_ms,
                Rate {
                    count: max,
                    period_ms: 1000,
                },
            )
            .await?;
        used.insert("connections_per_second", g.used);
        if !g.allowed {
            return Err(LimitError::Hit(Hit {
                limit: "connections_per_second",
                max,
                retry_after_s: Some((g.retry_after_ms + 999) / 1000),
            }));
        }
    }
    if let (Some(max), true) = (limits.authentications_per_window, authenticated)
        && let Some(night) = policy.auth_window.occurrence(now_ms)
    {
        let n = counters
            .incr(
                &keys::authentications(subject, &night),
                now_ms,
                24 * HOUR_MS,
            )
            .await?;
        used.insert("authentications_per_window", n);
        if n > max {
            return Err(LimitError::Hit(Hit {
                limit: "authentications_per_window",
                max,
                retry_after_s: None,
            }));
        }
    }
    Ok(())
}

/// At every MAIL: messages per connection (counted by the session) and per hour.
pub async fn check_message(
    counters: &dyn CounterStore,
    limits: &ClassLimits,
    subject: &str,
    on_connection: u64,
    now_ms: i64,
    used: &mut Used,
) -> Result<(), LimitError> {
    if let Some(max) = limits.messages_per_connection {
        used.insert("messages_per_connection", on_connection);
        if on_connection > max {
            return Err(LimitError::Hit(Hit {
                limit: "messages_per_connection",
                max,
                retry_after_s: None,
            }));
        }
    }
    if let Some(max) = limits.messages_per_hour {
        let g = counters
            .gcra(
                &keys::messages(subject),
                now_ms,
                Rate {
                    count: max,
                    period_ms: HOUR_MS,
                },
            )
            .await?;
        used.insert("messages_per_hour", g.used);
        if !g.allowed {
            return Err(LimitError::Hit(Hit {
                limit: "messages_per_hour",
                max,
                retry_after_s: Some((g.retry_after_ms + 999) / 1000),
            }));
        }
    }
    Ok(())
}

/// At RCPT: the recipient with number `count` (1-based) is refused above the limit.
pub fn check_recipient(limits: &ClassLimits, count: u64) -> Result<(), Hit> {
    match limits.recipients_per_message {
        Some(max) if count > max => Err(Hit {
            limit: "recipients_per_message",
            max,
            retry_after_s: None,
        }),
        _ => Ok(()),
    }
}

/// Counts an abuse signal for `login`; returns the lock reason when a trigger fires.
pub async fn abuse_signal(
    counters: &dyn CounterStore,
    rules: &LockRules,
    login: &str,
    ownership: bool,
    now_ms: i64,
) -> Result<Option<String>, StoreDown> {
    if ownership {
        if let Some(max) = rules.ownership_refusals {
            let n = counters
                .incr(
                    &keys::ownership_refusals(login),
                    now_ms,
                    rules.ownership_window_ms,
                )
                .await?;
            if n >= max {
                return Ok(Some(format!(
                    "{n} sender-ownership refusals within {} minutes",
                    rules.ownership_window_ms / 60_000
                )));
            }
        }
    } else if let Some(max) = rules.limit_hits_per_day {
        // A queue retrying twenty deferred messages every few minutes is not twenty abuses
        // a round: a minute with hits counts once.
        let minute = now_ms / 60_000;
        let in_minute = counters
            .incr(&keys::limit_hit_minute(login, minute), now_ms, 60_000)
            .await?;
        if in_minute > 1 {
            return Ok(None);
        }
        let day = now_ms / (24 * HOUR_MS);
        let n = counters
            .incr(&keys::limit_hits(login, day), now_ms, 25 * HOUR_MS)
            .await?;
        if n >= max {
            return Ok(Some(format!("limits hit in {n} minutes of a day")));
        }
    }
    Ok(None)
}

/// The counters of a login as they stand (for `relayguard explain`): how far each rate is
/// ahead of now, and tonight's authentications.
pub async fn inspect(
    counters: &dyn CounterStore,
    policy: &LimitsPolicy,
    login: &str,
    now_ms: i64,
) -> Result<Vec<(&'static str, String)>, StoreDown> {
    let mut out = Vec::new();
    for (name, key) in [
        ("messages_per_hour", keys::messages(login)),
        ("connections_per_second", keys::connections(login)),
    ] {
        let tat = counters.peek(&key, now_ms).await?;
        out.push((
            name,
            match tat {
                Some(t) => format!("tat={} ms ahead", (t - now_ms).max(0)),
                None => "tat=unset".into(),
            },
        ));
    }
    if let Some(night) = policy.auth_window.occurrence(now_ms) {
        let n = counters
            .peek(&keys::authentications(login, &night), now_ms)
            .await?;
        out.push(("authentications_per_window", format!("{}", n.unwrap_or(0))));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LimitsPolicy {
        LimitsPolicy {
            internal: ClassLimits {
                connections_per_second: Some(5),
                messages_per_connection: Some(500),
                ..Default::default()
            },
            external: ClassLimits {
                messages_per_hour: Some(50),
                recipients_per_message: Some(20),
                authentications_per_window: Some(150),
                ..Default::default()
            },
            classes: vec![ClassRule {
                name: "eas".into(),
                daemon_names: vec!["eas".into()],
                logins: vec![],
                limits: ClassLimits {
                    recipients_per_message: Some(500),
                    ..Default::default()
                },
            }],
            overrides: [(
                "bulk".to_string(),
                ClassLimits {
                    messages_per_hour: Some(1000),
                    ..Default::default()
                },
            )]
            .into(),
            auth_window: Window::parse("18:00-06:00", jiff::tz::TimeZone::UTC).unwrap(),
            lock: LockRules {
                ownership_refusals: Some(3),
                ownership_window_ms: 600_000,
                limit_hits_per_day: Some(2),
            },
            contact: "helpdesk@tugraz.at".into(),
        }
    }

    #[test]
    fn classes_by_daemon_login_and_network() {
        let p = policy();
        assert_eq!(p.class(Some("eas"), Some("alice"), false).0, "eas");
        assert_eq!(p.class(None, Some("alice"), true).0, "internal");
        let (name, limits) = p.class(None, Some("bulk"), false);
        assert_eq!(name, "external");
        assert_eq!(
            (limits.messages_per_hour, limits.recipients_per_message),
            (Some(1000), Some(20))
        );
    }

    #[test]
    fn recipients_over_the_limit_are_refused_with_452() {
        let (_, limits) = policy().class(None, Some("alice"), false);
        assert!(check_recipient(&limits, 20).is_ok());
        let hit = check_recipient(&limits, 21).unwrap_err();
        assert_eq!(
            hit.reply("alice"),
            (
                "452",
                "4.5.3",
                "too many recipients: at most 20 per message".into()
            )
        );
    }

    #[tokio::test]
    async fn authentications_count_only_inside_the_night_window() {
        let p = policy();
        let counters = store::Counters::memory();
        let limits = ClassLimits {
            authentications_per_window: Some(2),
            ..Default::default()
        };
        let day = 1_764_331_200_000; // 2025-11-28T12:00:00Z
        let mut used = Used::new();
        for _ in 0..10 {
            check_connection(&counters, &p, &limits, "alice", true, day, &mut used)
                .await
                .unwrap();
        }
        let night = day + 7 * HOUR_MS; // 19:00
        for _ in 0..2 {
            check_connection(&counters, &p, &limits, "alice", true, night, &mut used)
                .await
                .unwrap();
        }
        let e = check_connection(
            &counters,
            &p,
            &limits,
            "alice",
            true,
            night + HOUR_MS * 6,
            &mut used,
        )
        .await
        .unwrap_err(); // 01:00
        assert!(matches!(
            e,
            LimitError::Hit(Hit {
                limit: "authentications_per_window",
                ..
            })
        ));
        // The next night starts afresh.
        check_connection(
            &counters,
            &p,
            &limits,
            "alice",
            true,
            night + 24 * HOUR_MS,
            &mut used,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn abuse_triggers_fire_at_their_thresholds() {
        let counters = store::Counters::memory();
        let rules = policy().lock;
        assert_eq!(
            abuse_signal(&counters, &rules, "m", true, 0).await.unwrap(),
            None
        );
        assert_eq!(
            abuse_signal(&counters, &rules, "m", true, 1).await.unwrap(),
            None
        );
        assert!(
            abuse_signal(&counters, &rules, "m", true, 2)
                .await
                .unwrap()
                .is_some()
        );
        // Outside the window the count starts again.
        assert_eq!(
            abuse_signal(&counters, &rules, "n", true, 0).await.unwrap(),
            None
        );
        assert_eq!(
            abuse_signal(&counters, &rules, "n", true, 700_000)
                .await
                .unwrap(),
            None
        );
        // Limit hits: a minute counts once (a queue's retries), two minutes lock.
        for _ in 0..5 {
            assert_eq!(
                abuse_signal(&counters, &rules, "m", false, 0)
                    .await
                    .unwrap(),
                None
            );
        }
        assert_eq!(
            abuse_signal(&counters, &rules, "m", false, 60_000)
                .await
                .unwrap(),
            Some("limits hit in 2 minutes of a day".into())
        );
    }
}
