//! Rebasing: a shard document whose history has outgrown its rules is replaced by a new
//! generation written from its current state, so that restarts and memory stay bounded
//! whatever the edit history (Automerge keeps every change a document ever had).
//!
//! The node that rebases writes the new document (one change per bucket, like an import),
//! then records the generation in the card's document under its own key
//! (`gen:<revision key>:<shard>:<generation key>`, a [`ShardGen`] with, per actor, how far into
//! the old document's history the rebase reached: [`Covered`]), and removes the old document.
//! Entries are only ever added, so two nodes that rebase one shard at once never overwrite each
//! other; every node serves the deepest generation it holds whole (ties: the greater key), the
//! same one everywhere once the documents have arrived.
//!
//! A node that moves to a newer generation leaves its older documents of the shard: its own
//! edits there that the new generation does not cover (made concurrently with the rebase, or
//! into a generation that lost) are carried into it as ordinary edits, those it covers are kept
//! as a bundle of notes ([`EditBundle`]: for carrying onto a racing import, and for telling
//! what a later rebase covered), and the old document is removed. Only an edit's author carries
//! it, so it happens once. What a node cannot know: a document more than [`LINEAGE`]
//! generations back, whose coverage is no longer recorded (its own edits there are carried
//! unless the new generation holds a later edit of the prefix).

use super::carry::{read_history, BundledEdit, EditBundle, Noted, REBASE_TAG};
use super::doc_id::{rules_key, DocId};
use super::load::with_doc;
use super::{
    docs_key, map_id, put_json, CardView, Catalog, CatalogError, RevisionView, RuleTarget,
};
use crate::bucketed::{self, Bucket};
use automerge::{
    hydrate, transaction::CommitOptions, transaction::Transactable, AutoCommit, ChangeHash,
    ReadDoc, ScalarValue, ValueRef, ROOT,
};
use edgerate_model::card::{Covered, RevisionMeta, ShardGen};
use edgerate_model::rule::Rule;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A shard is rebased once its history holds more changes than this…
const MIN_CHANGES: usize = 1_000;
/// …and more than its rules divided by this.
const RULES_PER_CHANGE: usize = 50;
/// A node other than the shard's preferred rebaser (the least actor among its editors) waits
/// for this many times as many changes, so two nodes seldom rebase one shard at once and a
/// lost preferred node holds nothing up.
const OTHERS_WAIT: usize = 2;
/// Replaced documents a generation remembers the coverage of.
pub(super) const LINEAGE: usize = 8;
/// Card document keys of generations: `gen:<revision key>:<shard>:<generation key>`.
const GEN_PREFIX: &str = "gen:";

/// Every generation recorded in a card's document: (revision key, shard) → generations.
pub(super) type Generations = HashMap<(String, u32), Vec<ShardGen>>;

/// Reads the generations recorded in a card's document.
pub(super) fn read_generations(d: &AutoCommit, doc: &str) -> Generations {
    let mut out = Generations::new();
    for item in d.map_range(ROOT, GEN_PREFIX.to_owned()..) {
        let Some(rest) = item.key.strip_prefix(GEN_PREFIX) else {
            break;
        };
        let parsed = rest.split(':').collect::<Vec<_>>();
        let gen: Option<ShardGen> = match &item.value {
            ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => serde_json::from_str(s).ok(),
            _ => None,
        };
        match (parsed.as_slice(), gen) {
            // A generation is named after the revision it belongs to, so an entry can never
            // point a revision at another one's documents.
            ([base, shard, key], Some(gen))
                if gen.docs == *key
                    && key.strip_prefix(base).is_some_and(|g| g.starts_with('_')) =>
            {
                if let Ok(shard) = shard.parse() {
                    out.entry(((*base).to_owned(), shard))
                        .or_default()
                        .push(gen);
                }
            }
            _ => tracing::warn!(doc, key = %item.key, "skipping an unreadable generation"),
        }
    }
    for gens in out.values_mut() {
        gens.sort_by(|a, b| order(b).cmp(&order(a)));
    }
    out
}

