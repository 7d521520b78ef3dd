//! Partitions made by the kernel: every node runs in its own network namespace with its own
//! address, on two bridges — the peer network, whose links a test cuts with `ip link set … down`,
//! and a management network the test's HTTP clients use, so both sides of a cut keep taking
//! writes. Nodes listen on `0.0.0.0` for peers, advertise their own address and know one seed,
//! as API.md §10 shows. Needs root (CI runs as root) and iproute2.

use edgerate_tests::{
    create_account, generated_deck, issue_certificate, wait_for, wait_mesh, Api, NodeProcess,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const OPERATOR: &str = "netns-test-operator-key";
const CONVERGE: Duration = Duration::from_secs(60);
const PEER_NET: &str = "10.211.77";
const MGMT_NET: &str = "10.211.78";
/// One network at a time: the tests share the subnets and the namespace names.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edgerate"))
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    assert!(sh(args), "{} failed (this test needs root)", args.join(" "));
}

/// The namespaces, bridges and veth pairs of `n` nodes; all removed when dropped.
struct Net {
    tag: String,
    n: usize,
}

impl Net {
    fn create(n: usize) -> Self {
        let net = Self {
            tag: format!("er{}", std::process::id() % 100_000),
            n,
        };
        net.remove();
        let (peer_br, mgmt_br) = (net.bridge("p"), net.bridge("m"));
        for br in [&peer_br, &mgmt_br] {
            must(&["ip", "link", "add", br, "type", "bridge"]);
            must(&["ip", "link", "set", br, "up"]);
        }
        let host = format!("{MGMT_NET}.254/24");
        must(&["ip", "addr", "add", &host, "dev", &mgmt_br]);
        for i in 1..=n {
            let ns = net.ns(i);
            must(&["ip", "netns", "add", &ns]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            for (kind, br, inner, subnet) in [
                ("p", &peer_br, "eth0", PEER_NET),
                ("m", &mgmt_br, "eth1", MGMT_NET),
            ] {
                let outer = net.veth(kind, i);
                must(&[
                    "ip", "link", "add", &outer, "type", "veth", "peer", "name", inner, "netns",
                    &ns,
                ]);
                must(&["ip", "link", "set", &outer, "master", br]);
                must(&["ip", "link", "set", &outer, "up"]);
                let addr = format!("{subnet}.{i}/24");
                must(&["ip", "-n", &ns, "addr", "add", &addr, "dev", inner]);
                must(&["ip", "-n", &ns, "link", "set", inner, "up"]);
            }
        }
        net
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn bridge(&self, kind: &str) -> String {
        format!("{}b{kind}", self.tag)
    }

    fn veth(&self, kind: &str, i: usize) -> String {
        format!("{}{kind}{i}", self.tag)
    }

    /// Cuts node `i` off the peer network (its management link stays up).
    fn cut(&self, i: usize) {
        must(&["ip", "link", "set", &self.veth("p", i), "down"]);
    }

    fn heal(&self, i: usize) {
        must(&["ip", "link", "set", &self.veth("p", i), "up"]);
    }

    /// Caps what node `i` sends on the peer network at `mbit` Mbit/s (a token bucket on its
    /// interface: the kernel here has no netem, but tbf works).
    fn cap(&self, i: usize, mbit: u32) {
        let rate = format!("{mbit}mbit");
        must(&[
            "ip",
            "netns",
            "exec",
            &self.ns(i),
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            &rate,
            "burst",
            "256kb",
            "latency",
            "100ms",
        ]);
    }

    fn remove(&self) {
        for i in 1..=self.n {
            sh(&["ip", "netns", "del", &self.ns(i)]);
        }
        for kind in ["p", "m"] {
            sh(&["ip", "link", "del", &self.bridge(kind)]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Node `i` (1-based) of a cluster in `net`: its config, certificate and data dir under `dir`.
struct Node {
    name: String,
    ns: String,
    config: PathBuf,
    data: PathBuf,
    url: String,
}

impl Node {
    fn create(net: &Net, dir: &Path, i: usize) -> Self {
        let certs = dir.join("certs");
        let name = format!("n{i}");
        issue_certificate(bin(), &certs, &name);
        let data = dir.join(&name);
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "[node]\nid = \"{name}\"\nregion = \"region-{name}\"\ndata_dir = \"{data}\"\n\
             [http]\nlisten = \"0.0.0.0:8080\"\n\
             [peer]\nlisten = \"0.0.0.0:7080\"\nadvertise = \"{PEER_NET}.{i}:7080\"\n\
             seeds = [\"{PEER_NET}.1:7080\"]\n\
             [tls]\nca = \"{certs}/ca.pem\"\ncert = \"{certs}/{name}.pem\"\nkey = \"{certs}/{name}.key\"\n\
             [operator]\nkey = \"{OPERATOR}\"\n",
            data = data.display(),
            certs = certs.display(),
        );
        std::fs::write(&config, text).expect("writing a node config");
        Self {
            name,
            ns: net.ns(i),
            config,
            data,
            url: format!("http://{MGMT_NET}.{i}:8080"),
        }
    }

    fn start(&self) -> NodeProcess {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns])
            .arg(bin())
            .args(["serve", "--config"])
            .arg(&self.config);
        NodeProcess::start_command(command, &self.url, &self.data)
    }

    fn operator(&self) -> Api {
        Api::operator(&self.url, OPERATOR)
    }

    /// The peers this node sees `up`.
    fn up(&self) -> BTreeSet<String> {
        self.operator()
            .peers_up()
            .into_iter()
            .map(|(node, _)| node)
            .collect()
    }
}

fn wait_connected(nodes: &[Node]) {
    let nodes: Vec<(&str, &str)> = nodes.iter().map(|n| (&*n.name, &*n.url)).collect();
    wait_mesh(OPERATOR, &nodes, CONVERGE);
}

#[test]
fn a_node_cut_off_by_the_kernel_takes_writes_and_every_acknowledged_write_reaches_everyone() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let net = Net::create(3);
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<Node> = (1..=3).map(|i| Node::create(&net, dir.path(), i)).collect();
    let _running: Vec<NodeProcess> = nodes.iter().map(Node::start).collect();
    wait_connected(&nodes);
    for node in &nodes {
        for (peer, addr) in node.operator().peers_up() {
            assert!(
                addr.starts_with(&format!("{PEER_NET}.")) && addr.ends_with(":7080"),
                "{}: peers are known by their advertised address: {peer} at {addr}",
                node.name
            );
        }
    }
    let (id, key) = create_account(&nodes[0].operator(), 1_000_000);
    let apis: Vec<Api> = nodes
        .iter()
        .map(|n| Api::account(&n.url, &id, &key))
        .collect();
    apis[0].ok("ratecard/create", &[("name", "t")]);
    // Its live revision too: the card's document may arrive before the revision's.
    wait_for("the card on every node", CONVERGE, || {
        apis.iter()
            .all(|a| a.call("ratecard/rules", &[("card", "t")]).status == 200)
            .then_some(())
    });

    // Every node takes one edit a round; the ledger keeps what was acknowledged.
    let mut acked = BTreeSet::new();
    let mut round = 0u32;
    let write_round = |acked: &mut BTreeSet<String>, round: &mut u32| {
        *round += 1;
        for (i, api) in apis.iter().enumerate() {
            let prefix = format!("44{}{round:05}", i + 1);
            let answer = api
                .try_call(
                    "ratecard/rule/set",
                    &[("card", "t"), ("prefix", &prefix), ("rate", "0.01")],
                )
                .unwrap_or_else(|| panic!("n{} did not answer", i + 1));
            assert_eq!(
                answer.status,
                200,
                "n{}: {}",
                i + 1,
                String::from_utf8_lossy(&answer.body)
            );
            acked.insert(prefix);
        }
    };
    for _ in 0..20 {
        write_round(&mut acked, &mut round);
    }
    net.cut(3);
    let cut_at = Instant::now();
    wait_for("n1 and n2 to lose n3", CONVERGE, || {
        write_round(&mut acked, &mut round);
        (!nodes[0].up().contains("n3") && !nodes[1].up().contains("n3")).then_some(())
    });
    let detected = cut_at.elapsed();
    for _ in 0..20 {
        write_round(&mut acked, &mut round);
    }
    // Each side holds its own writes but not the other's.
    let n3_has = apis[2].rule_prefixes("t", "");
    assert!(n3_has.contains(&format!("443{round:05}")));
    assert!(!n3_has.contains(&format!("441{round:05}")));
    net.heal(3);
    let healed_at = Instant::now();
    for _ in 0..10 {
        write_round(&mut acked, &mut round);
    }
    let stopped = Instant::now();
    wait_connected(&nodes);
    for (node, api) in nodes.iter().zip(&apis) {
        wait_for(
            &format!("every acknowledged write on {}", node.name),
            CONVERGE,
            || {
                let has = api.rule_prefixes("t", "");
                acked.is_subset(&has).then_some(())
            },
        );
    }
    println!(
        "{} acknowledged writes; cut seen after {:.2} s; every write on every node {:.2} s after \
         the writes stopped ({:.2} s after the heal)",
        acked.len(),
        detected.as_secs_f64(),
        stopped.elapsed().as_secs_f64(),
        healed_at.elapsed().as_secs_f64()
    );
}

/// Rows of the deck sent across the capped link: small by default (a debug build in CI), 1M for
/// the benchmark (`NETNS_DECK_ROWS=1000000 cargo test --release -p edgerate-node --test netns
/// -- --nocapture a_deck`).
fn deck_rows() -> usize {
    std::env::var("NETNS_DECK_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|rows| *rows > 0)
        .unwrap_or(20_000)
}

#[test]
fn a_deck_crosses_a_100_mbit_link() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let net = Net::create(2);
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<Node> = (1..=2).map(|i| Node::create(&net, dir.path(), i)).collect();
    let _running: Vec<NodeProcess> = nodes.iter().map(Node::start).collect();
    wait_connected(&nodes);
    for i in 1..=2 {
        net.cap(i, 100);
    }
    let (id, key) = create_account(&nodes[0].operator(), 1_000_000);
    let apis: Vec<Api> = nodes
        .iter()
        .map(|n| Api::account(&n.url, &id, &key))
        .collect();
    apis[0].ok("ratecard/create", &[("name", "big")]);
    wait_for("the card on both nodes", CONVERGE, || {
        apis.iter()
            .all(|a| a.call("ratecard/get", &[("card", "big")]).status == 200)
            .then_some(())
    });
    let rows = deck_rows();
    let deck = generated_deck(rows, 1);
    let bytes = deck.len();
    let started = Instant::now();
    let answer = apis[0].upload("ratecard/import", "card=big", "text/csv", deck.into_bytes());
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let local = started.elapsed();
    // The last row of the deck priced on the peer means its whole revision is there.
    let probe = format!(
        "{}5",
        10_000_000 + ((rows as u64 - 1) * 7919 + 1) % 89_999_999
    );
    wait_for(
        "the deck live on the peer",
        Duration::from_secs(300),
        || {
            let a = apis[1].call("ratecard/query", &[("card", "big"), ("number", &probe)]);
            (a.status == 200 && a.json()["revision"] == 2).then_some(())
        },
    );
    println!(
        "{rows}-row deck ({:.1} MB of CSV) over a 100 Mbit/s link: live on the importing node after \
         {:.2} s, on the peer after {:.2} s",
        bytes as f64 / 1e6,
        local.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
