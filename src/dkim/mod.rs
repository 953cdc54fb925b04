//! DKIM signing: the selector schedule, keys, the body hash, the loaded key set and the
//! streaming signer.

pub mod body;
pub mod cluster;
pub mod dns;
pub mod keys;
pub mod record;
pub mod rotation;
pub mod schedule;
pub mod signer;
pub mod tooling;
