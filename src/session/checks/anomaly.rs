//! Stolen-account signals at end of headers: the login's message is recorded in the signal
//! book, scored, and its class's action taken: `log` (the message goes on), `tempfail`
//! (`451 4.7.1`), or `lock` (the existing account locks, the reason naming the signals, and
//! the optional `notify_command` run off the message path).

use crate::abuse::book::Observation;
use crate::abuse::{Action, decide, score};
use crate::audit::Verdict;
use crate::limits::locks::Lock;
use crate::metrics::{ActionLabels, SignalLabels};
use crate::session::decision::{Decision, Reply};
use crate::session::{AbuseFinding, Check, Ctx, Outcome, Step, Transaction};

/// Scores the login's recent sending and acts as its class says.
pub struct StolenAccount;

impl Check for StolenAccount {
    fn name(&self) -> &'static str {
        "stolen-account signals"
    }

    fn headers<'a>(&'a self, tx: &'a mut Transaction, cx: Ctx<'a>) -> Step<'a> {
        let (Some(rules), Some(book), Some((given, login))) = (
            tx.snapshot.abuse.clone(),
            cx.env.signals.clone(),
            tx.login(),
        ) else {
            return Step::Now(Outcome::Continue);
        };
        let (given, login) = (given.to_string(), login.to_string());
        let internal = cx
            .conn
            .addr
            .is_some_and(|a| tx.snapshot.policy.is_internal(a));
        let class = crate::limits::class_name(
            tx.snapshot.limits.as_ref(),
            cx.conn.daemon_name.as_deref(),
            Some(&login),
            internal,
        )
        .to_string();
        let protected = &tx.snapshot.policy.protected;
        let mut seen = Observation::new(
            cx.conn.addr,
            &tx.rcpts,
            &rules,
            tx.used.get("authentications_per_window").copied(),
            &|domain| protected.covers(domain),
        );
        seen.campus_client = internal;
        Step::Later(Box::pin(async move {
            let now = cx.env.now_ms();
            let signals = match book.observe(&login, &seen, now, &rules).await {
                Ok(signals) => signals,
                Err(e) => {
                    tracing::warn!(error = %e, "stolen-account signals unavailable");
                    return Outcome::Continue;
                }
            };
            let scored = score(&signals, &rules);
            for fired in &scored.fired {
                cx.env
                    .metrics
                    .abuse_signals
                    .get_or_create(&SignalLabels {
                        signal: fired.signal.to_string(),
                    })
                    .inc();
            }
            let action = decide(&scored, &rules, &class);
            if action == Action::None {
                return Outcome::Continue;
            }
            cx.env
                .metrics
                .abuse_actions
                .get_or_create(&ActionLabels {
                    action: action.name().to_string(),
                })
                .inc();
            let reason = scored.reason();
            tracing::warn!(
                login = %login,
                class,
                score = scored.total,
                action = action.name(),
                signals = %reason,
                monitor = tx.monitor,
                "stolen-account signals"
            );
            tx.abuse = Some(AbuseFinding {
                signals,
                score: scored.clone(),
                action,
            });
            let account = Account {
                given: &given,
                login: &login,
            };
            act(action, &reason, account, &rules, tx, cx, now).await
        }))
    }
}

/// The account acted on: the login as the client gave it (for replies) and normalised.
struct Account<'a> {
    given: &'a str,
    login: &'a str,
}

/// What the class's action does to this message (and, for `lock`, to the account).
async fn act(
    action: Action,
    reason: &str,
    account: Account<'_>,
    rules: &crate::abuse::Rules,
    tx: &Transaction,
    cx: Ctx<'_>,
    now: i64,
) -> Outcome {
    let Account { given, login } = account;
    let contact = match tx.snapshot.contact() {
        "" => String::new(),
        contact => format!("; contact {contact}"),
    };
    match action {
        Action::None | Action::Log => Outcome::Continue,
        Action::Tempfail => Outcome::Decided(Decision::refuse(
            "unusual_sending",
            Reply {
                code: "451",
                status: "4.7.1",
                text: format!(
                    "unusual sending from account {given} ({reason}); try again later{contact}"
                ),
            },
        )),
        Action::Lock => {
            let lock_reason = format!("unusual sending: {reason}");
            // In monitor mode the refusal is recorded, and the account stays open.
            if !tx.monitor
                && let Some(locks) = cx.env.locks.as_ref()
            {
                match locks.lock(login, Lock::new(&lock_reason, now)).await {
                    Ok(()) => {
                        cx.env.metrics.account_locks.inc();
                        notify(rules, login, &lock_reason, &tx.abuse, now, cx);
                    }
                    Err(e) => tracing::error!(
                        login = %login,
                        error = %e,
                        "cannot lock account"
                    ),
                }
            }
            let mut locked = Decision::refuse(
                "unusual_sending",
                Reply {
                    code: "550",
                    status: "5.7.1",
                    text: format!("account {given} is locked ({lock_reason}){contact}"),
                },
            );
            locked.verdict = Verdict::Lock;
            Outcome::Decided(locked)
        }
    }
}

/// Runs `notify_command` with the lock as JSON on its standard input, in the background,
/// killed after `notify_timeout`; the message never waits for it.
fn notify(
    rules: &crate::abuse::Rules,
    login: &str,
    reason: &str,
    finding: &Option<AbuseFinding>,
    now_ms: i64,
    cx: Ctx<'_>,
) {
    let Some(command) = rules.notify_command.clone() else {
        return;
    };
    let record = serde_json::json!({
        "event": "account_locked",
        "login": login,
        "reason": reason,
        "time": crate::clock::rfc3339_ms(now_ms),
        "host": cx.env.host,
        "score": finding.as_ref().map(|f| f.score.total),
        "signals": finding.as_ref().map(|f| f.signals),
    });
    let timeout = rules.notify_timeout;
    let login = login.to_string();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(command = %command[0], error = %e, "notify_command cannot start");
                return;
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(format!("{record}\n").as_bytes()).await;
        }
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) if out.status.success() => {
                tracing::info!(login = %login, "notify_command told of the lock")
            }
            Ok(Ok(out)) => tracing::error!(
                login = %login,
                status = %out.status,
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "notify_command failed"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "notify_command failed"),
            Err(_) => tracing::error!(
                timeout_s = timeout.as_secs(),
                "notify_command did not finish in time and was killed"
            ),
        }
    });
}
