//! The catalog: accounts, cards, revisions and rules as Automerge documents, and the in-memory
//! view every request reads.
//!
//! Documents (all versioned by a root `v`):
//! - `accounts`: `accounts` map, account id → account JSON.
//! - `cards`: `cards` map, card id → owning account id (the registry; a deleted card leaves it).
//! - `card-<id>`: `meta` (card JSON), `revisions` map (revision number → revision JSON).
//! - `rules-<card>-<rev>-<shard>`: bucket maps `b0…bN`, prefix → the rule's compact encoding
//!   ([`Rule::encode`]). A prefix's shard and bucket come from a stable hash, so a revision of a
//!   million rules is ten documents of about a thousand buckets of a thousand rules, and an
//!   import commits one bucket (≤ ~1000 operations) per change.
//!
//! One rule is one scalar, so concurrent edits of the same rule resolve to one whole rule (the
//! same on every node), never a mix of fields from two edits.
//!
//! The view is an immutable snapshot swapped atomically after every durable write; a revision's
//! prefix index sits behind its own lock so `rule/set` edits it in place.

use crate::bucketed;
use crate::docstore::{DocStore, StoreError};
use arc_swap::ArcSwap;
use automerge::{
    transaction::{CommitOptions, Transactable},
    AutoCommit, ObjType, ReadDoc, ScalarValueRef, ValueRef, ROOT,
};
use edgerate_model::account::Account;
use edgerate_model::card::{live_revision, CardMeta, RevisionMeta};
use edgerate_model::dataset::{DatasetKind, DatasetRows};
use edgerate_model::index::PrefixIndex;
use edgerate_model::rule::Rule;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use thiserror::Error;

const SCHEMA_VERSION: u64 = 1;
const ACCOUNTS_DOC: &str = "accounts";
const CARDS_DOC: &str = "cards";
const DATASETS_DOC: &str = "datasets";

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

/// One revision in memory.
#[derive(Debug, Clone)]
pub struct RevisionView {
    pub meta: RevisionMeta,
    pub index: Arc<RwLock<PrefixIndex>>,
    /// Unix seconds of the latest rule edit this node knows of (its own, or a peer's as it
    /// arrived; on load, the newest head change of the shard documents). Not replicated
    /// state, so a rule edit writes nothing but the rule.
    pub edited: Arc<AtomicI64>,
}

impl RevisionView {
    fn new(meta: RevisionMeta, index: PrefixIndex, edited: i64) -> Self {
        Self {
            meta,
            index: Arc::new(RwLock::new(index)),
            edited: Arc::new(AtomicI64::new(edited)),
        }
    }
}

/// One card in memory.
#[derive(Debug, Clone)]
pub struct CardView {
    pub meta: CardMeta,
    pub revisions: BTreeMap<u32, RevisionView>,
}

impl CardView {
    /// When the card last changed: its settings, a revision, or a rule edit.
    pub fn updated(&self) -> i64 {
        self.revisions
            .values()
            .map(|r| r.edited.load(Ordering::Relaxed))
            .fold(self.meta.updated, i64::max)
    }

    /// The revision live at `at`.
    pub fn live_at(&self, at: i64) -> Option<&RevisionView> {
        let rev = live_revision(self.revisions.values().map(|r| &r.meta), at)?;
        self.revisions.get(&rev)
    }
}

/// Everything a request reads, as of one instant.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub accounts: HashMap<String, Arc<Account>>,
    pub cards: HashMap<String, Arc<CardView>>,
    /// (account, card name) → card id.
    names: HashMap<(String, String), String>,
    /// API key hash → account id.
    key_hashes: HashMap<String, String>,
    /// Operator datasets by kind.
    pub datasets: HashMap<DatasetKind, Arc<Dataset>>,
}

/// A dataset's bookkeeping, as stored in the `datasets` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DatasetMeta {
    pub name: String,
    /// Bumped by every import; names the shard documents.
    pub generation: u32,
    pub shards: u32,
    pub buckets: u32,
    /// The fields of every record, in order.
    pub fields: Vec<String>,
    pub rows: usize,
    /// Unix seconds.
    pub imported: i64,
    /// Names its shard documents: unique per import (see [`RevisionMeta::docs`]).
    #[serde(default)]
    pub docs: String,
}

/// A dataset in memory.
#[derive(Debug)]
pub struct Dataset {
    pub kind: DatasetKind,
    pub meta: DatasetMeta,
    records: HashMap<Box<str>, Box<[Box<str>]>>,
    /// The longest key, so a prefix lookup starts no longer than it.
    longest: usize,
}

impl Dataset {
    fn new(
        kind: DatasetKind,
        meta: DatasetMeta,
        rows: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Self {
        let records: HashMap<Box<str>, Box<[Box<str>]>> = rows
            .into_iter()
            .map(|(k, v)| {
                (
                    k.into_boxed_str(),
                    v.into_iter().map(String::into_boxed_str).collect(),
                )
            })
            .collect();
        let longest = records.keys().map(|k| k.len()).max().unwrap_or(0);
        Self {
            kind,
            meta,
            records,
            longest,
        }
    }

    /// The record for `number`: longest matching prefix for prefix datasets; the exact number
    /// for `tps`; for `lrn` the exact number, else the longest matching key (so an NPA-NXX
    /// table works too). A North American number is also tried without its leading `1`.
    pub fn lookup<'a>(&'a self, number: &str) -> Option<(&'a str, &'a [Box<str>])> {
        let found = |key: &str| self.records.get_key_value(key).map(|(k, v)| (&**k, &**v));
        let longest = |n: &str| {
            (1..=n.len().min(self.longest))
                .rev()
                .find_map(|len| found(&n[..len]))
        };
        let national = number.strip_prefix('1').filter(|n| n.len() == 10);
        match self.kind {
            DatasetKind::Range | DatasetKind::Hlr => longest(number),
            DatasetKind::Tps => found(number).or_else(|| national.and_then(found)),
            DatasetKind::Lrn => found(number)
                .or_else(|| national.and_then(found))
                .or_else(|| longest(number))
                .or_else(|| national.and_then(longest)),
        }
    }
}

impl View {
    /// The account's card named by id or by name; another account's card is not found.
    pub fn card(&self, account: &str, reference: &str) -> Option<&Arc<CardView>> {
        if let Some(card) = self
            .cards
            .get(reference)
            .filter(|c| c.meta.account == account)
        {
            return Some(card);
        }
        let id = self
            .names
            .get(&(account.to_owned(), reference.to_owned()))?;
        self.cards.get(id)
    }

    /// The account's cards, by name.
    pub fn cards_of(&self, account: &str) -> Vec<&Arc<CardView>> {
        let mut cards: Vec<_> = self
            .cards
            .values()
            .filter(|c| c.meta.account == account)
            .collect();
        cards.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        cards
    }

