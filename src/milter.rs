//! The milter protocol edge: indymilter callbacks that feed the policy and the signer.
//!
//! This is the only module that knows indymilter. Each callback hands its work to a
//! [`Session`]; refusals become `550 5.7.1`-style replies, internal faults `451 4.3.0`.

use crate::audit::writer::OnError;
use crate::audit::{Record, SignatureRecord, Verdict, recipient_fields};
use crate::dkim::signer::{Field, MadeSignature, MessageSigner, SigningPlan, WithoutKey};
use crate::limits::{
    ClassLimits, LimitError, Used, abuse_signal, check_connection, check_message, check_recipient,
};
use crate::log::Escaped;
use crate::metrics::{KeyLabels, LimitLabels, VerdictLabels};
use crate::policy::hosts::HostName;
use crate::policy::mailbox::HeaderSet;
use crate::policy::{Client, ClientKind, Refusal};
use crate::service::{InFlightGuard, Service, Snapshot};
use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, NegotiateContext,
    ProtoOpts, SetErrorReply, SocketInfo, Status,
};
use std::borrow::Cow;
use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::{error, info, warn};

/// Per-connection state.
#[derive(Default)]
pub struct Session {
    /// Stages where the MTA expects no reply (negotiated to save round trips).
    noreply: ProtoOpts,
    client_addr: Option<IpAddr>,
    /// The client as logs show it: `name[addr]`, or `[addr]` when it has no name.
    client: String,
    /// Its forward-confirmed host name (`{client_name}`; not with `{client_resolve}` other
    /// than `OK`, as Sendmail reports a forged name).
    client_name: Option<String>,
    /// Its PTR name (`{client_ptr}`, else the name the MTA gave at connect).
    client_ptr: Option<String>,
    daemon_name: Option<String>,
    /// MAIL commands on this connection (for messages per connection).
    messages_on_connection: u64,
    /// Whether this connection was counted against connection and authentication limits.
    connection_counted: bool,
    message: Option<Message>,
    /// The verdict made at end of headers, held for the first stage that may reply (body or
    /// end of message) when the MTA agreed not to wait for a reply at end of headers.
    held: Option<Held>,
}

/// A verdict waiting for a stage that replies; the message stays in flight until then.
struct Held {
    reply: Reply,
    in_flight: Option<InFlightGuard>,
}

/// Per-message state: the snapshot it started with and what the MTA sent so far.
struct Message {
    snapshot: Arc<Snapshot>,
    kind: ClientKind,
    mail_from: String,
    rcpts: Vec<String>,
    headers: HeaderSet,
    /// Every header field in order, kept until the signing decision at end of headers.
    fields: Vec<Field>,
    queue_id: Option<String>,
    from: Option<String>,
    sender: Option<String>,
    /// Bytes of header and body seen so far.
    size: u64,
    signer: Option<MessageSigner>,
    /// Effective sending limits for this message's client, when limits are configured.
    limits: Option<ClassLimits>,
    /// Counter values that mattered.
    used: Used,
    _in_flight: InFlightGuard,
}

/// A decision as the audit trail, the metrics and the log see it.
struct Decided<'a> {
    verdict: Verdict,
    reason: Cow<'a, str>,
    text: String,
    signatures: &'a [MadeSignature],
    rcpt: Option<&'a str>,
}

/// What a stage callback tells the MTA.
enum Reply {
    Continue,
    Accept,
    Refuse(Refusal),
    /// A reply with its own codes (limits, locks).
    Custom(&'static str, &'static str, String),
    Fault(String),
}

fn macro_value(macros: &indymilter::Macros, name: &CStr) -> Option<String> {
    macros
        .get(name)
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.is_empty())
}

/// Makes reply text safe for SMTP: printable ASCII only, bounded length.
fn reply_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if out.len() > 900 {
        out.truncate(900);
        out.push_str("...");
    }
    out
}

