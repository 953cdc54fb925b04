//! The envelope sender (MAIL FROM): who may use it, with ownership from the snapshot's
//! ownership source. Also the lookup the header check shares.

use crate::policy::address::Address;
use crate::policy::senders::{Ownership, SourceDown};
use crate::policy::{self, ClientKind, Reason, Refusal};
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
                .check_mail_with(&tx.kind, &tx.mail_from, &answers)
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

/// The ownership sources' answers for the addresses the policy will ask about.
#[derive(Default)]
pub(super) struct Answers {
    owned: Vec<(String, Ownership)>,
    claimed: Vec<(String, Option<String>)>,
}

impl policy::Answers for Answers {
    fn ownership(&self, _login: &str, address: &Address) -> Ownership {
        let canonical = address.canonical();
        self.owned
            .iter()
            .find(|(a, _)| *a == canonical)
            .map(|(_, o)| o.clone())
            .unwrap_or(Ownership::NotOwned(None))
    }

    fn claim(&self, address: &Address) -> Option<String> {
        let canonical = address.canonical();
        self.claimed
            .iter()
            .find(|(a, _)| *a == canonical)
            .and_then(|(_, c)| c.clone())
    }
}

/// Asks the snapshot's ownership sources about each address the policy needs: who owns it
/// for an authenticated login, whether anyone does for an unauthenticated server.
pub(super) async fn ask<'a>(
    snapshot: &Snapshot,
    kind: &ClientKind,
    addresses: impl Iterator<Item = &'a Address>,
) -> Result<Answers, SourceDown> {
    let mut answers = Answers::default();
    for address in addresses {
        if let Some(login) = snapshot.policy.ownership_needed(kind, address) {
            let ownership = snapshot.ownership.ownership(login, address).await?;
            answers.owned.push((address.canonical(), ownership));
        }
        if snapshot.policy.claim_needed(kind, address) {
            let claim = snapshot.ownership.claim(address).await?;
            answers.claimed.push((address.canonical(), claim));
        }
    }
    Ok(answers)
}
