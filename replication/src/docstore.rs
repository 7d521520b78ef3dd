//! Durable Automerge documents: each document is a snapshot file plus an append-only log of
//! incremental changes, both on local disk.
//!
//! A change is acknowledged only after its bytes are in the log and the log is fsynced. The log
//! is a sequence of frames `len: u32 LE, crc32: u32 LE, bytes`. A write that fails (a full
//! disk) is undone: the log is cut back to its last good frame and the document in memory goes
//! back to its last durable state, so the refused change never reappears and every later
//! acknowledged one survives a restart. On load a torn last frame (a write never acknowledged)
//! is cut; a document whose snapshot or log is unreadable anywhere else is moved to the
//! quarantine directory and the node starts without it (peers send it again), as is any file
//! that is not a document's. Compaction writes a fresh snapshot to a temporary file, renames it
//! over the old one and empties the log; a crash between the two steps leaves changes in both,
//! which Automerge applies idempotently. A document's first content and changes as large as
//! the snapshot (a whole shard from a peer) are written as a new snapshot at once rather than
//! logged and compacted later.

use automerge::transaction::CommitOptions;
use automerge::{sync, sync::SyncDoc, AutoCommit, ChangeHash};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Why a document operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage i/o failed: {0}")]
    Io(#[from] io::Error),
    #[error("document {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("document {0} already exists")]
    Exists(String),
    #[error("document {0} does not exist")]
    Missing(String),
    #[error("document id {0:?} is not [a-z0-9_-]+")]
    BadId(String),
}

impl StoreError {
    /// True when the write failed for want of disk space (ENOSPC, or EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io(io) if io.kind() == io::ErrorKind::StorageFull || io.kind() == io::ErrorKind::QuotaExceeded)
    }
}

/// A log grows to this many bytes, and past the snapshot's size, before it is compacted.
const COMPACT_MIN_LOG_BYTES: u64 = 256 * 1024;
/// A log of this many frames is compacted whatever its size: loading applies each frame as a
/// change, and many small ones cost far more than one snapshot of the same state.
const COMPACT_MAX_FRAMES: u64 = 100;
const FRAME_HEADER: usize = 8;

/// One document and its files.
pub struct DurableDoc {
    id: String,
    doc: AutoCommit,
    /// Heads as of the last byte written to disk: the next append is `save_after(saved_heads)`.
    saved_heads: Vec<ChangeHash>,
    log: Option<File>,
    /// Bytes of whole, durable frames in the log: the log's length, except after a failed
    /// write whose cut also failed (`log_dirty`).
    log_bytes: u64,
    /// The log may hold a partial frame past `log_bytes`: cut it before the next append.
    log_dirty: bool,
    /// Frames in the log since the last snapshot.
    log_frames: u64,
    snapshot_bytes: u64,
    /// Snapshots written in place while the document is locked (see [`DocStore::persist`]):
    /// a compaction that began before one has a stale snapshot and drops it.
    rewrites: u64,
}

impl DurableDoc {
    /// The bytes of log past which it is compacted: 256 KiB, or the snapshot's size if larger.
    fn log_limit(&self) -> u64 {
        COMPACT_MIN_LOG_BYTES.max(self.snapshot_bytes)
    }

    /// The document, for reading.
    pub fn doc(&self) -> &AutoCommit {
        &self.doc
    }
}

/// Every document under one directory, each behind its own lock.
#[derive(Clone)]
pub struct DocStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    actor: automerge::ActorId,
    /// Set while writes fail for want of disk space; cleared by the next durable write.
    disk_full: std::sync::atomic::AtomicBool,
    /// Files moved to quarantine at start: (file name, why).
    quarantined: Vec<(String, String)>,
    docs: Mutex<HashMap<String, Arc<Mutex<DurableDoc>>>>,
    /// Called with a document's id after every local change is durable (replication pushes it).
    on_change: arc_swap::ArcSwapOption<ChangeHook>,
    /// Documents removed since start: a peer's late message must not bring one back.
    removed: Mutex<std::collections::HashSet<String>>,
}

/// Told the id of every document changed locally.
pub type ChangeHook = Box<dyn Fn(&str) + Send + Sync>;