/// The one place where outcomes become milter replies.
fn send(reply: &mut impl SetErrorReply, outcome: Reply) -> Status {
    match outcome {
        Reply::Continue => Status::Continue,
        Reply::Accept => Status::Accept,
        Reply::Refuse(refusal) => {
            let (code, status) = refusal.smtp_codes();
            match reply.set_error_reply(code, Some(status), [reply_text(&refusal.text)]) {
                Ok(()) if code.starts_with('4') => Status::Tempfail,
                Ok(()) => Status::Reject,
                Err(e) => {
                    error!(error = %e, "cannot set reply text; tempfailing");
                    fault_reply(reply, "internal error")
                }
            }
        }
        Reply::Custom(code, status, text) => {
            match reply.set_error_reply(code, Some(status), [reply_text(&text)]) {
                Ok(()) if code.starts_with('4') => Status::Tempfail,
                Ok(()) => Status::Reject,
                Err(_) => fault_reply(reply, "internal error"),
            }
        }
        Reply::Fault(why) => fault_reply(reply, &why),
    }
}

fn fault_reply(reply: &mut impl SetErrorReply, why: &str) -> Status {
    let text = reply_text(&format!("temporary local problem ({why}), try again later"));
    let _ = reply.set_error_reply("451", Some("4.3.0"), [text]);
    Status::Tempfail
}

impl Session {
    fn connect(&mut self, hostname: &CStr, socket: SocketInfo, macros: &indymilter::Macros) {
        let name = hostname.to_string_lossy();
        self.client_addr = match socket {
            SocketInfo::Inet(addr) => Some(addr.ip()),
            _ => macro_value(macros, c"{client_addr}").and_then(|a| a.parse().ok()),
        };
        self.client = match self.client_addr {
            Some(addr) if name != format!("[{addr}]") => format!("{name}[{addr}]"),
            _ => name.to_string(),
        };
        self.daemon_name = macro_value(macros, c"{daemon_name}");
        let resolved = macro_value(macros, c"{client_resolve}").is_none_or(|r| r == "OK");
        self.client_name = macro_value(macros, c"{client_name}").filter(|_| resolved);
        self.client_ptr = macro_value(macros, c"{client_ptr}").or_else(|| {
            let name = name.trim();
            (!name.is_empty() && !name.starts_with('[')).then(|| name.to_string())
        });
    }

