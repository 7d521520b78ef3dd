//! Rate cards and their revisions.
//!
//! A card is a named price list owned by one account. Its rules live in numbered revisions;
//! the revision live at time `t` is the one with the greatest `live_at ≤ t` (ties: the higher
//! revision number). A revision without `live_at` is a draft; one with `live_at` in the future is
//! scheduled; a live one that a later one has replaced is archived. State is therefore derived
//! from the clock, so a scheduled revision goes live at its time with nothing to trigger.

use crate::billing::{CardBilling, Rounding};
use crate::build::Recipe;
use crate::pricing::CardPricing;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a card is to its account: what it sells, or what it buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardKind {
    /// Sold to customers (built from provider cards, or uploaded).
    #[default]
    Customer,
    /// Bought from a provider: what builds and routing read.
    Provider,
}

impl CardKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Provider => "provider",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Self::Customer),
            "provider" => Some(Self::Provider),
            _ => None,
        }
    }
}

/// The last build of a customer card: when, into which revision, from which provider
/// revisions (what `stale` is judged against).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBuild {
    pub at: i64,
    pub revision: u32,
    pub from: Vec<BuiltFrom>,
}

/// One provider revision a build read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltFrom {
    pub card: String,
    pub revision: u32,
    /// The revision's rules as the build read them (a fingerprint the catalog gives).
    #[serde(default)]
    pub version: String,
    /// The provider card's `cap` then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Decimal>,
}

/// Which way traffic flows on a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Termination,
    Origination,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Termination => "termination",
            Self::Origination => "origination",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "termination" => Some(Self::Termination),
            "origination" => Some(Self::Origination),
            _ => None,
        }
    }
}

/// A card's settings, as stored (persisted: versioned by [`CardMeta::VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardMeta {
    pub id: String,
    pub account: String,
    pub name: String,
    /// ISO 4217, three capital letters.
    pub currency: String,
    pub direction: String,
    pub precision: u32,
    pub rounding: String,
    pub duration_rounding: String,
    pub tech_prefix: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds of the last change to the card or its rules.
    pub updated: i64,
    #[serde(default)]
    pub kind: CardKind,
    /// A per-minute ceiling: a rule above it prices no call (blocked, "capped").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Decimal>,
    /// Rate increases go live no sooner than this many days after the import or build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_days: Option<u32>,
    /// How the card is built from provider cards, once built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<Recipe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_build: Option<LastBuild>,
}

impl CardMeta {
    /// Version of the stored form.
    pub const VERSION: u32 = 1;

    /// A card with the defaults: USD, termination, 4 places rounded up, durations rounded up,
    /// no tech prefix, created and updated at `now`.
    pub fn new(id: String, account: String, name: String, now: i64) -> Self {
        let billing = CardBilling::default();
        Self {
            id,
            account,
            name,
            currency: "USD".into(),
            direction: Direction::default().as_str().into(),
            precision: billing.precision,
            rounding: billing.rounding.as_str().into(),
            duration_rounding: billing.duration_rounding.as_str().into(),
            tech_prefix: String::new(),
            created: now,
            updated: now,
            kind: CardKind::default(),
            cap: None,
            notice_days: None,
            recipe: None,
            last_build: None,
        }
    }

    /// The billing settings (the stored strings were validated when written).
    pub fn billing(&self) -> CardBilling {
        CardBilling {
            precision: self.precision,
            rounding: Rounding::parse(&self.rounding).unwrap_or_default(),
            duration_rounding: Rounding::parse(&self.duration_rounding).unwrap_or_default(),
        }
    }

    /// What pricing one of its rules needs of the card.
    pub fn pricing(&self) -> CardPricing {
        CardPricing {
            billing: self.billing(),
            cap: self.cap,
        }
    }
}

/// True for three ASCII capital letters.
pub fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// A revision's bookkeeping (its rules are stored apart, in shards).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionMeta {
    pub rev: u32,
    /// Unix seconds.
    pub created: i64,
    /// When it goes (or went) live; `None` for a draft.
    pub live_at: Option<i64>,
    /// Where its rules came from: `create`, `import:csv`, `import:ime`, `copy:N`.
    pub source: String,
    /// How many shard documents hold its rules.
    pub shards: u32,
    /// How many bucket maps each shard document has (rules are spread by a hash of the prefix).
    pub buckets: u32,
    /// Names its shard documents: unique per write, so revisions written at once in two
    /// regions never share documents. Empty in revisions written before it existed.
    #[serde(default)]
    pub docs: String,
    /// Shards whose document was rebased (its history dropped, its rules written afresh into
    /// a new document): shard number → the generation that holds its rules now. Kept beside
    /// the revision's entry, not in it (a rebase never races a change of the revision's
    /// settings), so not part of this type's serialised form.
    #[serde(skip)]
    pub gens: BTreeMap<u32, ShardGen>,
}

/// The document that holds one shard of a revision's rules after a rebase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardGen {
    /// Names the shard's document in place of the revision's `docs`.
    pub docs: String,
    /// Rebases since the revision was written (1 for the first): of two generations of a
    /// shard, the deeper one is served (ties: the greater `docs`).
    pub depth: u32,
}

/// Where a revision stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevisionState {
    Draft,
    Scheduled,
    Live,
    Archived,
}

impl RevisionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Live => "live",
            Self::Archived => "archived",
        }
    }
}

/// The revision live at `at` among `revisions`: greatest `live_at ≤ at`, ties to the higher number.
pub fn live_revision<'a, I>(revisions: I, at: i64) -> Option<u32>
where
    I: IntoIterator<Item = &'a RevisionMeta>,
{
    revisions
        .into_iter()
        .filter_map(|r| r.live_at.filter(|&t| t <= at).map(|t| (t, r.rev)))
        .max()
        .map(|(_, rev)| rev)
}

/// The state of `rev` at `now`, given the revision live now.
pub fn revision_state(meta: &RevisionMeta, live_now: Option<u32>, now: i64) -> RevisionState {
    match meta.live_at {
        None => RevisionState::Draft,
        Some(t) if t > now => RevisionState::Scheduled,
        Some(_) if live_now == Some(meta.rev) => RevisionState::Live,
        Some(_) => RevisionState::Archived,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(rev: u32, live_at: Option<i64>) -> RevisionMeta {
        RevisionMeta {
            rev,
            created: 0,
            live_at,
            source: "test".into(),
            shards: 1,
            buckets: 1,
            docs: String::new(),
            gens: BTreeMap::new(),
        }
    }

    #[test]
    fn live_revision_follows_the_clock() {
        let revs = [
            rev(1, Some(100)),
            rev(2, Some(200)),
            rev(3, None),
            rev(4, Some(150)),
        ];
        assert_eq!(live_revision(&revs, 99), None);
        assert_eq!(live_revision(&revs, 100), Some(1));
        assert_eq!(live_revision(&revs, 160), Some(4));
        assert_eq!(live_revision(&revs, 10_000), Some(2));
        let live = live_revision(&revs, 160);
        assert_eq!(revision_state(&revs[0], live, 160), RevisionState::Archived);
        assert_eq!(
            revision_state(&revs[1], live, 160),
            RevisionState::Scheduled
        );
        assert_eq!(revision_state(&revs[2], live, 160), RevisionState::Draft);
        assert_eq!(revision_state(&revs[3], live, 160), RevisionState::Live);
    }

    #[test]
    fn ties_go_to_the_higher_revision() {
        let revs = [rev(1, Some(100)), rev(2, Some(100))];
        assert_eq!(live_revision(&revs, 100), Some(2));
    }
}
