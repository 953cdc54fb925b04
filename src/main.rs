//! The relayguard command line: run the milter, check the configuration, explain a decision.

use clap::{Parser, Subcommand};
use relayguard::config::{Config, SocketSpec, unix_now};
use relayguard::dkim::keys::{self, KeyKind};
use relayguard::dkim::schedule::format_time;
use relayguard::dkim::tooling;
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
        /// The user the service runs as: checks that it can read the keys and write the
        /// socket directory and audit log (skipped when the user does not exist).
        #[arg(long, default_value = "relayguard")]
        service_user: String,
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
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/relayguard/relayguard.toml")]
        config: PathBuf,
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
}

/// `relayguard bench`: a milter load, or with `--ceiling` a key's signing rate.
#[derive(clap::Args)]
struct BenchArgs {
    /// `unix:/path` or `inet:PORT@HOST` of the milter.
    #[arg(long, default_value = "inet:8891@127.0.0.1")]
    target: String,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 8)]
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
        /// table, json or csv.
        #[arg(long, default_value = "table")]
        format: String,
        /// Audit files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a private key (mode 0600) and add its selector to selectors.toml.
    Generate {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/relayguard/relayguard.toml")]
        config: PathBuf,
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
    Bootstrap {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/relayguard/relayguard.toml")]
        config: PathBuf,
    },
    /// Print the DNS TXT records that must be published now, later, and may be removed.
    Dns {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/relayguard/relayguard.toml")]
        config: PathBuf,
    },
    /// Show per domain what signs now, what is next and when, and what is overdue.
    Status {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/relayguard/relayguard.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig {
            config,
            service_user,
        } => check_config(config, &service_user),
        Command::Explain {
            config,
            login,
            client,
            client_name,
            mail_from,
            rcpt,
            daemon_name,
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
                client_name,
                mail_from,
                rcpts: rcpt,
                message,
            };
            let (report, accepted) = explain(&config.policy, &question);
            print!("{report}");
            if let Some(limits) = &config.limits {
                print!(
                    "{}",
                    relayguard::explain::explain_limits(
                        limits,
                        &config.policy,
                        &question,
                        daemon_name.as_deref()
                    )
                );
                if let (Some(store), Some(login)) = (&config.limit_store, &question.login) {
                    print!(
                        "{}",
                        current_counters(store, &config.policy.logins.normalise(login))
                    );
                }
            }
            if accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Audit {
            command:
                AuditCommand::Report {
                    since,
                    until,
                    login,
                    format,
                    files,
                },
        } => {
            use relayguard::audit::report::{Filter, Format, Report};
            let run = || -> Result<String, String> {
                let format = match format.as_str() {
                    "table" => Format::Table,
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    other => return Err(format!("--format `{other}`: use table, json or csv")),
                };
                let filter = Filter {
                    since: since.as_deref().map(parse_time).transpose()?,
                    until: until.as_deref().map(parse_time).transpose()?,
                    login,
                };
                let report = Report::read(&files, &filter).map_err(|e| e.to_string())?;
                for s in &report.skipped {
                    eprintln!(
                        "warning: {}:{}: skipped malformed record: {}",
                        s.file, s.line, s.error
                    );
                }
                Ok(report.render(format))
            };
            exit_code(run().map(|text| {
                // A closed pipe (`| head`) is not an error worth a panic.
                let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
            }))
        }
        Command::Bench(args) => exit_code(bench_command(args)),
        Command::Accounts { config, command } => exit_code(accounts_command(config, command)),
        Command::Keys { command } => exit_code(keys_command(command)),
    }
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

fn bench_command(args: BenchArgs) -> Result<(), String> {
    if let Some(key) = args.ceiling {
        let duration = std::time::Duration::from_secs_f64(args.seconds.max(0.1));
        let (algorithm, rate) = relayguard::bench::signing_ceiling(&key, args.threads, duration)?;
        println!(
            "signing ceiling: {rate:.0} signatures/s ({algorithm}, {} threads, {:.3} ms CPU per signature)",
            args.threads,
            args.threads as f64 * 1000.0 / rate.max(1.0)
        );
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
    };
    let before = args.pid.and_then(relayguard::bench::process_stats);
    let results = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .and_then(|rt| rt.block_on(relayguard::bench::run(&load)))
        .map_err(|e| e.to_string())?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let n = results.latencies.len();
    println!(
        "{n} messages of {} bytes, {} connections, {:.2} s: {:.0} messages/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        load.size,
        load.connections,
        results.elapsed.as_secs_f64(),
        results.rate(),
        ms(results.percentile(0.5)),
        ms(results.percentile(0.99)),
        ms(results.percentile(1.0))
    );
    println!(
        "signed {}, accepted unsigned {}, rejected {}, tempfailed {}",
        results.signed, results.unsigned, results.rejected, results.tempfailed
    );
    if let (Some((cpu0, _)), Some((cpu1, hwm))) =
        (before, args.pid.and_then(relayguard::bench::process_stats))
    {
        println!(
            "server: {:.3} ms CPU per message, peak RSS {:.1} MiB",
            (cpu1 - cpu0) * 1000.0 / n.max(1) as f64,
            hwm as f64 / 1024.0
        );
    }
    Ok(())
}

/// Current counter values of a login: from Redis when configured; in-memory counters live
/// only inside the running service.
fn current_counters(store: &relayguard::config::LimitStore, login: &str) -> String {
    if store.redis.is_none() {
        return "counters: in memory inside the running service (not visible here)\n".into();
    };
    let run = async {
        let limiter = relayguard::service::Limiter::new(store, Default::default())?;
        let r = limiter.counters.redis.as_ref().expect("redis store");
        let now = relayguard::service::unix_now_ms();
        let mut out = String::from("counters:");
        for (name, key) in [
            ("messages_per_hour", format!("msg:{login}")),
            ("connections_per_second", format!("conn:{login}")),
        ] {
            let tat: Option<i64> = r.command(redis::cmd("GET").arg(r.key(&key))).await?;
            out.push_str(&format!(
                " {name} tat={}",
                tat.map(|t| format!("{} ms ahead", (t - now).max(0)))
                    .unwrap_or_else(|| "unset".into())
            ));
        }
        let lock = limiter.locks.get(Some(r), login).await?;
        out.push_str(&format!(
            "; lock: {}\n",
            lock.map(|l| format!("locked since {} ({})", l.since, l.reason))
                .unwrap_or_else(|| "none".into())
        ));
        Ok::<String, String>(out)
    };
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt
            .block_on(run)
            .unwrap_or_else(|e| format!("counters: cannot read Redis: {e}\n")),
        Err(e) => format!("counters: {e}\n"),
    }
}

