//! relayguard: a milter for outgoing mail relays.
//!
//! Where things live (docs/ARCHITECTURE.md has the whole map):
//! - [`policy`], [`dkim`], [`limits`], [`abuse`], [`audit`]: the domains, pure where it
//!   matters;
//! - [`session`]: the transaction pipeline, a list of small checks, and the one place a
//!   decision becomes a reply, an audit record, metrics and a log line;
//! - [`milter`]: the indymilter adapter, a table of callbacks;
//! - [`config`]: `relayguard.toml`, parsed and validated, nothing read;
//! - [`ldap`]: ownership from the directory, Postfix's ldap_table behind the ownership seam;
//! - [`runtime`]: assembles the service from its files and runs it (sockets, signals, the
//!   one reload path);
//! - [`commands`]: the work behind each `relayguard` subcommand (main.rs only parses);
//! - [`bench`](mod@bench): a tool, not the service: the load generator behind `relayguard bench`.

pub mod abuse;
pub mod audit;
pub mod bench;
pub mod clock;
pub mod commands;
pub mod config;
pub mod dkim;
pub mod dns;
pub mod explain;
pub mod ldap;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod milter;
pub mod policy;
pub mod runtime;
pub mod session;
pub mod socket;
pub mod tomlfile;

/// A boxed future, as the I/O traits (counters, locks, ownership) return them.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
