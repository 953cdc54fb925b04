//! The pipeline: the ordered checks, what a check answers at each stage ([`Step`],
//! [`Outcome`]), and how a stage runs them until one decides and that decision is delivered.

use super::decision::{Accepted, Answer, Decision, Delivered, deliver};
use super::{Connection, Env, Transaction};
use crate::BoxFuture;

/// A check's verdict on one stage.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing against it: the next check, or the next stage.
    Continue,
    /// Decided: no further check runs at this stage.
    Decided(Decision),
}

/// A check's answer: now, or after I/O.
pub enum Step<'a> {
    /// Decided without waiting.
    Now(Outcome),
    /// Decided after I/O (counters, locks, a directory).
    Later(BoxFuture<'a, Outcome>),
}

impl Step<'_> {
    async fn outcome(self) -> Outcome {
        match self {
            Step::Now(outcome) => outcome,
            Step::Later(future) => future.await,
        }
    }
}

/// What a check may look at besides the transaction.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The shared service.
    pub env: &'a Env,
    /// The connection.
    pub conn: &'a Connection,
}

/// One small rule of the pipeline, with the stages it cares about; a stage it does not
/// implement lets the message go on.
pub trait Check: Send + Sync {
    /// A short name for logs and docs.
    fn name(&self) -> &'static str;

    /// At MAIL FROM.
    fn mail<'a>(&'a self, _tx: &'a mut Transaction, _cx: Ctx<'a>) -> Step<'a> {
        Step::Now(Outcome::Continue)
    }

    /// At each RCPT TO; a decision refuses only this recipient.
    fn rcpt<'a>(&'a self, _tx: &'a mut Transaction, _rcpt: &'a str, _cx: Ctx<'a>) -> Step<'a> {
        Step::Now(Outcome::Continue)
    }

    /// At end of headers.
    fn headers<'a>(&'a self, _tx: &'a mut Transaction, _cx: Ctx<'a>) -> Step<'a> {
        Step::Now(Outcome::Continue)
    }

    /// At end of message.
    fn message<'a>(&'a self, _tx: &'a mut Transaction, _cx: Ctx<'a>) -> Step<'a> {
        Step::Now(Outcome::Continue)
    }

    /// After any decision of a stage was delivered (e.g. count it toward a lock).
    fn decided<'a>(
        &'a self,
        _tx: &'a Transaction,
        _decision: &'a Decision,
        _cx: Ctx<'a>,
    ) -> Option<BoxFuture<'a, ()>> {
        None
    }
}

#[derive(Clone, Copy)]
pub(super) enum Stage<'r> {
    Mail,
    Rcpt(&'r str),
    Headers,
    Message,
}

/// The ordered checks every message goes through.
pub struct Pipeline {
    checks: Vec<Box<dyn Check>>,
}

impl Pipeline {
    /// A pipeline of these checks, in this order.
    pub fn new(checks: Vec<Box<dyn Check>>) -> Self {
        Pipeline { checks }
    }

    /// relayguard's checks: [`checks::standard`].
    pub fn standard() -> Self {
        Self::new(super::checks::standard())
    }

    /// The names of the checks, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.checks.iter().map(|c| c.name()).collect()
    }

    /// Runs one stage: the first check that decides wins.
    pub(super) async fn stage(
        &self,
        stage: Stage<'_>,
        tx: &mut Transaction,
        cx: Ctx<'_>,
    ) -> Outcome {
        for check in &self.checks {
            let step = match stage {
                Stage::Mail => check.mail(tx, cx),
                Stage::Rcpt(rcpt) => check.rcpt(tx, rcpt, cx),
                Stage::Headers => check.headers(tx, cx),
                Stage::Message => check.message(tx, cx),
            };
            if let Outcome::Decided(d) = step.outcome().await {
                return Outcome::Decided(d);
            }
        }
        Outcome::Continue
    }

    /// Delivers a decision, then lets every check see it.
    pub(super) async fn deliver(&self, d: Decision, tx: &mut Transaction, cx: Ctx<'_>) -> Answer {
        let delivered = deliver(&d, cx.conn, tx, cx.env);
        for check in &self.checks {
            if let Some(after) = check.decided(tx, &d, cx) {
                after.await;
            }
        }
        match delivered {
            Delivered::Accept => Answer::Accept(Accepted {
                signatures: d.signatures,
                modifications: std::mem::take(&mut tx.modifications),
            }),
            Delivered::Refuse(reply) => Answer::Refuse(reply),
        }
    }

    /// A refusal in monitor mode: recorded as it would be sent, and not sent; the message
    /// goes on (a whole-message refusal marks it, so it passes unsigned).
    pub(super) async fn record_only(&self, mut d: Decision, tx: &mut Transaction, cx: Ctx<'_>) {
        d.monitored = true;
        match d.rcpt {
            None => tx.would_refuse = Some(d.reason.to_string()),
            Some(_) => tx.refused_rcpts = (tx.refused_rcpts.0 + 1, Some(d.reason.to_string())),
        }
        self.deliver(d, tx, cx).await;
    }
}
