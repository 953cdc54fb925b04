//! Decisions: what a check decided, and the one place that turns a decision into the SMTP
//! reply, the audit record, the metrics and the log line.

use super::{Connection, Env, Transaction};
use crate::audit::writer::OnError;
use crate::audit::{MasqueradedRecord, Record, SignatureRecord, Verdict, recipient_fields};
use crate::dkim::signer::MadeSignature;
use crate::metrics::{KeyLabels, LimitLabels, ReasonLabels, VerdictLabels};
use crate::policy::Refusal;
use std::borrow::Cow;

/// An SMTP reply: code, enhanced status code, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `550`, `451`, ...
    pub code: &'static str,
    /// `5.7.1`, `4.3.0`, ...
    pub status: &'static str,
    /// The text (made safe for SMTP when sent).
    pub text: String,
}

impl Reply {
    /// Whether the MTA should try again later (a 4xx reply).
    pub fn is_temporary(&self) -> bool {
        self.code.starts_with('4')
    }

    /// `451 4.3.0 temporary local problem (why), try again later`: an internal fault.
    pub fn fault(why: &str) -> Self {
        Reply {
            code: "451",
            status: "4.3.0",
            text: format!("temporary local problem ({why}), try again later"),
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

/// What the client is told of an internal fault, by reason code.
fn plain(reason: &str) -> &'static str {
    match reason {
        "ownership_unavailable" => "sender ownership cannot be checked now",
        "store_unavailable" => "sending limits cannot be checked now",
        "no_dkim_key" => "no signing key available",
        "audit_unwritable" => "audit log unwritable",
        _ => "internal error",
    }
}

/// How a refusal counts toward locking the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// A sender-ownership refusal.
    Ownership,
    /// Any other refusal of a whole message, or a limit hit.
    Other,
}

/// One decision about a message (or one of its recipients).
#[derive(Debug, Clone)]
pub struct Decision {
    /// Accept, reject, tempfail or lock.
    pub verdict: Verdict,
    /// The stable reason code.
    pub reason: Cow<'static, str>,
    /// What the MTA hears; `None` for an acceptance.
    pub reply: Option<Reply>,
    /// The audit record's text (the reply for refusals, a note for acceptances, the cause
    /// for internal faults).
    pub text: String,
    /// The recipient this decision is about, when it refuses only one.
    pub rcpt: Option<String>,
    /// Signatures made (acceptances).
    pub signatures: Vec<MadeSignature>,
    /// The limit that was hit, if one was.
    pub limit: Option<&'static str>,
    /// How the refusal counts toward an account lock, if it does.
    pub abuse: Option<Abuse>,
    /// An internal fault or the shutdown: sent even in monitor mode (it is not a policy
    /// refusal).
    pub operational: bool,
    /// Recorded in monitor mode: the refusal was not sent.
    pub monitored: bool,
}

impl Decision {
    /// Accepts the message with these signatures; `note` goes to the audit record.
    pub fn accept(note: impl Into<String>, signatures: Vec<MadeSignature>) -> Self {
        Decision {
            verdict: Verdict::Accept,
            reason: Cow::Borrowed("ok"),
            reply: None,
            text: note.into(),
            rcpt: None,
            signatures,
            limit: None,
            abuse: None,
            operational: false,
            monitored: false,
        }
    }

    /// Refuses with `reply` (reject for 5xx, tempfail for 4xx) for `reason`.
    pub fn refuse(reason: impl Into<Cow<'static, str>>, reply: Reply) -> Self {
        Decision {
            verdict: if reply.is_temporary() {
                Verdict::Tempfail
            } else {
                Verdict::Reject
            },
            reason: reason.into(),
            text: reply.to_string(),
            reply: Some(reply),
            rcpt: None,
            signatures: Vec::new(),
            limit: None,
            abuse: None,
            operational: false,
            monitored: false,
        }
    }

