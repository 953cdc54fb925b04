//! An MTA connection's socket, as the milter thread serving it drives it: watched for
//! reading only ([`crate::socket`]), with replies written straight away and the ones that
//! change the message held for the reply that ends the stage.

use super::slots::Framing;
use crate::socket::{ReadWatched, Stream};
use std::io;
use std::task::{Context, Poll, ready};
use tokio::io::ReadBuf;

/// An accepted connection, not yet registered with a runtime.
pub type Accepted = Stream;

/// The socket of one MTA connection, registered on the current thread's runtime, and the
/// replies on their way.
pub struct MtaSocket {
    socket: ReadWatched,
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
            socket: ReadWatched::register(socket)?,
            replies: Replies::default(),
        })
    }

    /// Reads what has arrived into `buf`.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.socket.poll_read_from(cx, buf)
    }

    /// Queues reply bytes, a packet whole or in pieces (the milter library writes a
    /// packet's length, command and data in turn, and flushes after each packet).
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
        let replies = &mut self.replies;
        if !(replies.due || everything) {
            return Poll::Ready(Ok(()));
        }
        while replies.written < replies.out.len() {
            match ready!(
                self.socket
                    .poll_write_to(cx, &replies.out[replies.written..])
            ) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => replies.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        replies.out.clear();
        replies.written = 0;
        replies.due = false;
        Poll::Ready(Ok(()))
    }

    /// Ends the sending side.
    pub fn shutdown(&self) -> io::Result<()> {
        self.socket.shutdown_write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (MtaSocket, tokio::net::UnixStream) {
        let (ours, mta) = std::os::unix::net::UnixStream::pair().unwrap();
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
            !socket.socket.watches_writes(),
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
