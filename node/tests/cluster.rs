//! Real clusters: `edgerate` processes with certificates from `edgerate certs` and config files
//! as API.md §10 lays out, replicating over QUIC on loopback. Every wait is on a predicate with a
//! timeout; convergence is checked by comparing what the nodes answer.

use edgerate_tests::{
    create_account, edgerate_cli, generated_deck, path_str, wait_for, wait_mesh, Api, ClusterNode,
    NodeProcess,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

const OPERATOR: &str = "cluster-test-operator-key";
const CONVERGE: Duration = Duration::from_secs(60);
/// One cluster at a time: the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edgerate"))
}

struct Cluster {
    dir: tempfile::TempDir,
    certs: PathBuf,
    nodes: Vec<ClusterNode>,
    running: Vec<Option<NodeProcess>>,
}

impl Cluster {
    /// `n` nodes, every one after the first seeded with the first.
    fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let mut cluster = Self {
            dir,
            certs,
            nodes: Vec::new(),
            running: Vec::new(),
        };
        for _ in 0..n {
            let seeds: Vec<u16> = cluster.nodes.first().map(|n| n.peer).into_iter().collect();
            cluster.add(&seeds);
        }
        cluster.wait_connected();
        cluster
    }

    /// Adds and starts a node seeded with `seeds`.
    fn add(&mut self, seeds: &[u16]) -> usize {
        let name = format!("n{}", self.nodes.len() + 1);
        let node = ClusterNode::create(bin(), self.dir.path(), &self.certs, &name, seeds, OPERATOR);
        self.running.push(Some(node.start(bin())));
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn operator(&self, i: usize) -> Api {
        Api::operator(&self.nodes[i].url(), OPERATOR)
    }

    fn as_account(&self, i: usize, (id, key): &(String, String)) -> Api {
        Api::account(&self.nodes[i].url(), id, key)
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.running[*i].is_some())
            .collect()
    }

    /// Waits until every running node has every other running node up.
    fn wait_connected(&self) {
        let urls: Vec<(String, String)> = self
            .running()
            .into_iter()
            .map(|i| (self.nodes[i].name.clone(), self.nodes[i].url()))
            .collect();
        let nodes: Vec<(&str, &str)> = urls.iter().map(|(n, u)| (&**n, &**u)).collect();
        wait_mesh(OPERATOR, &nodes, CONVERGE);
    }

    /// Waits until `read` answers the same on every running node; returns that answer.
    fn converged(&self, what: &str, read: impl Fn(usize) -> Value) -> Value {
        let running = self.running();
        wait_for(what, CONVERGE, || {
            let first = read(running[0]);
            running[1..]
                .iter()
                .all(|i| read(*i) == first)
                .then_some(first)
        })
    }

    /// Waits until `acct`'s state ([`Api::account_state`]) is the same on every running node.
    fn converged_state(&self, what: &str, acct: &(String, String)) -> Value {
        self.converged(what, |i| self.as_account(i, acct).account_state())
    }

    fn kill(&mut self, i: usize) {
        self.running[i].take().expect("running").kill();
    }

    fn restart(&mut self, i: usize) {
        self.running[i] = Some(self.nodes[i].start(bin()));
    }
}

/// A new account with an empty card `name`, once every node knows the card.
fn account_with_card(cluster: &Cluster, name: &str) -> (String, String) {
    let acct = create_account(&cluster.operator(0), 1_000_000);
    cluster
        .as_account(0, &acct)
        .ok("ratecard/create", &[("name", name)]);
    // The card and its live revision: the card's document can arrive before the documents of
    // its first revision.
    wait_for(
        "the card and its live revision everywhere",
        CONVERGE,
        || {
            cluster
                .running()
                .into_iter()
                .all(|i| {
                    let card = cluster
                        .as_account(i, &acct)
                        .call("ratecard/get", &[("card", name)]);
                    card.status == 200 && !card.json()["revision"].is_null()
                })
                .then_some(())
        },
    );
    acct
}

