//! A relay assembled in memory: the transaction pipeline with the policy from configuration
//! text, the sender map and keys from memory, counters in memory, an audit log and a lock
//! store in memory, and a pinned clock. No socket, no file, no Redis.

use relayguard::BoxFuture;
use relayguard::audit::Record;
use relayguard::audit::writer::{AuditSink, OnError};
use relayguard::config::Config;
use relayguard::dkim::keys;
use relayguard::dkim::schedule::Schedule;
use relayguard::dkim::signer::KeySet;
use relayguard::ldap::Directories;
use relayguard::limits::locks::{Lock, LockStore};
use relayguard::limits::store::{CounterStore, MemoryStore};
use relayguard::metrics::Metrics;
use relayguard::policy::senders::SenderMap;
use relayguard::session::decision::Answer;
use relayguard::session::flight::Flight;
use relayguard::session::{Env, Pipeline, Session, Snapshot};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// 2026-11-28T19:00:00Z: inside the watched 18:00-06:00 night (UTC here).
pub const T0_MS: i64 = 1_795_892_400_000;

/// The tugraz.at selectors (RSA and Ed25519), signing at T0.
pub const TUGRAZ_KEYS: &str = r#"
[[selector]]
domain = "tugraz.at"
name = "rsa-a"
algorithm = "rsa-sha256"
key = "tugraz.at.rsa-a.pem"
publish = 2025-12-01T00:00:00Z
active_from = 2026-01-01T00:00:00Z

[[selector]]
domain = "tugraz.at"
name = "ed-a"
algorithm = "ed25519-sha256"
key = "tugraz.at.ed-a.pem"
publish = 2025-12-01T00:00:00Z
active_from = 2026-01-01T00:00:00Z
"#;

/// The tu-graz.ac.at selector (RSA), to add to [`TUGRAZ_KEYS`].
pub const TU_GRAZ_AC_AT_KEY: &str = r#"
[[selector]]
domain = "tu-graz.ac.at"
name = "rsa-a"
algorithm = "rsa-sha256"
key = "tu-graz.ac.at.rsa-a.pem"
publish = 2025-12-01T00:00:00Z
active_from = 2026-01-01T00:00:00Z
"#;

/// An audit log in memory that can be made to fail, as a full disk does.
pub struct MemoryAudit {
    pub records: Mutex<Vec<Value>>,
    pub broken: AtomicBool,
    pub on_error: OnError,
}

impl AuditSink for MemoryAudit {
    fn write(&self, record: &Record<'_>) -> std::io::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("No space left on device"));
        }
        let value = serde_json::to_value(record).unwrap();
        self.records.lock().unwrap().push(value);
        Ok(())
    }

    fn on_error(&self) -> OnError {
        self.on_error
    }

    fn full_recipients(&self) -> bool {
        false
    }
}

/// Account locks in memory.
#[derive(Default)]
pub struct MemoryLocks(pub Mutex<BTreeMap<String, Lock>>);

impl LockStore for MemoryLocks {
    fn get<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<Option<Lock>, String>> {
        let lock = self.0.lock().unwrap().get(login).cloned();
        Box::pin(async move { Ok(lock) })
    }

    fn list(&self) -> BoxFuture<'_, Result<BTreeMap<String, Lock>, String>> {
        let all = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(all) })
    }

    fn lock<'a>(&'a self, login: &'a str, lock: Lock) -> BoxFuture<'a, Result<(), String>> {
        self.0.lock().unwrap().insert(login.to_string(), lock);
        Box::pin(async { Ok(()) })
    }

    fn unlock<'a>(&'a self, login: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        let was = self.0.lock().unwrap().remove(login).is_some();
        Box::pin(async move { Ok(was) })
    }
}

/// A relay assembled in memory.
pub struct Relay {
    pub env: Env,
    pub pipeline: Pipeline,
    pub audit: Arc<MemoryAudit>,
    pub locks: Arc<MemoryLocks>,
    pub now: Arc<AtomicI64>,
}