/// Tells systemd (Type=notify) about the service state; a no-op outside systemd.
fn systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// CLOCK_MONOTONIC in microseconds, as systemd wants it with RELOADING=1.
fn monotonic_usec() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000 + ts.tv_nsec as i128 / 1000
}

fn accounts_command(path: PathBuf, command: AccountsCommand) -> Result<(), String> {
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    let store = config.limit_store.as_ref().ok_or_else(|| {
        format!(
            "{}: no [limits] section: locks are not configured",
            path.display()
        )
    })?;
    let limiter = relayguard::service::Limiter::new(store, Default::default())?;
    let redis = limiter.counters.redis.as_ref();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        match command {
            AccountsCommand::List => {
                for (login, lock) in limiter.locks.list(redis).await? {
                    println!("{login}\tlocked since {}\t{}", lock.since, lock.reason);
                }
                Ok(())
            }
            AccountsCommand::Lock { login, reason } => {
                let login = config.policy.logins.normalise(&login);
                limiter.locks.lock(redis, &login, &reason).await?;
                println!("{login} locked");
                Ok(())
            }
            AccountsCommand::Unlock { login } => {
                let login = config.policy.logins.normalise(&login);
                if limiter.locks.unlock(redis, &login).await? {
                    println!("{login} unlocked");
                    Ok(())
                } else {
                    Err(format!("{login} is not locked"))
                }
            }
        }
    })
}

