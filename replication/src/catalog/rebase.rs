//! Rebasing: a shard document whose history has outgrown its rules is replaced by a new
//! generation written from its current state, so that restarts and memory stay bounded
//! whatever the edit history (Automerge keeps every change a document ever had).
//!
//! The node that rebases writes the new document: the rules (one change per bucket, like an
//! import) and, beside each bucket, the stamp of every prefix edited since the revision was
//! written (the time and the author of its latest edit, which the history held until now:
//! [`stamps`]). It then records the generation in the card's document under its own key
//! (`gen:<revision key>:<shard>:<generation key>`, a [`ShardGen`]) and removes the old document.
//! Entries are only ever added, so two nodes that rebase one shard at once never overwrite each
//! other; every node serves the deepest generation it holds whole (ties: the greater key), the
//! same one everywhere once the documents have arrived.
//!
//! A node that moves to a newer generation leaves its older documents of the shard: every
//! prefix whose latest edit there is its own and newer than the new generation's stamp of it
//! (an edit made concurrently with the rebase, or into a generation that lost, however many
//! rebases ago) is carried into it as an ordinary edit stamped with the edit's time, and the
//! old document is removed. Only an edit's author carries it, so it happens once, and a
//! carry is idempotent (the new generation then holds an edit of the prefix at that time).
//! Notes of recent live edits go along ([`EditBundle`]), for carrying onto a racing import.

use super::carry::{
    noted_edits, read_history, rule_keys, BundledEdit, EditBundle, EditNote, Noted, REBASE_TAG,
};
use super::doc_id::{rules_key, DocId};
use super::load::with_doc;
use super::{docs_key, map_id, put_json, Catalog, CatalogError, RevisionView};
use crate::bucketed::{self, Bucket};
use automerge::{
    transaction::CommitOptions, transaction::Transactable, AutoCommit, ChangeHash, ReadDoc,
    ValueRef, ROOT,
};
use edgerate_model::card::{RevisionMeta, ShardGen};
use edgerate_model::rule::Rule;
use std::collections::HashMap;

/// A shard is rebased once its history holds more changes than this…
const MIN_CHANGES: usize = 1_000;
/// …and more than its rules divided by this.
const RULES_PER_CHANGE: usize = 50;
/// A node other than the shard's preferred rebaser (the least actor among its editors) waits
/// for this many times as many changes, so two nodes seldom rebase one shard at once and a
/// lost preferred node holds nothing up.
const OTHERS_WAIT: usize = 2;
/// While some member of the cluster is unreachable, a shard waits for this many times as many
/// changes: a rebase on each side of a cut makes the heal carry every edit of the cut again,
/// so during a cut the history grows instead (up to this bound: a member that never comes
/// back must not stop rebasing for good).
const CUT_OFF_WAIT: usize = 32;
/// How long before a document's newest change the notes of live edits are kept across
/// rebases (for carrying an edit onto an import that raced it: a later import no longer gets
/// it).
const LIVE_NOTES_SECS: i64 = 3600;
/// Card document keys of generations: `gen:<revision key>:<shard>:<generation key>`.
const GEN_PREFIX: &str = "gen:";

/// Every generation recorded in a card's document: (revision key, shard) → generations,
/// the one to serve first.
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

/// The map key of the stamps of bucket `bucket` in a rebased shard document.
fn stamps_key(bucket: u32) -> String {
    format!("s{bucket}")
}

/// When a prefix was last edited, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Stamp {
    /// Unix seconds (the edit's change time).
    pub(super) time: i64,
    /// The editing node's Automerge actor, hex.
    pub(super) actor: String,
}

impl Stamp {
    fn encode(&self) -> String {
        format!("{} {}", self.time, self.actor)
    }

    fn decode(s: &str) -> Option<Self> {
        let (time, actor) = s.split_once(' ')?;
        Some(Self {
            time: time.parse().ok()?,
            actor: actor.to_owned(),
        })
    }
}

/// The stamp of every prefix edited in a shard document of `buckets` buckets: the stamps a
/// rebase wrote into it, then its own edits (their notes; an older node's edit without a note
/// is decoded when stamped at or after `since`), the latest winning.
pub(super) fn stamps(
    d: &mut AutoCommit,
    buckets: u32,
    since: i64,
) -> Result<HashMap<String, Stamp>, CatalogError> {
    stamps_after(d, buckets, None, since)
}

