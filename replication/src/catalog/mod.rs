//! The catalog: accounts, cards, revisions and rules as Automerge documents, and the in-memory
//! view every request reads.
//!
//! Documents (all versioned by a root `v`):
//! - `accounts`: `accounts` map, account id → account JSON.
//! - `cards`: `cards` map, card id → owning account id (the registry; a deleted card leaves it).
//! - `card-<id>`: `meta` (card JSON), `revisions` map (revision number → revision JSON), and
//!   one `gen:<revision key>:<shard>:<generation key>` entry per rebased shard document
//!   (see the `rebase` module).
//! - `rules-<card>-<rev>-<shard>`: bucket maps `b0…bN`, prefix → the rule's compact encoding
//!   ([`Rule::encode`]). A prefix's shard and bucket come from a stable hash, so a revision of a
//!   million rules is ten documents of about a thousand buckets of a thousand rules, and an
//!   import commits one bucket (≤ ~1000 operations) per change. A shard whose history outgrew
//!   its rules is rebased into `rules-<card>-<rev>_<generation>-<shard>`, written afresh.
//!
//! One rule is one scalar, so concurrent edits of the same rule resolve to one whole rule (the
//! same on every node), never a mix of fields from two edits.
//!
//! The view is an immutable snapshot swapped atomically after every durable write; a revision's
//! prefix index sits behind its own lock so `rule/set` edits it in place.
//!
//! [`Rule::encode`]: edgerate_model::rule::Rule::encode

mod carry;
mod doc_id;
mod load;
mod rebase;
mod remote;
mod view;
mod writes;

pub use view::{CardView, Dataset, DatasetMeta, RevisionView, View};

use crate::docstore::{DocStore, StoreError};
use arc_swap::ArcSwap;
use automerge::{
    transaction::{CommitOptions, Transactable},
    AutoCommit, ObjType, ReadDoc, ScalarValueRef, ValueRef, ROOT,
};
use doc_id::{DocId, ACCOUNTS_DOC, CARDS_DOC, DATASETS_DOC};
use edgerate_model::card::RevisionMeta;
use load::load_view;
use parking_lot::Mutex;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

const SCHEMA_VERSION: u64 = 1;

/// Why a catalog operation failed.
#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<automerge::AutomergeError> for CatalogError {
    fn from(e: automerge::AutomergeError) -> Self {
        Self::Store(StoreError::Automerge(e))
    }
}

/// The durable catalog and its view. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    docs: DocStore,
    view: ArcSwap<View>,
    /// Serialises writers so each view update starts from the latest view.
    write: Mutex<()>,
    /// Heads of each shard document when its history was last weighed for a rebase.
    checked: Mutex<std::collections::HashMap<String, Vec<automerge::ChangeHash>>>,
    /// Documents being written that no entry names yet ([`writes::Staging`]).
    staging: Mutex<std::collections::HashSet<String>>,
}

/// What a rule edit names.
#[derive(Debug, Clone, Copy)]
pub struct RuleTarget<'a> {
    pub card: &'a str,
    pub rev: u32,
    pub prefix: &'a str,
}

impl Catalog {
    /// Opens the catalog stored in `dir`, creating its documents on first start, and builds the
    /// view from them.
    /// Unreadable files go to `dir/quarantine`.
    pub fn open(dir: &Path, actor: automerge::ActorId) -> Result<Self, CatalogError> {
        Self::open_in(dir, &dir.join("quarantine"), actor)
    }

