//! The runtime: assembles the service from its files and runs it. [`start`] owns the milter
//! socket, the metrics server, the audit fsync timer, the file watcher and the signals, and
//! feeds SIGHUP and file changes into the one reload path; [`run`] is `relayguard run`.

pub mod assemble;
pub mod http;
pub mod listen;
pub mod permissions;
pub mod preflight;
pub mod reload;
pub mod service;
pub mod slots;
pub mod socket;
pub mod threads;

use crate::clock::Clock;
use listen::MilterListener;
use service::Service;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// How to start the service.
pub struct Options {
    /// The clock (tests pin it).
    pub clock: Clock,
    /// Reload when the configuration's files change.
    pub watch_files: bool,
    /// Handle SIGHUP, SIGUSR1, SIGTERM and SIGINT (the binary does; tests stop by hand).
    pub signals: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: crate::clock::system(),
            watch_files: true,
            signals: true,
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration or a file it names.
    #[error(transparent)]
    Load(#[from] assemble::LoadError),
    /// Files that decide policy or hold secrets that others may change or read.
    #[error("{}", .0.join("\n"))]
    Unsafe(Vec<String>),
    /// The milter socket.
    #[error("cannot listen on {socket}: {source}")]
    Listen {
        /// The socket as configured.
        socket: String,
        /// Why.
        source: io::Error,
    },
    /// The metrics endpoint.
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The signal handlers.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

/// A started service.
pub struct Running {
    /// The service.
    pub service: Arc<Service>,
    local_addr: Option<SocketAddr>,
    unix_socket: Option<PathBuf>,
    metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<io::Result<()>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The milter's TCP address, when it listens on TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The milter's unix socket, when it listens on one.
    pub fn unix_socket(&self) -> Option<&Path> {
        self.unix_socket.as_deref()
    }

    /// The metrics endpoint's address, when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Starts reloading on file changes (when not started with [`Options::watch_files`]).
    pub fn watch_files(&mut self) -> notify::Result<()> {
        self.tasks.push(reload::watch_files(self.service.clone())?);
        Ok(())
    }

    /// Begins the shutdown, as SIGTERM does.
    pub fn begin_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the service has stopped (after a shutdown began).
    pub async fn join(&mut self) -> io::Result<()> {
        let result = match self.server.take() {
            Some(server) => server
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e.to_string()))),
            None => Ok(()),
        };
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(audit) = self.service.audit_log() {
            self.service.audit_checkpoint();
            audit.sync();
        }
        result
    }

    /// Shuts down and waits until stopped.
    pub async fn stop(mut self) -> io::Result<()> {
        self.begin_stop();
        self.join().await
    }
}

/// Assembles the service from `config_path` and serves: binds the socket and the metrics
/// endpoint, starts the fsync timer, the watcher and the signal handlers as `options` say.
pub async fn start(config_path: &Path, options: Options) -> Result<Running, StartError> {
    let now = (options.clock)().div_euclid(1000);
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let directories = Arc::new(crate::ldap::Directories::new(
        options.clock.clone(),
        metrics.ldap.clone(),
    ));
    let loaded = assemble::load(config_path, now, &directories)?;
    // Files others may change or read: no start (the MTA tempfails until they are fixed).
    let unsafe_files = permissions::problems(&loaded, &permissions::Service::current());
    if !unsafe_files.is_empty() {
        return Err(StartError::Unsafe(unsafe_files));
    }
    // What else check-config would refuse is logged; the service still starts (a domain
    // without a key is tempfailed and /healthz reports it), and reloads refuse such a
    // configuration.
    let found = assemble::check(&loaded, now);
    for e in &found.errors {
        error!("{e}");
    }
    for w in &found.warnings {
        warn!("{w}");
    }
    let service = Service::new(loaded, options.clock, metrics, directories);
    let listen_error = |source| StartError::Listen {
        socket: format!("{:?}", service.milter_config().socket),
        source,
    };
    let listener = match listen::inherited().map_err(listen_error)? {
        Some(listener) => {
            info!(
                "serving the socket systemd passed (socket activation); milter.socket is not bound"
            );
            listener
        }
        None => listen::bind(service.milter_config())
            .await
            .map_err(listen_error)?,
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut metrics_addr = None;
    if let Some(addr) = service.metrics_listen() {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Metrics { addr, source })?;
        metrics_addr = listener.local_addr().ok();
        info!(%addr, "metrics on http://{addr}/metrics and /healthz");
        tasks.push(tokio::spawn(http::serve(listener, service.clone())));
    }
    if let Some(audit) = service.audit_log() {
        // Once a second: another writer waiting for the file's lock gets its turn, and
        // with fsync "periodic" the records go to disk.
        let audit = audit.clone();
        let periodic = audit.config().fsync == crate::audit::writer::Fsync::Periodic;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                audit.let_others_in();
                if periodic {
                    let audit = audit.clone();
                    let _ = tokio::task::spawn_blocking(move || audit.sync()).await;
                }
            }
        }));
    }
    if service.audit_log().is_some() {
        service.audit_started();
        tasks.push(tokio::spawn(audit_housekeeping(service.clone())));
    }
    tasks.push(tokio::spawn(service.clone().dns_checker()));
    if options.watch_files {
        match reload::watch_files(service.clone()) {
            Ok(task) => tasks.push(task),
            Err(e) => error!("cannot watch configuration files, reload with SIGHUP: {e}"),
        }
    }
    if options.signals {
        tasks.push(signals(service.clone(), stop.clone()).map_err(StartError::Signals)?);
    }
    let local_addr = listener.local_addr();
    let unix_socket = listener.socket_file().map(|f| f.path().to_path_buf());
    let mut stopped = stop_rx;
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
        systemd(&[sd_notify::NotifyState::Stopping]);
    };
    let server = tokio::spawn(serve(service.clone(), listener, shutdown));
    info!(socket = ?service.milter_config().socket, config = %config_path.display(), "relayguard listening");
    systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("accepting milter connections"),
    ]);
    Ok(Running {
        service,
        local_addr,
        unix_socket,
        metrics_addr,
        stop,
        server: Some(server),
        tasks,
    })
}

