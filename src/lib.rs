//! relayguard: a milter for outgoing mail relays.
//!
//! It refuses senders an account does not own ([`policy`]), is configured from
//! `relayguard.toml` ([`config`]), speaks the milter protocol to Postfix and Sendmail
//! ([`milter`]) on a socket ([`listen`]) and reloads when its files change ([`reload`]).

pub mod audit;
pub mod bench;
pub mod config;
pub mod dkim;
pub mod explain;
pub mod limits;
pub mod listen;
pub mod log;
pub mod metrics;
pub mod milter;
pub mod policy;
pub mod reload;
pub mod service;

use listen::MilterListener;
use service::Service;
use std::future::Future;
use std::io;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{info, warn};

/// Serves the milter protocol until `shutdown` completes, then stops accepting, answers new
/// transactions on open connections with `421 4.3.2`, lets messages in flight finish (up to
/// the configured timeout) and returns.
pub async fn serve(
    service: Arc<Service>,
    mut listener: MilterListener,
    shutdown: impl Future,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    listener.stop_on(stop_rx);
    listener.count_in(listen::Slots::new(
        service.milter_config().max_connections,
        service.metrics.connections.clone(),
        service.metrics.slots_full.clone(),
    ));
    let socket_file = listener.socket_file();
    let config = indymilter::Config {
        max_connections: service.milter_config().max_connections,
        // An MTA that stops talking (or a slowloris) gives its slot back after this.
        connection_timeout: service.milter_config().idle_timeout,
        ..Default::default()
    };
    let grace = service.milter_config().shutdown_timeout;
    let drain_service = service.clone();
    let drain = async move {
        shutdown.await;
        drain_service.begin_drain();
        let _ = stop_tx.send(true);
        if let Some(file) = &socket_file {
            file.remove();
        }
        info!(
            in_flight = drain_service.messages_in_flight(),
            "shutting down: accepting no new connections"
        );
        if tokio::time::timeout(grace, drain_service.drained())
            .await
            .is_err()
        {
            warn!(
                in_flight = drain_service.messages_in_flight(),
                "shutdown timeout: closing with messages in flight"
            );
        }
    };
    indymilter::run(listener, milter::callbacks(service), config, drain).await
}