    /// The account whose key hashes to `hash`.
    pub fn account_by_key_hash(&self, hash: &str) -> Option<Arc<Account>> {
        self.accounts.get(self.key_hashes.get(hash)?).cloned()
    }

    fn insert_account(&mut self, account: Account) {
        self.remove_account(&account.id);
        self.key_hashes
            .insert(account.key_hash.clone(), account.id.clone());
        self.accounts.insert(account.id.clone(), Arc::new(account));
    }

    fn remove_account(&mut self, id: &str) {
        if let Some(old) = self.accounts.remove(id) {
            self.key_hashes.remove(&old.key_hash);
        }
    }

    /// Rules loaded across every revision of every card.
    pub fn rules_loaded(&self) -> usize {
        self.cards
            .values()
            .flat_map(|c| c.revisions.values())
            .map(|r| r.index.read().len())
            .sum()
    }

    fn insert_card(&mut self, card: CardView) {
        self.names.insert(
            (card.meta.account.clone(), card.meta.name.clone()),
            card.meta.id.clone(),
        );
        self.cards.insert(card.meta.id.clone(), Arc::new(card));
    }

    fn remove_card(&mut self, id: &str) {
        if let Some(card) = self.cards.remove(id) {
            self.names
                .remove(&(card.meta.account.clone(), card.meta.name.clone()));
        }
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
}

/// One of this node's edits of the revision live at its time, as read back from the history.
struct OwnEdit {
    /// When it was made (its change's time).
    time: i64,
    /// Newer revisions this node held when it made the edit (see [`EditNote`]).
    known: Vec<String>,
    prefix: String,
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
            }),
        };
        // Edits a crash kept from being carried (the revision replacing theirs was durable, the
        // carry not yet): carrying is idempotent, so every card is looked at once more.
        {
            let _w = catalog.inner.write.lock();
            let view = catalog.view();
            for card in view.cards.values().filter(|c| c.revisions.len() > 1) {
                catalog.carry_edits(&card.meta.id);
            }
        }
        Ok(catalog)
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.inner.view.load_full()
    }

    /// The document store (for compaction and, later, sync).
    pub fn docs(&self) -> &DocStore {
        &self.inner.docs
    }

    /// Every document the view is built from: what a peer must hold to serve the same answers.
    pub fn live_docs(&self) -> Vec<String> {
        let view = self.view();
        let mut ids: Vec<String> = [ACCOUNTS_DOC, CARDS_DOC, DATASETS_DOC]
            .map(str::to_owned)
            .into();
        for card in view.cards.values() {
            ids.push(card_doc(&card.meta.id));
            for rev in card.revisions.values() {
                ids.extend((0..rev.meta.shards).map(|s| shard_doc(&card.meta.id, &rev.meta, s)));
            }
        }
        for (kind, dataset) in &view.datasets {
            ids.extend((0..dataset.meta.shards).map(|s| dataset_doc(*kind, &dataset.meta, s)));
        }
        ids
    }

    /// The loaded revision whose rules document `doc_id` is, if any.
    fn revision_of(&self, doc_id: &str) -> Option<RevisionView> {
        let card_id = card_of_rules(doc_id)?;
        let view = self.view();
        let card = view.cards.get(card_id)?;
        card.revisions
            .values()
            .find(|r| (0..r.meta.shards).any(|s| shard_doc(card_id, &r.meta, s) == doc_id))
            .cloned()
    }

    /// Applies a peer's sync message for document `doc_id`, durably, and brings the view up to
    /// date. Rules of a loaded revision are applied to its index one by one (the rules the new
    /// changes touched), never by reloading it. Holds the write lock throughout, so a local
    /// edit of the same rule cannot slip between the document and the index.
    pub fn receive(
        &self,
        doc_id: &str,
        state: &mut automerge::sync::State,
        message: automerge::sync::Message,
    ) -> Result<(), CatalogError> {
        let _w = self.inner.write.lock();
        // Revisions are loaded only under this lock, so this holds until the view is updated.
        let loaded = self.revision_of(doc_id);
        let touched = self
            .inner
            .docs
            .receive_sync(doc_id, state, message, loaded.is_some())?;
        match loaded {
            Some(rev) => apply_touched(&self.inner.docs, doc_id, &rev, &touched),
            None => self.apply_remote(doc_id),
        }
    }

    /// Brings the view up to date after a peer's change to document `doc_id` (any but the
    /// rules of a loaded revision). The caller holds the write lock.
    fn apply_remote(&self, doc_id: &str) -> Result<(), CatalogError> {
        let docs = &self.inner.docs;
        match doc_id {
            ACCOUNTS_DOC => {
                let accounts = read_accounts(docs)?;
                self.update_view(|v| {
                    v.accounts.clear();
                    v.key_hashes.clear();
                    for account in accounts {
                        v.insert_account(account);
                    }
                });
            }
            CARDS_DOC => {
                let registry = read_registry(docs)?;
                let view = self.view();
                for id in registry.keys().filter(|id| !view.cards.contains_key(*id)) {
                    self.reload_card(id, &registry)?;
                }
                for card in view.cards.values() {
                    if !registry.contains_key(&card.meta.id) {
                        self.drop_card(card)?;
                    }
                }
            }
            DATASETS_DOC => self.reload_datasets()?,
            _ if doc_id.starts_with("dataset-") => self.reload_datasets()?,
            _ if doc_id.starts_with("card-") => {
                let card = &doc_id["card-".len()..];
                let registry = read_registry(docs)?;
                self.renumber_lost_revisions(card)?;
                self.reload_card(card, &registry)?;
            }
            _ => {
                // Rules of a revision not loaded yet: it may be complete now.
                if let Some(card) = card_of_rules(doc_id) {
                    let registry = read_registry(docs)?;
                    self.reload_card(card, &registry)?;
                }
            }
        }
        Ok(())
    }

    /// Revisions written here that lost their number to a revision written at the same time
    /// elsewhere (two imports into one card at once in two regions) get the next free number,
    /// so no acknowledged import is lost; the number's winner is written again to settle the
    /// conflict. Only the losing revision's author renumbers it, so every node agrees.
    fn renumber_lost_revisions(&self, card: &str) -> Result<(), CatalogError> {
        let doc_id = card_doc(card);
        if self.inner.docs.get(&doc_id).is_none() {
            return Ok(());
        }
        let me = self.inner.docs.actor().clone();
        let lost = with_doc(&self.inner.docs, &doc_id, |d| {
            let Ok(revs) = map_id(d, ROOT, "revisions") else {
                return Ok(Vec::new());
            };
            let mut lost = Vec::new();
            for item in d.map_range(&revs, ..) {
                let winner = item.id();
                for (value, id) in d.get_all(&revs, item.key.as_ref())? {
                    let mine = matches!(&id, automerge::ObjId::Id(_, actor, _) if *actor == me);
                    if id == winner || !mine {
                        continue;
                    }
                    let meta: Option<RevisionMeta> =
                        value.as_str().and_then(|s| serde_json::from_str(s).ok());
                    let won: Option<RevisionMeta> =
                        str_of(&item.value).and_then(|s| serde_json::from_str(s).ok());
                    if let (Some(meta), Some(won)) = (meta, won) {
                        lost.push((meta, won));
                    }
                }
            }
            Ok(lost)
        })?;
        if lost.is_empty() {
            return Ok(());
        }
        self.inner.docs.change::<_, CatalogError>(&doc_id, |d| {
            let revs = map_id(d, ROOT, "revisions")?;
            let mut next = d
                .keys(&revs)
                .filter_map(|k| k.parse::<u32>().ok())
                .max()
                .unwrap_or(0);
            for (mut meta, won) in lost {
                put_json(d, &revs, &won.rev.to_string(), &won)?;
                next += 1;
                tracing::warn!(
                    card,
                    from = meta.rev,
                    to = next,
                    "a revision written at the same time elsewhere took this number; renumbered"
                );
                meta.rev = next;
                put_json(d, &revs, &next.to_string(), &meta)?;
            }
            Ok(())
        })
    }

    /// Carries this node's edits of card `card_id`'s live revision onto the revisions that
    /// replace the revision the edits went into, so that no acknowledged edit ends up behind a
    /// newer revision it never reached. An edit taken here into revision `R` at time `t` is
    /// carried onto revision `R'` when:
    /// - `R` was the revision live at `t` and `R'` was not yet in this node's view then (both
    ///   recorded in the edit's change, see [`EditNote`]);
    /// - `R'` is newer than `R` (created later) and was created no later than `t`;
    /// - `R'` is the revision live at `t`, or at its own go-live time if that is later;
    /// - `R'` holds no edit of the prefix stamped at or after `t` (a later edit, or this very
    ///   carry made before).
    ///
    /// The carry writes `R`'s current value of the prefix (a rule, or none) into `R'` as an
    /// ordinary local edit stamped `t` with the edit's note, so it replicates like any edit and
    /// a still newer revision carries it on in turn. Only the node that took an edit carries
    /// it, so it happens once in the cluster. Every revision of the card is looked at (not only
    /// one that just arrived: the edited one may have been out of the view a while, having lost
    /// its number to a concurrent import), and that is idempotent, so it runs whenever a
    /// revision comes into the view or changes its go-live time, and at start (after a crash
    /// between receiving `R'` and carrying). The caller holds the write lock. A failure is
    /// logged, not returned (what called this has already succeeded); the next start retries.
    fn carry_edits(&self, card_id: &str) {
        if let Err(e) = self.try_carry_edits(card_id) {
            tracing::error!(
                card = card_id,
                error = %e,
                "could not carry rule edits onto a newer revision; retried at the next start"
            );
        }
    }

    fn try_carry_edits(&self, card_id: &str) -> Result<(), CatalogError> {
        let Some(card) = self.view().cards.get(card_id).cloned() else {
            return Ok(());
        };
        let mut targets: Vec<&RevisionView> = card
            .revisions
            .values()
            .filter(|r| r.meta.live_at.is_some())
            .collect();
        targets.sort_by_key(|r| (r.meta.created, r.meta.rev));
        // Each older revision's history is read once, from the earliest time a target needs.
        let mut sources: Vec<(&RevisionView, Vec<OwnEdit>)> = Vec::new();
        for source in card.revisions.values() {
            let since = targets
                .iter()
                .filter(|t| newer(&t.meta, &source.meta))
                .map(|t| t.meta.created)
                .min();
            if let Some(since) = since {
                let edits = self.own_live_edits(card_id, &source.meta, since)?;
                if !edits.is_empty() {
                    sources.push((source, edits));
                }
            }
        }
        if sources.is_empty() {
            return Ok(());
        }
        for target in targets {
            let key = rev_key(&target.meta);
            let live_from = target.meta.live_at.unwrap_or(i64::MAX);
            // Prefix → the edit of it to carry: the latest, from the newest revision.
            let mut carries: BTreeMap<&str, (i64, &RevisionView, &[String])> = BTreeMap::new();
            for &(source, ref edits) in &sources {
                if !newer(&target.meta, &source.meta) {
                    continue;
                }
                let rank = |time: i64, r: &RevisionView| (time, r.meta.created, r.meta.rev);
                for edit in edits {
                    let replaces = edit.time >= target.meta.created
                        && !edit.known.contains(&key)
                        && card
                            .live_at(edit.time.max(live_from))
                            .is_some_and(|r| rev_key(&r.meta) == key);
                    let better = carries
                        .get(edit.prefix.as_str())
                        .is_none_or(|c| rank(edit.time, source) > rank(c.0, c.1));
                    if replaces && better {
                        carries.insert(&edit.prefix, (edit.time, source, &edit.known));
                    }
                }
            }
            for (prefix, (time, source, known)) in carries {
                if self.edited_since(card_id, &target.meta, prefix, time)? {
                    continue;
                }
                let rule_target = RuleTarget {
                    card: card_id,
                    rev: target.meta.rev,
                    prefix,
                };
                let live = Some(known);
                let value = source.index.read().get(prefix).cloned();
                let what = match value {
                    Some(rule) => {
                        self.put_rule(rule_target, target, time, live, rule)?;
                        "set"
                    }
                    None if target.index.read().get(prefix).is_some() => {
                        self.remove_rule(rule_target, target, time, live)?;
                        "deleted"
                    }
                    None => continue,
                };
                tracing::info!(
                    card = card_id,
                    prefix,
                    from = source.meta.rev,
                    to = target.meta.rev,
                    edited = time,
                    rule = what,
                    "carried a rule edit onto the revision that replaced the one it went into"
                );
            }
        }
        Ok(())
    }

    /// This node's edits of revision `rev` made while it was the live one ([`EditNote`]),
    /// stamped at or after `since`. Only the changes' metadata is read.
    fn own_live_edits(
        &self,
        card: &str,
        rev: &RevisionMeta,
        since: i64,
    ) -> Result<Vec<OwnEdit>, CatalogError> {
        let me = self.inner.docs.actor().clone();
        let mut edits = Vec::new();
        for shard in 0..rev.shards {
            read_history(&self.inner.docs, &shard_doc(card, rev, shard), |d| {
                for m in d.get_changes_meta(&[]) {
                    if m.timestamp < since || *m.actor != me {
                        continue;
                    }
                    let note = m.message.as_deref().and_then(EditNote::parse);
                    if let Some(EditNote {
                        prefix,
                        live: Some(known),
                    }) = note
                    {
                        edits.push(OwnEdit {
                            time: m.timestamp,
                            known,
                            prefix,
                        });
                    }
                }
                Ok(())
            })?;
        }
        Ok(edits)
    }

    /// Whether revision `rev` holds an edit of `prefix`, by any node, stamped at or after
    /// `time`.
    fn edited_since(
        &self,
        card: &str,
        rev: &RevisionMeta,
        prefix: &str,
        time: i64,
    ) -> Result<bool, CatalogError> {
        let (shard, _) = bucketed::locate(prefix, rev.shards, rev.buckets);
        let edited = read_history(&self.inner.docs, &shard_doc(card, rev, shard), |d| {
            // A change without a note (an older node's edit) is decoded to see what it touched;
            // all of them in one pass (one at a time, each would cost a pass over the document).
            let mut unnoted = Vec::new();
            for m in d.get_changes_meta(&[]) {
                if m.timestamp < time {
                    continue;
                }
                match m.message.as_deref().and_then(EditNote::parse) {
                    Some(note) if note.prefix == prefix => return Ok(true),
                    Some(_) => {}
                    None => unnoted.push(m.hash),
                }
            }
            if unnoted.is_empty() {
                return Ok(false);
            }
            let changes = d.bundle(unnoted)?.to_changes()?;
            Ok(changes
                .iter()
                .any(|c| rule_keys(c).is_some_and(|keys| keys.iter().any(|k| k == prefix))))
        })?;
        Ok(edited.unwrap_or(false))
    }

    /// Re-reads card `id` if the registry lists it and its document is here.
    fn reload_card(
        &self,
        id: &str,
        registry: &HashMap<String, String>,
    ) -> Result<(), CatalogError> {
        let arrived = self.inner.docs.get(&card_doc(id)).is_some_and(|handle| {
            let guard = handle.lock();
            matches!(guard.doc().get(ROOT, "meta"), Ok(Some(_)))
                && map_id(guard.doc(), ROOT, "revisions").is_ok()
        });
        if !registry.contains_key(id) || !arrived {
            return Ok(());
        }
        let existing = self.view().cards.get(id).cloned();
        let card = load_card(&self.inner.docs, id, existing.as_deref())?;
        // A revision that came into the view, or changed its go-live time, may replace the
        // revision some of this node's edits went into.
        let changed = existing.as_ref().is_some_and(|old| {
            card.revisions.values().any(|r| {
                !old.revisions.values().any(|o| {
                    rev_key(&o.meta) == rev_key(&r.meta) && o.meta.live_at == r.meta.live_at
                })
            })
        });
        self.update_view(|v| {
            v.remove_card(id);
            v.insert_card(card);
        });
        if changed {
            self.carry_edits(id);
        }
        Ok(())
    }

    /// Forgets a card a peer deleted, and its documents.
    fn drop_card(&self, card: &CardView) -> Result<(), CatalogError> {
        let id = &card.meta.id;
        self.update_view(|v| v.remove_card(id));
        for rev in card.revisions.values() {
            bucketed::remove(
                &self.inner.docs,
                &|s| shard_doc(id, &rev.meta, s),
                rev.meta.shards,
            );
        }
        self.inner.docs.remove(&card_doc(id))?;
        Ok(())
    }

    /// Loads every dataset generation the registry names that is not loaded yet and whose
    /// documents are all here, dropping the generation it replaces.
    fn reload_datasets(&self) -> Result<(), CatalogError> {
        let docs = &self.inner.docs;
        for (kind, meta) in read_dataset_metas(docs)? {
            let old = self.view().datasets.get(&kind).map(|d| d.meta.clone());
            if old.as_ref() == Some(&meta) {
                continue;
            }
            let Some(dataset) = load_dataset(docs, kind, meta)? else {
                continue;
            };
            let dataset = Arc::new(dataset);
            self.update_view(|v| {
                v.datasets.insert(kind, dataset);
            });
            if let Some(old) = old {
                bucketed::remove(docs, &|s| dataset_doc(kind, &old, s), old.shards);
            }
        }
        Ok(())
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

    /// Stores a new account (or replaces one whole).
    pub fn put_account(&self, account: Account) -> Result<(), CatalogError> {
        let _w = self.inner.write.lock();
        self.store_account(account)
    }

    /// Changes account `id` by `patch`, applied to the account as it stands under the write
    /// lock, so concurrent patches (an update and a key rotation) each keep what the other did.
    pub fn update_account<E: From<CatalogError>>(
        &self,
        id: &str,
        patch: impl FnOnce(&mut Account) -> Result<(), E>,
    ) -> Result<Account, E> {
        let _w = self.inner.write.lock();
        let mut account = self
            .view()
            .accounts
            .get(id)
            .map(|a| Account::clone(a))
            .ok_or_else(|| CatalogError::NotFound(format!("account '{id}'")))?;
        patch(&mut account)?;
        self.store_account(account.clone())?;
        Ok(account)
    }

    fn store_account(&self, account: Account) -> Result<(), CatalogError> {
        self.inner
            .docs
            .change::<_, CatalogError>(ACCOUNTS_DOC, |d| {
                let map = map_id(d, ROOT, "accounts")?;
                put_json(d, &map, &account.id, &account)
            })?;
        self.update_view(|v| v.insert_account(account));
        Ok(())
    }

    /// Deletes an account and every card it owns.
    pub fn delete_account(&self, id: &str) -> Result<(), CatalogError> {
        let cards: Vec<String> = self
            .view()
            .cards_of(id)
            .iter()
            .map(|c| c.meta.id.clone())
            .collect();
        for card in cards {
            self.delete_card(&card)?;
        }
        let _w = self.inner.write.lock();
        if !self.view().accounts.contains_key(id) {
            return Err(CatalogError::NotFound(format!("account '{id}'")));
        }
        self.inner
            .docs
            .change::<_, CatalogError>(ACCOUNTS_DOC, |d| {
                let map = map_id(d, ROOT, "accounts")?;
                d.delete(&map, id)?;
                Ok(())
            })?;
        self.update_view(|v| v.remove_account(id));
        Ok(())
    }

    /// Creates a card with an empty revision 1, live from `meta.created`.
    pub fn create_card(&self, meta: CardMeta) -> Result<Arc<CardView>, CatalogError> {
        let _w = self.inner.write.lock();
        if self.view().card(&meta.account, &meta.name).is_some() {
            return Err(CatalogError::Conflict(format!(
                "a card named '{}' already exists",
                meta.name
            )));
        }
        let rev = RevisionMeta {
            rev: 1,
            created: meta.created,
            live_at: Some(meta.created),
            source: "create".into(),
            shards: 1,
            buckets: bucketed::MIN_BUCKETS,
            docs: docs_key(),
        };
        self.write_shards(&meta.id, &rev, Vec::new())?;
        self.inner
            .docs
            .create::<_, CatalogError>(&card_doc(&meta.id), |d| {
                d.put(ROOT, "v", SCHEMA_VERSION)?;
                put_json(d, &ROOT, "meta", &meta)?;
                let revs = d.put_object(ROOT, "revisions", ObjType::Map)?;
                put_json(d, &revs, &rev.rev.to_string(), &rev)
            })?;
        self.inner.docs.change::<_, CatalogError>(CARDS_DOC, |d| {
            let map = map_id(d, ROOT, "cards")?;
            d.put(&map, &meta.id, meta.account.as_str())?;
            Ok(())
        })?;
        let mut revisions = BTreeMap::new();
        revisions.insert(1, RevisionView::new(rev, PrefixIndex::new(), meta.created));
        let card = CardView { meta, revisions };
        let id = card.meta.id.clone();
        self.update_view(|v| v.insert_card(card));
        Ok(self.view().cards[&id].clone())
    }

    /// Replaces a card's settings (its id and account stay).
    pub fn update_card(&self, meta: CardMeta) -> Result<Arc<CardView>, CatalogError> {
        let _w = self.inner.write.lock();
        let old = self.card(&meta.id)?;
        if old.meta.name != meta.name && self.view().card(&meta.account, &meta.name).is_some() {
            return Err(CatalogError::Conflict(format!(
                "a card named '{}' already exists",
                meta.name
            )));
        }
        self.inner
            .docs
            .change::<_, CatalogError>(&card_doc(&meta.id), |d| {
                put_json(d, &ROOT, "meta", &meta)
            })?;
        let card = CardView {
            meta,
            revisions: old.revisions.clone(),
        };
        let id = card.meta.id.clone();
        self.update_view(|v| {
            v.remove_card(&id);
            v.insert_card(card);
        });
        Ok(self.view().cards[&id].clone())
    }

    /// Deletes a card, its revisions and their rules.
    pub fn delete_card(&self, id: &str) -> Result<(), CatalogError> {
        let _w = self.inner.write.lock();
        let card = self.card(id)?;
        self.inner.docs.change::<_, CatalogError>(CARDS_DOC, |d| {
            let map = map_id(d, ROOT, "cards")?;
            d.delete(&map, id)?;
            Ok(())
        })?;
        self.update_view(|v| v.remove_card(id));
        for rev in card.revisions.values() {
            for shard in 0..rev.meta.shards {
                self.inner.docs.remove(&shard_doc(id, &rev.meta, shard))?;
            }
        }
        self.inner.docs.remove(&card_doc(id))?;
        Ok(())
    }

    /// Upserts one rule in place: `patch` makes the new rule from the one in place (if any),
    /// under the write lock, so two concurrent partial edits of one rule each keep the other's
    /// fields. Returns the rule written and whether it is new.
    pub fn set_rule<E: From<CatalogError>>(
        &self,
        target: RuleTarget<'_>,
        now: i64,
        patch: impl FnOnce(Option<&Rule>) -> Result<Rule, E>,
    ) -> Result<(Rule, bool), E> {
        let _w = self.inner.write.lock();
        let rev = self.revision(target)?;
        let current = rev.index.read().get(target.prefix).cloned();
        let rule = patch(current.as_ref())?;
        let live = self.newer_known(target, now);
        self.put_rule(target, &rev, now, live.as_deref(), rule.clone())?;
        Ok((rule, current.is_none()))
    }

    /// Removes one rule; `NotFound` when the revision has no rule for the prefix.
    pub fn delete_rule(&self, target: RuleTarget<'_>, now: i64) -> Result<Rule, CatalogError> {
        let _w = self.inner.write.lock();
        let rev = self.revision(target)?;
        let live = self.newer_known(target, now);
        self.remove_rule(target, &rev, now, live.as_deref())
    }

    /// Writes `rule` for `target.prefix` into revision `rev` and its index: a local edit, or
    /// a carried one. The caller holds the write lock.
    fn put_rule(
        &self,
        target: RuleTarget<'_>,
        rev: &RevisionView,
        now: i64,
        live: Option<&[String]>,
        rule: Rule,
    ) -> Result<(), CatalogError> {
        let encoded = rule.encode();
        self.edit_rule(target, rev, now, live, |d, bucket| {
            d.put(bucket, target.prefix, encoded)?;
            Ok(())
        })?;
        rev.index.write().insert(target.prefix, rule);
        Ok(())
    }

    /// Removes `target.prefix` from revision `rev` and its index (`NotFound` if it has no rule
    /// for it): a local edit, or a carried one. The caller holds the write lock.
    fn remove_rule(
        &self,
        target: RuleTarget<'_>,
        rev: &RevisionView,
        now: i64,
        live: Option<&[String]>,
    ) -> Result<Rule, CatalogError> {
        self.edit_rule(target, rev, now, live, |d, bucket| {
            if d.get(bucket, target.prefix)?.is_none() {
                return Err(CatalogError::NotFound(format!("rule '{}'", target.prefix)));
            }
            d.delete(bucket, target.prefix)?;
            Ok(())
        })?;
        let removed = rev.index.write().remove(target.prefix);
        removed.ok_or_else(|| CatalogError::NotFound(format!("rule '{}'", target.prefix)))
    }

    /// For an edit of `target` at `now` when its revision is the one live at `now`: the newer
    /// revisions this node already holds (for the edit's [`EditNote`]). `None` for an edit of
    /// any other revision (a draft, a scheduled or an archived one), which is never carried.
    fn newer_known(&self, target: RuleTarget<'_>, now: i64) -> Option<Vec<String>> {
        let card = self.view().cards.get(target.card).cloned()?;
        let live = card.live_at(now).filter(|r| r.meta.rev == target.rev)?;
        Some(
            card.revisions
                .values()
                .filter(|r| newer(&r.meta, &live.meta))
                .map(|r| rev_key(&r.meta))
                .collect(),
        )
    }

    /// The revision a rule edit names.
    fn revision(&self, target: RuleTarget<'_>) -> Result<RevisionView, CatalogError> {
        let card = self.card(target.card)?;
        card.revisions
            .get(&target.rev)
            .cloned()
            .ok_or_else(|| CatalogError::NotFound(format!("revision {}", target.rev)))
    }

    /// Writes one rule edit durably to its shard document (nothing else: the card's document
    /// is not touched, so edits never grow it), as one change stamped with the edit's time
    /// `now` (the clock revisions' `created` come from) and its [`EditNote`] (`live`: the
    /// edit went into the revision live at `now`; these newer revisions were held). An edit
    /// that changes nothing (the same rule again) is still a change, with no operations, so
    /// it has a time and a note like any other. The caller holds the write lock.
    fn edit_rule(
        &self,
        target: RuleTarget<'_>,
        rev: &RevisionView,
        now: i64,
        live: Option<&[String]>,
        write: impl FnOnce(&mut AutoCommit, &automerge::ObjId) -> Result<(), CatalogError>,
    ) -> Result<(), CatalogError> {
        let (shard, bucket) = bucketed::locate(target.prefix, rev.meta.shards, rev.meta.buckets);
        let note = EditNote::write(target.prefix, live);
        self.inner.docs.change::<_, CatalogError>(
            &shard_doc(target.card, &rev.meta, shard),
            |d| {
                let bucket = map_id(d, ROOT, &bucketed::bucket_key(bucket))?;
                write(d, &bucket)?;
                // Committed here, with the edit's time and note; the store's own commit after
                // this closure then finds nothing left to commit.
                let options = || CommitOptions::default().with_time(now).with_message(&note);
                if d.commit_with(options()).is_none() {
                    d.empty_change(options());
                }
                Ok(())
            },
        )?;
        rev.edited.fetch_max(now, Ordering::Relaxed);
        Ok(())
    }

    /// Adds a revision holding `rules` (already validated: unique digit prefixes), live at
    /// `live_at` (`None`: a draft). The shard documents are written first and the revision
    /// entry last, so a crash mid-import leaves the card as it was.
    pub fn add_revision(
        &self,
        card_id: &str,
        rules: Vec<(String, Rule)>,
        live_at: Option<i64>,
        source: &str,
        now: i64,
    ) -> Result<RevisionMeta, CatalogError> {
        let _w = self.inner.write.lock();
        let card = self.card(card_id)?;
        let number = card.revisions.keys().next_back().map_or(1, |n| n + 1);
        let (shards, buckets) = bucketed::layout_for(rules.len());
        let meta = RevisionMeta {
            rev: number,
            created: now,
            live_at,
            source: source.to_owned(),
            shards,
            buckets,
            docs: docs_key(),
        };
        let index = self.write_shards(card_id, &meta, rules)?;
        self.put_revision(&card, RevisionView::new(meta.clone(), index, now), now)?;
        // An edit taken here after `now` by a request that began earlier.
        self.carry_edits(card_id);
        Ok(meta)
    }

    /// Sets when a revision goes live (`None`: back to draft).
    pub fn set_live_at(
        &self,
        card_id: &str,
        rev: u32,
        live_at: Option<i64>,
        now: i64,
    ) -> Result<RevisionMeta, CatalogError> {
        let _w = self.inner.write.lock();
        let card = self.card(card_id)?;
        let current = card
            .revisions
            .get(&rev)
            .ok_or_else(|| CatalogError::NotFound(format!("revision {rev}")))?;
        let meta = RevisionMeta {
            live_at,
            ..current.meta.clone()
        };
        let next = RevisionView {
            meta: meta.clone(),
            ..current.clone()
        };
        self.put_revision(&card, next, now)?;
        self.carry_edits(card_id);
        Ok(meta)
    }

    /// Stores a revision's entry in its card's document (and the card as changed at `now`), then
    /// puts it in the view. The caller holds the write lock.
    fn put_revision(
        &self,
        card: &CardView,
        revision: RevisionView,
        now: i64,
    ) -> Result<(), CatalogError> {
        let meta = &revision.meta;
        let card_id = card.meta.id.clone();
        let mut card_meta = card.meta.clone();
        card_meta.updated = now;
        self.inner
            .docs
            .change::<_, CatalogError>(&card_doc(&card_id), |d| {
                put_json(d, &ROOT, "meta", &card_meta)?;
                let revs = map_id(d, ROOT, "revisions")?;
                put_json(d, &revs, &meta.rev.to_string(), &meta)
            })?;
        let mut revisions = card.revisions.clone();
        revisions.insert(meta.rev, revision);
        let next = CardView {
            meta: card_meta,
            revisions,
        };
        self.update_view(|v| {
            v.cards.insert(card_id, Arc::new(next));
        });
        Ok(())
    }

    /// Replaces dataset `kind` with `rows` (validated: unique digit keys), atomically: the new
    /// generation's shard documents are written first, then the registry entry flips to them.
    pub fn import_dataset(
        &self,
        kind: DatasetKind,
        rows: DatasetRows,
        now: i64,
    ) -> Result<DatasetMeta, CatalogError> {
        let _w = self.inner.write.lock();
        let previous = self.view().datasets.get(&kind).map(|d| d.meta.clone());
        let (shards, buckets) = bucketed::layout_for(rows.rows.len());
        let meta = DatasetMeta {
            name: kind.as_str().to_owned(),
            generation: previous.as_ref().map_or(1, |p| p.generation + 1),
            shards,
            buckets,
            fields: rows.fields,
            rows: rows.rows.len(),
            imported: now,
            docs: docs_key(),
        };
        let doc_id = |shard| dataset_doc(kind, &meta, shard);
        let encoded = rows.rows.iter().map(|(k, v)| {
            (
                k.clone(),
                serde_json::to_string(v).expect("strings serialise"),
            )
        });
        bucketed::write(&self.inner.docs, &doc_id, shards, buckets, encoded)?;
        self.inner
            .docs
            .change::<_, CatalogError>(DATASETS_DOC, |d| {
                let map = map_id(d, ROOT, "datasets")?;
                put_json(d, &map, kind.as_str(), &meta)
            })?;
        let dataset = Arc::new(Dataset::new(kind, meta.clone(), rows.rows));
        self.update_view(|v| {
            v.datasets.insert(kind, dataset);
        });
        if let Some(old) = previous {
            bucketed::remove(
                &self.inner.docs,
                &|shard| dataset_doc(kind, &old, shard),
                old.shards,
            );
        }
        Ok(meta)
    }

    /// Writes a revision's shard documents and returns its index.
    fn write_shards(
        &self,
        card: &str,
        meta: &RevisionMeta,
        rules: Vec<(String, Rule)>,
    ) -> Result<PrefixIndex, CatalogError> {
        // The index first, consuming the parsed deck, then the documents encoded from it: the
        // deck, its encoding and the index never all exist at once (peak memory of big imports).
        let index: PrefixIndex = rules.into_iter().collect();
        let doc_id = |shard| shard_doc(card, meta, shard);
        let encoded = index.iter().map(|(prefix, rule)| (prefix, rule.encode()));
        bucketed::write(
            &self.inner.docs,
            &doc_id,
            meta.shards,
            meta.buckets,
            encoded,
        )?;
        Ok(index)
    }
}

