//! Building a customer card from provider cards (API.md §3 "Building"): for every prefix any
//! provider has, each provider's longest match for it, mixed into one cost, plus profit,
//! rounded once.
//!
//! The laws (property-tested below):
//! - the prefixes are the union of the providers'; each provider offers its own longest match
//!   for a prefix, unless that rule is `Blocked` or above the provider card's `cap` (then it
//!   offers nothing there); a prefix no provider offers is skipped;
//! - `min`/`max` take the cheapest/dearest offer by rate (ties broken by the rest of the rule,
//!   never by the order the cards were listed), with its fees and increments; `first` the
//!   offer of the first card listed; `avg` the mean of every money field (a provider without a
//!   US rate offers its `rate` there) and the largest `mcd`, `pulse` and `grace` of those
//!   mixed — so `min`, `max` and `avg` give the same card whatever the order of `from`;
//! - profit: the entry whose `match` is the longest prefix of the rule's prefix wins (an empty
//!   match, `*`, matches everything); on each field it applies to, `sell = cost × (1 +
//!   percent / 100) + absolute`, raised to `cost + min_margin` on the per-minute rates when
//!   below; then rounded once to the customer card's precision with its rounding — upward
//!   where rounding down would break the margin.

use crate::billing::{CardBilling, Rounding};
use crate::deck::{MAX_MONEY, MAX_MONEY_SCALE};
use crate::index::PrefixIndex;
use crate::rule::{Rule, RuleStatus};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use thiserror::Error;

/// How the offers of several providers for one prefix become one cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    #[default]
    Min,
    Max,
    Avg,
    First,
}

impl Mix {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "min" => Some(Self::Min),
            "max" => Some(Self::Max),
            "avg" => Some(Self::Avg),
            "first" => Some(Self::First),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Min => "min",
            Self::Max => "max",
            Self::Avg => "avg",
            Self::First => "first",
        }
    }
}

/// Which money fields of a rule a profit entry raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyTo {
    Rate,
    ConnectFee,
    RateInter,
    RateIntra,
    /// Every money field: the three rates and the connect fee.
    #[default]
    All,
}

impl ApplyTo {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rate" => Some(Self::Rate),
            "connect_fee" => Some(Self::ConnectFee),
            "rate_inter" => Some(Self::RateInter),
            "rate_intra" => Some(Self::RateIntra),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    fn covers(self, field: Field) -> bool {
        matches!(
            (self, field),
            (Self::All, _)
                | (Self::Rate, Field::Rate)
                | (Self::ConnectFee, Field::ConnectFee)
                | (Self::RateInter, Field::RateInter)
                | (Self::RateIntra, Field::RateIntra)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Rate,
    ConnectFee,
    RateInter,
    RateIntra,
}

/// One entry of a recipe's profit list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Profit {
    /// The prefixes it applies to (digits); empty: every prefix (`*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<String>,
    /// Percent of the cost added.
    #[serde(default)]
    pub percent: Decimal,
    /// Added on top, per minute for a rate (per call for the connect fee).
    #[serde(default)]
    pub absolute: Decimal,
    /// The least a per-minute rate sells above its cost.
    #[serde(default)]
    pub min_margin: Decimal,
    #[serde(default)]
    pub apply_to: ApplyTo,
}

/// Largest `percent` a profit entry may have.
pub const MAX_PERCENT: u32 = 10_000;
/// Largest `absolute` or `min_margin`.
pub const MAX_MARKUP: u32 = 1_000;

impl Profit {
    /// Checks the entry's bounds: money of at most [`MAX_MONEY_SCALE`] places, `percent`
    /// 0–[`MAX_PERCENT`], `absolute` and `min_margin` 0–[`MAX_MARKUP`], digit prefixes.
    pub fn check(&self) -> Result<(), String> {
        let within = |v: Decimal, max: u32| {
            !v.is_sign_negative() && v <= Decimal::from(max) && v.scale() <= MAX_MONEY_SCALE
        };
        if !within(self.percent, MAX_PERCENT) {
            return Err(format!("percent must be 0-{MAX_PERCENT}"));
        }
        if !within(self.absolute, MAX_MARKUP) || !within(self.min_margin, MAX_MARKUP) {
            return Err(format!("absolute and min_margin must be 0-{MAX_MARKUP}"));
        }
        if let Some(bad) = self.matches.iter().find(|m| !crate::number::is_prefix(m)) {
            return Err(format!("match '{bad}' is not a prefix of digits"));
        }
        Ok(())
    }

