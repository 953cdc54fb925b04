//! The transaction pipeline: what a connection and a message carry, the ordered checks that
//! decide each stage, and the one path from a decision to the MTA, the audit log, the metrics
//! and the log. The milter adapter feeds it; it knows no milter protocol and no socket.
//!
//! A stage runs the checks in order; the first that does not say "go on" decides, and
//! [`decision::deliver`] turns that one decision into everything the world sees. The I/O a
//! check needs (counters, locks, ownership, audit, clock) comes through [`Env`] as traits,
//! so the whole pipeline runs in memory in tests.

pub mod checks;
pub mod decision;
pub mod flight;
pub mod pipeline;
pub mod rollout;

use pipeline::Stage;
pub use pipeline::{Check, Ctx, Outcome, Pipeline, Step};

use crate::audit::writer::AuditSink;
use crate::clock::Clock;
use crate::dkim::signer::{Field, KeySet, MessageSigner};
use crate::limits::locks::LockStore;
use crate::limits::store::CounterStore;
use crate::limits::{ClassLimits, LimitsPolicy, Used};
use crate::metrics::Metrics;
use crate::policy::hosts::HostName;
use crate::policy::mailbox::HeaderSet;
use crate::policy::senders::Sources;
use crate::policy::{Client, ClientKind, Policy};
use arc_swap::ArcSwap;
use decision::{Accepted, Answer, Decision, Modification};
use flight::{Flight, InFlightGuard};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Everything a message is decided and signed with; one immutable snapshot per reload, kept
/// by a message from MAIL to its verdict.
pub struct Snapshot {
    /// The sender policy.
    pub policy: Policy,
    /// Who owns which sender address: the configured sources, in order.
    pub ownership: Arc<Sources>,
    /// The DKIM keys, when signing is configured.
    pub keys: Option<KeySet>,
    /// The sending limits, when configured.
    pub limits: Option<LimitsPolicy>,
    /// Which refusals are enforced and which only recorded.
    pub rollout: rollout::Rollout,
    /// The stolen-account signals' rules, when `[abuse]` is configured.
    pub abuse: Option<Arc<crate::abuse::Rules>>,
}