    async fn mail(
        &mut self,
        service: &Service,
        args: &[CString],
        macros: &indymilter::Macros,
    ) -> Reply {
        let snapshot = service.snapshot();
        let login = macro_value(macros, c"{auth_authen}");
        let kind = snapshot.policy.classify(Client {
            addr: self.client_addr,
            login: login.as_deref(),
            name: HostName {
                verified: self.client_name.as_deref(),
                reverse: self.client_ptr.as_deref(),
            },
        });
        let Some(mail_from) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
            return Reply::Fault("MAIL without an address".into());
        };
        self.messages_on_connection += 1;
        let internal = self
            .client_addr
            .is_some_and(|a| snapshot.policy.is_internal(a));
        let normalised = match &kind {
            ClientKind::Authenticated { login, .. } => Some(login.clone()),
            _ => None,
        };
        let limits = snapshot.limits.as_ref().map(|p| {
            p.class(self.daemon_name.as_deref(), normalised.as_deref(), internal)
                .1
        });
        let mut message = Message {
            snapshot,
            kind,
            mail_from,
            rcpts: Vec::new(),
            headers: HeaderSet::default(),
            fields: Vec::new(),
            queue_id: macro_value(macros, c"i"),
            from: None,
            sender: None,
            size: 0,
            signer: None,
            limits,
            used: Used::new(),
            _in_flight: service.begin_message(),
        };
        // Shutting down: only messages already in flight finish. 421 makes the MTA close
        // this connection and try again later (on another relay host, or after the restart).
        if service.is_draining() {
            let text = "relayguard is shutting down; try again later".to_string();
            self.record(
                service,
                &message,
                Decided {
                    verdict: Verdict::Tempfail,
                    reason: "shutting_down".into(),
                    text: format!("421 4.3.2 {text}"),
                    signatures: &[],
                    rcpt: None,
                },
            );
            return Reply::Custom("421", "4.3.2", text);
        }
        // A locked account sends nothing.
        if let (Some(login), Some(limiter)) = (&normalised, &service.limiter) {
            match limiter
                .locks
                .get(limiter.counters.redis.as_ref(), login)
                .await
            {
                Ok(Some(lock)) => {
                    let contact = message
                        .snapshot
                        .limits
                        .as_ref()
                        .map(|l| l.contact.clone())
                        .unwrap_or_default();
                    let given = login_of(&message.kind).to_string();
                    let text = format!(
                        "account {given} is locked ({}); contact {contact}",
                        lock.reason
                    );
                    let decided = Decided {
                        verdict: Verdict::Lock,
                        reason: "account_locked".into(),
                        text: format!("550 5.7.1 {text}"),
                        signatures: &[],
                        rcpt: None,
                    };
                    self.record(service, &message, decided);
                    return Reply::Custom("550", "5.7.1", text);
                }
                Ok(None) => {}
                // The store has logged and counted it; a lock cannot be read, so none applies.
                Err(_) => {}
            }
        }
        let started = Instant::now();
        let checked = message
            .snapshot
            .policy
            .check_mail(&message.kind, &message.mail_from);
        service
            .metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(refusal) = checked {
            return self.refuse(service, &message, refusal).await;
        }
        let snapshot = message.snapshot.clone();
        if let (Some(limits), Some(limiter), Some(policy)) =
            (message.limits, &service.limiter, snapshot.limits.as_ref())
        {
            let subject = normalised
                .clone()
                .or_else(|| self.client_addr.map(|a| a.to_string()))
                .unwrap_or_else(|| "unknown".into());
            let now = service.now_ms();
            let mut used = Used::new();
            let mut result = Ok(());
            if !self.connection_counted {
                self.connection_counted = true;
                result = check_connection(
                    &limiter.counters,
                    policy,
                    &limits,
                    &subject,
                    normalised.is_some(),
                    now,
                    &mut used,
                )
                .await;
            }
            if result.is_ok() {
                result = check_message(
                    &limiter.counters,
                    &limits,
                    &subject,
                    self.messages_on_connection,
                    now,
                    &mut used,
                )
                .await;
            }
            message.used = used;
            match result {
                Ok(()) => {}
                Err(LimitError::Hit(hit)) => {
                    return self.limit_hit(service, &message, &subject, hit, None).await;
                }
                Err(LimitError::Down(down)) => {
                    let why = down.to_string();
                    self.record(
                        service,
                        &message,
                        Decided {
                            verdict: Verdict::Tempfail,
                            reason: "store_unavailable".into(),
                            text: why.clone(),
                            signatures: &[],
                            rcpt: None,
                        },
                    );
                    return Reply::Fault(why);
                }
            }
        }
        self.message = Some(message);
        Reply::Continue
    }

    /// A policy refusal of the whole message: record it, count ownership abuse, reply.
    async fn refuse(&self, service: &Service, message: &Message, refusal: Refusal) -> Reply {
        self.record_refusal(service, message, &refusal, None);
        let ownership = refusal.reason == crate::policy::Reason::SenderNotOwned;
        self.abuse(service, message, ownership).await;
        Reply::Refuse(refusal)
    }

    /// A limit was reached: count it, maybe lock, record, and reply.
    async fn limit_hit(
        &self,
        service: &Service,
        message: &Message,
        subject: &str,
        hit: crate::limits::Hit,
        rcpt: Option<&str>,
    ) -> Reply {
        service
            .metrics
            .limit_hits
            .get_or_create(&LimitLabels {
                limit: hit.limit.into(),
            })
            .inc();
        let (code, status, text) = hit.reply(subject);
        let verdict = if code.starts_with('4') {
            Verdict::Tempfail
        } else {
            Verdict::Reject
        };
        let decided = Decided {
            verdict,
            reason: format!("limit_{}", hit.limit).into(),
            text: format!("{code} {status} {text}"),
            signatures: &[],
            rcpt,
        };
        self.record(service, message, decided);
        self.abuse(service, message, false).await;
        Reply::Custom(code, status, text)
    }

    /// Counts an abuse signal for an authenticated login and locks it when a trigger fires.
    async fn abuse(&self, service: &Service, message: &Message, ownership: bool) {
        let (ClientKind::Authenticated { login, .. }, Some(limiter), Some(policy)) =
            (&message.kind, &service.limiter, &message.snapshot.limits)
        else {
            return;
        };
        match abuse_signal(
            &limiter.counters,
            &policy.lock,
            login,
            ownership,
            service.now_ms(),
        )
        .await
        {
            Ok(Some(reason)) => match limiter
                .locks
                .lock(limiter.counters.redis.as_ref(), login, &reason)
                .await
            {
                Ok(()) => warn!(login = %Escaped(login), reason, "account locked"),
                Err(e) => error!(login = %Escaped(login), error = %e, "cannot lock account"),
            },
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot count abuse signal"),
        }
    }

    async fn rcpt(
        &mut self,
        service: &Service,
        args: &[CString],
        macros: &indymilter::Macros,
    ) -> Reply {
        let Some(message) = self.message.as_mut() else {
            return Reply::Fault("RCPT without MAIL".into());
        };
        message.queue_id = message
            .queue_id
            .take()
            .or_else(|| macro_value(macros, c"i"));
        let Some(rcpt) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
            return Reply::Fault("RCPT without an address".into());
        };
        let started = Instant::now();
        let checked = message.snapshot.policy.check_rcpt(&message.kind, &rcpt);
        service
            .metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(refusal) = checked {
            let message = self.message.as_ref().expect("message present");
            self.record_refusal(service, message, &refusal, Some(&rcpt));
            return Reply::Refuse(refusal);
        }
        if let Some(limits) = &message.limits {
            let count = message.rcpts.len() as u64 + 1;
            message.used.insert("recipients_per_message", count);
            if let Err(hit) = check_recipient(limits, count) {
                let message = self.message.as_ref().expect("message present");
                let subject = login_of(&message.kind).to_string();
                return self
                    .limit_hit(service, message, &subject, hit, Some(&rcpt))
                    .await;
            }
        }
        message.rcpts.push(rcpt);
        Reply::Continue
    }

    fn header(&mut self, name: &CStr, value: &CStr) {
        if let Some(message) = self.message.as_mut() {
            let (name, value) = (name.to_bytes(), value.to_bytes());
            message.headers.add(name, value);
            message.size += (name.len() + value.len() + 4) as u64;
            message.fields.push((name.into(), value.into()));
        }
    }

    async fn eoh(&mut self, service: &Service, macros: &indymilter::Macros) -> Reply {
        let Some(mut message) = self.message.take() else {
            return Reply::Fault("end of headers without MAIL".into());
        };
        message.queue_id = message
            .queue_id
            .take()
            .or_else(|| macro_value(macros, c"i"));
        message.size += 2;
        let snapshot = message.snapshot.clone();
        let started = Instant::now();
        let checked = snapshot
            .policy
            .check_headers(&message.kind, &message.headers);
        service
            .metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        let senders = match checked {
            Ok(senders) => senders,
            Err(refusal) => return self.refuse(service, &message, refusal).await,
        };
        message.from = senders.from.as_ref().map(|a| a.to_string());
        message.sender = senders.sender.as_ref().map(|a| a.to_string());
        let plan = match &snapshot.keys {
            Some(keys) => keys.plan(
                senders.from.as_ref().and_then(|a| a.domain()),
                &snapshot.policy.protected,
                service.now(),
            ),
            None => SigningPlan::Unsigned("DKIM signing not configured"),
        };
        match plan {
            SigningPlan::Sign(entries) => {
                let fields = std::mem::take(&mut message.fields);
                message.signer = Some(MessageSigner::new(entries, fields));
                self.message = Some(message);
                Reply::Continue
            }
            SigningPlan::Unsigned(why) => self.accept(service, &message, &[], why),
            SigningPlan::NoKey(domain) => {
                let without_key = snapshot.keys.as_ref().map(|k| k.config.without_key);
                if without_key == Some(WithoutKey::AcceptUnsigned) {
                    warn!(
                        domain,
                        "no valid active DKIM key: accepting unsigned as configured"
                    );
                    self.accept(
                        service,
                        &message,
                        &[],
                        "no valid DKIM key; accepted unsigned by configuration",
                    )
                } else {
                    let why = format!("no valid DKIM key for {domain}");
                    error!(
                        domain,
                        queue_id = %Escaped(message.queue_id.as_deref().unwrap_or("-")),
                        "no valid active DKIM key: tempfailing"
                    );
                    let decided = Decided {
                        verdict: Verdict::Tempfail,
                        reason: Cow::Borrowed("no_dkim_key"),
                        text: why.clone(),
                        signatures: &[],
                        rcpt: None,
                    };
                    self.record(service, &message, decided);
                    Reply::Fault(why)
                }
            }
        }
    }

    fn body(&mut self, chunk: &[u8]) -> Reply {
        let Some(message) = self.message.as_mut() else {
            return Reply::Fault("body without a message".into());
        };
        match message.signer.as_mut() {
            Some(signer) => {
                signer.body(chunk);
                message.size += chunk.len() as u64;
                Reply::Continue
            }
            None => Reply::Fault("body without a message being signed".into()),
        }
    }

    /// Finishes the signatures and records the decision; the caller inserts them.
    fn eom(&mut self, service: &Service) -> Result<Vec<MadeSignature>, String> {
        let mut message = self.message.take().ok_or("end of message without MAIL")?;
        let signer = message
            .signer
            .take()
            .ok_or("end of message without a signer")?;
        let started = Instant::now();
        let signatures = signer.finish(service.now().max(0) as u64);
        service
            .metrics
            .signing_seconds
            .observe(started.elapsed().as_secs_f64());
        let signatures = match signatures {
            Ok(s) => s,
            Err(e) => {
                let why = format!("signing failed: {e}");
                let decided = Decided {
                    verdict: Verdict::Tempfail,
                    reason: Cow::Borrowed("internal_error"),
                    text: why.clone(),
                    signatures: &[],
                    rcpt: None,
                };
                self.record(service, &message, decided);
                return Err(why);
            }
        };
        match self.accept(service, &message, &signatures, "signed") {
            Reply::Accept => Ok(signatures),
            _ => Err("audit log unwritable".into()),
        }
    }

    /// Records an acceptance; tempfails instead when the audit record cannot be written and
    /// the configuration says no mail may leave unaudited.
    fn accept(
        &self,
        service: &Service,
        message: &Message,
        signatures: &[MadeSignature],
        note: &str,
    ) -> Reply {
        let decided = Decided {
            verdict: Verdict::Accept,
            reason: Cow::Borrowed("ok"),
            text: note.to_string(),
            signatures,
            rcpt: None,
        };
        let carry_on = service
            .audit
            .as_ref()
            .is_some_and(|a| a.config().on_error == OnError::Continue);
        if self.record(service, message, decided) || carry_on {
            Reply::Accept
        } else {
            Reply::Fault("audit log unwritable".into())
        }
    }

    fn record_refusal(
        &self,
        service: &Service,
        message: &Message,
        refusal: &Refusal,
        rcpt: Option<&str>,
    ) {
        let (code, status) = refusal.smtp_codes();
        let verdict = if code.starts_with('4') {
            Verdict::Tempfail
        } else {
            Verdict::Reject
        };
        let text = format!("{code} {status} {}", refusal.text);
        self.record(
            service,
            message,
            Decided {
                verdict,
                reason: Cow::Borrowed(refusal.reason.code()),
                text,
                signatures: &[],
                rcpt,
            },
        );
    }

    /// Audits, logs and counts one decision; returns whether the audit record was written.
    /// An acceptance whose record cannot be written and may not leave unaudited is logged
    /// and counted as the tempfail the MTA will see.
    fn record(&self, service: &Service, message: &Message, d: Decided<'_>) -> bool {
        let written = self.audit(service, message, &d);
        let unaudited = !written
            && d.verdict == Verdict::Accept
            && service
                .audit
                .as_ref()
                .is_some_and(|a| a.config().on_error == OnError::Tempfail);
        let (verdict, reason) = if unaudited {
            ("tempfail", "audit_unwritable")
        } else {
            let verdict = match d.verdict {
                Verdict::Accept => "accept",
                Verdict::Reject => "reject",
                Verdict::Tempfail => "tempfail",
                Verdict::Lock => "lock",
            };
            (verdict, &*d.reason)
        };
        let dkim: Vec<String> = d
            .signatures
            .iter()
            .map(|s| format!("d={} s={} a={}", s.domain, s.selector, s.algorithm))
            .collect();
        info!(
            queue_id = %Escaped(message.queue_id.as_deref().unwrap_or("-")),
            client = %Escaped(&self.client),
            class = message.kind.name(),
            login = %Escaped(login_of(&message.kind)),
            mail_from = %Escaped(&message.mail_from),
            from = %Escaped(message.from.as_deref().unwrap_or("")),
            rcpts = message.rcpts.len(),
            rcpt = %Escaped(d.rcpt.unwrap_or("")),
            verdict,
            reason = %Escaped(reason),
            dkim = %dkim.join(", "),
            text = %Escaped(&d.text),
            "decision"
        );
        service
            .metrics
            .messages
            .get_or_create(&VerdictLabels {
                verdict: verdict.into(),
                reason: reason.to_string(),
            })
            .inc();
        if !unaudited {
            for s in d.signatures {
                let labels = KeyLabels {
                    domain: s.domain.clone(),
                    selector: s.selector.clone(),
                    algorithm: s.algorithm.tag().into(),
                };
                service.metrics.signatures.get_or_create(&labels).inc();
            }
        }
        written
    }

    /// Writes the audit record of a decision; `true` when written (or no audit log is set).
    fn audit(&self, service: &Service, message: &Message, d: &Decided<'_>) -> bool {
        let Some(audit) = &service.audit else {
            return true;
        };
        let full_recipients = audit.config().full_recipients;
        let (rcpt_count, (rcpt_domains, full)) = match d.rcpt {
            Some(r) => (1, recipient_fields(&[r], full_recipients)),
            None => (
                message.rcpts.len(),
                recipient_fields(&message.rcpts, full_recipients),
            ),
        };
        let record = Record {
            time: Cow::Owned(
                jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string(),
            ),
            host: Cow::Borrowed(&service.host),
            queue_id: message.queue_id.as_deref().map(Cow::Borrowed),
            client: self.client_addr.map(|a| Cow::Owned(a.to_string())),
            client_class: Cow::Borrowed(message.kind.name()),
            login: match &message.kind {
                ClientKind::Authenticated { given, .. } => Some(Cow::Borrowed(given.as_str())),
                _ => None,
            },
            mail_from: Some(Cow::Borrowed(&message.mail_from)),
            header_from: message.from.as_deref().map(Cow::Borrowed),
            header_sender: message.sender.as_deref().map(Cow::Borrowed),
            rcpt_count,
            rcpt_domains,
            rcpts: full,
            size: (message.size > 0).then_some(message.size),
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
            limits: message
                .used
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), *v))
                .collect(),
        };
        let written = audit.write(&record).is_ok();
        if !written {
            service.metrics.audit_failures.inc();
        }
        written
    }

    /// `Noreply` where negotiated, else `Continue`.
    fn no_reply(&self, stage: ProtoOpts) -> Status {
        if self.noreply.contains(stage) {
            Status::Noreply
        } else {
            Status::Continue
        }
    }

    fn abort(&mut self) {
        self.message = None;
        self.held = None;
    }

    /// Where the MTA waits for no reply at `stage`, keeps a verdict other than "go on" for
    /// the next stage that replies and returns `None`; else returns the outcome to send.
    fn hold(
        &mut self,
        stage: ProtoOpts,
        outcome: Reply,
        in_flight: Option<InFlightGuard>,
    ) -> Option<Reply> {
        if !self.noreply.contains(stage) {
            return Some(outcome);
        }
        if !matches!(outcome, Reply::Continue) {
            self.held = Some(Held {
                reply: outcome,
                in_flight,
            });
        }
        None
    }
}

