//! DKIM signing: at end of headers the plan (sign with the active selectors, accept
//! unsigned, or no key), at end of message the signatures.

use crate::dkim::signer::{MessageSigner, SigningPlan, WithoutKey};
use crate::log::Escaped;
use crate::session::decision::Decision;
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
                tx.signer = Some(MessageSigner::new(entries, fields));
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
                        queue_id = %Escaped(tx.queue_id.as_deref().unwrap_or("-")),
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
