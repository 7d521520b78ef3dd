//! Remote apply: a peer's sync message for a catalog document, and bringing the view up to
//! date with it (rules applied in place, cards and datasets reloaded, lost revision numbers
//! renumbered).

use super::doc_id::DocId;
use super::load::{
    index_new_revisions, load_card, load_dataset, read_accounts, read_dataset_metas, read_registry,
    with_doc, Indexes,
};
use super::{map_id, put_json, rev_key, str_of, CardView, Catalog, CatalogError, RevisionView};
use crate::background;
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
        let DocId::Rules {
            card: card_id,
            shard,
            ..
        } = id
        else {
            return None;
        };
        let view = self.view();
        let card = view.cards.get(card_id)?;
        // The id's own shard only: one id built a revision, not one a shard.
        card.revisions
            .values()
            .find(|r| *shard < r.meta.shards && DocId::rules(card_id, &r.meta, *shard) == *id)
            .cloned()
    }

    /// Whether `doc_id` is a rules document of a revision not loaded (one still arriving): a
    /// peer's message for it is the bulk of a deck, written and indexed at the background
    /// priority ([`Self::receive`]).
    pub fn is_arriving(&self, doc_id: &str) -> bool {
        matches!(DocId::parse(doc_id), Some(id @ DocId::Rules { .. }) if self.revision_of(&id).is_none())
    }

    /// Applies a peer's sync message for document `doc_id`, durably, and brings the view up to
    /// date. Rules of a loaded revision are applied to its index one by one (the rules the new
    /// changes touched), never by reloading it, under the write lock throughout, so a local
    /// edit of the same rule cannot slip between the document and the index.
    ///
    /// The bulk of a replicated deck is kept off the serving path: the rules documents of a
    /// revision still arriving are written, and a new revision's index is built, at the
    /// background priority and outside the write lock ([`background::lowered`]), so the
    /// queries and edits of a node sharing its cores go first (`scripts/bench-load.sh`). The
    /// lock is taken only to put the result in the view.
    pub fn receive(
        &self,
        doc_id: &str,
        state: &mut automerge::sync::State,
        message: automerge::sync::Message,
    ) -> Result<(), CatalogError> {
        let id = DocId::parse(doc_id);
        let deferred = match &id {
            Some(rules @ DocId::Rules { .. }) if self.revision_of(rules).is_none() => {
                self.receive_arriving(doc_id, rules, state, message)?
            }
            _ => {
                let _w = self.inner.write.lock();
                // Revisions are loaded only under this lock, so this holds until the view is
                // updated.
                let loaded = id.as_ref().and_then(|id| self.revision_of(id));
                let before = self.inner.docs.receive_sync(doc_id, state, message)?;
                match (loaded, &id) {
                    (Some(rev), _) => {
                        apply_since(&self.inner.docs, doc_id, &rev, &before)?;
                        Vec::new()
                    }
                    (None, Some(id)) => self.apply_remote(id)?,
                    // Not a document of the catalog: stored, and read by nothing.
                    (None, None) => Vec::new(),
                }
            }
        };
        for card in deferred {
            self.load_new_revisions(&card)?;
        }
        Ok(())
    }

    /// A rules document of a revision not loaded (one still arriving, or a generation not
    /// served): written at the background priority without the write lock (no local edit
    /// goes into a revision the view lacks). Returns the cards whose new revisions are to be
    /// indexed.
    fn receive_arriving(
        &self,
        doc_id: &str,
        id: &DocId,
        state: &mut automerge::sync::State,
        message: automerge::sync::Message,
    ) -> Result<Vec<String>, CatalogError> {
        let docs = &self.inner.docs;
        let before = background::lowered(|| docs.receive_sync(doc_id, state, message))?;
        let _w = self.inner.write.lock();
        match self.revision_of(id) {
            // Loaded meanwhile, maybe from the document as it was before this message (the
            // revision completed through another peer): its rules go in as a peer's edits do.
            Some(rev) => {
                apply_since(docs, doc_id, &rev, &before)?;
                Ok(Vec::new())
            }
            None => self.apply_remote(id),
        }
    }

    /// Indexes the new revisions of card `card` a reload left out ([`Indexes::Later`]), at
    /// the background priority and outside the write lock, then loads the card again with
    /// them under it.
    fn load_new_revisions(&self, card: &str) -> Result<(), CatalogError> {
        let docs = &self.inner.docs;
        let existing = self.view().cards.get(card).cloned();
        let built = background::lowered(|| index_new_revisions(docs, card, existing.as_deref()))
            // The load under the lock builds them then, and reports what fails.
            .unwrap_or_default();
        let _w = self.inner.write.lock();
        let registry = read_registry(docs)?;
        self.reload_card(card, &registry, Indexes::Ahead(built))?;
        Ok(())
    }

    /// Brings the view up to date after a peer's change to document `id` (any but the rules
    /// of a loaded revision). The caller holds the write lock. Returns the cards whose new
    /// revisions were left out, to be indexed outside it ([`Self::load_new_revisions`]).
    fn apply_remote(&self, id: &DocId) -> Result<Vec<String>, CatalogError> {
        let docs = &self.inner.docs;
        let mut deferred = Vec::new();
        let mut reload = |card: &str, registry: &HashMap<String, String>| {
            if self.reload_card(card, registry, Indexes::Later(false))? {
                deferred.push(card.to_owned());
            }
            Ok::<_, CatalogError>(())
        };
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
                    reload(id, &registry)?;
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
                reload(card, &registry)?;
            }
            DocId::Rules { card, .. } => {
                // Rules of a revision not loaded yet: it may be complete now; or of a
                // generation not served, which the reload leaves if a served one replaced it.
                let registry = read_registry(docs)?;
                reload(card, &registry)?;
            }
        }
        Ok(deferred)
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

    /// Re-reads card `id` if the registry lists it and its document is here, new revisions'
    /// indexes coming as `indexes` says. Returns whether some were left out
    /// ([`Indexes::Later`]).
    fn reload_card(
        &self,
        id: &str,
        registry: &HashMap<String, String>,
        mut indexes: Indexes,
    ) -> Result<bool, CatalogError> {
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
            return Ok(false);
        }
        let existing = self.view().cards.get(id).cloned();
        let card = load_card(&self.inner.docs, id, existing.as_deref(), &mut indexes)?;
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
        Ok(matches!(indexes, Indexes::Later(true)))
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
/// shard documents since heads `before`: each is read back from the document (the winner of
/// any conflict) and put in, or taken out of, the index. The caller holds the write lock.
fn apply_since(
    docs: &DocStore,
    doc_id: &str,
    rev: &RevisionView,
    before: &[automerge::ChangeHash],
) -> Result<(), CatalogError> {
    let prefixes = docs.keys_since(doc_id, before);
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

#[cfg(test)]
mod tests {
    use super::super::tests::{actor, card_meta, rev_rule, rule, sync, target};
    use super::*;
    use automerge::sync::State;

    /// A peer's rules written outside the write lock, as for a revision still arriving, while
    /// the revision was loaded from the document as it was before them (it completed through
    /// another peer meanwhile): they reach its index all the same.
    #[test]
    fn rules_arriving_while_their_revision_is_loaded_reach_its_index() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Catalog::open(a_dir.path(), actor()).unwrap();
        let b = Catalog::open(b_dir.path(), automerge::ActorId::from(&[2u8; 16][..])).unwrap();
        a.create_card(card_meta("c1")).unwrap();
        a.set_rule::<CatalogError>(target(1, "447"), 200, |_| Ok(rule(1)))
            .unwrap();
        sync(&a, &b);
        a.set_rule::<CatalogError>(target(1, "447"), 300, |_| Ok(rule(5)))
            .unwrap();
        let meta = b.view().cards["c1"].revisions[&1].meta.clone();
        let shard = bucketed::locate("447", meta.shards, meta.buckets).0;
        let doc = DocId::rules("c1", &meta, shard);
        let doc_id = doc.to_string();
        let (mut a_to_b, mut b_to_a) = (State::new(), State::new());
        for _ in 0..10 {
            let to_b = a.docs().generate_sync(&doc_id, &mut a_to_b);
            if let Some(message) = &to_b {
                b.receive_arriving(&doc_id, &doc, &mut b_to_a, message.clone())
                    .unwrap();
            }
            let to_a = b.docs().generate_sync(&doc_id, &mut b_to_a);
            if let Some(message) = &to_a {
                a.receive(&doc_id, &mut a_to_b, message.clone()).unwrap();
            }
            if to_b.is_none() && to_a.is_none() {
                break;
            }
        }
        assert_eq!(a.docs().heads(&doc_id), b.docs().heads(&doc_id));
        assert_eq!(rev_rule(&b, "c1", 1, "447"), Some(rule(5)));
    }
}
