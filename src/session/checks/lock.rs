//! Account locks: a locked account sends nothing; sender-ownership refusals and limit hits
//! are counted, and enough of them lock the account.

use crate::BoxFuture;
use crate::audit::Verdict;
use crate::limits::abuse_signal;
use crate::limits::locks::Lock;
use crate::session::decision::{Abuse, Decision, Reply};
use crate::session::{Check, Ctx, Outcome, Step, Transaction};

/// Refuses a locked account at MAIL; locks an account whose refusals reach a trigger.
pub struct AccountLock;

impl Check for AccountLock {
    fn name(&self) -> &'static str {
        "account lock"
    }

    fn mail<'a>(&'a self, tx: &'a mut Transaction, cx: Ctx<'a>) -> Step<'a> {
        let (Some((given, login)), Some(locks)) = (tx.login(), cx.env.locks.as_ref()) else {
            return Step::Now(Outcome::Continue);
        };
        let (given, login) = (given.to_string(), login.to_string());
        Step::Later(Box::pin(async move {
            // A lock that cannot be read does not apply (the store has logged and counted it).
            let Ok(Some(lock)) = locks.get(&login).await else {
                return Outcome::Continue;
            };
            let contact = tx.snapshot.contact();
            let reply = Reply {
                code: "550",
                status: "5.7.1",
                text: format!(
                    "account {given} is locked ({}); contact {contact}",
                    lock.reason
                ),
            };
            let mut locked = Decision::refuse("account_locked", reply);
            locked.verdict = Verdict::Lock;
            Outcome::Decided(locked)
        }))
    }

    fn decided<'a>(
        &'a self,
        tx: &'a Transaction,
        decision: &'a Decision,
        cx: Ctx<'a>,
    ) -> Option<BoxFuture<'a, ()>> {
        let abuse = decision.abuse?;
        let (_, login) = tx.login()?;
        // One message is one limit hit: its second and later refused recipients do not count.
        if abuse == Abuse::Other
            && decision.rcpt.is_some()
            && tx
                .rcpt_limit_hit_counted
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return None;
        }
        let (counters, locks) = (cx.env.counters.as_ref()?, cx.env.locks.as_ref()?);
        let rules = &tx.snapshot.limits.as_ref()?.lock;
        Some(Box::pin(async move {
            let now = cx.env.now_ms();
            let ownership = abuse == Abuse::Ownership;
            match abuse_signal(counters.as_ref(), rules, login, ownership, now).await {
                Ok(Some(reason)) => match locks.lock(login, Lock::new(&reason, now)).await {
                    Ok(()) => {
                        cx.env.metrics.account_locks.inc();
                        tracing::warn!(login = %login, reason, "account locked")
                    }
                    Err(e) => {
                        tracing::error!(login = %login, error = %e, "cannot lock account")
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot count abuse signal"),
            }
        }))
    }
}