fn import(api: &Api, card: &str, deck: String) -> Value {
    let a = api.upload(
        "ratecard/import",
        &format!("card={card}"),
        "text/csv",
        deck.into_bytes(),
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    a.json()
}

/// A one-CDR CSV body, an hour ago.
fn cdr(callid: &str, number: &str, code: u16) -> String {
    let duration = if code == 200 { 30 } else { 0 };
    format!(
        "callid,dt,source_cli,dest_number,duration,sip_code\n{callid},{},441000,{number},{duration},{code}\n",
        edgerate_model::time::now() - 3600
    )
}

#[test]
fn three_nodes_serve_everything_written_anywhere() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(3);
    let acct = create_account(&cluster.operator(0), 1_000_000);
    // Credentials work on every node.
    for i in 1..3 {
        wait_for("the account on every node", CONVERGE, || {
            (cluster
                .as_account(i, &acct)
                .call("ratecard/list", &[])
                .status
                == 200)
                .then_some(())
        });
    }
    // A card and a 5,000-row import on node 1 are queryable on nodes 2 and 3.
    let a1 = cluster.as_account(0, &acct);
    a1.ok("ratecard/create", &[("name", "wholesale")]);
    import(&a1, "wholesale", generated_deck(5_000, 3));
    let expected = a1.ok(
        "ratecard/query",
        &[("card", "wholesale"), ("number", "10000003999")],
    );
    for i in 1..3 {
        wait_for("the import on every node", CONVERGE, || {
            let q = cluster.as_account(i, &acct).call(
                "ratecard/query",
                &[("card", "wholesale"), ("number", "10000003999")],
            );
            (q.status == 200 && q.json() == expected).then_some(())
        });
    }
    // A rule edit on node 2 reaches nodes 1 and 3.
    cluster.as_account(1, &acct).ok(
        "ratecard/rule/set",
        &[
            ("card", "wholesale"),
            ("prefix", "4420"),
            ("name", "London"),
            ("rate", "0.25"),
        ],
    );
    cluster.converged("the rule edit", |i| {
        cluster
            .as_account(i, &acct)
            .call(
                "ratecard/query",
                &[("card", "wholesale"), ("number", "44201234")],
            )
            .json()
    });
    // A CDR on node 3 is listed on node 1 and feeds ASR Plus on node 2.
    let added = cluster.as_account(2, &acct).upload(
        "cdr/add",
        "",
        "text/csv",
        cdr("call-1", "447700900404", 404).into_bytes(),
    );
    assert_eq!(added.status, 200);
    wait_for("ASR Plus on node 2", CONVERGE, || {
        let a = cluster
            .as_account(1, &acct)
            .ok("lookup/asrplus", &[("number", "447700900404")]);
        (a["status"] == "Invalid").then_some(())
    });
    let state = cluster.converged_state("identical account state", &acct);
    assert_eq!(state["cdrs"]["total"], 1);
    // An operator dataset imported on node 1 answers lookups on node 3.
    let op = cluster.operator(0);
    let ds = op.upload(
        "admin/dataset/import",
        "name=hlr",
        "text/csv",
        b"prefix,mcc,mnc\n4477,234,15\n".to_vec(),
    );
    assert_eq!(ds.status, 200, "{}", String::from_utf8_lossy(&ds.body));
    wait_for("the dataset on node 3", CONVERGE, || {
        let s = cluster.as_account(2, &acct).ok(
            "lookup/smart",
            &[("number", "447700900404"), ("type", "hlr")],
        );
        (s.to_string().contains("234")).then_some(())
    });
    // Once quiet, every node reports its peers in sync (lag 0), with an RTT and a last sync.
    for i in 0..3 {
        let started = std::time::Instant::now();
        wait_for("lag 0 everywhere", CONVERGE, || {
            let status = cluster.operator(i).ok("cluster/status", &[]);
            if started.elapsed() > CONVERGE - Duration::from_secs(5) {
                // Once seen stuck here: what the node says, for whoever meets it next.
                eprintln!("n{} still lags: {status}", i + 1);
            }
            let peers = status["peers"].as_array()?.clone();
            peers
                .iter()
                .all(|p| p["lag"] == 0 && p["rtt_ms"].is_number() && p["last_sync"].is_string())
                .then_some(())
        });
    }
    // The operator page lists every peer as up, rendered by a real browser.
    let dom = render(&format!("{}/", cluster.nodes[0].url()));
    for peer in ["n2", "n3"] {
        assert!(
            dom.contains(&format!(">{peer}<")),
            "{peer} missing from the page: {dom}"
        );
    }
    assert_eq!(dom.matches("data-state=\"up\"").count(), 2, "{dom}");
}