fn login_of(kind: &ClientKind) -> &str {
    match kind {
        ClientKind::Authenticated { given, .. } => given,
        _ => "-",
    }
}

/// The macros relayguard asks the MTA for, per stage.
pub const REQUESTED_MACROS: &[(MacroStage, &CStr)] = &[
    (
        MacroStage::Connect,
        c"{client_addr} {daemon_name} {client_name} {client_ptr} {client_resolve}",
    ),
    (MacroStage::Mail, c"{auth_authen} {auth_type}"),
    (MacroStage::Rcpt, c"i"),
    (MacroStage::Eoh, c"i"),
];

fn negotiate(cx: &mut NegotiateContext<Session>, offered: ProtoOpts) -> Status {
    for (stage, macros) in REQUESTED_MACROS {
        cx.requested_macros.insert(*stage, (*macros).to_owned());
    }
    cx.requested_actions |= Actions::ADD_HEADER;
    // Spare the MTA round trips: nothing is refused at connect or per header, and the
    // verdict made at end of headers is given at end of message (the SMTP client hears it
    // after its final dot either way).
    let noreply = offered
        & (ProtoOpts::NOREPLY_CONNECT
            | ProtoOpts::NOREPLY_HEADER
            | ProtoOpts::NOREPLY_EOH
            | ProtoOpts::NOREPLY_BODY);
    cx.requested_opts |= noreply;
    session(&mut cx.data).noreply = noreply;
    Status::Continue
}

