//! The milter's threads: each runs a single-threaded runtime and serves the connections it
//! is handed from first packet to last, so a message's packets, its checks, its signature
//! and its replies never change threads. (On a shared multi-threaded runtime every reply
//! woke a second thread: a third of a message's CPU.) The main thread accepts and hands
//! each connection to the thread serving the fewest.

use super::slots::{Connection, Slots};
use super::socket::{Accepted, MtaSocket};
use indymilter::{Callbacks, Config, EitherStream, Listener};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, watch};

/// The running threads; dropping this stops them too (their connections close).
pub struct Threads {
    stop: watch::Sender<bool>,
    exited: mpsc::UnboundedReceiver<io::Result<()>>,
    handles: Vec<JoinHandle<()>>,
    inboxes: Vec<(mpsc::UnboundedSender<Accepted>, Arc<AtomicUsize>)>,
    next: AtomicUsize,
}

/// How many threads `configured` means on this machine: one per CPU unless set.
pub fn count(configured: Option<usize>) -> usize {
    configured
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1)
}

/// Starts `n` threads; `callbacks` makes each thread's callbacks; every connection holds
/// a slot of `slots`.
pub fn spawn<T: Send + 'static>(
    n: usize,
    slots: Arc<Slots>,
    callbacks: impl Fn() -> Callbacks<T>,
    config: Config,
) -> io::Result<Threads> {
    let (stop, stop_rx) = watch::channel(false);
    let (exited_tx, exited) = mpsc::unbounded_channel();
    let mut handles = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    for i in 0..n.max(1) {
        let (tx, rx) = mpsc::unbounded_channel();
        let load = Arc::new(AtomicUsize::new(0));
        inboxes.push((tx, load.clone()));
        let inbox = Inbox {
            rx,
            slots: slots.clone(),
            load,
        };
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
                            indymilter::run(inbox, callbacks, config, shutdown).await
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
        inboxes,
        next: AtomicUsize::new(0),
    })
}

impl Threads {
    /// Hands an accepted connection to the thread serving the fewest (in turn among equals).
    pub fn hand_over(&self, stream: EitherStream<TcpStream, UnixStream>) -> io::Result<()> {
        let handed = match stream {
            EitherStream::Tcp(s) => Accepted::Tcp(s.into_std()?),
            EitherStream::Unix(s) => Accepted::Unix(s.into_std()?),
        };
        let n = self.inboxes.len();
        let start = self.next.load(Ordering::Relaxed);
        let i = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.inboxes[i].1.load(Ordering::Relaxed))
            .unwrap_or(0);
        self.next.store((i + 1) % n, Ordering::Relaxed);
        let (inbox, load) = &self.inboxes[i];
        load.fetch_add(1, Ordering::Relaxed);
        inbox
            .send(handed)
            .map_err(|_| io::Error::other("a milter thread stopped"))
    }

    /// Completes when the first thread ends by itself, with its error.
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

/// A thread's side: the connections handed to it, registered on its runtime as they come.
struct Inbox {
    rx: mpsc::UnboundedReceiver<Accepted>,
    slots: Arc<Slots>,
    load: Arc<AtomicUsize>,
}

impl Listener for Inbox {
    type Io = Connection;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Connection>> {
        let handed = match self.rx.poll_recv(cx) {
            Poll::Ready(Some(handed)) => handed,
            // The acceptor has stopped: no more connections, until the thread is stopped.
            Poll::Ready(None) | Poll::Pending => return Poll::Pending,
        };
        match MtaSocket::register(handed) {
            Ok(socket) => Poll::Ready(Ok(self.slots.take(socket).counted_in(self.load.clone()))),
            Err(e) => {
                // This connection only: the MTA sees it closed and retries.
                self.load.fetch_sub(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cannot serve an accepted MTA connection");
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}