/// Generations in the order they supersede each other: deeper first, then the greater key.
fn order(gen: &ShardGen) -> (u32, &str) {
    (gen.depth, gen.docs.as_str())
}

/// The edits of `edits` a bundle written into a generation with replaced documents `lineage`
/// keeps: those made in one of them, but the oldest. So every edit a bundle holds was made in
/// a document the next generation still names, and one made in a document its lineage does
/// not name was made in a generation that lost (bundles and lineages both bounded by
/// [`LINEAGE`]).
fn bundled(edits: Vec<BundledEdit>, lineage: &[Covered]) -> Vec<BundledEdit> {
    let named = &lineage[..lineage.len().min(LINEAGE - 1)];
    edits
        .into_iter()
        .filter(|e| named.iter().any(|c| c.docs == e.docs))
        .collect()
}

/// The document key a shard is served from: its generation's, or the revision's own.
fn current_key(meta: &RevisionMeta, shard: u32) -> String {
    meta.gens
        .get(&shard)
        .map_or_else(|| rules_key(meta), |g| g.docs.clone())
}

/// What a shard document's history holds.
struct History {
    changes: usize,
    rules: usize,
    /// The least actor (hex) among those whose edits it holds.
    preferred: Option<String>,
}

fn history(d: &mut AutoCommit, buckets: u32) -> History {
    let rules = (0..buckets)
        .filter_map(|b| map_id(d, ROOT, &bucketed::bucket_key(b)).ok())
        .map(|map| d.length(&map))
        .sum();
    let metas = d.get_changes_meta(&[]);
    let preferred = metas
        .iter()
        .filter(|m| matches!(Noted::read(m.message.as_deref()), Noted::Edit(_)))
        .map(|m| m.actor.to_hex_string())
        .min();
    History {
        changes: metas.len(),
        rules,
        preferred,
    }
}

/// This node's edits a document (`docs`) holds, each with where it was made: those made in
/// it, and those it inherited (in bundles) from earlier generations.
fn own_edits(d: &mut AutoCommit, docs: &str, me: &automerge::ActorId) -> Vec<BundledEdit> {
    let mut edits = Vec::new();
    for m in d.get_changes_meta(&[]) {
        if *m.actor != *me {
            continue;
        }
        match Noted::read(m.message.as_deref()) {
            Noted::Edit(note) => edits.push(BundledEdit {
                time: m.timestamp,
                docs: docs.to_owned(),
                seq: m.seq,
                note,
            }),
            Noted::Bundle(bundle) => edits.extend(bundle),
            Noted::Rebase | Noted::Other => {}
        }
    }
    edits
}

/// Per actor (hex), the highest sequence number among a document's changes.
fn seqs(d: &mut AutoCommit) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for m in d.get_changes_meta(&[]) {
        let seq = out.entry(m.actor.to_hex_string()).or_insert(0);
        *seq = (*seq).max(m.seq);
    }
    out
}

/// The newest change time in a document (what its rebased generation is stamped with, so a
/// rebase does not read as an edit in the card's `updated`).
fn newest_time(d: &mut AutoCommit) -> i64 {
    let heads = d.get_heads();
    heads
        .iter()
        .filter_map(|h| d.get_change_meta_by_hash(h).map(|m| m.timestamp))
        .max()
        .unwrap_or(0)
}

/// A shard document's rules, bucket by bucket, ready to be written into a new document.
fn buckets_of(d: &AutoCommit, buckets: u32) -> Result<Vec<Bucket>, CatalogError> {
    (0..buckets)
        .map(|b| {
            let map = map_id(d, ROOT, &bucketed::bucket_key(b))?;
            Ok(d.map_range(&map, ..)
                .filter_map(|item| match item.value {
                    ValueRef::Scalar(automerge::ScalarValueRef::Str(value)) => Some((
                        item.key.into_owned(),
                        hydrate::Value::Scalar(ScalarValue::Str(value.into())),
                    )),
                    _ => None,
                })
                .collect())
        })
        .collect()
}

