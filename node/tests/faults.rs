//! The real binary under faults a client or the machine brings: a full disk (a real tmpfs),
//! unreadable files in the data dir, a huge body without credentials, sockets that send half a
//! request and stop, and a trunk that never answers while another account writes.

use edgerate_tests::{free_port, free_udp_port, wait_for, Api, NodeProcess};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const OPERATOR: &str = "faults-test-operator-key";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edgerate"))
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped (CI runs as root).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full to the last byte; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let bytes = vec![0u8; chunk];
            while file.write_all(&bytes).is_ok() {}
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A demo node on `data`, with its demo key.
fn demo_node(data: &Path) -> (NodeProcess, String) {
    let mut node = NodeProcess::start(bin(), data, OPERATOR);
    let key = node.demo_key().expect("demo key on first start");
    (node, key)
}

fn set_rule(api: &Api, prefix: &str, rate: &str) -> u16 {
    api.call(
        "ratecard/rule/set",
        &[("card", "demo"), ("prefix", prefix), ("rate", rate)],
    )
    .status
}

fn rate_of(api: &Api, prefix: &str) -> Option<String> {
    let a = api.call("ratecard/query", &[("card", "demo"), ("number", prefix)]);
    (a.status == 200).then(|| a.json()["rate"].to_string())
}

#[test]
fn a_full_disk_refuses_writes_and_loses_nothing_acknowledged() {
    let disk = SmallDisk::mount("32m");
    let data = disk.path().join("data");
    let (node, key) = demo_node(&data);
    let api = Api::account(&node.url, "demo", &key);
    let filler = disk.fill();

    // Writes until the disk refuses one: every 200 is in the ledger, the refusal is a 503.
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let (prefix, rate) = (format!("9990{i}"), format!("0.{:04}", i + 1));
        match set_rule(&api, &prefix, &rate) {
            200 => acked.push((prefix, rate)),
            503 => {
                refused = Some(prefix);
                break;
            }
            other => panic!("rule/set answered {other} on a full disk"),
        }
    }
    let refused = refused.expect("a full disk refuses a write");
    // CDRs until the disk refuses one too: a CDR may still fit in the space its log's WAL
    // already holds (acknowledged, so in the ledger); the refusal is a 503 that names the disk.
    let mut cdrs_acked: Vec<String> = Vec::new();
    let mut cdr_refused = None;
    for i in 0..5000 {
        let callid = format!("full-{i}");
        let cdr = api.call(
            "cdr/add",
            &[
                ("callid", callid.as_str()),
                ("dest_number", "441234"),
                ("sip_code", "200"),
            ],
        );
        match cdr.status {
            200 => cdrs_acked.push(callid),
            503 => {
                assert!(String::from_utf8_lossy(&cdr.body).contains("disk is full"));
                cdr_refused = Some(callid);
                break;
            }
            other => panic!("cdr/add answered {other} on a full disk"),
        }
    }
    let cdr_refused = cdr_refused.expect("a full disk refuses a CDR");
    // Reads go on, and the node says it is not writable.
    assert!(rate_of(&api, "441234567890").is_some());
    let ready: serde_json::Value = reqwest::blocking::get(format!("{}/readyz", node.url))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ready["writable"], false, "{ready}");
    let metrics = reqwest::blocking::get(format!("{}/metrics", node.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("edgerate_store_disk_full 1"), "{metrics}");
    assert_eq!(
        rate_of(&api, &refused),
        None,
        "the refused write is not served"
    );

    // Space returns: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..20 {
        let (prefix, rate) = (format!("8880{i}"), format!("0.{:04}", i + 1));
        assert_eq!(set_rule(&api, &prefix, &rate), 200);
        acked.push((prefix, rate));
    }
    assert_eq!(
        api.call(
            "cdr/add",
            &[
                ("callid", "after-space"),
                ("dest_number", "441234"),
                ("sip_code", "200")
            ],
        )
        .status,
        200
    );
    cdrs_acked.push("after-space".into());
    node.kill();

    let node = NodeProcess::start(bin(), &data, OPERATOR);
    let api = Api::account(&node.url, "demo", &key);
    for (prefix, rate) in &acked {
        assert_eq!(
            rate_of(&api, prefix).as_deref(),
            Some(rate.trim_end_matches('0')),
            "acknowledged rule {prefix} survives the restart"
        );
    }
    assert_eq!(
        rate_of(&api, &refused),
        None,
        "the refused write never appears"
    );
    let now = edgerate_model::time::now();
    let cdrs = api.ok(
        "cdr/list",
        &[
            ("from", &(now - 3600).to_string()),
            ("to", &(now + 60).to_string()),
            ("limit", "10000"),
        ],
    );
    let mut stored: Vec<String> = cdrs["cdrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["callid"].as_str().unwrap().to_owned())
        .collect();
    stored.sort();
    cdrs_acked.sort();
    assert_eq!(stored, cdrs_acked, "exactly the acknowledged CDRs");
    assert!(
        !stored.contains(&cdr_refused),
        "the refused CDR never appears"
    );
}

