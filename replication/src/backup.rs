//! Backups of a node: every document as Automerge's saved bytes and the event log as SQLite's
//! online backup, in one tar archive whose last entry is a manifest (format, node, sizes and
//! SHA-256 checksums); and the restore of one into an empty data dir.
//!
//! A restored node writes CDRs under a new event-log origin (`<node>-r<hex>`, in the data dir's
//! `origin` file) and, having no `actor` file, makes its document changes as a new Automerge
//! actor: records and changes the backed-up node made after the backup, which its peers may
//! hold, can then never collide with the restored node's own.

use crate::catalog::Catalog;
use crate::docstore::{self, DocStore, StoreError};
use crate::eventlog::{EventLog, LogError};
use crate::layout::{self, DOCS_DIR, LOG_FILE, ORIGIN_FILE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The archive format this build writes and the newest it reads.
pub const FORMAT: u32 = 2;
const MANIFEST: &str = "manifest.json";
const DOC_SUFFIX: &str = ".automerge";
/// The largest manifest read (a million documents' entries fit well inside).
const MAX_MANIFEST: u64 = 256 * 1024 * 1024;
/// The largest document read into memory (a rule shard holds at most a few MiB).
const MAX_DOCUMENT: u64 = 256 * 1024 * 1024;

/// What a backup holds, its last entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    /// The node backed up, and the origin of the CDRs it wrote.
    pub node: String,
    pub origin: String,
    /// Unix seconds when it was taken.
    pub created: i64,
    /// The edgerate version that wrote it.
    pub version: String,
    pub documents: usize,
    pub files: Vec<FileEntry>,
}

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Why a backup or a restore failed.
#[derive(Debug, Error)]
pub enum BackupError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("document: {0}")]
    Store(#[from] StoreError),
    #[error("data dir: {0}")]
    Layout(#[from] layout::LayoutError),
    #[error("not a valid backup: {0}")]
    Invalid(String),
    #[error("the backup is format {0}; this edgerate reads format {FORMAT} and older: restore it with a newer edgerate")]
    Newer(u32),
    #[error("{0} is not empty: a backup is restored into an empty data dir only")]
    NotEmpty(PathBuf),
}

/// A backup taken from a running node, ready to be written out: the documents in memory, the
/// log copied to a scratch file (removed when this is dropped).
pub struct Snapshot {
    docs: Vec<(String, Vec<u8>)>,
    log_copy: PathBuf,
    node: String,
    origin: String,
    created: i64,
}

impl Snapshot {
    /// Takes a backup: the documents as they are between local writes, then the event log at
    /// one instant, copied into `scratch` (a folder on the node's disk).
    pub fn take(
        catalog: &Catalog,
        log: &EventLog,
        scratch: &Path,
        node: &str,
        now: i64,
    ) -> Result<Self, BackupError> {
        let docs = catalog.save_all();
        fs::create_dir_all(scratch)?;
        let log_copy = scratch.join(format!(
            "{}{}.sqlite",
            layout::BACKUP_SCRATCH_PREFIX,
            rand::random::<u64>()
        ));
        let snapshot = Self {
            docs,
            log_copy,
            node: node.to_owned(),
            origin: log.origin().to_owned(),
            created: now,
        };
        log.backup_to(&snapshot.log_copy)?;
        Ok(snapshot)
    }

    /// Writes the archive to `out`; the manifest is its last entry.
    pub fn write_to(self, out: impl Write) -> Result<Manifest, BackupError> {
        let mut tar = tar::Builder::new(out);
        let mut files = Vec::with_capacity(self.docs.len() + 1);
        for (id, bytes) in &self.docs {
            let path = format!("{DOCS_DIR}/{id}{DOC_SUFFIX}");
            append(&mut tar, &path, bytes.len() as u64, &bytes[..])?;
            files.push(FileEntry {
                path,
                bytes: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(bytes)),
            });
        }
        let bytes = fs::metadata(&self.log_copy)?.len();
        let mut hashing = Hashing::new(File::open(&self.log_copy)?);
        append(&mut tar, LOG_FILE, bytes, &mut hashing)?;
        files.push(FileEntry {
            path: LOG_FILE.to_owned(),
            bytes,
            sha256: hashing.hex(),
        });
        let manifest = Manifest {
            format: FORMAT,
            node: self.node.clone(),
            origin: self.origin.clone(),
            created: self.created,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            documents: self.docs.len(),
            files,
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
        append(&mut tar, MANIFEST, text.len() as u64, &text[..])?;
        tar.into_inner()?.flush()?;
        Ok(manifest)
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.log_copy);
    }
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o640);
    header.set_cksum();
    tar.append_data(&mut header, path, data)
}

