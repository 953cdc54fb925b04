//! The sender headers (From, Sender) at end of headers: exactly one unambiguous From, and
//! both owned by the client, with ownership from the snapshot's ownership source.

use super::senders::{ask, refused, unavailable};
use crate::session::{Check, Ctx, Outcome, Step, Transaction};

/// From and Sender at end of headers.
pub struct HeaderSenders;

impl Check for HeaderSenders {
    fn name(&self) -> &'static str {
        "header senders"
    }

    fn headers<'a>(&'a self, tx: &'a mut Transaction, _cx: Ctx<'a>) -> Step<'a> {
        Step::Later(Box::pin(async move {
            let from = tx.headers.from().ok().flatten();
            let sender = tx.headers.sender().ok().flatten();
            let answers = match ask(&tx.snapshot, &tx.kind, from.iter().chain(sender.iter())).await
            {
                Ok(answers) => answers,
                Err(down) => return unavailable(down),
            };
            match tx
                .snapshot
                .policy
                .check_headers_with(&tx.kind, &tx.headers, &answers)
            {
                Ok(senders) => {
                    tx.from_domain = senders
                        .from
                        .as_ref()
                        .and_then(|a| a.domain())
                        .map(str::to_string);
                    tx.from = senders.from.as_ref().map(|a| a.to_string());
                    tx.sender = senders.sender.as_ref().map(|a| a.to_string());
                    Outcome::Continue
                }
                Err(refusal) => Outcome::Decided(refused(&refusal)),
            }
        }))
    }
}
