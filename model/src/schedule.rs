//! From a deck with dates and change codes to the revisions it makes (API.md §3 "dates"): one
//! revision at the import's `live_at` and one at every later distinct `effective_date` or
//! `end_date`, each the whole card as it stands from then on.
//!
//! A row applies from its `effective_date` (or from `live_at` without one) until its
//! `end_date`; a `closed` row removes its prefix while it applies, and so does a row once it has
//! ended. A whole deck starts from nothing (a prefix no applying row names is absent); a delta
//! deck starts from the rules it is applied to, so a prefix it does not name, or names only
//! later, keeps its rule.

use crate::deck::{Change, Deck, Terms};
use crate::rule::Rule;
use std::collections::BTreeMap;

/// Most revisions one deck may make.
pub const MAX_STEPS: usize = 100;

/// When the revisions `deck` makes from `live_at` on go live: `live_at`, then every later
/// distinct date of its rows, in order. `None` when that is more than [`MAX_STEPS`]. Each one's
/// rules are [`rules_at`] that time; they are made one at a time, so a large deck never has
/// all its revisions in memory at once.
pub fn dates(deck: &Deck, live_at: i64) -> Option<Vec<i64>> {
    let mut dates: Vec<i64> = deck
        .terms
        .iter()
        .flat_map(|t| [t.effective, t.end])
        .flatten()
        .filter(|t| *t > live_at)
        .collect();
    dates.sort_unstable();
    dates.dedup();
    if dates.len() >= MAX_STEPS {
        return None;
    }
    dates.insert(0, live_at);
    Some(dates)
}

/// The card `deck` makes at `at`, applied to `base` (the rules of the revision it changes, for
/// a delta deck; empty for a whole deck), in prefix order.
pub fn rules_at(base: &[(String, Rule)], deck: &Deck, at: i64) -> Vec<(String, Rule)> {
    let terms = |i: usize| deck.terms.get(i).copied().unwrap_or_default();
    let mut card: BTreeMap<&str, &Rule> = base.iter().map(|(p, r)| (p.as_str(), r)).collect();
    for (i, (prefix, rule)) in deck.rules.iter().enumerate() {
        let t: Terms = terms(i);
        if t.effective.is_some_and(|from| from > at) {
            continue;
        }
        let ended = t.end.is_some_and(|end| end <= at);
        if ended || t.change == Some(Change::Closed) {
            card.remove(prefix.as_str());
        } else {
            card.insert(prefix, rule);
        }
    }
    card.into_iter()
        .map(|(p, r)| (p.to_owned(), r.clone()))
        .collect()
}

/// What a row's change code says against what the row does to `before` (the rule in place),
/// when the two disagree: e.g. "marked increase, but its rate goes from 0.02 to 0.01".
pub fn contradiction(change: Change, before: Option<&Rule>, after: &Rule) -> Option<String> {
    let why = match (change, before) {
        (Change::New, Some(_)) => "marked new, but it is already priced".to_owned(),
        (Change::Closed, None) => "marked closed, but it is not priced".to_owned(),
        (Change::Closed | Change::New, _) => return None,
        (_, None) => format!("marked {}, but it is new", change.as_str()),
        (Change::Increase, Some(b)) if after.rate <= b.rate => {
            format!(
                "marked increase, but its rate goes from {} to {}",
                b.rate, after.rate
            )
        }
        (Change::Decrease, Some(b)) if after.rate >= b.rate => {
            format!(
                "marked decrease, but its rate goes from {} to {}",
                b.rate, after.rate
            )
        }
        (Change::Unchanged, Some(b)) if !b.same_price(after) => {
            format!(
                "marked unchanged, but its rate goes from {} to {}",
                b.rate, after.rate
            )
        }
        _ => return None,
    };
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deck::parse_csv;

    const HEAD: &str = "prefix,name,rate,connect_fee,mcd,pulse,effective_date,end_date,change\n";

    fn rates(rules: &[(String, Rule)]) -> Vec<(String, String)> {
        rules
            .iter()
            .map(|(p, r)| (p.clone(), r.rate.to_string()))
            .collect()
    }

    #[test]
    fn dated_rows_make_one_revision_per_date() {
        let deck = parse_csv(
            format!(
                "{HEAD}44,UK,0.01,0,60,60,,,\n\
                 33,FR,0.02,0,60,60,1970-01-02,,\n\
                 49,DE,0.03,0,60,60,,1970-01-03,\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let ats = dates(&deck, 1000).unwrap();
        assert_eq!(ats, [1000, 86_400, 172_800]);
        let at = |t: i64| rates(&rules_at(&[], &deck, t));
        let s = |p: &str, r: &str| (p.to_owned(), r.to_owned());
        assert_eq!(at(1000), [s("44", "0.01"), s("49", "0.03")]);
        assert_eq!(
            at(86_400),
            [s("33", "0.02"), s("44", "0.01"), s("49", "0.03")]
        );
        assert_eq!(at(172_800), [s("33", "0.02"), s("44", "0.01")]);
    }

    #[test]
    fn a_delta_keeps_what_it_does_not_name_and_closes_what_it_says() {
        let base = parse_csv(b"prefix,name,rate,connect_fee,mcd,pulse\n44,UK,0.01,0,60,60\n33,FR,0.02,0,60,60\n1,US,0.001,0,6,6\n")
            .unwrap()
            .rules;
        let deck = parse_csv(
            format!(
                "{HEAD}44,UK,0.02,0,60,60,,,increase\n\
                 33,,,,,,,,closed\n\
                 49,DE,0.03,0,60,60,,,new\n\
                 1,US,0.002,0,6,6,1970-01-05,,decrease\n"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(dates(&deck, 1000).unwrap(), [1000, 4 * 86_400]);
        let s = |p: &str, r: &str| (p.to_owned(), r.to_owned());
        assert_eq!(
            rates(&rules_at(&base, &deck, 1000)),
            [s("1", "0.001"), s("44", "0.02"), s("49", "0.03")]
        );
        assert_eq!(
            rates(&rules_at(&base, &deck, 4 * 86_400))[0],
            s("1", "0.002")
        );
        let before = |p: &str| base.iter().find(|(q, _)| q == p).map(|(_, r)| r);
        let row = |i: usize| &deck.rules[i].1;
        assert_eq!(contradiction(Change::Increase, before("44"), row(0)), None);
        assert!(contradiction(Change::Decrease, before("1"), row(3))
            .unwrap()
            .contains("0.001 to 0.002"));
        assert!(contradiction(Change::New, before("44"), row(0)).is_some());
        assert!(contradiction(Change::Closed, None, row(1)).is_some());
    }

    #[test]
    fn bad_dates_reject_the_row() {
        for row in [
            "44,UK,0.01,0,60,60,tomorrow,,",
            "44,UK,0.01,0,60,60,1970-01-03,1970-01-02,",
            "44,UK,0.01,0,60,60,,,raised",
        ] {
            assert!(
                parse_csv(format!("{HEAD}{row}\n").as_bytes()).is_err(),
                "{row}"
            );
        }
    }
}
