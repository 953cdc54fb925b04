//! `relayguard explain`: a decision and its reasons for a hypothetical transaction, no socket.

use crate::policy::address::Address;
use crate::policy::mailbox::HeaderSet;
use crate::policy::senders::{Ownership, SourceDown};
use crate::policy::{Client, Policy, Request};
use crate::session::Snapshot;
use std::fmt::Write;
use std::net::IpAddr;

/// Splits a message's header block into fields as an MTA passes them to a milter: the name
/// as written (without the colon) and the value without its first leading space,
/// continuation lines kept with their line breaks.
pub fn split_header_block(raw: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            break;
        }
        if (content[0] == b' ' || content[0] == b'\t')
            && let Some((_, value)) = fields.last_mut()
        {
            value.extend_from_slice(b"\r\n");
            value.extend_from_slice(content);
            continue;
        }
        match content.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &content[colon + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                fields.push((content[..colon].to_vec(), value.to_vec()));
            }
            // Not a header line: the MTA would end the header block here.
            None => break,
        }
    }
    fields
}

/// What `explain` was asked about.
#[derive(Debug, Clone, Default)]
pub struct Question {
    /// SASL login, if the session authenticated.
    pub login: Option<String>,
    /// Client IP address.
    pub client: Option<IpAddr>,
    /// The client's forward-confirmed host name (`{client_name}`), if it has one.
    pub client_name: Option<String>,
    /// MAIL FROM address, with or without angle brackets; empty for `<>`.
    pub mail_from: String,
    /// RCPT TO addresses.
    pub rcpts: Vec<String>,
    /// The raw message, if given.
    pub message: Option<Vec<u8>>,
}

fn bracket(address: &str) -> String {
    if address.starts_with('<') {
        address.to_string()
    } else {
        format!("<{address}>")
    }
}

/// Whether the rollout only records this client's refusals (monitor mode), in words.
pub fn explain_rollout(
    rollout: &crate::session::rollout::Rollout,
    limits: Option<&crate::limits::LimitsPolicy>,
    policy: &Policy,
    question: &Question,
    daemon_name: Option<&str>,
) -> String {
    let login = question
        .login
        .as_deref()
        .map(|l| policy.logins.normalise(l));
    let internal = question.client.is_some_and(|c| policy.is_internal(c));
    if rollout.monitors_client(limits, daemon_name, login.as_deref(), internal) {
        "mode: monitor: a refusal is recorded, not sent; the message would pass unsigned\n".into()
    } else {
        "mode: enforce\n".into()
    }
}

/// The limits that apply to the client and which of them this transaction alone breaks.
pub fn explain_limits(
    limits: &crate::limits::LimitsPolicy,
    policy: &Policy,
    question: &Question,
    daemon_name: Option<&str>,
) -> String {
    let login = question
        .login
        .as_deref()
        .map(|l| policy.logins.normalise(l));
    let internal = question.client.is_some_and(|c| policy.is_internal(c));
    let (class, l) = limits.class(daemon_name, login.as_deref(), internal);
    let mut out = format!("limits: class {class}");
    let show = |name: &str, v: Option<u64>| v.map(|v| format!("{name} {v}"));
    let list: Vec<String> = [
        show("connections_per_second", l.connections_per_second),
        show("messages_per_connection", l.messages_per_connection),
        show("messages_per_hour", l.messages_per_hour),
        show("recipients_per_message", l.recipients_per_message),
        show("authentications_per_window", l.authentications_per_window),
    ]
    .into_iter()
    .flatten()
    .collect();
    let _ = writeln!(
        out,
        ": {}",
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    );
    let n = question.rcpts.len() as u64;
    if let Err(hit) = crate::limits::check_recipient(&l, n) {
        let _ = writeln!(
            out,
            "RCPT TO: recipients {} and later would get: {} {} {}",
            hit.max + 1,
            hit.reply("").0,
            hit.reply("").1,
            hit.reply("").2
        );
    }
    out
}

/// Decides and explains with the snapshot's ownership sources (a directory is asked);
/// returns the report and whether the message would be accepted.
pub async fn explain(snapshot: &Snapshot, question: &Question) -> (String, bool) {
    let mail_from = bracket(&question.mail_from);
    let rcpts: Vec<String> = question.rcpts.iter().map(|r| bracket(r)).collect();
    let headers = question.message.as_ref().map(|raw| {
        let mut set = HeaderSet::default();
        for (name, value) in split_header_block(raw) {
            set.add(&name, &value);
        }
        set
    });
    let request = Request {
        client: Client {
            addr: question.client,
            login: question.login.as_deref(),
            name: crate::policy::hosts::HostName {
                verified: question.client_name.as_deref(),
                reverse: question.client_name.as_deref(),
            },
        },
        mail_from: &mail_from,
        rcpts: rcpts.iter().map(String::as_str).collect(),
        headers,
    };
    let decision = match decide(snapshot, &request).await {
        Ok(decision) => decision,
        Err(report) => return (report, false),
    };
    (render(question, &decision), decision.outcome.is_ok())
}