    /// [`Catalog::open`], with unreadable files moved to `quarantine` (the node's is the data
    /// dir's `quarantine/`).
    pub fn open_in(
        dir: &Path,
        quarantine: &Path,
        actor: automerge::ActorId,
    ) -> Result<Self, CatalogError> {
        let docs = DocStore::open(dir, quarantine, actor)?;
        for (id, map) in [
            (ACCOUNTS_DOC, "accounts"),
            (CARDS_DOC, "cards"),
            (DATASETS_DOC, "datasets"),
        ] {
            if docs.get(id).is_none() {
                docs.create::<_, CatalogError>(id, |d| {
                    // The same first change, byte for byte, on every node: one root map that
                    // every node's entries merge into, not one per node competing for the key.
                    let actor = d.get_actor().clone();
                    d.set_actor(automerge::ActorId::from(&[0u8; 16][..]));
                    d.put(ROOT, "v", SCHEMA_VERSION)?;
                    d.put_object(ROOT, map, ObjType::Map)?;
                    d.commit_with(CommitOptions::default().with_time(0));
                    d.set_actor(actor);
                    Ok(())
                })?;
            }
        }
        let view = load_view(&docs)?;
        let catalog = Self {
            inner: Arc::new(Inner {
                docs,
                view: ArcSwap::from_pointee(view),
                write: Mutex::new(()),
                checked: Mutex::default(),
                staging: Mutex::default(),
            }),
        };
        // Edits a crash kept from being carried (the revision or generation replacing theirs
        // was durable, the carry not yet): carrying is idempotent, so every card is looked at
        // once more.
        {
            let _w = catalog.inner.write.lock();
            let view = catalog.view();
            for card in view.cards.values() {
                if card.revisions.values().any(|r| !r.meta.gens.is_empty()) {
                    catalog.leave_replaced(&card.meta.id);
                }
                if card.revisions.len() > 1 {
                    catalog.carry_edits(&card.meta.id);
                }
            }
            load::remove_unnamed(&catalog.inner.docs);
        }
        Ok(catalog)
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.inner.view.load_full()
    }

    /// The document store (for compaction and, later, sync).
    /// Every document as saved bytes, taken while no local write is in progress, so no write
    /// of several documents is caught half done (a backup); documents an import is still
    /// writing, which no entry names yet, are left out.
    pub fn save_all(&self) -> Vec<(String, Vec<u8>)> {
        let _writing = self.inner.write.lock();
        let staging = self.inner.staging.lock();
        let mut saved = self.inner.docs.save_all();
        saved.retain(|(id, _)| !staging.contains(id));
        saved
    }

    pub fn docs(&self) -> &DocStore {
        &self.inner.docs
    }

    /// A fingerprint of the rules of revision `rev` of card `card` as they are now (a checksum
    /// of its shard documents' heads): the same on every node holding the same edits, and
    /// changed by every edit, so a build can tell whether a provider changed since.
    pub fn revision_version(&self, card: &str, rev: &RevisionMeta) -> String {
        let mut heads: Vec<automerge::ChangeHash> = (0..rev.shards)
            .filter_map(|s| {
                self.inner
                    .docs
                    .heads(&DocId::rules(card, rev, s).to_string())
            })
            .flatten()
            .collect();
        heads.sort_unstable();
        let mut crc = crc32fast::Hasher::new();
        for head in &heads {
            crc.update(&head.0);
        }
        format!("{:08x}{:x}", crc.finalize(), heads.len())
    }

    /// Every document the view is built from: what a peer must hold to serve the same answers.
    pub fn live_docs(&self) -> Vec<String> {
        let view = self.view();
        let mut ids: Vec<String> = [ACCOUNTS_DOC, CARDS_DOC, DATASETS_DOC]
            .map(str::to_owned)
            .into();
        for card in view.cards.values() {
            ids.push(DocId::card(&card.meta.id).to_string());
            for rev in card.revisions.values() {
                ids.extend(
                    (0..rev.meta.shards)
                        .map(|s| DocId::rules(&card.meta.id, &rev.meta, s).to_string()),
                );
            }
        }
        for (kind, dataset) in &view.datasets {
            ids.extend(
                (0..dataset.meta.shards)
                    .map(|s| DocId::dataset(*kind, &dataset.meta, s).to_string()),
            );
        }
        ids
    }