#[test]
fn unreadable_files_are_quarantined_and_the_node_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (node, key) = demo_node(&data);
    let api = Api::account(&node.url, "demo", &key);
    assert_eq!(set_rule(&api, "4455", "0.5"), 200);
    node.kill();
    let docs = data.join("docs");
    std::fs::write(docs.join("card-cbroken.snap"), b"not automerge at all").unwrap();
    std::fs::write(docs.join("notes.txt"), b"left here by hand").unwrap();

    let node = NodeProcess::start(bin(), &data, OPERATOR);
    let api = Api::account(&node.url, "demo", &key);
    assert_eq!(
        rate_of(&api, "4455").as_deref(),
        Some("0.5"),
        "the rest is served"
    );
    let quarantine = data.join("quarantine");
    for file in ["card-cbroken.snap", "notes.txt"] {
        assert!(
            quarantine.join(file).exists(),
            "{file} moved to quarantine/"
        );
        assert!(!docs.join(file).exists());
    }
    let page = reqwest::blocking::get(format!("{}/", node.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("card-cbroken.snap"), "{page}");
    let metrics = reqwest::blocking::get(format!("{}/metrics", node.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("edgerate_store_quarantined_files 2"),
        "{metrics}"
    );
}

#[test]
fn a_corrupt_middle_of_a_log_is_quarantined_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (node, key) = demo_node(&data);
    let api = Api::account(&node.url, "demo", &key);
    assert_eq!(set_rule(&api, "4466", "0.5"), 200);
    assert_eq!(set_rule(&api, "4467", "0.6"), 200);
    node.kill();
    let docs = data.join("docs");
    let log = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "log")
                && std::fs::metadata(p).is_ok_and(|m| m.len() > 100)
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("rules-")
        })
        .expect("a rules log with two edits");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();
    let node = NodeProcess::start(bin(), &data, OPERATOR);
    let name = log.file_name().unwrap();
    assert!(data.join("quarantine").join(name).exists());
    let page = reqwest::blocking::get(format!("{}/", node.url))
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("corrupt"), "{page}");
}

#[test]
fn a_huge_unauthenticated_body_costs_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _) = demo_node(&dir.path().join("data"));
    let (before, _) = node.rss_kib();
    let mut stream = TcpStream::connect(node.url.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let size = 30 * 1024 * 1024;
    let head = "POST /api/cdr/add.json HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'['; 1 << 20];
    for _ in 0..(size >> 20) {
        let header = format!("{:x}\r\n", chunk.len());
        if stream.write_all(header.as_bytes()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break; // the node answered and closed: it did not read the rest
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let (_, peak) = node.rss_kib();
    assert!(
        peak < before + 64 * 1024,
        "peak RSS {peak} KiB from {before} KiB: the body was not held"
    );
}

/// A node in `dir` whose `[http]` section also holds `settings` (TOML lines), and the address
/// it serves HTTP on.
fn node_with_http(dir: &Path, settings: &str) -> (NodeProcess, String) {
    let data = dir.join("data");
    let http = free_port();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n{settings}[operator]\nkey = \"{OPERATOR}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let node = NodeProcess::start_config(bin(), &config, http, &data);
    (node, format!("127.0.0.1:{http}"))
}

#[test]
fn half_open_connections_are_shed() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_http(
        dir.path(),
        "header_read_timeout_s = 6\nidle_timeout_s = 6\nmax_connections = 400\n",
    );
    // The timeouts leave the 400 connections below time to be held while the test opens them
    // on a busy machine (tests of this file run side by side).
    let mut sockets: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /api/ratecard/list.json HTTP/1.1\r\nhost: x\r\nx-half: ")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        })
        .collect();
    // Over the cap: a 503 in the envelope at once.
    let extra: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut over = TcpStream::connect(&addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = over.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":503"), "{answer}");
    drop(extra);
    let started = Instant::now();
    wait_for(
        "half-open connections to be closed",
        Duration::from_secs(20),
        || {
            sockets.retain_mut(|s| {
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                }
            });
            sockets.is_empty().then_some(())
        },
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // The node still serves.
    let ready = reqwest::blocking::get(format!("{}/readyz", node.url)).unwrap();
    assert_eq!(ready.status(), 200);
}

