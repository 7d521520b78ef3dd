//! Local writes: accounts, cards, rule edits, revisions and datasets, each durable before the
//! view shows it.

use super::carry::EditNote;
use super::doc_id::{DocId, ACCOUNTS_DOC, CARDS_DOC, DATASETS_DOC};
use super::{
    docs_key, map_id, newer, put_json, rev_key, CardView, Catalog, CatalogError, Dataset,
    DatasetMeta, RevisionView, RuleTarget, SCHEMA_VERSION,
};
use crate::bucketed;
use automerge::{
    transaction::{CommitOptions, Transactable},
    AutoCommit, ObjType, ReadDoc, ROOT,
};
use edgerate_model::account::Account;
use edgerate_model::card::{CardMeta, RevisionMeta};
use edgerate_model::dataset::{DatasetKind, DatasetRows};
use edgerate_model::index::PrefixIndex;
use edgerate_model::rule::Rule;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A revision whose shard documents are written and whose index is built, not yet entered in
/// its card ([`Catalog::stage_revision`]).
pub(super) struct Staged<'a> {
    card: String,
    meta: RevisionMeta,
    index: PrefixIndex,
    _staging: Staging<'a>,
}

/// Documents being written that no entry names yet, for as long as this lives: left out of
/// backups ([`Catalog::save_all`]), which would otherwise catch an import half written.
pub(super) struct Staging<'a> {
    set: &'a Mutex<HashSet<String>>,
    ids: Vec<String>,
}

impl Catalog {
    fn staging(&self, ids: Vec<String>) -> Staging<'_> {
        self.inner.staging.lock().extend(ids.iter().cloned());
        Staging {
            set: &self.inner.staging,
            ids,
        }
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        let mut set = self.set.lock();
        for id in &self.ids {
            set.remove(id);
        }
    }
}

