//! The milter protocol edge: indymilter's callbacks, adapted to the transaction pipeline.
//!
//! The only module that knows indymilter. Each callback takes the macros it needs, calls one
//! stage of the [`Session`], and turns the [`Answer`] into a milter reply. Where the MTA
//! offers it, relayguard asks not to be waited for at end of headers and per body chunk, and
//! gives the verdict made at end of headers at end of message.

use crate::session::decision::{Accepted, Answer, Modification, Reply};
use crate::session::flight::InFlightGuard;
use crate::session::{Env, Pipeline, Session};
use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, NegotiateContext,
    ProtoOpts, SetErrorReply, SocketInfo, Status,
};
use std::ffi::CStr;
use std::sync::Arc;
use tracing::{error, warn};

/// What indymilter keeps per connection: the session, and how the MTA wants replies.
#[derive(Default)]
pub struct ConnectionState {
    session: Session,
    /// Stages where the MTA expects no reply (negotiated to save round trips).
    noreply: ProtoOpts,
    /// A verdict made where the MTA does not wait, held for the next stage that replies.
    held: Option<Held>,
}

/// A verdict waiting for a stage that replies; the message stays in flight until then.
struct Held {
    answer: Answer,
    _in_flight: Option<InFlightGuard>,
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

/// The one place where answers become milter replies.
fn send(reply: &mut impl SetErrorReply, answer: Answer) -> Status {
    match answer {
        Answer::Continue => Status::Continue,
        Answer::Accept(_) => Status::Accept,
        Answer::Refuse(r) => {
            match reply.set_error_reply(r.code, Some(r.status), [reply_text(&r.text)]) {
                Ok(()) if r.is_temporary() => Status::Tempfail,
                Ok(()) => Status::Reject,
                Err(e) => {
                    error!(error = %e, "cannot set reply text; tempfailing");
                    send(reply, Answer::Refuse(Reply::fault("internal error")))
                }
            }
        }
    }
}

impl ConnectionState {
    fn connect(&mut self, hostname: &CStr, socket: SocketInfo, macros: &indymilter::Macros) {
        let conn = &mut self.session.conn;
        let name = hostname.to_string_lossy();
        conn.addr = match socket {
            SocketInfo::Inet(addr) => Some(addr.ip()),
            _ => macro_value(macros, c"{client_addr}").and_then(|a| a.parse().ok()),
        };
        conn.name = match conn.addr {
            Some(addr) if name != format!("[{addr}]") => format!("{name}[{addr}]"),
            _ => name.to_string(),
        };
        conn.daemon_name = macro_value(macros, c"{daemon_name}");
        let resolved = macro_value(macros, c"{client_resolve}").is_none_or(|r| r == "OK");
        conn.verified_name = macro_value(macros, c"{client_name}").filter(|_| resolved);
        conn.ptr_name = macro_value(macros, c"{client_ptr}").or_else(|| {
            let name = name.trim();
            (!name.is_empty() && !name.starts_with('[')).then(|| name.to_string())
        });
    }

    /// `Noreply` where negotiated, else `Continue`.
    fn no_reply(&self, stage: ProtoOpts) -> Status {
        if self.noreply.contains(stage) {
            Status::Noreply
        } else {
            Status::Continue
        }
    }

    /// Where the MTA waits for no reply at `stage`, keeps a verdict other than "go on" for
    /// the next stage that replies and returns `None`; else returns the answer to send.
    fn hold(
        &mut self,
        stage: ProtoOpts,
        answer: Answer,
        in_flight: Option<InFlightGuard>,
    ) -> Option<Answer> {
        if !self.noreply.contains(stage) {
            return Some(answer);
        }
        if answer != Answer::Continue {
            self.held = Some(Held {
                answer,
                _in_flight: in_flight,
            });
        }
        None
    }

