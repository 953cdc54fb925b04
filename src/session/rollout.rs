//! Rollout: whether refusals are enforced, or only recorded (monitor mode), so that a site
//! replacing OpenDKIM sees whom relayguard would refuse before it refuses anyone.

use crate::limits::LimitsPolicy;

/// Whether refusals are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Refusals are sent (the default).
    #[default]
    Enforce,
    /// Every decision is made, logged, audited and counted, but a refusal is not sent: the
    /// message passes unsigned with a header saying why it would have been refused.
    Monitor,
}

/// `[rollout]`: the mode, and who is monitored while the rest is enforced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The mode for everyone.
    pub mode: Mode,
    /// Logins (normalised) in monitor mode whatever the mode.
    pub monitor_logins: Vec<String>,
    /// Client classes (`internal`, `external`, or a named limits class) in monitor mode.
    pub monitor_classes: Vec<String>,
    /// The header a passed message gets (`X-Relayguard-Would-Refuse`); `None`: none.
    pub header: Option<String>,
}

impl Rollout {
    /// Whether every refusal is enforced (nothing to look up per message).
    pub fn enforces_all(&self) -> bool {
        self.mode == Mode::Enforce
            && self.monitor_logins.is_empty()
            && self.monitor_classes.is_empty()
    }

    /// Whether a message from `login` (normalised) of client class `class` is monitored.
    pub fn monitors(&self, login: Option<&str>, class: &str) -> bool {
        self.mode == Mode::Monitor
            || login.is_some_and(|l| self.monitor_logins.iter().any(|m| m == l))
            || self.monitor_classes.iter().any(|c| c == class)
    }

    /// Whether a client is monitored: by its login, or by its class (the limits class when
    /// limits are configured, else `internal` or `external` by network).
    pub fn monitors_client(
        &self,
        limits: Option<&LimitsPolicy>,
        daemon_name: Option<&str>,
        login: Option<&str>,
        internal: bool,
    ) -> bool {
        if self.enforces_all() {
            return false;
        }
        let class = crate::limits::class_name(limits, daemon_name, login, internal);
        self.monitors(login, class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_applies_globally_or_to_listed_logins_and_classes() {
        let mut r = Rollout::default();
        assert!(!r.monitors(Some("alice"), "external"));
        r.monitor_logins = vec!["alice".into()];
        r.monitor_classes = vec!["eas".into()];
        assert!(r.monitors(Some("alice"), "external"));
        assert!(!r.monitors(Some("bob"), "external"));
        assert!(r.monitors(Some("bob"), "eas"));
        assert!(!r.monitors(None, "internal"));
        r.mode = Mode::Monitor;
        assert!(r.monitors(None, "internal"));
    }
}