impl Snapshot {
    /// Whom a refused sender should contact (`[limits] contact`; empty when not set).
    pub fn contact(&self) -> &str {
        self.limits
            .as_ref()
            .map(|l| l.contact.as_str())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("policy", &self.policy)
            .field("keys", &self.keys)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What every session shares: the current snapshot, and the service's I/O behind traits.
pub struct Env {
    /// The current snapshot (swapped whole on reload).
    pub snapshot: ArcSwap<Snapshot>,
    /// Limit counters, when limits are configured.
    pub counters: Option<Arc<dyn CounterStore>>,
    /// Account locks, when limits are configured.
    pub locks: Option<Arc<dyn LockStore>>,
    /// The audit log, when configured.
    pub audit: Option<Arc<dyn AuditSink>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clock (Unix milliseconds).
    pub clock: Clock,
    /// This host's name, for audit records.
    pub host: String,
    /// Messages in flight, and whether the service is draining.
    pub flight: Flight,
    /// What DNS said about each selector's key (activation waits for it when required).
    pub dns: Arc<crate::dkim::dns::DnsBook>,
    /// Where the stolen-account signals are kept, when `[abuse]` is configured.
    pub signals: Option<Arc<dyn crate::abuse::book::SignalBook>>,
}

impl Env {
    /// The current snapshot; a message keeps the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// What one MTA connection told us about its client.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// The client's address.
    pub addr: Option<IpAddr>,
    /// The client as logs show it: `name[addr]`, or `[addr]` when it has no name.
    pub name: String,
    /// `{daemon_name}`.
    pub daemon_name: Option<String>,
    /// The forward-confirmed host name (`{client_name}`, unless Sendmail's
    /// `{client_resolve}` says it is not confirmed).
    pub verified_name: Option<String>,
    /// The PTR name (`{client_ptr}`, else the name the MTA gave at connect).
    pub ptr_name: Option<String>,
    /// MAIL commands so far.
    pub messages: u64,
    /// Whether a message of this connection was counted against the connection limits.
    pub counted: bool,
    /// Whether the MTA lets relayguard change the sender and headers (masquerading).
    pub can_modify: bool,
}

/// The senders a robot's automatic message had before it was masqueraded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Masqueraded {
    /// The envelope sender as given, when rewritten.
    pub mail_from: Option<String>,
    /// The From address, when rewritten.
    pub from: Option<String>,
    /// The Sender address, when rewritten.
    pub sender: Option<String>,
}

/// One message from MAIL to its verdict.
pub struct Transaction {
    /// The snapshot it is decided with.
    pub snapshot: Arc<Snapshot>,
    /// How the policy sees the client.
    pub kind: ClientKind,
    /// The MAIL FROM argument as given.
    pub mail_from: String,
    /// Accepted recipients.
    pub rcpts: Vec<String>,
    /// The header fields that decide the sender.
    pub headers: HeaderSet,
    /// Every header field in order, kept for signing until end of headers.
    pub fields: Vec<Field>,
    /// The MTA's queue id, once known.
    pub queue_id: Option<String>,
    /// The From address, once decided.
    pub from: Option<String>,
    /// Its domain (normalised): what the signing plan goes by.
    pub from_domain: Option<String>,
    /// The Sender address, once decided.
    pub sender: Option<String>,
    /// Bytes of header and body so far.
    pub size: u64,
    /// The streaming signer, from end of headers.
    pub signer: Option<MessageSigner>,
    /// The client's sending limits, once looked up.
    pub limits: Option<ClassLimits>,
    /// Counter values that mattered, for the audit record.
    pub used: Used,
    /// This message's number on its connection (1 for the first MAIL).
    pub number_on_connection: u64,
    /// Whether the connection limits are still to be counted for this connection.
    pub count_connection: bool,
    /// Changes the MTA must make at end of message (masquerading).
    pub modifications: Vec<decision::Modification>,
    /// The original senders, when the message was masqueraded.
    pub masqueraded: Option<Masqueraded>,
    /// Whether this message's refusals are only recorded (monitor mode).
    pub monitor: bool,
    /// The login's stolen-account signals, when a class acted on them (for the audit record).
    pub abuse: Option<AbuseFinding>,
    /// In monitor mode, the reason the message would have been refused.
    pub would_refuse: Option<String>,
    /// In monitor mode, the recipients that would have been refused, and the last reason.
    refused_rcpts: (usize, Option<String>),
    /// Whether a refused recipient of this message has counted toward a lock already: a
    /// message that asks too much is one limit hit, however many recipients it names.
    pub rcpt_limit_hit_counted: std::sync::atomic::AtomicBool,
    /// An acceptance decided at end of headers that waits for end of message, where the
    /// MTA can still make the changes.
    deferred: Option<Decision>,
    _in_flight: InFlightGuard,
}

impl Transaction {
    /// The login as given and its normalised form, for an authenticated client.
    pub fn login(&self) -> Option<(&str, &str)> {
        match &self.kind {
            ClientKind::Authenticated { given, login } => Some((given, login)),
            _ => None,
        }
    }

