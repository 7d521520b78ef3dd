//! The data dir: what each file is, and the version of the whole layout.
//!
//! `format` holds the layout's version ([`FORMAT`]); a data dir without it was written before
//! versions were kept and is format 1. Format 2 adds rebased shard documents (generations,
//! which an older node would not find); a format 1 data dir is read as it is. A node refuses a data dir of a newer format (it would
//! misread it) and says so; an older one is upgraded in place when it starts. The documents'
//! files are Automerge's own format and the event log carries its schema version inside.

use std::fs;
use std::io;
use std::path::Path;
use thiserror::Error;

/// The data dir layout this build writes and the newest it reads.
pub const FORMAT: u32 = 2;
/// The layout's version.
pub const FORMAT_FILE: &str = "format";
/// The documents (snapshot and log files).
pub const DOCS_DIR: &str = "docs";
/// Files that are not readable documents, moved aside at start.
pub const QUARANTINE_DIR: &str = "quarantine";
/// The event log (SQLite).
pub const LOG_FILE: &str = "events.sqlite";
/// The event-log origin of a restored node (absent: the node's id).
pub const ORIGIN_FILE: &str = "origin";
/// A restore in progress (or interrupted): the node refuses to start while it is there.
pub const RESTORE_STAGING: &str = ".restore-partial";
/// The event log copies backups take, removed when sent (and at start, after a crash).
pub const BACKUP_SCRATCH_PREFIX: &str = "backup-";
/// This node's Automerge actor id.
pub const ACTOR_FILE: &str = "actor";

#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(
        "{path} says data dir format {found:?}; this edgerate reads format {FORMAT} and older"
    )]
    Unreadable { path: String, found: String },
    #[error("{0} is there: a restore into this data dir did not finish; empty the data dir and restore again")]
    Restoring(String),
    #[error("the data dir is format {0}, newer than this edgerate reads ({FORMAT}): run the newer edgerate, or restore a backup taken with this one (docs/operations.md, Upgrade)")]
    Newer(u32),
}

/// Before a node starts on `data_dir`: refuses an interrupted restore, removes the log copies
/// of backups a crash left, and checks the format.
pub fn prepare(data_dir: &Path) -> Result<(), LayoutError> {
    let staging = data_dir.join(RESTORE_STAGING);
    if staging.exists() {
        return Err(LayoutError::Restoring(staging.display().to_string()));
    }
    if let Ok(entries) = fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(BACKUP_SCRATCH_PREFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    check_format(data_dir)
}

/// Checks the data dir's format and writes this build's into a new (or unversioned) one.
pub fn check_format(data_dir: &Path) -> Result<(), LayoutError> {
    let path = data_dir.join(FORMAT_FILE);
    let shown = path.display().to_string();
    let io = |source| LayoutError::Io {
        path: shown.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(found) if found > FORMAT => Err(LayoutError::Newer(found)),
            Ok(found) if found == FORMAT => Ok(()),
            Ok(_) => write_format(data_dir).map_err(io),
            Err(_) => Err(LayoutError::Unreadable {
                path: shown.clone(),
                found: text,
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_format(data_dir).map_err(io),
        Err(e) => Err(io(e)),
    }
}

fn write_format(data_dir: &Path) -> io::Result<()> {
    let tmp = data_dir.join(format!("{FORMAT_FILE}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    io::Write::write_all(&mut file, format!("{FORMAT}\n").as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, data_dir.join(FORMAT_FILE))?;
    fs::File::open(data_dir)?.sync_all()
}

/// The event-log origin of the node whose data dir this is: the `origin` file a restore wrote,
/// else the node's id.
pub fn origin(data_dir: &Path, node: &str) -> io::Result<String> {
    match fs::read_to_string(data_dir.join(ORIGIN_FILE)) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(node.to_owned()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_or_unversioned_dir_gets_this_format_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_format(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(FORMAT_FILE)).unwrap(),
            format!("{FORMAT}\n")
        );
        check_format(dir.path()).unwrap();
        fs::write(dir.path().join(FORMAT_FILE), "1\n").unwrap();
        check_format(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(FORMAT_FILE)).unwrap(),
            format!("{FORMAT}\n"),
            "an older format is upgraded in place"
        );
        fs::write(dir.path().join(FORMAT_FILE), "99\n").unwrap();
        let e = check_format(dir.path()).unwrap_err();
        assert!(matches!(e, LayoutError::Newer(99)), "{e}");
        assert!(e.to_string().contains("newer than this edgerate reads"));
        fs::write(dir.path().join(FORMAT_FILE), "two").unwrap();
        assert!(matches!(
            check_format(dir.path()),
            Err(LayoutError::Unreadable { .. })
        ));
    }

    #[test]
    fn the_origin_is_the_node_id_unless_a_restore_set_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(origin(dir.path(), "lon-1").unwrap(), "lon-1");
        fs::write(dir.path().join(ORIGIN_FILE), "lon-1-r0000abcd\n").unwrap();
        assert_eq!(origin(dir.path(), "lon-1").unwrap(), "lon-1-r0000abcd");
    }
}
