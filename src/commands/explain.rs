//! `relayguard explain`: the decision for a transaction and why, with the rollout, the
//! limits, the counters and the stolen-account signals that apply, without a socket.

use super::{accounts::signals_text, block_on, load};
use crate::clock::unix_now_ms;
use crate::explain::{Question, explain, explain_limits, explain_rollout};
use crate::limits::LimitsPolicy;
use crate::limits::store::{StoreSettings, Stores};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The transaction to explain.
#[derive(clap::Args)]
pub struct ExplainArgs {
    /// SASL login of the session (omit for an unauthenticated client).
    #[arg(long)]
    login: Option<String>,
    /// Client IP address.
    #[arg(long)]
    client: Option<IpAddr>,
    /// The client's forward-confirmed host name, as Postfix's `{client_name}`.
    #[arg(long)]
    client_name: Option<String>,
    /// Envelope sender (MAIL FROM); empty for the null sender.
    #[arg(long, default_value = "")]
    mail_from: String,
    /// Envelope recipient (RCPT TO); repeat for several.
    #[arg(long)]
    rcpt: Vec<String>,
    /// Postfix's `{daemon_name}` (selects classes such as `eas`).
    #[arg(long)]
    daemon_name: Option<String>,
    /// A message file whose headers are checked too.
    message: Option<PathBuf>,
}

/// Prints the explanation; exit status 0 when the message would be accepted, 1 when not,
/// 2 when the configuration or the message file cannot be read.
pub fn run(path: &Path, args: ExplainArgs) -> ExitCode {
    let message = match args
        .message
        .map(|m| std::fs::read(&m).map_err(|e| (m, e)))
        .transpose()
    {
        Ok(m) => m,
        Err((path, e)) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let question = Question {
        login: args.login,
        client: args.client,
        client_name: args.client_name,
        mail_from: args.mail_from,
        rcpts: args.rcpt,
        message,
    };
    match report(path, &question, args.daemon_name.as_deref()) {
        Ok((text, accepted)) => {
            print!("{text}");
            ExitCode::from(if accepted { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The explanation of `question` under the configuration at `path`, and whether the
/// message would be accepted.
pub fn report(
    path: &Path,
    question: &Question,
    daemon_name: Option<&str>,
) -> Result<(String, bool), String> {
    let loaded = load(path)?;
    let policy = &loaded.snapshot.policy;
    let explained = block_on(async { Ok(explain(&loaded.snapshot, question).await) });
    let (mut out, accepted) = explained.unwrap_or_else(|e| (format!("error: {e}\n"), false));
    out.push_str(&explain_rollout(
        &loaded.snapshot.rollout,
        loaded.snapshot.limits.as_ref(),
        policy,
        question,
        daemon_name,
    ));
    if let Some(limits) = &loaded.snapshot.limits {
        out.push_str(&explain_limits(limits, policy, question, daemon_name));
        if let (Some(settings), Some(login)) = (&loaded.config.limit_store, &question.login) {
            let login = policy.logins.normalise(login);
            out.push_str(&current_counters(settings, limits, &login));
        }
    }
    if let (Some(_), Some(login)) = (&loaded.config.abuse, &question.login) {
        match signals_text(&loaded, login) {
            Ok(text) => out.push_str(&format!("stolen-account signals of {text}")),
            Err(e) => out.push_str(&format!("stolen-account signals: {e}\n")),
        }
    }
    Ok((out, accepted))
}

/// A login's counters as they stand: from Redis when configured; in-memory counters live
/// only inside the running service.
fn current_counters(settings: &StoreSettings, limits: &LimitsPolicy, login: &str) -> String {
    if settings.redis.is_none() {
        return "counters: in memory inside the running service (not visible here)\n".into();
    }
    let read = async {
        let stores = Stores::open(settings, Default::default())?;
        let now = unix_now_ms();
        let counters = crate::limits::inspect(stores.counters.as_ref(), limits, login, now)
            .await
            .map_err(|e| e.to_string())?;
        let lock = stores.locks.get(login).await?;
        let mut out = String::from("counters:");
        for (name, value) in counters {
            out.push_str(&format!(" {name} {value}"));
        }
        out.push_str(&format!(
            "; lock: {}\n",
            lock.map(|l| format!("locked since {} ({})", l.since, l.reason))
                .unwrap_or_else(|| "none".into())
        ));
        Ok(out)
    };
    block_on(read).unwrap_or_else(|e| format!("counters: cannot read Redis: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spoof_is_explained_as_refused_with_its_reason() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/relayguard.toml"));
        let question = Question {
            login: Some("alice".into()),
            client: Some("203.0.113.7".parse().unwrap()),
            client_name: None,
            mail_from: "rector@tugraz.at".into(),
            rcpts: vec!["friend@example.org".into()],
            message: None,
        };
        let (text, accepted) = report(path, &question, None).unwrap();
        assert!(!accepted);
        assert!(
            text.contains("<rector@tugraz.at> is not owned by"),
            "{text}"
        );
        let question = Question {
            mail_from: "alice@tugraz.at".into(),
            ..question
        };
        assert!(report(path, &question, None).unwrap().1);
    }
}
