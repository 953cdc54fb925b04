//! A stream socket watched for reading only, for both ends of the milter protocol.
//!
//! Each side writes when it has something to say and the other reads it before answering,
//! so a write finds room. A socket watched for writing too (as tokio's streams are) wakes
//! its thread each time the peer takes bytes off it, for nothing: through Postfix almost
//! three wake-ups per message. Only a write that would block watches for room, until it is
//! done.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected socket, not yet registered with a runtime.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// A unix socket.
    Unix(std::os::unix::net::UnixStream),
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// A socket registered on the current thread's runtime, watched for reading only.
pub struct ReadWatched {
    /// Always registered (taken out only to register it anew).
    fd: Option<AsyncFd<Stream>>,
    /// Whether the socket is watched for writing too (a write would have blocked).
    writable_watched: bool,
}

impl ReadWatched {
    /// Registers a socket, for reading, on the current runtime (non-blocking from now on).
    pub fn register(socket: Stream) -> io::Result<Self> {
        match &socket {
            Stream::Tcp(s) => s.set_nonblocking(true)?,
            Stream::Unix(s) => s.set_nonblocking(true)?,
        }
        Ok(ReadWatched {
            fd: Some(watched(socket, Interest::READABLE)?),
            writable_watched: false,
        })
    }

    fn fd(&self) -> io::Result<&AsyncFd<Stream>> {
        self.fd
            .as_ref()
            .ok_or_else(|| io::Error::other("the socket could not be registered"))
    }

    /// Reads what has arrived into `buf`.
    pub fn poll_read_from(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let fd = self.fd()?;
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let wanted = unfilled.len();
            match guard.try_io(|fd| read(fd.get_ref(), unfilled)) {
                Ok(Ok(n)) => {
                    // Less than asked for: the socket is empty now (epoll reports the
                    // next bytes as a new edge), so the next read waits for them instead
                    // of learning it from a read that would block. tokio's own streams
                    // do the same on epoll.
                    if 0 < n && n < wanted {
                        guard.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes from `bytes`; watches for room only when there is none, and stops watching
    /// once a write went through.
    pub fn poll_write_to(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match write(self.fd()?.get_ref(), bytes) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
                Ok(n) => {
                    if self.writable_watched {
                        self.watch(Interest::READABLE)?;
                        self.writable_watched = false;
                    }
                    return Poll::Ready(Ok(n));
                }
            }
            if !self.writable_watched {
                self.watch(Interest::READABLE | Interest::WRITABLE)?;
                self.writable_watched = true;
            }
            let mut guard = ready!(self.fd()?.poll_write_ready(cx))?;
            guard.clear_ready();
        }
    }

    /// Whether the socket is watched for writing now (a write is waiting for room).
    pub fn watches_writes(&self) -> bool {
        self.writable_watched
    }

    /// Ends the sending side.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self.fd()?.get_ref() {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// Registers the socket anew with `interest` (epoll knows a socket once).
    fn watch(&mut self, interest: Interest) -> io::Result<()> {
        let Some(fd) = self.fd.take() else {
            return Err(io::Error::other("the socket could not be registered"));
        };
        self.fd = Some(watched(fd.into_inner(), interest)?);
        Ok(())
    }
}

impl AsyncRead for ReadWatched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_read_from(cx, buf)
    }
}

impl AsyncWrite for ReadWatched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_to(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

/// Registers `socket` on the current runtime for `interest`.
fn watched(socket: Stream, interest: Interest) -> io::Result<AsyncFd<Stream>> {
    // SAFETY: `Stream` owns its descriptor (a std socket) and always returns that one; the
    // `AsyncFd` owns the `Stream` until it is dropped or taken back.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

fn read(socket: &Stream, buf: &mut [u8]) -> io::Result<usize> {
    match socket {
        Stream::Tcp(s) => (&*s).read(buf),
        Stream::Unix(s) => (&*s).read(buf),
    }
}

fn write(socket: &Stream, bytes: &[u8]) -> io::Result<usize> {
    match socket {
        Stream::Tcp(s) => (&*s).write(bytes),
        Stream::Unix(s) => (&*s).write(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    async fn read_some(socket: &mut ReadWatched) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let mut read = ReadBuf::new(&mut buf);
        std::future::poll_fn(|cx| socket.poll_read_from(cx, &mut read))
            .await
            .unwrap();
        read.filled().to_vec()
    }

    #[tokio::test]
    async fn a_read_that_empties_the_socket_waits_for_the_next_bytes_and_gets_them() {
        let (ours, peer) = std::os::unix::net::UnixStream::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let mut socket = ReadWatched::register(Stream::Unix(ours)).unwrap();
        let mut peer = tokio::net::UnixStream::from_std(peer).unwrap();
        for round in 0..3 {
            let sent = format!("packet {round}");
            peer.write_all(sent.as_bytes()).await.unwrap();
            // Less than the buffer holds: the socket is empty after it.
            assert_eq!(read_some(&mut socket).await, sent.as_bytes());
            // Nothing more yet: the next read waits ...
            let waiting = tokio::time::timeout(Duration::from_millis(20), read_some(&mut socket));
            assert!(waiting.await.is_err(), "a read returned with nothing sent");
            // ... and the bytes sent next wake it.
            let late = format!("late {round}");
            peer.write_all(late.as_bytes()).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), read_some(&mut socket))
                .await
                .expect("the next bytes woke the reader");
            assert_eq!(got, late.as_bytes());
        }
    }
}