    /// Every rules document held of card `card`, of any revision or generation (whether the
    /// view shows it or not).
    fn rule_docs(&self, card: &str) -> Vec<String> {
        self.inner
            .docs
            .ids()
            .into_iter()
            .filter(
                |id| matches!(DocId::parse(id), Some(DocId::Rules { card: c, .. }) if c == card),
            )
            .collect()
    }

    /// The card `id`, or `NotFound`.
    fn card(&self, id: &str) -> Result<Arc<CardView>, CatalogError> {
        self.view()
            .cards
            .get(id)
            .cloned()
            .ok_or_else(|| CatalogError::NotFound(format!("card '{id}'")))
    }

    fn update_view(&self, f: impl FnOnce(&mut View)) {
        let mut next = View::clone(&self.inner.view.load());
        f(&mut next);
        self.inner.view.store(Arc::new(next));
    }
}

/// Names a revision for as long as it exists: its documents' key, which a renumbering keeps.
fn rev_key(rev: &RevisionMeta) -> String {
    if rev.docs.is_empty() {
        format!("r{}", rev.rev)
    } else {
        rev.docs.clone()
    }
}

/// Whether revision `a` is newer than `b`: created later (by number when at the same second).
/// Not by number alone: a revision renumbered after a concurrent import may be the older one.
fn newer(a: &RevisionMeta, b: &RevisionMeta) -> bool {
    (a.created, a.rev) > (b.created, b.rev)
}

/// A fresh name for a set of shard documents.
fn docs_key() -> String {
    format!("{:08x}", rand::random::<u32>())
}

pub(crate) fn map_id(
    d: &AutoCommit,
    obj: automerge::ObjId,
    key: &str,
) -> Result<automerge::ObjId, CatalogError> {
    match d.get(&obj, key)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Err(StoreError::Corrupt {
            id: "document".into(),
            reason: format!("'{key}' is not a map"),
        }
        .into()),
    }
}

fn put_json<T: Serialize>(
    d: &mut AutoCommit,
    obj: &automerge::ObjId,
    key: &str,
    value: &T,
) -> Result<(), CatalogError> {
    let text = serde_json::to_string(value).expect("catalog types serialise");
    d.put(obj, key, text)?;
    Ok(())
}

