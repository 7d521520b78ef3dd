//! Document identities: which catalog document an id names, parsed from and written as the id
//! it is stored and synced under.

use super::DatasetMeta;
use edgerate_model::card::RevisionMeta;
use edgerate_model::dataset::DatasetKind;
use std::fmt;

pub(super) const ACCOUNTS_DOC: &str = "accounts";
pub(super) const CARDS_DOC: &str = "cards";
pub(super) const DATASETS_DOC: &str = "datasets";

/// A catalog document. [`DocId::parse`] reads exactly the ids [`fmt::Display`] writes: an id
/// that parses writes back unchanged, and `parse(&id.to_string()) == Some(id)` for every id
/// whose parts hold no `-` (card ids are `[a-z0-9]`, documents keys hex). These strings are the
/// names on disk and on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DocId {
    /// `accounts`: account id → account.
    Accounts,
    /// `cards`: the registry, card id → owning account.
    Cards,
    /// `datasets`: dataset kind → its [`DatasetMeta`].
    Datasets,
    /// `card-<card>`: a card's settings and revisions.
    Card { card: String },
    /// `rules-<card>-<docs>-<shard>`: one shard of a revision's rules. `docs` is the
    /// revision's documents key ([`RevisionMeta::docs`]), or its number for a revision
    /// written before revisions had keys.
    Rules {
        card: String,
        docs: String,
        shard: u32,
    },
    /// `dataset-<kind>-<generation>-<docs>-<shard>`, or without `-<docs>` (empty) for a
    /// generation written before datasets had keys: one shard of a dataset's records.
    Dataset {
        kind: DatasetKind,
        generation: u32,
        docs: String,
        shard: u32,
    },
}

impl DocId {
    /// Card `card`'s document.
    pub(super) fn card(card: &str) -> Self {
        Self::Card {
            card: card.to_owned(),
        }
    }

    /// Shard `shard` of revision `rev` of card `card`: the revision's own document, or the
    /// generation a rebase replaced it with.
    pub(super) fn rules(card: &str, rev: &RevisionMeta, shard: u32) -> Self {
        let docs = match rev.gens.get(&shard) {
            Some(generation) => generation.docs.clone(),
            None => rules_key(rev),
        };
        Self::Rules {
            card: card.to_owned(),
            docs,
            shard,
        }
    }

    /// Shard `shard` of the dataset generation `meta` describes.
    pub(super) fn dataset(kind: DatasetKind, meta: &DatasetMeta, shard: u32) -> Self {
        Self::Dataset {
            kind,
            generation: meta.generation,
            docs: meta.docs.clone(),
            shard,
        }
    }

    /// The document `id` names; `None` for an id the catalog never writes.
    pub(super) fn parse(id: &str) -> Option<Self> {
        let parsed = match id {
            ACCOUNTS_DOC => Self::Accounts,
            CARDS_DOC => Self::Cards,
            DATASETS_DOC => Self::Datasets,
            _ => {
                if let Some(card) = id.strip_prefix("card-") {
                    Self::card(card)
                } else if let Some(rest) = id.strip_prefix("rules-") {
                    let [card, docs, shard] = split::<3>(rest)?;
                    Self::Rules {
                        card: card.to_owned(),
                        docs: docs.to_owned(),
                        shard: shard.parse().ok()?,
                    }
                } else if let Some(rest) = id.strip_prefix("dataset-") {
                    let (kind, generation, docs, shard) = match split::<4>(rest) {
                        Some([kind, generation, docs, shard]) => (kind, generation, docs, shard),
                        None => {
                            let [kind, generation, shard] = split::<3>(rest)?;
                            (kind, generation, "", shard)
                        }
                    };
                    Self::Dataset {
                        kind: DatasetKind::parse(kind)?,
                        generation: generation.parse().ok()?,
                        docs: docs.to_owned(),
                        shard: shard.parse().ok()?,
                    }
                } else {
                    return None;
                }
            }
        };
        // Only the one spelling `Display` writes (no `+1` or `01` for a number, no empty key).
        (parsed.to_string() == id).then_some(parsed)
    }
}

