//! Carry-over: this node's edits of a live revision carried onto the newer revision that
//! replaces it, and the note ([`EditNote`]) every rule edit's change carries for that.

use super::doc_id::DocId;
use super::rebase::stamps;
use super::{newer, rev_key, Catalog, CatalogError, RevisionView, RuleTarget};
use crate::bucketed;
use crate::docstore::DocStore;
use automerge::AutoCommit;
use edgerate_model::card::RevisionMeta;
use std::collections::hash_map::{Entry, HashMap};
use std::collections::BTreeMap;

/// One of this node's edits of the revision live at its time, as read back from the history.
struct OwnEdit {
    /// When it was made (its change's time).
    time: i64,
    /// Newer revisions this node held when it made the edit (see [`EditNote`]).
    known: Vec<String>,
    prefix: String,
}

impl Catalog {
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
    pub(super) fn carry_edits(&self, card_id: &str) {
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
            let since = carries.values().map(|c| c.0).min().unwrap_or(0);
            // Per shard of the target: the latest edit of each prefix, read once.
            let mut edited: HashMap<u32, HashMap<String, i64>> = HashMap::new();
            for (prefix, (time, source, known)) in carries {
                let (shard, _) = bucketed::locate(prefix, target.meta.shards, target.meta.buckets);
                let times = match edited.entry(shard) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let id = DocId::rules(card_id, &target.meta, shard).to_string();
                        e.insert(self.edit_times(&id, &target.meta, since)?)
                    }
                };
                if times.get(prefix).is_some_and(|t| *t >= time) {
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
            read_history(
                &self.inner.docs,
                &DocId::rules(card, rev, shard).to_string(),
                |d| {
                    for m in d.get_changes_meta(&[]) {
                        if *m.actor != me {
                            continue;
                        }
                        for (time, note) in noted_edits(m.timestamp, m.message.as_deref()) {
                            if let (true, Some(known)) = (time >= since, note.live) {
                                edits.push(OwnEdit {
                                    time,
                                    known,
                                    prefix: note.prefix,
                                });
                            }
                        }
                    }
                    Ok(())
                },
            )?;
        }
        Ok(edits)
    }

    /// The latest time each prefix of revision `rev`'s shard document `id` was edited, by any
    /// node, among the edits stamped at or after `since` ([`super::rebase::stamps`]): one pass
    /// over its history for all the checks of a carry ("does the target hold an edit of this
    /// prefix at or after this edit's time?").
    pub(super) fn edit_times(
        &self,
        id: &str,
        rev: &RevisionMeta,
        since: i64,
    ) -> Result<HashMap<String, i64>, CatalogError> {
        let stamps = read_history(&self.inner.docs, id, |d| stamps(d, rev.buckets, since))?;
        Ok(stamps
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, s)| s.time >= since)
            .map(|(prefix, s)| (prefix, s.time))
            .collect())
    }
}

/// What the message of a rule edit's change says: `rule-edit <prefix>`, then ` live` when the
/// edit went into the revision live at its time, then ` known=` and the keys ([`rev_key`]) of
/// the newer revisions the node already held, if any. A live edit is carried onto a newer
/// revision that replaces its own and was not among those ([`Catalog::carry_edits`]).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct EditNote {
    pub(super) prefix: String,
    /// For a live edit, the newer revisions held.
    pub(super) live: Option<Vec<String>>,
}

impl EditNote {
    const TAG: &'static str = "rule-edit";

    pub(super) fn write(prefix: &str, live: Option<&[String]>) -> String {
        match live {
            None => format!("{} {prefix}", Self::TAG),
            Some([]) => format!("{} {prefix} live", Self::TAG),
            Some(known) => format!("{} {prefix} live known={}", Self::TAG, known.join(",")),
        }
    }

