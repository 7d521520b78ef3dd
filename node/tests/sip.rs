//! Number ping and call origination against a real SIP peer: `sipp` (Debian `sip-tester`)
//! runs the scenario files in `sip/scenarios/` as the trunk, and each test checks the API's
//! answer, the SIP dialogue the peer saw (sipp's message trace) and the CDR / ASR Plus records
//! the call left behind.

use edgerate_tests::{free_port, free_udp_port, wait_for, Api, NodeProcess};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const OPERATOR: &str = "sip-test-operator-key";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edgerate"))
}

/// A node on the embedded default (demo account), its SIP agent on a known UDP port.
struct Node {
    _dir: tempfile::TempDir,
    process: NodeProcess,
    key: String,
    sip_port: u16,
}

impl Node {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (http, sip_port) = (free_port(), free_udp_port());
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n[operator]\nkey = \"{OPERATOR}\"\n[sip]\nlisten = \"127.0.0.1:{sip_port}\"\ntrunks = [\"127.0.0.1:*\"]\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let process = NodeProcess::start_config(bin(), &config, http, &dir.path().join("data"));
        let op = Api::operator(&process.url, OPERATOR);
        let account = op.ok(
            "admin/account/create",
            &[("name", "dialler"), ("rps", "10000")],
        );
        let key = format!(
            "{}:{}",
            account["account"].as_str().unwrap(),
            account["key"].as_str().unwrap()
        );
        Self {
            _dir: dir,
            process,
            key,
            sip_port,
        }
    }

    fn api(&self) -> Api {
        let (id, key) = self.key.split_once(':').unwrap();
        Api::account(&self.process.url, id, key)
    }
}

/// A sipp UAS running one scenario for one call, with its message trace.
struct Sipp {
    child: Child,
    port: u16,
    trace: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sipp {
    fn start(scenario: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../sip/scenarios")
            .join(format!("{scenario}.xml"));
        let trace = dir.path().join("messages.log");
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&file)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "30s", "-trace_msg"])
            .arg("-message_file")
            .arg(&trace)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (Debian package sip-tester; .ci/run installs it)");
        // Ready once its UDP port is taken.
        wait_for("sipp to listen", Duration::from_secs(10), || {
            std::net::UdpSocket::bind(("127.0.0.1", port))
                .is_err()
                .then_some(())
        });
        Self {
            child,
            port,
            trace,
            _dir: dir,
        }
    }

    fn trunk(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for sipp to finish its one call; true when the scenario passed. Returns the trace.
    fn finish(mut self) -> (bool, String) {
        let status = wait_for("sipp to finish", Duration::from_secs(40), || {
            self.child.try_wait().ok().flatten()
        });
        let trace = std::fs::read_to_string(&self.trace).unwrap_or_default();
        (status.success(), trace)
    }
}

/// Requests of one method the peer received, in order, each from its request line on.
fn received<'a>(trace: &'a str, method: &str) -> Vec<&'a str> {
    trace
        .split("message received")
        .skip(1)
        .filter_map(|m| {
            let start = m.find(|c: char| c.is_ascii_uppercase())?;
            let message = &m[start..];
            let message = message.split("\n---").next().unwrap_or(message);
            message
                .starts_with(&format!("{method} "))
                .then_some(message)
        })
        .collect()
}

fn cdr_of(api: &Api, number: &str) -> Value {
    let now = edgerate_model::time::now();
    let list = api.ok(
        "cdr/list",
        &[
            ("from", &(now - 3600).to_string()),
            ("to", &(now + 3600).to_string()),
            ("number", number),
        ],
    );
    assert_eq!(list["total"], 1, "{list}");
    list["cdrs"][0].clone()
}

fn ping(node: &Node, sipp: &Sipp, number: &str, extra: &[(&str, &str)]) -> Value {
    let trunk = sipp.trunk();
    let mut form = vec![("number", number), ("trunk", trunk.as_str())];
    form.extend_from_slice(extra);
    node.api().ok("lookup/ping", &form)
}

