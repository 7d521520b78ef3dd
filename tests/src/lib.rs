//! End-to-end harness: starts real `edgerate` processes on free loopback ports, talks to them
//! over HTTP, and waits on predicates with timeouts (never bare sleeps). The tests themselves
//! live beside the binary (`node/tests/`), which is where Cargo can hand them its path.

pub mod relay;

use base64::Engine;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    wait_polling(what, timeout, Duration::from_millis(20), check)
}

/// [`wait_for`], checking every `poll`: a wait that is itself measured polls finely, or the
/// interval shows in the figure.
pub fn wait_polling<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(poll);
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A free UDP port on 127.0.0.1 (for a QUIC listener).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// Runs the `edgerate` CLI at `bin` with `args` (operator key in the environment); whether it
/// succeeded, and what it printed on both outputs.
pub fn edgerate_cli(bin: &Path, args: &[&str], operator_key: &str) -> (bool, String) {
    let done = Command::new(bin)
        .args(args)
        .env("EDGERATE_OPERATOR_KEY", operator_key)
        .output()
        .expect("running edgerate");
    let said =
        String::from_utf8_lossy(&done.stdout).into_owned() + &String::from_utf8_lossy(&done.stderr);
    (done.status.success(), said)
}

/// A test's path as text (temporary dirs are UTF-8).
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// One node of a test cluster: certificate, config file and ports, as API.md §10 lays out.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub name: String,
    pub config: PathBuf,
    pub data: PathBuf,
    pub http: u16,
    pub peer: u16,
}

