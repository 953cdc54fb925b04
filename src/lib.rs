//! relayguard: a milter for outgoing mail relays.
//!
//! It refuses senders an account does not own ([`policy`]), is configured from
//! `relayguard.toml` ([`config`]) and speaks the milter protocol to Postfix and
//! Sendmail ([`milter`]).

pub mod config;
pub mod policy;