    /// The login as given, or `-`.
    pub fn login_as_given(&self) -> &str {
        self.login().map_or("-", |(given, _)| given)
    }
}

/// What the stolen-account signals said about a message's login.
#[derive(Debug, Clone, PartialEq)]
pub struct AbuseFinding {
    /// The signals.
    pub signals: crate::abuse::Signals,
    /// Their score.
    pub score: crate::abuse::Score,
    /// What the class did.
    pub action: crate::abuse::Action,
}

/// One MTA connection: its client, and the message under way.
#[derive(Default)]
pub struct Session {
    /// The client.
    pub conn: Connection,
    /// The message between MAIL and its verdict.
    pub tx: Option<Transaction>,
}

impl Session {
    /// MAIL FROM: a new message from `login` (`{auth_authen}`), decided by the pipeline.
    pub async fn mail(
        &mut self,
        env: &Env,
        pipeline: &Pipeline,
        mail_from: String,
        login: Option<&str>,
        queue_id: Option<String>,
    ) -> Answer {
        let snapshot = env.snapshot();
        let conn = &mut self.conn;
        let kind = snapshot.policy.classify(Client {
            addr: conn.addr,
            login,
            name: HostName {
                verified: conn.verified_name.as_deref(),
                reverse: conn.ptr_name.as_deref(),
            },
        });
        conn.messages += 1;
        let mut tx = Transaction {
            snapshot,
            kind,
            mail_from,
            rcpts: Vec::new(),
            headers: HeaderSet::default(),
            fields: Vec::new(),
            queue_id,
            from: None,
            from_domain: None,
            sender: None,
            size: 0,
            signer: None,
            limits: None,
            used: Used::new(),
            number_on_connection: conn.messages,
            count_connection: !conn.counted,
            modifications: Vec::new(),
            masqueraded: None,
            monitor: false,
            abuse: None,
            would_refuse: None,
            refused_rcpts: (0, None),
            rcpt_limit_hit_counted: std::sync::atomic::AtomicBool::new(false),
            deferred: None,
            _in_flight: env.flight.begin(),
        };
        tx.monitor = monitored(&tx, conn);
        let started = Instant::now();
        let outcome = pipeline
            .stage(Stage::Mail, &mut tx, cx_of(env, &self.conn))
            .await;
        env.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        if !tx.count_connection {
            self.conn.counted = true;
        }
        let cx = cx_of(env, &self.conn);
        match outcome {
            Outcome::Decided(d) if tx.monitor && d.monitorable() => {
                pipeline.record_only(d, &mut tx, cx).await;
                self.tx = Some(tx);
                Answer::Continue
            }
            Outcome::Decided(d) => pipeline.deliver(d, &mut tx, cx).await,
            Outcome::Continue => {
                self.tx = Some(tx);
                Answer::Continue
            }
        }
    }

    /// RCPT TO: a refusal refuses this recipient only.
    pub async fn rcpt(
        &mut self,
        env: &Env,
        pipeline: &Pipeline,
        rcpt: String,
        queue_id: Option<String>,
    ) -> Answer {
        let Some(tx) = self.tx.as_mut() else {
            return Answer::Refuse(decision::Reply::fault("RCPT without MAIL"));
        };
        if tx.queue_id.is_none() {
            tx.queue_id = queue_id;
        }
        if tx.would_refuse.is_some() {
            // Monitor mode, already refused as a whole: it passes as it is.
            tx.rcpts.push(rcpt);
            return Answer::Continue;
        }
        let cx = cx_of(env, &self.conn);
        let started = Instant::now();
        let outcome = pipeline.stage(Stage::Rcpt(&rcpt), tx, cx).await;
        env.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Decided(d) if tx.monitor && d.monitorable() => {
                pipeline.record_only(d.for_rcpt(&rcpt), tx, cx).await;
                tx.rcpts.push(rcpt);
                Answer::Continue
            }
            Outcome::Decided(d) => pipeline.deliver(d.for_rcpt(&rcpt), tx, cx).await,
            Outcome::Continue => {
                tx.rcpts.push(rcpt);
                Answer::Continue
            }
        }
    }