/// [`stamps`], or with `after`, only those of the changes made since those heads (what a
/// document gained after a rebase read it).
fn stamps_after(
    d: &mut AutoCommit,
    buckets: u32,
    after: Option<&[ChangeHash]>,
    since: i64,
) -> Result<HashMap<String, Stamp>, CatalogError> {
    let mut out: HashMap<String, Stamp> = HashMap::new();
    let mut stamp = |prefix: String, new: Stamp| match out.get(&prefix) {
        Some(old) if *old >= new => {}
        _ => {
            out.insert(prefix, new);
        }
    };
    // Only a generation has stamp maps (all of them, written with it).
    if after.is_none() && map_id(d, ROOT, &stamps_key(0)).is_ok() {
        bucketed::read_maps(d, &stamps_key, buckets, |prefix, s| {
            if let Some(s) = Stamp::decode(s) {
                stamp(prefix.to_owned(), s);
            }
        })?;
    }
    let mut unnoted = Vec::new();
    for m in d.get_changes_meta(after.unwrap_or_default()) {
        let by = || m.actor.to_hex_string();
        match Noted::read(m.message.as_deref()) {
            Noted::Edit(note) => stamp(
                note.prefix,
                Stamp {
                    time: m.timestamp,
                    actor: by(),
                },
            ),
            Noted::Bundle(bundle) => {
                for e in bundle {
                    stamp(
                        e.note.prefix,
                        Stamp {
                            time: e.time,
                            actor: by(),
                        },
                    );
                }
            }
            Noted::Rebase => {}
            // An older node's edit is one operation; an import's bucket (a thousand) is none.
            Noted::Other if m.timestamp >= since && m.max_op.saturating_sub(m.start_op) < 4 => {
                unnoted.push((m.hash, m.timestamp, by()))
            }
            Noted::Other => {}
        }
    }
    if !unnoted.is_empty() {
        let who: HashMap<ChangeHash, (i64, String)> = unnoted
            .iter()
            .map(|(h, t, a)| (*h, (*t, a.clone())))
            .collect();
        let changes = d
            .bundle(unnoted.into_iter().map(|(h, _, _)| h))?
            .to_changes()?;
        for change in &changes {
            let Some((time, actor)) = who.get(&change.hash()).cloned() else {
                continue;
            };
            for key in rule_keys(change).unwrap_or_default() {
                stamp(
                    key,
                    Stamp {
                        time,
                        actor: actor.clone(),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// What a shard document's history holds (its change graph only: no operation is read, so
/// the document is held for well under a millisecond).
struct History {
    changes: usize,
    /// The least actor (hex) among those whose edits it holds.
    preferred: Option<String>,
}

fn history(d: &mut AutoCommit) -> History {
    let metas = d.get_changes_meta(&[]);
    let preferred = metas
        .iter()
        .filter(|m| matches!(Noted::read(m.message.as_deref()), Noted::Edit(_)))
        .map(|m| m.actor.to_hex_string())
        .min();
    History {
        changes: metas.len(),
        preferred,
    }
}

/// The notes of this node's live edits a document holds that were made at or after `since`
/// (its own edits' notes, and those bundled into it).
fn live_notes(d: &mut AutoCommit, me: &automerge::ActorId, since: i64) -> Vec<BundledEdit> {
    d.get_changes_meta(&[])
        .into_iter()
        .filter(|m| *m.actor == *me)
        .flat_map(|m| noted_edits(m.timestamp, m.message.as_deref()))
        .filter(|(time, note)| *time >= since && note.live.is_some())
        .map(|(time, note)| BundledEdit { time, note })
        .collect()
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

/// Shard `shard`'s entries laid out by bucket ([`bucketed::layout`]), ready to be written
/// into a new document of revision `meta`.
fn by_bucket(
    entries: impl IntoIterator<Item = (String, String)>,
    meta: &RevisionMeta,
    shard: u32,
) -> Vec<Bucket> {
    bucketed::layout(entries, meta.shards, meta.buckets).swap_remove(shard as usize)
}

/// Keeps `notes` (live edits' notes) in a document, as one empty change stamped `time`.
fn keep_notes(d: &mut AutoCommit, notes: &[BundledEdit], time: i64) {
    if !notes.is_empty() {
        d.empty_change(
            CommitOptions::default()
                .with_time(time)
                .with_message(EditBundle::write(notes)),
        );
    }
}

/// Writes `value` (an encoded rule; none: deleted) for `prefix` into a shard document of
/// revision `meta`, uncommitted; returns its bucket.
fn write_value(
    d: &mut AutoCommit,
    meta: &RevisionMeta,
    prefix: &str,
    value: Option<&str>,
) -> Result<u32, CatalogError> {
    let (_, bucket) = bucketed::locate(prefix, meta.shards, meta.buckets);
    let map = map_id(d, ROOT, &bucketed::bucket_key(bucket))?;
    match value {
        Some(v) => d.put(&map, prefix, v)?,
        None if d.get(&map, prefix)?.is_some() => d.delete(&map, prefix)?,
        None => {}
    }
    Ok(bucket)
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
    /// (see the module's doc); `whole`: every member of the cluster is reachable now. For the
    /// background task: each rebase writes its shard afresh outside the write lock (about a
    /// second for 100k rules) and takes the lock only to switch. Returns how many shards were
    /// rebased; a failure is logged and retried next time.
    pub fn rebase_due(&self, whole: bool) -> usize {
        let view = self.view();
        let me = self.inner.docs.actor().to_hex_string();
        let mut rebased = 0;
        let mut seen = std::collections::HashSet::new();
        for card in view.cards.values() {
            for rev in card.revisions.values() {
                for shard in 0..rev.meta.shards {
                    let id = DocId::rules(&card.meta.id, &rev.meta, shard).to_string();
                    seen.insert(id.clone());
                    // Weighed again only when its heads moved, but every pass during a cut:
                    // the limit falls when the cluster is whole again.
                    if whole && !self.history_changed(&id) {
                        continue;
                    }
                    let Some(h) = self.inner.docs.inspect(&id, history) else {
                        continue;
                    };
                    let cut_off = if whole { 1 } else { CUT_OFF_WAIT };
                    // The shard's rules, about: the revision's spread evenly by the hash.
                    let rules = rev.index.read().len() / rev.meta.shards.max(1) as usize;
                    let limit = MIN_CHANGES.max(rules / RULES_PER_CHANGE) * cut_off;
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
                                rules,
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
        // Documents no longer served (rebased, deleted) are forgotten.
        self.inner.checked.lock().retain(|id, _| seen.contains(id));
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
        // The rules and stamps as they are now, read and written outside the write lock:
        // edits go on.
        let read = self.inner.docs.inspect(&old, |d| {
            let heads = d.get_heads();
            let stamps = stamps(d, meta.buckets, 0)?;
            let mut rules = Vec::new();
            bucketed::read_maps(d, &bucketed::bucket_key, meta.buckets, |k, v| {
                rules.push((k.to_owned(), v.to_owned()));
            })?;
            let stamps = stamps.into_iter().map(|(k, s)| (k, s.encode()));
            Ok::<_, CatalogError>((
                heads,
                by_bucket(rules, meta, shard),
                by_bucket(stamps, meta, shard),
                newest_time(d),
            ))
        });
        let Some((heads, rules, stamps, time)) = read.transpose()? else {
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
        let layers = vec![
            (bucketed::bucket_key as fn(u32) -> String, rules),
            (stamps_key, stamps),
        ];
        bucketed::create_shard(&self.inner.docs, &new, layers, &options, false)?;
        let switched = {
            let _w = self.inner.write.lock();
            self.switch_to_rebased(card, meta, shard, &old, &key, &heads)
        };
        if !matches!(switched, Ok(true)) {
            if let Err(e) = self.inner.docs.remove(&new) {
                tracing::warn!(doc = %new, error = %e, "could not remove an unused rebased document");
            }
        }
        switched
    }

    /// The rebase's switch, under the write lock: what changed in the old document since it was
    /// read (`heads`) is written into the new one (rules and stamps), this node's recent live
    /// notes are kept in it, the generation is recorded and shown, and the old document is
    /// removed.
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
        let read = self.inner.docs.inspect(old, |d| {
            let since: Vec<String> = d
                .get_changes(heads)
                .iter()
                .flat_map(|c| rule_keys(c).unwrap_or_default())
                .collect();
            let stamps = stamps_after(d, rev.meta.buckets, Some(heads), 0)?;
            let delta: Vec<(String, Option<String>, Option<Stamp>)> = since
                .into_iter()
                .map(|p| {
                    let value = value_of(d, &rev.meta, &p);
                    let stamp = stamps.get(&p).cloned();
                    (p, value, stamp)
                })
                .collect();
            let newest = newest_time(d);
            Ok::<_, CatalogError>((live_notes(d, &me, newest - LIVE_NOTES_SECS), newest, delta))
        });
        let Some((notes, time, delta)) = read.transpose()? else {
            return Ok(false);
        };
        let new = DocId::Rules {
            card: card_id.to_owned(),
            docs: key.to_owned(),
            shard,
        }
        .to_string();
        self.inner.docs.change::<_, CatalogError>(&new, |d| {
            for (prefix, value, stamp) in &delta {
                let bucket = write_value(d, &rev.meta, prefix, value.as_deref())?;
                if let Some(stamp) = stamp {
                    let stamps = map_id(d, ROOT, &stamps_key(bucket))?;
                    d.put(&stamps, prefix.as_str(), stamp.encode())?;
                }
            }
            d.commit_with(
                CommitOptions::default()
                    .with_time(time)
                    .with_message(REBASE_TAG),
            );
            keep_notes(d, &notes, time);
            Ok(())
        })?;
        let gen = ShardGen {
            docs: key.to_owned(),
            depth: rev.meta.gens.get(&shard).map_or(0, |g| g.depth) + 1,
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
        self.show_revision(&card, card.meta.clone(), next);
        self.inner.docs.remove(old)?;
        Ok(true)
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
            .rule_docs(card_id)
            .iter()
            .filter_map(|id| match DocId::parse(id) {
                Some(DocId::Rules { docs, shard, .. }) => Some((docs, shard)),
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

    /// Leaves document `docs` of shard `shard` of revision `rev`, which the document it serves
    /// now replaced: every prefix whose latest edit there is this node's and newer than the
    /// current document's stamp of it is carried over (its value there, stamped with the
    /// edit's time), recent live notes go along, and the document is removed.
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
        let current = DocId::rules(card_id, &rev.meta, shard).to_string();
        debug_assert!(current.contains(&gen.docs));
        let me = self.inner.docs.actor().clone();
        let me_hex = me.to_hex_string();
        let read = read_history(&self.inner.docs, &old, |d| {
            let mine: Vec<(String, Stamp, Option<String>)> = stamps(d, rev.meta.buckets, 0)?
                .into_iter()
                .filter(|(_, s)| s.actor == me_hex)
                .map(|(prefix, s)| {
                    let value = value_of(d, &rev.meta, &prefix);
                    (prefix, s, value)
                })
                .collect();
            let since = newest_time(d) - LIVE_NOTES_SECS;
            Ok((mine, live_notes(d, &me, since)))
        })?;
        let Some((mine, notes)) = read else {
            return Ok(());
        };
        let theirs = read_history(&self.inner.docs, &current, |d| {
            stamps(d, rev.meta.buckets, 0)
        })?
        .unwrap_or_default();
        let live: HashMap<(&str, i64), &EditNote> = notes
            .iter()
            .map(|e| ((e.note.prefix.as_str(), e.time), &e.note))
            .collect();
        // Each carried edit: the rule it leaves (none: deleted), its time and note.
        let mut writes: Vec<(Option<Rule>, i64, EditNote)> = Vec::new();
        for (prefix, stamp, value) in mine {
            if theirs.get(&prefix).is_some_and(|t| t.time >= stamp.time) {
                continue;
            }
            let rule = match value.as_deref().map(Rule::decode) {
                Some(Ok(rule)) => Some(rule),
                Some(Err(_)) => continue,
                None => None,
            };
            let note = live.get(&(prefix.as_str(), stamp.time)).map_or_else(
                || EditNote {
                    prefix: prefix.clone(),
                    live: None,
                },
                |n| (*n).clone(),
            );
            writes.push((rule, stamp.time, note));
        }
        // One write for all of them (each still its own change, with its time and note), and
        // the notes after them.
        self.inner.docs.change::<_, CatalogError>(&current, |d| {
            for (rule, time, note) in &writes {
                let encoded = rule.as_ref().map(Rule::encode);
                write_value(d, &rev.meta, &note.prefix, encoded.as_deref())?;
                let options = || {
                    CommitOptions::default()
                        .with_time(*time)
                        .with_message(note.to_message())
                };
                if d.commit_with(options()).is_none() {
                    d.empty_change(options());
                }
            }
            keep_notes(d, &notes, notes.iter().map(|e| e.time).max().unwrap_or(0));
            Ok(())
        })?;
        let mut index = rev.index.write();
        for (rule, time, note) in writes {
            rev.edited
                .fetch_max(time, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                card = card_id,
                prefix = %note.prefix,
                rev = rev.meta.rev,
                shard,
                edited = time,
                "carried a rule edit made concurrently with a rebase onto the new generation"
            );
            match rule {
                Some(rule) => index.insert(&note.prefix, rule),
                None => index.remove(&note.prefix),
            };
        }
        drop(index);
        self.inner.docs.remove(&old)?;
        Ok(())
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
    use std::path::Path;

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

    /// Two nodes in their dirs, sharing card c1 whose revision 1 holds `44<0..20>`.
    fn two_nodes(a_dir: &Path, b_dir: &Path) -> (Catalog, Catalog) {
        let a = Catalog::open(a_dir, actor()).unwrap();
        let b = Catalog::open(b_dir, other()).unwrap();
        a.create_card(card_meta("c1")).unwrap();
        for i in 0..20 {
            set(&a, 1, &format!("44{i}"), i, 100 + i);
        }
        sync(&a, &b);
        (a, b)
    }

    #[test]
    fn an_edit_racing_a_rebase_is_carried_by_its_author() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = two_nodes(a_dir.path(), b_dir.path());
        set(&b, 1, "440", 70, 200); // A has it when it rebases
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
        // B left the old document for good: a restart finds the same rules and nothing to leave.
        drop(b);
        let b = Catalog::open(b_dir.path(), other()).unwrap();
        assert_eq!(rev_rule(&b, "c1", 1, "441"), Some(rule(71)));
        assert_eq!(rebased_docs(&b), [id]);
    }

    #[test]
    fn two_rebases_at_once_converge_and_keep_every_edit() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = two_nodes(a_dir.path(), b_dir.path());
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

    /// A long cut with many rebases on both sides: every edit of either side survives the heal,
    /// however many generations ago it was made.
    #[test]
    fn many_rebases_on_both_sides_of_a_cut_lose_no_edit() {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = Catalog::open(a_dir.path(), actor()).unwrap();
        let b = Catalog::open(b_dir.path(), other()).unwrap();
        a.create_card(card_meta("c1")).unwrap();
        set(&a, 1, "440", 1, 100);
        sync(&a, &b);
        for i in 0..12 {
            set(&a, 1, &format!("33{i}"), i, 200 + i);
            set(&b, 1, &format!("34{i}"), i, 200 + i);
            // The same prefix on both sides: the later edit wins everywhere.
            set(&a, 1, "440", 10 + i, 300 + 2 * i);
            set(&b, 1, "440", 50 + i, 301 + 2 * i);
            assert!(rebase(&a, 1));
            assert!(rebase(&b, 1));
        }
        b.delete_rule(target(1, "345"), 400).unwrap();
        assert!(rebase(&b, 1));
        for _ in 0..3 {
            sync(&a, &b);
        }
        for node in [&a, &b] {
            for i in 0..12 {
                assert_eq!(rev_rule(node, "c1", 1, &format!("33{i}")), Some(rule(i)));
                if i != 5 {
                    assert_eq!(rev_rule(node, "c1", 1, &format!("34{i}")), Some(rule(i)));
                }
            }
            assert_eq!(rev_rule(node, "c1", 1, "345"), None);
            assert_eq!(rev_rule(node, "c1", 1, "440"), Some(rule(61)));
        }
        assert_eq!(rules(&a, 1), rules(&b, 1));
        assert_eq!(shard(&a, 1).0, shard(&b, 1).0);
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
        assert_eq!(c.rebase_due(true), 0);
        for i in 0..MIN_CHANGES {
            set(&c, 1, &format!("44{}", i % 50), i as i64, 100);
        }
        let (old, _) = shard(&c, 1);
        assert_eq!(c.rebase_due(true), 1);
        assert_eq!(c.rebase_due(true), 0, "nothing changed since");
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