/// The current value of `prefix` in a shard document (the encoded rule), if any.
fn value_of(d: &AutoCommit, meta: &RevisionMeta, prefix: &str) -> Option<String> {
    let (_, bucket) = bucketed::locate(prefix, meta.shards, meta.buckets);
    let map = map_id(d, ROOT, &bucketed::bucket_key(bucket)).ok()?;
    let (value, _) = d.get(&map, prefix).ok()??;
    value.as_str().map(str::to_owned)
}

impl Catalog {
    /// Rebases every shard document of a loaded revision whose history has outgrown its rules
    /// (see the module's doc). For the background task: each rebase writes its shard afresh
    /// outside the write lock (about a second for 100k rules) and takes the lock only to switch.
    /// Returns how many shards were rebased; a failure is logged and retried next time.
    pub fn rebase_due(&self) -> usize {
        let view = self.view();
        let me = self.inner.docs.actor().to_hex_string();
        let mut rebased = 0;
        for card in view.cards.values() {
            for rev in card.revisions.values() {
                for shard in 0..rev.meta.shards {
                    let id = DocId::rules(&card.meta.id, &rev.meta, shard).to_string();
                    if !self.history_changed(&id) {
                        continue;
                    }
                    let Some(h) = self
                        .inner
                        .docs
                        .inspect(&id, |d| history(d, rev.meta.buckets))
                    else {
                        continue;
                    };
                    let limit = MIN_CHANGES.max(h.rules / RULES_PER_CHANGE);
                    let preferred = h.preferred.as_deref() == Some(me.as_str());
                    let due = h.changes > limit && (preferred || h.changes > limit * OTHERS_WAIT);
                    if !due {
                        continue;
                    }
                    match self.rebase_shard(&card.meta.id, &rev.meta, shard) {
                        Ok(true) => {
                            rebased += 1;
                            tracing::info!(
                                card = %card.meta.id,
                                rev = rev.meta.rev,
                                shard,
                                changes = h.changes,
                                rules = h.rules,
                                "rebased a shard document"
                            );
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            card = %card.meta.id,
                            rev = rev.meta.rev,
                            shard,
                            error = %e,
                            "could not rebase a shard document; retried later"
                        ),
                    }
                }
            }
        }
        rebased
    }

    /// Rebases every shard document of every revision of card `card` now, whatever its
    /// history (the background pass, [`Catalog::rebase_due`], waits for a long one). Returns
    /// how many were rebased.
    pub fn rebase_card(&self, card: &str) -> Result<usize, CatalogError> {
        let Some(view) = self.view().cards.get(card).cloned() else {
            return Err(CatalogError::NotFound(format!("card '{card}'")));
        };
        let mut rebased = 0;
        for rev in view.revisions.values() {
            for shard in 0..rev.meta.shards {
                rebased += usize::from(self.rebase_shard(card, &rev.meta, shard)?);
            }
        }
        Ok(rebased)
    }

    /// Whether document `id` changed since the last time this asked (its heads moved).
    fn history_changed(&self, id: &str) -> bool {
        let Some(heads) = self.inner.docs.heads(id) else {
            return false;
        };
        let mut checked = self.inner.checked.lock();
        if checked.get(id) == Some(&heads) {
            return false;
        }
        checked.insert(id.to_owned(), heads);
        true
    }

    /// Rebases shard `shard` of revision `meta` of card `card`: `false` when the revision
    /// changed meanwhile (nothing is left behind then).
    fn rebase_shard(
        &self,
        card: &str,
        meta: &RevisionMeta,
        shard: u32,
    ) -> Result<bool, CatalogError> {
        let old = DocId::rules(card, meta, shard).to_string();
        let key = format!("{}_{}", rules_key(meta), docs_key());
        let new = DocId::Rules {
            card: card.to_owned(),
            docs: key.clone(),
            shard,
        }
        .to_string();
        // The rules as they are now, read and written outside the write lock: edits go on.
        let read = self.inner.docs.inspect(&old, |d| {
            let heads = d.get_heads();
            Ok::<_, CatalogError>((heads, buckets_of(d, meta.buckets)?, newest_time(d)))
        });
        let Some((heads, maps, time)) = read.transpose()? else {
            return Ok(false);
        };
        let options = || {
            CommitOptions::default()
                .with_time(time)
                .with_message(REBASE_TAG)
        };
        // Not offered to peers before the switch names it: a generation no entry names is left
        // alone everywhere (it may be one whose entry is on its way), and this one, if the
        // switch never happens, is known to no other node.
        bucketed::create_shard(&self.inner.docs, &new, maps, &options, false)?;
        let _w = self.inner.write.lock();
        let switched = self.switch_to_rebased(card, meta, shard, &old, &key, &heads);
        if !matches!(switched, Ok(true)) {
            if let Err(e) = self.inner.docs.remove(&new) {
                tracing::warn!(doc = %new, error = %e, "could not remove an unused rebased document");
            }
        }
        switched
    }