fn str_of<'a>(value: &'a ValueRef<'a>) -> Option<&'a str> {
    match value {
        ValueRef::Scalar(ScalarValueRef::Str(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucketed;
    use edgerate_model::card::CardMeta;
    use edgerate_model::rule::Rule;
    use rust_decimal::Decimal;
    use std::collections::HashMap;

    pub(super) fn actor() -> automerge::ActorId {
        automerge::ActorId::from(&[1u8; 16][..])
    }

    pub(super) fn card_meta(id: &str) -> CardMeta {
        CardMeta::new(id.into(), "acc".into(), format!("name-{id}"), 100)
    }

    pub(super) fn rule(rate: i64) -> Rule {
        Rule::new(Arc::from("x"), Decimal::new(rate, 4))
    }

    pub(super) fn rate_of(catalog: &Catalog, card: &str, number: &str, at: i64) -> Option<Decimal> {
        let view = catalog.view();
        let card = view.cards.get(card)?;
        let rev = card.live_at(at)?;
        let index = rev.index.read();
        index.longest_match(number).map(|m| m.rate)
    }

    /// While an import's documents are written (no lock held), another card takes an edit,
    /// in at once, and so does the importing card's live revision: that edit is carried onto
    /// the new revision when it is entered, over the deck's rule for the prefix.
    #[test]
    fn edits_go_on_while_an_import_is_staged_and_are_carried_onto_it() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        catalog.create_card(card_meta("c1")).unwrap();
        catalog.create_card(card_meta("c2")).unwrap();
        let deck: Vec<(String, Rule)> = (0..1000).map(|i| (format!("44{i}"), rule(i))).collect();
        let staged = catalog
            .stage_revision("c1", deck, Some(150), "import:csv", 150)
            .unwrap();
        let edit = |card, prefix, rate| {
            let target = RuleTarget {
                card,
                rev: 1,
                prefix,
            };
            catalog
                .set_rule::<CatalogError>(target, 160, |_| Ok(rule(rate)))
                .unwrap();
        };
        edit("c2", "33", 3);
        edit("c1", "4499", 9);
        assert_eq!(rate_of(&catalog, "c2", "331", 160), Some(rule(3).rate));
        assert_eq!(
            rate_of(&catalog, "c1", "4412", 160),
            None,
            "not entered yet"
        );
        let saved = |catalog: &Catalog| -> usize {
            let ids: Vec<String> = catalog.save_all().into_iter().map(|(id, _)| id).collect();
            ids.iter().filter(|id| id.starts_with("rules-c1-")).count()
        };
        assert_eq!(
            saved(&catalog),
            1,
            "a backup leaves the staged documents out"
        );
        let meta = catalog.enter_revision(staged).unwrap();
        assert_eq!(meta.rev, 2);
        assert_eq!(saved(&catalog), 1 + meta.shards as usize);
        drop(catalog);
        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        assert_eq!(rev_rule(&catalog, "c1", 2, "4499"), Some(rule(9)));
        assert_eq!(rev_rule(&catalog, "c1", 2, "4412"), Some(rule(12)));
        assert_eq!(rate_of(&catalog, "c1", "4499", 160), Some(rule(9).rate));
    }

    #[test]
    fn a_revision_staged_and_never_entered_is_removed_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        catalog.create_card(card_meta("c1")).unwrap();
        let deck: Vec<(String, Rule)> = (0..1000).map(|i| (format!("44{i}"), rule(i))).collect();
        let rules_docs = |catalog: &Catalog| -> Vec<String> {
            let mut ids = catalog.docs().ids();
            ids.retain(|id| id.starts_with("rules-c1-"));
            ids.sort();
            ids
        };
        let before = rules_docs(&catalog);
        // A crash between the documents and the entry.
        let staged = catalog
            .stage_revision("c1", deck, Some(150), "import:csv", 150)
            .unwrap();
        std::mem::forget(staged);
        assert!(rules_docs(&catalog).len() > before.len());
        drop(catalog);
        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        assert_eq!(rules_docs(&catalog), before);
        assert!(rev_rule(&catalog, "c1", 1, "4412").is_none());
        assert_eq!(catalog.view().cards["c1"].revisions.len(), 1);
    }

    #[test]
    fn a_revision_staged_for_a_card_deleted_meanwhile_leaves_no_document() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        catalog.create_card(card_meta("c1")).unwrap();
        let deck: Vec<(String, Rule)> = (0..1000).map(|i| (format!("44{i}"), rule(i))).collect();
        let staged = catalog
            .stage_revision("c1", deck, Some(150), "import:csv", 150)
            .unwrap();
        catalog.delete_card("c1").unwrap();
        assert!(matches!(
            catalog.enter_revision(staged),
            Err(CatalogError::NotFound(_))
        ));
        let left: Vec<String> = catalog
            .docs()
            .ids()
            .into_iter()
            .filter(|id| id.contains("c1"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        catalog.create_card(card_meta("c1")).unwrap();
        let deck: Vec<(String, Rule)> = (0..5000).map(|i| (format!("44{i}"), rule(i))).collect();
        let rev = catalog
            .add_revision("c1", deck, Some(200), "import:csv", 150)
            .unwrap();
        assert_eq!(rev.rev, 2);
        let target = RuleTarget {
            card: "c1",
            rev: 2,
            prefix: "4499999",
        };
        catalog
            .set_rule::<CatalogError>(target, 160, |_| Ok(rule(7)))
            .unwrap();
        catalog
            .delete_rule(
                RuleTarget {
                    card: "c1",
                    rev: 2,
                    prefix: "440",
                },
                170,
            )
            .unwrap();
        assert_eq!(
            rate_of(&catalog, "c1", "4412", 150),
            None,
            "revision 2 is not live yet"
        );
        assert_eq!(
            rate_of(&catalog, "c1", "4412", 200),
            Some(Decimal::new(12, 4))
        );
        drop(catalog);

        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        assert_eq!(
            rate_of(&catalog, "c1", "4412", 300),
            Some(Decimal::new(12, 4))
        );
        assert_eq!(
            rate_of(&catalog, "c1", "44999991", 300),
            Some(Decimal::new(7, 4))
        );
        assert_eq!(rate_of(&catalog, "c1", "440", 300), None);
        let view = catalog.view();
        assert_eq!(view.cards["c1"].revisions[&2].index.read().len(), 5000);
        assert!(
            view.cards["c1"].updated() >= 170,
            "a rule edit shows in the card's time without a write to its document"
        );
        assert!(view.card("acc", "name-c1").is_some());
        assert!(view.card("other", "c1").is_none());
    }

    #[test]
    fn datasets_replace_atomically_and_survive_a_reopen() {
        use edgerate_model::dataset::{parse_csv, DatasetKind};
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        let first = parse_csv(DatasetKind::Hlr, b"prefix,mcc\n447,234\n44,235\n").unwrap();
        catalog.import_dataset(DatasetKind::Hlr, first, 10).unwrap();
        let second = parse_csv(DatasetKind::Hlr, b"prefix,mnc\n4479,15\n").unwrap();
        assert_eq!(
            catalog
                .import_dataset(DatasetKind::Hlr, second, 20)
                .unwrap()
                .generation,
            2
        );
        assert!(
            !catalog.docs().ids().iter().any(|id| matches!(
                DocId::parse(id),
                Some(DocId::Dataset {
                    kind: DatasetKind::Hlr,
                    generation: 1,
                    ..
                })
            )),
            "the old generation is removed"
        );
        drop(catalog);
        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        let view = catalog.view();
        let hlr = &view.datasets[&DatasetKind::Hlr];
        assert_eq!(hlr.meta.fields, ["mnc"]);
        assert_eq!(
            hlr.lookup("447912")
                .map(|(k, v)| (k.to_owned(), v[0].to_string())),
            Some(("4479".into(), "15".into()))
        );
        assert!(hlr.lookup("4471").is_none());
    }

    #[test]
    fn deleting_a_card_removes_it_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        catalog.create_card(card_meta("c1")).unwrap();
        catalog.delete_card("c1").unwrap();
        assert!(matches!(
            catalog.delete_card("c1"),
            Err(CatalogError::NotFound(_))
        ));
        drop(catalog);
        let catalog = Catalog::open(dir.path(), actor()).unwrap();
        assert!(catalog.view().cards.is_empty());
    }

    /// Syncs every live document of either side to the other until neither has more to say.
    pub(super) fn sync(a: &Catalog, b: &Catalog) {
        sync_ordered(a, b, false)
    }

    /// [`sync`], documents in order of id (a card's before its rules) or, with `rules_first`,
    /// the reverse.
    pub(super) fn sync_ordered(a: &Catalog, b: &Catalog, rules_first: bool) {
        let mut states: HashMap<(bool, String), automerge::sync::State> = HashMap::new();
        for _ in 0..20 {
            let mut quiet = true;
            let mut ids = a.live_docs();
            ids.extend(b.live_docs());
            ids.sort();
            ids.dedup();
            if rules_first {
                ids.reverse();
            }
            for id in ids {
                for (from, to, side) in [(a, b, true), (b, a, false)] {
                    let message = from
                        .docs()
                        .generate_sync(&id, states.entry((side, id.clone())).or_default());
                    if let Some(message) = message {
                        quiet = false;
                        let message = automerge::sync::Message::decode(&message.encode()).unwrap();
                        to.receive(&id, states.entry((!side, id.clone())).or_default(), message)
                            .unwrap();
                    }
                }
            }
            if quiet {
                return;
            }
        }
        panic!("sync did not settle");
    }

    pub(super) fn rev_rule(catalog: &Catalog, card: &str, rev: u32, prefix: &str) -> Option<Rule> {
        let view = catalog.view();
        let index = view.cards.get(card)?.revisions.get(&rev)?.index.read();
        index.get(prefix).cloned()
    }

    pub(super) fn target(rev: u32, prefix: &str) -> RuleTarget<'_> {
        RuleTarget {
            card: "c1",
            rev,
            prefix,
        }
    }

    /// Two nodes sharing card c1 (revision 1 live, holding 446, 447 and 448), and B's import
    /// of revision 2 at 300 (holding 447), not yet sent to A.
    pub(super) fn racing_import(a_dir: &Path, b_dir: &Path) -> (Catalog, Catalog) {
        let a = Catalog::open(a_dir, actor()).unwrap();
        let b = Catalog::open(b_dir, automerge::ActorId::from(&[2u8; 16][..])).unwrap();
        a.create_card(card_meta("c1")).unwrap();
        for prefix in ["446", "447", "448"] {
            a.set_rule::<CatalogError>(target(1, prefix), 200, |_| Ok(rule(1)))
                .unwrap();
        }
        sync(&a, &b);
        let deck = vec![("447".to_owned(), rule(2)), ("33".to_owned(), rule(3))];
        let rev = b
            .add_revision("c1", deck, Some(300), "import:csv", 300)
            .unwrap();
        assert_eq!(rev.rev, 2);
        (a, b)
    }

    /// The production report: an edit taken into the live revision while a newer revision
    /// made elsewhere was on its way ends up in the newer one too, once, everywhere.
    #[test]
    fn an_edit_racing_an_import_is_carried_onto_the_new_revision() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = racing_import(a_dir.path(), b_dir.path());
        // A, not knowing revision 2: sets 449, deletes 447 and 448 in revision 1, after 300.
        a.set_rule::<CatalogError>(target(1, "449"), 310, |_| Ok(rule(9)))
            .unwrap();
        a.delete_rule(target(1, "447"), 311).unwrap();
        a.delete_rule(target(1, "448"), 312).unwrap();
        // The same rule again: it changes nothing in revision 1, but it is an edit all the same.
        a.set_rule::<CatalogError>(target(1, "446"), 313, |_| Ok(rule(1)))
            .unwrap();
        sync(&a, &b);
        sync(&a, &b);
        for node in [&a, &b] {
            assert_eq!(rev_rule(node, "c1", 2, "449"), Some(rule(9)));
            assert_eq!(
                rev_rule(node, "c1", 2, "447"),
                None,
                "the delete is carried"
            );
            assert_eq!(rev_rule(node, "c1", 2, "448"), None);
            assert_eq!(rev_rule(node, "c1", 2, "446"), Some(rule(1)));
            assert_eq!(rev_rule(node, "c1", 2, "33"), Some(rule(3)));
            assert_eq!(rate_of(node, "c1", "4491", 400), Some(Decimal::new(9, 4)));
            assert_eq!(rev_rule(node, "c1", 1, "449"), Some(rule(9)));
            assert_eq!(rev_rule(node, "c1", 1, "447"), None);
        }
        let shard = |c: &Catalog| {
            let rev = &c.view().cards["c1"].revisions[&2];
            c.docs()
                .heads(&DocId::rules("c1", &rev.meta, 0).to_string())
        };
        assert_eq!(shard(&a), shard(&b));
        // Carried once: a restart of either finds nothing more to carry.
        let heads = shard(&a);
        drop((a, b));
        let a = Catalog::open(a_dir.path(), actor()).unwrap();
        assert_eq!(shard(&a), heads);
        assert_eq!(rev_rule(&a, "c1", 2, "449"), Some(rule(9)));
    }

    #[test]
    fn edits_made_knowing_the_new_revision_or_before_it_are_not_carried() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = racing_import(a_dir.path(), b_dir.path());
        // Before the import's time: the import supersedes it.
        a.set_rule::<CatalogError>(target(1, "440"), 250, |_| Ok(rule(4)))
            .unwrap();
        sync(&a, &b);
        assert_eq!(rev_rule(&b, "c1", 2, "440"), None);
        // Revision 1 named explicitly once revision 2 is live: an edit of an archived revision.
        a.set_rule::<CatalogError>(target(1, "441"), 320, |_| Ok(rule(4)))
            .unwrap();
        // A scheduled revision 3 this node holds, then an edit of live revision 2 before 3 goes
        // live: the edit was made knowing 3, so it stays in revision 2.
        let rev = a
            .add_revision(
                "c1",
                vec![("55".into(), rule(5))],
                Some(900),
                "import:csv",
                330,
            )
            .unwrap();
        a.set_rule::<CatalogError>(target(2, "442"), 340, |_| Ok(rule(4)))
            .unwrap();
        sync(&a, &b);
        sync(&a, &b);
        for node in [&a, &b] {
            assert_eq!(rev_rule(node, "c1", 2, "441"), None);
            assert_eq!(rev_rule(node, "c1", 2, "442"), Some(rule(4)));
            assert_eq!(rev_rule(node, "c1", rev.rev, "442"), None);
            assert_eq!(rev_rule(node, "c1", rev.rev, "440"), None);
        }
    }

    /// A's edit is durable before it restarts; revision 2 arrives after: still carried.
    #[test]
    fn an_edit_is_carried_after_a_restart_before_the_new_revision_arrives() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = racing_import(a_dir.path(), b_dir.path());
        a.set_rule::<CatalogError>(target(1, "449"), 310, |_| Ok(rule(9)))
            .unwrap();
        drop(a);
        let a = Catalog::open(a_dir.path(), actor()).unwrap();
        // Its rules first: revision 2 is complete when its card's document arrives.
        sync_ordered(&a, &b, true);
        sync(&a, &b);
        for node in [&a, &b] {
            assert_eq!(rev_rule(node, "c1", 2, "449"), Some(rule(9)));
        }
    }

    /// A crash after revision 2 was durable here but before the carry was written: the next
    /// start carries it.
    #[test]
    fn a_carry_a_crash_interrupted_is_made_at_the_next_start() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = racing_import(a_dir.path(), b_dir.path());
        a.set_rule::<CatalogError>(target(1, "449"), 310, |_| Ok(rule(9)))
            .unwrap();
        let rev2 = b.view().cards["c1"].revisions[&2].meta.clone();
        drop((a, b));
        // What receiving revision 2 left on A's disk: B's card document (a superset of A's,
        // which has not changed since they synced) and revision 2's shard document.
        for id in [
            DocId::card("c1").to_string(),
            DocId::rules("c1", &rev2, 0).to_string(),
        ] {
            for ext in ["snap", "log"] {
                let from = b_dir.path().join(format!("{id}.{ext}"));
                if from.exists() {
                    std::fs::copy(&from, a_dir.path().join(format!("{id}.{ext}"))).unwrap();
                } else {
                    let _ = std::fs::remove_file(a_dir.path().join(format!("{id}.{ext}")));
                }
            }
        }
        let a = Catalog::open(a_dir.path(), actor()).unwrap();
        assert_eq!(rev_rule(&a, "c1", 2, "449"), Some(rule(9)));
        assert_eq!(rev_rule(&a, "c1", 2, "447"), Some(rule(2)));
    }

    #[test]
    fn locate_spreads_prefixes() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            seen.insert(bucketed::locate(&format!("44{i}"), 4, 16));
        }
        assert_eq!(seen.len(), 64);
    }
}
