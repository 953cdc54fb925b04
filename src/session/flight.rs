//! Messages in flight and the drain: how many messages are between MAIL and their verdict,
//! and whether the service has begun shutting down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Notify;

/// The in-flight count and the drain flag, shared by the service and every session.
#[derive(Clone, Default)]
pub struct Flight {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    draining: Arc<AtomicBool>,
}

impl Flight {
    /// Counts one message in flight until the guard is dropped.
    pub fn begin(&self) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Messages in flight now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until no message is in flight.
    pub async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// From now on new transactions are refused; those in flight finish.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the service is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Holds one message in the in-flight count.
pub struct InFlightGuard(Flight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
