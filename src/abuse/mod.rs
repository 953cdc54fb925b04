//! Stolen-account signals: what one login's recent sending looks like against its own past
//! (distinct client networks, recipient domains, new recipients, volume against its baseline,
//! authentication spread), the documented scoring rule that turns them into a score, and the
//! action a client class takes on it. Everything here is pure; the signals are kept by a
//! [`book::SignalBook`] (memory, or Redis for the cluster).
//!
//! The rule: every signal has a threshold and a weight. A signal above its threshold scores
//! `weight × value / threshold` (at most `3 × weight`); the score is the sum. At or above
//! `[abuse] act_at` the login's class action applies: `log`, `tempfail` (this message
//! waits; the account keeps working once the burst is reviewed) or `lock`.

pub mod book;
pub mod redis;

use serde::Serialize;

/// One signal's threshold and weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// The signal fires above this value.
    pub above: f64,
    /// Its weight in the score.
    pub weight: f64,
}

impl Threshold {
    /// The threshold for a login whose own busiest hour lately reached `habit`: a login that
    /// always writes to many domains (or many new people) is measured against itself.
    pub fn with_habit(self, habit: f64) -> Threshold {
        Threshold {
            above: self.above.max(1.5 * habit),
            ..self
        }
    }
}

/// What a class does when a login's score reaches `act_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing (below the score, or the class is not watched).
    None,
    /// Log, audit and count; the message goes on.
    Log,
    /// `451 4.7.1` for this message.
    Tempfail,
    /// Lock the account (the existing locks), naming the signals.
    Lock,
}

impl Action {
    /// The action's name in configuration and records.
    pub fn name(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Log => "log",
            Action::Tempfail => "tempfail",
            Action::Lock => "lock",
        }
    }
}

/// `[abuse]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Distinct client networks in the last hour.
    pub networks: Threshold,
    /// Distinct recipient domains in the last hour.
    pub domains: Threshold,
    /// Recipients not written to in the last `new_recipient_days`, in the last hour.
    pub new_recipients: Threshold,
    /// Messages in the last hour over the login's baseline (at least `volume_floor`).
    /// Distinct domains and new recipients are measured against 1.5 times the login's own
    /// busiest hour too.
    pub volume: Threshold,
    /// Authentications in the limits' authentication window (when that limit is set).
    pub authentications: Threshold,
    /// The score at which the class action applies.
    pub act_at: f64,
    /// IPv4 prefix length that makes a network.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length that makes a network.
    pub ipv6_prefix: u8,
    /// How long a recipient stays known.
    pub new_recipient_days: u32,
    /// The baseline's memory, in days.
    pub baseline_days: u32,
    /// Messages per hour a baseline is never below (new and quiet accounts).
    pub volume_floor: f64,
    /// Action per class (`internal`, `external`, or a limits class); others: `default`.
    pub actions: Vec<(String, Action)>,
    /// Action of classes not named.
    pub default_action: Action,
    /// Run with the lock record as JSON on stdin when an account is locked.
    pub notify_command: Option<Vec<String>>,
    /// How long `notify_command` may run.
    pub notify_timeout: std::time::Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            networks: Threshold {
                above: 4.0,
                weight: 1.0,
            },
            domains: Threshold {
                above: 12.0,
                weight: 0.5,
            },
            new_recipients: Threshold {
                above: 10.0,
                weight: 1.0,
            },
            volume: Threshold {
                above: 4.0,
                weight: 0.75,
            },
            authentications: Threshold {
                above: 30.0,
                weight: 0.5,
            },
            act_at: 2.0,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            new_recipient_days: 30,
            baseline_days: 14,
            volume_floor: 5.0,
            actions: Vec::new(),
            default_action: Action::Log,
            notify_command: None,
            notify_timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl Rules {
    /// The action of a class.
    pub fn action(&self, class: &str) -> Action {
        self.actions
            .iter()
            .find(|(c, _)| c == class)
            .map_or(self.default_action, |(_, a)| *a)
    }
}

/// One login's signals after a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Signals {
    /// Distinct client networks, last hour (this and the previous hour bucket).
    pub networks: u64,
    /// Distinct recipient domains, last hour.
    pub domains: u64,
    /// Recipients new to this login, last hour.
    pub new_recipients: u64,
    /// Messages in the last hour (sliding estimate).
    pub messages_hour: f64,
    /// The login's baseline: its busiest hour lately (messages), halving every
    /// `baseline_days`.
    pub baseline: f64,
    /// The same for distinct recipient domains in an hour.
    pub domains_baseline: f64,
    /// The same for new recipients in an hour.
    pub new_baseline: f64,
    /// Authentications in the window, when counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentications: Option<u64>,
}

impl Signals {
    /// Messages in the last hour over the login's baseline (never below `volume_floor`).
    pub fn volume_ratio(&self, rules: &Rules) -> f64 {
        self.messages_hour / self.baseline.max(rules.volume_floor)
    }
}

/// One signal that fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fired {
    /// Its name.
    pub signal: &'static str,
    /// Its value.
    pub value: f64,
    /// Its threshold.
    pub above: f64,
    /// Points it adds.
    pub points: f64,
}

/// A login's score and what made it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Score {
    /// The sum of points.
    pub total: f64,
    /// The signals above their thresholds.
    pub fired: Vec<Fired>,
}

