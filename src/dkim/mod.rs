//! DKIM signing: the selector schedule, keys, the body hash, the loaded key set and the
//! streaming signer.

pub mod body;
pub mod dns;
pub mod keys;
pub mod record;
pub mod schedule;
pub mod signer;
pub mod tooling;