    /// How specific the entry is for `prefix`: the length of its longest match that `prefix`
    /// starts with (0 for `*`), or `None` when it does not apply.
    fn specificity(&self, prefix: &str) -> Option<usize> {
        if self.matches.is_empty() {
            return Some(0);
        }
        self.matches
            .iter()
            .filter(|m| prefix.starts_with(m.as_str()))
            .map(String::len)
            .max()
    }
}

/// How a customer card is built: kept on the card, so a build with no `from` repeats it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// The provider cards, by id, in the order given.
    pub from: Vec<String>,
    #[serde(default)]
    pub mix: Mix,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profit: Vec<Profit>,
    /// Round to the customer card's precision (else only to the most places a rule keeps).
    #[serde(default = "yes")]
    pub round: bool,
    /// Rebuilt by itself when a provider card changes.
    #[serde(default)]
    pub auto: bool,
}

fn yes() -> bool {
    true
}

/// One provider card as a build reads it.
#[derive(Debug, Clone, Copy)]
pub struct Provider<'a> {
    pub index: &'a PrefixIndex,
    /// The provider card's `cap`: its rules above it are not offered.
    pub cap: Option<Decimal>,
}

impl<'a> Provider<'a> {
    /// What this provider offers for `prefix`: its longest match, unless blocked or capped.
    pub fn offer(&self, prefix: &str) -> Option<&'a Rule> {
        let rule = self.index.longest_match(prefix)?.rule();
        let capped = self.cap.is_some_and(|cap| rule.rate > cap);
        (rule.status == RuleStatus::Active && !capped).then_some(rule)
    }
}

/// Why a build could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BuildError {
    #[error("the built price of prefix {prefix} is over {MAX_MONEY}")]
    OutOfRange { prefix: String },
}

/// A built card's rules, and how many prefixes no provider offered.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub rules: Vec<(String, Rule)>,
    pub skipped: usize,
}

