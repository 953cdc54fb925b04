//! The schema of `relayguard.toml` as serde reads it (unknown keys are errors), and the
//! documented range of every number.

use crate::limits::ClassLimits;
use crate::tomlfile::{FileError, Place};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) milter: RawMilter,
    #[serde(default)]
    pub(super) domains: RawDomains,
    #[serde(default)]
    pub(super) senders: RawSenders,
    #[serde(default)]
    pub(super) clients: RawClients,
    pub(super) dkim: Option<RawDkim>,
    pub(super) audit: Option<RawAudit>,
    pub(super) metrics: Option<RawMetrics>,
    pub(super) limits: Option<RawLimits>,
    #[serde(default)]
    pub(super) rollout: RawRollout,
    pub(super) cluster: Option<RawCluster>,
    pub(super) abuse: Option<RawAbuse>,
}

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignal {
    pub(super) above: Option<Spanned<f64>>,
    pub(super) weight: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) host_name: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pub(super) mode: Option<Spanned<String>>,
    pub(super) monitor_logins: Option<Vec<String>>,
    pub(super) monitor_classes: Option<Vec<String>>,
    pub(super) would_refuse_header: Option<Spanned<String>>,
}

/// A numeric setting as written, with its place for errors.
pub(super) type Number = Option<Spanned<u64>>;

