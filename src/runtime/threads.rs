//! The milter's threads: each runs a single-threaded runtime that accepts connections from
//! the one listening socket and serves them from first packet to last, so a message's
//! packets, its checks, its signature and its replies never change threads. (On a shared
//! multi-threaded runtime every reply woke a second thread: a third of a message's CPU.)

use super::listen::SharedListener;
use indymilter::{Callbacks, Config};
use std::io;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, watch};

/// The running threads; dropping this stops them too (their connections close).
pub struct Threads {
    stop: watch::Sender<bool>,
    exited: mpsc::UnboundedReceiver<io::Result<()>>,
    handles: Vec<JoinHandle<()>>,
}

/// How many threads `configured` means on this machine: one per CPU unless set.
pub fn count(configured: Option<usize>) -> usize {
    configured
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1)
}

/// Starts one thread per listener copy; `callbacks` makes each thread's callbacks.
pub fn spawn<T: Send + 'static>(
    listeners: Vec<SharedListener>,
    callbacks: impl Fn() -> Callbacks<T>,
    config: Config,
) -> io::Result<Threads> {
    let (stop, stop_rx) = watch::channel(false);
    let (exited_tx, exited) = mpsc::unbounded_channel();
    let mut handles = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let callbacks = callbacks();
        let config = config.clone();
        let mut stop = stop_rx.clone();
        let exited = exited_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("milter-{i}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        runtime.block_on(async move {
                            // Stops when told to, or when the `Threads` is dropped.
                            let shutdown = async move {
                                let _ = stop.wait_for(|s| *s).await;
                            };
                            indymilter::run(listener.register()?, callbacks, config, shutdown).await
                        })
                    });
                let _ = exited.send(result);
            })?;
        handles.push(handle);
    }
    Ok(Threads {
        stop,
        exited,
        handles,
    })
}

impl Threads {
    /// Completes when the first thread ends by itself (its socket failed), with its result.
    pub async fn failed(&mut self) -> io::Result<()> {
        match self.exited.recv().await {
            Some(result) => result.and(Err(io::Error::other("a milter thread stopped"))),
            None => std::future::pending().await,
        }
    }

    /// Tells every thread to stop (open sessions end) and waits until all have; the first
    /// error any of them had.
    pub async fn stop(mut self) -> io::Result<()> {
        let _ = self.stop.send(true);
        let mut result = Ok(());
        for _ in 0..self.handles.len() {
            match self.exited.recv().await {
                Some(Err(e)) if result.is_ok() => result = Err(e),
                Some(_) => {}
                None => break,
            }
        }
        for handle in self.handles.drain(..) {
            // Each has sent its result: joining only reaps the thread.
            let _ = handle.join();
        }
        result
    }
}
