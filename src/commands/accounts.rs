//! `relayguard accounts`: account locks (list, lock, unlock) and an account's
//! stolen-account signals (`why`), from Redis or from the running relay.

use super::{block_on, load};
use crate::clock::unix_now_ms;
use crate::limits::locks::Lock;
use crate::limits::store::Stores;
use crate::runtime::assemble::Loaded;
use std::path::Path;

/// Account locks: list, lock, unlock.
#[derive(clap::Subcommand)]
pub enum AccountsCommand {
    /// List locked accounts.
    List,
    /// Lock an account: all its mail is refused until unlocked.
    Lock {
        /// The login.
        login: String,
        /// Why (shown in the reply).
        #[arg(long, default_value = "locked by an administrator")]
        reason: String,
    },
    /// Unlock an account.
    Unlock {
        /// The login.
        login: String,
    },
    /// Show an account's stolen-account signals and score now (from Redis, or from the
    /// running relay's metrics endpoint when signals are kept in its memory), and its lock.
    Why {
        /// The login.
        login: String,
    },
}

/// Runs an accounts command.
pub fn run(path: &Path, command: AccountsCommand) -> Result<(), String> {
    let loaded = load(path)?;
    if let AccountsCommand::Why { login } = &command {
        print!("{}", signals_text(&loaded, login)?);
        return Ok(());
    }
    let settings = loaded.config.limit_store.as_ref().ok_or_else(|| {
        format!(
            "{}: no [limits] section: locks are not configured",
            path.display()
        )
    })?;
    let stores = Stores::open(settings, Default::default())?;
    let logins = &loaded.snapshot.policy.logins;
    block_on(async {
        match command {
            AccountsCommand::List => {
                for (login, lock) in stores.locks.list().await? {
                    // Logins and reasons may carry what a client typed: escaped, one row each.
                    let show = |t: &str| crate::log::Escaped(t).to_string();
                    println!(
                        "{}\tlocked since {}\t{}",
                        show(&login),
                        show(&lock.since.to_string()),
                        show(&lock.reason)
                    );
                }
                Ok(())
            }
            AccountsCommand::Lock { login, reason } => {
                let login = logins.normalise(&login);
                stores
                    .locks
                    .lock(&login, Lock::new(&reason, unix_now_ms()))
                    .await?;
                println!("{login} locked");
                Ok(())
            }
            AccountsCommand::Why { .. } => unreachable!("answered above"),
            AccountsCommand::Unlock { login } => {
                let login = logins.normalise(&login);
                if stores.locks.unlock(&login).await? {
                    println!("{login} unlocked");
                    Ok(())
                } else {
                    Err(format!("{login} is not locked"))
                }
            }
        }
    })
}

/// An account's signals and lock, described: from Redis when they are kept there, else
/// from the running relay (its metrics endpoint, which answers only this host).
pub fn signals_text(loaded: &Loaded, login: &str) -> Result<String, String> {
    let path = &loaded.config.path;
    let rules = loaded.config.abuse.as_ref().ok_or_else(|| {
        format!(
            "{}: no [abuse] section: stolen-account signals are not kept",
            path.display()
        )
    })?;
    let login = loaded.snapshot.policy.logins.normalise(login);
    let stores = loaded
        .config
        .limit_store
        .as_ref()
        .map(|settings| Stores::open(settings, Default::default()))
        .transpose()?;
    if let Some(stores) = stores.as_ref().filter(|s| s.redis.is_some()) {
        let book = crate::abuse::redis::RedisBook::new(stores.redis.clone().expect("filtered"));
        use crate::abuse::book::SignalBook as _;
        return block_on(async {
            let signals = book.peek(&login, unix_now_ms(), rules).await?;
            let mut out = crate::abuse::describe(&login, &signals, rules);
            if let Some(lock) = stores.locks.get(&login).await? {
                out.push_str(&format!("  locked since {}: {}\n", lock.since, lock.reason));
            }
            Ok(out)
        });
    }
    let mut addr = loaded.config.metrics_listen.ok_or_else(|| {
        format!(
            "{}: signals are kept in the relay's memory and it has no metrics endpoint to ask ([metrics] listen)",
            path.display()
        )
    })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    ask_relay(addr, &login)
}

/// `GET /signals/LOGIN` from the running relay's metrics endpoint.
fn ask_relay(addr: std::net::SocketAddr, login: &str) -> Result<String, String> {
    let text = block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| format!("the relay's metrics endpoint {addr} does not answer"))?
        .map_err(|e| format!("the relay's metrics endpoint {addr}: {e} (signals are kept in the running relay's memory)"))?;
        stream
            .write_all(format!("GET /signals/{login} HTTP/1.0\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(response)
    })?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("the relay answered: {}", body.trim()));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_abuse_or_an_endpoint_the_answer_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relayguard.toml");
        std::fs::write(&path, "[domains]\nprotected = [\"tugraz.at\"]\n").unwrap();
        let e = signals_text(&load(&path).unwrap(), "alice").unwrap_err();
        assert!(
            e.ends_with("no [abuse] section: stolen-account signals are not kept"),
            "{e}"
        );
        std::fs::write(&path, "[domains]\nprotected = [\"tugraz.at\"]\n[abuse]\n").unwrap();
        let e = signals_text(&load(&path).unwrap(), "alice").unwrap_err();
        assert!(e.contains("no metrics endpoint to ask"), "{e}");
        let e = run(&path, AccountsCommand::List).unwrap_err();
        assert!(
            e.ends_with("no [limits] section: locks are not configured"),
            "{e}"
        );
    }
}