/// Checkpoints every `checkpoint_minutes` and retention every hour (the first pass at
/// start), off the message path.
async fn audit_housekeeping(service: Arc<Service>) {
    let Some(audit) = service.audit_log() else {
        return;
    };
    let every = audit
        .config()
        .checkpoints
        .as_ref()
        .map(|c| std::time::Duration::from_secs(u64::from(c.every_minutes) * 60));
    let mut checkpoint =
        every.map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let mut retention = tokio::time::interval(std::time::Duration::from_secs(3_600));
    loop {
        let service = service.clone();
        tokio::select! {
            _ = async { checkpoint.as_mut().expect("guarded").tick().await }, if checkpoint.is_some() => {
                let _ = tokio::task::spawn_blocking(move || service.audit_checkpoint()).await;
            }
            _ = retention.tick() => {
                let _ = tokio::task::spawn_blocking(move || service.audit_retention()).await;
            }
        }
    }
}

/// SIGHUP reloads (through the one reload path) and reopens the audit log; SIGUSR1 reopens
/// the audit log; SIGTERM and SIGINT begin the shutdown.
fn signals(service: Arc<Service>, stop: watch::Sender<bool>) -> io::Result<JoinHandle<()>> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = hup.recv() => {
                    info!("SIGHUP: reloading, forgetting directory answers, reopening the audit log");
                    service.clear_directory_caches();
                    let reloading = service.clone();
                    let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
                }
                Some(()) = usr1.recv() => info!("SIGUSR1: reopening the audit log"),
                Some(()) = term.recv() => {
                    info!("SIGTERM received");
                    let _ = stop.send(true);
                    continue;
                }
                Some(()) = int.recv() => {
                    info!("SIGINT received");
                    let _ = stop.send(true);
                    continue;
                }
                else => break,
            }
            let reopening = service.clone();
            let _ = tokio::task::spawn_blocking(move || reopening.reopen_audit()).await;
        }
    }))
}

/// Serves the milter protocol until `shutdown` completes, then stops accepting, answers new
/// transactions on open connections with `421 4.3.2`, lets messages in flight finish (up to
/// the configured timeout) and returns. Connections are served by `milter.threads` threads
/// of their own ([`threads`]).
pub async fn serve(
    service: Arc<Service>,
    mut listener: MilterListener,
    shutdown: impl Future,
) -> io::Result<()> {
    let milter = service.milter_config();
    let slots = slots::Slots::new(
        milter.max_connections,
        slots::Deadlines {
            idle: milter.idle_timeout,
            message: milter.message_timeout,
        },
        service.metrics(),
    );
    let socket_file = listener.socket_file();
    let config = indymilter::Config {
        max_connections: slots.accept_limit(),
        // A backstop: the slots close an idle connection first (macros do not count there).
        connection_timeout: milter.idle_timeout,
        ..Default::default()
    };
    let (env, pipeline) = (service.env().clone(), service.pipeline().clone());
    let mut threads = threads::spawn(
        threads::count(milter.threads),
        slots,
        || crate::milter::callbacks(env.clone(), pipeline.clone()),
        config,
    )?;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                if let Err(e) = accepted.and_then(|stream| threads.hand_over(stream)) {
                    let _ = threads.stop().await;
                    return Err(e);
                }
            }
            result = threads.failed() => {
                let _ = threads.stop().await;
                return result;
            }
        }
    }
    // Close the socket: new clients are refused (and the MTA applies its default action).
    drop(listener);
    let flight = service.env().flight.clone();
    flight.begin_drain();
    if let Some(file) = &socket_file {
        file.remove();
    }
    info!(
        in_flight = flight.count(),
        "shutting down: accepting no new connections"
    );
    let grace = service.milter_config().shutdown_timeout;
    if tokio::time::timeout(grace, flight.drained()).await.is_err() {
        warn!(
            in_flight = flight.count(),
            "shutdown timeout: closing with messages in flight"
        );
    }
    threads.stop().await
}

/// `relayguard run`: starts the service on a runtime of its own and serves until SIGTERM.
/// The main thread runs the background work (reloads, timers, metrics, the shared Redis
/// connection); MTA connections have threads of their own ([`serve`]).
pub fn run(config_path: &Path) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut running = match start(config_path, Options::default()).await {
            Ok(running) => running,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        match running.join().await {
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

/// Tells systemd (Type=notify) about the service state; a no-op outside systemd.
pub(crate) fn systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!("cannot notify systemd: {e}");
    }
}

/// CLOCK_MONOTONIC in microseconds, as systemd wants it with RELOADING=1.
pub(crate) fn monotonic_usec() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000 + ts.tv_nsec as i128 / 1000
}
