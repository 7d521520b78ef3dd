//! Remote apply: a peer's sync message for a catalog document, and bringing the view up to
//! date with it (rules applied in place, cards and datasets reloaded, lost revision numbers
//! renumbered).

use super::doc_id::DocId;
use super::load::{
    load_card, load_dataset, read_accounts, read_dataset_metas, read_registry, with_doc,
};
use super::{map_id, put_json, rev_key, str_of, CardView, Catalog, CatalogError, RevisionView};
use crate::bucketed;
use crate::docstore::DocStore;
use automerge::{ReadDoc, ROOT};
use edgerate_model::card::RevisionMeta;
use edgerate_model::rule::Rule;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Catalog {
    /// The loaded revision whose rules document `id` is, if any.
    fn revision_of(&self, id: &DocId) -> Option<RevisionView> {
        let DocId::Rules { card: card_id, .. } = id else {
            return None;
        };
        let view = self.view();
        let card = view.cards.get(card_id)?;
        card.revisions
            .values()
            .find(|r| (0..r.meta.shards).any(|s| DocId::rules(card_id, &r.meta, s) == *id))
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
        let id = DocId::parse(doc_id);
        // Revisions are loaded only under this lock, so this holds until the view is updated.
        let loaded = id.as_ref().and_then(|id| self.revision_of(id));
        let touched = self
            .inner
            .docs
            .receive_sync(doc_id, state, message, loaded.is_some())?;
        match (loaded, id) {
            (Some(rev), _) => apply_touched(&self.inner.docs, doc_id, &rev, &touched),
            (None, Some(id)) => self.apply_remote(&id),
            // Not a document of the catalog: stored, and read by nothing.
            (None, None) => Ok(()),
        }
    }

    /// Brings the view up to date after a peer's change to document `id` (any but the rules
    /// of a loaded revision). The caller holds the write lock.
    fn apply_remote(&self, id: &DocId) -> Result<(), CatalogError> {
        let docs = &self.inner.docs;
        match id {
            DocId::Accounts => {
                let accounts = read_accounts(docs)?;
                self.update_view(|v| {
                    v.accounts.clear();
                    v.key_hashes.clear();
                    for account in accounts {
                        v.insert_account(account);
                    }
                });
            }
            DocId::Cards => {
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
            DocId::Datasets | DocId::Dataset { .. } => self.reload_datasets()?,
            DocId::Card { card } => {
                let registry = read_registry(docs)?;
                self.renumber_lost_revisions(card)?;
                self.reload_card(card, &registry)?;
            }
            DocId::Rules { card, .. } => {
                // Rules of a revision not loaded yet: it may be complete now; or of a
                // generation not served, which the reload leaves if a served one replaced it.
                let registry = read_registry(docs)?;
                self.reload_card(card, &registry)?;
            }
        }
        Ok(())
    }

    /// Revisions written here that lost their number to a revision written at the same time
    /// elsewhere (two imports into one card at once in two regions) get the next free number,
    /// so no acknowledged import is lost; the number's winner is written again to settle the
    /// conflict. Only the losing revision's author renumbers it, so every node agrees.
    fn renumber_lost_revisions(&self, card: &str) -> Result<(), CatalogError> {
        let doc_id = DocId::card(card).to_string();
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

    /// Re-reads card `id` if the registry lists it and its document is here.
    fn reload_card(
        &self,
        id: &str,
        registry: &HashMap<String, String>,
    ) -> Result<(), CatalogError> {
        let arrived = self
            .inner
            .docs
            .get(&DocId::card(id).to_string())
            .is_some_and(|handle| {
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
        // A card with a rebased shard: the documents a served generation replaced are left
        // (idempotent). At every reload, not only when the served generation changes: a losing
        // generation's document can arrive before the card records it, and its record then
        // changes nothing served (the document was kept until the next start).
        let rebased = card.revisions.values().any(|r| !r.meta.gens.is_empty());
        self.update_view(|v| {
            v.remove_card(id);
            v.insert_card(card);
        });
        // Left first: an edit carried out of a replaced document may in turn need carrying onto
        // a newer revision.
        if rebased {
            self.leave_replaced(id);
        }
        if changed {
            self.carry_edits(id);
        }
        Ok(())
    }

    /// Forgets a card a peer deleted, and its documents.
    fn drop_card(&self, card: &CardView) -> Result<(), CatalogError> {
        let id = &card.meta.id;
        self.update_view(|v| v.remove_card(id));
        for doc in self.rule_docs(id) {
            if let Err(e) = self.inner.docs.remove(&doc) {
                tracing::warn!(doc = %doc, error = %e, "could not remove a shard document");
            }
        }
        self.inner.docs.remove(&DocId::card(id).to_string())?;
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
                bucketed::remove(
                    docs,
                    &|s| DocId::dataset(kind, &old, s).to_string(),
                    old.shards,
                );
            }
        }
        Ok(())
    }
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
    // Read first, then written to the index: queries never wait on the document's lock.
    let rules = with_doc(docs, doc_id, |d| {
        let mut rules = Vec::with_capacity(prefixes.len());
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
                Some(Ok(rule)) => rules.push((prefix, Some(rule))),
                None => rules.push((prefix, None)),
                Some(Err(_)) => tracing::warn!(%prefix, "skipped an unreadable rule from a peer"),
            }
        }
        Ok(rules)
    })?;
    let mut index = rev.index.write();
    for (prefix, rule) in rules {
        match rule {
            Some(rule) => {
                index.insert(prefix, rule);
            }
            None => {
                index.remove(prefix);
            }
        }
    }
    Ok(())
}