    /// The rebase's switch, under the write lock: what changed in the old document since it was
    /// read (`heads`) is written into the new one, this node's edit notes are kept in it, the
    /// generation is recorded and shown, and the old document is removed.
    fn switch_to_rebased(
        &self,
        card_id: &str,
        meta: &RevisionMeta,
        shard: u32,
        old: &str,
        key: &str,
        heads: &[ChangeHash],
    ) -> Result<bool, CatalogError> {
        let Some(card) = self.view().cards.get(card_id).cloned() else {
            return Ok(false);
        };
        let Some(rev) = card
            .revisions
            .values()
            .find(|r| rules_key(&r.meta) == rules_key(meta))
        else {
            return Ok(false);
        };
        if DocId::rules(card_id, &rev.meta, shard).to_string() != old {
            return Ok(false);
        }
        let me = self.inner.docs.actor().clone();
        let old_key = current_key(&rev.meta, shard);
        let previous = rev.meta.gens.get(&shard);
        let read = self.inner.docs.inspect(old, |d| {
            let since: Vec<String> = d
                .get_changes(heads)
                .iter()
                .flat_map(|c| c.decode().operations)
                .filter_map(|op| match op.key {
                    automerge::legacy::Key::Map(k) if edgerate_model::number::is_prefix(&k) => {
                        Some(k.to_string())
                    }
                    _ => None,
                })
                .collect();
            let delta: Vec<(String, Option<String>)> = since
                .into_iter()
                .map(|p| {
                    let value = value_of(d, &rev.meta, &p);
                    (p, value)
                })
                .collect();
            (seqs(d), own_edits(d, &old_key, &me), newest_time(d), delta)
        });
        let Some((covered, edits, time, delta)) = read else {
            return Ok(false);
        };
        let mut from = vec![Covered {
            docs: old_key,
            seqs: covered,
        }];
        from.extend(previous.iter().flat_map(|g| g.from.iter().cloned()));
        from.truncate(LINEAGE);
        let kept = bundled(edits, &from);
        let new = DocId::Rules {
            card: card_id.to_owned(),
            docs: key.to_owned(),
            shard,
        }
        .to_string();
        self.inner.docs.change::<_, CatalogError>(&new, |d| {
            for (prefix, value) in &delta {
                let (_, bucket) = bucketed::locate(prefix, rev.meta.shards, rev.meta.buckets);
                let map = map_id(d, ROOT, &bucketed::bucket_key(bucket))?;
                match value {
                    Some(v) => d.put(&map, prefix.as_str(), v.as_str())?,
                    None if d.get(&map, prefix.as_str())?.is_some() => {
                        d.delete(&map, prefix.as_str())?
                    }
                    None => {}
                }
            }
            d.commit_with(
                CommitOptions::default()
                    .with_time(time)
                    .with_message(REBASE_TAG),
            );
            if !kept.is_empty() {
                d.empty_change(
                    CommitOptions::default()
                        .with_time(time)
                        .with_message(EditBundle::write(&kept)),
                );
            }
            Ok(())
        })?;
        let gen = ShardGen {
            docs: key.to_owned(),
            depth: previous.map_or(0, |g| g.depth) + 1,
            from,
        };
        let base = rules_key(&rev.meta);
        self.inner
            .docs
            .change::<_, CatalogError>(&DocId::card(card_id).to_string(), |d| {
                put_json(d, &ROOT, &format!("{GEN_PREFIX}{base}:{shard}:{key}"), &gen)
            })?;
        self.inner.docs.announce(&new);
        let mut next = rev.clone();
        next.meta.gens.insert(shard, gen);
        self.put_revision_view(&card, next);
        self.inner.docs.remove(old)?;
        Ok(true)
    }

