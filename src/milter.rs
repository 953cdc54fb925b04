//! The milter protocol edge: indymilter callbacks that feed the policy and the signer.
//!
//! This is the only module that knows indymilter. Each callback hands its work to a
//! [`Session`]; refusals become `550 5.7.1`-style replies, internal faults `451 4.3.0`.

use crate::dkim::signer::{MadeSignature, MessageSigner, SigningPlan, WithoutKey};
use crate::policy::mailbox::HeaderSet;
use crate::policy::{Client, ClientKind, Refusal};
use crate::service::{InFlightGuard, Service, Snapshot};
use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, NegotiateContext,
    ProtoOpts, SetErrorReply, SocketInfo, Status,
};
use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::sync::Arc;
use tracing::{error, info, warn};

/// Per-connection state.
#[derive(Default)]
pub struct Session {
    /// Stages where the MTA expects no reply (negotiated to save round trips).
    noreply: ProtoOpts,
    client_addr: Option<IpAddr>,
    client_name: String,
    message: Option<Message>,
}

/// A header field as the MTA passed it: name and value.
type Field = (Box<[u8]>, Box<[u8]>);

/// Per-message state: the snapshot it started with and what the MTA sent so far.
struct Message {
    snapshot: Arc<Snapshot>,
    kind: ClientKind,
    mail_from: String,
    rcpts: usize,
    headers: HeaderSet,
    /// Every header field in order, kept until the signing decision at end of headers.
    fields: Vec<Field>,
    queue_id: Option<String>,
    from: Option<String>,
    signer: Option<MessageSigner>,
    _in_flight: InFlightGuard,
}

/// What a stage callback tells the MTA.
enum Reply {
    Continue,
    Accept,
    Refuse(Refusal),
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
                Ok(()) => Status::Reject,
                Err(e) => {
                    error!(error = %e, "cannot set reply text; tempfailing");
                    fault_reply(reply, "internal error")
                }
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
        self.client_name = hostname.to_string_lossy().into_owned();
        self.client_addr = match socket {
            SocketInfo::Inet(addr) => Some(addr.ip()),
            _ => macro_value(macros, c"{client_addr}").and_then(|a| a.parse().ok()),
        };
    }

    fn mail(&mut self, service: &Service, args: &[CString], macros: &indymilter::Macros) -> Reply {
        let snapshot = service.snapshot();
        let login = macro_value(macros, c"{auth_authen}");
        let kind = snapshot.policy.classify(Client {
            addr: self.client_addr,
            login: login.as_deref(),
        });
        let Some(mail_from) = args.first().map(|a| a.to_string_lossy().into_owned()) else {
            return Reply::Fault("MAIL without an address".into());
        };
        let message = Message {
            snapshot,
            kind,
            mail_from,
            rcpts: 0,
            headers: HeaderSet::default(),
            fields: Vec::new(),
            queue_id: macro_value(macros, c"i"),
            from: None,
            signer: None,
            _in_flight: service.begin_message(),
        };
        match message
            .snapshot
            .policy
            .check_mail(&message.kind, &message.mail_from)
        {
            Ok(_) => {
                self.message = Some(message);
                Reply::Continue
            }
            Err(refusal) => {
                self.log_refusal(&message, &refusal, None);
                Reply::Refuse(refusal)
            }
        }
    }

    fn rcpt(&mut self, args: &[CString], macros: &indymilter::Macros) -> Reply {
        let Some(message) = self.message.as_mut() else {
            return Reply::Fault("RCPT without MAIL".into());
        };
        message.queue_id = message
            .queue_id
            .take()
            .or_else(|| macro_value(macros, c"i"));
        let Some(rcpt) = args.first().map(|a| a.to_string_lossy()) else {
            return Reply::Fault("RCPT without an address".into());
        };
        match message.snapshot.policy.check_rcpt(&message.kind, &rcpt) {
            Ok(_) => {
                message.rcpts += 1;
                Reply::Continue
            }
            Err(refusal) => {
                let message = self.message.as_ref().expect("message present");
                self.log_refusal(message, &refusal, Some(&rcpt));
                Reply::Refuse(refusal)
            }
        }
    }

    fn header(&mut self, name: &CStr, value: &CStr) {
        if let Some(message) = self.message.as_mut() {
            message.headers.add(name.to_bytes(), value.to_bytes());
            message
                .fields
                .push((name.to_bytes().into(), value.to_bytes().into()));
        }
    }

    fn eoh(&mut self, service: &Service, macros: &indymilter::Macros) -> Reply {
        let Some(mut message) = self.message.take() else {
            return Reply::Fault("end of headers without MAIL".into());
        };
        message.queue_id = message
            .queue_id
            .take()
            .or_else(|| macro_value(macros, c"i"));
        let snapshot = message.snapshot.clone();
        let senders = match snapshot
            .policy
            .check_headers(&message.kind, &message.headers)
        {
            Ok(senders) => senders,
            Err(refusal) => {
                self.log_refusal(&message, &refusal, None);
                return Reply::Refuse(refusal);
            }
        };
        message.from = senders.from.as_ref().map(|a| a.to_string());
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
                let mut signer = MessageSigner::new(entries);
                for (name, value) in std::mem::take(&mut message.fields) {
                    signer.header(&name, &value);
                }
                signer.end_of_headers();
                message.signer = Some(signer);
                self.message = Some(message);
                Reply::Continue
            }
            SigningPlan::Unsigned(why) => {
                self.log_accept(&message, &[], why);
                Reply::Accept
            }
            SigningPlan::NoKey(domain) => {
                let without_key = snapshot.keys.as_ref().map(|k| k.config.without_key);
                if without_key == Some(WithoutKey::AcceptUnsigned) {
                    warn!(
                        domain,
                        "no valid active DKIM key: accepting unsigned as configured"
                    );
                    self.log_accept(
                        &message,
                        &[],
                        "no valid DKIM key; accepted unsigned by configuration",
                    );
                    Reply::Accept
                } else {
                    error!(
                        domain,
                        queue_id = message.queue_id.as_deref().unwrap_or("-"),
                        "no valid active DKIM key: tempfailing"
                    );
                    Reply::Fault(format!("no valid DKIM key for {domain}"))
                }
            }
        }
    }

    fn body(&mut self, chunk: &[u8]) -> Reply {
        match self.message.as_mut().and_then(|m| m.signer.as_mut()) {
            Some(signer) => {
                signer.body(chunk);
                Reply::Continue
            }
            None => Reply::Fault("body without a message being signed".into()),
        }
    }

    /// Finishes the signatures; the caller inserts them.
    fn eom(&mut self) -> Result<(Message, Vec<MadeSignature>), String> {
        let mut message = self.message.take().ok_or("end of message without MAIL")?;
        let signer = message
            .signer
            .take()
            .ok_or("end of message without a signer")?;
        let signatures = signer
            .finish()
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok((message, signatures))
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
    }

    fn client_display(&self) -> String {
        match self.client_addr {
            Some(addr) if self.client_name != format!("[{addr}]") => {
                format!("{}[{addr}]", self.client_name)
            }
            _ => self.client_name.clone(),
        }
    }

    fn log_accept(&self, message: &Message, signatures: &[MadeSignature], note: &str) {
        let dkim: Vec<String> = signatures
            .iter()
            .map(|s| format!("d={} s={} a={}", s.domain, s.selector, s.algorithm))
            .collect();
        info!(
            queue_id = message.queue_id.as_deref().unwrap_or("-"),
            client = %self.client_display(),
            class = message.kind.name(),
            login = login_of(&message.kind),
            mail_from = %message.mail_from,
            from = message.from.as_deref().unwrap_or(""),
            rcpts = message.rcpts,
            verdict = "accept",
            dkim = %dkim.join(", "),
            note,
            "decision"
        );
    }

    fn log_refusal(&self, message: &Message, refusal: &Refusal, rcpt: Option<&str>) {
        let (code, status) = refusal.smtp_codes();
        info!(
            queue_id = message.queue_id.as_deref().unwrap_or("-"),
            client = %self.client_display(),
            class = message.kind.name(),
            login = login_of(&message.kind),
            mail_from = %message.mail_from,
            from = %message.headers.raw_from().unwrap_or_default(),
            rcpt = rcpt.unwrap_or(""),
            verdict = "reject",
            reason = refusal.reason.code(),
            field = %refusal.field,
            reply = %format_args!("{code} {status} {}", refusal.text),
            "decision"
        );
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
    (MacroStage::Connect, c"{client_addr} {daemon_name}"),
    (MacroStage::Mail, c"{auth_authen} {auth_type}"),
    (MacroStage::Rcpt, c"i"),
    (MacroStage::Eoh, c"i"),
];