impl Catalog {
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
            gens: BTreeMap::new(),
        };
        self.write_shards(&meta.id, &rev, Vec::new())?;
        self.inner
            .docs
            .create::<_, CatalogError>(&DocId::card(&meta.id).to_string(), |d| {
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
        let doc_id = |shard| DocId::rules(&meta.id, &rev, shard).to_string();
        bucketed::announce(&self.inner.docs, &doc_id, rev.shards);
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
            .change::<_, CatalogError>(&DocId::card(&meta.id).to_string(), |d| {
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
        drop(card);
        for doc in self.rule_docs(id) {
            self.inner.docs.remove(&doc)?;
        }
        self.inner.docs.remove(&DocId::card(id).to_string())?;
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
    pub(super) fn put_rule(
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
    pub(super) fn remove_rule(
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
            &DocId::rules(target.card, &rev.meta, shard).to_string(),
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
    ///
    /// The shard documents (seconds for a 1M-row deck) are written without the write lock
    /// (`stage_revision`), and only the entry under it (`enter_revision`):
    /// other writes, an edit of any card among them, go on meanwhile.
    pub fn add_revision(
        &self,
        card_id: &str,
        rules: Vec<(String, Rule)>,
        live_at: Option<i64>,
        source: &str,
        now: i64,
    ) -> Result<RevisionMeta, CatalogError> {
        let staged = self.stage_revision(card_id, rules, live_at, source, now)?;
        self.enter_revision(staged)
    }

    /// Writes a new revision's shard documents and builds its index, without the write lock:
    /// their ids name the revision by a fresh documents key, not by its number, so nothing
    /// else writes them.
    pub(super) fn stage_revision(
        &self,
        card_id: &str,
        rules: Vec<(String, Rule)>,
        live_at: Option<i64>,
        source: &str,
        now: i64,
    ) -> Result<Staged<'_>, CatalogError> {
        self.card(card_id)?;
        let (shards, buckets) = bucketed::layout_for(rules.len());
        let meta = RevisionMeta {
            // Numbered when entered.
            rev: 0,
            created: now,
            live_at,
            source: source.to_owned(),
            shards,
            buckets,
            docs: docs_key(),
            gens: BTreeMap::new(),
        };
        let ids = (0..shards)
            .map(|shard| DocId::rules(card_id, &meta, shard).to_string())
            .collect();
        let staging = self.staging(ids);
        let index = self.write_shards(card_id, &meta, rules)?;
        Ok(Staged {
            card: card_id.to_owned(),
            meta,
            index,
            _staging: staging,
        })
    }

    /// Enters a staged revision in its card, numbered after the card's last. An edit the
    /// card's live revision took meanwhile is carried onto it, like any edit racing an import.
    /// When the card was deleted meanwhile, or the entry cannot be written, the staged
    /// documents are removed: no revision names them.
    pub(super) fn enter_revision(&self, staged: Staged<'_>) -> Result<RevisionMeta, CatalogError> {
        let Staged {
            card: card_id,
            mut meta,
            index,
            _staging,
        } = staged;
        let _w = self.inner.write.lock();
        let entered = self.card(&card_id).and_then(|card| {
            meta.rev = card.revisions.keys().next_back().map_or(1, |n| n + 1);
            let created = meta.created;
            self.put_revision(
                &card,
                RevisionView::new(meta.clone(), index, created),
                created,
            )
        });
        let doc_id = |shard| DocId::rules(&card_id, &meta, shard).to_string();
        if let Err(e) = entered {
            bucketed::remove(&self.inner.docs, &doc_id, meta.shards);
            return Err(e);
        }
        bucketed::announce(&self.inner.docs, &doc_id, meta.shards);
        // An edit taken while the documents were written, or after the revision's time by a
        // request that began earlier.
        self.carry_edits(&card_id);
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
            .change::<_, CatalogError>(&DocId::card(&card_id).to_string(), |d| {
                put_json(d, &ROOT, "meta", &card_meta)?;
                let revs = map_id(d, ROOT, "revisions")?;
                put_json(d, &revs, &meta.rev.to_string(), &meta)
            })?;
        self.show_revision(card, card_meta, revision);
        Ok(())
    }

    /// Shows card `card` with settings `meta` and `revision` in place of its revision of the
    /// same number (the view only: what it shows is already durable).
    pub(super) fn show_revision(&self, card: &CardView, meta: CardMeta, revision: RevisionView) {
        let mut revisions = card.revisions.clone();
        revisions.insert(revision.meta.rev, revision);
        let id = meta.id.clone();
        let next = CardView { meta, revisions };
        self.update_view(|v| {
            v.cards.insert(id, Arc::new(next));
        });
    }

    /// Replaces dataset `kind` with `rows` (validated: unique digit keys), atomically: the new
    /// generation's shard documents are written first, then the registry entry flips to them.
    pub fn import_dataset(
        &self,
        kind: DatasetKind,
        rows: DatasetRows,
        now: i64,
    ) -> Result<DatasetMeta, CatalogError> {
        // The generation's documents are written without the write lock (their ids hold a
        // fresh documents key, so nothing else writes them), as a revision's are; the registry
        // entry under it.
        let base = self.view().datasets.get(&kind).map(|d| d.meta.generation);
        let (shards, buckets) = bucketed::layout_for(rows.rows.len());
        let meta = DatasetMeta {
            name: kind.as_str().to_owned(),
            generation: base.map_or(1, |g| g + 1),
            shards,
            buckets,
            fields: rows.fields,
            rows: rows.rows.len(),
            imported: now,
            docs: docs_key(),
        };
        let doc_id = |shard| DocId::dataset(kind, &meta, shard).to_string();
        let _staging = self.staging((0..shards).map(doc_id).collect());
        let encoded = rows.rows.iter().map(|(k, v)| {
            (
                k.clone(),
                serde_json::to_string(v).expect("strings serialise"),
            )
        });
        bucketed::write(&self.inner.docs, &doc_id, shards, buckets, encoded)?;
        let _w = self.inner.write.lock();
        // The generation served now: the one imported meanwhile, if one was.
        let previous = self.view().datasets.get(&kind).map(|d| d.meta.clone());
        let entered = self
            .inner
            .docs
            .change::<_, CatalogError>(DATASETS_DOC, |d| {
                let map = map_id(d, ROOT, "datasets")?;
                put_json(d, &map, kind.as_str(), &meta)
            });
        if let Err(e) = entered {
            bucketed::remove(&self.inner.docs, &doc_id, shards);
            return Err(e);
        }
        bucketed::announce(&self.inner.docs, &doc_id, shards);
        let dataset = Arc::new(Dataset::new(kind, meta.clone(), rows.rows));
        self.update_view(|v| {
            v.datasets.insert(kind, dataset);
        });
        if let Some(old) = previous {
            bucketed::remove(
                &self.inner.docs,
                &|shard| DocId::dataset(kind, &old, shard).to_string(),
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
        let doc_id = |shard| DocId::rules(card, meta, shard).to_string();
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