    /// One header field, as the MTA passed it (value without the leading space).
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        if let Some(tx) = self.tx.as_mut() {
            tx.headers.add(name, value);
            tx.size += (name.len() + value.len() + 4) as u64;
            tx.fields.push((name.into(), value.into()));
        }
    }

    /// End of headers: the sender headers and the signing plan are decided.
    pub async fn end_of_headers(
        &mut self,
        env: &Env,
        pipeline: &Pipeline,
        queue_id: Option<String>,
    ) -> Answer {
        let Some(mut tx) = self.tx.take() else {
            return Answer::Refuse(decision::Reply::fault("end of headers without MAIL"));
        };
        if tx.queue_id.is_none() {
            tx.queue_id = queue_id;
        }
        tx.size += 2;
        // Monitor mode: a message none of whose recipients would have been accepted would
        // not have been accepted either.
        if let (n, Some(reason)) = &tx.refused_rcpts
            && *n == tx.rcpts.len()
            && tx.would_refuse.is_none()
        {
            tx.would_refuse = Some(reason.clone());
        }
        if tx.would_refuse.is_some() {
            self.tx = Some(tx);
            return Answer::Continue;
        }
        let cx = cx_of(env, &self.conn);
        let started = Instant::now();
        let outcome = pipeline.stage(Stage::Headers, &mut tx, cx).await;
        env.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Decided(d) if tx.monitor && d.monitorable() => {
                pipeline.record_only(d, &mut tx, cx).await;
                self.tx = Some(tx);
                Answer::Continue
            }
            // Changes can be made only at end of message: the acceptance waits for it.
            Outcome::Decided(d) if d.reply.is_none() && !tx.modifications.is_empty() => {
                tx.deferred = Some(d);
                self.tx = Some(tx);
                Answer::Continue
            }
            Outcome::Decided(d) => pipeline.deliver(d, &mut tx, cx).await,
            Outcome::Continue => {
                self.tx = Some(tx);
                Answer::Continue
            }
        }
    }

    /// A body chunk (CRLF line ends), streamed into the signer.
    pub fn body(&mut self, chunk: &[u8]) -> Answer {
        let Some(tx) = self.tx.as_mut() else {
            return Answer::Refuse(decision::Reply::fault("body without a message"));
        };
        match tx.signer.as_mut() {
            Some(signer) => {
                signer.body(chunk);
                tx.size += chunk.len() as u64;
                Answer::Continue
            }
            // Decided already, passing unsigned: only its size counts.
            None if tx.would_refuse.is_some() || tx.deferred.is_some() => {
                tx.size += chunk.len() as u64;
                Answer::Continue
            }
            None => Answer::Refuse(decision::Reply::fault(
                "body without a message being signed",
            )),
        }
    }

    /// End of message: the signatures are made and the message accepted (or not).
    pub async fn end_of_message(&mut self, env: &Env, pipeline: &Pipeline) -> Answer {
        let Some(mut tx) = self.tx.take() else {
            return Answer::Refuse(decision::Reply::fault("end of message without MAIL"));
        };
        if let Some(reason) = tx.would_refuse.take() {
            // Monitor mode: recorded when decided; the message passes, unsigned, saying why.
            let header = tx.snapshot.rollout.header.clone();
            return Answer::Accept(Accepted {
                signatures: Vec::new(),
                modifications: header
                    .map(|name| Modification::AddHeader {
                        name,
                        value: reason,
                    })
                    .into_iter()
                    .collect(),
            });
        }
        let cx = cx_of(env, &self.conn);
        let outcome = match tx.deferred.take() {
            Some(d) => Outcome::Decided(d),
            None => pipeline.stage(Stage::Message, &mut tx, cx).await,
        };
        match outcome {
            Outcome::Decided(d) => pipeline.deliver(d, &mut tx, cx).await,
            Outcome::Continue => {
                Answer::Refuse(decision::Reply::fault("end of message without a decision"))
            }
        }
    }

    /// The MTA abandoned the message.
    pub fn abort(&mut self) {
        self.tx = None;
    }
}

fn cx_of<'a>(env: &'a Env, conn: &'a Connection) -> Ctx<'a> {
    Ctx { env, conn }
}

/// Whether the rollout monitors this message.
fn monitored(tx: &Transaction, conn: &Connection) -> bool {
    let snapshot = &tx.snapshot;
    snapshot.rollout.monitors_client(
        snapshot.limits.as_ref(),
        conn.daemon_name.as_deref(),
        tx.login().map(|(_, login)| login),
        conn.addr.is_some_and(|a| snapshot.policy.is_internal(a)),
    )
}