    /// A policy refusal, with its SMTP codes and stable reason.
    pub fn policy(refusal: &Refusal) -> Self {
        let (code, status) = refusal.smtp_codes();
        Self::refuse(
            refusal.reason.code(),
            Reply {
                code,
                status,
                text: refusal.text.clone(),
            },
        )
    }

    /// An internal fault: `451 4.3.0` with a plain reason for the client (no host, port or
    /// system error), the cause in the audit record and the log.
    pub fn fault(reason: &'static str, why: String) -> Self {
        Decision {
            verdict: Verdict::Tempfail,
            reason: Cow::Borrowed(reason),
            reply: Some(Reply::fault(plain(reason))),
            text: why,
            rcpt: None,
            signatures: Vec::new(),
            limit: None,
            abuse: None,
            operational: true,
            monitored: false,
        }
    }

    /// Whether monitor mode records this decision instead of sending it: a refusal by
    /// policy, limits or a lock (never an acceptance, a fault or the shutdown).
    pub fn monitorable(&self) -> bool {
        self.verdict != Verdict::Accept && !self.operational
    }

    /// The same decision about one recipient only.
    pub fn for_rcpt(mut self, rcpt: &str) -> Self {
        self.rcpt = Some(rcpt.to_string());
        self
    }

    /// The same decision, counting toward an account lock as `abuse`.
    pub fn counting(mut self, abuse: Abuse) -> Self {
        self.abuse = Some(abuse);
        self
    }
}

/// A change the MTA makes to an accepted message (milter CHGFROM, CHGHEADER, ADDHEADER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modification {
    /// Replace the envelope sender (`<address>`).
    ChangeSender(String),
    /// Replace the `index`th (1-based) header field called `name`.
    ChangeHeader {
        /// The field name.
        name: String,
        /// Which of the fields of that name.
        index: i32,
        /// The new value.
        value: String,
    },
    /// Append a header field.
    AddHeader {
        /// The field name.
        name: String,
        /// The value.
        value: String,
    },
}

/// An accepted message: the signatures to insert and the changes to make.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// DKIM-Signature header values, inserted on top.
    pub signatures: Vec<MadeSignature>,
    /// Changes the MTA makes (masquerading, the monitor-mode header).
    pub modifications: Vec<Modification>,
}

/// What the MTA is told at a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Go on.
    Continue,
    /// Accept the message with these signatures and changes.
    Accept(Accepted),
    /// Refuse (the message, or the recipient at RCPT).
    Refuse(Reply),
}

/// What the MTA hears of a delivered decision (the signatures stay in the decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Accept, with the decision's signatures.
    Accept,
    /// Refuse with this reply.
    Refuse(Reply),
}

/// Delivers a decision: audit record, log line, metrics; returns what the MTA hears. An
/// acceptance whose record cannot be written, where no mail may leave unaudited, becomes
/// the tempfail the MTA hears, and is logged and counted as one.
pub fn deliver(d: &Decision, conn: &Connection, tx: &Transaction, env: &Env) -> Delivered {
    let written = audit(d, conn, tx, env);
    let unaudited = !written
        && d.verdict == Verdict::Accept
        && env
            .audit
            .as_ref()
            .is_some_and(|a| a.on_error() == OnError::Tempfail);
    let (verdict, reason) = if unaudited {
        ("tempfail", "audit_unwritable")
    } else {
        (verdict_name(d.verdict), &*d.reason)
    };
    let dkim: Vec<String> = d
        .signatures
        .iter()
        .map(|s| format!("d={} s={} a={}", s.domain, s.selector, s.algorithm))
        .collect();
    tracing::info!(
        queue_id = %tx.queue_id.as_deref().unwrap_or("-"),
        client = %conn.name,
        class = tx.kind.name(),
        login = %tx.login_as_given(),
        mail_from = %tx.mail_from,
        from = %tx.from.as_deref().unwrap_or(""),
        rcpts = tx.rcpts.len(),
        rcpt = %d.rcpt.as_deref().unwrap_or(""),
        verdict,
        reason = %reason,
        dkim = %dkim.join(", "),
        text = %d.text,
        monitor = d.monitored,
        masqueraded = tx.masqueraded.is_some(),
        "decision"
    );
    let metrics = &env.metrics;
    metrics
        .messages
        .get_or_create(&VerdictLabels {
            verdict: verdict.into(),
            reason: reason.to_string(),
        })
        .inc();
    if d.monitored {
        metrics
            .would_refuse
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }
    if d.verdict == Verdict::Accept && tx.masqueraded.is_some() && !unaudited {
        metrics.masqueraded.inc();
    }
    if let Some(limit) = d.limit {
        metrics
            .limit_hits
            .get_or_create(&LimitLabels {
                limit: limit.into(),
            })
            .inc();
    }
    if unaudited {
        return Delivered::Refuse(Reply::fault("audit log unwritable"));
    }
    for s in &d.signatures {
        let labels = KeyLabels {
            domain: s.domain.clone(),
            selector: s.selector.clone(),
            algorithm: s.algorithm.tag().into(),
        };
        metrics.signatures.get_or_create(&labels).inc();
    }
    match &d.reply {
        None => Delivered::Accept,
        Some(reply) => Delivered::Refuse(reply.clone()),
    }
}

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Accept => "accept",
        Verdict::Reject => "reject",
        Verdict::Tempfail => "tempfail",
        Verdict::Lock => "lock",
    }
}

