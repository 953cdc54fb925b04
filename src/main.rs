//! The relayguard command line: arguments in, a library call, its result out.

use clap::{Parser, Subcommand};
use relayguard::clock::{unix_now, unix_now_ms};
use relayguard::dkim::keys::KeyKind;
use relayguard::dkim::schedule::format_time;
use relayguard::dkim::tooling;
use relayguard::explain::{Question, explain};
use relayguard::limits::locks::Lock;
use relayguard::limits::store::Stores;
use relayguard::runtime::assemble::{self, Loaded};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
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
    Explain {
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
    },
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

/// `relayguard bench`: a milter load, or with `--ceiling` a key's signing rate.
#[derive(clap::Args)]
struct BenchArgs {
    /// `unix:/path` or `inet:PORT@HOST` of the milter.
    #[arg(long, default_value = "inet:8891@127.0.0.1")]
    target: String,
    /// Concurrent connections.
    #[arg(long, short = 'n', default_value_t = 8)]
    connections: usize,
    /// Messages per connection.
    #[arg(long, short = 'm', default_value_t = 100)]
    messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 10_000)]
    size: usize,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    rcpts: usize,
    /// SASL login.
    #[arg(long, default_value = "alice")]
    login: String,
    /// Header From and envelope sender.
    #[arg(long, default_value = "alice@tugraz.at")]
    from: String,
    /// Distinct logins: with N > 1, message k sends as login `LOGIN<k mod N>` from
    /// `LOGIN<k mod N>@DOMAIN` (DOMAIN from --from), so a directory sees N different users.
    #[arg(long, default_value_t = 1)]
    logins: usize,
    /// The milter's PID, for CPU and memory figures.
    #[arg(long)]
    pid: Option<u32>,
    /// Instead of loading a milter, measure the signing ceiling of this key file: how
    /// many signatures per second `--threads` threads make with nothing else to do.
    #[arg(long, value_name = "KEY_FILE")]
    ceiling: Option<PathBuf>,
    /// Threads for `--ceiling`.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds for `--ceiling`.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