fn dataset_doc(kind: DatasetKind, meta: &DatasetMeta, shard: u32) -> String {
    let (kind, generation) = (kind.as_str(), meta.generation);
    if meta.docs.is_empty() {
        format!("dataset-{kind}-{generation}-{shard}")
    } else {
        format!("dataset-{kind}-{generation}-{}-{shard}", meta.docs)
    }
}

/// The card whose rules document `doc_id` is.
fn card_of_rules(doc_id: &str) -> Option<&str> {
    doc_id.strip_prefix("rules-")?.split('-').next()
}

fn card_doc(card: &str) -> String {
    format!("card-{card}")
}

fn shard_doc(card: &str, rev: &RevisionMeta, shard: u32) -> String {
    if rev.docs.is_empty() {
        format!("rules-{card}-{}-{shard}", rev.rev)
    } else {
        // Not the revision number: a revision renumbered after a conflict keeps its documents.
        format!("rules-{card}-{}-{shard}", rev.docs)
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

/// What the message of a rule edit's change says: `rule-edit <prefix>`, then ` live` when the
/// edit went into the revision live at its time, then ` known=` and the keys ([`rev_key`]) of
/// the newer revisions the node already held, if any. A live edit is carried onto a newer
/// revision that replaces its own and was not among those ([`Catalog::carry_edits`]).
#[derive(Debug, PartialEq)]
struct EditNote {
    prefix: String,
    /// For a live edit, the newer revisions held.
    live: Option<Vec<String>>,
}

impl EditNote {
    const TAG: &'static str = "rule-edit";

    fn write(prefix: &str, live: Option<&[String]>) -> String {
        match live {
            None => format!("{} {prefix}", Self::TAG),
            Some([]) => format!("{} {prefix} live", Self::TAG),
            Some(known) => format!("{} {prefix} live known={}", Self::TAG, known.join(",")),
        }
    }

    fn parse(message: &str) -> Option<Self> {
        let mut words = message.split(' ');
        if words.next()? != Self::TAG {
            return None;
        }
        let prefix = words.next()?.to_owned();
        let live = match words.next() {
            None => None,
            Some("live") => Some(match words.next() {
                None => Vec::new(),
                Some(known) => known
                    .strip_prefix("known=")?
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect(),
            }),
            Some(_) => return None,
        };
        Some(Self { prefix, live })
    }
}

/// Runs `read` on document `id` (if it exists) with the mutable access reading its history
/// needs, which only the store's `change` lends; `read` writes nothing, so nothing is committed.
fn read_history<T>(
    docs: &DocStore,
    id: &str,
    read: impl FnOnce(&mut AutoCommit) -> Result<T, CatalogError>,
) -> Result<Option<T>, CatalogError> {
    if docs.get(id).is_none() {
        return Ok(None);
    }
    docs.change::<_, CatalogError>(id, read).map(Some)
}

/// The prefixes a rule edit's change set or deleted; `None` for a change that makes maps (a
/// shard document's buckets, written by an import), which is no rule edit.
fn rule_keys(change: &automerge::Change) -> Option<Vec<String>> {
    let ops = change.decode().operations;
    if ops
        .iter()
        .any(|op| matches!(op.action, automerge::legacy::OpType::Make(_)))
    {
        return None;
    }
    let mut keys: Vec<String> = ops
        .into_iter()
        .filter_map(|op| match op.key {
            automerge::legacy::Key::Map(key) if edgerate_model::number::is_prefix(&key) => {
                Some(key.to_string())
            }
            _ => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Some(keys)
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

/// Every (key, JSON value) of a map of JSON strings; unreadable entries are logged and skipped.
fn json_entries<T: DeserializeOwned>(
    d: &AutoCommit,
    doc: &str,
    map: &automerge::ObjId,
) -> Vec<(String, T)> {
    d.map_range(map, ..)
        .filter_map(|item| {
            let parsed = str_of(&item.value).and_then(|s| serde_json::from_str(s).ok());
            if parsed.is_none() {
                tracing::warn!(doc, key = %item.key, "skipping unreadable entry");
            }
            parsed.map(|v| (item.key.into_owned(), v))
        })
        .collect()
}

fn load_view(docs: &DocStore) -> Result<View, CatalogError> {
    let mut view = View::default();
    for account in read_accounts(docs)? {
        view.insert_account(account);
    }
    for (kind, meta) in read_dataset_metas(docs)? {
        if let Some(dataset) = load_dataset(docs, kind, meta)? {
            view.datasets.insert(kind, Arc::new(dataset));
        }
    }
    for id in read_registry(docs)?.into_keys() {
        match load_card(docs, &id, None) {
            Ok(card) => view.insert_card(card),
            Err(e) => tracing::error!(card = %id, error = %e, "card is unreadable; not serving it"),
        }
    }
    Ok(view)
}

/// Runs `read` on document `id`, which must exist.
fn with_doc<T>(
    docs: &DocStore,
    id: &str,
    read: impl FnOnce(&AutoCommit) -> Result<T, CatalogError>,
) -> Result<T, CatalogError> {
    let handle = docs
        .get(id)
        .ok_or_else(|| StoreError::Missing(id.to_owned()))?;
    let guard = handle.lock();
    read(guard.doc())
}

fn read_accounts(docs: &DocStore) -> Result<Vec<Account>, CatalogError> {
    with_doc(docs, ACCOUNTS_DOC, |d| {
        let map = map_id(d, ROOT, "accounts")?;
        Ok(json_entries::<Account>(d, ACCOUNTS_DOC, &map)
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    })
}

/// Card id → owning account.
fn read_registry(docs: &DocStore) -> Result<HashMap<String, String>, CatalogError> {
    with_doc(docs, CARDS_DOC, |d| {
        let map = map_id(d, ROOT, "cards")?;
        Ok(d.map_range(&map, ..)
            .map(|item| {
                let account = str_of(&item.value).unwrap_or_default().to_owned();
                (item.key.into_owned(), account)
            })
            .collect())
    })
}

fn read_dataset_metas(docs: &DocStore) -> Result<Vec<(DatasetKind, DatasetMeta)>, CatalogError> {
    with_doc(docs, DATASETS_DOC, |d| {
        let map = map_id(d, ROOT, "datasets")?;
        Ok(json_entries::<DatasetMeta>(d, DATASETS_DOC, &map)
            .into_iter()
            .filter_map(|(name, meta)| Some((DatasetKind::parse(&name)?, meta)))
            .collect())
    })
}

/// Whether every document of a sharded map is here with all its buckets (a peer may not have
/// sent them all yet; each bucket arrives whole, in the change that created it).
fn complete(docs: &DocStore, doc_id: &dyn Fn(u32) -> String, shards: u32, buckets: u32) -> bool {
    (0..shards).all(|shard| {
        docs.get(&doc_id(shard)).is_some_and(|handle| {
            let guard = handle.lock();
            (0..buckets).all(|b| map_id(guard.doc(), ROOT, &bucketed::bucket_key(b)).is_ok())
        })
    })
}

/// The dataset `meta` names, or `None` while some of its documents have not arrived.
fn load_dataset(
    docs: &DocStore,
    kind: DatasetKind,
    meta: DatasetMeta,
) -> Result<Option<Dataset>, CatalogError> {
    let doc_id = |shard| dataset_doc(kind, &meta, shard);
    if !complete(docs, &doc_id, meta.shards, meta.buckets) {
        return Ok(None);
    }
    let mut rows = Vec::with_capacity(meta.rows);
    bucketed::read(docs, &doc_id, meta.shards, meta.buckets, |key, encoded| {
        if let Ok(values) = serde_json::from_str::<Vec<String>>(encoded) {
            rows.push((key.to_owned(), values));
        }
    })?;
    Ok(Some(Dataset::new(kind, meta, rows)))
}

/// Reads card `id`. Revisions `existing` already holds (same documents) keep their index;
/// revisions whose documents have not all arrived are left out until they have.
fn load_card(
    docs: &DocStore,
    id: &str,
    existing: Option<&CardView>,
) -> Result<CardView, CatalogError> {
    let doc_id = card_doc(id);
    let (meta, revs) = with_doc(docs, &doc_id, |d| {
        let corrupt = |reason: &str| StoreError::Corrupt {
            id: doc_id.clone(),
            reason: reason.into(),
        };
        let meta: CardMeta = match d.get(ROOT, "meta")? {
            Some((value, _)) => value
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| corrupt("meta is unreadable"))?,
            None => return Err(corrupt("no meta").into()),
        };
        let revs_map = map_id(d, ROOT, "revisions")?;
        Ok((meta, json_entries::<RevisionMeta>(d, &doc_id, &revs_map)))
    })?;
    let mut revisions = BTreeMap::new();
    for (_, rev) in revs {
        let kept = existing
            .and_then(|c| c.revisions.get(&rev.rev))
            .filter(|r| {
                (r.meta.docs.as_str(), r.meta.shards, r.meta.buckets)
                    == (rev.docs.as_str(), rev.shards, rev.buckets)
            });
        let revision = match kept {
            Some(r) => RevisionView {
                meta: rev.clone(),
                ..r.clone()
            },
            None if complete(docs, &|s| shard_doc(id, &rev, s), rev.shards, rev.buckets) => {
                let index = load_rules(docs, id, &rev)?;
                let edited = last_change_time(docs, &|s| shard_doc(id, &rev, s), rev.shards)
                    .max(rev.created);
                RevisionView::new(rev.clone(), index, edited)
            }
            None => continue,
        };
        revisions.insert(rev.rev, revision);
    }
    Ok(CardView { meta, revisions })
}

/// The newest commit time among the heads of a sharded map's documents (unix seconds).
fn last_change_time(docs: &DocStore, doc_id: &dyn Fn(u32) -> String, shards: u32) -> i64 {
    (0..shards)
        .filter_map(|shard| docs.head_time(&doc_id(shard)))
        .max()
        .unwrap_or(0)
}

fn load_rules(
    docs: &DocStore,
    card: &str,
    rev: &RevisionMeta,
) -> Result<PrefixIndex, CatalogError> {
    let mut index = PrefixIndex::new();
    let mut bad = 0usize;
    let doc_id = |shard| shard_doc(card, rev, shard);
    bucketed::read(
        docs,
        &doc_id,
        rev.shards,
        rev.buckets,
        |prefix, encoded| match Rule::decode(encoded) {
            Ok(rule) if edgerate_model::number::is_prefix(prefix) => {
                index.insert(prefix, rule);
            }
            _ => bad += 1,
        },
    )?;
    if bad > 0 {
        tracing::warn!(card, rev = rev.rev, bad, "skipped unreadable rules");
    }
    index.compact();
    Ok(index)
}

/// Brings a revision's index up to date with the rules a peer's changes touched in one of its
/// shard documents: each is read back from the document (the winner of any conflict) and put
/// in, or taken out of, the index.
fn apply_touched(
    docs: &DocStore,
    doc_id: &str,
    rev: &RevisionView,
    prefixes: &[String],
) -> Result<(), CatalogError> {
    // The edits' own commit time (the same on every node once the document is), not the time
    // they arrived here: `updated` must read alike everywhere.
    if let Some(time) = docs.head_time(doc_id) {
        rev.edited.fetch_max(time, Ordering::Relaxed);
    }
    let mut index = rev.index.write();
    with_doc(docs, doc_id, |d| {
        for prefix in prefixes
            .iter()
            .filter(|p| edgerate_model::number::is_prefix(p))
        {
            let (_, bucket) = bucketed::locate(prefix, rev.meta.shards, rev.meta.buckets);
            let map = map_id(d, ROOT, &bucketed::bucket_key(bucket))?;
            let current = d.get(&map, prefix.as_str())?;
            match current
                .as_ref()
                .and_then(|(v, _)| v.as_str())
                .map(Rule::decode)
            {
                Some(Ok(rule)) => {
                    index.insert(prefix, rule);
                }
                None => {
                    index.remove(prefix);
                }
                Some(Err(_)) => tracing::warn!(%prefix, "skipped an unreadable rule from a peer"),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn actor() -> automerge::ActorId {
        automerge::ActorId::from(&[1u8; 16][..])
    }

    fn card_meta(id: &str) -> CardMeta {
        CardMeta::new(id.into(), "acc".into(), format!("name-{id}"), 100)
    }

    fn rule(rate: i64) -> Rule {
        Rule::new(Arc::from("x"), Decimal::new(rate, 4))
    }

    fn rate_of(catalog: &Catalog, card: &str, number: &str, at: i64) -> Option<Decimal> {
        let view = catalog.view();
        let card = view.cards.get(card)?;
        let rev = card.live_at(at)?;
        let index = rev.index.read();
        index.longest_match(number).map(|m| m.rule.rate)
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
            !catalog
                .docs()
                .ids()
                .iter()
                .any(|id| id.starts_with("dataset-hlr-1-")),
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
    fn sync(a: &Catalog, b: &Catalog) {
        sync_ordered(a, b, false)
    }

    /// [`sync`], documents in order of id (a card's before its rules) or, with `rules_first`,
    /// the reverse.
    fn sync_ordered(a: &Catalog, b: &Catalog, rules_first: bool) {
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

    fn rev_rule(catalog: &Catalog, card: &str, rev: u32, prefix: &str) -> Option<Rule> {
        let view = catalog.view();
        let index = view.cards.get(card)?.revisions.get(&rev)?.index.read();
        index.get(prefix).cloned()
    }

    fn target(rev: u32, prefix: &str) -> RuleTarget<'_> {
        RuleTarget {
            card: "c1",
            rev,
            prefix,
        }
    }

    /// Two nodes sharing card c1 (revision 1 live, holding 446, 447 and 448), and B's import
    /// of revision 2 at 300 (holding 447), not yet sent to A.
    fn racing_import(a_dir: &Path, b_dir: &Path) -> (Catalog, Catalog) {
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
            c.docs().heads(&shard_doc("c1", &rev.meta, 0))
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
        for id in [card_doc("c1"), shard_doc("c1", &rev2, 0)] {
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
    fn edit_notes_read_back() {
        let known = ["0a1b2c3d".to_owned(), "r4".to_owned()];
        for live in [None, Some(&[][..]), Some(&known[..])] {
            let note = EditNote::write("4412", live);
            assert_eq!(
                EditNote::parse(&note),
                Some(EditNote {
                    prefix: "4412".into(),
                    live: live.map(<[String]>::to_vec),
                }),
                "{note}"
            );
        }
        assert_eq!(EditNote::parse("rule-edit"), None);
        assert_eq!(EditNote::parse("rule-edit 44 lve"), None);
        assert_eq!(EditNote::parse("an import"), None);
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