/// Decides, asks the sources about every address the decision needed but had no answer
/// for, and decides again, until it needs nothing new (a refusal at MAIL FROM hides the
/// header addresses until MAIL FROM passes). A source that cannot answer ends it: the
/// report says what the MTA would hear.
async fn decide(
    snapshot: &Snapshot,
    request: &Request<'_>,
) -> Result<crate::policy::Decision, String> {
    let policy = &snapshot.policy;
    let mut known = Known::default();
    loop {
        let decision = policy.decide_with(request, &known);
        let (owned, claimed) = (known.asked_owned.take(), known.asked_claims.take());
        if owned.is_empty() && claimed.is_empty() {
            return Ok(decision);
        }
        let failed = |address: &Address, down: SourceDown| {
            let reply = crate::session::decision::Decision::fault(
                "ownership_unavailable",
                down.to_string(),
            )
            .reply
            .map(|r| r.to_string())
            .unwrap_or_default();
            format!("ownership of <{address}>: {down}\nverdict: tempfail: {reply}\n")
        };
        for (login, address) in owned {
            match snapshot.ownership.ownership(&login, &address).await {
                Ok(ownership) => known.owned.push((login, address.canonical(), ownership)),
                Err(down) => return Err(failed(&address, down)),
            }
        }
        for address in claimed {
            match snapshot.ownership.claim(&address).await {
                Ok(claim) => known.claims.push((address.canonical(), claim)),
                Err(down) => return Err(failed(&address, down)),
            }
        }
    }
}

/// The report of a decision: the client, each field checked, the verdict.
fn render(question: &Question, decision: &crate::policy::Decision) -> String {
    let mut out = String::new();
    let client = question
        .client
        .map(|c| c.to_string())
        .unwrap_or_else(|| "unknown".into());
    let _ = writeln!(out, "client {client}: {}", decision.kind.name());
    if let crate::policy::ClientKind::Internal { host } = &decision.kind {
        let _ = writeln!(
            out,
            "host name: {}",
            host.as_deref().unwrap_or("none (give --client-name)")
        );
    }
    if let crate::policy::ClientKind::Authenticated { given, login } = &decision.kind {
        let _ = writeln!(out, "login {given} (matched as `{login}`)");
    }
    for rewrite in &decision.rewrites {
        let _ = writeln!(out, "masquerade: {rewrite}");
    }
    for (field, value, permit) in &decision.steps {
        match permit {
            crate::policy::Permit::Absent => writeln!(out, "{field}: absent"),
            _ => writeln!(out, "{field} {value}: ok, {permit}"),
        }
        .expect("writing to a String");
    }
    if question.message.is_none() {
        let _ = writeln!(out, "headers: not checked (no message given)");
    }
    match &decision.outcome {
        Ok(()) => {
            let _ = writeln!(out, "verdict: accept");
        }
        Err(refusal) => {
            let _ = writeln!(
                out,
                "{}: refused ({})",
                refusal.field,
                refusal.reason.code()
            );
            let verdict = if refusal.smtp_codes().0.starts_with('4') {
                "tempfail"
            } else {
                "reject"
            };
            let _ = writeln!(out, "verdict: {verdict}: {refusal}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_is_split_like_an_mta_does() {
        let raw =
            b"From: Alice\r\n <alice@tugraz.at>\r\nSubject:hi\r\nFrom : x\r\n\r\nFrom: body@x\r\n";
        let fields = split_header_block(raw);
        assert_eq!(
            fields,
            vec![
                (b"From".to_vec(), b"Alice\r\n <alice@tugraz.at>".to_vec()),
                (b"Subject".to_vec(), b"hi".to_vec()),
                (b"From ".to_vec(), b"x".to_vec()),
            ]
        );
    }
}

/// The ownership answers `explain` has fetched so far, and the questions the last decision
/// asked that it had no answer for (answered "not owned", "nobody's" until fetched).
#[derive(Default)]
struct Known {
    owned: Vec<(String, String, Ownership)>,
    claims: Vec<(String, Option<String>)>,
    asked_owned: std::cell::RefCell<Vec<(String, Address)>>,
    asked_claims: std::cell::RefCell<Vec<Address>>,
}

impl crate::policy::Answers for Known {
    fn ownership(&self, login: &str, address: &Address) -> Ownership {
        let canonical = address.canonical();
        match self
            .owned
            .iter()
            .find(|(l, a, _)| l == login && *a == canonical)
        {
            Some((_, _, ownership)) => ownership.clone(),
            None => {
                self.asked_owned
                    .borrow_mut()
                    .push((login.to_string(), address.clone()));
                Ownership::NotOwned(None)
            }
        }
    }

    fn claim(&self, address: &Address) -> Option<String> {
        let canonical = address.canonical();
        match self.claims.iter().find(|(a, _)| *a == canonical) {
            Some((_, claim)) => claim.clone(),
            None => {
                self.asked_claims.borrow_mut().push(address.clone());
                None
            }
        }
    }
}