    /// Shows `revision` in place of its card's revision of the same number (no write).
    fn put_revision_view(&self, card: &CardView, revision: RevisionView) {
        let mut revisions = card.revisions.clone();
        revisions.insert(revision.meta.rev, revision);
        let next = CardView {
            meta: card.meta.clone(),
            revisions,
        };
        let id = next.meta.id.clone();
        self.update_view(|v| {
            v.cards.insert(id, Arc::new(next));
        });
    }

    /// Leaves every shard document of card `card_id` that a generation this node serves has
    /// replaced (see the module's doc). The caller holds the write lock. A failure is logged,
    /// not returned; the next start retries.
    pub(super) fn leave_replaced(&self, card_id: &str) {
        if let Err(e) = self.try_leave_replaced(card_id) {
            tracing::error!(
                card = card_id,
                error = %e,
                "could not carry rule edits onto a rebased shard document; retried at the next start"
            );
        }
    }

    fn try_leave_replaced(&self, card_id: &str) -> Result<(), CatalogError> {
        let Some(card) = self.view().cards.get(card_id).cloned() else {
            return Ok(());
        };
        let card_doc = DocId::card(card_id).to_string();
        let recorded = with_doc(&self.inner.docs, &card_doc, |d| {
            Ok(read_generations(d, &card_doc))
        })?;
        let held: Vec<(String, u32)> = self
            .inner
            .docs
            .ids()
            .into_iter()
            .filter_map(|id| match DocId::parse(&id) {
                Some(DocId::Rules { card, docs, shard }) if card == card_id => Some((docs, shard)),
                _ => None,
            })
            .collect();
        for rev in card.revisions.values() {
            let base = rules_key(&rev.meta);
            for (&shard, gen) in &rev.meta.gens {
                for (docs, _) in held
                    .iter()
                    .filter(|(docs, s)| *s == shard && replaced(&base, shard, gen, docs, &recorded))
                {
                    self.leave(card_id, rev, shard, docs, gen)?;
                }
            }
        }
        Ok(())
    }

    /// Leaves document `docs` of shard `shard` of revision `rev` for generation `gen`: this
    /// node's edits there that `gen` does not cover are carried into it, the others kept as
    /// notes, and the document removed.
    fn leave(
        &self,
        card_id: &str,
        rev: &RevisionView,
        shard: u32,
        docs: &str,
        gen: &ShardGen,
    ) -> Result<(), CatalogError> {
        let old = DocId::Rules {
            card: card_id.to_owned(),
            docs: docs.to_owned(),
            shard,
        }
        .to_string();
        let me = self.inner.docs.actor().clone();
        let me_hex = me.to_hex_string();
        let Some(edits) = read_history(&self.inner.docs, &old, |d| Ok(own_edits(d, docs, &me)))?
        else {
            return Ok(());
        };
        let covers = |e: &BundledEdit| {
            gen.from
                .iter()
                .find(|c| c.docs == e.docs)
                .is_some_and(|c| c.covers(&me_hex, e.seq))
        };
        let (covered, uncovered): (Vec<BundledEdit>, Vec<BundledEdit>) =
            edits.into_iter().partition(|e| covers(e));
        // What the new generation keeps of this node's edits as notes: the covered ones, and
        // the uncovered ones that need no write (superseded, or already its state).
        let mut notes = bundled(covered, &gen.from);
        // Prefix → the latest uncovered edit of it.
        let mut carries: BTreeMap<String, BundledEdit> = BTreeMap::new();
        for e in uncovered {
            match carries.get(&e.note.prefix) {
                Some(c) if c.time > e.time => notes.push(e),
                _ => {
                    if let Some(older) = carries.insert(e.note.prefix.clone(), e) {
                        notes.push(older);
                    }
                }
            }
        }
        for (prefix, e) in carries {
            if self.edited_since(card_id, &rev.meta, &prefix, e.time)? {
                notes.push(e);
                continue;
            }
            let value = self
                .inner
                .docs
                .inspect(&old, |d| value_of(d, &rev.meta, &prefix))
                .flatten();
            let target = RuleTarget {
                card: card_id,
                rev: rev.meta.rev,
                prefix: &prefix,
            };
            let live = e.note.live.as_deref();
            match value.as_deref().map(Rule::decode) {
                Some(Ok(rule)) => self.put_rule(target, rev, e.time, live, rule)?,
                None if rev.index.read().get(&prefix).is_some() => {
                    self.remove_rule(target, rev, e.time, live)?;
                }
                Some(Err(_)) | None => {
                    notes.push(e);
                    continue;
                }
            }
            tracing::info!(
                card = card_id,
                prefix = %prefix,
                rev = rev.meta.rev,
                shard,
                edited = e.time,
                "carried a rule edit made concurrently with a rebase onto the new generation"
            );
        }
        if !notes.is_empty() {
            let time = notes.iter().map(|e| e.time).max().unwrap_or(0);
            let current = DocId::rules(card_id, &rev.meta, shard).to_string();
            self.inner.docs.change::<_, CatalogError>(&current, |d| {
                d.empty_change(
                    CommitOptions::default()
                        .with_time(time)
                        .with_message(EditBundle::write(&notes)),
                );
                Ok(())
            })?;
        }
        self.inner.docs.remove(&old)?;
        Ok(())
    }
}

