//! Connection slots: who holds one, for how long, and who gives way.
//!
//! Each MTA connection holds a slot. It is closed when it sends no command for
//! `milter.idle_timeout_secs` (macro packets, which an MTA only sends ahead of a command, do
//! not count, so trickling them extends nothing), and when one message takes longer than
//! `milter.message_timeout_secs` from MAIL to its end. When every slot is taken, a new
//! connection is let in and the connection that has spent longest outside a message gives
//! its slot up: idle connections never keep a real one waiting.
//!
//! The slot reads the milter packet framing (length, command byte) as the bytes pass; it
//! decodes nothing else.

use super::socket::MtaSocket;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Why a connection was closed by relayguard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No command for the idle timeout.
    Idle,
    /// One message took longer than the message timeout.
    MessageDeadline,
    /// Every slot was taken and this one had been outside a message longest.
    SlotNeeded,
}

impl Closed {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Closed::Idle => "idle",
            Closed::MessageDeadline => "message_deadline",
            Closed::SlotNeeded => "slot_needed",
        }
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }

    fn from_code(code: u8) -> Option<Self> {
        [Closed::Idle, Closed::MessageDeadline, Closed::SlotNeeded]
            .into_iter()
            .find(|c| c.code() == code)
    }
}

/// The deadlines a slot lives by.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// The longest wait for the MTA's next command.
    pub idle: Duration,
    /// The longest one message may take.
    pub message: Duration,
}

