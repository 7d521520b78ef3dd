//! `admin/backup`: a consistent backup of this node, streamed as a tar archive (see
//! `edgerate_replication::backup`). One at a time; the archive is written as the client reads
//! it, so the node holds the documents' saved bytes and a copy of the log, never the archive.

use crate::error::{ApiError, ErrorCode};
use crate::router::{Ctx, Output};
use crate::state::AppState;
use crate::stream::{self, ChunkWriter};
use edgerate_replication::backup::Snapshot;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A client that stops reading for this long ends the backup.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes per chunk of the stream.
const CHUNK: usize = 1 << 20;

/// This node's backup in progress; its flag is cleared when dropped.
struct Running(AppState);

impl Running {
    fn start(state: &AppState) -> Result<Self, ApiError> {
        state
            .backup_running()
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Running(state.clone()))
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
        self.0.backup_running().store(false, Ordering::Release);
    }
}

pub fn backup(ctx: &Ctx) -> Result<Output, ApiError> {
    let running = Running::start(&ctx.state)?;
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
    let (chunks, body) = stream::channel(SEND_TIMEOUT);
    let sink = ChunkWriter::new(chunks, CHUNK);
    tokio::task::spawn_blocking(move || {
        let _running = running;
        match snapshot.write_to(sink) {
            Ok(m) => tracing::info!(documents = m.documents, "backup sent"),
            // The stream ends short of its manifest: the client sees a cut archive.
            Err(e) => tracing::warn!(error = %e, "backup stopped"),
        }
    });
    Ok(Output::Stream {
        content_type: "application/x-tar",
        filename: format!("edgerate-{}-{}.tar", node.id, ctx.now),
        body,
    })
}