/// The page as headless Chromium rendered it (its DOM after scripts ran).
fn render(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .expect("chromium (Debian package `chromium`; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_daily_limit_counts_requests_on_every_node() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(2);
    let acct = create_account(&cluster.operator(0), 1_000);
    let (a1, a2) = (cluster.as_account(0, &acct), cluster.as_account(1, &acct));
    wait_for("the account on node 2", CONVERGE, || {
        (a2.call("ratecard/list", &[]).status == 200).then_some(())
    });
    let mut on_node2 = 1;
    for _ in 0..600 {
        assert_eq!(a1.call("ratecard/list", &[]).status, 200);
    }
    // Within a replication tick node 2 counts node 1's 600 requests too.
    let left = wait_for("node 1's count on node 2", CONVERGE, || {
        let (status, remaining) = a2.remaining("ratecard/list");
        assert_eq!(status, 200);
        on_node2 += 1;
        let remaining = remaining?;
        (remaining <= 1_000 - 600 - on_node2).then_some(remaining)
    });
    let mut admitted = 0;
    while a2.call("ratecard/list", &[]).status == 200 {
        admitted += 1;
        assert!(
            admitted <= left + 1,
            "node 2 admitted past the cluster's daily limit"
        );
    }
    assert_eq!(admitted, left, "node 2 stops exactly at the limit");
    wait_for("node 1 to stop too", CONVERGE, || {
        (a1.call("ratecard/list", &[]).status == 429).then_some(())
    });
}

#[test]
fn concurrent_edits_of_one_rule_converge_to_one_answer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(3);
    let acct = create_account(&cluster.operator(0), 1_000_000);
    let a1 = cluster.as_account(0, &acct);
    a1.ok("ratecard/create", &[("name", "c")]);
    for i in 1..3 {
        // The card and its live revision: the card's document can arrive before the documents
        // of its first revision, and until they do an edit of "the live revision" is a 404.
        wait_for("the card's live revision on every node", CONVERGE, || {
            let card = cluster
                .as_account(i, &acct)
                .call("ratecard/get", &[("card", "c")]);
            (card.status == 200 && !card.json()["revision"].is_null()).then_some(())
        });
    }
    for round in 0..10 {
        let prefix = format!("44{round}");
        std::thread::scope(|s| {
            for i in 0..3 {
                let api = cluster.as_account(i, &acct);
                let prefix = prefix.clone();
                s.spawn(move || {
                    let rate = format!("0.{i}{round}");
                    api.ok(
                        "ratecard/rule/set",
                        &[
                            ("card", "c"),
                            ("prefix", &prefix),
                            ("name", &format!("from n{i}")),
                            ("rate", &rate),
                        ],
                    );
                });
            }
        });
    }
    let state = cluster.converged("one answer for every rule", |i| {
        cluster
            .as_account(i, &acct)
            .ok("ratecard/rules", &[("card", "c"), ("limit", "1000")])
    });
    assert_eq!(state["rules"].as_array().unwrap().len(), 10, "{state}");
}

#[test]
fn a_partitioned_node_converges_after_the_heal_and_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(3);
    let acct = create_account(&cluster.operator(0), 1_000_000);
    let a1 = cluster.as_account(0, &acct);
    a1.ok("ratecard/create", &[("name", "p")]);
    cluster.converged_state("the card everywhere", &acct);
    // Cut node 3 off; both sides write rules and CDRs.
    let isolate = cluster.nodes[2].data.join("isolate");
    std::fs::write(&isolate, "").unwrap();
    wait_for("node 1 to see node 3 down", CONVERGE, || {
        let s = cluster.operator(0).ok("cluster/status", &[]);
        s["peers"]
            .as_array()?
            .iter()
            .any(|p| p["node"] == "n3" && p["state"] == "down")
            .then_some(())
    });
    let a3 = cluster.as_account(2, &acct);
    for k in 0..20 {
        a1.ok(
            "ratecard/rule/set",
            &[
                ("card", "p"),
                ("prefix", &format!("1{k:02}")),
                ("name", "west"),
                ("rate", "0.1"),
            ],
        );
        a3.ok(
            "ratecard/rule/set",
            &[
                ("card", "p"),
                ("prefix", &format!("3{k:02}")),
                ("name", "east"),
                ("rate", "0.3"),
            ],
        );
        let body = cdr(&format!("w{k}"), &format!("4470000{k:05}"), 200);
        assert_eq!(
            a1.upload("cdr/add", "", "text/csv", body.into_bytes())
                .status,
            200
        );
        let body = cdr(&format!("e{k}"), &format!("4480000{k:05}"), 486);
        assert_eq!(
            a3.upload("cdr/add", "", "text/csv", body.into_bytes())
                .status,
            200
        );
    }
    // The same prefix written on both sides while apart: one answer after the heal.
    a1.ok(
        "ratecard/rule/set",
        &[
            ("card", "p"),
            ("prefix", "999"),
            ("name", "west"),
            ("rate", "0.9"),
        ],
    );
    a3.ok(
        "ratecard/rule/set",
        &[
            ("card", "p"),
            ("prefix", "999"),
            ("name", "east"),
            ("rate", "0.8"),
        ],
    );
    assert_eq!(
        a1.ok("ratecard/rules", &[("card", "p"), ("limit", "1000")])["rules"]
            .as_array()
            .unwrap()
            .len(),
        21,
        "node 1 sees only its own side while cut off"
    );
    std::fs::remove_file(&isolate).unwrap();
    let state = cluster.converged_state("identical state after the heal", &acct);
    assert_eq!(state["cdrs"]["total"], 40, "every acknowledged CDR is kept");
    let rules = cluster
        .as_account(1, &acct)
        .ok("ratecard/rules", &[("card", "p"), ("limit", "1000")]);
    assert_eq!(
        rules["rules"].as_array().unwrap().len(),
        41,
        "every acknowledged rule is kept"
    );
}

