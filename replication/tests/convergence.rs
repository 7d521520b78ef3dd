//! Convergence under random schedules: three in-memory peers (real catalogs and event logs on
//! disk, messages through the wire encoding) edit the same card, append CDRs, sync pairwise,
//! get cut off and reconnect in random orders. Once every link is healed and synced, every
//! node holds the same documents, the same rules in its index and the same log, and the live
//! revision shows every acknowledged edit of the live revision that no import superseded (an
//! edit taken into the revision live where it was made, while a newer import was on its way
//! there, is carried onto that import).
//!
//! Time is a logical clock, one tick per step: the time of every edit and import, so an import
//! supersedes exactly the edits made before it.

use edgerate_model::card::CardMeta;
use edgerate_model::cdr::{Cdr, CdrInput};
use edgerate_model::rule::Rule;
use edgerate_replication::catalog::{Catalog, CatalogError, RuleTarget};
use edgerate_replication::eventlog::EventLog;
use edgerate_replication::sync::{Job, Message, PeerSync, Replica};
use edgerate_replication::usage::UsageBoard;
use edgerate_replication::ActorId;
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::sync::Arc;

const NODES: usize = 3;
const CARD: &str = "c1";

#[derive(Debug, Clone)]
enum Op {
    /// Sets `44<prefix>` in the revision live on `node`.
    Set {
        node: usize,
        prefix: u8,
        rate: u16,
    },
    /// Deletes `44<prefix>` from the revision live on `node`.
    Delete {
        node: usize,
        prefix: u8,
    },
    Cdr {
        node: usize,
        number: u8,
        code: u16,
    },
    Sync {
        a: usize,
        b: usize,
    },
    /// Imports a deck of `33<0..rules>` and `44<0..overlap>` (the prefixes edits touch), live
    /// at once.
    Import {
        node: usize,
        rules: u8,
        overlap: u8,
    },
    /// Rebases every shard document of the card on `node`.
    Rebase {
        node: usize,
    },
    Cut {
        node: usize,
    },
    Heal {
        node: usize,
    },
}

/// Prefixes `44<0..PREFIXES>` are edited.
const PREFIXES: u8 = 12;

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES;
    prop_oneof![
        4 => (node.clone(), 0..PREFIXES, 1u16..999).prop_map(|(node, prefix, rate)| Op::Set { node, prefix, rate }),
        1 => (node.clone(), 0..PREFIXES).prop_map(|(node, prefix)| Op::Delete { node, prefix }),
        2 => (node.clone(), 0u8..20, prop::sample::select(vec![200u16, 404, 486])).prop_map(|(node, number, code)| Op::Cdr { node, number, code }),
        3 => (node.clone(), node.clone()).prop_map(|(a, b)| Op::Sync { a, b }),
        2 => (node.clone(), 1u8..30, 0..PREFIXES).prop_map(|(node, rules, overlap)| Op::Import { node, rules, overlap }),
        1 => node.clone().prop_map(|node| Op::Rebase { node }),
        1 => node.clone().prop_map(|node| Op::Cut { node }),
        1 => node.prop_map(|node| Op::Heal { node }),
    ]
}

struct Node {
    dir: tempfile::TempDir,
    replica: Replica,
    cut: bool,
}

fn node(i: usize) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let actor = ActorId::from(&[i as u8 + 1; 16][..]);
    let catalog = Catalog::open(&dir.path().join("docs"), actor).unwrap();
    let log = EventLog::open(
        &dir.path().join("events.sqlite"),
        &format!("n{i}"),
        &[404],
        0,
    )
    .unwrap();
    Node {
        dir,
        replica: Replica {
            catalog,
            log: Arc::new(log),
            usage: Arc::new(UsageBoard::default()),
        },
        cut: false,
    }
}

/// One node's side of a link. With a bulk lane (as the transport runs it), its jobs are done
/// when the side settles, the last made first: each job finishes when it finishes, after
/// messages of other documents were applied. Without one, it does its heavy work inline.
struct Side {
    sync: PeerSync,
    replica: Replica,
    jobs: Option<std::sync::mpsc::Receiver<Job>>,
}

