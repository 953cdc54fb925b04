//! DKIM signing: at end of headers the plan (sign with the active selectors, accept
//! unsigned, or no key), at end of message the signatures.

use crate::dkim::signer::{MessageSigner, SigningPlan, WithoutKey};
use crate::session::decision::{Decision, Reply};
use crate::session::{Check, Ctx, Outcome, Step, Transaction};
use std::time::Instant;

/// Signs accepted mail from a protected domain with the selectors active now.
pub struct Signing;

impl Check for Signing {
    fn name(&self) -> &'static str {
        "signing"
    }

    fn headers<'a>(&'a self, tx: &'a mut Transaction, cx: Ctx<'a>) -> Step<'a> {
        let snapshot = tx.snapshot.clone();
        let plan = match &snapshot.keys {
            Some(keys) => keys.plan(
                tx.from_domain.as_deref(),
                &snapshot.policy.protected,
                cx.env.now(),
                &|entry| cx.env.dns.state(entry),
            ),
            None => SigningPlan::Unsigned("DKIM signing not configured"),
        };
        Step::Now(match plan {
            SigningPlan::Sign(entries) => {
                let fields = std::mem::take(&mut tx.fields);
                let signer = MessageSigner::new(entries, fields);
                if let Some((name, byte)) = signer.unsignable() {
                    return Step::Now(Outcome::Decided(unsignable(&name, byte)));
                }
                tx.signer = Some(signer);
                Outcome::Continue
            }
            SigningPlan::Unsigned(why) => Outcome::Decided(Decision::accept(why, Vec::new())),
            SigningPlan::NoKey(domain) => {
                let without_key = snapshot.keys.as_ref().map(|k| k.config.without_key);
                if without_key == Some(WithoutKey::AcceptUnsigned) {
                    tracing::warn!(
                        domain,
                        "no valid active DKIM key: accepting unsigned as configured"
                    );
                    Outcome::Decided(Decision::accept(
                        "no valid DKIM key; accepted unsigned by configuration",
                        Vec::new(),
                    ))
                } else {
                    tracing::error!(
                        domain,
                        queue_id = %tx.queue_id.as_deref().unwrap_or("-"),
                        "no valid active DKIM key: tempfailing"
                    );
                    Outcome::Decided(Decision::fault(
                        "no_dkim_key",
                        format!("no valid DKIM key for {domain}"),
                    ))
                }
            }
        })
    }

    fn message<'a>(&'a self, tx: &'a mut Transaction, cx: Ctx<'a>) -> Step<'a> {
        let Some(signer) = tx.signer.take() else {
            return Step::Now(Outcome::Decided(Decision::fault(
                "internal_error",
                "end of message without a signer".into(),
            )));
        };
        let started = Instant::now();
        let signatures = signer.finish(cx.env.now().max(0) as u64);
        cx.env
            .metrics
            .signing_seconds
            .observe(started.elapsed().as_secs_f64());
        Step::Now(Outcome::Decided(match signatures {
            Ok(signatures) => Decision::accept("signed", signatures),
            Err(e) => {
                tracing::error!(error = %e, "cannot sign; tempfailing");
                Decision::fault("internal_error", format!("signing failed: {e}"))
            }
        }))
    }
}

/// A signed header that begins or ends with CR, LF, VT or FF: dkimpy strips those, the RFC
/// keeps them, so no signature verifies everywhere. Refused with what to change.
fn unsignable(name: &str, byte: u8) -> Decision {
    let name = crate::log::Escaped(name).to_string();
    Decision::refuse(
        "unsignable_header",
        Reply {
            code: "550",
            status: "5.6.0",
            text: format!(
                "{name} header begins or ends with control character 0x{byte:02X}, which DKIM verifiers read differently; remove it"
            ),
        },
    )
}
