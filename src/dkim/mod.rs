//! DKIM signing: the selector schedule, keys, the body hash, relaxed header canonicalization,
//! the loaded key set and the streaming signer.

pub mod body;
pub mod cluster;
pub mod dns;
pub mod header;
pub mod keys;
pub mod record;
pub mod rotation;
pub mod schedule;
pub mod signer;
pub mod tooling;