impl DocStore {
    /// Opens (creating if needed) the store in `dir` and loads every document in it. A file
    /// that is not a readable document is moved to `quarantine` (logged and counted).
    /// `actor` identifies this node in every change it makes.
    pub fn open(
        dir: &Path,
        quarantine: &Path,
        actor: automerge::ActorId,
    ) -> Result<Self, StoreError> {
        fs::create_dir_all(dir)?;
        let mut docs = HashMap::new();
        let mut quarantined = Vec::new();
        let mut names: Vec<PathBuf> = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for path in &names {
            if path.is_dir() {
                continue;
            }
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(path);
                continue;
            }
            if let Some(id) = log_id(path) {
                if names.contains(&snapshot_path(dir, &id)) {
                    continue;
                }
            }
            let Some(id) = snapshot_id(path) else {
                move_to_quarantine(path, quarantine, "not a document file", &mut quarantined)?;
                continue;
            };
            match load(dir, &id, &actor) {
                Ok(doc) => {
                    docs.insert(id, Arc::new(Mutex::new(doc)));
                }
                Err(StoreError::Corrupt { reason, .. }) => {
                    move_to_quarantine(path, quarantine, &reason, &mut quarantined)?;
                    let log = log_path(dir, &id);
                    if log.exists() {
                        move_to_quarantine(&log, quarantine, &reason, &mut quarantined)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                actor,
                disk_full: std::sync::atomic::AtomicBool::new(false),
                quarantined,
                docs: Mutex::new(docs),
                on_change: arc_swap::ArcSwapOption::empty(),
                removed: Mutex::default(),
            }),
        })
    }

    /// Files moved to quarantine when the store was opened: (file name, why).
    pub fn quarantined(&self) -> &[(String, String)] {
        &self.inner.quarantined
    }

    /// True while the last write failed for want of disk space.
    pub fn disk_full(&self) -> bool {
        self.inner
            .disk_full
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the hook told of every local change.
    pub fn on_change(&self, hook: ChangeHook) {
        self.inner.on_change.store(Some(Arc::new(hook)));
    }

    fn changed(&self, id: &str) {
        if let Some(hook) = &*self.inner.on_change.load() {
            hook(id);
        }
    }

    /// Ids of every document held.
    pub fn ids(&self) -> Vec<String> {
        self.inner.docs.lock().keys().cloned().collect()
    }

    /// Every document as Automerge's saved bytes (what a snapshot file holds), by id, sorted.
    pub fn save_all(&self) -> Vec<(String, Vec<u8>)> {
        let mut handles: Vec<(String, Arc<Mutex<DurableDoc>>)> = self
            .inner
            .docs
            .lock()
            .iter()
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect();
        handles.sort_by(|a, b| a.0.cmp(&b.0));
        handles
            .into_iter()
            .map(|(id, handle)| {
                let bytes = handle.lock().doc.save();
                (id, bytes)
            })
            .collect()
    }

    /// Writes a document's saved bytes (from [`Self::save_all`]) as its snapshot in `dir`, a
    /// store not open: a restore. Bytes Automerge cannot load are refused.
    pub fn write_saved(dir: &Path, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        check_id(id)?;
        AutoCommit::load(bytes).map_err(|e| StoreError::Corrupt {
            id: id.to_owned(),
            reason: format!("not a saved document: {e}"),
        })?;
        fs::create_dir_all(dir)?;
        Ok(write_snapshot(dir, id, bytes)?)
    }

    /// The next sync message for a peer whose sync state is `state`, if there is anything to say.
    pub fn generate_sync(&self, id: &str, state: &mut sync::State) -> Option<sync::Message> {
        let handle = self.get(id)?;
        let mut guard = handle.lock();
        let message = guard.doc.sync().generate_sync_message(state);
        message
    }

    /// Applies a peer's sync message to document `id` (created, empty, if this node lacks it)
    /// and makes what it added durable. Returns the document's heads before it: the keys the
    /// message wrote are [`Self::keys_since`] them.
    pub fn receive_sync(
        &self,
        id: &str,
        state: &mut sync::State,
        mut message: sync::Message,
    ) -> Result<Vec<ChangeHash>, StoreError> {
        check_id(id)?;
        if self.inner.removed.lock().contains(id) {
            return Ok(Vec::new());
        }
        let handle = match self.get(id) {
            Some(h) => h,
            None => self.create_empty(id)?,
        };
        let mut guard = handle.lock();
        // A message's changes are all ancestors of the sender's heads: when this node holds
        // every one of those, it holds the changes too (a shard sent whole by a second peer
        // after the first one's copy arrived), and parsing them again is skipped.
        if !message.changes.is_empty()
            && !message.heads.is_empty()
            && guard.doc.get_missing_deps(&message.heads).is_empty()
        {
            message.changes = Vec::<Vec<u8>>::new().into();
        }
        let before = guard.doc.get_heads();
        guard.doc.sync().receive_sync_message(state, message)?;
        if let Err(e) = self.persist(&mut guard) {
            // What the message brought was undone: start this peer's sync of the document
            // afresh, so it is offered again.
            *state = sync::State::new();
            return Err(e);
        }
        Ok(before)
    }

    /// Every map key the changes of document `id` made since heads `before` wrote or deleted
    /// (their current values are for the caller to read), sorted. From the changes'
    /// operations, not from a patch log or a diff: the patch log misses a put that wins a
    /// conflict when a delete of the loser arrives with it, and a diff scans the whole
    /// document (tens of ms for 100k rules).
    pub fn keys_since(&self, id: &str, before: &[ChangeHash]) -> Vec<String> {
        let Some(handle) = self.get(id) else {
            return Vec::new();
        };
        let mut guard = handle.lock();
        let mut keys: Vec<String> = guard
            .doc
            .get_changes(before)
            .iter()
            .flat_map(|change| change.decode().operations)
            .filter_map(|op| match op.key {
                automerge::legacy::Key::Map(key) => Some(key.to_string()),
                automerge::legacy::Key::Seq(_) => None,
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// An empty document `id` (no changes), on disk, to receive a peer's changes into.
    fn create_empty(&self, id: &str) -> Result<Arc<Mutex<DurableDoc>>, StoreError> {
        let mut docs = self.inner.docs.lock();
        if let Some(h) = docs.get(id) {
            return Ok(h.clone());
        }
        let doc = AutoCommit::new().with_actor(self.inner.actor.clone());
        let handle = Arc::new(Mutex::new(self.first_snapshot(id, doc)?));
        docs.insert(id.to_owned(), handle.clone());
        Ok(handle)
    }

    /// Writes a new document's first snapshot; the document is durable from then on.
    fn first_snapshot(&self, id: &str, mut doc: AutoCommit) -> Result<DurableDoc, StoreError> {
        let bytes = doc.save();
        write_snapshot(&self.inner.dir, id, &bytes)?;
        Ok(DurableDoc {
            id: id.to_owned(),
            saved_heads: doc.get_heads(),
            doc,
            log: None,
            log_bytes: 0,
            log_dirty: false,
            log_frames: 0,
            snapshot_bytes: bytes.len() as u64,
            rewrites: 0,
        })
    }

    /// The actor of this node's changes.
    pub fn actor(&self) -> &automerge::ActorId {
        &self.inner.actor
    }

    /// The newest commit time (unix seconds) among document `id`'s heads.
    pub fn head_time(&self, id: &str) -> Option<i64> {
        let handle = self.get(id)?;
        let mut guard = handle.lock();
        let heads = guard.doc.get_heads();
        // The change graph's metadata: no change is rebuilt from the op set.
        heads
            .iter()
            .filter_map(|h| guard.doc.get_change_meta_by_hash(h).map(|m| m.timestamp))
            .max()
    }

    /// Current heads of document `id`.
    pub fn heads(&self, id: &str) -> Option<Vec<ChangeHash>> {
        Some(self.get(id)?.lock().doc.get_heads())
    }

    /// Runs `read` on document `id` (if it exists) with the mutable access that reading its
    /// history needs in Automerge (`get_changes_meta`, `fork_at`). `read` must not change the
    /// document: nothing is committed, persisted or pushed.
    pub fn inspect<T>(&self, id: &str, read: impl FnOnce(&mut AutoCommit) -> T) -> Option<T> {
        let handle = self.get(id)?;
        let mut guard = handle.lock();
        let out = read(&mut guard.doc);
        debug_assert!(
            guard.doc.get_heads() == guard.saved_heads,
            "inspect changed {id}"
        );
        Some(out)
    }

    /// The document `id`, if it exists.
    pub fn get(&self, id: &str) -> Option<Arc<Mutex<DurableDoc>>> {
        self.inner.docs.lock().get(id).cloned()
    }

    /// Creates document `id`, filled by `fill` (which may commit as often as it likes), and
    /// writes it durably before returning. Nothing is created if `fill` fails.
    pub fn create<T, E>(
        &self,
        id: &str,
        fill: impl FnOnce(&mut AutoCommit) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        self.create_with(id, true, fill)
    }

    /// [`Self::create`]; without `announce`, the change hook is not told (replication does not
    /// push the new document) until [`Self::announce`].
    pub fn create_with<T, E>(
        &self,
        id: &str,
        announce: bool,
        fill: impl FnOnce(&mut AutoCommit) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        check_id(id)?;
        if self.inner.docs.lock().contains_key(id) {
            return Err(StoreError::Exists(id.to_owned()).into());
        }
        let mut doc = AutoCommit::new().with_actor(self.inner.actor.clone());
        let out = fill(&mut doc)?;
        doc.commit();
        let durable = self.first_snapshot(id, doc)?;
        let mut docs = self.inner.docs.lock();
        if docs.contains_key(id) {
            return Err(StoreError::Exists(id.to_owned()).into());
        }
        docs.insert(id.to_owned(), Arc::new(Mutex::new(durable)));
        drop(docs);
        if announce {
            self.changed(id);
        }
        Ok(out)
    }

    /// Tells the change hook of document `id` (one created unannounced).
    pub fn announce(&self, id: &str) {
        self.changed(id);
    }

    /// Changes document `id` with `edit` and makes the change durable before returning. If
    /// `edit` fails, its uncommitted operations are rolled back and nothing is written.
    pub fn change<T, E>(
        &self,
        id: &str,
        edit: impl FnOnce(&mut AutoCommit) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let handle = self
            .get(id)
            .ok_or_else(|| StoreError::Missing(id.to_owned()))?;
        let mut guard = handle.lock();
        let out = match edit(&mut guard.doc) {
            Ok(out) => out,
            Err(e) => {
                guard.doc.rollback();
                return Err(e);
            }
        };
        guard
            .doc
            .commit_with(CommitOptions::default().with_time(edgerate_model::time::now()));
        self.persist(&mut guard)?;
        drop(guard);
        self.changed(id);
        Ok(out)
    }

    /// Appends whatever `doc` holds beyond its last durable state to its log and fsyncs it. If
    /// that fails, the log is cut back to its last good frame and the document in memory goes
    /// back to its last durable state: nothing of the refused change remains.
    ///
    /// A document's first content (a shard arriving whole from a peer), and changes that would
    /// make the log due for compaction on their own, are written as a new snapshot instead: the
    /// compaction they would cause later, reloading and saving the whole document again, never
    /// competes with the edits that follow.
    pub fn persist(&self, doc: &mut DurableDoc) -> Result<(), StoreError> {
        let heads = doc.doc.get_heads();
        if heads == doc.saved_heads {
            return Ok(());
        }
        let written = if doc.saved_heads.is_empty() {
            self.rewrite(doc)
        } else {
            let bytes = doc.doc.save_after(&doc.saved_heads);
            if bytes.len() as u64 >= doc.log_limit() {
                drop(bytes);
                self.rewrite(doc)
            } else {
                self.append(doc, &bytes)
            }
        };
        match written {
            Ok(()) => {
                doc.saved_heads = heads;
                self.inner
                    .disk_full
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let e = StoreError::from(e);
                if e.is_disk_full() {
                    self.inner
                        .disk_full
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                tracing::warn!(doc = %doc.id, error = %e, "a write failed; undone");
                self.undo(doc)?;
                Err(e)
            }
        }
    }

    /// Writes one frame of `bytes` at the end of the log and fsyncs it.
    fn append(&self, doc: &mut DurableDoc, bytes: &[u8]) -> io::Result<()> {
        if doc.log.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path(&self.inner.dir, &doc.id))?;
            doc.log = Some(file);
        }
        let log = doc.log.as_mut().expect("opened above");
        if doc.log_dirty {
            log.set_len(doc.log_bytes)?;
            log.sync_all()?;
            doc.log_dirty = false;
        }
        let len =
            u32::try_from(bytes.len()).map_err(|_| io::Error::other("change larger than 4 GiB"))?;
        let mut frame = Vec::with_capacity(FRAME_HEADER + bytes.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        frame.extend_from_slice(bytes);
        doc.log_dirty = true;
        log.write_all(&frame)?;
        log.sync_data()?;
        doc.log_dirty = false;
        doc.log_bytes += frame.len() as u64;
        doc.log_frames += 1;
        Ok(())
    }

    /// Writes the whole document as its snapshot, then empties the log, whose frames the
    /// snapshot holds. Until the snapshot's rename the old snapshot and log stand; once it is
    /// renamed the document's state is the one on disk, even if making the rename durable then
    /// fails (the write is reported failed, but nothing in memory is undone that the disk
    /// holds). A log that cannot be emptied is cut before the next append; until then it only
    /// repeats changes Automerge applies idempotently.
    fn rewrite(&self, doc: &mut DurableDoc) -> io::Result<()> {
        let dir = &self.inner.dir;
        let bytes = doc.doc.save();
        put_snapshot(dir, &doc.id, &bytes)?;
        doc.saved_heads = doc.doc.get_heads();
        doc.snapshot_bytes = bytes.len() as u64;
        doc.rewrites += 1;
        sync_dir(dir)?;
        let log = match doc.log.take() {
            Some(log) => Ok(log),
            None => OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path(dir, &doc.id)),
        };
        doc.log_dirty = match log {
            Ok(log) => {
                let emptied = log.set_len(0).and_then(|()| log.sync_all()).is_ok();
                doc.log = Some(log);
                !emptied
            }
            Err(_) => true,
        };
        doc.log_bytes = 0;
        doc.log_frames = 0;
        Ok(())
    }

    /// After a failed append: the log cut back to its good frames (or marked to be cut before
    /// the next append), the document back at its last durable heads.
    fn undo(&self, doc: &mut DurableDoc) -> Result<(), StoreError> {
        if let Some(log) = &doc.log {
            if log
                .set_len(doc.log_bytes)
                .and_then(|()| log.sync_all())
                .is_ok()
            {
                doc.log_dirty = false;
            }
        }
        let durable = match doc.doc.fork_at(&doc.saved_heads) {
            Ok(durable) => durable.with_actor(self.inner.actor.clone()),
            // What is on disk is the durable state by definition.
            Err(_) => load(&self.inner.dir, &doc.id, &self.inner.actor)?.doc,
        };
        doc.doc = durable;
        Ok(())
    }

    /// Removes document `id` and its files.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.inner.removed.lock().insert(id.to_owned());
        let removed = self.inner.docs.lock().remove(id);
        if let Some(handle) = removed {
            let guard = handle.lock();
            remove_if_exists(&snapshot_path(&self.inner.dir, &guard.id))?;
            remove_if_exists(&log_path(&self.inner.dir, &guard.id))?;
            sync_dir(&self.inner.dir)?;
        }
        Ok(())
    }

    /// Compacts every document whose log has outgrown its snapshot, in bytes or in frames.
    /// Meant for a background task. Edits go on meanwhile: see [`Self::compact_one`].
    /// A document that cannot be compacted now is logged and left for the next pass; the
    /// others are still compacted.
    pub fn compact(&self) -> usize {
        let handles: Vec<_> = self.inner.docs.lock().values().cloned().collect();
        let mut compacted = 0;
        for handle in handles {
            let due = {
                let doc = handle.lock();
                doc.log_bytes >= doc.log_limit() || doc.log_frames >= COMPACT_MAX_FRAMES
            };
            if !due {
                continue;
            }
            match self.compact_one(&handle) {
                Ok(()) => compacted += 1,
                // Removed while being compacted.
                Err(StoreError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "compaction failed; will retry"),
            }
        }
        compacted
    }

    /// Replaces a document's snapshot and log by one snapshot of what they hold. The snapshot is
    /// made from the files as they were when it started (the snapshot and the log's whole
    /// frames), not from the document in memory, so the document is locked only at the end,
    /// while the frames appended meanwhile are copied into the new log: an edit never waits for
    /// a large document to be saved. A crash between the two renames leaves the new snapshot
    /// beside the old log, whose changes Automerge applies idempotently.
    fn compact_one(&self, handle: &Arc<Mutex<DurableDoc>>) -> Result<(), StoreError> {
        let dir = &self.inner.dir;
        let (id, upto, frames, rewrites) = {
            let doc = handle.lock();
            (doc.id.clone(), doc.log_bytes, doc.log_frames, doc.rewrites)
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            id: id.clone(),
            reason,
        };
        let snapshot = fs::read(snapshot_path(dir, &id))?;
        let log = read_log(&log_path(dir, &id), 0, upto)?;
        let (changes, end, _) = whole_frames(&log);
        if end != log.len() {
            return Err(corrupt(format!(
                "log unreadable at byte {end} while compacting"
            )));
        }
        let mut doc = AutoCommit::load(&snapshot).map_err(|e| corrupt(format!("snapshot: {e}")))?;
        doc.load_incremental(&changes)
            .map_err(|e| corrupt(format!("log: {e}")))?;
        let bytes = doc.save();
        drop(doc);
        let snapshot_tmp = dir.join(format!("{id}.compact.tmp"));
        write_synced(&snapshot_tmp, &bytes)?;

        let mut doc = handle.lock();
        if !self.get(&id).is_some_and(|h| Arc::ptr_eq(&h, handle)) || doc.rewrites != rewrites {
            // Removed meanwhile, or written whole since (a newer snapshot, an emptied log).
            let _ = fs::remove_file(&snapshot_tmp);
            return Ok(());
        }
        let tail = read_log(&log_path(dir, &id), upto, doc.log_bytes)?;
        let log_tmp = dir.join(format!("{id}.log.tmp"));
        // The snapshot is in place (and its rename durable) before the log loses what it
        // covers; a crash in between leaves the new snapshot with the whole old log.
        let snapshot_in = write_synced(&log_tmp, &tail)
            .and_then(|()| fs::rename(&snapshot_tmp, snapshot_path(dir, &id)))
            .and_then(|()| sync_dir(dir));
        if let Err(e) = snapshot_in {
            let _ = fs::remove_file(&snapshot_tmp);
            let _ = fs::remove_file(&log_tmp);
            return Err(e.into());
        }
        doc.snapshot_bytes = bytes.len() as u64;
        if let Err(e) = fs::rename(&log_tmp, log_path(dir, &id)) {
            let _ = fs::remove_file(&log_tmp);
            return Err(e.into());
        }
        // From here the old log is gone: appends go to the new one whatever happens next.
        doc.log = None;
        doc.log_bytes = tail.len() as u64;
        doc.log_dirty = false;
        doc.log_frames = doc.log_frames.saturating_sub(frames);
        sync_dir(dir)?;
        Ok(())
    }
}

/// Bytes `from..to` of the log at `path` (none if it does not exist yet).
fn read_log(path: &Path, from: u64, to: u64) -> io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && from == to => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    file.take(to - from).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != to - from {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "document log shorter than its frames",
        ));
    }
    Ok(bytes)
}

