//! `[rollout]`: which refusals are sent and which only recorded (monitor mode).

use crate::policy::senders::LoginRules;
use crate::session::rollout::{Mode, Rollout};
use crate::tomlfile::{FileError, Place};
use serde::Deserialize;
use toml::Spanned;

/// `[rollout]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pub(super) mode: Option<Spanned<String>>,
    pub(super) monitor_logins: Option<Vec<String>>,
    pub(super) monitor_classes: Option<Vec<String>>,
    pub(super) would_refuse_header: Option<Spanned<String>>,
}

/// `[rollout]`: enforce, or monitor (globally or for some logins and classes).
pub(super) fn rollout(r: &RawRollout, p: Place, logins: &LoginRules) -> Result<Rollout, FileError> {
    let header = match &r.would_refuse_header {
        None => Some("X-Relayguard-Would-Refuse".to_string()),
        Some(h) if h.get_ref().is_empty() => None,
        Some(h) => {
            let name = h.get_ref();
            if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(p.invalid(
                    h.span(),
                    "rollout.would_refuse_header",
                    format!("`{name}` is not a header field name (or \"\" for none)"),
                ));
            }
            Some(name.clone())
        }
    };
    Ok(Rollout {
        mode: p.choose(
            r.mode.as_ref(),
            "rollout.mode",
            &[("enforce", Mode::Enforce), ("monitor", Mode::Monitor)],
        )?,
        monitor_logins: r
            .monitor_logins
            .iter()
            .flatten()
            .map(|l| logins.normalise(l))
            .collect(),
        monitor_classes: r.monitor_classes.clone().unwrap_or_default(),
        header,
    })
}
