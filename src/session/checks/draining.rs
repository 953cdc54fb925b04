//! Shutting down: after SIGTERM, new transactions hear 421 (the MTA closes the session and
//! tries again later); messages already past MAIL finish.

use crate::session::decision::{Decision, Reply};
use crate::session::{Check, Ctx, Outcome, Step, Transaction};

/// Refuses new messages while the service drains.
pub struct Draining;

impl Check for Draining {
    fn name(&self) -> &'static str {
        "draining"
    }

    fn mail<'a>(&'a self, _tx: &'a mut Transaction, cx: Ctx<'a>) -> Step<'a> {
        if !cx.env.flight.is_draining() {
            return Step::Now(Outcome::Continue);
        }
        Step::Now(Outcome::Decided(Decision::refuse(
            "shutting_down",
            Reply {
                code: "421",
                status: "4.3.2",
                text: "relayguard is shutting down; try again later".into(),
            },
        )))
    }
}