/// The changes of the whole frames at the start of `log`, concatenated; where they end; and
/// how many there are.
fn whole_frames(log: &[u8]) -> (Vec<u8>, usize, u64) {
    let mut offset = 0usize;
    let mut frames = 0u64;
    let mut changes = Vec::new();
    while let Some(frame) = next_frame(&log[offset..]) {
        changes.extend_from_slice(frame);
        offset += FRAME_HEADER + frame.len();
        frames += 1;
    }
    (changes, offset, frames)
}

/// Whether `id` can name a document: 1-128 of `a-z`, `0-9`, `-`, `_`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn check_id(id: &str) -> Result<(), StoreError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::BadId(id.to_owned()))
    }
}

fn snapshot_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.snap"))
}

fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.log"))
}

fn log_id(path: &Path) -> Option<String> {
    if path.extension()? != "log" {
        return None;
    }
    let id = path.file_stem()?.to_str()?.to_owned();
    check_id(&id).ok().map(|()| id)
}

/// Moves the file at `path` into `quarantine`, logged and counted.
fn move_to_quarantine(
    path: &Path,
    quarantine: &Path,
    why: &str,
    moved: &mut Vec<(String, String)>,
) -> io::Result<()> {
    fs::create_dir_all(quarantine)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut target = quarantine.join(path.file_name().unwrap_or_default());
    let mut n = 1;
    while target.exists() {
        target = quarantine.join(format!("{name}.{n}"));
        n += 1;
    }
    fs::rename(path, &target)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    tracing::error!(file = %name, reason = why, to = %target.display(), "moved an unreadable file to quarantine");
    metrics::counter!(QUARANTINED).increment(1);
    moved.push((name, why.to_owned()));
    Ok(())
}

