//! Recipients: an unauthenticated internal server may write only to the protected domains.

use crate::session::decision::Decision;
use crate::session::{Check, Ctx, Outcome, Step, Transaction};

/// The recipient policy at RCPT.
pub struct Recipients;

impl Check for Recipients {
    fn name(&self) -> &'static str {
        "recipients"
    }

    fn rcpt<'a>(&'a self, tx: &'a mut Transaction, rcpt: &'a str, _cx: Ctx<'a>) -> Step<'a> {
        Step::Now(match tx.snapshot.policy.check_rcpt(&tx.kind, rcpt) {
            Ok(_) => Outcome::Continue,
            Err(refusal) => Outcome::Decided(Decision::policy(&refusal)),
        })
    }
}
