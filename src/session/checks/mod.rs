//! The checks of the pipeline, one small type each, in the order they run. A new check is a
//! new file here and one line in [`standard`].

mod anomaly;
mod draining;
mod headers;
mod limits;
mod lock;
mod masquerade;
mod recipients;
mod senders;
mod signing;

pub use anomaly::StolenAccount;
pub use draining::Draining;
pub use headers::HeaderSenders;
pub use limits::SendingLimits;
pub use lock::AccountLock;
pub use masquerade::Masquerade;
pub use recipients::Recipients;
pub use senders::EnvelopeSender;
pub use signing::Signing;

use super::Check;

/// relayguard's checks in order. MAIL: shutting down, account lock, masquerading, envelope
/// sender, sending limits. RCPT: recipient policy, recipient limit. End of headers:
/// masquerading, From and Sender, the stolen-account signals, then the signing plan. End of
/// message: the signatures.
pub fn standard() -> Vec<Box<dyn Check>> {
    vec![
        Box::new(Draining),
        Box::new(AccountLock),
        Box::new(Masquerade),
        Box::new(EnvelopeSender),
        Box::new(Recipients),
        Box::new(SendingLimits),
        Box::new(HeaderSenders),
        Box::new(StolenAccount),
        Box::new(Signing),
    ]
}