#[test]
fn a_node_killed_during_a_large_import_restarts_and_converges() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(3);
    let acct = account_with_card(&cluster, "big");
    let a1 = cluster.as_account(0, &acct);
    let deck = generated_deck(150_000, 11);
    std::thread::scope(|s| {
        let importer = s.spawn(|| import(&a1, "big", deck));
        // Node 2 dies while the import's shards stream to it.
        wait_for("node 2 to be receiving", CONVERGE, || {
            (rule_documents(&cluster.nodes[1].data) > 1).then_some(())
        });
        cluster.running[1].take().unwrap().kill();
        importer.join().unwrap();
    });
    cluster.restart(1);
    cluster.wait_connected();
    let state = cluster.converged("identical state after the restart", |i| {
        cluster
            .as_account(i, &acct)
            .ok("ratecard/revisions", &[("card", "big")])
    });
    assert_eq!(state["revisions"].as_array().unwrap().len(), 2, "{state}");
    cluster.converged("the same rules everywhere", |i| {
        let export = cluster
            .as_account(i, &acct)
            .call("ratecard/export", &[("card", "big")]);
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&export.body, &mut hasher);
        Value::from(std::hash::Hasher::finish(&hasher))
    });
    cluster.kill(2);
}

/// Rule shard documents in a node's data dir (a new card has one; an import adds more).
fn rule_documents(data: &Path) -> usize {
    std::fs::read_dir(data.join("docs")).map_or(0, |dir| {
        dir.filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("rules-") && name.ends_with(".snap")
            })
            .count()
    })
}

#[test]
fn a_node_joining_later_through_one_seed_learns_everyone_and_catches_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(2);
    let acct = create_account(&cluster.operator(0), 1_000_000);
    let a1 = cluster.as_account(0, &acct);
    a1.ok("ratecard/create", &[("name", "j")]);
    import(&a1, "j", generated_deck(2_000, 5));
    let body = cdr("before-join", "447700900001", 200);
    assert_eq!(
        a1.upload("cdr/add", "", "text/csv", body.into_bytes())
            .status,
        200
    );
    // Node 3 knows only node 2.
    let seed = cluster.nodes[1].peer;
    cluster.add(&[seed]);
    cluster.wait_connected();
    cluster.converged_state("the new node holds everything", &acct);
}

#[test]
fn a_node_restored_from_a_backup_rejoins_catches_up_and_its_new_writes_reach_everyone() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(2);
    let acct = account_with_card(&cluster, "r");
    let a2 = cluster.as_account(1, &acct);
    import(&a2, "r", generated_deck(500, 9));
    let body = cdr("before-backup", "447700900001", 200);
    assert_eq!(
        a2.upload("cdr/add", "", "text/csv", body.into_bytes())
            .status,
        200
    );
    cluster.converged_state("the import and the CDR everywhere", &acct);
    let archive = cluster.dir.path().join("n2.tar");
    let url = cluster.nodes[1].url();
    let (ok, said) = edgerate_cli(
        bin(),
        &["backup", "--node", &url, "--out", path_str(&archive)],
        OPERATOR,
    );
    assert!(ok, "{said}");
    // Node 2 writes on after its backup (a CDR its peer holds), then its disk is lost.
    let body = cdr("after-backup", "447700900002", 486);
    assert_eq!(
        a2.upload("cdr/add", "", "text/csv", body.into_bytes())
            .status,
        200
    );
    cluster.converged_state("the later CDR everywhere", &acct);
    cluster.kill(1);
    std::fs::remove_dir_all(&cluster.nodes[1].data).unwrap();
    // Node 1 goes on meanwhile.
    let a1 = cluster.as_account(0, &acct);
    a1.ok(
        "ratecard/rule/set",
        &[("card", "r"), ("prefix", "999"), ("rate", "0.5")],
    );
    let (ok, said) = edgerate_cli(
        bin(),
        &[
            "restore",
            path_str(&archive),
            "--data",
            path_str(&cluster.nodes[1].data),
        ],
        OPERATOR,
    );
    assert!(ok, "{said}");
    cluster.restart(1);
    cluster.wait_connected();
    // It catches up: node 1's edit and its own CDR written after the backup come back.
    cluster.converged_state("the restored node holds everything", &acct);
    // What it writes now reaches node 1 (a new origin: never mistaken for its old records).
    let body = cdr("after-restore", "447700900003", 200);
    assert_eq!(
        cluster
            .as_account(1, &acct)
            .upload("cdr/add", "", "text/csv", body.into_bytes())
            .status,
        200
    );
    let state = cluster.converged_state("the restored node's new CDR everywhere", &acct);
    let callids: Vec<&str> = state["cdrs"]["cdrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["callid"].as_str())
        .collect();
    for callid in ["before-backup", "after-backup", "after-restore"] {
        assert!(callids.contains(&callid), "{callid} missing: {callids:?}");
    }
}

