//! Backup and restore with the real binary: `edgerate backup` of a node under write load,
//! `edgerate restore` into an empty data dir, the restored node started on it.

use edgerate_tests::{create_account, edgerate_cli, path_str, Api, NodeProcess};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const OPERATOR: &str = "backup-test-operator-key";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edgerate"))
}

/// Runs `edgerate backup` against `url`; whether it succeeded and what it said.
fn backup(url: &str, out: &Path) -> (bool, String) {
    edgerate_cli(
        bin(),
        &["backup", "--node", url, "--json", "--out", path_str(out)],
        OPERATOR,
    )
}

/// Runs `edgerate restore`.
fn restore(file: &Path, data: &Path) -> (bool, String) {
    edgerate_cli(
        bin(),
        &[
            "restore",
            "--json",
            "--data",
            path_str(data),
            path_str(file),
        ],
        OPERATOR,
    )
}

/// One acknowledged write: a rule set, or a CDR added.
#[derive(Debug, Clone)]
enum Write {
    Rule(String),
    Cdr(String),
}

fn present(api: &Api, write: &Write) -> bool {
    match write {
        Write::Rule(prefix) => {
            api.call("ratecard/query", &[("card", "load"), ("number", prefix)])
                .json()["prefix"]
                == Value::String(prefix.clone())
        }
        Write::Cdr(callid) => {
            let now = edgerate_model::time::now();
            let list = api.ok(
                "cdr/list",
                &[
                    ("from", &(now - 3600).to_string()),
                    ("to", &(now + 60).to_string()),
                    ("limit", "10000"),
                ],
            );
            list["cdrs"]
                .as_array()
                .is_some_and(|cdrs| cdrs.iter().any(|c| c["callid"] == callid.as_str()))
        }
    }
}

#[test]
fn a_backup_taken_under_write_load_restores_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(bin(), &dir.path().join("a"), OPERATOR);
    let operator = Api::operator(&node.url, OPERATOR);
    let (id, key) = create_account(&operator, 10_000_000);
    let api = Api::account(&node.url, &id, &key);
    api.ok("ratecard/create", &[("name", "load")]);

    // One writer sets rules and logs CDRs as fast as the node takes them; each write it is
    // answered 200 for goes in the ledger.
    let ledger: Arc<Mutex<Vec<Write>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ledger, stop, api) = (ledger.clone(), stop.clone(), api.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let prefix = format!("4420{i:06}");
                let set = api.call(
                    "ratecard/rule/set",
                    &[("card", "load"), ("prefix", &prefix), ("rate", "0.01")],
                );
                if set.status == 200 {
                    ledger.lock().unwrap().push(Write::Rule(prefix.clone()));
                }
                let callid = format!("call-{i}");
                let cdr = api.call(
                    "cdr/add",
                    &[
                        ("callid", &callid),
                        ("dest_number", &prefix),
                        ("sip_code", "200"),
                        ("duration", "30"),
                        ("card", "load"),
                    ],
                );
                if cdr.status == 200 {
                    ledger.lock().unwrap().push(Write::Cdr(callid));
                }
            }
        })
    };
    edgerate_tests::wait_for(
        "writes under way",
        std::time::Duration::from_secs(30),
        || (ledger.lock().unwrap().len() >= 100).then_some(()),
    );
    let before: Vec<Write> = ledger.lock().unwrap().clone();
    let archive = dir.path().join("under-load.tar");
    let (ok, out) = backup(&node.url, &archive);
    assert!(ok, "backup failed: {out}");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        ledger.lock().unwrap().len() > before.len(),
        "writes went on during the backup"
    );

    let (ok, out) = restore(&archive, &dir.path().join("b"));
    assert!(ok, "restore failed: {out}");
    let restored = NodeProcess::start(bin(), &dir.path().join("b"), OPERATOR);
    let restored_api = Api::account(&restored.url, &id, &key);
    let missing: Vec<&Write> = before
        .iter()
        .filter(|w| !present(&restored_api, w))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} writes acknowledged before the backup are not in it: {:?}",
        missing.len(),
        before.len(),
        &missing[..missing.len().min(5)]
    );

    // With the writes stopped, a backup restores to exactly the node's state.
    let quiet = dir.path().join("quiet.tar");
    assert!(backup(&node.url, &quiet).0);
    assert!(restore(&quiet, &dir.path().join("c")).0);
    let copy = NodeProcess::start(bin(), &dir.path().join("c"), OPERATOR);
    assert_eq!(
        Api::account(&copy.url, &id, &key).account_state(),
        api.account_state(),
        "a restored node answers as the node backed up"
    );
    // The restored node writes CDRs under an origin of its own.
    let origin = std::fs::read_to_string(dir.path().join("c/origin")).unwrap();
    assert!(origin.starts_with("local-r"), "{origin}");
}

#[test]
fn a_damaged_or_cut_backup_is_refused_and_restores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(bin(), &dir.path().join("a"), OPERATOR);
    let archive = dir.path().join("b.tar");
    assert!(backup(&node.url, &archive).0);
    let bytes = std::fs::read(&archive).unwrap();

    // A byte changed inside the first document.
    let mut flipped = bytes.clone();
    flipped[600] ^= 0x55;
    let damaged = dir.path().join("damaged.tar");
    std::fs::write(&damaged, &flipped).unwrap();
    let target = dir.path().join("x");
    let (ok, out) = restore(&damaged, &target);
    assert!(!ok && out.contains("not a valid backup"), "{out}");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing restored"
    );

    // The archive cut short, before its manifest.
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, out) = restore(&cut, &target);
    assert!(!ok, "{out}");
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "nothing restored"
    );

    // Never over a data dir in use.
    let (ok, out) = restore(&archive, &dir.path().join("a"));
    assert!(!ok && out.contains("not empty"), "{out}");

    // An archive of a newer format is refused by name.
    let mut newer = tar::Builder::new(Vec::new());
    let manifest = br#"{"format":99,"node":"n","origin":"n","created":0,"version":"9","documents":0,"files":[]}"#;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_cksum();
    newer
        .append_data(&mut header, "manifest.json", &manifest[..])
        .unwrap();
    let newer_file = dir.path().join("newer.tar");
    std::fs::write(&newer_file, newer.into_inner().unwrap()).unwrap();
    let (ok, out) = restore(&newer_file, &target);
    assert!(!ok && out.contains("format 99"), "{out}");
}
