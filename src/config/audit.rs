//! `[audit]`: where decisions are recorded, how durably, sealed and kept.

use super::values::Number;
use crate::audit::writer::{AuditConfig, Checkpoints, Destination, Fsync, OnError};
use crate::tomlfile::{FileError, Place};
use serde::Deserialize;
use std::ops::RangeInclusive;
use std::path::Path;
use toml::Spanned;

// The documented range of each number (docs/configuration.md, relayguard.toml(5)); values outside are
// errors, so no setting can overflow arithmetic or a runtime structure.
const AUDIT_CHECKPOINT_MINUTES: RangeInclusive<u64> = 1..=1_440;
const AUDIT_RETENTION_DAYS: RangeInclusive<u64> = 1..=36_500;

/// `[audit]` as written (serde; unknown keys are errors).
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

/// `[audit]`.
pub(super) fn audit(a: &RawAudit, p: Place, base: &Path) -> Result<AuditConfig, FileError> {
    let fsync = p.choose(
        a.fsync.as_ref(),
        "audit.fsync",
        &[
            ("none", Fsync::Never),
            ("always", Fsync::Always),
            ("periodic", Fsync::Periodic),
        ],
    )?;
    let on_error = p.choose(
        a.on_error.as_ref(),
        "audit.on_error",
        &[
            ("tempfail", OnError::Tempfail),
            ("continue", OnError::Continue),
        ],
    )?;
    let destination = match a.file.as_deref() {
        None | Some("-") => Destination::Stdout,
        Some(f) => Destination::File(base.join(f)),
    };
    let every_minutes = p.number(
        &a.checkpoint_minutes,
        "audit.checkpoint_minutes",
        AUDIT_CHECKPOINT_MINUTES,
    )?;
    if a.checkpoint_key.is_none()
        && let Some(witness) = &a.witness_file
    {
        return Err(p.invalid(
            witness.span(),
            "audit.witness_file",
            "needs audit.checkpoint_key (a witness keeps copies of the checkpoints)".into(),
        ));
    }
    let checkpoints = match (&a.checkpoint_key, every_minutes) {
        (Some(key), minutes) => Some(Checkpoints {
            key_file: base.join(key),
            every_minutes: minutes.unwrap_or(60) as u32,
            witness_file: a.witness_file.as_ref().map(|w| base.join(w.get_ref())),
        }),
        (None, Some(_)) => {
            return Err(p.invalid(
                a.checkpoint_minutes.as_ref().map_or(0..0, |k| k.span()),
                "audit.checkpoint_minutes",
                "needs audit.checkpoint_key (make one with `relayguard audit keygen`)".into(),
            ));
        }
        (None, None) => None,
    };
    Ok(AuditConfig {
        destination,
        fsync,
        on_error,
        full_recipients: a.full_recipients.unwrap_or(false),
        checkpoints,
        retention_days: p
            .number(
                &a.retention_days,
                "audit.retention_days",
                AUDIT_RETENTION_DAYS,
            )?
            .map(|d| d as u32),
    })
}
