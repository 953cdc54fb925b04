//! The audit trail: one JSON record per decision, the append-only writer, and reports.
//!
//! Reason codes are stable: `ok` (accepted), the policy codes (`sender_not_owned`,
//! `foreign_sender`, `auth_required`, `recipient_not_protected`, `from_missing`,
//! `ambiguous_header`, `malformed_address`), and `internal_error`, `no_dkim_key`,
//! `audit_unwritable` for tempfails.

pub mod chain;
pub mod coverage;
pub mod files;
pub mod html;
pub mod report;
pub mod retention;
pub mod verdict;
pub mod verify;
pub mod witness;
pub mod writer;

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What happened to the message (or recipient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Accepted (signed or not).
    Accept,
    /// Refused with a 5xx reply.
    Reject,
    /// Refused with a 4xx reply.
    Tempfail,
    /// Refused because the account is locked.
    Lock,
}

/// One DKIM signature applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord<'a> {
    /// `d=`.
    #[serde(borrow)]
    pub domain: Cow<'a, str>,
    /// `s=`.
    #[serde(borrow)]
    pub selector: Cow<'a, str>,
    /// `a=`.
    #[serde(borrow)]
    pub algorithm: Cow<'a, str>,
}

/// The senders a robot's automatic message had before it was masqueraded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasqueradedRecord<'a> {
    /// The envelope sender as given, when it was rewritten.
    #[serde(borrow, default)]
    pub mail_from: Option<Cow<'a, str>>,
    /// The From address, when it was rewritten.
    #[serde(borrow, default)]
    pub from: Option<Cow<'a, str>>,
    /// The Sender address, when it was rewritten.
    #[serde(borrow, default)]
    pub sender: Option<Cow<'a, str>>,
}

/// One audit record. Borrowed fields keep report parsing cheap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<'a> {
    /// RFC 3339, UTC.
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    /// The relay host that decided.
    #[serde(borrow)]
    pub host: Cow<'a, str>,
    /// MTA queue id, when known.
    #[serde(borrow, default)]
    pub queue_id: Option<Cow<'a, str>>,
    /// Client IP address, when known.
    #[serde(borrow, default)]
    pub client: Option<Cow<'a, str>>,
    /// `authenticated`, `internal` or `external`.
    #[serde(borrow)]
    pub client_class: Cow<'a, str>,
    /// SASL login, if any.
    #[serde(borrow, default)]
    pub login: Option<Cow<'a, str>>,
    /// Envelope sender as given (`<>` for the null sender).
    #[serde(borrow, default)]
    pub mail_from: Option<Cow<'a, str>>,
    /// Header From address, when parsed.
    #[serde(borrow, default)]
    pub header_from: Option<Cow<'a, str>>,
    /// Header Sender address, when present.
    #[serde(borrow, default)]
    pub header_sender: Option<Cow<'a, str>>,
    /// Number of accepted recipients.
    pub rcpt_count: usize,
    /// Recipient domains (sorted, unique).
    #[serde(borrow, default)]
    pub rcpt_domains: Vec<Cow<'a, str>>,
    /// Full recipients, only when configured.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub rcpts: Vec<Cow<'a, str>>,
    /// Message size in bytes, when known.
    #[serde(default)]
    pub size: Option<u64>,
    /// The verdict.
    pub verdict: Verdict,
    /// Stable reason code.
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
    /// Reason text (the SMTP reply for refusals).
    #[serde(borrow)]
    pub text: Cow<'a, str>,
    /// Signatures applied.
    #[serde(borrow, default)]
    pub dkim: Vec<SignatureRecord<'a>>,
    /// The original senders of a masqueraded message.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub masqueraded: Option<MasqueradedRecord<'a>>,
    /// A refusal recorded in monitor mode: the message was not refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub monitor: bool,
    /// The stolen-account signals, when the login's class acted on them: `action`, `score`,
    /// `fired` (which signals, with values and thresholds) and every `signals` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abuse: Option<serde_json::Value>,
    /// Limit counters that mattered (name -> value).
    #[serde(
        borrow,
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub limits: std::collections::BTreeMap<Cow<'a, str>, u64>,
}

/// The host name for records.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Splits recipients into sorted unique domains (privacy default) and, optionally, full addresses.
pub fn recipient_fields(
    rcpts: &[impl AsRef<str>],
    full: bool,
) -> (Vec<Cow<'static, str>>, Vec<Cow<'static, str>>) {
    let mut domains: Vec<String> = rcpts
        .iter()
        .map(|r| {
            r.as_ref()
                .trim_matches(['<', '>'])
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default()
        })
        .collect();
    domains.sort();
    domains.dedup();
    let full = if full {
        rcpts
            .iter()
            .map(|r| Cow::Owned(r.as_ref().trim_matches(['<', '>']).to_string()))
            .collect()
    } else {
        Vec::new()
    };
    (domains.into_iter().map(Cow::Owned).collect(), full)
}
