//! Loading: the view, cards, revisions' rules and datasets read from their documents (at
//! start, and when a peer's change completes them).

use super::doc_id::{rules_key, DocId, ACCOUNTS_DOC, CARDS_DOC, DATASETS_DOC};
use super::rebase::{read_generations, Generations};
use super::{map_id, str_of, CardView, CatalogError, Dataset, DatasetMeta, RevisionView, View};
use crate::bucketed;
use crate::docstore::{DocStore, StoreError};
use automerge::{AutoCommit, ReadDoc, ROOT};
use edgerate_model::account::Account;
use edgerate_model::card::{CardMeta, RevisionMeta, ShardGen};
use edgerate_model::dataset::DatasetKind;
use edgerate_model::index::PrefixIndex;
use edgerate_model::rule::Rule;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub(super) fn load_view(docs: &DocStore) -> Result<View, CatalogError> {
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
        match load_card(docs, &id, None, &mut Indexes::Build) {
            Ok(card) => view.insert_card(card),
            Err(e) => tracing::error!(card = %id, error = %e, "card is unreadable; not serving it"),
        }
    }
    Ok(view)
}

/// Runs `read` on document `id`, which must exist.
pub(super) fn with_doc<T>(
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

pub(super) fn read_accounts(docs: &DocStore) -> Result<Vec<Account>, CatalogError> {
    with_doc(docs, ACCOUNTS_DOC, |d| {
        let map = map_id(d, ROOT, "accounts")?;
        Ok(json_entries::<Account>(d, ACCOUNTS_DOC, &map)
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    })
}

/// Card id → owning account.
pub(super) fn read_registry(docs: &DocStore) -> Result<HashMap<String, String>, CatalogError> {
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

pub(super) fn read_dataset_metas(
    docs: &DocStore,
) -> Result<Vec<(DatasetKind, DatasetMeta)>, CatalogError> {
    with_doc(docs, DATASETS_DOC, |d| {
        let map = map_id(d, ROOT, "datasets")?;
        Ok(json_entries::<DatasetMeta>(d, DATASETS_DOC, &map)
            .into_iter()
            .filter_map(|(name, meta)| Some((DatasetKind::parse(&name)?, meta)))
            .collect())
    })
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
pub(super) fn load_dataset(
    docs: &DocStore,
    kind: DatasetKind,
    meta: DatasetMeta,
) -> Result<Option<Dataset>, CatalogError> {
    let doc_id = |shard| DocId::dataset(kind, &meta, shard).to_string();
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

/// Where a load of a card takes the index of a revision its view lacks: the costly part of a
/// load, every rule of the revision read and indexed.
pub(super) enum Indexes {
    /// Built by the load (at start).
    Build,
    /// Left out of the view for now, under the catalog's write lock; `true` once one was. The
    /// caller builds them ([`index_new_revisions`]) at a low priority, outside the lock, and
    /// loads the card again with them. A revision whose number the view holds already (the
    /// same number, other documents) is built by the load, so the number never goes missing.
    Later(bool),
    /// Taken from these, built ahead; built by the load when a revision is not among them as
    /// it is now (its documents changed meanwhile).
    Ahead(Vec<RevisionView>),
}

/// Reads card `id`. Revisions `existing` already holds (same documents) keep their index;
/// revisions whose documents have not all arrived are left out until they have; the index of
/// a new one comes as `indexes` says.
pub(super) fn load_card(
    docs: &DocStore,
    id: &str,
    existing: Option<&CardView>,
    indexes: &mut Indexes,
) -> Result<CardView, CatalogError> {
    let (meta, revs, recorded) = read_card(docs, id)?;
    let mut revisions = BTreeMap::new();
    for rev in revs {
        let kept = kept(existing, &rev);
        let Some(rev) = servable(docs, id, rev, &recorded, kept.map(|r| &r.meta)) else {
            continue;
        };
        let revision = match kept {
            Some(r) => {
                for shard in 0..rev.shards {
                    if r.meta.gens.get(&shard) != rev.gens.get(&shard) {
                        refresh_shard(docs, id, &rev, shard, r)?;
                    }
                }
                RevisionView {
                    meta: rev.clone(),
                    ..r.clone()
                }
            }
            None => match indexes {
                Indexes::Later(deferred)
                    if !existing.is_some_and(|c| c.revisions.contains_key(&rev.rev)) =>
                {
                    *deferred = true;
                    continue;
                }
                Indexes::Ahead(built) => match built.iter().position(|b| b.meta == rev) {
                    Some(at) => built.swap_remove(at),
                    None => new_revision(docs, id, rev.clone())?,
                },
                _ => new_revision(docs, id, rev.clone())?,
            },
        };
        revisions.insert(rev.rev, revision);
    }
    Ok(CardView { meta, revisions })
}

/// The revisions of card `id` that `existing` lacks and whose documents are all here, each
/// indexed: built ahead of a load ([`Indexes::Ahead`]). Reads only, so it needs no lock.
pub(super) fn index_new_revisions(
    docs: &DocStore,
    id: &str,
    existing: Option<&CardView>,
) -> Result<Vec<RevisionView>, CatalogError> {
    let (_, revs, recorded) = read_card(docs, id)?;
    revs.into_iter()
        .filter(|rev| kept(existing, rev).is_none())
        .filter_map(|rev| servable(docs, id, rev, &recorded, None))
        .map(|rev| new_revision(docs, id, rev))
        .collect()
}

/// Removes the rules documents this node wrote that no entry of their card names, at start: a
/// rebased generation never switched to, or a revision's shards staged and never entered (a
/// crash between writing them and recording them). Neither is offered to peers before its
/// entry, so no other node has them. Only documents this node alone wrote; a card whose
/// document is missing or unreadable is left as it is, and so are the shards of a revision
/// written before revisions had keys (named by its number).
pub(super) fn remove_unnamed(docs: &DocStore) {
    let me = docs.actor().clone();
    // Per card: its revisions' documents keys, and its recorded generations.
    let mut cards: HashMap<String, Option<(HashSet<String>, Generations)>> = HashMap::new();
    for id in docs.ids() {
        let Some(DocId::Rules {
            card,
            docs: key,
            shard,
        }) = DocId::parse(&id)
        else {
            continue;
        };
        let names = cards.entry(card.clone()).or_insert_with(|| {
            let (_, revisions, gens) = read_card(docs, &card).ok()?;
            Some((revisions.iter().map(rules_key).collect(), gens))
        });
        let Some((keys, gens)) = names else {
            continue;
        };
        let named = match key.split_once('_') {
            Some((base, _)) => gens
                .get(&(base.to_owned(), shard))
                .is_some_and(|g| g.iter().any(|g| g.docs == key)),
            None => key.bytes().all(|b| b.is_ascii_digit()) || keys.contains(&key),
        };
        if named {
            continue;
        }
        let mine = docs
            .inspect(&id, |d| {
                d.get_changes_meta(&[]).iter().all(|m| *m.actor == me)
            })
            .unwrap_or(false);
        if mine {
            tracing::info!(doc = %id, "removing a rules document a crash left unnamed");
            if let Err(e) = docs.remove(&id) {
                tracing::warn!(doc = %id, error = %e, "could not remove a document");
            }
        }
    }
}

/// Card `id`'s settings, revisions and recorded shard generations, from its document.
fn read_card(
    docs: &DocStore,
    id: &str,
) -> Result<(CardMeta, Vec<RevisionMeta>, Generations), CatalogError> {
    let doc_id = DocId::card(id).to_string();
    with_doc(docs, &doc_id, |d| {
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
        Ok((
            meta,
            json_entries::<RevisionMeta>(d, &doc_id, &revs_map)
                .into_iter()
                .map(|(_, rev)| rev)
                .collect(),
            read_generations(d, &doc_id),
        ))
    })
}

/// The revision `existing` holds loaded from the same documents as `rev`, if any.
fn kept<'a>(existing: Option<&'a CardView>, rev: &RevisionMeta) -> Option<&'a RevisionView> {
    existing
        .and_then(|c| c.revisions.get(&rev.rev))
        .filter(|r| {
            (r.meta.docs.as_str(), r.meta.shards, r.meta.buckets)
                == (rev.docs.as_str(), rev.shards, rev.buckets)
        })
}

/// Revision `rev` (servable) read from its documents and indexed.
fn new_revision(
    docs: &DocStore,
    card: &str,
    rev: RevisionMeta,
) -> Result<RevisionView, CatalogError> {
    let index = load_rules(docs, card, &rev)?;
    let edited = last_change_time(
        docs,
        &|s| DocId::rules(card, &rev, s).to_string(),
        rev.shards,
    )
    .max(rev.created);
    Ok(RevisionView::new(rev, index, edited))
}

/// Revision `rev` with, for each shard, the document this node serves it from: the deepest
/// generation recorded ([`read_generations`]) that is here whole, else the revision's own
/// document. `None` while some shard has neither (a revision still arriving). What `kept`
/// (the revision as loaded already) serves is whole without looking again.
fn servable(
    docs: &DocStore,
    card: &str,
    mut rev: RevisionMeta,
    recorded: &Generations,
    kept: Option<&RevisionMeta>,
) -> Option<RevisionMeta> {
    let base = rules_key(&rev);
    rev.gens.clear();
    for shard in 0..rev.shards {
        let whole = |gen: Option<&ShardGen>| {
            if kept.is_some_and(|k| k.gens.get(&shard) == gen) {
                return true;
            }
            let id = DocId::Rules {
                card: card.to_owned(),
                docs: gen.map_or_else(|| base.clone(), |g| g.docs.clone()),
                shard,
            }
            .to_string();
            complete(docs, &|_| id.clone(), 1, rev.buckets)
        };
        let gens = recorded.get(&(base.clone(), shard));
        match gens.into_iter().flatten().find(|gen| whole(Some(gen))) {
            Some(gen) => {
                rev.gens.insert(shard, gen.clone());
            }
            None if whole(None) => {}
            None => return None,
        }
    }
    Some(rev)
}

/// Brings the index of revision `kept` up to date with shard `shard` as `rev` serves it (a
/// generation that replaced the one the index was built from): rules the new document lacks
/// are taken out, and rules it holds otherwise put in.
fn refresh_shard(
    docs: &DocStore,
    card: &str,
    rev: &RevisionMeta,
    shard: u32,
    kept: &RevisionView,
) -> Result<(), CatalogError> {
    let id = DocId::rules(card, rev, shard).to_string();
    let mut fresh: HashMap<String, Rule> = HashMap::new();
    bucketed::read(docs, &|_| id.clone(), 1, rev.buckets, |prefix, encoded| {
        if let (true, Ok(rule)) = (
            edgerate_model::number::is_prefix(prefix),
            Rule::decode(encoded),
        ) {
            fresh.insert(prefix.to_owned(), rule);
        }
    })?;
    let (stale, changed): (Vec<String>, Vec<(String, Rule)>) = {
        let index = kept.index.read();
        let stale = index
            .iter()
            .filter(|(p, _)| {
                bucketed::locate(p, rev.shards, rev.buckets).0 == shard && !fresh.contains_key(p)
            })
            .map(|(p, _)| p)
            .collect();
        let changed = fresh
            .into_iter()
            .filter(|(p, rule)| index.get(p) != Some(rule))
            .collect();
        (stale, changed)
    };
    let mut index = kept.index.write();
    for prefix in stale {
        index.remove(&prefix);
    }
    for (prefix, rule) in changed {
        index.insert(&prefix, rule);
    }
    Ok(())
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
    let doc_id = |shard| DocId::rules(card, rev, shard).to_string();
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