/// `edgerate_peer_refused_total` on node `url`.
fn refused_count(url: &str) -> u64 {
    let metrics = reqwest::blocking::get(format!("{url}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("edgerate_peer_refused_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_peer_with_a_foreign_certificate_gets_nothing_and_is_counted_not_kept() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(1);
    let acct = create_account(&cluster.operator(0), 1_000_000);
    // An intruder with its own CA, seeded with the real node.
    let other = tempfile::tempdir().unwrap();
    let intruder = ClusterNode::create(
        bin(),
        other.path(),
        &other.path().join("certs"),
        "mallory",
        &[cluster.nodes[0].peer],
        OPERATOR,
    );
    let _running = intruder.start(bin());
    wait_for("the node to count the intruder refused", CONVERGE, || {
        (refused_count(&cluster.nodes[0].url()) > 0).then_some(())
    });
    wait_for("the intruder to count the node refused", CONVERGE, || {
        (refused_count(&intruder.url()) > 0).then_some(())
    });
    // Refused attempts are not members: nothing on cluster/status or the public page.
    let status = cluster.operator(0).ok("cluster/status", &[]);
    assert_eq!(status["peers"], serde_json::json!([]), "{status}");
    let page = reqwest::blocking::get(format!("{}/", cluster.nodes[0].url()))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !page.contains("mallory") && !page.contains("refused"),
        "{page}"
    );
    // Nothing crossed: the intruder knows no account.
    let denied = Api::account(&intruder.url(), &acct.0, &acct.1).call("ratecard/list", &[]);
    assert_eq!(denied.status, 401);
}

#[test]
fn the_mesh_forms_on_wildcard_listeners_with_one_seed_and_outlives_the_seed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Every node listens on 0.0.0.0 (ClusterNode writes the contract's example); n2 and n3
    // know only n1.
    let mut cluster = Cluster::start(3);
    for i in 0..3 {
        let status = cluster.operator(i).ok("cluster/status", &[]);
        for peer in status["peers"].as_array().unwrap() {
            let addr = peer["addr"].as_str().unwrap_or_default();
            assert!(
                addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
                "a dialable address, never 0.0.0.0: {status}"
            );
        }
    }
    let acct = account_with_card(&cluster, "w");
    // The seed goes away: the other two stay linked and keep replicating.
    cluster.kill(0);
    let a2 = cluster.as_account(1, &acct);
    a2.ok(
        "ratecard/rule/set",
        &[("card", "w"), ("prefix", "4420"), ("rate", "0.05")],
    );
    cluster.converged("n3 has n2's edit with the seed down", |i| {
        cluster
            .as_account(i, &acct)
            .call("ratecard/query", &[("card", "w"), ("number", "4420")])
            .json()
    });
    // n2 restarts knowing only the (dead) seed: n3, which knows n2, dials it back.
    cluster.kill(1);
    cluster.restart(1);
    cluster.wait_connected();
    let a3 = cluster.as_account(2, &acct);
    a3.ok(
        "ratecard/rule/set",
        &[("card", "w"), ("prefix", "4421"), ("rate", "0.06")],
    );
    cluster.converged("n2 has n3's edit after its restart", |i| {
        cluster
            .as_account(i, &acct)
            .call("ratecard/query", &[("card", "w"), ("number", "4421")])
            .json()
    });
    // The seed comes back and everyone is linked again.
    cluster.restart(0);
    cluster.wait_connected();
}

#[test]
fn the_importing_node_killed_mid_import_restarts_and_converges() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(3);
    let acct = account_with_card(&cluster, "big");
    let url = format!(
        "{}/api/ratecard/import.json?card=big",
        cluster.nodes[0].url()
    );
    let (id, key) = acct.clone();
    let upload = std::thread::spawn(move || {
        // The node dies under this request: no answer is expected.
        let _ = reqwest::blocking::Client::new()
            .post(url)
            .basic_auth(id, Some(key))
            .header("content-type", "text/csv")
            .body(generated_deck(300_000, 13))
            .send();
    });
    wait_for("node 1 to be writing the import", CONVERGE, || {
        (rule_documents(&cluster.nodes[0].data) > 1).then_some(())
    });
    cluster.kill(0);
    upload.join().unwrap();
    cluster.restart(0);
    cluster.wait_connected();
    // Acknowledged or not, every node ends with the same card.
    cluster.converged_state("identical state after the restart", &acct);
}

/// One writer's acknowledged writes: (prefix, rate) rules and CDR callids.
type Ledger = (Vec<(String, String)>, Vec<String>);