/// The header deadline: a head trickled a byte at a time (never quiet, so never idle) is cut
/// off at `header_read_timeout_s`, and so is a keep-alive connection waiting for its next
/// request, long before `idle_timeout_s`.
#[test]
fn a_head_sent_too_slowly_and_an_idle_keep_alive_are_closed_at_the_header_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = node_with_http(
        dir.path(),
        "header_read_timeout_s = 2\nidle_timeout_s = 60\n",
    );
    let closed = |s: &mut TcpStream| {
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    };
    // A byte every 200 ms: the head never ends.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    slow.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .unwrap();
    let started = Instant::now();
    let cut = wait_for(
        "the slow head to be cut off",
        Duration::from_secs(20),
        || {
            if slow.write_all(b"a").is_err() || closed(&mut slow) {
                return Some(started.elapsed());
            }
            None
        },
    );
    assert!(cut >= Duration::from_secs(2), "cut after {cut:?}");
    assert!(cut < Duration::from_secs(10), "cut after {cut:?}");
    // One request answered, then nothing: closed at the header deadline, not at the idle one.
    let mut kept = TcpStream::connect(&addr).unwrap();
    kept.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    kept.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let answered = Instant::now();
    let cut = wait_for(
        "the idle keep-alive to be closed",
        Duration::from_secs(20),
        || closed(&mut kept).then(|| answered.elapsed()),
    );
    assert!(cut >= Duration::from_secs(2), "closed after {cut:?}");
    assert!(cut < Duration::from_secs(10), "closed after {cut:?}");
    // A client that keeps asking is served throughout.
    let ready = reqwest::blocking::get(format!("{}/readyz", node.url)).unwrap();
    assert_eq!(ready.status(), 200);
}

#[test]
fn pings_to_a_silent_trunk_never_hold_up_another_account() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (http, sip) = (free_port(), free_udp_port());
    // A trunk that takes every INVITE and never answers.
    let trunk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let trunk_addr = trunk.local_addr().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[operator]\nkey = \"{OPERATOR}\"\n[sip]\nlisten = \"127.0.0.1:{sip}\"\ntrunk = \"{trunk_addr}\"\nper_account = 64\n",
            data.display()
        ),
    )
    .unwrap();
    let node = NodeProcess::start_config(bin(), &config, http, &data);
    let op = Api::operator(&node.url, OPERATOR);
    let account = |name: &str| {
        let a = op.ok("admin/account/create", &[("name", name), ("rps", "100000")]);
        let (id, key) = (a["account"].as_str().unwrap(), a["key"].as_str().unwrap());
        (
            Api::account(&node.url, id, key),
            id.to_owned(),
            key.to_owned(),
        )
    };
    let (pinger, pinger_id, pinger_key) = account("pinger");
    let (writer, _, _) = account("writer");
    let card = writer.ok("ratecard/create", &[("name", "w")]);
    let card = card["id"].as_str().unwrap().to_owned();

    // 300 pings in six requests of 50, all at once: the cap takes one request's 50 (64 a
    // time), the rest are answered 429 at once, never queued.
    let started = Instant::now();
    let pings: Vec<_> = (0..6)
        .map(|r| {
            let url = node.url.clone();
            let (id, key) = (pinger_id.clone(), pinger_key.clone());
            std::thread::spawn(move || {
                let api = Api::account(&url, &id, &key);
                let numbers: Vec<String> = (0..50).map(|i| format!("44770090{r}{i:02}")).collect();
                let asked = Instant::now();
                let a = api.call(
                    "lookup/ping",
                    &[("number", &numbers.join(",")), ("timeout", "6")],
                );
                (a.status, asked.elapsed())
            })
        })
        .collect();
    // Meanwhile the other account writes, at its usual speed.
    std::thread::sleep(Duration::from_millis(300));
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let asked = Instant::now();
        let a = writer.call(
            "ratecard/rule/set",
            &[
                ("card", &card),
                ("prefix", &format!("44{i}")),
                ("rate", "0.01"),
            ],
        );
        assert_eq!(a.status, 200);
        worst = worst.max(asked.elapsed());
    }
    assert!(worst < Duration::from_millis(500), "a write took {worst:?}");
    let answers: Vec<(u16, Duration)> = pings.into_iter().map(|t| t.join().unwrap()).collect();
    let busy = answers.iter().filter(|(s, _)| *s == 429).count();
    let done = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(busy + done, 6, "{answers:?}");
    assert!(busy >= 4, "over the cap is a 429: {answers:?}");
    for (status, took) in &answers {
        if *status == 429 {
            assert!(*took < Duration::from_secs(2), "a 429 at once: {answers:?}");
        } else {
            assert!(
                *took < Duration::from_secs(10),
                "every ping answered by its timeout"
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // A trunk the node was not given is refused.
    let a = pinger.call(
        "lookup/ping",
        &[("number", "441"), ("trunk", "192.0.2.1:5060")],
    );
    assert_eq!(a.status, 400);
}