    fn abort(&mut self) {
        self.session.abort();
        self.held = None;
    }
}

/// The actions masquerading needs: a new envelope sender, a changed From, the original kept.
const MODIFY: Actions = Actions::CHANGE_SENDER
    .union(Actions::CHANGE_HEADER)
    .union(Actions::ADD_HEADER);

/// Logged once: the MTA does not let relayguard change senders.
static NO_MODIFY_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn negotiate(
    cx: &mut NegotiateContext<ConnectionState>,
    actions: Actions,
    offered: ProtoOpts,
) -> Status {
    for (stage, macros) in REQUESTED_MACROS {
        cx.requested_macros.insert(*stage, (*macros).to_owned());
    }
    cx.requested_actions |= Actions::ADD_HEADER;
    let can_modify = actions.contains(MODIFY);
    if can_modify {
        cx.requested_actions |= MODIFY;
    } else if !NO_MODIFY_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        warn!(
            "the MTA does not let relayguard change the envelope sender and headers (milter actions CHGFROM, CHGHEADER): robots' automatic mail is not masqueraded, and is refused as before"
        );
    }
    state(&mut cx.data).session.conn.can_modify = can_modify;
    // Spare the MTA round trips: nothing is refused at connect or per header, and the
    // verdict made at end of headers is given at end of message (the SMTP client hears it
    // after its final dot either way).
    let noreply = offered
        & (ProtoOpts::NOREPLY_CONNECT
            | ProtoOpts::NOREPLY_HEADER
            | ProtoOpts::NOREPLY_EOH
            | ProtoOpts::NOREPLY_BODY);
    cx.requested_opts |= noreply;
    state(&mut cx.data).noreply = noreply;
    Status::Continue
}

fn state<T: Send + Default>(data: &mut Option<T>) -> &mut T {
    data.get_or_insert_with(T::default)
}

