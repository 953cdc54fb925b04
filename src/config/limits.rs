//! `[limits]`: client classes and their sending limits, account locks, and where counters
//! live (memory or Redis with Sentinel).

use super::values::Number;
use crate::limits::ClassLimits;
use crate::limits::rate::Window;
use crate::limits::store::{OnFailure, RedisConfig, StoreSettings};
use crate::limits::{ClassRule, LimitsPolicy, LockRules};
use crate::policy::senders::LoginRules;
use crate::tomlfile::{FileError, Place};
use serde::Deserialize;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

// The documented range of each number (docs/configuration.md, relayguard.toml(5)); values outside are
// errors, so no setting can overflow arithmetic or a runtime structure.
const REDIS_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
const LOCK_COUNT: RangeInclusive<u64> = 1..=1_000_000;
const OWNERSHIP_WINDOW_MINUTES: RangeInclusive<u64> = 1..=10_080;
const CONNECTIONS_PER_SECOND: RangeInclusive<u64> = 1..=1_000;
const MESSAGES_PER_CONNECTION: RangeInclusive<u64> = 1..=1_000_000;
const MESSAGES_PER_HOUR: RangeInclusive<u64> = 1..=3_600_000;
const RECIPIENTS_PER_MESSAGE: RangeInclusive<u64> = 1..=100_000;
const AUTHENTICATIONS_PER_WINDOW: RangeInclusive<u64> = 1..=1_000_000;

/// `[limits.internal]`, `[limits.external]` or `[limits.login.NAME]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClassLimits {
    pub(super) connections_per_second: Number,
    pub(super) messages_per_connection: Number,
    pub(super) messages_per_hour: Number,
    pub(super) recipients_per_message: Number,
    pub(super) authentications_per_window: Number,
}

impl RawClassLimits {
    /// The limits, each checked against its range; `table` names the section in errors.
    pub(super) fn limits(&self, p: Place, table: &str) -> Result<ClassLimits, FileError> {
        let n =
            |value: &Number, key: &str, range| p.number(value, &format!("{table}.{key}"), range);
        Ok(ClassLimits {
            connections_per_second: n(
                &self.connections_per_second,
                "connections_per_second",
                CONNECTIONS_PER_SECOND,
            )?,
            messages_per_connection: n(
                &self.messages_per_connection,
                "messages_per_connection",
                MESSAGES_PER_CONNECTION,
            )?,
            messages_per_hour: n(
                &self.messages_per_hour,
                "messages_per_hour",
                MESSAGES_PER_HOUR,
            )?,
            recipients_per_message: n(
                &self.recipients_per_message,
                "recipients_per_message",
                RECIPIENTS_PER_MESSAGE,
            )?,
            authentications_per_window: n(
                &self.authentications_per_window,
                "authentications_per_window",
                AUTHENTICATIONS_PER_WINDOW,
            )?,
        })
    }
}

/// One `[[limits.class]]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClassRule {
    pub(super) name: String,
    #[serde(default)]
    pub(super) daemon_names: Vec<String>,
    #[serde(default)]
    pub(super) logins: Vec<String>,
    pub(super) connections_per_second: Number,
    pub(super) messages_per_connection: Number,
    pub(super) messages_per_hour: Number,
    pub(super) recipients_per_message: Number,
    pub(super) authentications_per_window: Number,
}

impl RawClassRule {
    pub(super) fn limits(&self, p: Place) -> Result<ClassLimits, FileError> {
        RawClassLimits {
            connections_per_second: self.connections_per_second.clone(),
            messages_per_connection: self.messages_per_connection.clone(),
            messages_per_hour: self.messages_per_hour.clone(),
            recipients_per_message: self.recipients_per_message.clone(),
            authentications_per_window: self.authentications_per_window.clone(),
        }
        .limits(p, "limits.class")
    }
}

/// `[limits.redis]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    pub(super) url: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) timeout_ms: Number,
    pub(super) on_failure: Option<Spanned<String>>,
    pub(super) sentinels: Option<Vec<Spanned<String>>>,
    pub(super) master_name: Option<Spanned<String>>,
}

/// `[limits.lock]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLock {
    pub(super) ownership_refusals: Number,
    pub(super) ownership_window_minutes: Number,
    pub(super) limit_hits_per_day: Number,
}

/// `[limits]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) store: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) auth_window: Option<Spanned<String>>,
    pub(super) contact: Option<String>,
    pub(super) lock_file: Option<String>,
    pub(super) redis: Option<RawRedis>,
    pub(super) internal: Option<RawClassLimits>,
    pub(super) external: Option<RawClassLimits>,
    #[serde(default)]
    pub(super) class: Vec<RawClassRule>,
    #[serde(default)]
    pub(super) login: std::collections::BTreeMap<String, RawClassLimits>,
    pub(super) lock: Option<RawLock>,
}