/// Writes the audit record of a decision; `true` when written (or no audit log is set).
fn audit(d: &Decision, conn: &Connection, tx: &Transaction, env: &Env) -> bool {
    let Some(audit) = &env.audit else {
        return true;
    };
    let full_recipients = audit.full_recipients();
    let (rcpt_count, (rcpt_domains, full)) = match &d.rcpt {
        Some(r) => (1, recipient_fields(&[r], full_recipients)),
        None => (tx.rcpts.len(), recipient_fields(&tx.rcpts, full_recipients)),
    };
    let record = Record {
        time: Cow::Owned(crate::clock::rfc3339_ms((env.clock)())),
        host: Cow::Borrowed(&env.host),
        queue_id: tx.queue_id.as_deref().map(Cow::Borrowed),
        client: conn.addr.map(|a| Cow::Owned(a.to_string())),
        client_class: Cow::Borrowed(tx.kind.name()),
        login: tx.login().map(|(given, _)| Cow::Borrowed(given)),
        mail_from: Some(Cow::Borrowed(&tx.mail_from)),
        header_from: tx.from.as_deref().map(Cow::Borrowed),
        header_sender: tx.sender.as_deref().map(Cow::Borrowed),
        rcpt_count,
        rcpt_domains,
        rcpts: full,
        size: (tx.size > 0).then_some(tx.size),
        verdict: d.verdict,
        reason: Cow::Borrowed(&d.reason),
        text: Cow::Borrowed(&d.text),
        dkim: d
            .signatures
            .iter()
            .map(|s| SignatureRecord {
                domain: Cow::Borrowed(&s.domain),
                selector: Cow::Borrowed(&s.selector),
                algorithm: Cow::Borrowed(s.algorithm.tag()),
            })
            .collect(),
        limits: tx
            .used
            .iter()
            .map(|(k, v)| (Cow::Borrowed(*k), *v))
            .collect(),
        masqueraded: tx.masqueraded.as_ref().map(|m| MasqueradedRecord {
            mail_from: m.mail_from.as_deref().map(Cow::Borrowed),
            from: m.from.as_deref().map(Cow::Borrowed),
            sender: m.sender.as_deref().map(Cow::Borrowed),
        }),
        monitor: d.monitored,
        abuse: tx.abuse.as_ref().map(|a| {
            serde_json::json!({
                "action": a.action.name(),
                "score": a.score.total,
                "fired": a.score.reason(),
                "signals": a.signals,
            })
        }),
    };
    let written = audit.write(&record).is_ok();
    if !written {
        env.metrics.audit_failures.inc();
    }
    written
}