#[derive(Subcommand)]
enum AccountsCommand {
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

#[derive(Subcommand)]
enum AuditCommand {
    /// Summarise audit files (plain, rotated or gzip'd) per login.
    Report {
        /// Only records at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only records before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only this login.
        #[arg(long)]
        login: Option<String>,
        /// table, json, csv or html (one self-contained page, the chain verified on top).
        #[arg(long, default_value = "table")]
        format: String,
        /// Public key that checks checkpoints (html; repeat for older keys).
        #[arg(long)]
        key: Vec<PathBuf>,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Audit files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Walk the hash chain through audit files (oldest first, plain or gzip'd) and report
    /// the first broken link; exits 1 when the chain is broken or, with --key, unproven.
    Verify {
        /// Public key that checks checkpoints (repeat for older keys).
        #[arg(long)]
        key: Vec<PathBuf>,
        /// The relay's `audit.checkpoint_minutes`: with --key, records that go longer
        /// without a checkpoint (plus 5 %, at least 5 s) are a break.
        #[arg(long, default_value_t = 60)]
        checkpoint_minutes: u32,
        /// An outside witness of the checkpoints: the `audit.witness_file`, a saved log of
        /// the service, or `journal` (the systemd journal).
        #[arg(long)]
        witness: Option<String>,
        /// text or json.
        #[arg(long, default_value = "text")]
        format: String,
        /// Audit files, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Make an Ed25519 checkpoint key: FILE (private, mode 0600) and FILE.pub (for auditors).
    Keygen {
        /// Where the private key goes.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a private key (mode 0600) and add its selector to selectors.toml.
    Generate {
        /// Signing domain (d=).
        #[arg(long)]
        domain: String,
        /// Selector name (s=).
        #[arg(long)]
        selector: String,
        /// rsa-2048, rsa-3072, rsa-4096 or ed25519.
        #[arg(long, default_value = "rsa-2048")]
        algorithm: String,
        /// When the DNS record goes out (RFC 3339; default now).
        #[arg(long)]
        publish: Option<String>,
        /// When it starts signing (RFC 3339; default publish + 48 h).
        #[arg(long)]
        active_from: Option<String>,
        /// Print the stanza instead of appending it to selectors.toml.
        #[arg(long)]
        print: bool,
    },
    /// Give every protected domain without any selector an RSA-2048 key that signs at once
    /// (the package runs this on first install; publish the records with `keys dns`).
    Bootstrap,
    /// Print the DNS TXT records that must be published now, later, and may be removed.
    Dns,
    /// Show per domain what signs now, what is next and when, and what is overdue.
    Status,
    /// Put the records of selectors whose `publish` has come into the zone and take out
    /// those retired past the grace period (RFC 2136, [dkim.publish]).
    Publish {
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// One rotation pass ([dkim.rotation]): make the successor keys that are due, set
    /// retire_at, remove long-retired selectors, then publish (for a cron job or timer on
    /// one host of a cluster).
    Rotate {
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
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
        } => check_config(&config, &service_user, offline),
        Command::Explain {
            login,
            client,
            client_name,
            mail_from,
            rcpt,
            daemon_name,
            message,
        } => {
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
                client_name,
                mail_from,
                rcpts: rcpt,
                message,
            };
            explain_command(&config, &question, daemon_name.as_deref())
        }
        Command::Audit { command } => audit_command(command),
        Command::Bench(args) => exit_code(bench_command(args)),
        Command::Accounts { command } => exit_code(accounts_command(&config, command)),
        Command::Keys { command } => exit_code(keys_command(&config, command)),
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

/// Success, or the error on standard error and exit status 1.
fn exit_code(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration and every file it names.
fn load(path: &Path) -> Result<Loaded, String> {
    let directories = relayguard::ldap::Directories::standalone();
    assemble::load(path, unix_now(), &directories).map_err(|e| e.to_string())
}

/// A single-threaded runtime for one command's I/O.
fn block_on<T>(future: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(future)
}

fn check_config(path: &Path, service_user: &str, offline: bool) -> ExitCode {
    let loaded = match load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The same checks every reload runs, then what the service user needs, then whether
    // the directory answers (a warning: it may be down now and fine later).
    let mut found = relayguard::runtime::preflight::check_config(&loaded, service_user, unix_now());
    if !offline && let (Some(live), Some(keys)) = (live_dns(&loaded), loaded.snapshot.keys.as_ref())
    {
        let now = unix_now();
        for entry in keys.entries() {
            let s = &entry.selector;
            let state = &live[&(s.domain.clone(), s.name.clone())];
            println!("dns: {}._domainkey.{} {state}", s.name, s.domain);
            if s.is_active(now) && state != "published" {
                found.warnings.push(format!(
                    "selector {} of {} signs by the schedule but DNS does not serve its key ({state}){}",
                    s.name,
                    s.domain,
                    if keys.config.require_dns {
                        "; the previous selector signs meanwhile"
                    } else {
                        "; receivers cannot verify its signatures (require_dns = true would wait)"
                    }
                ));
            }
        }
    }
    if let Some(directory) = loaded.directory.as_ref().filter(|_| !offline) {
        match block_on(directory.probe()) {
            Ok(what) => println!("directory: {what}"),
            Err(e) => found.warnings.push(format!(
                "{}: {e}; until it answers, senders it must decide on get 451",
                directory.settings().origin.display()
            )),
        }
    }
    for w in &found.warnings {
        eprintln!("warning: {w}");
    }
    if !found.errors.is_empty() {
        for e in &found.errors {
            eprintln!("error: {e}");
        }
        return ExitCode::FAILURE;
    }
    let p = &loaded.snapshot.policy;
    println!(
        "{}: ok ({} protected domains, {} sender map entries, {} internal networks, {} DKIM keys)",
        path.display(),
        p.protected.apexes().len(),
        p.owners.map.len(),
        p.internal_networks.len(),
        loaded
            .snapshot
            .keys
            .as_ref()
            .map_or(0, |k| k.entries().len())
    );
    ExitCode::SUCCESS
}

fn explain_command(path: &Path, question: &Question, daemon_name: Option<&str>) -> ExitCode {
    let loaded = match load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let policy = &loaded.snapshot.policy;
    let explained = block_on(async { Ok(explain(&loaded.snapshot, question).await) });
    let (report, accepted) = explained.unwrap_or_else(|e| (format!("error: {e}\n"), false));
    print!("{report}");
    print!(
        "{}",
        relayguard::explain::explain_rollout(
            &loaded.snapshot.rollout,
            loaded.snapshot.limits.as_ref(),
            policy,
            question,
            daemon_name
        )
    );
    if let Some(limits) = &loaded.snapshot.limits {
        print!(
            "{}",
            relayguard::explain::explain_limits(limits, policy, question, daemon_name)
        );
        if let (Some(settings), Some(login)) = (&loaded.config.limit_store, &question.login) {
            let login = policy.logins.normalise(login);
            print!("{}", current_counters(settings, limits, &login));
        }
    }
    if let (Some(_), Some(login)) = (&loaded.config.abuse, &question.login) {
        match signals_text(&loaded, login) {
            Ok(text) => print!("stolen-account signals of {text}"),
            Err(e) => println!("stolen-account signals: {e}"),
        }
    }
    if accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A login's counters as they stand: from Redis when configured; in-memory counters live
/// only inside the running service.
fn current_counters(
    settings: &relayguard::limits::store::StoreSettings,
    limits: &relayguard::limits::LimitsPolicy,
    login: &str,
) -> String {
    if settings.redis.is_none() {
        return "counters: in memory inside the running service (not visible here)\n".into();
    }
    let read = async {
        let stores = Stores::open(settings, Default::default())?;
        let now = unix_now_ms();
        let counters = relayguard::limits::inspect(stores.counters.as_ref(), limits, login, now)
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

fn audit_command(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Report {
            since,
            until,
            login,
            format,
            key,
            output,
            files,
        } => exit_code(audit_report(
            since,
            until,
            login,
            &format,
            &key,
            output.as_deref(),
            &files,
        )),
        AuditCommand::Verify {
            key,
            checkpoint_minutes,
            witness,
            format,
            files,
        } => {
            let result = audit_keys(&key).and_then(|keys| {
                use relayguard::audit::{verify, witness as w};
                let witnesses = match &witness {
                    Some(source) => w::read(source).map_err(|e| e.to_string())?,
                    None => Vec::new(),
                };
                let verifier = verify::Verifier::new(keys)
                    .checkpoint_minutes(checkpoint_minutes.max(1))
                    .witnesses(witnesses);
                verify::walk_files(&files, verifier).map_err(|e| e.to_string())
            });
            match (result, format.as_str()) {
                (Err(e), _) => exit_code(Err(e)),
                (Ok(v), "json") => {
                    say(serde_json::to_string_pretty(&v).expect("serialisable"));
                    if v.intact() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                (Ok(v), "text") => {
                    let _ = std::io::Write::write_all(
                        &mut std::io::stdout().lock(),
                        v.render().as_bytes(),
                    );
                    if v.intact() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                (Ok(_), other) => exit_code(Err(format!("--format `{other}`: use text or json"))),
            }
        }
        AuditCommand::Keygen { out, force } => exit_code(audit_keygen(&out, force)),
    }
}

fn audit_keys(files: &[PathBuf]) -> Result<Vec<relayguard::audit::chain::VerifyingKey>, String> {
    files
        .iter()
        .map(|f| {
            let pem = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            relayguard::audit::chain::VerifyingKey::from_pem(&pem)
                .map_err(|e| format!("{}: {e}", f.display()))
        })
        .collect()
}

fn audit_keygen(out: &Path, force: bool) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (private, public) = relayguard::audit::chain::CheckpointKey::generate()?;
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options
        .open(out)
        .map_err(|e| format!("{}: {e} (--force replaces a key)", out.display()))?;
    file.write_all(private.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    std::fs::write(&public_path, &public).map_err(|e| format!("{}: {e}", public_path.display()))?;
    let key = relayguard::audit::chain::VerifyingKey::from_pem(public.as_bytes())?;
    say(format!(
        "checkpoint key {} written to {} (keep it on the relay, apart from the DKIM keys)\npublic key for auditors: {}",
        key.id,
        out.display(),
        public_path.display()
    ));
    Ok(())
}

fn audit_report(
    since: Option<String>,
    until: Option<String>,
    login: Option<String>,
    format: &str,
    keys: &[PathBuf],
    output: Option<&Path>,
    files: &[PathBuf],
) -> Result<(), String> {
    use relayguard::audit::report::{Filter, Format, Report};
    let format = match format {
        "table" => Some(Format::Table),
        "json" => Some(Format::Json),
        "csv" => Some(Format::Csv),
        "html" => None,
        other => return Err(format!("--format `{other}`: use table, json, csv or html")),
    };
    let filter = Filter {
        since: since.as_deref().map(parse_time).transpose()?,
        until: until.as_deref().map(parse_time).transpose()?,
        login,
    };
    let (report, text) = match format {
        Some(format) => {
            let report = Report::read(files, &filter).map_err(|e| e.to_string())?;
            let text = report.render(format);
            (report, text)
        }
        None => {
            let mut chain = relayguard::audit::verify::Verifier::new(audit_keys(keys)?);
            let report = Report::read_walking(files, &filter, Some(&mut chain))
                .map_err(|e| e.to_string())?;
            let source = relayguard::audit::html::Source {
                files: files.iter().map(|f| f.display().to_string()).collect(),
                generated: relayguard::clock::rfc3339_ms(relayguard::clock::unix_now_ms()),
            };
            let text = relayguard::audit::html::render(&report, Some(&chain.finish()), &source);
            (report, text)
        }
    };
    for s in &report.skipped {
        eprintln!(
            "warning: {}:{}: skipped malformed record: {}",
            s.file, s.line, s.error
        );
    }
    match output {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
            Ok(())
        }
    }
}

/// Prints a line of the report; a closed pipe (`| head`) ends it without a panic.
fn say(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn bench_command(args: BenchArgs) -> Result<(), String> {
    if let Some(key) = args.ceiling {
        let duration = std::time::Duration::from_secs_f64(args.seconds.max(0.1));
        let (algorithm, rate) = relayguard::bench::signing_ceiling(&key, args.threads, duration)?;
        say(format!(
            "signing ceiling: {rate:.0} signatures/s ({algorithm}, {} threads, {:.3} ms CPU per signature)",
            args.threads,
            args.threads as f64 * 1000.0 / rate.max(1.0)
        ));
        return Ok(());
    }
    let load = relayguard::bench::Load {
        target: args.target,
        connections: args.connections,
        messages: args.messages,
        size: args.size,
        rcpts: args.rcpts,
        login: args.login,
        from: args.from,
        logins: args.logins.max(1),
    };
    let before = args.pid.and_then(relayguard::bench::process_stats);
    let results = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .and_then(|rt| rt.block_on(relayguard::bench::run(&load)))
        .map_err(|e| e.to_string())?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let n = results.latencies.len();
    say(format!(
        "{n} messages of {} bytes, {} connections, {:.2} s: {:.0} messages/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        load.size,
        load.connections,
        results.elapsed.as_secs_f64(),
        results.rate(),
        ms(results.percentile(0.5)),
        ms(results.percentile(0.99)),
        ms(results.percentile(1.0))
    ));
    say(format!(
        "signed {}, accepted unsigned {}, rejected {}, tempfailed {}",
        results.signed, results.unsigned, results.rejected, results.tempfailed
    ));
    if load.logins > 1 {
        say(format!("{} distinct logins", load.logins.min(n)));
    }
    if let (Some((cpu0, _)), Some((cpu1, hwm))) =
        (before, args.pid.and_then(relayguard::bench::process_stats))
    {
        say(format!(
            "server: {:.3} ms CPU per message, peak RSS {:.1} MiB",
            (cpu1 - cpu0) * 1000.0 / n.max(1) as f64,
            hwm as f64 / 1024.0
        ));
    }
    Ok(())
}

fn accounts_command(path: &Path, command: AccountsCommand) -> Result<(), String> {
    let loaded = load(path)?;
    if let AccountsCommand::Why { login } = &command {
        return accounts_why(&loaded, login);
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
                    let show = |t: &str| relayguard::log::Escaped(t).to_string();
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

/// `accounts why`: the signals from Redis when they are kept there, else from the running
/// relay (its metrics endpoint, which answers only this host).
fn accounts_why(loaded: &Loaded, login: &str) -> Result<(), String> {
    print!("{}", signals_text(loaded, login)?);
    Ok(())
}

/// An account's signals and lock, described.
fn signals_text(loaded: &Loaded, login: &str) -> Result<String, String> {
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
        let book =
            relayguard::abuse::redis::RedisBook::new(stores.redis.clone().expect("filtered"));
        use relayguard::abuse::book::SignalBook as _;
        return block_on(async {
            let signals = book.peek(&login, unix_now_ms(), rules).await?;
            let mut out = relayguard::abuse::describe(&login, &signals, rules);
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

fn parse_time(text: &str) -> Result<i64, String> {
    if text == "now" {
        return Ok(unix_now());
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .map_err(|e| format!("`{text}` is not an RFC 3339 time: {e}"))
}

/// The configuration with its keys; an error when `[dkim]` is not configured.
fn load_with_keys(path: &Path) -> Result<Loaded, String> {
    let loaded = load(path)?;
    if loaded.snapshot.keys.is_none() {
        return Err(format!(
            "{}: no [dkim] section: signing is not configured",
            path.display()
        ));
    }
    Ok(loaded)
}

/// `keys rotate` and `keys publish`: the steps due (rotation only), then the zone made to
/// match; every event printed (and audited when the audit log is configured).
fn rotation_pass(config: &Path, rotate: bool, dry_run: bool, now: i64) -> Result<(), String> {
    use relayguard::dkim::rotation;
    let loaded = load_with_keys(config)?;
    let dkim = loaded.config.dkim.clone().expect("dkim configured");
    if !rotate && dkim.publish.is_none() {
        return Err(format!("{}: no [dkim.publish] section", config.display()));
    }
    // The zone as the schedule wants it (records of long-retired selectors go while their
    // stanzas still name them), the rotation steps, and the zone again for new keys.
    let publish = |loaded: &Loaded| -> Result<Vec<rotation::KeyEvent>, String> {
        let Some(settings) = &dkim.publish else {
            return Ok(Vec::new());
        };
        let keys = loaded.snapshot.keys.as_ref().expect("dkim configured");
        let resolver = relayguard::dns::Resolver::new(&dkim.dns.nameservers, dkim.dns.timeout)?;
        let zones = loaded.snapshot.policy.protected.apexes().to_vec();
        let updater = rotation::updater(settings, &zones, dkim.dns.timeout)?;
        block_on(rotation::publish(
            keys,
            &resolver,
            &updater,
            settings.remove_after,
            now,
            dry_run,
        ))
    };
    let mut events = publish(&loaded)?;
    if rotate {
        let settings = dkim
            .rotation
            .as_ref()
            .ok_or_else(|| format!("{}: no [dkim.rotation] section", config.display()))?;
        let keys = loaded.snapshot.keys.as_ref().expect("dkim configured");
        let remove_after = dkim.publish.as_ref().map_or(7 * 86_400, |p| p.remove_after);
        let steps = rotation::plan(
            &keys.schedule,
            settings,
            dkim.min_publish_lead,
            remove_after,
            now,
        );
        if dry_run {
            for step in &steps {
                println!("would: {step:?}");
            }
        } else if !steps.is_empty() {
            events.extend(rotation::apply(
                &steps,
                &dkim.selectors,
                &dkim.keys_dir,
                settings.key_bits,
                now,
            )?);
            events.extend(publish(&load_with_keys(config)?)?);
        }
    }
    let audit = (!dry_run)
        .then(|| loaded.config.audit.clone())
        .flatten()
        .map(relayguard::audit::writer::AuditLog::open);
    let host = relayguard::audit::host_name();
    for event in &events {
        let verb = if dry_run { "would: " } else { "" };
        println!(
            "{verb}{} {} {}: {}",
            event.event, event.domain, event.selector, event.detail
        );
        if let Some(audit) = &audit {
            let _ = audit.event(event, &relayguard::clock::rfc3339_ms(now * 1000), &host);
        }
    }
    if events.is_empty() {
        println!("nothing to do");
    }
    Ok(())
}

/// What DNS serves for every loaded key now, when record checks are configured
/// (`require_dns` or `[dkim.dns]`): `published`, `missing`, … or `unreachable (why)`.
fn live_dns(loaded: &Loaded) -> Option<tooling::LiveDns> {
    let dkim = loaded.config.dkim.as_ref()?;
    if !dkim.dns.check {
        return None;
    }
    let keys = loaded.snapshot.keys.as_ref()?;
    let lookup = async {
        let resolver = relayguard::dns::Resolver::new(&dkim.dns.nameservers, dkim.dns.timeout)?;
        let mut live = tooling::LiveDns::new();
        for entry in keys.entries() {
            use relayguard::dns::TxtLookup;
            let s = &entry.selector;
            let name = relayguard::dkim::record::record_name(&s.name, &s.domain);
            let state = match resolver.txt(&name).await {
                Ok(records) => relayguard::dkim::record::judge(
                    records.as_deref(),
                    s.algorithm,
                    &entry.public_key,
                )
                .to_string(),
                Err(e) => format!("unreachable ({e})"),
            };
            live.insert((s.domain.clone(), s.name.clone()), state);
        }
        Ok(live)
    };
    block_on(lookup).ok()
}

fn keys_command(config: &Path, command: KeysCommand) -> Result<(), String> {
    let now = unix_now();
    match command {
        KeysCommand::Generate {
            domain,
            selector,
            algorithm,
            publish,
            active_from,
            print,
        } => {
            let loaded = load_with_keys(config)?;
            let dkim = loaded.config.dkim.as_ref().expect("dkim configured");
            let kind = match algorithm.as_str() {
                "rsa-2048" => KeyKind::Rsa(2048),
                "rsa-3072" => KeyKind::Rsa(3072),
                "rsa-4096" => KeyKind::Rsa(4096),
                "ed25519" => KeyKind::Ed25519,
                other => {
                    return Err(format!(
                        "--algorithm `{other}`: use rsa-2048, rsa-3072, rsa-4096 or ed25519"
                    ));
                }
            };
            let domain = relayguard::policy::domains::normalise_domain(&domain)
                .map_err(|e| format!("--domain: {e}"))?;
            let publish = publish
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(now);
            let active_from = active_from
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(publish + dkim.min_publish_lead);
            let key = tooling::create_key(
                &dkim.keys_dir,
                &domain,
                &selector,
                kind,
                publish,
                active_from,
            )?;
            eprintln!("wrote {} (mode 0600)", key.path.display());
            if print {
                print!("{}", key.stanza);
            } else {
                tooling::append_stanza(&dkim.selectors, &key.stanza)?;
                eprintln!("added selector {selector} to {}", dkim.selectors.display());
            }
            println!("{}", key.record);
            eprintln!(
                "publish the record by {}; it signs from {}",
                format_time(publish),
                format_time(active_from)
            );
            Ok(())
        }
        KeysCommand::Bootstrap => {
            let loaded = load_with_keys(config)?;
            let dkim = loaded.config.dkim.as_ref().expect("dkim configured");
            let keys = loaded.snapshot.keys.as_ref().expect("dkim configured");
            let made = tooling::bootstrap(
                keys,
                loaded.snapshot.policy.protected.apexes(),
                &dkim.keys_dir,
                &dkim.selectors,
                now,
            )?;
            for (domain, key) in made {
                eprintln!(
                    "{domain}: generated {}; publish its record: relayguard keys dns",
                    key.path.display()
                );
            }
            Ok(())
        }
        KeysCommand::Dns => {
            let loaded = load_with_keys(config)?;
            let keys = loaded.snapshot.keys.as_ref().expect("dkim configured");
            let live = live_dns(&loaded);
            print!("{}", tooling::dns_report(keys, now, live.as_ref()));
            Ok(())
        }
        KeysCommand::Publish { dry_run } => rotation_pass(config, false, dry_run, now),
        KeysCommand::Rotate { dry_run } => rotation_pass(config, true, dry_run, now),
        KeysCommand::Status => {
            let loaded = load_with_keys(config)?;
            let keys = loaded.snapshot.keys.as_ref().expect("dkim configured");
            let required =
                tooling::required_domains(keys, loaded.snapshot.policy.protected.apexes());
            let live = live_dns(&loaded);
            print!(
                "{}",
                tooling::status_report(keys, &required, now, live.as_ref())
            );
            Ok(())
        }
    }
}
