//! Checkpoints of the event log's write-ahead log, off the write path.
//!
//! A commit is durable once its frames are in the WAL (`synchronous=FULL` syncs it). SQLite's
//! own checkpoint, which copies those pages into the database file and syncs it, runs inside
//! the commit that crosses `wal_autocheckpoint`: at 10M CDRs it was a fifth of the ingest's
//! CPU, and the writer then also waited for the sync of ~1000 scattered pages a batch. Here a
//! thread with a connection of its own checkpoints (PASSIVE: it never blocks the writer, nor
//! waits for it) after commits, at most once every [`PACE`]: while the writer commits the next
//! batch, the previous ones are copied. The writer keeps SQLite's checkpoint only as the bound
//! ([`BACKSTOP_BYTES`]) for a checkpointer that falls behind.
//!
//! Nothing becomes durable or visible later for this: readers read committed pages from the
//! WAL until they are copied, and a crash replays the WAL at the next open.

use super::LogError;
use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The shortest time between two checkpoints: a page that later batches dirty again in the
/// meantime is copied once.
const PACE: Duration = Duration::from_millis(1000);

/// WAL bytes past which a commit checkpoints itself (SQLite's `wal_autocheckpoint`, set in pages
/// of the log's size): seconds of ingest, which the checkpointer normally never lets the WAL
/// reach. It also bounds what a crash leaves to replay at the next open.
pub(super) const BACKSTOP_BYTES: i64 = 256 << 20;

/// Failed checkpoints (the disk full, say): the WAL keeps the pages, and the next one retries.
pub const CHECKPOINT_ERRORS: &str = "edgerate_eventlog_checkpoint_errors_total";

#[derive(Default)]
struct Signal {
    /// A commit came since the last checkpoint began, or it left frames uncopied.
    pending: bool,
    stop: bool,
}

/// The checkpointing thread; stopped and joined on drop.
pub(super) struct Checkpointer {
    signal: Arc<(Mutex<Signal>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode).
    pub(super) fn start(path: &Path) -> Result<Self, LogError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        // The copied pages are synced to the database file before the WAL is reused.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let signal = Arc::new((Mutex::new(Signal::default()), Condvar::new()));
        let thread = std::thread::Builder::new()
            .name("eventlog-checkpoint".into())
            .spawn({
                let signal = signal.clone();
                move || run(&conn, &signal)
            })
            .map_err(LogError::Thread)?;
        Ok(Self {
            signal,
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint of what is committed now (never waits for one).
    pub(super) fn wake(&self) {
        let (state, changed) = &*self.signal;
        state.lock().pending = true;
        changed.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (state, changed) = &*self.signal;
        state.lock().stop = true;
        changed.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, signal: &(Mutex<Signal>, Condvar)) {
    let (state, changed) = signal;
    let mut failing = false;
    loop {
        {
            let mut s = state.lock();
            changed.wait_while(&mut s, |s| !s.pending && !s.stop);
            if s.stop {
                return;
            }
            s.pending = false;
        }
        let started = Instant::now();
        // Until every frame is copied, readers look each page up in the WAL's index first, and
        // the WAL cannot be reused: a checkpoint that leaves frames behind (a commit came
        // meanwhile, the disk refused) is followed by another, commits or not.
        let behind = match checkpoint(conn) {
            Ok(behind) => {
                failing = false;
                behind
            }
            Err(e) => {
                metrics::counter!(CHECKPOINT_ERRORS).increment(1);
                if !failing {
                    tracing::warn!(error = %e, "event log checkpoint failed; the WAL keeps the pages");
                }
                failing = true;
                true
            }
        };
        // The pace; commits meanwhile leave `pending` set for the next round.
        let mut s = state.lock();
        s.pending |= behind;
        changed.wait_while_for(&mut s, |s| !s.stop, PACE.saturating_sub(started.elapsed()));
        if s.stop {
            return;
        }
    }
}

/// One PASSIVE checkpoint; true when it left frames of the WAL uncopied.
fn checkpoint(conn: &Connection) -> Result<bool, rusqlite::Error> {
    // (busy, frames in the WAL, frames copied): -1s when the database is not in WAL mode.
    let (busy, frames, copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(busy != 0 || copied < frames)
}