/// Files moved to quarantine.
pub const QUARANTINED: &str = "edgerate_store_quarantined_files_total";

fn snapshot_id(path: &Path) -> Option<String> {
    if path.extension()? != "snap" {
        return None;
    }
    let id = path.file_stem()?.to_str()?.to_owned();
    check_id(&id).ok().map(|()| id)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Writes `bytes` as the snapshot of `id`: temp file, fsync, rename, fsync the directory.
fn write_snapshot(dir: &Path, id: &str, bytes: &[u8]) -> io::Result<()> {
    put_snapshot(dir, id, bytes)?;
    sync_dir(dir)
}

/// Puts `bytes` in place as document `id`'s snapshot (written and fsynced aside, then renamed
/// over the old one); the rename is durable once the directory is synced.
fn put_snapshot(dir: &Path, id: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{id}.snap.tmp"));
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, snapshot_path(dir, id)).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Writes `bytes` to a new file at `path` and fsyncs it; on failure nothing is left there.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let written = File::create(path).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn load(dir: &Path, id: &str, actor: &automerge::ActorId) -> Result<DurableDoc, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id.to_owned(),
        reason,
    };
    let snapshot = fs::read(snapshot_path(dir, id))?;
    let mut doc = AutoCommit::load(&snapshot)
        .map_err(|e| corrupt(format!("snapshot: {e}")))?
        .with_actor(actor.clone());
    let path = log_path(dir, id);
    let mut log_bytes = 0u64;
    let mut log = Vec::new();
    match File::open(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut log)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    // Every whole frame's changes are applied in one batch: one by one, each is a separate
    // merge into the document, and a few hundred small frames over a large document cost
    // seconds where one batch costs milliseconds.
    let (changes, offset, frames) = whole_frames(&log);
    if !changes.is_empty() {
        doc.load_incremental(&changes)
            .map_err(|e| corrupt(format!("log of {frames} frames: {e}")))?;
    }
    if offset < log.len() && !is_torn_tail(&log[offset..]) {
        return Err(corrupt(format!(
            "log corrupt at byte {offset} of {} with more after it",
            log.len()
        )));
    }
    if offset < log.len() {
        tracing::warn!(
            doc = id,
            kept = offset,
            dropped = log.len() - offset,
            "cutting torn tail of document log"
        );
        let f = OpenOptions::new().write(true).open(&path)?;
        f.set_len(offset as u64)?;
        f.sync_all()?;
    }
    log_bytes += offset as u64;
    let saved_heads = doc.get_heads();
    Ok(DurableDoc {
        id: id.to_owned(),
        doc,
        saved_heads,
        log: None,
        log_bytes,
        log_dirty: false,
        log_frames: frames,
        snapshot_bytes: snapshot.len() as u64,
        rewrites: 0,
    })
}