/// A writer's `rule/set` on node `n`: whether it was acknowledged. A node down or out of disk
/// (no answer, 503) is waited out a moment; any other refusal fails the test.
/// Sets a rule: `Some(true)` acknowledged, `Some(false)` refused (503: never applied), `None`
/// when the outcome is unknown (the connection failed, e.g. its node was killed mid-request:
/// the edit may or may not have been applied).
fn set_rule_acked(api: &Api, n: usize, card: &str, prefix: &str, rate: &str) -> Option<bool> {
    let set = api.try_call(
        "ratecard/rule/set",
        &[("card", card), ("prefix", prefix), ("rate", rate)],
    );
    match set {
        Some(a) if a.status == 200 => Some(true),
        Some(a) if a.status != 503 => panic!(
            "node {n}: rule/set answered {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        ),
        refused_or_unknown => {
            std::thread::sleep(Duration::from_millis(50));
            refused_or_unknown.map(|_| false)
        }
    }
}

/// Whether the node `api` talks to exports, in card `card`, every prefix of `rules` with one of
/// the rates it may hold (the last acknowledged, or one set later with an unknown outcome).
fn exports_every_rule<'a>(
    api: &Api,
    card: &str,
    mut rules: impl Iterator<Item = (&'a String, &'a [String])>,
) -> bool {
    let export = api.call("ratecard/export", &[("card", card)]);
    let deck = String::from_utf8_lossy(&export.body).into_owned();
    let held: std::collections::HashMap<&str, &str> = deck
        .lines()
        .filter_map(|l| {
            let mut cells = l.split(',');
            Some((cells.next()?, cells.nth(1)?))
        })
        .collect();
    rules.all(|(prefix, rates)| {
        held.get(prefix.as_str())
            .is_some_and(|r| rates.iter().any(|rate| *r == rate.trim_end_matches('0')))
    })
}

/// Jepsen-style: a writer on every region while nodes are SIGKILLed and restarted at random; a
/// ledger of every acknowledged write; once the writes stop and the mesh is back, every
/// acknowledged rule and CDR is on every node.
#[test]
fn every_acknowledged_write_reaches_every_node_through_kills() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(3);
    let acct = account_with_card(&cluster, "j");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|n| {
            let api = cluster.as_account(n, &acct);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rules = Vec::new();
                let mut cdrs = Vec::new();
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let prefix = format!("7{n}{i:05}");
                    let rate = format!("0.{:04}", i % 9000 + 1);
                    // Every prefix is new: an edit of unknown outcome is simply not counted.
                    if set_rule_acked(&api, n, "j", &prefix, &rate) == Some(true) {
                        rules.push((prefix, rate));
                    }
                    let callid = format!("n{n}-{i}");
                    let body = [
                        ("callid", callid.as_str()),
                        ("dest_number", "441234567"),
                        ("sip_code", "200"),
                        ("duration", "30"),
                        ("card", "j"),
                    ];
                    if api
                        .try_call("cdr/add", &body)
                        .is_some_and(|a| a.status == 200)
                    {
                        cdrs.push(callid);
                    }
                }
                (rules, cdrs)
            })
        })
        .collect();
    // Six kills of a random node, each restarted after a moment, while every region writes.
    let mut seed = 0x9e37_79b9_u64;
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(1500));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = (seed % 3) as usize;
        cluster.kill(victim);
        std::thread::sleep(Duration::from_millis(700));
        cluster.restart(victim);
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ledger: Vec<Ledger> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let acked_rules: usize = ledger.iter().map(|(r, _)| r.len()).sum();
    let acked_cdrs: usize = ledger.iter().map(|(_, c)| c.len()).sum();
    assert!(
        acked_rules > 100 && acked_cdrs > 100,
        "the writers got through"
    );
    let stopped = std::time::Instant::now();
    cluster.wait_connected();
    let connected = stopped.elapsed();
    let now = edgerate_model::time::now();
    let (from, to) = ((now - 3600).to_string(), (now + 60).to_string());
    for node in 0..3 {
        let api = cluster.as_account(node, &acct);
        wait_for(
            &format!("node {node} to hold every acknowledged write"),
            CONVERGE,
            || {
                let rules = ledger
                    .iter()
                    .flat_map(|(r, _)| r)
                    .map(|(p, r)| (p, std::slice::from_ref(r)));
                let rules_ok = exports_every_rule(&api, "j", rules);
                let cdrs = api.ok("cdr/list", &[("from", &from), ("to", &to), ("limit", "1")]);
                let cdrs_ok = cdrs["total"]
                    .as_u64()
                    .is_some_and(|t| t >= acked_cdrs as u64);
                (rules_ok && cdrs_ok).then_some(())
            },
        );
    }
    println!(
        "{acked_rules} rules and {acked_cdrs} CDRs acknowledged; mesh back {connected:?} and \
         every write everywhere {:?} after the writes stopped",
        stopped.elapsed()
    );
    // Nothing unacknowledged beyond what the writers tried: every CDR listed is the ledger's
    // or one whose answer was lost with its node.
    cluster.converged_state("identical state everywhere", &acct);
}