/// Milter header values fold with a bare LF; any other line break or NUL (none should
/// reach here: values are built from validated parts) becomes a space, so no value can
/// carry a header of its own.
fn milter_folding(value: &str) -> String {
    let value = value.replace("\r\n", "\n");
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' if matches!(chars.peek(), Some(' ' | '\t')) => out.push('\n'),
            '\r' | '\n' | '\0' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn first_arg(args: &[std::ffi::CString]) -> Option<String> {
    args.first().map(|a| a.to_string_lossy().into_owned())
}

/// Makes the changes of an accepted message (masquerading, the monitor-mode header), then
/// inserts its signatures on top.
async fn apply(
    actions: &impl ContextActions,
    accepted: &Accepted,
) -> Result<(), indymilter::ActionError> {
    for change in &accepted.modifications {
        match change {
            Modification::ChangeSender(address) => {
                actions
                    .change_sender(address.as_str(), None::<&str>)
                    .await?
            }
            Modification::ChangeHeader { name, index, value } => {
                actions
                    .change_header(name.as_str(), *index, Some(milter_folding(value)))
                    .await?
            }
            Modification::AddHeader { name, value } => {
                actions
                    .add_header(name.as_str(), milter_folding(value))
                    .await?
            }
        }
    }
    for signature in &accepted.signatures {
        actions
            .insert_header(0, "DKIM-Signature", milter_folding(&signature.value))
            .await?;
    }
    Ok(())
}

/// The indymilter callbacks, each a thin shell around one stage of the [`Session`]: the
/// connection's start and end, the envelope, the message.
pub fn callbacks(env: Arc<Env>, pipeline: Arc<Pipeline>) -> Callbacks<ConnectionState> {
    let shared = (env, pipeline);
    let callbacks = connection(Callbacks::new());
    let callbacks = envelope(callbacks, &shared);
    message(callbacks, shared)
}

/// Negotiation, connect, abort and close.
fn connection(callbacks: Callbacks<ConnectionState>) -> Callbacks<ConnectionState> {
    callbacks
        .on_negotiate(|cx: &mut NegotiateContext<ConnectionState>, actions, opts| Box::pin(async move { negotiate(cx, actions, opts) }))
        .on_connect(|cx: &mut Context<ConnectionState>, hostname, socket| {
            Box::pin(async move {
                let Context { data, macros, .. } = cx;
                let connection = state(data);
                connection.connect(&hostname, socket, macros);
                connection.no_reply(ProtoOpts::NOREPLY_CONNECT)
            })
        })
        .on_abort(|cx: &mut Context<ConnectionState>| {
            Box::pin(async move {
                state(&mut cx.data).abort();
                Status::Continue
            })
        })
        .on_close(|cx: &mut Context<ConnectionState>| {
            Box::pin(async move {
                if let Some(connection) = cx.data.as_mut() {
                    if connection.session.tx.is_some() {
                        warn!(client = %connection.session.conn.name, "connection closed in the middle of a message");
                    }
                    connection.abort();
                }
                Status::Continue
            })
        })
}

/// MAIL and RCPT.
fn envelope(
    callbacks: Callbacks<ConnectionState>,
    shared: &(Arc<Env>, Arc<Pipeline>),
) -> Callbacks<ConnectionState> {
    let (mail, rcpt) = (shared.clone(), shared.clone());
    callbacks
        .on_mail(move |cx: &mut Context<ConnectionState>, args| {
            let (env, pipeline) = mail.clone();
            Box::pin(async move {
                let Context {
                    data,
                    macros,
                    reply,
                    ..
                } = cx;
                let Some(mail_from) = first_arg(&args) else {
                    return send(
                        reply,
                        Answer::Refuse(Reply::fault("MAIL without an address")),
                    );
                };
                let login = macro_value(macros, c"{auth_authen}");
                let queue_id = macro_value(macros, c"i");
                let session = &mut state(data).session;
                let answer = session
                    .mail(&env, &pipeline, mail_from, login.as_deref(), queue_id)
                    .await;
                send(reply, answer)
            })
        })
        .on_rcpt(move |cx: &mut Context<ConnectionState>, args| {
            let (env, pipeline) = rcpt.clone();
            Box::pin(async move {
                let Context {
                    data,
                    macros,
                    reply,
                    ..
                } = cx;
                let Some(rcpt) = first_arg(&args) else {
                    return send(
                        reply,
                        Answer::Refuse(Reply::fault("RCPT without an address")),
                    );
                };
                let queue_id = macro_value(macros, c"i");
                let answer = state(data)
                    .session
                    .rcpt(&env, &pipeline, rcpt, queue_id)
                    .await;
                send(reply, answer)
            })
        })
}

/// Headers, end of headers, body chunks and end of message.
fn message(
    callbacks: Callbacks<ConnectionState>,
    shared: (Arc<Env>, Arc<Pipeline>),
) -> Callbacks<ConnectionState> {
    let (eoh, eom) = (shared.clone(), shared);
    callbacks
        .on_header(|cx: &mut Context<ConnectionState>, name, value| {
            Box::pin(async move {
                let connection = state(&mut cx.data);
                connection.session.header(name.to_bytes(), value.to_bytes());
                connection.no_reply(ProtoOpts::NOREPLY_HEADER)
            })
        })
        .on_eoh(move |cx: &mut Context<ConnectionState>| {
            let (env, pipeline) = eoh.clone();
            Box::pin(async move {
                let Context {
                    data,
                    macros,
                    reply,
                    ..
                } = cx;
                let connection = state(data);
                // Counted from before the message is done with until the verdict is given.
                let in_flight = env.flight.begin();
                let queue_id = macro_value(macros, c"i");
                let answer = connection
                    .session
                    .end_of_headers(&env, &pipeline, queue_id)
                    .await;
                match connection.hold(ProtoOpts::NOREPLY_EOH, answer, Some(in_flight)) {
                    Some(answer) => send(reply, answer),
                    None => Status::Noreply,
                }
            })
        })
        .on_body(|cx: &mut Context<ConnectionState>, chunk| {
            Box::pin(async move {
                let Context { data, reply, .. } = cx;
                let connection = state(data);
                let (answer, in_flight) = match connection.held.take() {
                    Some(held) => (held.answer, held._in_flight),
                    None => (connection.session.body(&chunk), None),
                };
                match connection.hold(ProtoOpts::NOREPLY_BODY, answer, in_flight) {
                    Some(answer) => send(reply, answer),
                    None => Status::Noreply,
                }
            })
        })
        .on_eom(move |cx: &mut EomContext<ConnectionState>| {
            let (env, pipeline) = eom.clone();
            Box::pin(async move {
                let connection = state(&mut cx.data);
                if let Some(held) = connection.held.take() {
                    return send(&mut cx.reply, held.answer);
                }
                let accepted = match connection.session.end_of_message(&env, &pipeline).await {
                    Answer::Accept(accepted) => accepted,
                    other => return send(&mut cx.reply, other),
                };
                if let Err(e) = apply(&cx.actions, &accepted).await {
                    error!(error = %e, "cannot change the message as decided; tempfailing");
                    return send(
                        &mut cx.reply,
                        Answer::Refuse(Reply::fault("cannot change the message")),
                    );
                }
                Status::Accept
            })
        })
}

#[cfg(test)]
mod tests {
    use super::milter_folding;

    #[test]
    fn a_header_value_keeps_its_folding_and_cannot_start_a_header() {
        assert_eq!(milter_folding("v=1;\r\n\tb=abc;"), "v=1;\n\tb=abc;");
        assert_eq!(milter_folding("<a@b>\r\nBcc: x\0"), "<a@b> Bcc: x ");
        assert_eq!(milter_folding("a\rb\nc"), "a b c");
    }
}
