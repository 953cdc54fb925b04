//! `[milter]`: where the milter listens and how long it waits.

use super::values::Number;
use crate::tomlfile::{FileError, Place};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

// The documented range of each number (docs/configuration.md, relayguard.toml(5)); values outside are
// errors, so no setting can overflow arithmetic or a runtime structure.
const MAX_CONNECTIONS: RangeInclusive<u64> = 1..=65_536;
const SHUTDOWN_TIMEOUT_SECS: RangeInclusive<u64> = 0..=3_600;
const IDLE_TIMEOUT_SECS: RangeInclusive<u64> = 1..=7_200;
const MESSAGE_TIMEOUT_SECS: RangeInclusive<u64> = 10..=86_400;
const THREADS: RangeInclusive<u64> = 1..=256;

/// Where the milter listens, in OpenDKIM's spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    /// `unix:/path` (or `local:/path`).
    Unix(PathBuf),
    /// `inet:PORT@HOST` or `inet6:PORT@HOST`.
    Inet(SocketAddr),
}

impl SocketSpec {
    /// Parses `unix:/path`, `local:/path`, `inet:PORT@HOST`, `inet:PORT` (all interfaces), `inet6:PORT@HOST`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        if let Some(path) = spec
            .strip_prefix("unix:")
            .or_else(|| spec.strip_prefix("local:"))
        {
            if !path.starts_with('/') {
                return Err(format!("unix socket path `{path}` must be absolute"));
            }
            return Ok(SocketSpec::Unix(PathBuf::from(path)));
        }
        let (v6, rest) = if let Some(rest) = spec.strip_prefix("inet6:") {
            (true, rest)
        } else if let Some(rest) = spec.strip_prefix("inet:") {
            (false, rest)
        } else {
            return Err(format!(
                "`{spec}` is not unix:/path, inet:PORT@HOST or inet6:PORT@HOST"
            ));
        };
        let (port, host) = rest
            .split_once('@')
            .unwrap_or((rest, if v6 { "::" } else { "0.0.0.0" }));
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{port}` is not a port number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = match host {
            "localhost" if v6 => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            _ => host
                .parse()
                .map_err(|_| format!("`{host}` is not an IP address"))?,
        };
        if v6 != ip.is_ipv6() {
            return Err(format!(
                "`{host}` does not match the {} family",
                if v6 { "inet6" } else { "inet" }
            ));
        }
        Ok(SocketSpec::Inet(SocketAddr::new(ip, port)))
    }
}

/// Settings of the listening socket; they apply at start only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterConfig {
    /// Where to listen.
    pub socket: SocketSpec,
    /// Permission bits of a unix socket.
    pub socket_mode: u32,
    /// Owner (user name) of a unix socket.
    pub socket_owner: Option<String>,
    /// Group (name) of a unix socket.
    pub socket_group: Option<String>,
    /// Maximum concurrent MTA connections.
    pub max_connections: usize,
    /// How long a shutdown waits for messages in flight.
    pub shutdown_timeout: Duration,
    /// How long a connection may wait for the MTA's next command (macros do not count)
    /// before it is closed.
    pub idle_timeout: Duration,
    /// How long one message may take, MAIL to end of message, however it trickles.
    pub message_timeout: Duration,
    /// Threads serving MTA connections (`None`: one per CPU).
    pub threads: Option<usize>,
}

/// `[milter]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMilter {
    pub(super) socket: Option<Spanned<String>>,
    pub(super) socket_mode: Option<Spanned<String>>,
    pub(super) socket_owner: Option<String>,
    pub(super) socket_group: Option<String>,
    pub(super) max_connections: Number,
    pub(super) shutdown_timeout_secs: Number,
    pub(super) idle_timeout_secs: Number,
    pub(super) message_timeout_secs: Number,
    pub(super) threads: Number,
}

/// `[milter]`.
pub(super) fn milter(m: RawMilter, p: Place) -> Result<MilterConfig, FileError> {
    let socket = match &m.socket {
        Some(s) => {
            SocketSpec::parse(s.get_ref()).map_err(|r| p.invalid(s.span(), "milter.socket", r))?
        }
        None => SocketSpec::Inet(SocketAddr::from(([127, 0, 0, 1], 8891))),
    };
    let socket_mode = match &m.socket_mode {
        Some(mode) => u32::from_str_radix(mode.get_ref(), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                p.invalid(
                    mode.span(),
                    "milter.socket_mode",
                    format!("`{}` is not an octal mode such as \"0660\"", mode.get_ref()),
                )
            })?,
        None => 0o660,
    };
    let secs = |value: &Number, key, range, default| -> Result<Duration, FileError> {
        Ok(Duration::from_secs(
            p.number(value, key, range)?.unwrap_or(default),
        ))
    };
    Ok(MilterConfig {
        socket,
        socket_mode,
        max_connections: p
            .number(
                &m.max_connections,
                "milter.max_connections",
                MAX_CONNECTIONS,
            )?
            .unwrap_or(256) as usize,
        shutdown_timeout: secs(
            &m.shutdown_timeout_secs,
            "milter.shutdown_timeout_secs",
            SHUTDOWN_TIMEOUT_SECS,
            30,
        )?,
        idle_timeout: secs(
            &m.idle_timeout_secs,
            "milter.idle_timeout_secs",
            IDLE_TIMEOUT_SECS,
            330,
        )?,
        message_timeout: secs(
            &m.message_timeout_secs,
            "milter.message_timeout_secs",
            MESSAGE_TIMEOUT_SECS,
            1_800,
        )?,
        threads: p
            .number(&m.threads, "milter.threads", THREADS)?
            .map(|n| n as usize),
        socket_owner: m.socket_owner,
        socket_group: m.socket_group,
    })
}