impl Catalog {
    /// Removes the generations this node wrote but never switched to (a crash between writing
    /// one and recording it): no entry names them, and no other node has them. At start.
    pub(super) fn remove_unswitched(&self) {
        let me = self.inner.docs.actor().clone();
        let mut recorded: HashMap<String, Option<Generations>> = HashMap::new();
        for id in self.inner.docs.ids() {
            let Some(DocId::Rules { card, docs, shard }) = DocId::parse(&id) else {
                continue;
            };
            let Some((base, _)) = docs.split_once('_') else {
                continue;
            };
            let gens = recorded.entry(card.clone()).or_insert_with(|| {
                let doc = DocId::card(&card).to_string();
                with_doc(&self.inner.docs, &doc, |d| Ok(read_generations(d, &doc))).ok()
            });
            let Some(gens) = gens else {
                continue;
            };
            let named = gens
                .get(&(base.to_owned(), shard))
                .is_some_and(|g| g.iter().any(|g| g.docs == docs));
            let mine = self
                .inner
                .docs
                .inspect(&id, |d| {
                    d.get_changes_meta(&[]).iter().all(|m| *m.actor == me)
                })
                .unwrap_or(false);
            if !named && mine {
                tracing::info!(doc = %id, "removing a rebased document a crash left unswitched");
                if let Err(e) = self.inner.docs.remove(&id) {
                    tracing::warn!(doc = %id, error = %e, "could not remove a document");
                }
            }
        }
    }
}

