//! `[abuse]`: the stolen-account signals, their thresholds and weights, and each class's action.

use super::values::{Number, fraction, positive};
use crate::abuse::{Action, Rules, Threshold};
use crate::tomlfile::{FileError, Place};
use serde::Deserialize;
use std::ops::RangeInclusive;
use toml::Spanned;

// The documented range of each number (docs/configuration.md, relayguard.toml(5)); values outside are
// errors, so no setting can overflow arithmetic or a runtime structure.
const ABUSE_IPV4_PREFIX: RangeInclusive<u64> = 8..=32;
const ABUSE_IPV6_PREFIX: RangeInclusive<u64> = 16..=128;
const ABUSE_NEW_RECIPIENT_DAYS: RangeInclusive<u64> = 2..=365;
const ABUSE_BASELINE_DAYS: RangeInclusive<u64> = 1..=365;
const ABUSE_NOTIFY_TIMEOUT_SECS: RangeInclusive<u64> = 1..=300;

/// `[abuse]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAbuse {
    pub(super) act_at: Option<Spanned<f64>>,
    pub(super) networks: Option<RawSignal>,
    pub(super) domains: Option<RawSignal>,
    pub(super) new_recipients: Option<RawSignal>,
    pub(super) volume: Option<RawSignal>,
    pub(super) authentications: Option<RawSignal>,
    pub(super) strangers_hour: Option<RawSignal>,
    pub(super) strangers_day: Option<RawSignal>,
    pub(super) unfamiliar_factor: Option<Spanned<f64>>,
    pub(super) campus_weight: Option<Spanned<f64>>,
    pub(super) familiar_weight: Option<Spanned<f64>>,
    pub(super) ipv4_prefix: Number,
    pub(super) ipv6_prefix: Number,
    pub(super) new_recipient_days: Number,
    pub(super) baseline_days: Number,
    pub(super) volume_floor: Option<Spanned<f64>>,
    pub(super) default_action: Option<Spanned<String>>,
    pub(super) actions: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    pub(super) notify_command: Option<Vec<String>>,
    pub(super) notify_timeout_secs: Number,
}

/// One `[abuse.SIGNAL]` table as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignal {
    pub(super) above: Option<Spanned<f64>>,
    pub(super) weight: Option<Spanned<f64>>,
}

/// `[abuse]`: the stolen-account signals, their scoring and the action of each class.
pub(super) fn abuse(a: &RawAbuse, p: Place, has_limits: bool) -> Result<Rules, FileError> {
    let d = Rules::default();
    let signal = |raw: &Option<RawSignal>, name: &str, default: Threshold| {
        threshold(raw.as_ref(), name, default, p)
    };
    let (default_action, actions) = actions(a, p, has_limits)?;
    let number = |v: &Number, key: &str, r, default: u64| {
        Ok::<_, FileError>(p.number(v, key, r)?.unwrap_or(default))
    };
    let share = |v: &Option<Spanned<f64>>, key: &str, default: f64| {
        fraction(p, v, &format!("abuse.{key}"), 1.0, default)
    };
    Ok(Rules {
        networks: signal(&a.networks, "networks", d.networks)?,
        domains: signal(&a.domains, "domains", d.domains)?,
        new_recipients: signal(&a.new_recipients, "new_recipients", d.new_recipients)?,
        volume: signal(&a.volume, "volume", d.volume)?,
        authentications: signal(&a.authentications, "authentications", d.authentications)?,
        strangers_hour: signal(&a.strangers_hour, "strangers_hour", d.strangers_hour)?,
        strangers_day: signal(&a.strangers_day, "strangers_day", d.strangers_day)?,
        unfamiliar_factor: positive(
            p,
            &a.unfamiliar_factor,
            "abuse.unfamiliar_factor",
            1.0,
            d.unfamiliar_factor,
        )?,
        campus_weight: share(&a.campus_weight, "campus_weight", d.campus_weight)?,
        familiar_weight: share(&a.familiar_weight, "familiar_weight", d.familiar_weight)?,
        act_at: fraction(p, &a.act_at, "abuse.act_at", 1e3, d.act_at)?,
        ipv4_prefix: number(&a.ipv4_prefix, "abuse.ipv4_prefix", ABUSE_IPV4_PREFIX, 24)? as u8,
        ipv6_prefix: number(&a.ipv6_prefix, "abuse.ipv6_prefix", ABUSE_IPV6_PREFIX, 48)? as u8,
        new_recipient_days: number(
            &a.new_recipient_days,
            "abuse.new_recipient_days",
            ABUSE_NEW_RECIPIENT_DAYS,
            30,
        )? as u32,
        baseline_days: number(
            &a.baseline_days,
            "abuse.baseline_days",
            ABUSE_BASELINE_DAYS,
            14,
        )? as u32,
        volume_floor: positive(
            p,
            &a.volume_floor,
            "abuse.volume_floor",
            1e6,
            d.volume_floor,
        )?,
        actions,
        default_action,
        notify_command: a.notify_command.clone().filter(|c| !c.is_empty()),
        notify_timeout: std::time::Duration::from_secs(number(
            &a.notify_timeout_secs,
            "abuse.notify_timeout_secs",
            ABUSE_NOTIFY_TIMEOUT_SECS,
            10,
        )?),
    })
}

/// One signal's `[abuse.NAME]` table: `above` (more than 0) and `weight` (0 to 100).
fn threshold(
    raw: Option<&RawSignal>,
    name: &str,
    default: Threshold,
    p: Place,
) -> Result<Threshold, FileError> {
    let empty = RawSignal::default();
    let raw = raw.unwrap_or(&empty);
    Ok(Threshold {
        above: positive(
            p,
            &raw.above,
            &format!("abuse.{name}.above"),
            1e6,
            default.above,
        )?,
        weight: fraction(
            p,
            &raw.weight,
            &format!("abuse.{name}.weight"),
            100.0,
            default.weight,
        )?,
    })
}

/// `default_action` and `[abuse.actions]`; `lock` only where `[limits]` keeps locks.
fn actions(
    a: &RawAbuse,
    p: Place,
    has_limits: bool,
) -> Result<(Action, Vec<(String, Action)>), FileError> {
    let actions = [
        ("log", Action::Log),
        ("none", Action::None),
        ("tempfail", Action::Tempfail),
        ("lock", Action::Lock),
    ];
    let needs_locks = |action: Action, value: Option<&Spanned<String>>, key: &str| {
        if action == Action::Lock && !has_limits {
            return Err(p.invalid(
                value.map_or(0..0, |v| v.span()),
                key,
                "\"lock\" needs [limits], where account locks are kept".into(),
            ));
        }
        Ok(action)
    };
    let default_action = needs_locks(
        p.choose(a.default_action.as_ref(), "abuse.default_action", &actions)?,
        a.default_action.as_ref(),
        "abuse.default_action",
    )?;
    let mut per_class = Vec::new();
    for (class, action) in a.actions.iter().flatten() {
        let key = format!("abuse.actions.{class}");
        let chosen = p.choose(Some(action), &key, &actions)?;
        per_class.push((class.clone(), needs_locks(chosen, Some(action), &key)?));
    }
    Ok((default_action, per_class))
}
