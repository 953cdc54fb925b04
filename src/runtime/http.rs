//! The runtime's HTTP endpoint: `/metrics` (the registry of [`crate::metrics`]), `/healthz`
//! and, to this host only, `/signals/LOGIN`, answered from the running service.

use super::service::Service;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `GET /metrics`, `GET /healthz` and, to this host only, `GET /signals/LOGIN` until
/// the task is aborted.
pub async fn serve(listener: TcpListener, service: Arc<Service>) {
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            // prometheus-client writes OpenMetrics (`_total` samples under the family name,
            // `# EOF`): said so, Prometheus keeps each family's type and help.
            const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            const TEXT: &str = "text/plain; charset=utf-8";
            // One login's signals, for `relayguard accounts why`: personal data, so only to
            // this host.
            if let Some(login) = path.strip_prefix("/signals/") {
                let (status, body) = if !peer.ip().is_loopback() {
                    ("403 Forbidden", "only from this host\n".to_string())
                } else {
                    match service.signals_of(login).await {
                        Ok(text) => ("200 OK", text),
                        Err(e) => ("404 Not Found", format!("{e}\n")),
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {TEXT}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                return;
            }
            let (status, kind, body) = match path {
                "/metrics" => ("200 OK", OPENMETRICS, service.metrics_text()),
                "/healthz" => match service.health() {
                    Ok(()) => ("200 OK", TEXT, "ok\n".to_string()),
                    Err(problems) => (
                        "503 Service Unavailable",
                        TEXT,
                        format!("unhealthy\n{}\n", problems.join("\n")),
                    ),
                },
                _ => ("404 Not Found", TEXT, "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
