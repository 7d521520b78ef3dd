//! Large key → scalar maps stored as Automerge documents: spread by a stable hash over shard
//! documents, each split into bucket maps written with one batch insert (one change) per
//! bucket. Rule sets of revisions and operator datasets are stored this way.

use crate::catalog::CatalogError;
use crate::docstore::{DocStore, StoreError};
use automerge::{
    hydrate,
    transaction::{CommitOptions, Transactable},
    AutoCommit, ReadDoc, ScalarValue, ScalarValueRef, ValueRef, ROOT,
};
use std::collections::HashMap;

/// One bucket's entries, as Automerge values ready for one batch insert.
pub type Bucket = HashMap<String, hydrate::Value>;

/// Maps laid out like a shard's buckets: map `b` is stored under `key(b)`.
pub type Layer = (fn(u32) -> String, Vec<Bucket>);

/// Document schema version of shard documents.
const SCHEMA_VERSION: u64 = 1;

/// Keys per shard document, at most (DESIGN.md: ≤ ~100k keys per document).
pub const KEYS_PER_SHARD: usize = 100_000;
/// Keys per bucket map, about.
pub const KEYS_PER_BUCKET: usize = 1_000;
/// Buckets of a new, small map (room for keys added one at a time).
pub const MIN_BUCKETS: u32 = 16;

/// How many shards and buckets per shard suit `keys` keys.
pub fn layout_for(keys: usize) -> (u32, u32) {
    let shards = keys.div_ceil(KEYS_PER_SHARD).max(1);
    let buckets = (keys.div_ceil(shards).div_ceil(KEYS_PER_BUCKET) as u32).max(MIN_BUCKETS);
    (shards as u32, buckets)
}

/// The shard and bucket of a key: FNV-1a (64-bit), stable across builds and platforms.
pub fn locate(key: &str, shards: u32, buckets: u32) -> (u32, u32) {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let shards = u64::from(shards.max(1));
    let buckets = u64::from(buckets.max(1));
    ((hash % shards) as u32, ((hash / shards) % buckets) as u32)
}

/// The map key of bucket `bucket` in a shard document.
pub fn bucket_key(bucket: u32) -> String {
    format!("b{bucket}")
}

/// Creates the `shards` documents named by `doc_id` holding `entries`, in parallel, each
/// durable before this returns. On failure the documents written so far are removed. They are
/// not offered to peers: the caller [`announce`]s them once an entry names them (a document no
/// entry names would be taken up by every peer and named by none, if the entry never comes).
pub fn write(
    docs: &DocStore,
    doc_id: &(dyn Fn(u32) -> String + Sync),
    shards: u32,
    buckets: u32,
    entries: impl IntoIterator<Item = (String, String)>,
) -> Result<(), CatalogError> {
    let layout = layout(entries, shards, buckets);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(shards as usize);
    let mut per_worker: Vec<Vec<(u32, Vec<Bucket>)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, shard) in layout.into_iter().enumerate() {
        per_worker[i % workers].push((i as u32, shard));
    }
    let written = std::thread::scope(|scope| {
        let handles: Vec<_> = per_worker
            .into_iter()
            .map(|jobs| {
                scope.spawn(move || -> Result<(), CatalogError> {
                    for (shard, bucket_maps) in jobs {
                        create_shard(
                            docs,
                            &doc_id(shard),
                            vec![(bucket_key, bucket_maps)],
                            &CommitOptions::default,
                            false,
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("shard writer panicked"))
    });
    if written.is_err() {
        remove(docs, doc_id, shards);
    }
    written
}

/// `entries` where they belong: shard → bucket → entries, as Automerge values ready for one
/// batch insert per bucket.
pub fn layout(
    entries: impl IntoIterator<Item = (String, String)>,
    shards: u32,
    buckets: u32,
) -> Vec<Vec<Bucket>> {
    let mut layout: Vec<Vec<Bucket>> = (0..shards)
        .map(|_| (0..buckets).map(|_| HashMap::new()).collect())
        .collect();
    for (key, value) in entries {
        let (shard, bucket) = locate(&key, shards, buckets);
        layout[shard as usize][bucket as usize]
            .insert(key, hydrate::Value::Scalar(ScalarValue::Str(value.into())));
    }
    layout
}

/// Creates one shard document `id`, durable before this returns: the schema version, then,
/// for each `(map_key, maps)` of `layers` (the buckets, and a rebased shard's stamps beside
/// them), map `b` as `map_key(b)`, one change (one batch insert) each, every change committed
/// with `options`. With `announce`, peers are told of it at once (see
/// [`DocStore::create_with`]).
pub fn create_shard(
    docs: &DocStore,
    id: &str,
    layers: Vec<Layer>,
    options: &dyn Fn() -> CommitOptions,
    announce: bool,
) -> Result<(), CatalogError> {
    docs.create_with::<_, CatalogError>(id, announce, |d| {
        d.put(ROOT, "v", SCHEMA_VERSION)?;
        d.commit_with(options());
        for (map_key, maps) in layers {
            for (b, map) in maps.into_iter().enumerate() {
                d.batch_create_object(
                    ROOT,
                    map_key(b as u32),
                    &hydrate::Value::Map(map.into()),
                    false,
                )?;
                d.commit_with(options());
            }
        }
        Ok(())
    })
}

/// Removes the shard documents (best effort: a leftover document is only wasted disk).
/// Offers the `shards` documents named by `doc_id` to peers (see [`write`]).
pub fn announce(docs: &DocStore, doc_id: &dyn Fn(u32) -> String, shards: u32) {
    for shard in 0..shards {
        docs.announce(&doc_id(shard));
    }
}

pub fn remove(docs: &DocStore, doc_id: &dyn Fn(u32) -> String, shards: u32) {
    for shard in 0..shards {
        if let Err(e) = docs.remove(&doc_id(shard)) {
            tracing::warn!(doc = %doc_id(shard), error = %e, "could not remove a shard document");
        }
    }
}

/// Calls `each(key, value)` for every string entry of the shard documents.
pub fn read(
    docs: &DocStore,
    doc_id: &dyn Fn(u32) -> String,
    shards: u32,
    buckets: u32,
    mut each: impl FnMut(&str, &str),
) -> Result<(), CatalogError> {
    for shard in 0..shards {
        let id = doc_id(shard);
        let handle = docs
            .get(&id)
            .ok_or_else(|| StoreError::Missing(id.clone()))?;
        let guard = handle.lock();
        read_maps(guard.doc(), &bucket_key, buckets, &mut each)?;
    }
    Ok(())
}

/// Calls `each(key, value)` for every string entry of the maps `map_key(0..maps)` of one
/// document (its buckets, or maps laid out like them).
pub fn read_maps(
    d: &AutoCommit,
    map_key: &dyn Fn(u32) -> String,
    maps: u32,
    mut each: impl FnMut(&str, &str),
) -> Result<(), CatalogError> {
    for bucket in 0..maps {
        let map = crate::catalog::map_id(d, ROOT, &map_key(bucket))?;
        for item in d.map_range(&map, ..) {
            if let ValueRef::Scalar(ScalarValueRef::Str(value)) = &item.value {
                each(&item.key, value);
            }
        }
    }
    Ok(())
}