impl Side {
    fn new(node: &Node, peer: usize, lane: bool) -> Self {
        let sync = PeerSync::new(node.replica.clone(), format!("n{peer}"));
        let (sync, jobs) = if lane {
            let (lane, jobs) = std::sync::mpsc::channel();
            (sync.with_lane(lane), Some(jobs))
        } else {
            (sync, None)
        };
        Self {
            sync,
            replica: node.replica.clone(),
            jobs,
        }
    }

    /// Says what it has to say, its lane's jobs done and taken back (which can leave more).
    fn settle(&mut self, out: &mut Vec<Message>) {
        loop {
            self.sync.flush(out);
            let jobs: Vec<Job> = self.jobs.iter().flat_map(|j| j.try_iter()).collect();
            if jobs.is_empty() {
                return;
            }
            for job in jobs.into_iter().rev() {
                let done = job.run(&self.replica);
                self.sync.complete(done, out).unwrap();
            }
        }
    }
}

/// Runs both sides of one link until neither has anything to say; every message goes through
/// the wire encoding. Each batch arrives in reverse: a large message travels on a stream of its
/// own and later ones can overtake it.
fn exchange(a: &mut Side, b: &mut Side) {
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    a.sync.tick(&mut to_b);
    a.settle(&mut to_b);
    b.sync.tick(&mut to_a);
    b.settle(&mut to_a);
    for _ in 0..200 {
        if to_a.is_empty() && to_b.is_empty() {
            return;
        }
        for m in std::mem::take(&mut to_b).into_iter().rev() {
            b.sync
                .handle(Message::decode(&m.encode()).unwrap(), &mut to_a)
                .unwrap();
        }
        b.settle(&mut to_a);
        for m in std::mem::take(&mut to_a).into_iter().rev() {
            a.sync
                .handle(Message::decode(&m.encode()).unwrap(), &mut to_b)
                .unwrap();
        }
        a.settle(&mut to_b);
    }
    panic!("sync did not settle");
}

/// Every link, as pairs of sides: `links[i][j]` is node i's side of its link with node j. The
/// lower-numbered node's side has a bulk lane, the other's works inline: both ways are run.
fn links(nodes: &[Node]) -> Vec<Vec<Option<Side>>> {
    (0..NODES)
        .map(|i| {
            (0..NODES)
                .map(|j| (i != j).then(|| Side::new(&nodes[i], j, i < j)))
                .collect()
        })
        .collect()
}

fn sync_pair(links: &mut [Vec<Option<Side>>], a: usize, b: usize) {
    let (lo, hi) = (a.min(b), a.max(b));
    let (left, right) = links.split_at_mut(hi);
    let x = left[lo][hi].as_mut().unwrap();
    let y = right[0][lo].as_mut().unwrap();
    exchange(x, y);
}

/// Every revision's rules: (revision, prefix, encoded rule).
fn rules(catalog: &Catalog) -> Vec<(u32, String, String)> {
    let view = catalog.view();
    view.cards.get(CARD).map_or_else(Vec::new, |card| {
        card.revisions
            .iter()
            .flat_map(|(rev, r)| {
                let index = r.index.read();
                index
                    .iter()
                    .map(|(p, rule)| (*rev, p.to_string(), rule.encode()))
                    .collect::<Vec<_>>()
            })
            .collect()
    })
}

type State = (Vec<(u32, String, String)>, Vec<String>, usize);

/// What must be identical everywhere.
fn state(node: &Node) -> State {
    let rules = rules(&node.replica.catalog);
    // The index kept up to date change by change is the index the documents load into.
    let reloaded = Catalog::open(&node.dir.path().join("docs"), ActorId::random()).unwrap();
    assert_eq!(
        rules,
        self::rules(&reloaded),
        "index and documents disagree"
    );
    let docs = node.replica.catalog.docs();
    let mut heads: Vec<String> = node
        .replica
        .catalog
        .live_docs()
        .iter()
        .map(|id| format!("{id}:{:?}", docs.heads(id)))
        .collect();
    heads.sort();
    let records = node.replica.log.record_count().unwrap() as usize;
    (rules, heads, records)
}

/// An acknowledged edit of the revision live where it was made.
struct Edit {
    prefix: u8,
    time: i64,
    /// The rule written (encoded), or `None` for a delete.
    rule: Option<String>,
}

