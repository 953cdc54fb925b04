//! The envelope sender (MAIL FROM): who may use it, with ownership from the snapshot's
//! ownership source. Also the lookup the header check shares.

use crate::policy::address::Address;
use crate::policy::senders::{Ownership, SourceDown};
use crate::policy::{ClientKind, Reason, Refusal};
use crate::session::decision::{Abuse, Decision};
use crate::session::{Check, Ctx, Outcome, Snapshot, Step, Transaction};

/// The envelope sender at MAIL.
pub struct EnvelopeSender;

impl Check for EnvelopeSender {
    fn name(&self) -> &'static str {
        "envelope sender"
    }

    fn mail<'a>(&'a self, tx: &'a mut Transaction, _cx: Ctx<'a>) -> Step<'a> {
        Step::Later(Box::pin(async move {
            let address = Address::parse_envelope(&tx.mail_from).ok().flatten();
            let answers = match ask(&tx.snapshot, &tx.kind, address.iter()).await {
                Ok(answers) => answers,
                Err(down) => return unavailable(down),
            };
            match tx
                .snapshot
                .policy
                .check_mail_with(&tx.kind, &tx.mail_from, &answers.owner())
            {
                Ok(_) => Outcome::Continue,
                Err(refusal) => Outcome::Decided(refused(&refusal)),
            }
        }))
    }
}

/// A refusal of the whole message by the sender policy, counted toward an account lock.
pub(super) fn refused(refusal: &Refusal) -> Decision {
    let abuse = if refusal.reason == Reason::SenderNotOwned {
        Abuse::Ownership
    } else {
        Abuse::Other
    };
    Decision::policy(refusal).counting(abuse)
}

/// The ownership source could not answer: tempfail, never guess.
pub(super) fn unavailable(down: SourceDown) -> Outcome {
    Outcome::Decided(Decision::fault("ownership_unavailable", down.to_string()))
}

/// The ownership source's answers for the addresses the policy will ask about.
pub(super) struct Answers(Vec<(String, Ownership)>);

impl Answers {
    /// The answers as the policy asks for them; an address not asked about is not owned.
    pub(super) fn owner(&self) -> impl Fn(&str, &Address) -> Ownership + '_ {
        |_, address| {
            let canonical = address.canonical();
            self.0
                .iter()
                .find(|(a, _)| *a == canonical)
                .map(|(_, o)| o.clone())
                .unwrap_or(Ownership::NotOwned(None))
        }
    }
}

/// Asks the snapshot's ownership source about each address whose ownership the policy needs.
pub(super) async fn ask<'a>(
    snapshot: &Snapshot,
    kind: &ClientKind,
    addresses: impl Iterator<Item = &'a Address>,
) -> Result<Answers, SourceDown> {
    let mut answers = Vec::new();
    for address in addresses {
        if let Some(login) = snapshot.policy.ownership_needed(kind, address) {
            let ownership = snapshot.ownership.ownership(login, address).await?;
            answers.push((address.canonical(), ownership));
        }
    }
    Ok(Answers(answers))
}
