//! The read model: the immutable [`View`] every request reads, and the cards, revisions and
//! datasets in it.

use edgerate_model::account::Account;
use edgerate_model::card::{live_revision, CardMeta, RevisionMeta};
use edgerate_model::dataset::DatasetKind;
use edgerate_model::index::PrefixIndex;
use parking_lot::RwLock;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

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
    pub(super) fn new(meta: RevisionMeta, index: PrefixIndex, edited: i64) -> Self {
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

/// A map a request looks into (foldhash, randomly seeded: SipHash showed in every rate query's
/// profile, three lookups each).
pub type Lookup<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Everything a request reads, as of one instant.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub accounts: Lookup<String, Arc<Account>>,
    pub cards: Lookup<String, Arc<CardView>>,
    /// Account → card name → the ids of the cards of that name: one, except when two regions
    /// created (or renamed) a card to the same name at once.
    names: Lookup<String, BTreeMap<String, BTreeSet<String>>>,
    /// API key hash → account id.
    pub(super) key_hashes: Lookup<String, String>,
    /// Operator datasets by kind.
    pub datasets: HashMap<DatasetKind, Arc<Dataset>>,
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
        // Of cards sharing a name, the one with the smallest id: the same on every node.
        let id = self.names.get(account)?.get(reference)?.first()?;
        self.cards.get(id)
    }

    /// The account's cards, by name (then id).
    pub fn cards_of(&self, account: &str) -> Vec<&Arc<CardView>> {
        self.names
            .get(account)
            .into_iter()
            .flat_map(|names| names.values().flatten())
            .filter_map(|id| self.cards.get(id))
            .collect()
    }

    /// The account whose key hashes to `hash`.
    pub fn account_by_key_hash(&self, hash: &str) -> Option<Arc<Account>> {
        self.accounts.get(self.key_hashes.get(hash)?).cloned()
    }

    pub(super) fn insert_account(&mut self, account: Account) {
        self.remove_account(&account.id);
        self.key_hashes
            .insert(account.key_hash.clone(), account.id.clone());
        self.accounts.insert(account.id.clone(), Arc::new(account));
    }

    pub(super) fn remove_account(&mut self, id: &str) {
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

    pub(super) fn insert_card(&mut self, card: CardView) {
        self.names
            .entry(card.meta.account.clone())
            .or_default()
            .entry(card.meta.name.clone())
            .or_default()
            .insert(card.meta.id.clone());
        self.cards.insert(card.meta.id.clone(), Arc::new(card));
    }

    pub(super) fn remove_card(&mut self, id: &str) {
        let Some(card) = self.cards.remove(id) else {
            return;
        };
        let Some(names) = self.names.get_mut(&card.meta.account) else {
            return;
        };
        if let Some(ids) = names.get_mut(&card.meta.name) {
            ids.remove(id);
            if ids.is_empty() {
                names.remove(&card.meta.name);
            }
        }
        if names.is_empty() {
            self.names.remove(&card.meta.account);
        }
    }
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
    pub(super) fn new(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn card(id: &str, name: &str) -> CardView {
        let meta: CardMeta = serde_json::from_value(serde_json::json!({
            "id": id, "account": "acc", "name": name, "currency": "USD",
            "direction": "outbound", "precision": 4, "rounding": "up",
            "duration_rounding": "up", "tech_prefix": "", "created": 0, "updated": 0,
        }))
        .unwrap();
        CardView {
            meta,
            revisions: BTreeMap::new(),
        }
    }

    /// Two regions may each create a card of the same name: both are listed, the name finds
    /// the same one on every node, and removing one leaves the other found.
    #[test]
    fn cards_sharing_a_name_are_all_kept() {
        let mut view = View::default();
        view.insert_card(card("c2", "uk"));
        view.insert_card(card("c1", "uk"));
        view.insert_card(card("c3", "de"));
        let ids = |v: &View| {
            v.cards_of("acc")
                .iter()
                .map(|c| c.meta.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&view), ["c3", "c1", "c2"]);
        assert_eq!(view.card("acc", "uk").unwrap().meta.id, "c1");
        assert!(view.card("other", "uk").is_none());
        view.remove_card("c1");
        assert_eq!(view.card("acc", "uk").unwrap().meta.id, "c2");
        view.remove_card("c2");
        view.remove_card("c3");
        assert!(view.card("acc", "uk").is_none());
        assert!(ids(&view).is_empty() && view.names.is_empty());
    }
}