/// Whether document key `docs` of a shard is one that generation `gen` (the one served)
/// supersedes: the revision's own document, or a recorded generation ordered before `gen`.
/// A document no entry names yet (a generation whose entry has not arrived) is not.
fn replaced(base: &str, shard: u32, gen: &ShardGen, docs: &str, recorded: &Generations) -> bool {
    if docs == gen.docs {
        return false;
    }
    if docs == base {
        return true;
    }
    recorded
        .get(&(base.to_owned(), shard))
        .into_iter()
        .flatten()
        .find(|g| g.docs == docs)
        .is_some_and(|g| order(g) < order(gen))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{actor, card_meta, racing_import, rev_rule, rule, sync, target};
    use super::*;

    fn other() -> automerge::ActorId {
        automerge::ActorId::from(&[2u8; 16][..])
    }

    /// The one shard document of revision `rev` of card c1 as served, and its change count.
    fn shard(c: &Catalog, rev: u32) -> (String, usize) {
        let meta = c.view().cards["c1"].revisions[&rev].meta.clone();
        let id = DocId::rules("c1", &meta, 0).to_string();
        let changes = c
            .docs()
            .inspect(&id, |d| d.get_changes_meta(&[]).len())
            .unwrap();
        (id, changes)
    }

    fn rules(c: &Catalog, rev: u32) -> Vec<(String, Rule)> {
        let view = c.view();
        let index = view.cards["c1"].revisions[&rev].index.read();
        index.iter().map(|(p, r)| (p, r.clone())).collect()
    }

    fn rebase(c: &Catalog, rev: u32) -> bool {
        let meta = c.view().cards["c1"].revisions[&rev].meta.clone();
        c.rebase_shard("c1", &meta, 0).unwrap()
    }

    fn set(c: &Catalog, rev: u32, prefix: &str, rate: i64, now: i64) {
        c.set_rule::<CatalogError>(target(rev, prefix), now, |_| Ok(rule(rate)))
            .unwrap();
    }

    fn rebased_docs(c: &Catalog) -> Vec<String> {
        let mut ids: Vec<String> = c
            .docs()
            .ids()
            .into_iter()
            .filter(|id| id.starts_with("rules-c1-"))
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_rebase_keeps_every_rule_drops_the_history_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path(), actor()).unwrap();
        c.create_card(card_meta("c1")).unwrap();
        let deck: Vec<(String, Rule)> = (0..2000).map(|i| (format!("44{i}"), rule(i))).collect();
        c.add_revision("c1", deck, Some(100), "import:csv", 100)
            .unwrap();
        for i in 0..150 {
            set(&c, 2, &format!("33{i}"), i, 200 + i);
        }
        c.delete_rule(target(2, "4410"), 400).unwrap();
        let before = rules(&c, 2);
        let (old, changes) = shard(&c, 2);
        assert!(changes > 150);
        assert!(rebase(&c, 2));
        let (new, changes) = shard(&c, 2);
        assert_ne!(old, new);
        assert!(changes < 40, "history dropped: {changes} changes");
        assert!(c.docs().get(&old).is_none(), "the old document is removed");
        assert_eq!(rules(&c, 2), before);
        let updated = c.view().cards["c1"].updated();
        assert_eq!(updated, 400, "a rebase is no edit");
        // Edits go on in the new generation, and a second rebase stacks on the first.
        set(&c, 2, "4411", 9, 500);
        assert!(rebase(&c, 2));
        assert_eq!(c.view().cards["c1"].revisions[&2].meta.gens[&0].depth, 2);
        set(&c, 2, "4412", 8, 600);
        let before = rules(&c, 2);
        drop(c);
        let c = Catalog::open(dir.path(), actor()).unwrap();
        assert_eq!(rules(&c, 2), before);
        assert_eq!(rev_rule(&c, "c1", 2, "4412"), Some(rule(8)));
        assert_eq!(
            rebased_docs(&c).len(),
            2,
            "revision 1's and 2's shard, nothing more"
        );
    }

    #[test]
    fn an_edit_racing_a_rebase_is_carried_by_its_author() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Catalog::open(a_dir.path(), actor()).unwrap();
        let b = Catalog::open(b_dir.path(), other()).unwrap();
        a.create_card(card_meta("c1")).unwrap();
        for i in 0..20 {
            set(&a, 1, &format!("44{i}"), i, 100 + i);
        }
        sync(&a, &b);
        set(&b, 1, "440", 70, 200); // covered: A has it when it rebases
        sync(&a, &b);
        set(&b, 1, "441", 71, 201); // concurrent with the rebase
        b.delete_rule(target(1, "442"), 202).unwrap();
        assert!(rebase(&a, 1));
        set(&a, 1, "443", 73, 203);
        sync(&a, &b);
        sync(&a, &b);
        for node in [&a, &b] {
            assert_eq!(rev_rule(node, "c1", 1, "440"), Some(rule(70)));
            assert_eq!(rev_rule(node, "c1", 1, "441"), Some(rule(71)));
            assert_eq!(rev_rule(node, "c1", 1, "442"), None);
            assert_eq!(rev_rule(node, "c1", 1, "443"), Some(rule(73)));
        }
        assert_eq!(rules(&a, 1), rules(&b, 1));
        let (id, _) = shard(&a, 1);
        assert_eq!(shard(&b, 1).0, id, "both serve the new generation");
        assert_eq!(a.docs().heads(&id), b.docs().heads(&id));
        assert_eq!(
            rebased_docs(&b),
            std::slice::from_ref(&id),
            "B left the old document"
        );
        // What B covered is kept as a note: a later rebase by B still knows it.
        drop(b);
        let b = Catalog::open(b_dir.path(), other()).unwrap();
        assert_eq!(rev_rule(&b, "c1", 1, "441"), Some(rule(71)));
        assert_eq!(rebased_docs(&b), [id]);
    }

    #[test]
    fn two_rebases_at_once_converge_and_keep_every_edit() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Catalog::open(a_dir.path(), actor()).unwrap();
        let b = Catalog::open(b_dir.path(), other()).unwrap();
        a.create_card(card_meta("c1")).unwrap();
        for i in 0..20 {
            set(&a, 1, &format!("44{i}"), i, 100 + i);
        }
        sync(&a, &b);
        set(&a, 1, "331", 1, 200);
        set(&b, 1, "332", 2, 201);
        set(&b, 1, "440", 50, 202);
        assert!(rebase(&a, 1));
        assert!(rebase(&b, 1));
        set(&a, 1, "333", 3, 203);
        set(&b, 1, "334", 4, 204);
        for _ in 0..3 {
            sync(&a, &b);
        }
        for node in [&a, &b] {
            for (prefix, rate) in [("331", 1), ("332", 2), ("333", 3), ("334", 4), ("440", 50)] {
                assert_eq!(
                    rev_rule(node, "c1", 1, prefix),
                    Some(rule(rate)),
                    "{prefix}"
                );
            }
            assert_eq!(rev_rule(node, "c1", 1, "4419"), Some(rule(19)));
        }
        assert_eq!(rules(&a, 1), rules(&b, 1));
        let (id, _) = shard(&a, 1);
        assert_eq!(shard(&b, 1).0, id, "both serve the same generation");
        assert_eq!(a.docs().heads(&id), b.docs().heads(&id));
        assert_eq!(rebased_docs(&a), std::slice::from_ref(&id));
        assert_eq!(rebased_docs(&b), [id]);
    }

    /// A rebase keeps what an edit's note says: an edit made into the live revision while an
    /// import made elsewhere was on its way is still carried onto it after the rebase.
    #[test]
    fn an_edit_racing_an_import_is_carried_after_a_rebase() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = racing_import(a_dir.path(), b_dir.path());
        set(&a, 1, "449", 9, 310);
        assert!(rebase(&a, 1));
        sync(&a, &b);
        sync(&a, &b);
        for node in [&a, &b] {
            assert_eq!(rev_rule(node, "c1", 2, "449"), Some(rule(9)));
            assert_eq!(rev_rule(node, "c1", 2, "33"), Some(rule(3)));
        }
    }

    #[test]
    fn a_long_history_is_rebased_by_the_background_pass_and_a_crashed_one_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path(), actor()).unwrap();
        c.create_card(card_meta("c1")).unwrap();
        assert_eq!(c.rebase_due(), 0);
        for i in 0..MIN_CHANGES {
            set(&c, 1, &format!("44{}", i % 50), i as i64, 100);
        }
        let (old, _) = shard(&c, 1);
        assert_eq!(c.rebase_due(), 1);
        assert_eq!(c.rebase_due(), 0, "nothing changed since");
        assert!(c.docs().get(&old).is_none());
        // A generation written but never switched to (a crash between): cleared at start.
        let meta = c.view().cards["c1"].revisions[&1].meta.clone();
        let orphan = DocId::Rules {
            card: "c1".into(),
            docs: format!("{}_{}", rules_key(&meta), "0badf00d"),
            shard: 0,
        }
        .to_string();
        bucketed::create_shard(
            c.docs(),
            &orphan,
            Vec::new(),
            &CommitOptions::default,
            false,
        )
        .unwrap();
        drop(c);
        let c = Catalog::open(dir.path(), actor()).unwrap();
        assert!(c.docs().get(&orphan).is_none());
        assert_eq!(rev_rule(&c, "c1", 1, "4449"), Some(rule(999)));
    }
}