/// The documented range of every numeric setting (README, relayguard.toml(5)); values
/// outside are errors, so no setting can overflow arithmetic or a runtime structure.
pub(super) mod range {
    use std::ops::RangeInclusive;
    pub const MAX_CONNECTIONS: RangeInclusive<u64> = 1..=65_536;
    pub const SHUTDOWN_TIMEOUT_SECS: RangeInclusive<u64> = 0..=3_600;
    pub const IDLE_TIMEOUT_SECS: RangeInclusive<u64> = 1..=7_200;
    pub const MESSAGE_TIMEOUT_SECS: RangeInclusive<u64> = 10..=86_400;
    pub const EXPIRY_DAYS: RangeInclusive<u64> = 0..=3_650;
    pub const MIN_PUBLISH_LEAD_HOURS: RangeInclusive<u64> = 0..=8_760;
    pub const REDIS_TIMEOUT_MS: RangeInclusive<u64> = 1..=60_000;
    pub const LOCK_COUNT: RangeInclusive<u64> = 1..=1_000_000;
    pub const OWNERSHIP_WINDOW_MINUTES: RangeInclusive<u64> = 1..=10_080;
    pub const CONNECTIONS_PER_SECOND: RangeInclusive<u64> = 1..=1_000;
    pub const MESSAGES_PER_CONNECTION: RangeInclusive<u64> = 1..=1_000_000;
    pub const MESSAGES_PER_HOUR: RangeInclusive<u64> = 1..=3_600_000;
    pub const RECIPIENTS_PER_MESSAGE: RangeInclusive<u64> = 1..=100_000;
    pub const AUTHENTICATIONS_PER_WINDOW: RangeInclusive<u64> = 1..=1_000_000;
    pub const OWN_NAME_PARENTS: RangeInclusive<u64> = 0..=5;
    pub const DNS_RECHECK_MINUTES: RangeInclusive<u64> = 1..=1_440;
    pub const DNS_TIMEOUT_MS: RangeInclusive<u64> = 100..=30_000;
    pub const DNS_TTL: RangeInclusive<u64> = 30..=86_400;
    pub const REMOVE_AFTER_DAYS: RangeInclusive<u64> = 0..=365;
    pub const ROTATION_EVERY_DAYS: RangeInclusive<u64> = 1..=3_650;
    pub const ROTATION_LEAD_DAYS: RangeInclusive<u64> = 1..=365;
    pub const ROTATION_OVERLAP_DAYS: RangeInclusive<u64> = 0..=365;
    pub const KEY_BITS: RangeInclusive<u64> = 2_048..=4_096;
    pub const ABUSE_IPV4_PREFIX: RangeInclusive<u64> = 8..=32;
    pub const ABUSE_IPV6_PREFIX: RangeInclusive<u64> = 16..=128;
    pub const ABUSE_NEW_RECIPIENT_DAYS: RangeInclusive<u64> = 2..=365;
    pub const ABUSE_BASELINE_DAYS: RangeInclusive<u64> = 1..=365;
    pub const ABUSE_NOTIFY_TIMEOUT_SECS: RangeInclusive<u64> = 1..=300;
    pub const AUDIT_CHECKPOINT_MINUTES: RangeInclusive<u64> = 1..=1_440;
    pub const AUDIT_RETENTION_DAYS: RangeInclusive<u64> = 1..=36_500;
    pub const LDAP_TTL_SECS: RangeInclusive<u64> = 0..=86_400;
    pub const LDAP_MAX_STALE_SECS: RangeInclusive<u64> = 0..=604_800;
    pub const LDAP_CACHE_SIZE: RangeInclusive<u64> = 1..=10_000_000;
    pub const LDAP_POOL_SIZE: RangeInclusive<u64> = 1..=32;
}

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
                range::CONNECTIONS_PER_SECOND,
            )?,
            messages_per_connection: n(
                &self.messages_per_connection,
                "messages_per_connection",
                range::MESSAGES_PER_CONNECTION,
            )?,
            messages_per_hour: n(
                &self.messages_per_hour,
                "messages_per_hour",
                range::MESSAGES_PER_HOUR,
            )?,
            recipients_per_message: n(
                &self.recipients_per_message,
                "recipients_per_message",
                range::RECIPIENTS_PER_MESSAGE,
            )?,
            authentications_per_window: n(
                &self.authentications_per_window,
                "authentications_per_window",
                range::AUTHENTICATIONS_PER_WINDOW,
            )?,
        })
    }
}

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLock {
    pub(super) ownership_refusals: Number,
    pub(super) ownership_window_minutes: Number,
    pub(super) limit_hits_per_day: Number,
}

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) file: Option<String>,
    pub(super) fsync: Option<Spanned<String>>,
    pub(super) on_error: Option<Spanned<String>>,
    pub(super) full_recipients: Option<bool>,
    pub(super) checkpoint_key: Option<String>,
    pub(super) checkpoint_minutes: Number,
    pub(super) witness_file: Option<Spanned<String>>,
    pub(super) retention_days: Number,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkim {
    pub(super) selectors: Option<String>,
    pub(super) keys_dir: Option<String>,
    pub(super) headers: Option<Spanned<Vec<String>>>,
    pub(super) oversign: Option<Spanned<Vec<String>>>,
    pub(super) expiry_days: Number,
    pub(super) without_key: Option<Spanned<String>>,
    pub(super) allow_unsafe_key_permissions: Option<bool>,
    pub(super) min_publish_lead_hours: Number,
    pub(super) signing_domains: Option<std::collections::BTreeMap<String, Spanned<String>>>,
    pub(super) require_dns: Option<bool>,
    pub(super) dns: Option<RawDkimDns>,
    pub(super) publish: Option<Spanned<RawDkimPublish>>,
    pub(super) rotation: Option<Spanned<RawDkimRotation>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkimPublish {
    pub(super) server: Spanned<String>,
    pub(super) key_file: Spanned<String>,
    pub(super) zones: Option<Vec<Spanned<String>>>,
    pub(super) ttl: Number,
    pub(super) remove_after_days: Number,
    pub(super) automatic: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkimRotation {
    pub(super) every_days: Number,
    pub(super) algorithms: Option<Vec<Spanned<String>>>,
    pub(super) lead_days: Number,
    pub(super) overlap_days: Number,
    pub(super) key_bits: Number,
    pub(super) leader: Option<bool>,
    pub(super) selector_prefix: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDkimDns {
    pub(super) nameservers: Option<Vec<Spanned<String>>>,
    pub(super) recheck_minutes: Number,
    pub(super) timeout_ms: Number,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMilter {
    pub(super) socket: Option<Spanned<String>>,
    pub(super) socket_mode: Option<Spanned<String>>,
    pub(super) socket_owner: Option<String>,
    pub(super) socket_group: Option<String>,
    pub(super) max_connections: Number,
    pub(super) shutdown_timeout_secs: Number,
    pub(super) idle_timeout_secs: Number,
    pub(super) message_timeout_secs: Number,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomains {
    pub(super) protected: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSenders {
    pub(super) login_map: Option<Spanned<String>>,
    pub(super) own_local_part: Option<bool>,
    pub(super) robots: Option<Vec<String>>,
    pub(super) realms: Option<Vec<Spanned<String>>>,
    pub(super) allow_foreign: Option<bool>,
    pub(super) recipient_delimiter: Option<Spanned<String>>,
    pub(super) original_header: Option<Spanned<String>>,
    pub(super) masquerade: Option<std::collections::BTreeMap<String, Spanned<RawMasquerade>>>,
    pub(super) sources: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[senders.ldap]`: relayguard's own keys and ldap_table(5) keys, read by hand so that
    /// an unsupported ldap_table key gets ldap_table's error, not serde's.
    pub(super) ldap: Option<Spanned<std::collections::BTreeMap<String, Spanned<toml::Value>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMasquerade {
    pub(super) address: Spanned<String>,
    pub(super) from: Spanned<Vec<String>>,
    pub(super) display_name: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClients {
    pub(super) internal_networks: Option<Vec<Spanned<String>>>,
    pub(super) allow_wide_internal_networks: Option<bool>,
    pub(super) require_name: Option<Spanned<String>>,
    pub(super) own_name_parents: Number,
    pub(super) status_senders: Option<Vec<Spanned<String>>>,
}