impl ClusterNode {
    /// Writes node `name`'s certificate (signed by the CA in `certs`, made with `edgerate certs
    /// init` on first use) and config under `dir`, seeded with `seeds` (QUIC ports).
    pub fn create(
        bin: &Path,
        dir: &Path,
        certs: &Path,
        name: &str,
        seeds: &[u16],
        operator_key: &str,
    ) -> Self {
        issue_certificate(bin, certs, name);
        let (http, peer) = (free_port(), free_udp_port());
        let data = dir.join(name);
        let seeds: Vec<String> = seeds.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "[node]\nid = \"{name}\"\nregion = \"region-{name}\"\ndata_dir = \"{data}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\
             [peer]\nlisten = \"0.0.0.0:{peer}\"\nseeds = [{seeds}]\n\
             [tls]\nca = \"{certs}/ca.pem\"\ncert = \"{certs}/{name}.pem\"\nkey = \"{certs}/{name}.key\"\n\
             [operator]\nkey = \"{operator_key}\"\n",
            data = data.display(),
            seeds = seeds.join(", "),
            certs = certs.display(),
        );
        std::fs::write(&config, text).expect("writing a node config");
        Self {
            name: name.to_owned(),
            config,
            data,
            http,
            peer,
        }
    }

    /// Rewrites the node's `[peer]` routes: the address it advertises and the seeds it dials
    /// (to put relays between nodes).
    pub fn route_peers(&self, advertise: std::net::SocketAddr, seeds: &[std::net::SocketAddr]) {
        let text = std::fs::read_to_string(&self.config).expect("reading a node config");
        let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
        let text: Vec<String> = text
            .lines()
            .map(|line| match line.starts_with("seeds = ") {
                true => format!(
                    "seeds = [{}]\nadvertise = \"{advertise}\"",
                    seeds.join(", ")
                ),
                false => line.to_owned(),
            })
            .collect();
        std::fs::write(&self.config, text.join("\n") + "\n").expect("writing a node config");
    }

    /// Starts the node and waits until it is ready.
    pub fn start(&self, bin: &Path) -> NodeProcess {
        NodeProcess::start_config(bin, &self.config, self.http, &self.data)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

/// A running node process.
pub struct NodeProcess {
    child: Child,
    pub url: String,
    pub data: PathBuf,
    /// Lines the node printed on standard output.
    lines: mpsc::Receiver<String>,
    printed: Vec<String>,
}

impl NodeProcess {
    /// Starts `edgerate serve` on the embedded default with `data` as its data dir, and waits
    /// until it answers `/readyz`.
    pub fn start(bin: &Path, data: &Path, operator_key: &str) -> Self {
        let port = free_port();
        let mut command = Command::new(bin);
        command
            .args(["serve", "--data"])
            .arg(data)
            .args(["--http", &format!("127.0.0.1:{port}")])
            .env("EDGERATE_OPERATOR_KEY", operator_key);
        Self::spawn(command, port, data)
    }

    /// Starts `edgerate serve --config FILE` for a node whose HTTP port is `port`.
    pub fn start_config(bin: &Path, config: &Path, port: u16, data: &Path) -> Self {
        let mut command = Command::new(bin);
        command.args(["serve", "--config"]).arg(config);
        Self::spawn(command, port, data)
    }

    fn spawn(command: Command, port: u16, data: &Path) -> Self {
        Self::start_command(command, &format!("http://127.0.0.1:{port}"), data)
    }

    /// Runs `command` (an `edgerate serve` however wrapped, e.g. in `ip netns exec`) whose API
    /// answers at `url`, and waits until it is ready.
    pub fn start_command(mut command: Command, url: &str, data: &Path) -> Self {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting edgerate");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Self {
            child,
            url: url.to_owned(),
            data: data.to_owned(),
            lines,
            printed: Vec::new(),
        };
        let client = reqwest::blocking::Client::new();
        let ready = format!("{}/readyz", node.url);
        // Ready, and done printing what it prints on start (keys come before the "serving"
        // line, which the node prints once it already answers).
        wait_for("the node to be ready", Duration::from_secs(60), || {
            node.drain();
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("edgerate exited early with {status}: {:?}", node.printed);
            }
            let started = node
                .printed
                .iter()
                .any(|l| l.starts_with("edgerate serving on ") || l.starts_with("{\"serving\""));
            client
                .get(&ready)
                .send()
                .ok()
                .filter(|r| started && r.status().is_success())
        });
        node
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.printed.push(line);
        }
    }

    /// What the node printed so far.
    pub fn printed(&mut self) -> &[String] {
        self.drain();
        &self.printed
    }

    /// The demo key printed on first start.
    pub fn demo_key(&mut self) -> Option<String> {
        self.printed()
            .iter()
            .find_map(|l| l.strip_prefix("demo account: demo  key: "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now and at its peak, KiB (`VmRSS`, `VmHWM`).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("waiting for edgerate")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issues node `name`'s certificate into `certs` with `edgerate certs`, signed by the cluster CA
/// there (made on first use).
pub fn issue_certificate(bin: &Path, certs: &Path, name: &str) {
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .output()
            .expect("edgerate certs");
        assert!(
            out.status.success(),
            "edgerate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let certs_arg = certs.to_str().expect("utf-8 path");
    if !certs.join("ca.pem").exists() {
        run(&["certs", "init", "--out", certs_arg]);
    }
    run(&[
        "certs", "issue", "--ca", certs_arg, "--name", name, "--out", certs_arg,
    ]);
}

/// Waits until each of `nodes` (name, API URL) sees every other one `up` in its
/// `cluster/status` (as the operator, with `operator_key`).
pub fn wait_mesh(operator_key: &str, nodes: &[(&str, &str)], timeout: Duration) {
    for (name, url) in nodes {
        let want: BTreeSet<&str> = nodes.iter().map(|n| n.0).filter(|n| n != name).collect();
        let operator = Api::operator(url, operator_key);
        wait_for(&format!("{name} to see {want:?} up"), timeout, || {
            let up = operator.peers_up();
            want.iter()
                .all(|w| up.iter().any(|(node, _)| node == w))
                .then_some(())
        });
    }
}

/// A new account made by the operator, allowed `daily` requests a day: (id, key).
pub fn create_account(operator: &Api, daily: u64) -> (String, String) {
    let a = operator.ok(
        "admin/account/create",
        &[
            ("name", "acme"),
            ("rps", "100000"),
            ("daily", &daily.to_string()),
        ],
    );
    (
        a["account"].as_str().expect("an account id").to_owned(),
        a["key"].as_str().expect("an account key").to_owned(),
    )
}

/// A client for one account (or the operator) of one node.
#[derive(Clone)]
pub struct Api {
    http: reqwest::blocking::Client,
    base: String,
    auth: String,
}

/// A status and a body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Api {
    /// Basic auth as `account:key`.
    pub fn account(url: &str, account: &str, key: &str) -> Self {
        Self::with_auth(
            url,
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{account}:{key}"))
            ),
        )
    }

    /// Bearer auth with the operator key.
    pub fn operator(url: &str, key: &str) -> Self {
        Self::with_auth(url, format!("Bearer {key}"))
    }

    fn with_auth(url: &str, auth: String) -> Self {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .expect("client");
        Self {
            http,
            base: url.to_owned(),
            auth,
        }
    }

    /// POSTs form variables to `/api/{service}.json`; `None` when no answer came (the node is
    /// down, or died under the request).
    pub fn try_call(&self, service: &str, form: &[(&str, &str)]) -> Option<Answer> {
        let r = self
            .http
            .post(format!("{}/api/{service}.json", self.base))
            .header("authorization", &self.auth)
            .form(form)
            .send()
            .ok()?;
        let status = r.status().as_u16();
        Some(Answer {
            status,
            body: r.bytes().ok()?.to_vec(),
        })
    }

    /// POSTs form variables to `/api/{service}.json`.
    pub fn call(&self, service: &str, form: &[(&str, &str)]) -> Answer {
        self.try_call(service, form).expect("request")
    }

    /// POSTs `body` (with `content_type`) to `/api/{service}.json?{query}`.
    pub fn upload(&self, service: &str, query: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let r = self
            .http
            .post(format!("{}/api/{service}.json?{query}", self.base))
            .header("authorization", &self.auth)
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("request");
        Answer {
            status: r.status().as_u16(),
            body: r.bytes().expect("body").to_vec(),
        }
    }

    /// Calls `service` and returns its status and `X-RateLimit-Remaining`.
    pub fn remaining(&self, service: &str) -> (u16, Option<u64>) {
        let r = self
            .http
            .post(format!("{}/api/{service}.json", self.base))
            .header("authorization", &self.auth)
            .send()
            .expect("request");
        let remaining = r
            .headers()
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        (r.status().as_u16(), remaining)
    }

    /// Calls and asserts 200, returning the JSON.
    pub fn ok(&self, service: &str, form: &[(&str, &str)]) -> Value {
        let a = self.call(service, form);
        assert_eq!(
            a.status,
            200,
            "{service}: {}",
            String::from_utf8_lossy(&a.body)
        );
        a.json()
    }

    /// The peers this node's `cluster/status` shows `up`, as (node, address).
    pub fn peers_up(&self) -> Vec<(String, String)> {
        let status = self.ok("cluster/status", &[]);
        status["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["state"] == "up")
            .map(|p| {
                let field = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
                (field("node"), field("addr"))
            })
            .collect()
    }

    /// What an account sees of its cards (settings, revisions, rules) and its CDRs of the last
    /// and next day: the same on every node once converged.
    pub fn account_state(&self) -> Value {
        let cards = self.ok("ratecard/list", &[]);
        let mut out = serde_json::Map::new();
        for card in cards["cards"].as_array().cloned().unwrap_or_default() {
            let id = card["id"].as_str().unwrap_or_default().to_owned();
            let export = self.call("ratecard/export", &[("card", &id)]);
            out.insert(
                id.clone(),
                serde_json::json!({
                    "card": card,
                    "revisions": self.ok("ratecard/revisions", &[("card", &id)]),
                    "rules": String::from_utf8_lossy(&export.body),
                }),
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        out.insert(
            "cdrs".into(),
            self.ok(
                "cdr/list",
                &[
                    ("from", &(now - 86_400).to_string()),
                    ("to", &(now + 86_400).to_string()),
                    ("limit", "10000"),
                ],
            ),
        );
        Value::Object(out)
    }

    /// Every prefix starting with `prefix` in `card`'s live revision, read page by page.
    pub fn rule_prefixes(&self, card: &str, prefix: &str) -> BTreeSet<String> {
        const PAGE: usize = 10_000;
        let mut there = BTreeSet::new();
        for page in 0.. {
            let (limit, offset) = (PAGE.to_string(), (page * PAGE).to_string());
            let form = [
                ("card", card),
                ("prefix", prefix),
                ("limit", &limit),
                ("offset", &offset),
            ];
            let rules = self.call("ratecard/rules", &form).json()["rules"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            there.extend(
                rules
                    .iter()
                    .filter_map(|r| r["prefix"].as_str().map(str::to_owned)),
            );
            if rules.len() < PAGE {
                break;
            }
        }
        there
    }
}

/// A generated CSV deck of `rows` distinct prefixes.
pub fn generated_deck(rows: usize, seed: u64) -> String {
    let mut out = String::with_capacity(rows * 48 + 64);
    out.push_str("prefix,name,rate,connect_fee,mcd,pulse\n");
    for i in 0..rows {
        let prefix = 10_000_000 + (i as u64 * 7919 + seed) % 89_999_999;
        let rate = (i as u64 * 31 + seed) % 10_000;
        out.push_str(&format!(
            "{prefix},Destination {},0.{rate:04},0,60,60\n",
            i % 500
        ));
    }
    out
}