fn parse_time(text: &str) -> Result<i64, String> {
    if text == "now" {
        return Ok(unix_now());
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .map_err(|e| format!("`{text}` is not an RFC 3339 time: {e}"))
}

fn keys_command(command: KeysCommand) -> Result<(), String> {
    let now = unix_now();
    let load = |path: &PathBuf| -> Result<Config, String> {
        let config = Config::load(path).map_err(|e| e.to_string())?;
        if config.keys.is_none() {
            return Err(format!(
                "{}: no [dkim] section: signing is not configured",
                path.display()
            ));
        }
        Ok(config)
    };
    match command {
        KeysCommand::Generate {
            config,
            domain,
            selector,
            algorithm,
            publish,
            active_from,
            print,
        } => {
            let loaded = load(&config)?;
            let files = loaded.dkim_files.as_ref().expect("dkim configured");
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
                .unwrap_or(publish + files.min_publish_lead);
            let file_name = format!("{domain}.{selector}.pem");
            let key_path = files.keys_dir.join(&file_name);
            let pem = keys::generate(kind)?;
            keys::write_new(&key_path, &pem).map_err(|e| e.to_string())?;
            let key = keys::parse(&key_path, pem.as_bytes(), kind.algorithm())
                .map_err(|e| e.to_string())?;
            let stanza = tooling::stanza(
                &domain,
                &selector,
                kind.algorithm(),
                &file_name,
                publish,
                active_from,
            );
            eprintln!("wrote {} (mode 0600)", key_path.display());
            if print {
                print!("{stanza}");
            } else {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&files.selectors)
                    .map_err(|e| format!("{}: {e}", files.selectors.display()))?;
                file.write_all(stanza.as_bytes())
                    .map_err(|e| format!("{}: {e}", files.selectors.display()))?;
                eprintln!("added selector {selector} to {}", files.selectors.display());
            }
            println!(
                "{}",
                tooling::txt_record(&selector, &domain, &key.dns_record())
            );
            eprintln!(
                "publish the record by {}; it signs from {}",
                format_time(publish),
                format_time(active_from)
            );
            Ok(())
        }
        KeysCommand::Bootstrap { config } => {
            let loaded = load(&config)?;
            let files = loaded.dkim_files.as_ref().expect("dkim configured");
            let keys = loaded.keys.as_ref().expect("dkim configured");
            let month = jiff::Timestamp::now().strftime("%Y%m").to_string();
            for domain in tooling::required_domains(keys, loaded.policy.protected.apexes()) {
                if keys.schedule.selectors.iter().any(|s| s.domain == domain) {
                    continue;
                }
                let selector = format!("rg{month}");
                let file_name = format!("{domain}.{selector}.pem");
                let key_path = files.keys_dir.join(&file_name);
                let pem = keys::generate(KeyKind::Rsa(2048))?;
                keys::write_new(&key_path, &pem).map_err(|e| e.to_string())?;
                let stanza = tooling::stanza(
                    &domain,
                    &selector,
                    KeyKind::Rsa(2048).algorithm(),
                    &file_name,
                    now,
                    now,
                );
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&files.selectors)
                    .and_then(|mut f| f.write_all(stanza.as_bytes()))
                    .map_err(|e| format!("{}: {e}", files.selectors.display()))?;
                eprintln!(
                    "{domain}: generated selector {selector} ({}); publish its record: relayguard keys dns",
                    key_path.display()
                );
            }
            Ok(())
        }
        KeysCommand::Dns { config } => {
            let loaded = load(&config)?;
            print!(
                "{}",
                tooling::dns_report(loaded.keys.as_ref().expect("dkim configured"), now)
            );
            Ok(())
        }
        KeysCommand::Status { config } => {
            let loaded = load(&config)?;
            let keys = loaded.keys.as_ref().expect("dkim configured");
            let required = tooling::required_domains(keys, loaded.policy.protected.apexes());
            print!("{}", tooling::status_report(keys, &required, now));
            Ok(())
        }
    }
}

