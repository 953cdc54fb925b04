//! Stolen-account signals: what one login's recent sending looks like against its own past
//! (distinct client networks, recipient domains, new recipients, strangers reached in the
//! last hour and the last day, volume against its baseline, authentication spread), the
//! documented scoring rule that turns them into a score, and the action a client class takes
//! on it. Everything here is pure; the signals are kept by a [`book::SignalBook`] (memory,
//! or Redis for the cluster).
//!
//! The rule: every signal has a threshold and a weight. A signal above its threshold scores
//! `weight × value / threshold` (at most `3 × weight`); the score is the sum. At or above
//! `[abuse] act_at` the login's class action applies: `log`, `tempfail` (this message
//! waits; the account keeps working once the burst is reviewed) or `lock`.
//!
//! Strangers (recipients the login has not written to lately, campus ones counted at
//! `campus_weight`) are counted one by one over fixed windows with fixed thresholds, weight
//! 2: a paced attacker cannot stay under a rule that learns from him, because this one does
//! not learn. From a network the login has not used before today the thresholds are
//! multiplied by `unfamiliar_factor`.

pub mod book;
pub mod codec;
pub mod observation;
pub mod redis;
pub mod state;

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
    /// Strangers in the last hour, every recipient counted.
    pub strangers_hour: Threshold,
    /// Strangers in the last 24 hours, every recipient counted.
    pub strangers_day: Threshold,
    /// The strangers thresholds from a network the login has not used before today.
    pub unfamiliar_factor: f64,
    /// What a new recipient inside the protected domains counts as a stranger.
    pub campus_weight: f64,
    /// The weight of the soft signals (domains, new recipients, volume) from a network the
    /// login used before or a campus network: the same spread from the usual desk is more
    /// likely an organiser than a thief.
    pub familiar_weight: f64,
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
                weight: 0.75,
            },
            volume: Threshold {
                above: 4.0,
                weight: 0.75,
            },
            authentications: Threshold {
                above: 30.0,
                weight: 0.5,
            },
            strangers_hour: Threshold {
                above: 150.0,
                weight: 2.0,
            },
            strangers_day: Threshold {
                above: 200.0,
                weight: 2.0,
            },
            unfamiliar_factor: 0.5,
            campus_weight: 0.5,
            familiar_weight: 0.5,
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
    /// A strangers threshold, lower from an unfamiliar network.
    pub fn strangers(&self, t: Threshold, unfamiliar: bool) -> Threshold {
        Threshold {
            above: if unfamiliar {
                t.above * self.unfamiliar_factor
            } else {
                t.above
            },
            ..t
        }
    }

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
    /// Strangers reached in the last hour, every recipient counted.
    pub strangers_hour: f64,
    /// Strangers reached in the last 24 hours, every recipient counted.
    pub strangers_day: f64,
    /// This message came from a network the login has not used before today.
    pub unfamiliar: bool,
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
    let soft = |t: Threshold| Threshold {
        weight: if s.unfamiliar {
            t.weight
        } else {
            t.weight * rules.familiar_weight
        },
        ..t
    };
    let candidates = [
        ("networks", s.networks as f64, rules.networks),
        (
            "domains",
            s.domains as f64,
            soft(rules.domains.with_habit(s.domains_baseline)),
        ),
        (
            "new_recipients",
            s.new_recipients as f64,
            soft(rules.new_recipients.with_habit(s.new_baseline)),
        ),
        (
            "volume",
            (s.volume_ratio(rules) * 10.0).round() / 10.0,
            soft(rules.volume),
        ),
        (
            "authentications",
            s.authentications.unwrap_or(0) as f64,
            rules.authentications,
        ),
        (
            "strangers_hour",
            s.strangers_hour.round(),
            rules.strangers(rules.strangers_hour, s.unfamiliar),
        ),
        (
            "strangers_day",
            s.strangers_day.round(),
            rules.strangers(rules.strangers_day, s.unfamiliar),
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
    let unfamiliar = |t: Threshold| rules.strangers(t, true).above;
    let _ = writeln!(
        out,
        "  strangers in the last hour: {:.0} (above {} counts, {} from an unfamiliar network; campus recipients count {})",
        s.strangers_hour,
        rules.strangers_hour.above,
        unfamiliar(rules.strangers_hour),
        rules.campus_weight
    );
    let _ = writeln!(
        out,
        "  strangers in the last 24 hours: {:.0} (above {} counts, {} from an unfamiliar network)",
        s.strangers_day,
        rules.strangers_day.above,
        unfamiliar(rules.strangers_day)
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
            strangers_hour: new as f64,
            strangers_day: new as f64,
            unfamiliar: true,
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
        let s = score(&signals(1, 3, 15, 40.0, 1.0), &r);
        assert!(s.total >= r.act_at, "{s:?}");
        // A list owner who always sends 40 an hour: nothing.
        assert_eq!(score(&signals(1, 3, 0, 40.0, 38.0), &r).total, 0.0);
    }

    #[test]
    fn strangers_act_alone_above_their_fixed_thresholds_lower_from_an_unfamiliar_network() {
        let r = Rules::default();
        let mut s = signals(1, 1, 0, 1.0, 1.0);
        s.unfamiliar = false;
        s.strangers_day = 200.0;
        assert!(score(&s, &r).total < r.act_at, "200 in a day is the budget");
        s.strangers_day = 201.0;
        assert!(score(&s, &r).total >= r.act_at);
        s.strangers_day = 101.0;
        assert!(score(&s, &r).total < r.act_at);
        s.unfamiliar = true;
        let scored = score(&s, &r);
        assert!(scored.total >= r.act_at);
        assert_eq!(scored.reason(), "strangers_day 101 > 100");
        s.strangers_day = 0.0;
        s.strangers_hour = 76.0;
        assert!(score(&s, &r).total >= r.act_at, "75 an hour from a proxy");
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
