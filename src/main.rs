//! The relayguard command line: run the milter, check the configuration, explain a decision.

use clap::{Parser, Subcommand};
use relayguard::config::{Config, SocketSpec};
use relayguard::explain::{Question, explain};
use relayguard::service::Service;
use relayguard::{listen, reload};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    version,
    about = "A milter for outgoing mail relays: sender validation, DKIM signing, limits and audit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the milter protocol.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/relayguard/relayguard.toml")]
        config: PathBuf,
    },
    /// Validate the configuration and every file it names; exit non-zero on any error.
    CheckConfig {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/relayguard/relayguard.toml")]
        config: PathBuf,
    },
    /// Print the decision for a transaction and why, without a socket.
    Explain {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/relayguard/relayguard.toml")]
        config: PathBuf,
        /// SASL login of the session (omit for an unauthenticated client).
        #[arg(long)]
        login: Option<String>,
        /// Client IP address.
        #[arg(long)]
        client: Option<IpAddr>,
        /// Envelope sender (MAIL FROM); empty for the null sender.
        #[arg(long, default_value = "")]
        mail_from: String,
        /// Envelope recipient (RCPT TO); repeat for several.
        #[arg(long)]
        rcpt: Vec<String>,
        /// A message file whose headers are checked too.
        message: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Explain {
            config,
            login,
            client,
            mail_from,
            rcpt,
            message,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let message = match message
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
                login,
                client,
                mail_from,
                rcpts: rcpt,
                message,
            };
            let (report, accepted) = explain(&config.policy, &question);
            print!("{report}");
            if accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn check_config(path: PathBuf) -> ExitCode {
    match Config::load(&path) {
        Ok(config) => {
            let mut problems = Vec::new();
            let m = &config.milter;
            if let SocketSpec::Unix(socket) = &m.socket {
                match socket.parent() {
                    Some(dir) if !dir.is_dir() => {
                        problems.push(format!("socket directory {} does not exist", dir.display()))
                    }
                    _ => {}
                }
            }
            if let Some(owner) = &m.socket_owner
                && listen::user_id(owner).is_none()
            {
                problems.push(format!(
                    "{}: key `milter.socket_owner`: user `{owner}` does not exist",
                    path.display()
                ));
            }
            if let Some(group) = &m.socket_group
                && listen::group_id(group).is_none()
            {
                problems.push(format!(
                    "{}: key `milter.socket_group`: group `{group}` does not exist",
                    path.display()
                ));
            }
            if problems.is_empty() {
                let p = &config.policy;
                println!(
                    "{}: ok ({} protected domains, {} sender map entries, {} internal networks)",
                    path.display(),
                    p.protected.apexes().len(),
                    p.owners.map.len(),
                    p.internal_networks.len()
                );
                ExitCode::SUCCESS
            } else {
                for p in problems {
                    eprintln!("error: {p}");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let service = Service::new(config);
        let listener = match listen::bind(service.milter_config()).await {
            Ok(l) => l,
            Err(e) => {
                error!("cannot listen on {:?}: {e}", service.milter_config().socket);
                return ExitCode::FAILURE;
            }
        };
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        let hup_service = service.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                info!("SIGHUP: reloading");
                let service = hup_service.clone();
                let _ = tokio::task::spawn_blocking(move || service.reload()).await;
            }
        });
        if let Err(e) = reload::watch_files(service.clone()) {
            error!("cannot watch configuration files, reload with SIGHUP: {e}");
        }
        info!(socket = ?service.milter_config().socket, config = %path.display(), "relayguard listening");
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
            }
        };
        match relayguard::serve(service, listener, shutdown).await {
            Ok(()) => {
                info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("milter failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