/// A reader that hashes what it reads.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
        }
    }

    fn hex(self) -> String {
        hex::encode(self.hash.finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a whole archive, each file handed to `keep` as it is read (`None` for the manifest);
/// checks every file against the manifest at the end: a file missing, extra, of another size or
/// checksum, or a manifest of a newer format, is an error.
fn read(
    archive: impl Read,
    mut keep: impl FnMut(&str, &mut dyn Read) -> Result<(), BackupError>,
) -> Result<Manifest, BackupError> {
    let mut tar = tar::Archive::new(archive);
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_str()
            .ok_or_else(|| BackupError::Invalid("a file name is not UTF-8".into()))?
            .to_owned();
        if manifest.is_some() {
            return Err(BackupError::Invalid(format!("{path} after the manifest")));
        }
        if path == MANIFEST {
            if entry.size() > MAX_MANIFEST {
                return Err(BackupError::Invalid("the manifest is too large".into()));
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text)?;
            let m: Manifest = serde_json::from_slice(&text)
                .map_err(|e| BackupError::Invalid(format!("manifest: {e}")))?;
            if m.format > FORMAT {
                return Err(BackupError::Newer(m.format));
            }
            manifest = Some(m);
            continue;
        }
        if path != LOG_FILE && doc_id(&path).is_none() {
            return Err(BackupError::Invalid(format!("unexpected file {path:?}")));
        }
        if path != LOG_FILE && entry.size() > MAX_DOCUMENT {
            return Err(BackupError::Invalid(format!(
                "{path} is over {MAX_DOCUMENT} bytes"
            )));
        }
        if seen.contains_key(&path) {
            return Err(BackupError::Invalid(format!("{path} twice")));
        }
        let mut hashing = Hashing::new(&mut entry);
        keep(&path, &mut hashing)?;
        io::copy(&mut hashing, &mut io::sink())?;
        let size = hashing.inner.size();
        seen.insert(path, (size, hashing.hex()));
    }
    let manifest = manifest.ok_or_else(|| {
        BackupError::Invalid("no manifest: the archive is cut short or not a backup".into())
    })?;
    let listed: BTreeMap<String, (u64, String)> = manifest
        .files
        .iter()
        .map(|f| (f.path.clone(), (f.bytes, f.sha256.clone())))
        .collect();
    if listed != seen {
        let wrong = listed
            .iter()
            .find(|(p, v)| seen.get(*p) != Some(v))
            .map(|(p, _)| p.clone())
            .or_else(|| seen.keys().find(|p| !listed.contains_key(*p)).cloned())
            .unwrap_or_default();
        return Err(BackupError::Invalid(format!(
            "{wrong} does not match the manifest (missing, extra, or another size or checksum)"
        )));
    }
    if !seen.contains_key(LOG_FILE) {
        return Err(BackupError::Invalid("no event log".into()));
    }
    Ok(manifest)
}

/// The document id of an archive path `docs/<id>.automerge`.
fn doc_id(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix(DOCS_DIR)?
        .strip_prefix('/')?
        .strip_suffix(DOC_SUFFIX)?;
    docstore::valid_id(id).then_some(id)
}

/// Checks a whole archive against its manifest, writing nothing.
pub fn verify(archive: impl Read) -> Result<Manifest, BackupError> {
    read(archive, |_, _| Ok(()))
}

/// Restores an archive into `data_dir`, which must be empty or absent. Nothing is left there
/// unless the whole archive checks out; the restored node gets a new event-log origin.
pub fn restore(archive: impl Read, data_dir: &Path) -> Result<Manifest, BackupError> {
    if data_dir.exists() && fs::read_dir(data_dir)?.next().is_some() {
        return Err(BackupError::NotEmpty(data_dir.to_owned()));
    }
    fs::create_dir_all(data_dir)?;
    let staging = data_dir.join(layout::RESTORE_STAGING);
    let done = restore_into(archive, &staging);
    let manifest = match done {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // The new origin first: a data dir with the backup's log must never write under the old
    // one. While the staging dir exists the node refuses to start (an interrupted restore).
    let origin = format!("{}-r{:08x}", manifest.node, rand::random::<u32>());
    let mut file = File::create(data_dir.join(ORIGIN_FILE))?;
    file.write_all(origin.as_bytes())?;
    file.sync_all()?;
    layout::check_format(data_dir)?;
    fs::rename(staging.join(DOCS_DIR), data_dir.join(DOCS_DIR))?;
    fs::rename(staging.join(LOG_FILE), data_dir.join(LOG_FILE))?;
    fs::remove_dir_all(&staging)?;
    File::open(data_dir)?.sync_all()?;
    Ok(manifest)
}

fn restore_into(archive: impl Read, staging: &Path) -> Result<Manifest, BackupError> {
    let docs = staging.join(DOCS_DIR);
    fs::create_dir_all(&docs)?;
    read(archive, |path, data| {
        if path == LOG_FILE {
            let mut out = File::create(staging.join(LOG_FILE))?;
            io::copy(data, &mut out)?;
            out.sync_all()?;
        } else if let Some(id) = doc_id(path) {
            let mut bytes = Vec::new();
            data.read_to_end(&mut bytes)?;
            DocStore::write_saved(&docs, id, &bytes).map_err(|e| match e {
                StoreError::Corrupt { reason, .. } => {
                    BackupError::Invalid(format!("{path}: {reason}"))
                }
                other => BackupError::Store(other),
            })?;
        }
        Ok(())
    })
}
