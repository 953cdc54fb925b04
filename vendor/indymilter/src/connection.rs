// indymilter – asynchronous milter library
// Copyright © 2021–2022 David Bürgin <dbuergin@gluet.ch>
//
// This program is free software: you can redistribute it and/or modify it under
// the terms of the GNU General Public License as published by the Free Software
// Foundation, either version 3 of the License, or (at your option) any later
// version.
//
// This program is distributed in the hope that it will be useful, but WITHOUT
// ANY WARRANTY; without even the implied warranty of MERCHANTABILITY or FITNESS
// FOR A PARTICULAR PURPOSE. See the GNU General Public License for more
// details.
//
// You should have received a copy of the GNU General Public License along with
// this program. If not, see <https://www.gnu.org/licenses/>.

use crate::message::{self, reply::Reply, Message};
use bytes::Bytes;
use std::{io, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    sync::Mutex,
    time,
};
use tracing::trace;

// relayguard patch (see PATCHES.md): the connection is read and written in
// place by whichever task holds it, instead of by an actor task that each read
// and each write is handed to over a channel. A milter packet then costs no
// task hand-off, channel or oneshot allocation.

const READ_BUFFER_LEN: usize = 4096;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S> Stream for S where S: AsyncRead + AsyncWrite + Unpin + Send {}

// A connection can be cloned. Cloned connections all share the connection
// stream. Once the last `Connection` is dropped, so is the stream.
//
// Note that in a milter session, a connection is only ever read from or written
// to serially. However, during the eom stage, a clone of the connection is used
// to write replies from the eom callback. The lock is therefore never contended.
#[derive(Clone)]
pub struct Connection {
    stream: Arc<Mutex<BufReader<Box<dyn Stream>>>>,
    timeout: Duration,
}

impl Connection {
    pub fn new<S>(stream: S, timeout: Duration) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let stream: Box<dyn Stream> = Box::new(stream);

        // Reads are buffered (4 KiB: a read larger than that bypasses the
        // buffer); writes go straight to the stream, which is expected to
        // buffer them itself until the flush that follows every message, as
        // relayguard's does. (Upstream: a buffer of 8 KiB each way, so every
        // reply was copied twice before it was sent.)
        let stream = BufReader::with_capacity(READ_BUFFER_LEN, stream);

        Self {
            stream: Arc::new(Mutex::new(stream)),
            timeout,
        }
    }

    // Reads the next message; of a body chunk, only the first piece. Returns
    // the message and the number of body bytes left for `read_body_piece`.
    pub async fn read_message(&self) -> io::Result<(Message, usize)> {
        let mut stream = self.stream.lock().await;

        let result = match time::timeout(self.timeout, message::read_in_pieces(&mut *stream)).await
        {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        };

        if let Ok((msg, rest)) = &result {
            trace!(?msg, rest, "message read");
        }

        result
    }

    // Reads the next piece of the body chunk being read.
    pub async fn read_body_piece(&self, rest: &mut usize) -> io::Result<Bytes> {
        let mut stream = self.stream.lock().await;

        match time::timeout(self.timeout, message::read_piece(&mut *stream, rest)).await {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        }
    }

    pub async fn write_reply(&self, reply: Reply) -> io::Result<()> {
        let msg = reply.into_message();

        self.write_message(msg).await
    }

    pub async fn write_message(&self, msg: Message) -> io::Result<()> {
        trace!(?msg, "writing message");

        let mut stream = self.stream.lock().await;

        match time::timeout(self.timeout, message::write(&mut *stream, msg)).await {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        }
    }

    // Shuts down the stream (the stream flushing what it buffered), as the actor did
    // before it exited. An error is no longer of interest.
    pub async fn shutdown(&self) {
        let mut stream = self.stream.lock().await;

        let _ = time::timeout(self.timeout, stream.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use tokio::{io::AsyncReadExt, join};

    #[tokio::test]
    async fn multiple_connections() {
        let (mut client, stream) = tokio::io::duplex(100);

        let conn1 = Connection::new(stream, Duration::from_secs(30));
        let conn2 = conn1.clone();

        // First, read from and write to the first connection.

        client.write_all(b"\0\0\0\x03xyz").await.unwrap();

        let (msg, rest) = conn1.read_message().await.unwrap();
        assert_eq!(msg, Message::new(b'x', "yz"));
        assert_eq!(rest, 0);
        conn1.write_message(msg).await.unwrap();

        let mut buffer = vec![0; 7];
        client.read_exact(&mut buffer).await.unwrap();
        assert_eq!(buffer, b"\0\0\0\x03xyz");

        // Drop the first connection and continue using the second connection.

        drop(conn1);

        let msg = Message::new(b'x', "abc");
        conn2.write_message(msg).await.unwrap();

        let mut buffer = vec![0; 8];
        client.read_exact(&mut buffer).await.unwrap();
        assert_eq!(buffer, b"\0\0\0\x04xabc");

        // Drop the second and last remaining connection, closing the stream.

        drop(conn2);

        let e = client.read_u8().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn connection_timeout() {
        let timeout = Duration::from_secs(30);

        let (mut client, stream) = tokio::io::duplex(100);
        let conn = Connection::new(stream, timeout);

        // Both the `Connection` and the client end of the duplex stream are
        // moved into the futures. The connection is therefore dropped and
        // closes after 30 seconds. The client write then fails as it attempts
        // to write a few seconds later.

        time::pause();

        let (stream_result, client_result) = join!(
            async move { conn.read_message().await.map(|(msg, _)| msg) },
            async move {
                client.write_all(b"\0\0\0\x05").await.unwrap();
                time::sleep(timeout + Duration::from_secs(5)).await;
                client.write_all(b"Xyzabc").await
            },
        );

        time::resume();

        let e = stream_result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);

        let e = client_result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    }

    // relayguard patch: a body chunk is read in pieces, anything else whole.
    #[tokio::test]
    async fn body_chunk_read_in_pieces() {
        use crate::message::BODY_PIECE_LEN;

        let (mut client, stream) = tokio::io::duplex(1 << 20);
        let conn = Connection::new(stream, Duration::from_secs(30));

        let body: Vec<u8> = (0..2 * BODY_PIECE_LEN + 7).map(|i| i as u8).collect();
        for (kind, payload) in [(b'B', &body[..]), (b'L', &body[..]), (b'B', &body[..5])] {
            let len = u32::try_from(payload.len() + 1).unwrap();
            client.write_all(&len.to_be_bytes()).await.unwrap();
            client.write_all(&[kind]).await.unwrap();
            client.write_all(payload).await.unwrap();
        }

        // The body chunk: three pieces, in order.
        let (msg, mut rest) = conn.read_message().await.unwrap();
        assert_eq!(
            (msg.kind, msg.buffer.len(), rest),
            (b'B', BODY_PIECE_LEN, body.len() - BODY_PIECE_LEN)
        );
        let mut got = msg.buffer.to_vec();
        while rest > 0 {
            let piece = conn.read_body_piece(&mut rest).await.unwrap();
            assert!(!piece.is_empty() && piece.len() <= BODY_PIECE_LEN);
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, body);

        // A header of the same size: whole.
        let (msg, rest) = conn.read_message().await.unwrap();
        assert_eq!((msg.kind, &msg.buffer[..], rest), (b'L', &body[..], 0));

        // A small body chunk: whole.
        let (msg, rest) = conn.read_message().await.unwrap();
        assert_eq!((msg.kind, &msg.buffer[..], rest), (b'B', &body[..5], 0));
    }
}