    /// This note as a change's message.
    pub(super) fn to_message(&self) -> String {
        Self::write(&self.prefix, self.live.as_deref())
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

/// What a change's message says about rule edits.
pub(super) enum Noted {
    /// One rule edit ([`EditNote`]), made at the change's time.
    Edit(EditNote),
    /// Notes of live edits a rebase or a node leaving a rebased document kept ([`EditBundle`]).
    Bundle(Vec<BundledEdit>),
    /// Part of a rebase: rules written afresh, no edit of any ([`REBASE_TAG`]).
    Rebase,
    /// Anything else: an import's buckets, or an older node's edit without a note.
    Other,
}

/// The message of the changes that write a rebased shard document's rules.
pub(super) const REBASE_TAG: &str = "rebase";

impl Noted {
    pub(super) fn read(message: Option<&str>) -> Self {
        let Some(message) = message else {
            return Self::Other;
        };
        if message == REBASE_TAG {
            Self::Rebase
        } else if let Some(note) = EditNote::parse(message) {
            Self::Edit(note)
        } else if let Some(bundle) = EditBundle::parse(message) {
            Self::Bundle(bundle)
        } else {
            Self::Other
        }
    }
}

/// The rule edits a change stands for, each with its time: one for an edit, the bundled ones
/// for a bundle.
pub(super) fn noted_edits(time: i64, message: Option<&str>) -> Vec<(i64, EditNote)> {
    match Noted::read(message) {
        Noted::Edit(note) => vec![(time, note)],
        Noted::Bundle(bundle) => bundle.into_iter().map(|e| (e.time, e.note)).collect(),
        Noted::Rebase | Noted::Other => Vec::new(),
    }
}

/// One node's rule edit as a rebased document keeps its note: when it was made, and the note
/// its own change had.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BundledEdit {
    pub(super) time: i64,
    pub(super) note: EditNote,
}

/// The message of an empty change by which a node keeps the notes of its recent live edits
/// (for carrying them onto a racing import) in a document that replaced the one they were made
/// in: `rule-edits`, then one line per edit, `<time> <note>`.
pub(super) struct EditBundle;

impl EditBundle {
    const TAG: &'static str = "rule-edits";

    pub(super) fn write(edits: &[BundledEdit]) -> String {
        let mut out = Self::TAG.to_owned();
        for e in edits {
            out.push_str(&format!("\n{} {}", e.time, e.note.to_message()));
        }
        out
    }

    fn parse(message: &str) -> Option<Vec<BundledEdit>> {
        let mut lines = message.split('\n');
        if lines.next()? != Self::TAG {
            return None;
        }
        lines
            .map(|line| {
                let (time, note) = line.split_once(' ')?;
                Some(BundledEdit {
                    time: time.parse().ok()?,
                    note: EditNote::parse(note)?,
                })
            })
            .collect()
    }
}

/// Runs `read` on document `id` (if it exists) with the mutable access reading its history
/// needs; `read` writes nothing.
pub(super) fn read_history<T>(
    docs: &DocStore,
    id: &str,
    read: impl FnOnce(&mut AutoCommit) -> Result<T, CatalogError>,
) -> Result<Option<T>, CatalogError> {
    docs.inspect(id, read).transpose()
}

/// The prefixes a rule edit's change set or deleted; `None` for a change that makes maps (a
/// shard document's buckets, written by an import), which is no rule edit.
pub(super) fn rule_keys(change: &automerge::Change) -> Option<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn edit_bundles_read_back() {
        let edits = vec![
            BundledEdit {
                time: 100,
                note: EditNote {
                    prefix: "4412".into(),
                    live: Some(vec!["r4".into(), "9f9f9f9f".into()]),
                },
            },
            BundledEdit {
                time: 101,
                note: EditNote {
                    prefix: "33".into(),
                    live: None,
                },
            },
        ];
        let message = EditBundle::write(&edits);
        assert!(matches!(Noted::read(Some(&message)), Noted::Bundle(b) if b == edits));
        assert_eq!(
            noted_edits(5, Some(&message))
                .into_iter()
                .map(|(t, n)| (t, n.prefix))
                .collect::<Vec<_>>(),
            [(100, "4412".to_owned()), (101, "33".to_owned())]
        );
        assert!(matches!(Noted::read(Some(REBASE_TAG)), Noted::Rebase));
        assert!(matches!(Noted::read(Some("rule-edits\nbad")), Noted::Other));
        assert!(matches!(Noted::read(None), Noted::Other));
    }
}
