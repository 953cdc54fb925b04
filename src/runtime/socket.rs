//! An MTA connection's socket, as the milter thread serving it drives it: watched for
//! reading only, with replies written straight away and the ones that change the message
//! held for the reply that ends the stage.
//!
//! A socket watched for writing too wakes its thread each time the MTA takes bytes off it:
//! through Postfix that was almost three wake-ups per message with nothing to do. Replies
//! are small and the MTA reads each before it sends more, so a write finds room; only when
//! one would block is the socket watched for writing as well, until the reply is out.

use super::slots::Framing;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, ReadBuf};

/// An accepted connection, not yet registered with a runtime.
#[derive(Debug)]
pub enum Accepted {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// A unix socket.
    Unix(std::os::unix::net::UnixStream),
}

impl AsRawFd for Accepted {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Accepted::Tcp(s) => s.as_raw_fd(),
            Accepted::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// The socket of one MTA connection, registered on the current thread's runtime, and the
/// replies on their way.
pub struct MtaSocket {
    /// Always registered (taken out only to register it anew).
    fd: Option<AsyncFd<Accepted>>,
    /// Whether the socket is watched for writing too (a write would have blocked).
    writable_watched: bool,
    replies: Replies,
}

/// Replies on their way to the MTA. Those that change the message (add a header, change
/// the sender, ...) are held until the reply that ends the stage: a signed message's end is
/// one write (and one wake-up of the MTA), not one per signature plus one.
#[derive(Debug, Default)]
struct Replies {
    out: Vec<u8>,
    /// Bytes of `out` already written.
    written: usize,
    framing: Framing,
    /// Whether `out` holds a reply that must go now (anything but a change).
    due: bool,
}

/// SMFIR_ADDRCPT, DELRCPT, ADDRCPT_PAR, REPLBODY, CHGFROM, ADDHEADER, INSHEADER, CHGHEADER,
/// QUARANTINE: changes the MTA applies with the end-of-message reply that follows them.
const CHANGES: &[u8] = b"+-2behimq";

impl MtaSocket {
    /// Registers the socket, for reading, on the current runtime.
    pub fn register(socket: Accepted) -> io::Result<Self> {
        Ok(MtaSocket {
            fd: Some(watched(socket, Interest::READABLE)?),
            writable_watched: false,
            replies: Replies::default(),
        })
    }

    /// Queues reply bytes (whole packets, as the milter library writes them).
    pub fn push(&mut self, bytes: &[u8]) {
        let replies = &mut self.replies;
        let mut due = false;
        replies
            .framing
            .feed(bytes, |command| due |= !CHANGES.contains(&command));
        replies.due |= due || replies.out.len() + bytes.len() > 65_536;
        replies.out.extend_from_slice(bytes);
    }

    /// Writes the queued replies if one must go now (or `everything`); `Ready` once nothing
    /// is left to write but held changes.
    pub fn poll_send(&mut self, cx: &mut Context<'_>, everything: bool) -> Poll<io::Result<()>> {
        if !(self.replies.due || everything) {
            return Poll::Ready(Ok(()));
        }
        while self.replies.written < self.replies.out.len() {
            let out = std::mem::take(&mut self.replies.out);
            let result = self.poll_write(cx, &out[self.replies.written..]);
            self.replies.out = out;
            match ready!(result) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.replies.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.replies.out.clear();
        self.replies.written = 0;
        self.replies.due = false;
        Poll::Ready(self.wrote())
    }

    fn fd(&self) -> io::Result<&AsyncFd<Accepted>> {
        self.fd
            .as_ref()
            .ok_or_else(|| io::Error::other("the MTA socket could not be registered"))
    }

    /// Reads what has arrived into `buf`.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let fd = self.fd()?;
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| read(fd.get_ref(), unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes from `bytes`; watches for room only when there is none.
    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match write(self.fd()?.get_ref(), bytes) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                done => return Poll::Ready(done),
            }
            if !self.writable_watched {
                self.watch(Interest::READABLE | Interest::WRITABLE)?;
                self.writable_watched = true;
            }
            let mut guard = ready!(self.fd()?.poll_write_ready(cx))?;
            guard.clear_ready();
        }
    }

    /// After a write that had to wait: back to watching for reading only.
    fn wrote(&mut self) -> io::Result<()> {
        if self.writable_watched {
            self.watch(Interest::READABLE)?;
            self.writable_watched = false;
        }
        Ok(())
    }

    /// Ends the sending side.
    pub fn shutdown(&self) -> io::Result<()> {
        match self.fd()?.get_ref() {
            Accepted::Tcp(s) => s.shutdown(Shutdown::Write),
            Accepted::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// Registers the socket anew with `interest` (epoll knows a socket once).
    fn watch(&mut self, interest: Interest) -> io::Result<()> {
        let Some(fd) = self.fd.take() else {
            return Err(io::Error::other("the MTA socket could not be registered"));
        };
        self.fd = Some(watched(fd.into_inner(), interest)?);
        Ok(())
    }
}

/// Registers `socket` on the current runtime for `interest`.
fn watched(socket: Accepted, interest: Interest) -> io::Result<AsyncFd<Accepted>> {
    // SAFETY: `Accepted` owns its descriptor (a std socket) and always returns that one;
    // the `AsyncFd` owns the `Accepted` until it is dropped or taken back.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

fn read(socket: &Accepted, buf: &mut [u8]) -> io::Result<usize> {
    match socket {
        Accepted::Tcp(s) => (&*s).read(buf),
        Accepted::Unix(s) => (&*s).read(buf),
    }
}

fn write(socket: &Accepted, bytes: &[u8]) -> io::Result<usize> {
    match socket {
        Accepted::Tcp(s) => (&*s).write(bytes),
        Accepted::Unix(s) => (&*s).write(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (MtaSocket, tokio::net::UnixStream) {
        let (ours, mta) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        mta.set_nonblocking(true).unwrap();
        (
            MtaSocket::register(Accepted::Unix(ours)).unwrap(),
            tokio::net::UnixStream::from_std(mta).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_reply_that_finds_the_socket_full_waits_for_room_and_goes_out_whole() {
        let (mut socket, mut mta) = pair();
        // 4 MB: far more than a unix socket buffers, so the write must wait for the reader.
        let mut reply = ((4 << 20) as u32 + 1).to_be_bytes().to_vec();
        reply.push(b'c');
        reply.extend((0..4 << 20).map(|i| (i % 251) as u8));
        let expected = reply.clone();
        let reader = tokio::spawn(async move {
            let mut got = vec![0; expected.len()];
            mta.read_exact(&mut got).await.unwrap();
            assert!(got == expected, "the reply arrived changed");
            // Then the MTA sends the next command: the socket reads again.
            mta.write_all(b"\0\0\0\x01Q").await.unwrap();
            mta
        });
        socket.push(&reply);
        std::future::poll_fn(|cx| socket.poll_send(cx, false))
            .await
            .unwrap();
        assert!(
            !socket.writable_watched,
            "back to watching for reading only"
        );
        let _mta = reader.await.unwrap();
        let mut buf = [0u8; 16];
        let mut read = ReadBuf::new(&mut buf);
        std::future::poll_fn(|cx| socket.poll_read(cx, &mut read))
            .await
            .unwrap();
        assert_eq!(read.filled(), b"\0\0\0\x01Q");
    }
}
