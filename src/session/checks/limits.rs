//! Sending limits: connections and authentications at the first MAIL of a connection,
//! messages at every MAIL, recipients at RCPT.

use crate::limits::{LimitError, Used, check_connection, check_message, check_recipient};
use crate::session::decision::{Abuse, Decision, Reply};
use crate::session::{Check, Ctx, Outcome, Step, Transaction};

/// The client's class limits, counted in the shared counter store.
pub struct SendingLimits;

/// A limit was reached: the reply the limit gives, counted toward an account lock.
fn hit(hit: crate::limits::Hit, subject: &str) -> Decision {
    let (code, status, text) = hit.reply(subject);
    let mut d = Decision::refuse(format!("limit_{}", hit.limit), Reply { code, status, text })
        .counting(Abuse::Other);
    d.limit = Some(hit.limit);
    d
}

impl Check for SendingLimits {
    fn name(&self) -> &'static str {
        "sending limits"
    }

    fn mail<'a>(&'a self, tx: &'a mut Transaction, cx: Ctx<'a>) -> Step<'a> {
        let (Some(policy), Some(counters)) =
            (tx.snapshot.limits.as_ref(), cx.env.counters.as_ref())
        else {
            return Step::Now(Outcome::Continue);
        };
        let login = tx.login().map(|(_, login)| login.to_string());
        let internal = cx
            .conn
            .addr
            .is_some_and(|a| tx.snapshot.policy.is_internal(a));
        let limits = policy
            .class(cx.conn.daemon_name.as_deref(), login.as_deref(), internal)
            .1;
        tx.limits = Some(limits);
        let subject = login
            .or_else(|| cx.conn.addr.map(|a| a.to_string()))
            .unwrap_or_else(|| "unknown".into());
        Step::Later(Box::pin(async move {
            let policy = tx.snapshot.limits.as_ref().expect("checked above");
            let now = cx.env.now_ms();
            let mut used = Used::new();
            let mut result = Ok(());
            if tx.count_connection {
                tx.count_connection = false;
                result = check_connection(
                    counters.as_ref(),
                    policy,
                    &limits,
                    &subject,
                    tx.login().is_some(),
                    now,
                    &mut used,
                )
                .await;
            }
            if result.is_ok() {
                result = check_message(
                    counters.as_ref(),
                    &limits,
                    &subject,
                    tx.number_on_connection,
                    now,
                    &mut used,
                )
                .await;
            }
            tx.used = used;
            match result {
                Ok(()) => Outcome::Continue,
                Err(LimitError::Hit(h)) => Outcome::Decided(hit(h, &subject)),
                Err(LimitError::Down(down)) => {
                    Outcome::Decided(Decision::fault("store_unavailable", down.to_string()))
                }
            }
        }))
    }

    fn rcpt<'a>(&'a self, tx: &'a mut Transaction, _rcpt: &'a str, _cx: Ctx<'a>) -> Step<'a> {
        let Some(limits) = &tx.limits else {
            return Step::Now(Outcome::Continue);
        };
        let count = tx.rcpts.len() as u64 + 1;
        let checked = check_recipient(limits, count);
        tx.used.insert("recipients_per_message", count);
        Step::Now(match checked {
            Ok(()) => Outcome::Continue,
            Err(h) => Outcome::Decided(hit(h, tx.login_as_given())),
        })
    }
}