/// The revision live on `node` at `now`.
fn live_rev(node: &Node, now: i64) -> u32 {
    let view = node.replica.catalog.view();
    view.cards[CARD].live_at(now).unwrap().meta.rev
}

/// Runs `ops` on three fresh nodes, heals and syncs everything, and checks convergence.
fn check(ops: Vec<Op>) {
    let mut nodes: Vec<Node> = (0..NODES).map(node).collect();
    nodes[0]
        .replica
        .catalog
        .create_card(CardMeta::new(CARD.into(), "acc".into(), "card".into(), 0))
        .unwrap();
    let mut links = links(&nodes);
    for (a, b) in [(0, 1), (0, 2)] {
        sync_pair(&mut links, a, b);
    }
    let (mut calls, mut imports) = (0, 0);
    // The logical clock; the card was made at 0.
    let mut now = 0i64;
    let mut edits: Vec<Edit> = Vec::new();
    // Import time → the deck's rules of edited prefixes.
    let mut decks: HashMap<i64, HashMap<u8, String>> = HashMap::from([(0, HashMap::new())]);
    for op in ops {
        now += 1;
        match op {
            Op::Set { node, prefix, rate } => {
                let target = RuleTarget {
                    card: CARD,
                    rev: live_rev(&nodes[node], now),
                    prefix: &format!("44{prefix}"),
                };
                let rule = Rule::new(Arc::from(format!("n{node}")), Decimal::new(rate.into(), 3));
                let (rule, _) = nodes[node]
                    .replica
                    .catalog
                    .set_rule::<CatalogError>(target, now, |_| Ok(rule))
                    .unwrap();
                edits.push(Edit {
                    prefix,
                    time: now,
                    rule: Some(rule.encode()),
                });
            }
            Op::Delete { node, prefix } => {
                let target = RuleTarget {
                    card: CARD,
                    rev: live_rev(&nodes[node], now),
                    prefix: &format!("44{prefix}"),
                };
                if nodes[node].replica.catalog.delete_rule(target, now).is_ok() {
                    edits.push(Edit {
                        prefix,
                        time: now,
                        rule: None,
                    });
                }
            }
            Op::Cdr { node, number, code } => {
                calls += 1;
                let cdr = Cdr {
                    input: CdrInput {
                        callid: format!("call-{calls}"),
                        dt: 100,
                        source_cli: "1".into(),
                        dest_number: format!("4477009000{number:02}"),
                        duration: Decimal::ZERO,
                        sip_code: code,
                        sip_reason: String::new(),
                        card: None,
                        provider: None,
                    },
                    rating: None,
                    leg: None,
                };
                nodes[node].replica.log.append("acc", &[cdr]).unwrap();
            }
            Op::Sync { a, b } if a != b && !nodes[a].cut && !nodes[b].cut => {
                sync_pair(&mut links, a, b);
            }
            Op::Sync { .. } => {}
            Op::Import {
                node,
                rules,
                overlap,
            } => {
                imports += 1;
                let rule =
                    |r: u8| Rule::new(Arc::from(format!("imp{node}")), Decimal::new(r.into(), 2));
                let deck: Vec<(String, Rule)> = (0..rules)
                    .map(|r| (format!("33{r}"), rule(r)))
                    .chain((0..overlap).map(|k| (format!("44{k}"), rule(k))))
                    .collect();
                decks.insert(now, (0..overlap).map(|k| (k, rule(k).encode())).collect());
                nodes[node]
                    .replica
                    .catalog
                    .add_revision(CARD, deck, Some(now), "import:csv", now)
                    .unwrap();
            }
            Op::Rebase { node } => {
                nodes[node].replica.catalog.rebase_card(CARD).unwrap();
            }
            Op::Cut { node } => nodes[node].cut = true,
            Op::Heal { node } => {
                // A reconnect: the node's links start over with fresh sync states.
                nodes[node].cut = false;
                for other in (0..NODES).filter(|o| *o != node) {
                    links[node][other] = Some(Side::new(&nodes[node], other, node < other));
                    links[other][node] = Some(Side::new(&nodes[other], node, other < node));
                }
            }
        }
    }
    for n in &mut nodes {
        n.cut = false;
    }
    // Enough rounds for a renumbered revision, and an edit carried onto a revision that just
    // arrived, to reach everyone.
    let heads = |nodes: &[Node]| -> Vec<_> {
        nodes
            .iter()
            .map(|n| {
                let docs = n.replica.catalog.docs();
                let mut ids = n.replica.catalog.live_docs();
                ids.sort();
                ids.iter().map(|id| docs.heads(id)).collect::<Vec<_>>()
            })
            .collect()
    };
    let mut rounds = 0;
    loop {
        let before = heads(&nodes);
        for (a, b) in [(0, 1), (1, 2), (0, 2)] {
            sync_pair(&mut links, a, b);
        }
        rounds += 1;
        let after = heads(&nodes);
        if rounds >= 4 && after == before && after.iter().all(|h| *h == after[0]) {
            break;
        }
        assert!(rounds < 12, "sync rounds did not settle");
    }
    // Each side knows the other holds everything: the lag figure settles at 0.
    for (i, row) in links.iter().enumerate() {
        for (j, link) in row.iter().enumerate() {
            if let Some(link) = link {
                assert_eq!(link.sync.lag(), 0, "n{i}'s lag to n{j}");
            }
        }
    }
    let first = state(&nodes[0]);
    for n in &nodes[1..] {
        assert_eq!(state(n), first);
    }
    assert_eq!(first.2, calls);
    check_edits_visible(&nodes[0], now, &edits, &decks);
    for n in &nodes {
        let view = n.replica.catalog.view();
        let revisions = view.cards[CARD].revisions.len();
        assert_eq!(
            revisions,
            1 + imports,
            "every import is kept, none lost to a concurrent one"
        );
    }
}

