//! Time: the clock the service runs on (Unix milliseconds), injected so that tests pin key
//! rotation, limits and audit times. Nothing else in relayguard reads the system time.

use std::sync::Arc;

/// The clock: Unix milliseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system() -> Clock {
    Arc::new(unix_now_ms)
}

/// The current time in Unix milliseconds.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    unix_now_ms().div_euclid(1000)
}

/// Unix milliseconds as the audit log writes them: RFC 3339, UTC, milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}