#[test]
fn ten_nodes_through_one_seed_form_a_full_mesh_and_heal_from_losing_three() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Nine nodes know only n1; each must learn the other eight from gossip.
    let mut cluster = Cluster::start(10);
    let acct = account_with_card(&cluster, "t");
    let edit = |cluster: &Cluster, i: usize, prefix: &str| {
        cluster.as_account(i, &acct).ok(
            "ratecard/rule/set",
            &[("card", "t"), ("prefix", prefix), ("rate", "0.07")],
        );
    };
    let everywhere = |cluster: &Cluster, prefix: &str| {
        cluster.converged(&format!("{prefix} on every running node"), |i| {
            let answer = cluster
                .as_account(i, &acct)
                .call("ratecard/query", &[("card", "t"), ("number", prefix)])
                .json();
            answer["prefix"].clone()
        })
    };
    edit(&cluster, 9, "4430");
    assert_eq!(everywhere(&cluster, "4430"), "4430");
    // The seed and two others go away; the seven left stay a mesh and keep replicating.
    for i in [0, 3, 6] {
        cluster.kill(i);
    }
    edit(&cluster, 4, "4431");
    assert_eq!(everywhere(&cluster, "4431"), "4431");
    // Back they come, the seed last: n4 and n7 know only the dead seed, so they rejoin because
    // the others keep dialling every member they know. All catch up with what they missed.
    for i in [3, 6, 0] {
        cluster.restart(i);
    }
    cluster.wait_connected();
    assert_eq!(everywhere(&cluster, "4431"), "4431");
}

#[test]
fn a_provider_change_in_one_region_rebuilds_the_customer_card_once_everywhere() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(3);
    let acct = create_account(&cluster.operator(0), 1_000_000);
    let api = |i: usize| cluster.as_account(i, &acct);
    let deck = |rows: &[(&str, &str)]| {
        rows.iter().fold(
            String::from("prefix,name,rate,connect_fee,mcd,pulse\n"),
            |mut d, (prefix, rate)| {
                d.push_str(&format!("{prefix},Dest,{rate},0,60,60\n"));
                d
            },
        )
    };
    for (name, rows) in [
        ("prov-a", deck(&[("44", "0.020"), ("447", "0.030")])),
        ("prov-b", deck(&[("44", "0.018"), ("33", "0.070")])),
    ] {
        api(0).ok("ratecard/create", &[("name", name), ("kind", "provider")]);
        import(&api(0), name, rows);
    }
    api(0).ok("ratecard/create", &[("name", "retail")]);
    api(0).ok(
        "ratecard/build",
        &[
            ("card", "retail"),
            ("from", "prov-a,prov-b"),
            ("profit_percent", "10"),
            ("rebuild", "auto"),
        ],
    );
    let rate = |i: usize, number: &str| -> Value {
        let a = api(i).call("ratecard/query", &[("card", "retail"), ("number", number)]);
        if a.status == 200 {
            a.json()["rate"].clone()
        } else {
            Value::Null
        }
    };
    let revisions = |i: usize| {
        api(i)
            .call("ratecard/revisions", &[("card", "retail")])
            .json()["revisions"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let seen = cluster.converged("the built card everywhere", |i| {
        serde_json::json!([rate(i, "4471"), revisions(i)])
    });
    assert_eq!(seen[0], serde_json::json!(0.0198), "{seen}");
    let built_revisions = seen[1].as_u64().unwrap();

    // A rule edit taken by n2: rebuilt in place there, the edit replicated everywhere.
    api(1).ok(
        "ratecard/rule/set",
        &[("card", "prov-b"), ("prefix", "447"), ("rate", "0.001")],
    );
    let seen = cluster.converged("the rebuilt rule everywhere", |i| {
        let card = api(i).ok("ratecard/get", &[("card", "retail")]);
        serde_json::json!([rate(i, "4471"), revisions(i), card["stale"]])
    });
    assert_eq!(
        seen,
        serde_json::json!([0.0011, built_revisions, false]),
        "no new revision for a rule edit"
    );

    // A provider import taken by n3: one new built revision, made once for the cluster.
    import(&api(2), "prov-a", deck(&[("44", "0.001")]));
    let seen = cluster.converged("the rebuilt card everywhere", |i| {
        let card = api(i).ok("ratecard/get", &[("card", "retail")]);
        serde_json::json!([rate(i, "4420"), revisions(i), card["stale"]])
    });
    assert_eq!(
        seen,
        serde_json::json!([0.0011, built_revisions + 1, false]),
        "rebuilt once, by the node that took the import"
    );
}

#[test]
fn a_rerating_in_one_region_shows_on_every_region() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start(3);
    let acct = create_account(&cluster.operator(0), 1_000_000);
    let api = |i: usize| cluster.as_account(i, &acct);
    api(0).ok("ratecard/create", &[("name", "rr")]);
    import(
        &api(0),
        "rr",
        "prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.06,0,60,60\n".into(),
    );
    let body = "callid,dest_number,duration,sip_code,card\nr1,441,60,200,rr\nr2,442,120,200,rr\n";
    let a = api(0).upload("cdr/add", "", "text/csv", body.as_bytes().to_vec());
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let now = edgerate_model::time::now();
    let (from, to) = ((now - 3600).to_string(), (now + 3600).to_string());
    let cost = |i: usize| api(i).ok("cdr/stats", &[("from", &from), ("to", &to)])["cost"].clone();
    let seen = cluster.converged("the CDRs everywhere", cost);
    assert_eq!(seen, serde_json::json!(0.18));
    // The CDRs (event log) can reach a node before the import (documents): the edit below is
    // meant for the imported revision, so n2 must hold it first.
    wait_for("the import everywhere", CONVERGE, || {
        (0..3)
            .all(|i| {
                let a = api(i).call("ratecard/query", &[("card", "rr"), ("number", "441")]);
                a.status == 200 && a.json()["revision"] == 2
            })
            .then_some(())
    });
    api(1).ok(
        "ratecard/rule/set",
        &[("card", "rr"), ("prefix", "44"), ("rate", "0.05")],
    );
    let done = api(1).ok(
        "cdr/rerate",
        &[("card", "rr"), ("from", &from), ("to", &to)],
    );
    assert_eq!(done["changed"], 2, "{done}");
    let seen = cluster.converged("the re-rating everywhere", |i| {
        let listed = api(i).ok(
            "cdr/list",
            &[("from", &from), ("to", &to), ("number", "442")],
        );
        serde_json::json!([cost(i), listed["cdrs"][0]["cost"]])
    });
    assert_eq!(seen, serde_json::json!([0.15, 0.1]));
}