/// The key of a revision's own shard documents (before any rebase): its documents key, or its
/// number for a revision written before revisions had keys. Not the number otherwise: a
/// revision renumbered after a conflict keeps its documents.
pub(super) fn rules_key(rev: &RevisionMeta) -> String {
    if rev.docs.is_empty() {
        rev.rev.to_string()
    } else {
        rev.docs.clone()
    }
}

/// `s` split at every `-` into exactly `N` parts.
fn split<const N: usize>(s: &str) -> Option<[&str; N]> {
    let mut parts = s.split('-');
    let mut out = [""; N];
    for part in &mut out {
        *part = parts.next()?;
    }
    parts.next().is_none().then_some(out)
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accounts => f.write_str(ACCOUNTS_DOC),
            Self::Cards => f.write_str(CARDS_DOC),
            Self::Datasets => f.write_str(DATASETS_DOC),
            Self::Card { card } => write!(f, "card-{card}"),
            Self::Rules { card, docs, shard } => write!(f, "rules-{card}-{docs}-{shard}"),
            Self::Dataset {
                kind,
                generation,
                docs,
                shard,
            } => {
                let kind = kind.as_str();
                if docs.is_empty() {
                    write!(f, "dataset-{kind}-{generation}-{shard}")
                } else {
                    write!(f, "dataset-{kind}-{generation}-{docs}-{shard}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(rev: u32, docs: &str) -> RevisionMeta {
        RevisionMeta {
            rev,
            created: 100,
            live_at: Some(100),
            source: "create".into(),
            shards: 4,
            buckets: 16,
            docs: docs.into(),
            gens: Default::default(),
        }
    }

    fn dataset(generation: u32, docs: &str) -> DatasetMeta {
        DatasetMeta {
            name: "hlr".into(),
            generation,
            shards: 4,
            buckets: 16,
            fields: Vec::new(),
            rows: 0,
            imported: 100,
            docs: docs.into(),
        }
    }

    /// The ids as the catalog has always written them, and what they name.
    #[test]
    fn todays_ids_parse_and_write_back() {
        let hlr = DatasetKind::Hlr;
        let cases = [
            ("accounts", DocId::Accounts),
            ("cards", DocId::Cards),
            ("datasets", DocId::Datasets),
            ("card-cq3x0a9k2m1z", DocId::card("cq3x0a9k2m1z")),
            (
                "rules-c1-0a1b2c3d-3",
                DocId::rules("c1", &revision(2, "0a1b2c3d"), 3),
            ),
            ("rules-c1-2-0", DocId::rules("c1", &revision(2, ""), 0)),
            (
                "dataset-hlr-2-0a1b2c3d-1",
                DocId::dataset(hlr, &dataset(2, "0a1b2c3d"), 1),
            ),
            (
                "dataset-lrn-1-0",
                DocId::dataset(DatasetKind::Lrn, &dataset(1, ""), 0),
            ),
        ];
        for (text, id) in cases {
            assert_eq!(id.to_string(), text);
            assert_eq!(DocId::parse(text), Some(id), "{text}");
        }
    }

    #[test]
    fn every_variant_reads_back() {
        let ids = [
            DocId::Accounts,
            DocId::Cards,
            DocId::Datasets,
            DocId::card("c1"),
            DocId::rules("c1", &revision(7, "ffffffff"), 9),
            DocId::rules("c1", &revision(7, ""), 9),
            DocId::dataset(DatasetKind::Range, &dataset(3, "00000000"), 0),
            DocId::dataset(DatasetKind::Tps, &dataset(3, ""), 2),
        ];
        for id in ids {
            assert_eq!(DocId::parse(&id.to_string()), Some(id.clone()), "{id}");
        }
    }

    #[test]
    fn other_ids_do_not_parse() {
        for text in [
            "",
            "account",
            "card",
            "rules-c1-0a1b2c3d",
            "rules-c1-0a1b2c3d-1-2",
            "rules-c1-0a1b2c3d-x",
            "rules-c1-0a1b2c3d-01",
            "rules-c1-0a1b2c3d-+1",
            "dataset-hlr-1",
            "dataset-xyz-1-0",
            "dataset-hlr-x-0",
            "dataset-hlr-1--0",
            "dataset-hlr-1-0a1b2c3d-0-0",
        ] {
            assert_eq!(DocId::parse(text), None, "{text}");
        }
    }
}