/// Builds every prefix of the providers' union, in prefix order.
pub fn build(
    providers: &[Provider<'_>],
    recipe: &Recipe,
    card: &CardBilling,
) -> Result<Built, BuildError> {
    let mut prefixes: Vec<String> = providers
        .iter()
        .flat_map(|p| p.index.iter().map(|(prefix, _)| prefix))
        .collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    let mut rules = Vec::with_capacity(prefixes.len());
    let mut skipped = 0;
    for prefix in prefixes {
        match build_rule(providers, recipe, card, &prefix)? {
            Some(rule) => rules.push((prefix, rule)),
            None => skipped += 1,
        }
    }
    Ok(Built { rules, skipped })
}

/// The prefixes whose built rule an edit of `prefix` in one provider may change: the prefix
/// and every prefix of any provider that extends it (their longest match may be the edited
/// rule), in prefix order.
pub fn affected(providers: &[Provider<'_>], prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = providers
        .iter()
        .flat_map(|p| p.index.iter_prefixed(prefix).map(|(p, _)| p))
        .chain(std::iter::once(prefix.to_owned()))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The built rule for `prefix`, or `None` when no provider offers it.
pub fn build_rule(
    providers: &[Provider<'_>],
    recipe: &Recipe,
    card: &CardBilling,
    prefix: &str,
) -> Result<Option<Rule>, BuildError> {
    let offers: Vec<&Rule> = providers.iter().filter_map(|p| p.offer(prefix)).collect();
    let Some(cost) = mix(recipe.mix, &offers) else {
        return Ok(None);
    };
    let profit = recipe
        .profit
        .iter()
        .filter_map(|p| p.specificity(prefix).map(|s| (s, p)))
        // The most specific; among equals, the first listed.
        .fold(None::<(usize, &Profit)>, |best, (s, p)| match best {
            Some((b, _)) if b >= s => best,
            _ => Some((s, p)),
        })
        .map(|(_, p)| p);
    let sell = sell(cost, profit, card, recipe.round);
    if sell.check().is_err() {
        return Err(BuildError::OutOfRange {
            prefix: prefix.to_owned(),
        });
    }
    Ok(Some(sell))
}

/// The order `min` takes offers in: by rate, then by the rest of the rule, so equal rates
/// never depend on the order of the cards.
fn cheaper(a: &Rule, b: &Rule) -> Ordering {
    a.rate
        .cmp(&b.rate)
        .then_with(|| rest(a).cmp(&rest(b)))
        .then_with(|| a.name.cmp(&b.name))
}

/// `max`: by rate descending, equal rates as `min` orders them.
fn dearer(a: &Rule, b: &Rule) -> Ordering {
    b.rate
        .cmp(&a.rate)
        .then_with(|| rest(a).cmp(&rest(b)))
        .then_with(|| a.name.cmp(&b.name))
}

#[allow(clippy::type_complexity)]
fn rest(r: &Rule) -> (Decimal, u32, u32, u32, Option<Decimal>, Option<Decimal>) {
    (
        r.connect_fee,
        r.mcd,
        r.pulse,
        r.grace,
        r.rate_inter,
        r.rate_intra,
    )
}

/// One cost rule from the offers (in the order of the cards), or `None` without offers.
fn mix(mix: Mix, offers: &[&Rule]) -> Option<Rule> {
    let first = *offers.first()?;
    Some(match mix {
        Mix::First => first.clone(),
        Mix::Min => (*offers.iter().min_by(|a, b| cheaper(a, b))?).clone(),
        Mix::Max => (*offers.iter().min_by(|a, b| dearer(a, b))?).clone(),
        Mix::Avg => {
            let named = *offers.iter().min_by(|a, b| cheaper(a, b))?;
            let n = Decimal::from(offers.len());
            let mean =
                |f: &dyn Fn(&Rule) -> Decimal| offers.iter().copied().map(f).sum::<Decimal>() / n;
            let us = |has: &dyn Fn(&Rule) -> Option<Decimal>| {
                offers
                    .iter()
                    .any(|r| has(r).is_some())
                    .then(|| mean(&|r| has(r).unwrap_or(r.rate)))
            };
            Rule {
                name: named.name.clone(),
                rate: mean(&|r| r.rate),
                connect_fee: mean(&|r| r.connect_fee),
                mcd: offers.iter().map(|r| r.mcd).max()?,
                pulse: offers.iter().map(|r| r.pulse).max()?,
                grace: offers.iter().map(|r| r.grace).max()?,
                rate_inter: us(&|r| r.rate_inter),
                rate_intra: us(&|r| r.rate_intra),
                status: RuleStatus::Active,
            }
        }
    })
}

/// The cost rule with profit added and every money field rounded once.
fn sell(cost: Rule, profit: Option<&Profit>, card: &CardBilling, round: bool) -> Rule {
    let (places, rounding) = if round {
        (card.precision, card.rounding)
    } else {
        (MAX_MONEY_SCALE, card.rounding)
    };
    let price = |value: Decimal, field: Field| -> Decimal {
        let Some(p) = profit.filter(|p| p.apply_to.covers(field)) else {
            return rounding.round(value, places);
        };
        let mut sell = value + value * p.percent / Decimal::ONE_HUNDRED + p.absolute;
        let per_minute = field != Field::ConnectFee;
        let floor = value + p.min_margin;
        if per_minute && sell < floor {
            sell = floor;
        }
        let rounded = rounding.round(sell, places);
        if per_minute && rounded < floor {
            Rounding::Up.round(sell, places)
        } else {
            rounded
        }
    };
    Rule {
        rate: price(cost.rate, Field::Rate),
        connect_fee: price(cost.connect_fee, Field::ConnectFee),
        rate_inter: cost.rate_inter.map(|r| price(r, Field::RateInter)),
        rate_intra: cost.rate_intra.map(|r| price(r, Field::RateIntra)),
        status: RuleStatus::Active,
        ..cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn rule(rate: i64, scale: u32) -> Rule {
        Rule::new(Arc::from("d"), Decimal::new(rate, scale))
    }

    fn index(rules: &[(&str, Rule)]) -> PrefixIndex {
        rules
            .iter()
            .map(|(p, r)| (p.to_string(), r.clone()))
            .collect()
    }

    fn recipe(mix: Mix, profit: Vec<Profit>) -> Recipe {
        Recipe {
            from: Vec::new(),
            mix,
            profit,
            round: true,
            auto: false,
        }
    }

    #[test]
    fn each_provider_offers_its_longest_match_unless_blocked_or_capped() {
        let mut blocked = rule(1, 3);
        blocked.status = RuleStatus::Blocked;
        let a = index(&[("44", rule(50, 3)), ("447", rule(90, 3))]);
        let b = index(&[("4471", rule(70, 3)), ("33", blocked)]);
        let c = index(&[("44", rule(10, 3)), ("33", rule(2, 1))]);
        let providers = [
            Provider {
                index: &a,
                cap: None,
            },
            Provider {
                index: &b,
                cap: None,
            },
            Provider {
                index: &c,
                cap: Some(Decimal::new(1, 1)),
            },
        ];
        let built = build(
            &providers,
            &recipe(Mix::Min, Vec::new()),
            &CardBilling::default(),
        )
        .unwrap();
        let rates: Vec<(&str, String)> = built
            .rules
            .iter()
            .map(|(p, r)| (p.as_str(), r.rate.to_string()))
            .collect();
        // 33: b blocks it and c's 0.2 is over its cap: skipped.
        assert_eq!(
            rates,
            [
                ("44", "0.010".into()),
                ("447", "0.010".into()),
                ("4471", "0.010".into())
            ]
        );
        assert_eq!(built.skipped, 1);
        let first = build(
            &providers,
            &recipe(Mix::First, Vec::new()),
            &CardBilling::default(),
        )
        .unwrap();
        assert_eq!(
            first.rules[2].1.rate,
            Decimal::new(90, 3),
            "a's 447 for 4471"
        );
        let max = build(
            &providers,
            &recipe(Mix::Max, Vec::new()),
            &CardBilling::default(),
        )
        .unwrap();
        assert_eq!(max.rules[2].1.rate, Decimal::new(90, 3));
        let avg = build(
            &providers,
            &recipe(Mix::Avg, Vec::new()),
            &CardBilling::default(),
        )
        .unwrap();
        assert_eq!(
            avg.rules[2].1.rate,
            Decimal::new(567, 4),
            "(0.09+0.07+0.01)/3 rounded up"
        );
    }

    #[test]
    fn the_most_specific_profit_wins_and_the_margin_survives_rounding() {
        let a = index(&[
            ("44", rule(1000, 4)),
            ("33", rule(1000, 4)),
            ("1", rule(1, 4)),
        ]);
        let profit = vec![
            Profit {
                percent: Decimal::from(10),
                ..Profit::default()
            },
            Profit {
                matches: vec!["4".into(), "44".into()],
                absolute: Decimal::new(5, 3),
                apply_to: ApplyTo::Rate,
                ..Profit::default()
            },
            Profit {
                matches: vec!["1".into()],
                min_margin: Decimal::new(15, 5),
                ..Profit::default()
            },
        ];
        let card = CardBilling {
            rounding: Rounding::Down,
            ..CardBilling::default()
        };
        let built = build(
            &[Provider {
                index: &a,
                cap: None,
            }],
            &recipe(Mix::Min, profit),
            &card,
        )
        .unwrap();
        let rate = |p: &str| built.rules.iter().find(|(q, _)| q == p).unwrap().1.rate;
        assert_eq!(rate("33"), Decimal::new(1100, 4));
        assert_eq!(rate("44"), Decimal::new(1050, 4));
        // 0.0001 + 0.00015 = 0.00025 rounds down to 0.0002, under the margin: up to 0.0003.
        assert_eq!(rate("1"), Decimal::new(3, 4));
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        (
            1i64..100_000,
            0u32..3,
            1u32..4,
            0i64..500,
            prop::bool::weighted(0.1),
            prop::option::of(1i64..100_000),
        )
            .prop_map(|(rate, mcd, pulse, fee, blocked, inter)| Rule {
                name: Arc::from(format!("n{rate}")),
                rate: Decimal::new(rate, 5),
                connect_fee: Decimal::new(fee, 4),
                mcd: mcd * 30,
                pulse: pulse * 6,
                grace: 0,
                rate_inter: inter.map(|i| Decimal::new(i, 5)),
                rate_intra: None,
                status: if blocked {
                    RuleStatus::Blocked
                } else {
                    RuleStatus::Active
                },
            })
    }

    fn arb_card() -> impl Strategy<Value = Vec<(String, Rule)>> {
        prop::collection::btree_map("4[0-9]{0,3}", arb_rule(), 1..30)
            .prop_map(|m| m.into_iter().collect())
    }

    fn arb_profit() -> impl Strategy<Value = Profit> {
        (
            prop::collection::vec("4[0-9]{0,2}", 0..3),
            0i64..5000,
            0i64..1000,
            0i64..1000,
            prop::sample::select(vec![ApplyTo::All, ApplyTo::Rate, ApplyTo::ConnectFee]),
        )
            .prop_map(|(matches, percent, absolute, margin, apply_to)| Profit {
                matches,
                percent: Decimal::new(percent, 2),
                absolute: Decimal::new(absolute, 5),
                min_margin: Decimal::new(margin, 5),
                apply_to,
            })
    }

    /// The cost of `prefix` computed the long way: every provider's longest match, skipping
    /// blocked ones, mixed by rate.
    fn naive_cost(cards: &[PrefixIndex], mix: Mix, prefix: &str) -> Option<Decimal> {
        let mut rates = Vec::new();
        for index in cards {
            let best = (1..=prefix.len())
                .rev()
                .find_map(|l| index.get(&prefix[..l]));
            if let Some(r) = best.filter(|r| r.status == RuleStatus::Active) {
                rates.push(r.rate);
            }
        }
        if rates.is_empty() {
            return None;
        }
        Some(match mix {
            Mix::Min => *rates.iter().min()?,
            Mix::Max => *rates.iter().max()?,
            Mix::Avg => rates.iter().sum::<Decimal>() / Decimal::from(rates.len()),
            Mix::First => *rates.first()?,
        })
    }

    /// The profit entry for `prefix`: the longest match wins, the first among equals.
    fn naive_profit<'a>(profit: &'a [Profit], prefix: &str) -> Option<&'a Profit> {
        let mut best: Option<(usize, &Profit)> = None;
        for p in profit {
            let s = if p.matches.is_empty() {
                Some(0)
            } else {
                p.matches
                    .iter()
                    .filter(|m| prefix.starts_with(m.as_str()))
                    .map(String::len)
                    .max()
            };
            if let Some(s) = s {
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, p));
                }
            }
        }
        best.map(|(_, p)| p)
    }

    fn naive_rate(cost: Decimal, profit: Option<&Profit>, card: &CardBilling) -> Decimal {
        let Some(p) = profit.filter(|p| p.apply_to != ApplyTo::ConnectFee) else {
            return card.rounding.round(cost, card.precision);
        };
        let sell = (cost * (Decimal::ONE_HUNDRED + p.percent) / Decimal::ONE_HUNDRED + p.absolute)
            .max(cost + p.min_margin);
        let rounded = card.rounding.round(sell, card.precision);
        if rounded < cost + p.min_margin {
            Rounding::Up.round(sell, card.precision)
        } else {
            rounded
        }
    }

    proptest! {
        #[test]
        fn built_rates_are_the_mix_of_longest_matches_plus_profit(
            cards in prop::collection::vec(arb_card(), 1..5),
            mix in prop::sample::select(vec![Mix::Min, Mix::Max, Mix::Avg, Mix::First]),
            profit in prop::collection::vec(arb_profit(), 0..3),
            rounding in prop::sample::select(vec![Rounding::Up, Rounding::Down, Rounding::HalfUp]),
            precision in 2u32..7,
        ) {
            let indexes: Vec<PrefixIndex> = cards.iter().map(|c| c.iter().cloned().collect()).collect();
            let providers: Vec<Provider> = indexes.iter().map(|index| Provider { index, cap: None }).collect();
            let recipe = recipe(mix, profit);
            let card = CardBilling { precision, rounding, ..CardBilling::default() };
            let built = build(&providers, &recipe, &card).unwrap();
            let mut union: Vec<String> = cards.iter().flatten().map(|(p, _)| p.clone()).collect();
            union.sort();
            union.dedup();
            prop_assert_eq!(built.rules.len() + built.skipped, union.len());
            for prefix in &union {
                let got = built.rules.iter().find(|(p, _)| p == prefix).map(|(_, r)| r.rate);
                let cost = naive_cost(&indexes, mix, prefix);
                let profit = naive_profit(&recipe.profit, prefix);
                let want = cost.map(|c| naive_rate(c, profit, &card));
                prop_assert_eq!(got, want, "prefix {}", prefix);
                // The margin holds on every rate a profit applies to.
                if let (Some(got), Some(cost), Some(p)) = (got, cost, profit) {
                    if p.apply_to != ApplyTo::ConnectFee {
                        prop_assert!(got >= cost + p.min_margin, "{} sells {} on cost {}", prefix, got, cost);
                    }
                }
            }
            // The same card whatever the order of the providers, but for `first`.
            if mix != Mix::First {
                let reversed: Vec<Provider> = providers.iter().rev().copied().collect();
                prop_assert_eq!(&build(&reversed, &recipe, &card).unwrap(), &built);
            }
            // Building twice from the same cards is the same card.
            prop_assert_eq!(&build(&providers, &recipe, &card).unwrap(), &built);
        }
    }
}
