//! The relayguard command line: arguments in, a library call ([`relayguard::commands`]),
//! its result out.

use clap::{Parser, Subcommand};
use relayguard::commands::{
    self, accounts::AccountsCommand, audit::AuditCommand, bench::BenchArgs, exit_code,
    explain::ExplainArgs, keys::KeysCommand,
};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "A milter for outgoing mail relays: sender validation, DKIM signing, limits and audit"
)]
struct Cli {
    /// Configuration file (every command reads the same one).
    #[arg(
        long,
        short,
        global = true,
        env = "RELAYGUARD_CONFIG",
        default_value = "/etc/relayguard/relayguard.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the milter protocol.
    Run,
    /// Validate the configuration and every file it names; exit non-zero on any error.
    CheckConfig {
        /// The user the service runs as: checks that it can read the keys and write the
        /// socket directory and audit log (skipped when the user does not exist).
        #[arg(long, default_value = "relayguard")]
        service_user: String,
        /// Do not look up the selectors' DNS records (nor the directory).
        #[arg(long)]
        offline: bool,
    },
    /// Print the decision for a transaction and why, without a socket.
    Explain(ExplainArgs),
    /// Load a milter as Postfix does and report throughput, latency, outcomes and, for a
    /// given server PID, CPU per message and peak RSS.
    Bench(BenchArgs),
    /// Account locks: list, lock, unlock.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// DKIM key tooling: generate keys, print DNS records, show rotation status.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print a shell completion script (the package installs them).
    Completions {
        /// bash, zsh or fish.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config;
    match cli.command {
        Command::Run => {
            init_logging();
            relayguard::runtime::run(&config)
        }
        Command::CheckConfig {
            service_user,
            offline,
        } => commands::check::run(&config, &service_user, offline),
        Command::Explain(args) => commands::explain::run(&config, args),
        Command::Audit { command } => commands::audit::run(command),
        Command::Bench(args) => exit_code(commands::bench::run(args)),
        Command::Accounts { command } => exit_code(commands::accounts::run(&config, command)),
        Command::Keys { command } => exit_code(commands::keys::run(&config, command)),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "relayguard",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}

/// The service's log: logfmt on standard error (systemd's journal), level from RUST_LOG.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .fmt_fields(relayguard::log::Logfmt)
        .init();
}
