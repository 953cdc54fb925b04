//! Robot masquerading: a robot account's automatic senders (`root@web1`, `www-data@localhost`,
//! the null sender) become the address its rule names, in the envelope and in From and
//! Sender, before ownership is checked; so the rewritten sender is what is owned, signed and
//! delivered, and anything else is checked (and refused) as it was sent.

use crate::policy::masquerade::Rule;
use crate::session::decision::Modification;
use crate::session::{Check, Ctx, Masqueraded, Outcome, Step, Transaction};

/// Rewrites a robot's automatic senders, where the MTA allows it.
pub struct Masquerade;

/// The robot's rule, where this message may be masqueraded at all.
fn rule<'t>(tx: &'t Transaction, cx: Ctx<'_>) -> Option<&'t Rule> {
    let (_, login) = tx.login()?;
    if !cx.conn.can_modify {
        return None;
    }
    tx.snapshot.policy.masquerades.rule(login)
}

impl Check for Masquerade {
    fn name(&self) -> &'static str {
        "masquerade"
    }

    fn mail<'a>(&'a self, tx: &'a mut Transaction, cx: Ctx<'a>) -> Step<'a> {
        // A malformed envelope is not rewritten: the envelope check refuses it.
        if let Some(envelope) = rule(tx, cx).and_then(|r| r.rewrite_envelope(&tx.mail_from)) {
            let original = std::mem::replace(&mut tx.mail_from, envelope.clone());
            tx.modifications.push(Modification::ChangeSender(envelope));
            tx.masqueraded
                .get_or_insert_with(Masqueraded::default)
                .mail_from = Some(original);
        }
        Step::Now(Outcome::Continue)
    }

    fn headers<'a>(&'a self, tx: &'a mut Transaction, cx: Ctx<'a>) -> Step<'a> {
        let Some(rule) = rule(tx, cx) else {
            return Step::Now(Outcome::Continue);
        };
        let (from, sender) = (
            rule.rewrite_from(&tx.headers),
            rule.rewrite_sender(&tx.headers),
        );
        let original_header = tx.snapshot.policy.masquerades.original_header.clone();
        if let Some((original, value)) = from {
            replace(tx, "From", &value);
            tx.masqueraded.get_or_insert_with(Masqueraded::default).from =
                Some(original.to_string());
            if let Some(name) = original_header {
                tx.modifications.push(Modification::AddHeader {
                    name,
                    value: format!("<{original}>"),
                });
            }
        }
        if let Some((original, value)) = sender {
            replace(tx, "Sender", &value);
            tx.masqueraded
                .get_or_insert_with(Masqueraded::default)
                .sender = Some(original.to_string());
        }
        Step::Now(Outcome::Continue)
    }
}

/// Replaces the one header field `name` with `value`: for the decision, for the signature,
/// and as a change the MTA makes.
fn replace(tx: &mut Transaction, name: &str, value: &str) {
    tx.headers.replace(name.as_bytes(), value.as_bytes());
    for (field, old) in &mut tx.fields {
        if field.trim_ascii().eq_ignore_ascii_case(name.as_bytes()) {
            *old = value.as_bytes().into();
        }
    }
    tx.modifications.push(Modification::ChangeHeader {
        name: name.to_string(),
        index: 1,
        value: value.to_string(),
    });
}