/// The shared state of one open connection.
struct State {
    /// Milliseconds since the slots' epoch: the last command (macros excluded).
    last_command: AtomicU64,
    /// Since when the connection has been where it is: open or a message's end (outside a
    /// message), or MAIL (inside one).
    stage_start: AtomicU64,
    in_message: AtomicBool,
    /// A [`Closed`] code once relayguard closes it.
    closing: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl State {
    fn close(&self, why: Closed) {
        if self
            .closing
            .compare_exchange(0, why.code(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            && let Some(waker) = self.waker.lock().expect("slot waker").take()
        {
            waker.wake();
        }
    }
}

/// Open MTA connections against the configured maximum.
pub struct Slots {
    open: AtomicUsize,
    max: usize,
    deadlines: Deadlines,
    epoch: Instant,
    states: Mutex<Vec<Weak<State>>>,
    last_warning: Mutex<Option<Instant>>,
    /// `relayguard_milter_connections`.
    pub gauge: prometheus_client::metrics::gauge::Gauge,
    /// `relayguard_connection_slots_full_total`.
    pub full: prometheus_client::metrics::counter::Counter,
    /// `relayguard_milter_connections_closed_total{why}`.
    pub closed: prometheus_client::metrics::family::Family<
        crate::metrics::ReasonLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl Slots {
    /// Slots for `max` connections living by `deadlines`, reporting into the metrics given.
    pub fn new(max: usize, deadlines: Deadlines, metrics: &crate::metrics::Metrics) -> Arc<Self> {
        Arc::new(Slots {
            open: AtomicUsize::new(0),
            max,
            deadlines,
            epoch: Instant::now(),
            states: Mutex::new(Vec::new()),
            last_warning: Mutex::new(None),
            gauge: metrics.connections.clone(),
            full: metrics.slots_full.clone(),
            closed: metrics.connections_closed.clone(),
        })
    }

    /// Slots that limit nothing (for tests of a single connection).
    #[cfg(test)]
    fn unlimited() -> Arc<Self> {
        let hour = Duration::from_secs(3_600);
        Self::new(
            usize::MAX - 1,
            Deadlines {
                idle: hour,
                message: hour,
            },
            &crate::metrics::Metrics::default(),
        )
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// How many connections the listener may hold at once: one more than the slots, so
    /// that a new connection can ask an idle one to leave.
    pub fn accept_limit(&self) -> usize {
        self.max + 1
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A slot for a new connection; when every slot is taken, the connection that has been
    /// outside a message longest is asked to close.
    pub fn take(self: &Arc<Self>, socket: MtaSocket) -> Connection {
        let now = self.now();
        let state = Arc::new(State {
            last_command: AtomicU64::new(now),
            stage_start: AtomicU64::new(now),
            in_message: AtomicBool::new(false),
            closing: AtomicU8::new(0),
            waker: Mutex::new(None),
        });
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.gauge.set(open as i64);
        {
            let mut states = self.states.lock().expect("slots");
            states.retain(|s| s.strong_count() > 0);
            if open > self.max {
                self.full.inc();
                let victim = states
                    .iter()
                    .filter_map(Weak::upgrade)
                    .filter(|s| {
                        !s.in_message.load(Ordering::SeqCst)
                            && s.closing.load(Ordering::SeqCst) == 0
                    })
                    .min_by_key(|s| s.stage_start.load(Ordering::SeqCst));
                let warn = {
                    let mut last = self.last_warning.lock().expect("slots warning");
                    let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                    if due {
                        *last = Some(Instant::now());
                    }
                    due
                };
                match victim {
                    Some(victim) => {
                        victim.close(Closed::SlotNeeded);
                        if warn {
                            tracing::warn!(
                                max_connections = self.max,
                                "all milter connection slots are taken: the connection longest outside a message gives its slot to a new one"
                            );
                        }
                    }
                    None if warn => tracing::warn!(
                        max_connections = self.max,
                        "all milter connection slots are taken by messages in progress: new MTA connections wait until one ends"
                    ),
                    None => {}
                }
            }
            states.push(Arc::downgrade(&state));
        }
        Connection {
            socket,
            slots: self.clone(),
            state,
            framing: Framing::default(),
            timer: Box::pin(tokio::time::sleep(self.deadlines.idle)),
            timer_at: None,
            reported: false,
            load: None,
        }
    }

    fn release(&self) {
        let open = self.open.fetch_sub(1, Ordering::SeqCst) - 1;
        self.gauge.set(open as i64);
    }
}

/// Where the reader is in the milter packet framing: a 4-byte length, a command byte, data.
#[derive(Debug, Default)]
pub(super) struct Framing {
    /// Bytes of the length read so far, and the length.
    len_read: u8,
    len: u32,
    /// Data bytes of the current packet still to pass (after the command byte).
    remaining: u32,
    /// Whether the next byte is a command byte.
    command_next: bool,
}

impl Framing {
    /// Feeds bytes read; calls `command` with each packet's command byte.
    pub(super) fn feed(&mut self, mut bytes: &[u8], mut command: impl FnMut(u8)) {
        while let Some((&byte, rest)) = bytes.split_first() {
            if self.remaining > 0 {
                let skip = (self.remaining as usize).min(bytes.len());
                self.remaining -= skip as u32;
                bytes = &bytes[skip..];
                continue;
            }
            bytes = rest;
            if self.command_next {
                command(byte);
                self.command_next = false;
                self.remaining = self.len.saturating_sub(1);
                continue;
            }
            if self.len_read == 0 {
                self.len = 0;
            }
            self.len = (self.len << 8) | u32::from(byte);
            self.len_read += 1;
            if self.len_read == 4 {
                self.len_read = 0;
                // A zero length (never sent by an MTA) has no command byte.
                self.command_next = self.len > 0;
            }
        }
    }
}

/// An accepted MTA connection holding a slot.
pub struct Connection {
    socket: MtaSocket,
    slots: Arc<Slots>,
    state: Arc<State>,
    framing: Framing,
    timer: Pin<Box<Sleep>>,
    /// The deadline the timer is armed for: at or before the connection's deadline.
    timer_at: Option<u64>,
    reported: bool,
    /// The serving thread's count of connections, when it keeps one.
    load: Option<Arc<AtomicUsize>>,
}

impl Connection {
    /// Counted (already) in `load` until it closes: the serving thread's connections.
    pub fn counted_in(mut self, load: Arc<AtomicUsize>) -> Self {
        self.load = Some(load);
        self
    }

    /// When the connection must have done something by (ms since the slots' epoch).
    fn deadline(&self) -> u64 {
        let d = self.slots.deadlines;
        if self.state.in_message.load(Ordering::SeqCst) {
            self.state.stage_start.load(Ordering::SeqCst) + d.message.as_millis() as u64
        } else {
            self.state.last_command.load(Ordering::SeqCst) + d.idle.as_millis() as u64
        }
    }

    fn closed(&mut self, why: Closed) -> Poll<io::Result<()>> {
        if !self.reported {
            self.reported = true;
            self.slots
                .closed
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: why.label().into(),
                })
                .inc();
            tracing::info!(why = why.label(), "closing an MTA connection");
        }
        // The end of the stream: the milter ends the connection.
        Poll::Ready(Ok(()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(load) = &self.load {
            load.fetch_sub(1, Ordering::Relaxed);
        }
        self.slots.release();
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        *self.state.waker.lock().expect("slot waker") = Some(cx.waker().clone());
        if let Some(why) = Closed::from_code(self.state.closing.load(Ordering::SeqCst)) {
            return self.closed(why);
        }
        // The timer may ring early, never late: a deadline that moved on (each command
        // moves the idle deadline) is looked at when the timer rings, not re-armed per
        // packet; one that moved closer is armed at once.
        loop {
            let deadline = self.deadline();
            if self.timer_at.is_none_or(|at| deadline < at) {
                let wait = deadline.saturating_sub(self.slots.now());
                let at = tokio::time::Instant::now() + Duration::from_millis(wait);
                self.timer.as_mut().reset(at);
                self.timer_at = Some(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                break;
            }
            if self.slots.now() < deadline {
                // Rang for a deadline that has moved on since: arm it for the one now.
                self.timer_at = None;
                continue;
            }
            let why = if self.state.in_message.load(Ordering::SeqCst) {
                Closed::MessageDeadline
            } else {
                Closed::Idle
            };
            self.state.closing.store(why.code(), Ordering::SeqCst);
            return self.closed(why);
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match this.socket.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let now = this.slots.now();
                let state = &this.state;
                this.framing
                    .feed(&buf.filled()[before..], |command| match command {
                        // SMFIC_MACRO: sent ahead of a command; not activity of its own.
                        b'D' => {}
                        // SMFIC_MAIL: a message begins.
                        b'M' => {
                            state.last_command.store(now, Ordering::SeqCst);
                            state.stage_start.store(now, Ordering::SeqCst);
                            state.in_message.store(true, Ordering::SeqCst);
                        }
                        // SMFIC_BODYEOB, SMFIC_ABORT: it ends.
                        b'E' | b'A' => {
                            state.last_command.store(now, Ordering::SeqCst);
                            state.stage_start.store(now, Ordering::SeqCst);
                            state.in_message.store(false, Ordering::SeqCst);
                        }
                        _ => state.last_command.store(now, Ordering::SeqCst),
                    });
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Taken as given (a packet may come in pieces); written at the flush that follows
        // each reply (indymilter flushes after every one), or held there if it is a change.
        self.socket.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_send(cx, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.socket.poll_send(cx, true))?;
        Poll::Ready(self.socket.shutdown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::socket::Accepted;
    use tokio::net::UnixStream;

    fn packet(command: u8, data: &[u8]) -> Vec<u8> {
        let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        out.push(command);
        out.extend_from_slice(data);
        out
    }

    #[tokio::test]
    async fn changes_wait_for_the_reply_that_ends_the_stage_and_go_out_with_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mta) = std::os::unix::net::UnixStream::pair().unwrap();
        mta.set_nonblocking(true).unwrap();
        let mut mta = UnixStream::from_std(mta).unwrap();
        let socket = MtaSocket::register(Accepted::Unix(ours)).unwrap();
        let mut conn = Slots::unlimited().take(socket);
        let mut expected = Vec::new();
        for reply in [
            packet(b'c', b""),
            packet(b'h', b"DKIM-Signature\0v=1; a=rsa-sha256\0"),
            packet(b'h', b"DKIM-Signature\0v=1; a=ed25519-sha256\0"),
            packet(b'a', b""),
        ] {
            conn.write_all(&reply).await.unwrap();
            conn.flush().await.unwrap();
            expected.extend_from_slice(&reply);
            let mut got = vec![0; 4096];
            match reply[4] {
                // A change: nothing reaches the MTA yet.
                b'h' => assert_eq!(
                    mta.try_read(&mut got).unwrap_err().kind(),
                    io::ErrorKind::WouldBlock
                ),
                // The reply that ends the stage brings every change before it, in order.
                _ => {
                    let mut all = vec![0; expected.len()];
                    mta.read_exact(&mut all).await.unwrap();
                    assert_eq!(all, expected);
                    expected.clear();
                }
            }
        }
    }

    #[test]
    fn framing_finds_every_command_byte_however_the_bytes_are_cut() {
        let stream = [
            packet(b'O', &[0; 12]),
            packet(b'D', b"Cj\0relay\0"),
            packet(b'C', b"client\0\x34\x00\x19127.0.0.1\0"),
            packet(b'M', b"<a@b>\0"),
            packet(b'L', b"Subject\0MDDD\0"),
            packet(b'E', b""),
        ]
        .concat();
        for cut in [1, 2, 3, 5, 7, 64] {
            let mut framing = Framing::default();
            let mut seen = Vec::new();
            for chunk in stream.chunks(cut) {
                framing.feed(chunk, |c| seen.push(c));
            }
            assert_eq!(seen, b"ODCMLE", "chunks of {cut}");
        }
    }
}