/// Whether the bytes after the last good frame are a torn last write (a header cut short, or a
/// frame whose declared length runs to or past the end) rather than a bad frame with more
/// log after it.
fn is_torn_tail(rest: &[u8]) -> bool {
    let Some(header) = rest.get(..FRAME_HEADER) else {
        return true;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if FRAME_HEADER.saturating_add(len) < rest.len() {
        return false;
    }
    // A length field damaged in the middle of the log can also run past the end: it is a
    // torn tail only if no whole frame starts anywhere after it (logs are compacted long
    // before this scan could cost much).
    !(1..rest.len().saturating_sub(FRAME_HEADER))
        .any(|at| next_frame(&rest[at..]).is_some_and(|f| !f.is_empty()))
}

/// The next whole, checksummed frame at the start of `bytes`.
fn next_frame(bytes: &[u8]) -> Option<&[u8]> {
    let header = bytes.get(..FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let body = bytes.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?;
    (crc32fast::hash(body) == crc).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{transaction::Transactable, ReadDoc, ROOT};

    fn actor() -> automerge::ActorId {
        automerge::ActorId::from(&[7u8; 16][..])
    }

    fn read(store: &DocStore, id: &str, key: &str) -> Option<String> {
        let handle = store.get(id)?;
        let guard = handle.lock();
        let (value, _) = guard.doc().get(ROOT, key).ok()??;
        value.as_str().map(str::to_owned)
    }

    /// A store in `dir` holding document `a` whose `k` was `v0`, then `v1`.
    fn two_versions(dir: &Path) -> DocStore {
        let store = DocStore::open(dir, &dir.join("quarantine"), actor()).unwrap();
        store
            .create::<_, StoreError>("a", |d| Ok(d.put(ROOT, "k", "v0")?))
            .unwrap();
        store
            .change::<_, StoreError>("a", |d| Ok(d.put(ROOT, "k", "v1")?))
            .unwrap();
        store
    }

    #[test]
    fn changes_survive_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocStore::open(dir.path(), &dir.path().join("quarantine"), actor()).unwrap();
        store
            .create::<_, StoreError>("a", |d| Ok(d.put(ROOT, "k", "v0")?))
            .unwrap();
        for i in 1..=5 {
            store
                .change::<_, StoreError>("a", |d| Ok(d.put(ROOT, "k", format!("v{i}"))?))
                .unwrap();
        }
        drop(store);
        let store = DocStore::open(dir.path(), &dir.path().join("quarantine"), actor()).unwrap();
        assert_eq!(read(&store, "a", "k").as_deref(), Some("v5"));
        let handle = store.get("a").unwrap();
        store.compact_one(&handle).unwrap();
        store
            .change::<_, StoreError>("a", |d| Ok(d.put(ROOT, "k", "v6")?))
            .unwrap();
        drop(store);
        let store = DocStore::open(dir.path(), &dir.path().join("quarantine"), actor()).unwrap();
        assert_eq!(read(&store, "a", "k").as_deref(), Some("v6"));
    }

    #[test]
    fn edits_made_while_compacting_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocStore::open(dir.path(), &dir.path().join("quarantine"), actor()).unwrap();
        store.create::<_, StoreError>("a", |_| Ok(())).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..300 {
                    store
                        .change::<_, StoreError>("a", |d| Ok(d.put(ROOT, format!("k{i}"), i)?))
                        .unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let handle = store.get("a").unwrap();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                store.compact_one(&handle).unwrap();
            }
        });
        drop(store);
        let store = DocStore::open(dir.path(), &dir.path().join("quarantine"), actor()).unwrap();
        let handle = store.get("a").unwrap();
        let doc = handle.lock();
        assert_eq!(doc.doc().length(ROOT), 300);
        assert!(doc.log_frames < 300, "compaction never took effect");
    }

    #[test]
    fn changes_larger_than_the_snapshot_are_written_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = two_versions(dir.path());
        let log = || fs::metadata(dir.path().join("a.log")).map_or(0, |m| m.len());
        assert!(log() > 0, "a small change goes to the log");
        // 300 KiB of new values: more than the log may hold before compaction.
        store
            .change::<_, StoreError>("a", |d| {
                for i in 0..3000 {
                    d.put(ROOT, format!("big{i}"), "x".repeat(100))?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(log(), 0, "the log's frames are in the new snapshot");
        {
            let handle = store.get("a").unwrap();
            let doc = handle.lock();
            assert_eq!((doc.log_bytes, doc.log_frames), (0, 0));
        }
        store
            .change::<_, StoreError>("a", |d| Ok(d.put(ROOT, "k", "v2")?))
            .unwrap();
        drop(store);
        let store = DocStore::open(dir.path(), &dir.path().join("quarantine"), actor()).unwrap();
        assert_eq!(read(&store, "a", "k").as_deref(), Some("v2"));
        assert_eq!(store.get("a").unwrap().lock().doc().length(ROOT), 3001);
    }

    #[test]
    fn a_torn_log_tail_is_cut_and_earlier_changes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = two_versions(dir.path());
        drop(store);
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.path().join("a.log"))
            .unwrap();
        log.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
        let store = DocStore::open(dir.path(), &dir.path().join("quarantine"), actor()).unwrap();
        assert_eq!(read(&store, "a", "k").as_deref(), Some("v1"));
        store
            .change::<_, StoreError>("a", |d| Ok(d.put(ROOT, "k", "v2")?))
            .unwrap();
        drop(store);
        let store = DocStore::open(dir.path(), &dir.path().join("quarantine"), actor()).unwrap();
        assert_eq!(read(&store, "a", "k").as_deref(), Some("v2"));
    }

    #[test]
    fn a_failed_edit_applies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocStore::open(dir.path(), &dir.path().join("quarantine"), actor()).unwrap();
        store
            .create::<_, StoreError>("a", |d| Ok(d.put(ROOT, "k", "v0")?))
            .unwrap();
        let result = store.change::<(), StoreError>("a", |d| {
            d.put(ROOT, "k", "half")?;
            Err(StoreError::Missing("x".into()))
        });
        assert!(result.is_err());
        assert_eq!(read(&store, "a", "k").as_deref(), Some("v0"));
        assert!(store.create::<_, StoreError>("a", |_| Ok(())).is_err());
        assert!(matches!(
            store.create::<_, StoreError>("A/..", |_| Ok(())),
            Err(StoreError::BadId(_))
        ));
    }
}