fn negotiate(cx: &mut NegotiateContext<Session>, offered: ProtoOpts) -> Status {
    for (stage, macros) in REQUESTED_MACROS {
        cx.requested_macros.insert(*stage, (*macros).to_owned());
    }
    cx.requested_actions |= Actions::ADD_HEADER;
    // We never reply at connect or per header: spare the MTA those round trips.
    let noreply = offered & (ProtoOpts::NOREPLY_CONNECT | ProtoOpts::NOREPLY_HEADER);
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
                let outcome = session(data).mail(&service, &args, macros);
                send(reply, outcome)
            })
        })
        .on_rcpt(|cx: &mut Context<Session>, args| {
            Box::pin(async move {
                let Context { data, macros, reply, .. } = cx;
                let outcome = session(data).rcpt(&args, macros);
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
                let outcome = session(data).eoh(&service, macros);
                send(reply, outcome)
            })
        })
        .on_body(|cx: &mut Context<Session>, chunk| {
            Box::pin(async move {
                let Context { data, reply, .. } = cx;
                let outcome = session(data).body(&chunk);
                send(reply, outcome)
            })
        })
        .on_eom(|cx: &mut EomContext<Session>| {
            Box::pin(async move {
                let session = session(&mut cx.data);
                let (message, signatures) = match session.eom() {
                    Ok(done) => done,
                    Err(why) => {
                        error!(why, "cannot sign; tempfailing");
                        return fault_reply(&mut cx.reply, &why);
                    }
                };
                for signature in &signatures {
                    if let Err(e) = cx.actions.insert_header(0, "DKIM-Signature", milter_folding(&signature.value)).await {
                        error!(error = %e, "cannot insert DKIM-Signature; tempfailing");
                        return fault_reply(&mut cx.reply, "cannot add the signature");
                    }
                }
                session.log_accept(&message, &signatures, "signed");
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
                        warn!(client = %session.client_display(), "connection closed in the middle of a message");
                    }
                    session.abort();
                }
                Status::Continue
            })
        })
}