/// Rule shard documents in a node's data dir: (rebased ones, generations; the others).
fn generations(data: &Path) -> (usize, usize) {
    let names: Vec<String> = std::fs::read_dir(data.join("docs")).map_or(Vec::new(), |dir| {
        dir.filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("rules-") && n.ends_with(".snap"))
            .collect()
    });
    let rebased = names.iter().filter(|n| n.contains('_')).count();
    (rebased, names.len() - rebased)
}

/// Enough edits of one small card, from every region at once and through a SIGKILL, that its
/// shard document is rebased (more than 1000 changes): every node moves to the new generation,
/// drops the old document, and holds every acknowledged edit, including those taken while the
/// rebase was under way elsewhere.
#[test]
fn a_card_rebased_while_every_region_edits_it_keeps_every_edit_everywhere() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start(3);
    let acct = account_with_card(&cluster, "r");
    let before: Vec<usize> = (0..3)
        .map(|i| generations(&cluster.nodes[i].data).1)
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|n| {
            let api = cluster.as_account(n, &acct);
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Per prefix, the rates it may end with: the last acknowledged, and any set
                // after it whose outcome is unknown (its node killed mid-request).
                let mut rules: std::collections::BTreeMap<String, Vec<String>> =
                    std::collections::BTreeMap::new();
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    // Some prefixes edited again: an overwrite as well as new rules.
                    let prefix = format!("5{n}{:04}", i % 700);
                    let rate = format!("0.{:04}", i % 9000 + 1);
                    match set_rule_acked(&api, n, "r", &prefix, &rate) {
                        Some(true) => {
                            rules.insert(prefix, vec![rate]);
                        }
                        // Counted only where an acknowledged rate came before it.
                        None => {
                            if let Some(rates) = rules.get_mut(&prefix) {
                                rates.push(rate);
                            }
                        }
                        Some(false) => {}
                    }
                }
                rules
            })
        })
        .collect();
    // Writes go on until some node has rebased the card, with one node killed and restarted
    // on the way.
    wait_for("a rebased shard document", Duration::from_secs(120), || {
        (0..3)
            .any(|i| generations(&cluster.nodes[i].data).0 > 0)
            .then_some(())
    });
    cluster.kill(1);
    std::thread::sleep(Duration::from_millis(700));
    cluster.restart(1);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ledger: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    cluster.wait_connected();
    for node in 0..3 {
        let api = cluster.as_account(node, &acct);
        wait_for(
            &format!("node {node} to hold every acknowledged edit"),
            CONVERGE,
            || {
                let rules = ledger.iter().flatten().map(|(p, r)| (p, r.as_slice()));
                exports_every_rule(&api, "r", rules).then_some(())
            },
        );
    }
    cluster.converged_state("identical state everywhere", &acct);
    // Every node serves the one generation left and has dropped the document it replaced.
    wait_for("every node on one generation", CONVERGE, || {
        (0..3)
            .all(|i| generations(&cluster.nodes[i].data) == (1, before[i] - 1))
            .then_some(())
    });
}
