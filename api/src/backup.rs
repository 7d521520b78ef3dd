//! `admin/backup`: a consistent backup of this node, streamed as a tar archive (see
//! `edgerate_replication::backup`). One at a time; the archive is written as the client reads
//! it, so the node holds the documents' saved bytes and a copy of the log, never the archive.

use crate::error::{ApiError, ErrorCode};
use crate::router::{Ctx, Output};
use axum::body::Body;
use bytes::Bytes;
use edgerate_replication::backup::Snapshot;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A client that stops reading for this long ends the backup.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes per chunk of the stream.
const CHUNK: usize = 1 << 20;

static RUNNING: AtomicBool = AtomicBool::new(false);

/// Set while a backup runs; cleared when dropped.
struct Running;

impl Running {
    fn start() -> Result<Self, ApiError> {
        RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Running)
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::Conflict,
                    "a backup of this node is already running",
                )
            })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Writes into the response stream in chunks, waiting for the client to take them.
struct Sink {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    runtime: tokio::runtime::Handle,
}

impl Sink {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.runtime
            .block_on(self.tx.send_timeout(chunk, SEND_TIMEOUT))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client stopped reading"))
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

pub fn backup(ctx: &Ctx) -> Result<Output, ApiError> {
    let running = Running::start()?;
    let state = &ctx.state;
    let node = state.node();
    let snapshot = Snapshot::take(
        state.catalog(),
        state.log(),
        &node.data_dir,
        &node.id,
        ctx.now,
    )
    .map_err(|e| ApiError::internal("taking a backup", e))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let sink = Sink {
        buf: Vec::with_capacity(CHUNK),
        tx,
        runtime: tokio::runtime::Handle::current(),
    };
    tokio::task::spawn_blocking(move || {
        let _running = running;
        match snapshot.write_to(sink) {
            Ok(m) => tracing::info!(documents = m.documents, "backup sent"),
            // The stream ends short of its manifest: the client sees a cut archive.
            Err(e) => tracing::warn!(error = %e, "backup stopped"),
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<Bytes, std::convert::Infallible>(chunk), rx))
    });
    Ok(Output::Stream {
        content_type: "application/x-tar",
        filename: format!("edgerate-{}-{}.tar", node.id, ctx.now),
        body: Body::from_stream(stream),
    })
}
