//! Three nodes across WAN-like links: every peer datagram goes through a relay that holds it
//! 40 ms each way (`edgerate_tests::relay`; the kernel here has no `netem`). Each node advertises
//! its relay's address, so every link between two nodes carries the delay whichever side dialled.
//!
//! Prints the figures BENCHMARKS.md records (run it with `--release --nocapture` for them):
//! one edit's visibility on the other regions, and how fast a cut-off region heals.
//! `WAN_CUT_S` sets how long the region stays cut (default 10 s).

use edgerate_tests::relay::Relay;
use edgerate_tests::{
    create_account, wait_for, wait_mesh, wait_polling, Api, ClusterNode, NodeProcess,
};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const OPERATOR: &str = "wan-test-operator-key";
const CONVERGE: Duration = Duration::from_secs(90);
const ONE_WAY: Duration = Duration::from_millis(40);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edgerate"))
}

fn wait_connected(nodes: &[ClusterNode]) {
    let urls: Vec<String> = nodes.iter().map(ClusterNode::url).collect();
    let nodes: Vec<(&str, &str)> = nodes
        .iter()
        .zip(&urls)
        .map(|(n, u)| (&*n.name, &**u))
        .collect();
    wait_mesh(OPERATOR, &nodes, CONVERGE);
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() - 1) * p / 100].as_secs_f64() * 1000.0
}

#[test]
fn regions_forty_milliseconds_apart_see_an_edit_in_one_trip_and_heal_from_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let nodes: Vec<ClusterNode> = (1..=3)
        .map(|i| ClusterNode::create(bin(), dir.path(), &certs, &format!("n{i}"), &[], OPERATOR))
        .collect();
    let local = |node: &ClusterNode| SocketAddr::from(([127, 0, 0, 1], node.peer));
    let relays: Vec<Relay> = nodes
        .iter()
        .map(|n| Relay::start(local(n), ONE_WAY))
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let seeds: Vec<SocketAddr> = (i > 0).then(|| relays[0].addr()).into_iter().collect();
        node.route_peers(relays[i].addr(), &seeds);
    }
    let _running: Vec<NodeProcess> = nodes.iter().map(|n| n.start(bin())).collect();
    wait_connected(&nodes);
    let relayed: Vec<String> = relays.iter().map(|r| r.addr().to_string()).collect();
    for node in &nodes {
        for (peer, addr) in Api::operator(&node.url(), OPERATOR).peers_up() {
            assert!(
                relayed.contains(&addr),
                "{} reaches {peer} at {addr}, not through its relay",
                node.name
            );
        }
    }

    let (id, key) = create_account(&Api::operator(&nodes[0].url(), OPERATOR), 10_000_000);
    let apis: Vec<Api> = nodes
        .iter()
        .map(|n| Api::account(&n.url(), &id, &key))
        .collect();
    apis[0].ok("ratecard/create", &[("name", "w")]);
    wait_for("the card on every node", CONVERGE, || {
        apis.iter()
            .all(|a| a.call("ratecard/get", &[("card", "w")]).status == 200)
            .then_some(())
    });
    let has = |api: &Api, prefix: &str| {
        let answer = api
            .call("ratecard/query", &[("card", "w"), ("number", prefix)])
            .json();
        answer["prefix"] == prefix
    };

    // One edit at a time on n1, timed from its acknowledgement until n2 and n3 serve it.
    let mut seen = Vec::new();
    for k in 0..40 {
        let prefix = format!("4450{k:03}");
        apis[0].ok(
            "ratecard/rule/set",
            &[("card", "w"), ("prefix", &prefix), ("rate", "0.02")],
        );
        let acked = Instant::now();
        for api in &apis[1..] {
            // Polled every millisecond: at the usual 20 ms the interval would be the tail.
            wait_polling(
                "the edit on a peer",
                CONVERGE,
                Duration::from_millis(1),
                || has(api, &prefix).then_some(()),
            );
            seen.push(acked.elapsed());
        }
    }
    seen.sort();
    let (p50, p99, max) = (
        percentile(&seen, 50),
        percentile(&seen, 99),
        percentile(&seen, 100),
    );
    println!(
        "edit visible across a {} ms one-way link: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms ({} samples)",
        ONE_WAY.as_millis(),
        seen.len()
    );
    // One trip is 40 ms; an extra sync round trip would make it 120 ms or more.
    assert!(
        p50 < 3.0 * ONE_WAY.as_secs_f64() * 1000.0,
        "an edit takes more than one trip: p50 {p50:.1} ms"
    );

    // n3 is cut off (both its relay and its own datagrams through the others') while every
    // region writes, then healed.
    let cut_for = Duration::from_secs(
        std::env::var("WAN_CUT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    relays[2].cut();
    for relay in &relays[..2] {
        relay.cut_client(local(&nodes[2]));
    }
    let mut written = Vec::new();
    let cut_at = Instant::now();
    let mut k = 0;
    while cut_at.elapsed() < cut_for {
        for (i, api) in apis.iter().enumerate() {
            let prefix = format!("446{}{k:05}", i + 1);
            api.ok(
                "ratecard/rule/set",
                &[("card", "w"), ("prefix", &prefix), ("rate", "0.03")],
            );
            written.push(prefix);
        }
        k += 1;
    }
    for relay in &relays {
        relay.heal();
    }
    let healed = Instant::now();
    for api in &apis {
        wait_for("every write of the cut on every node", CONVERGE, || {
            let there = api.rule_prefixes("w", "446");
            written.iter().all(|p| there.contains(p)).then_some(())
        });
    }
    println!(
        "{} writes during a {} s cut of one region; every write on every node {:.2} s after the heal",
        written.len(),
        cut_for.as_secs(),
        healed.elapsed().as_secs_f64()
    );
}