/// `[limits]`: the limits (logins normalised by `logins`) and where counters live.
pub(super) fn limits(
    l: &RawLimits,
    p: Place,
    base: &Path,
    logins: &LoginRules,
) -> Result<(LimitsPolicy, StoreSettings), FileError> {
    let tz = match &l.timezone {
        None => jiff::tz::TimeZone::system(),
        Some(t) => jiff::tz::TimeZone::get(t.get_ref())
            .map_err(|e| p.invalid(t.span(), "limits.timezone", e.to_string()))?,
    };
    let auth_window = match &l.auth_window {
        None => Window::parse("18:00-06:00", tz).expect("valid default"),
        Some(w) => Window::parse(w.get_ref(), tz)
            .map_err(|e| p.invalid(w.span(), "limits.auth_window", e))?,
    };
    let lock = match &l.lock {
        None => LockRules::default(),
        Some(k) => LockRules {
            ownership_refusals: p.number(
                &k.ownership_refusals,
                "limits.lock.ownership_refusals",
                LOCK_COUNT,
            )?,
            ownership_window_ms: p
                .number(
                    &k.ownership_window_minutes,
                    "limits.lock.ownership_window_minutes",
                    OWNERSHIP_WINDOW_MINUTES,
                )?
                .unwrap_or(10) as i64
                * 60_000,
            limit_hits_per_day: p.number(
                &k.limit_hits_per_day,
                "limits.lock.limit_hits_per_day",
                LOCK_COUNT,
            )?,
        },
    };
    let class_limits = |raw: &Option<RawClassLimits>, table: &str| {
        raw.as_ref()
            .map(|r| r.limits(p, table))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let mut classes = Vec::new();
    for c in &l.class {
        classes.push(ClassRule {
            name: c.name.clone(),
            daemon_names: c.daemon_names.clone(),
            logins: c.logins.iter().map(|x| logins.normalise(x)).collect(),
            limits: c.limits(p)?,
        });
    }
    let mut overrides = std::collections::BTreeMap::new();
    for (login, raw) in &l.login {
        overrides.insert(
            logins.normalise(login),
            raw.limits(p, &format!("limits.login.{login}"))?,
        );
    }
    let policy = LimitsPolicy {
        internal: class_limits(&l.internal, "limits.internal")?,
        external: class_limits(&l.external, "limits.external")?,
        classes,
        overrides,
        auth_window,
        lock,
        contact: l
            .contact
            .clone()
            .unwrap_or_else(|| "your mail administrators".into()),
    };
    let redis = match l.store.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("memory", _)) => None,
        Some(("redis", _)) => Some(redis(l, p)?),
        Some((other, span)) => {
            return Err(p.invalid(
                span,
                "limits.store",
                format!("`{other}` is not \"memory\" or \"redis\""),
            ));
        }
    };
    let store = StoreSettings {
        redis,
        lock_file: base.join(l.lock_file.as_deref().unwrap_or("locks.json")),
    };
    Ok((policy, store))
}

/// `[limits.redis]`.
pub(super) fn redis(l: &RawLimits, p: Place) -> Result<RedisConfig, FileError> {
    let r = l.redis.as_ref();
    let on_failure = p.choose(
        r.and_then(|r| r.on_failure.as_ref()),
        "limits.redis.on_failure",
        &[
            ("fail_open", OnFailure::FailOpen),
            ("fail_closed", OnFailure::FailClosed),
        ],
    )?;
    let sentinels: Vec<String> = r
        .and_then(|r| r.sentinels.as_ref())
        .into_iter()
        .flatten()
        .map(|s| {
            use redis::IntoConnectionInfo;
            let url = s.get_ref();
            let url = if url.contains("://") {
                url.clone()
            } else {
                format!("redis://{url}")
            };
            match url.as_str().into_connection_info() {
                Ok(_) => Ok(url),
                Err(e) => Err(p.invalid(
                    s.span(),
                    "limits.redis.sentinels",
                    format!("`{}` is not a sentinel address: {e}", s.get_ref()),
                )),
            }
        })
        .collect::<Result<_, _>>()?;
    let master_name = match r.and_then(|r| r.master_name.as_ref()) {
        Some(name) if name.get_ref().trim().is_empty() => {
            return Err(p.invalid(
                name.span(),
                "limits.redis.master_name",
                "must not be empty".into(),
            ));
        }
        Some(name) => name.get_ref().clone(),
        None if !sentinels.is_empty() => {
            return Err(p.invalid(
                r.and_then(|r| r.sentinels.as_ref())
                    .and_then(|s| s.first())
                    .map(|s| s.span())
                    .unwrap_or(0..0),
                "limits.redis.master_name",
                "is needed with sentinels: the name the sentinels monitor".into(),
            ));
        }
        None => String::new(),
    };
    let timeout_ms = match r {
        Some(r) => p.number(&r.timeout_ms, "limits.redis.timeout_ms", REDIS_TIMEOUT_MS)?,
        None => None,
    };
    Ok(RedisConfig {
        url: r
            .and_then(|r| r.url.clone())
            .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()),
        prefix: r
            .and_then(|r| r.prefix.clone())
            .unwrap_or_else(|| "relayguard:".into()),
        timeout: Duration::from_millis(timeout_ms.unwrap_or(50)),
        on_failure,
        sentinels,
        master_name,
    })
}
