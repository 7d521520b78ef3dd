//! Rate cards and their revisions.
//!
//! A card is a named price list owned by one account. Its rules live in numbered revisions;
//! the revision live at time `t` is the one with the greatest `live_at ≤ t` (ties: the higher
//! revision number). A revision without `live_at` is a draft; one with `live_at` in the future is
//! scheduled; a live one that a later one has replaced is archived. State is therefore derived
//! from the clock, so a scheduled revision goes live at its time with nothing to trigger.

use crate::billing::{CardBilling, Rounding};
use serde::{Deserialize, Serialize};

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