#[test]
fn ping_of_a_ringing_number_is_live_and_cancelled_at_once() {
    let node = Node::start();
    let sipp = Sipp::start("ring-cancel");
    let answer = ping(&node, &sipp, "447700900001", &[]);
    assert_eq!(answer["Short"], "Live");
    assert_eq!(answer["code"], 180);
    assert_eq!(answer["msg"], "180 Ringing");
    let (passed, trace) = sipp.finish();
    assert!(passed, "the peer's scenario failed:\n{trace}");
    let cancel = received(&trace, "CANCEL");
    assert_eq!(cancel.len(), 1, "{trace}");
    let invite = received(&trace, "INVITE")[0];
    let branch = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("Via:"))
            .and_then(|l| l.split("branch=").nth(1))
            .map(|b| b.split(';').next().unwrap().to_owned())
    };
    assert_eq!(
        branch(cancel[0]),
        branch(invite),
        "CANCEL shares the INVITE's branch"
    );
    assert_eq!(received(&trace, "ACK").len(), 1, "the 487 is acknowledged");
    assert_eq!(cdr_of(&node.api(), "447700900001")["sip_code"], 180);
}

#[test]
fn ping_of_an_unknown_number_is_dead_and_feeds_asr_plus() {
    let node = Node::start();
    let sipp = Sipp::start("reject-404");
    let answer = ping(&node, &sipp, "447700900002", &[]);
    assert_eq!(
        (
            answer["Short"].as_str(),
            answer["code"].as_u64(),
            answer["msg"].as_str()
        ),
        (Some("Dead"), Some(404), Some("404 Not Found"))
    );
    let (passed, trace) = sipp.finish();
    assert!(passed, "{trace}");
    assert_eq!(received(&trace, "ACK").len(), 1);
    let asr = node
        .api()
        .ok("lookup/asrplus", &[("number", "447700900002")]);
    assert_eq!(asr["status"], "Invalid", "{asr}");
    assert_eq!(cdr_of(&node.api(), "447700900002")["sip_code"], 404);
}

#[test]
fn ping_of_a_busy_number_says_retry() {
    let node = Node::start();
    let sipp = Sipp::start("busy-486");
    let answer = ping(&node, &sipp, "447700900003", &[]);
    assert_eq!(
        (answer["Short"].as_str(), answer["code"].as_u64()),
        (Some("Re-Try"), Some(486))
    );
    assert!(sipp.finish().0);
}

#[test]
fn ping_without_any_answer_retransmits_then_says_retry() {
    let node = Node::start();
    let sipp = Sipp::start("no-answer");
    let answer = ping(&node, &sipp, "447700900004", &[("timeout", "2")]);
    assert_eq!(
        (answer["Short"].as_str(), answer["code"].as_u64()),
        (Some("Re-Try"), Some(408))
    );
    let (_, trace) = sipp.finish();
    // T1 = 500 ms: sent at 0, 0.5 and 1.5 s within the 2 s timeout; no CANCEL without a
    // provisional response.
    let invites = received(&trace, "INVITE").len();
    assert!((2..=4).contains(&invites), "{invites} INVITEs:\n{trace}");
    assert!(received(&trace, "CANCEL").is_empty());
}

#[test]
fn ping_of_an_answering_number_hangs_up_at_once() {
    let node = Node::start();
    let sipp = Sipp::start("answer-bye");
    let answer = ping(&node, &sipp, "447700900005", &[]);
    assert_eq!(
        (answer["Short"].as_str(), answer["code"].as_u64()),
        (Some("Live"), Some(200))
    );
    let (passed, trace) = sipp.finish();
    assert!(passed, "{trace}");
    let ack = received(&trace, "ACK");
    assert_eq!(ack.len(), 1);
    assert!(
        ack[0].lines().next().unwrap().contains("sip:uas@"),
        "ACK goes to the Contact: {}",
        ack[0]
    );
    assert_eq!(received(&trace, "BYE").len(), 1);
}

#[test]
fn a_lost_first_invite_is_retransmitted() {
    let node = Node::start();
    let sipp = Sipp::start("drop-first");
    let answer = ping(&node, &sipp, "447700900006", &[]);
    assert_eq!(answer["Short"], "Live");
    let (passed, trace) = sipp.finish();
    assert!(passed, "{trace}");
    let invites = received(&trace, "INVITE");
    assert!(invites.len() >= 2, "{trace}");
    assert!(
        invites.windows(2).all(|w| w[0] == w[1]),
        "retransmissions are identical"
    );
}