/// The live revision `L` (the same everywhere by now) holds, for each edited prefix: its deck's
/// rule if no acknowledged edit of it was made after `L` was imported (older edits were
/// superseded by the import); else a rule some edit wrote (concurrent edits resolve to one of
/// them) or none, and a rule whenever all those later edits were sets: no acknowledged edit
/// vanishes behind a revision it never reached.
fn check_edits_visible(
    node: &Node,
    now: i64,
    edits: &[Edit],
    decks: &HashMap<i64, HashMap<u8, String>>,
) {
    let view = node.replica.catalog.view();
    let live = view.cards[CARD].live_at(now).unwrap();
    let created = live.meta.created;
    let index = live.index.read();
    for prefix in 0..PREFIXES {
        let actual = index.get(&format!("44{prefix}")).map(|r| r.encode());
        let later: Vec<&Edit> = edits
            .iter()
            .filter(|e| e.prefix == prefix && e.time >= created)
            .collect();
        let what = format!(
            "44{prefix} in revision {} (created {created}): {actual:?}",
            live.meta.rev
        );
        if later.is_empty() {
            assert_eq!(actual.as_ref(), decks[&created].get(&prefix), "{what}");
            continue;
        }
        if let Some(actual) = &actual {
            assert!(
                edits
                    .iter()
                    .any(|e| e.prefix == prefix && e.rule.as_ref() == Some(actual)),
                "{what}: no edit wrote it"
            );
        }
        if later.iter().all(|e| e.rule.is_some()) {
            assert!(actual.is_some(), "{what}: an acknowledged edit vanished");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_edit_sync_partition_schedules_converge(ops in prop::collection::vec(op(), 1..60)) {
        check(ops);
    }
}

/// Found by the property test: a delete on one node racing a put of the same rule on another,
/// arriving at a third node in one batch with the put, once left the deleted value in that
/// node's index (the batch's patch carried the old value).
#[test]
fn a_delete_racing_a_concurrent_put_leaves_the_put_everywhere() {
    check(vec![
        Op::Set {
            node: 0,
            prefix: 4,
            rate: 406,
        },
        Op::Set {
            node: 0,
            prefix: 4,
            rate: 87,
        },
        Op::Set {
            node: 1,
            prefix: 4,
            rate: 709,
        },
        Op::Sync { a: 0, b: 2 },
        Op::Delete { node: 0, prefix: 4 },
    ]);
}

/// Two regions import into the same card at the same time: both imports got revision 2 where
/// they were taken; once synced, one keeps 2 and the other is renumbered 3, everywhere.
#[test]
fn concurrent_imports_into_one_card_are_both_kept() {
    check(vec![
        Op::Import {
            node: 0,
            rules: 5,
            overlap: 0,
        },
        Op::Import {
            node: 1,
            rules: 7,
            overlap: 2,
        },
        Op::Import {
            node: 2,
            rules: 3,
            overlap: 0,
        },
    ]);
}

/// Found by the property test: node 1 edits revision 2 (node 0's import) while node 2's
/// concurrent import, also numbered 2, is on its way; node 2's wins the number, so node 0's is
/// out of node 1's view until node 0 renumbers it 3. The edit still reaches node 2's import,
/// which is the newer one and live. (The repeated same rule is an edit too.)
#[test]
fn an_edit_of_a_revision_that_loses_its_number_is_carried() {
    check(vec![
        Op::Set {
            node: 0,
            prefix: 0,
            rate: 1,
        },
        Op::Set {
            node: 0,
            prefix: 0,
            rate: 1,
        },
        Op::Import {
            node: 0,
            rules: 1,
            overlap: 0,
        },
        Op::Set {
            node: 0,
            prefix: 0,
            rate: 1,
        },
        Op::Sync { a: 0, b: 1 },
        Op::Import {
            node: 2,
            rules: 1,
            overlap: 0,
        },
        Op::Set {
            node: 1,
            prefix: 0,
            rate: 1,
        },
    ]);
}

/// The production report: B imports (revision 2, live at once); before that reaches A, A edits
/// 443 and deletes 447 in revision 1, still live there. Once synced, revision 2 answers 443
/// with A's rule and has no 447 (which its deck had) on every node; revision 1 keeps its own
/// state.
#[test]
fn an_edit_racing_an_import_reaches_the_import() {
    let ops = vec![
        Op::Set {
            node: 0,
            prefix: 7,
            rate: 100,
        },
        Op::Sync { a: 0, b: 1 },
        Op::Import {
            node: 1,
            rules: 5,
            overlap: 8,
        },
        Op::Set {
            node: 0,
            prefix: 3,
            rate: 555,
        },
        Op::Delete { node: 0, prefix: 7 },
    ];
    check(ops.clone());
    // The same, looked at rule by rule.
    let nodes: Vec<Node> = (0..NODES).map(node).collect();
    nodes[0]
        .replica
        .catalog
        .create_card(CardMeta::new(CARD.into(), "acc".into(), "card".into(), 0))
        .unwrap();
    let mut links = links(&nodes);
    sync_pair(&mut links, 0, 1);
    sync_pair(&mut links, 0, 2);
    let a = &nodes[0].replica.catalog;
    let b = &nodes[1].replica.catalog;
    let target = |rev, prefix| RuleTarget {
        card: CARD,
        rev,
        prefix,
    };
    let rule = |node: &str, rate| Rule::new(Arc::from(node), Decimal::new(rate, 3));
    a.set_rule::<CatalogError>(target(1, "447"), 1, |_| Ok(rule("n0", 100)))
        .unwrap();
    sync_pair(&mut links, 0, 1);
    let deck = vec![
        ("447".into(), rule("imp1", 7)),
        ("331".into(), rule("imp1", 1)),
    ];
    assert_eq!(
        b.add_revision(CARD, deck, Some(3), "import:csv", 3)
            .unwrap()
            .rev,
        2
    );
    a.set_rule::<CatalogError>(target(1, "443"), 4, |_| Ok(rule("n0", 555)))
        .unwrap();
    a.delete_rule(target(1, "447"), 5).unwrap();
    for _ in 0..3 {
        for (x, y) in [(0, 1), (1, 2), (0, 2)] {
            sync_pair(&mut links, x, y);
        }
    }
    let first = state(&nodes[0]);
    for n in &nodes {
        assert_eq!(state(n), first);
        let view = n.replica.catalog.view();
        let card = &view.cards[CARD];
        assert_eq!(card.live_at(10).unwrap().meta.rev, 2);
        let get = |rev: u32, prefix: &str| card.revisions[&rev].index.read().get(prefix).cloned();
        assert_eq!(get(2, "443"), Some(rule("n0", 555)));
        assert_eq!(get(2, "447"), None);
        assert_eq!(get(2, "331"), Some(rule("imp1", 1)));
        assert_eq!(get(1, "443"), Some(rule("n0", 555)));
        assert_eq!(get(1, "447"), None);
        assert_eq!(get(1, "331"), None);
    }
}

/// Found by the property test: generations of one shard made on two sides of a cut form two
/// chains; an edit bundled into the losing chain still reaches an import that raced it.
#[test]
fn an_edit_in_a_losing_chain_of_rebases_reaches_a_racing_import() {
    check(vec![
        Op::Set {
            node: 1,
            prefix: 1,
            rate: 9,
        },
        Op::Import {
            node: 2,
            rules: 15,
            overlap: 0,
        },
        Op::Rebase { node: 2 },
        Op::Sync { a: 1, b: 2 },
        Op::Sync { a: 1, b: 1 },
        Op::Heal { node: 0 },
        Op::Delete { node: 0, prefix: 8 },
        Op::Delete { node: 2, prefix: 7 },
        Op::Set {
            node: 0,
            prefix: 4,
            rate: 147,
        },
        Op::Sync { a: 1, b: 1 },
        Op::Set {
            node: 1,
            prefix: 3,
            rate: 77,
        },
        Op::Rebase { node: 0 },
        Op::Sync { a: 1, b: 0 },
        Op::Sync { a: 0, b: 1 },
        Op::Set {
            node: 0,
            prefix: 5,
            rate: 311,
        },
        Op::Sync { a: 0, b: 1 },
        Op::Rebase { node: 2 },
        Op::Set {
            node: 0,
            prefix: 5,
            rate: 543,
        },
        Op::Heal { node: 0 },
        Op::Sync { a: 0, b: 0 },
        Op::Import {
            node: 1,
            rules: 1,
            overlap: 3,
        },
        Op::Set {
            node: 2,
            prefix: 3,
            rate: 81,
        },
        Op::Set {
            node: 1,
            prefix: 4,
            rate: 546,
        },
        Op::Sync { a: 2, b: 1 },
        Op::Set {
            node: 2,
            prefix: 2,
            rate: 112,
        },
        Op::Rebase { node: 0 },
        Op::Rebase { node: 1 },
        Op::Cut { node: 1 },
        Op::Set {
            node: 1,
            prefix: 1,
            rate: 38,
        },
        Op::Set {
            node: 0,
            prefix: 8,
            rate: 541,
        },
        Op::Set {
            node: 1,
            prefix: 2,
            rate: 904,
        },
        Op::Cut { node: 2 },
        Op::Sync { a: 0, b: 0 },
        Op::Rebase { node: 1 },
        Op::Sync { a: 0, b: 2 },
        Op::Set {
            node: 0,
            prefix: 9,
            rate: 88,
        },
        Op::Rebase { node: 0 },
    ]);
}

/// Found by the property test: a node's edits into a revision that others rebased, and that
/// need no write in the new generation (a delete of a rule it lacks), still reach an import
/// that raced them.
#[test]
fn an_edit_that_needs_no_write_in_a_new_generation_still_reaches_a_racing_import() {
    check(vec![
        Op::Import {
            node: 0,
            rules: 15,
            overlap: 3,
        },
        Op::Sync { a: 0, b: 2 },
        Op::Cut { node: 2 },
        Op::Set {
            node: 0,
            prefix: 1,
            rate: 884,
        },
        Op::Cut { node: 1 },
        Op::Delete { node: 1, prefix: 0 },
        Op::Delete { node: 2, prefix: 5 },
        Op::Delete {
            node: 2,
            prefix: 11,
        },
        Op::Import {
            node: 0,
            rules: 9,
            overlap: 5,
        },
        Op::Set {
            node: 0,
            prefix: 2,
            rate: 971,
        },
        Op::Set {
            node: 0,
            prefix: 11,
            rate: 698,
        },
        Op::Set {
            node: 1,
            prefix: 9,
            rate: 456,
        },
        Op::Delete { node: 1, prefix: 4 },
        Op::Set {
            node: 1,
            prefix: 4,
            rate: 387,
        },
        Op::Set {
            node: 2,
            prefix: 10,
            rate: 244,
        },
        Op::Rebase { node: 0 },
        Op::Sync { a: 2, b: 0 },
        Op::Sync { a: 1, b: 0 },
        Op::Rebase { node: 2 },
        Op::Delete { node: 1, prefix: 4 },
    ]);
}