fn session<T: Send + Default>(data: &mut Option<T>) -> &mut T {
    data.get_or_insert_with(T::default)
}

/// Milter header values fold with a bare LF.
fn milter_folding(value: &str) -> String {
    value.replace("\r\n", "\n")
}

/// The indymilter callbacks, each a thin shell around [`Session`].
pub fn callbacks(service: Arc<Service>) -> Callbacks<Session> {
    let mail_service = service.clone();
    let eoh_service = service.clone();
    let rcpt_service = service.clone();
    let eom_service = service.clone();
    Callbacks::new()
        .on_negotiate(|cx: &mut NegotiateContext<Session>, _, opts| Box::pin(async move { negotiate(cx, opts) }))
        .on_connect(|cx: &mut Context<Session>, hostname, socket| {
            Box::pin(async move {
                let Context { data, macros, .. } = cx;
                let session = session(data);
                session.connect(&hostname, socket, macros);
                session.no_reply(ProtoOpts::NOREPLY_CONNECT)
            })
        })
        .on_mail(move |cx: &mut Context<Session>, args| {
            let service = mail_service.clone();
            Box::pin(async move {
                let Context { data, macros, reply, .. } = cx;
                let outcome = session(data).mail(&service, &args, macros).await;
                send(reply, outcome)
            })
        })
        .on_rcpt(move |cx: &mut Context<Session>, args| {
            let service = rcpt_service.clone();
            Box::pin(async move {
                let Context { data, macros, reply, .. } = cx;
                let outcome = session(data).rcpt(&service, &args, macros).await;
                send(reply, outcome)
            })
        })
        .on_header(|cx: &mut Context<Session>, name, value| {
            Box::pin(async move {
                let session = session(&mut cx.data);
                session.header(&name, &value);
                session.no_reply(ProtoOpts::NOREPLY_HEADER)
            })
        })
        .on_eoh(move |cx: &mut Context<Session>| {
            let service = eoh_service.clone();
            Box::pin(async move {
                let Context { data, macros, reply, .. } = cx;
                let session = session(data);
                // Counted from before the message is done with until the verdict is given.
                let in_flight = service.begin_message();
                let outcome = session.eoh(&service, macros).await;
                match session.hold(ProtoOpts::NOREPLY_EOH, outcome, Some(in_flight)) {
                    Some(outcome) => send(reply, outcome),
                    None => Status::Noreply,
                }
            })
        })
        .on_body(|cx: &mut Context<Session>, chunk| {
            Box::pin(async move {
                let Context { data, reply, .. } = cx;
                let session = session(data);
                let (outcome, in_flight) = match session.held.take() {
                    Some(held) => (held.reply, held.in_flight),
                    None => (session.body(&chunk), None),
                };
                match session.hold(ProtoOpts::NOREPLY_BODY, outcome, in_flight) {
                    Some(outcome) => send(reply, outcome),
                    None => Status::Noreply,
                }
            })
        })
        .on_eom(move |cx: &mut EomContext<Session>| {
            let service = eom_service.clone();
            Box::pin(async move {
                let session = session(&mut cx.data);
                if let Some(held) = session.held.take() {
                    return send(&mut cx.reply, held.reply);
                }
                let signatures = match session.eom(&service) {
                    Ok(done) => done,
                    Err(why) => {
                        error!(why = %Escaped(&why), "cannot sign; tempfailing");
                        return fault_reply(&mut cx.reply, &why);
                    }
                };
                for signature in &signatures {
                    if let Err(e) = cx.actions.insert_header(0, "DKIM-Signature", milter_folding(&signature.value)).await {
                        error!(error = %e, "cannot insert DKIM-Signature; tempfailing");
                        return fault_reply(&mut cx.reply, "cannot add the signature");
                    }
                }
                Status::Accept
            })
        })
        .on_abort(|cx: &mut Context<Session>| {
            Box::pin(async move {
                session(&mut cx.data).abort();
                Status::Continue
            })
        })
        .on_close(|cx: &mut Context<Session>| {
            Box::pin(async move {
                if let Some(session) = cx.data.as_mut() {
                    if session.message.is_some() {
                        warn!(client = %Escaped(&session.client), "connection closed in the middle of a message");
                    }
                    session.abort();
                }
                Status::Continue
            })
        })
}