impl Score {
    /// `networks 9 > 4, new_recipients 14 > 10`: for logs, lock reasons and replies.
    pub fn reason(&self) -> String {
        self.fired
            .iter()
            .map(|f| {
                if f.signal == "volume" {
                    format!("volume {:.1}x baseline > {}x", f.value, f.above)
                } else {
                    format!("{} {} > {:.0}", f.signal, f.value, f.above)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The scoring rule (module documentation).
pub fn score(s: &Signals, rules: &Rules) -> Score {
    let candidates = [
        ("networks", s.networks as f64, rules.networks),
        (
            "domains",
            s.domains as f64,
            rules.domains.with_habit(s.domains_baseline),
        ),
        (
            "new_recipients",
            s.new_recipients as f64,
            rules.new_recipients.with_habit(s.new_baseline),
        ),
        (
            "volume",
            (s.volume_ratio(rules) * 10.0).round() / 10.0,
            rules.volume,
        ),
        (
            "authentications",
            s.authentications.unwrap_or(0) as f64,
            rules.authentications,
        ),
    ];
    let mut out = Score::default();
    for (signal, value, t) in candidates {
        if t.weight > 0.0 && value > t.above {
            let points = t.weight * (value / t.above).min(3.0);
            out.total += points;
            out.fired.push(Fired {
                signal,
                value,
                above: t.above,
                points: (points * 100.0).round() / 100.0,
            });
        }
    }
    out.total = (out.total * 100.0).round() / 100.0;
    out
}

/// What the class does with this score.
pub fn decide(score: &Score, rules: &Rules, class: &str) -> Action {
    if score.total >= rules.act_at {
        rules.action(class)
    } else {
        Action::None
    }
}

/// The signals of a login as `accounts why` and `explain` show them.
pub fn describe(login: &str, s: &Signals, rules: &Rules) -> String {
    use std::fmt::Write as _;
    let scored = score(s, rules);
    let mut out = String::new();
    let _ = writeln!(out, "{login}");
    let _ = writeln!(
        out,
        "  networks in the last hour: {} (above {} counts, weight {})",
        s.networks, rules.networks.above, rules.networks.weight
    );
    let _ = writeln!(
        out,
        "  recipient domains in the last hour: {} (above {:.0} counts: {} or 1.5 x its busiest hour lately, {:.1})",
        s.domains,
        rules.domains.with_habit(s.domains_baseline).above,
        rules.domains.above,
        s.domains_baseline
    );
    let _ = writeln!(
        out,
        "  new recipients in the last hour: {} (above {:.0} counts: {} or 1.5 x its busiest hour lately, {:.1})",
        s.new_recipients,
        rules.new_recipients.with_habit(s.new_baseline).above,
        rules.new_recipients.above,
        s.new_baseline
    );
    let _ = writeln!(
        out,
        "  messages in the last hour: {:.1}; its busiest hour lately {:.1} (never taken below {}): {:.1}x (above {}x counts)",
        s.messages_hour,
        s.baseline,
        rules.volume_floor,
        s.volume_ratio(rules),
        rules.volume.above
    );
    if let Some(a) = s.authentications {
        let _ = writeln!(out, "  authentications in the window: {a}");
    }
    let fired = if scored.fired.is_empty() {
        "no signal above its threshold".to_string()
    } else {
        scored.reason()
    };
    let _ = writeln!(
        out,
        "  score {} (classes act at {}): {fired}",
        scored.total, rules.act_at
    );
    let mut actions: Vec<String> = rules
        .actions
        .iter()
        .map(|(c, a)| format!("{c} {}", a.name()))
        .collect();
    actions.push(format!("others {}", rules.default_action.name()));
    let _ = writeln!(out, "  actions: {}", actions.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(networks: u64, domains: u64, new: u64, hour: f64, baseline: f64) -> Signals {
        Signals {
            networks,
            domains,
            new_recipients: new,
            messages_hour: hour,
            baseline,
            domains_baseline: 0.0,
            new_baseline: 0.0,
            authentications: None,
        }
    }

    #[test]
    fn one_signal_alone_acts_only_when_far_above_its_threshold() {
        let r = Rules::default();
        assert_eq!(score(&signals(1, 1, 0, 1.0, 1.0), &r).total, 0.0);
        // 5 networks in an hour: 1.25 points, logged in the score but below act_at.
        let s = score(&signals(5, 1, 0, 5.0, 1.0), &r);
        assert_eq!(s.total, 1.25);
        assert_eq!(decide(&s, &r, "external"), Action::None);
        // 9 networks: 2.25, acts.
        let s = score(&signals(9, 1, 0, 9.0, 1.0), &r);
        assert_eq!(decide(&s, &r, "external"), Action::Log);
        assert_eq!(s.reason(), "networks 9 > 4");
    }

    #[test]
    fn volume_is_measured_against_the_login_s_own_history() {
        let r = Rules::default();
        // Sends ~1 an hour, now 40: 8x the floor of 5.
        let s = score(&signals(1, 3, 0, 40.0, 1.0), &r);
        assert!(
            s.fired
                .iter()
                .any(|f| f.signal == "volume" && f.value == 8.0)
        );
        // Volume alone is not enough (a new list owner looks the same in the first hour)...
        assert!(s.total < r.act_at, "{s:?}");
        // ... with strangers among the recipients it is.
        let s = score(&signals(1, 3, 11, 40.0, 1.0), &r);
        assert!(s.total >= r.act_at, "{s:?}");
        // A list owner who always sends 40 an hour: nothing.
        assert_eq!(score(&signals(1, 3, 0, 40.0, 38.0), &r).total, 0.0);
    }

    #[test]
    fn points_are_capped_and_classes_choose_their_action() {
        let r = Rules {
            actions: vec![("external".into(), Action::Lock)],
            ..Rules::default()
        };
        let s = score(&signals(100, 1, 0, 1.0, 1.0), &r);
        assert_eq!(s.total, 3.0);
        assert_eq!(decide(&s, &r, "external"), Action::Lock);
        assert_eq!(decide(&s, &r, "internal"), Action::Log);
    }
}