/// Whether `uid`/`gid` may do `want` (an rwx mask for the owner position) on `path`.
fn may(path: &std::path::Path, uid: u32, gid: u32, want: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let mode = meta.mode();
    if uid == 0 {
        return true;
    }
    let bits = if meta.uid() == uid {
        (mode >> 6) & 7
    } else if meta.gid() == gid {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & want == want
}

/// What the package layout implies: the service user reads the keys, writes the socket
/// directory and the audit log directory. Returns (errors, warnings).
fn layout_problems(config: &Config, user: &str) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    if let SocketSpec::Unix(socket) = &config.milter.socket
        && let Some(dir) = socket.parent().filter(|d| !d.is_dir())
    {
        warnings.push(format!("{}: socket directory missing (systemd creates it at start with RuntimeDirectory; create it otherwise)", dir.display()));
    }
    let Some((uid, gid)) = user_ids(user) else {
        warnings.push(format!(
            "user `{user}` does not exist: file ownership not checked (use --service-user)"
        ));
        return (errors, warnings);
    };
    if let Some(files) = &config.dkim_files {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&files.keys_dir) {
            Ok(meta) if meta.permissions().mode() & 0o007 != 0 => errors.push(format!(
                "{}: key directory is accessible to others (mode {:04o}; 0750 advised)",
                files.keys_dir.display(),
                meta.permissions().mode() & 0o7777
            )),
            Ok(_) if !may(&files.keys_dir, uid, gid, 0o5) => errors.push(format!(
                "{}: user {user} cannot enter the key directory",
                files.keys_dir.display()
            )),
            Ok(_) => {}
            Err(e) => errors.push(format!("{}: {e}", files.keys_dir.display())),
        }
        for entry in config.keys.iter().flat_map(|k| k.entries()) {
            if !may(&entry.selector.key, uid, gid, 0o4) {
                errors.push(format!(
                    "{}: user {user} cannot read this key (chown {user})",
                    entry.selector.key.display()
                ));
            }
        }
    }
    if let SocketSpec::Unix(socket) = &config.milter.socket
        && let Some(dir) = socket.parent()
        && dir.is_dir()
        && !may(dir, uid, gid, 0o3)
    {
        errors.push(format!(
            "{}: user {user} cannot create the socket here",
            dir.display()
        ));
    }
    if let Some(relayguard::audit::writer::AuditConfig {
        destination: relayguard::audit::writer::Destination::File(file),
        ..
    }) = &config.audit
    {
        let dir = file.parent().unwrap_or(std::path::Path::new("."));
        let writable = may(dir, uid, gid, 0o3) || (file.exists() && may(file, uid, gid, 0o2));
        if !writable {
            errors.push(format!(
                "{}: user {user} cannot write the audit log",
                file.display()
            ));
        }
    }
    (errors, warnings)
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns static storage or NULL; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    (!pw.is_null()).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn check_config(path: PathBuf, service_user: &str) -> ExitCode {
    match Config::load(&path) {
        Ok(config) => {
            // The same checks every reload runs, then what the service user needs.
            let found = config.check(unix_now());
            let mut problems = found.errors;
            let (layout_errors, layout_warnings) = layout_problems(&config, service_user);
            problems.extend(layout_errors);
            for w in found.warnings.iter().chain(&layout_warnings) {
                eprintln!("warning: {w}");
            }
            if problems.is_empty() {
                let p = &config.policy;
                println!(
                    "{}: ok ({} protected domains, {} sender map entries, {} internal networks, {} DKIM keys)",
                    path.display(),
                    p.protected.apexes().len(),
                    p.owners.map.len(),
                    p.internal_networks.len(),
                    config.keys.as_ref().map_or(0, |k| k.entries().len())
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
    // What check-config would refuse is logged; the service still starts (a domain without
    // a key is tempfailed and /healthz reports it), and reloads refuse such a configuration.
    let found = config.check(unix_now());
    for e in &found.errors {
        error!("{e}");
    }
    for w in &found.warnings {
        tracing::warn!("{w}");
    }
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
        let metrics_listen = config.metrics_listen;
        let service = Service::new(config);
        let listener = match listen::bind(service.milter_config()).await {
            Ok(l) => l,
            Err(e) => {
                error!("cannot listen on {:?}: {e}", service.milter_config().socket);
                return ExitCode::FAILURE;
            }
        };
        let (Ok(mut hup), Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined1()),
        ) else {
            error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        let hup_service = service.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = hup.recv() => {
                        info!("SIGHUP: reloading, reopening the audit log");
                        systemd(&[sd_notify::NotifyState::Reloading, sd_notify::NotifyState::MonotonicUsec(monotonic_usec())]);
                        let service = hup_service.clone();
                        let _ = tokio::task::spawn_blocking(move || service.reload()).await;
                        systemd(&[sd_notify::NotifyState::Ready]);
                    }
                    Some(()) = usr1.recv() => info!("SIGUSR1: reopening the audit log"),
                    else => break,
                }
                if let Some(audit) = &hup_service.audit
                    && let Err(e) = audit.reopen() {
                        error!("cannot reopen the audit log: {e}");
                    }
            }
        });
        if let Some(audit) = &service.audit
            && audit.config().fsync == relayguard::audit::writer::Fsync::Periodic {
                let sync_service = service.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                        let service = sync_service.clone();
                        let _ = tokio::task::spawn_blocking(move || service.audit.as_ref().map(|a| a.sync())).await;
                    }
                });
            }
        if let Some(addr) = metrics_listen {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    info!(%addr, "metrics on http://{addr}/metrics and /healthz");
                    tokio::spawn(relayguard::metrics::serve(listener, service.clone()));
                }
                Err(e) => {
                    error!("cannot listen for metrics on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        if let Err(e) = reload::watch_files(service.clone()) {
            error!("cannot watch configuration files, reload with SIGHUP: {e}");
        }
        info!(socket = ?service.milter_config().socket, config = %path.display(), "relayguard listening");
        systemd(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("accepting milter connections")]);
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
            }
            systemd(&[sd_notify::NotifyState::Stopping]);
        };
        let result = relayguard::serve(service.clone(), listener, shutdown).await;
        if let Some(audit) = &service.audit {
            audit.sync();
        }
        match result {
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