#[test]
fn dial_answered_is_transferred_with_refer_then_hung_up() {
    let node = Node::start();
    let sipp = Sipp::start("answer-refer");
    let trunk = sipp.trunk();
    let answer = node.api().ok(
        "dial/dial",
        &[
            ("trunk", trunk.as_str()),
            ("cli", "441632960000"),
            ("number", "447700900007"),
            ("name", "Acme Sales"),
            ("header_X-Campaign", "spring"),
            ("route_all", "5000"),
        ],
    );
    let call = &answer["calls"][0];
    assert_eq!(call["status"], "answered", "{answer}");
    assert_eq!(
        (call["code"].as_u64(), call["reason"].as_str()),
        (Some(200), Some("OK"))
    );
    let (passed, trace) = sipp.finish();
    assert!(passed, "{trace}");
    let invite = received(&trace, "INVITE")[0];
    assert!(
        invite.contains("P-Asserted-Identity: <sip:441632960000@127.0.0.1>"),
        "{invite}"
    );
    assert!(invite.contains("X-Campaign: spring"), "{invite}");
    assert!(
        invite.contains("From: \"Acme Sales\" <sip:441632960000@"),
        "{invite}"
    );
    assert!(
        invite.contains(&format!("Call-ID: {}", call["callid"].as_str().unwrap())),
        "{invite}"
    );
    let refer = received(&trace, "REFER");
    assert_eq!(refer.len(), 1, "{trace}");
    assert!(
        refer[0].contains(&format!("Refer-To: <sip:5000@{trunk}>")),
        "{}",
        refer[0]
    );
    assert_eq!(received(&trace, "BYE").len(), 1);
    let cdr = cdr_of(&node.api(), "447700900007");
    assert_eq!(
        (cdr["sip_code"].as_u64(), cdr["source_cli"].as_str()),
        (Some(200), Some("441632960000"))
    );
}

#[test]
fn dial_of_a_busy_number_fails_and_garbage_datagrams_are_dropped() {
    let node = Node::start();
    // Hostile datagrams at the user agent first: dropped and counted, the node unharmed.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let agent = ("127.0.0.1", node.sip_port);
    for datagram in [
        &b"\x00\xff garbage"[..],
        b"SIP/2.0 200 OK\r\n\r\n",
        &vec![b'A'; 60_000],
        format!("SIP/2.0 180 Ringing\r\nX-Big: {}\r\n\r\n", "x".repeat(9000)).as_bytes(),
    ] {
        socket.send_to(datagram, agent).unwrap();
    }
    let metrics = || {
        reqwest::blocking::get(format!("{}/metrics", node.process.url))
            .unwrap()
            .text()
            .unwrap()
    };
    wait_for("the drops to be counted", Duration::from_secs(10), || {
        metrics()
            .lines()
            .find(|l| l.starts_with("edgerate_sip_dropped_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .filter(|n| *n >= 3.0)
    });
    let sipp = Sipp::start("busy-486");
    let trunk = sipp.trunk();
    let answer = node.api().ok(
        "dial/dial",
        &[
            ("trunk", trunk.as_str()),
            ("cli", "441632960000"),
            ("number", "447700900008"),
        ],
    );
    let call = &answer["calls"][0];
    assert_eq!(
        (
            call["status"].as_str(),
            call["code"].as_u64(),
            call["reason"].as_str()
        ),
        (Some("failed"), Some(486), Some("Busy Here"))
    );
    assert!(sipp.finish().0);
}

#[test]
fn smart_lookup_pings_and_an_unanswered_dial_is_cancelled_at_its_timeout() {
    let node = Node::start();
    let sipp = Sipp::start("reject-404");
    let trunk = sipp.trunk();
    let smart = node.api().ok(
        "lookup/smart",
        &[
            ("number", "447700900009"),
            ("type", "ping,asrplus"),
            ("trunk", trunk.as_str()),
        ],
    );
    assert_eq!(smart["447700900009"]["ping"]["Short"], "Dead", "{smart}");
    assert_eq!(
        smart["447700900009"]["asrplus"]["status"], "Invalid",
        "{smart}"
    );
    assert!(sipp.finish().0);

    let sipp = Sipp::start("ring-cancel");
    let trunk = sipp.trunk();
    let started = std::time::Instant::now();
    let answer = node.api().ok(
        "dial/dial",
        &[
            ("trunk", trunk.as_str()),
            ("number", "447700900010"),
            ("timeout", "1"),
        ],
    );
    let call = &answer["calls"][0];
    assert_eq!(
        (call["status"].as_str(), call["code"].as_u64()),
        (Some("failed"), Some(408)),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let (passed, trace) = sipp.finish();
    assert!(passed, "{trace}");
    assert_eq!(received(&trace, "CANCEL").len(), 1);
}
