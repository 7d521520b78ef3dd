//! Answers streamed as they are produced (a CDR export, a backup): blocking work sends chunks
//! through a small bounded channel to the response body, waiting while the client is slow and
//! stopping when it stops reading.

use axum::body::Body;
use bytes::Bytes;
use std::io;
use std::time::Duration;

/// Chunks in flight between the producer and the client.
const IN_FLIGHT: usize = 4;

/// The producer's end, used from a blocking thread.
pub struct Chunks {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl Chunks {
    /// Sends one chunk; false when the client went away or took nothing for `timeout`.
    pub fn send(&self, chunk: Bytes) -> bool {
        self.runtime
            .block_on(self.tx.send_timeout(chunk, self.timeout))
            .is_ok()
    }
}

/// A channel to a response body; a chunk the client has not taken within `timeout` ends it.
/// Call from within the runtime.
pub fn channel(timeout: Duration) -> (Chunks, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(IN_FLIGHT);
    let chunks = Chunks {
        tx,
        runtime: tokio::runtime::Handle::current(),
        timeout,
    };
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<Bytes, std::convert::Infallible>(chunk), rx))
    });
    (chunks, Body::from_stream(stream))
}

/// An [`io::Write`] onto [`Chunks`], sending `chunk` bytes at a time.
pub struct ChunkWriter {
    chunks: Chunks,
    buf: Vec<u8>,
    chunk: usize,
}

impl ChunkWriter {
    pub fn new(chunks: Chunks, chunk: usize) -> Self {
        Self {
            chunks,
            buf: Vec::with_capacity(chunk),
            chunk,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk));
        if self.chunks.send(Bytes::from(full)) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client stopped reading",
            ))
        }
    }
}

impl io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.chunk {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