impl Relay {
    /// A relay from configuration text and sender-map text; with `[dkim]` in the text, the
    /// keys of `selectors` (fixture keys, by file name).
    pub fn new(text: &str, map: &str, selectors: &str, on_error: OnError) -> Self {
        let config = Config::parse(Path::new("/mem/relayguard.toml"), text).expect("config");
        let mut policy = config.policy.clone();
        policy.owners.map = Arc::new(
            SenderMap::parse(Path::new("sender_login_maps"), map, &policy.logins).unwrap(),
        );
        let now = Arc::new(AtomicI64::new(T0_MS));
        let keys = config.dkim.as_ref().map(|dkim| {
            let schedule =
                Schedule::parse(Path::new("selectors.toml"), selectors, Path::new("/mem")).unwrap();
            KeySet::build(schedule, dkim.signing.clone(), T0_MS / 1000, |selector| {
                let file = selector.key.file_name().unwrap().to_str().unwrap();
                let pem: &[u8] = match file {
                    "tugraz.at.rsa-a.pem" => include_bytes!("../fixtures/keys/tugraz.at.rsa-a.pem"),
                    "tugraz.at.ed-a.pem" => include_bytes!("../fixtures/keys/tugraz.at.ed-a.pem"),
                    _ => include_bytes!("../fixtures/keys/tu-graz.ac.at.rsa-a.pem"),
                };
                keys::parse(&selector.key, pem, selector.algorithm)
            })
            .unwrap()
        });
        let audit = Arc::new(MemoryAudit {
            records: Mutex::default(),
            broken: AtomicBool::new(false),
            on_error,
        });
        let locks = Arc::new(MemoryLocks::default());
        let limits = config.limits.is_some();
        let clock = now.clone();
        let clock: relayguard::clock::Clock = Arc::new(move || clock.load(Ordering::SeqCst));
        let metrics = Arc::new(Metrics::default());
        let directories = Directories::new(clock.clone(), metrics.ldap.clone());
        let directory = relayguard::runtime::assemble::directory(&config, &policy, &directories)
            .expect("the directory's settings");
        let ownership = Arc::new(relayguard::runtime::assemble::ownership(
            &config, &policy, directory,
        ));
        let env = Env {
            snapshot: arc_swap::ArcSwap::from_pointee(Snapshot {
                ownership,
                policy,
                keys,
                limits: config.limits.clone(),
                rollout: config.rollout.clone(),
                abuse: config.abuse.clone().map(Arc::new),
            }),
            counters: limits.then(|| Arc::new(MemoryStore::default()) as Arc<dyn CounterStore>),
            locks: limits.then(|| locks.clone() as Arc<dyn LockStore>),
            audit: Some(audit.clone()),
            metrics,
            clock,
            host: "relay1".into(),
            flight: Flight::default(),
            dns: Default::default(),
            signals: config.abuse.as_ref().map(|_| {
                Arc::new(relayguard::abuse::book::MemoryBook::default())
                    as Arc<dyn relayguard::abuse::book::SignalBook>
            }),
        };
        Relay {
            env,
            pipeline: Pipeline::standard(),
            audit,
            locks,
            now,
        }
    }

    /// Every audit record so far.
    pub fn records(&self) -> Vec<Value> {
        self.audit.records.lock().unwrap().clone()
    }

    /// The last audit record.
    pub fn last(&self) -> Value {
        self.records().pop().expect("a record")
    }

    /// The last record's verdict and reason.
    pub fn last_verdict(&self) -> (String, String) {
        let r = self.last();
        (
            r["verdict"].as_str().unwrap().into(),
            r["reason"].as_str().unwrap().into(),
        )
    }

    /// The metrics text.
    pub fn metrics(&self) -> String {
        self.env.metrics.encode()
    }
}

/// One message as an MTA reports it.
#[derive(Clone, Debug)]
pub struct Msg {
    /// The client's address ("" for unknown).
    pub client: &'static str,
    /// Its forward-confirmed name.
    pub name: Option<&'static str>,
    pub login: Option<&'static str>,
    pub mail_from: &'static str,
    pub rcpts: Vec<&'static str>,
    pub headers: Vec<(&'static str, &'static [u8])>,
}

/// What the MTA heard.
#[derive(Debug)]
pub struct Heard {
    /// The stage that ended the message (`mail`, `rcpt`, `headers`, `message`).
    pub stage: &'static str,
    /// Its answer.
    pub answer: Answer,
    /// The answer to each recipient (where the message got that far).
    pub rcpts: Vec<Answer>,
}

impl Heard {
    /// The refusal as the SMTP client sees it.
    pub fn reply(&self) -> String {
        match &self.answer {
            Answer::Refuse(r) => r.to_string(),
            other => panic!("expected a refusal, got {other:?} at {}", self.stage),
        }
    }

    /// The number of signatures of an acceptance.
    pub fn signatures(&self) -> usize {
        match &self.answer {
            Answer::Accept(a) => a.signatures.len(),
            other => panic!("expected an acceptance, got {other:?} at {}", self.stage),
        }
    }
}

/// Sends one message on a session as an MTA does.
pub async fn send_on(relay: &Relay, session: &mut Session, msg: &Msg) -> Heard {
    let (env, pipeline) = (&relay.env, &relay.pipeline);
    let heard = |stage, answer, rcpts| Heard {
        stage,
        answer,
        rcpts,
    };
    let answer = session
        .mail(env, pipeline, msg.mail_from.into(), msg.login, None)
        .await;
    if answer != Answer::Continue {
        return heard("mail", answer, vec![]);
    }
    let mut rcpts = Vec::new();
    for rcpt in &msg.rcpts {
        rcpts.push(
            session
                .rcpt(env, pipeline, rcpt.to_string(), Some("Q1".into()))
                .await,
        );
    }
    if !rcpts.contains(&Answer::Continue) {
        let last = rcpts.last().cloned().unwrap_or(Answer::Continue);
        return heard("rcpt", last, rcpts);
    }
    for (name, value) in &msg.headers {
        session.header(name.as_bytes(), value);
    }
    let answer = session.end_of_headers(env, pipeline, None).await;
    if answer != Answer::Continue {
        return heard("headers", answer, rcpts);
    }
    assert_eq!(session.body(b"hello\r\n"), Answer::Continue);
    let answer = session.end_of_message(env, pipeline).await;
    heard("message", answer, rcpts)
}

/// A session of a client, as its MTA connection reports it (the MTA allows changes).
pub fn session_of(msg: &Msg) -> Session {
    let mut session = Session::default();
    session.conn.addr = msg.client.parse::<IpAddr>().ok();
    session.conn.name = format!("[{}]", msg.client);
    session.conn.verified_name = msg.name.map(str::to_string);
    session.conn.can_modify = true;
    session
}

/// Sends one message on a new connection.
pub async fn send(relay: &Relay, msg: &Msg) -> Heard {
    send_on(relay, &mut session_of(msg), msg).await
}
