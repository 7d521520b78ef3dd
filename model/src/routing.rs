//! Least-cost routing (API.md §3 "routing"): every provider card's price for one call, ordered
//! by cost, quality or margin, each priced by [`pricing::price`] — the function queries and
//! CDR rating use, so a route's cost is what that provider's card bills.
//!
//! [`pricing::price`]: crate::pricing::price

use crate::index::PrefixIndex;
use crate::pricing::{self, Blocked, CardPricing, Jurisdiction};
use crate::rule::Rule;
use rust_decimal::Decimal;
use std::cmp::Ordering;

/// How routes are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Cheapest first.
    #[default]
    Cost,
    /// Highest ASR first (routes without calls last), then cheapest.
    Quality,
    /// Largest margin over the sell price first, then cheapest.
    Margin,
}

impl Order {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cost" => Some(Self::Cost),
            "quality" => Some(Self::Quality),
            "margin" => Some(Self::Margin),
            _ => None,
        }
    }
}

/// What calls through one provider to one destination did: ASR in percent, ACD in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quality {
    pub asr: Option<Decimal>,
    pub acd: Option<Decimal>,
}

/// One provider card as routing reads it.
#[derive(Debug, Clone, Copy)]
pub struct Provider<'a> {
    pub index: &'a PrefixIndex,
    pub pricing: CardPricing,
}

/// What a call is asked about.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub number: &'a str,
    /// Seconds; the cost of a route is that call's cost on its card.
    pub duration: Decimal,
    pub jurisdiction: Jurisdiction,
    /// What the call sells for (its cost on the customer card), when a card is given.
    pub sell: Option<Decimal>,
    /// Leave out routes that cost more than `sell`.
    pub assure: bool,
    /// Leave out routes whose ASR is known and below this (percent).
    pub min_asr: Option<Decimal>,
    pub order: Order,
    pub limit: usize,
}

/// One provider's price for the call.
#[derive(Debug, Clone)]
pub struct Route<'a> {
    /// Which of the providers given.
    pub provider: usize,
    pub prefix_len: usize,
    pub rule: &'a Rule,
    pub rate: Decimal,
    pub cost: Decimal,
    /// `sell − cost`, with a sell price.
    pub margin: Option<Decimal>,
    pub quality: Quality,
}

/// Why a provider that has a rule for the number is not a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excluded {
    /// Its rule is `Blocked`.
    Blocked,
    /// Its rate is above its card's cap.
    Capped,
    /// It costs more than the call sells for (`assure`).
    AboveSell,
    /// Its ASR is under `min_asr`.
    LowAsr,
}

impl Excluded {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Capped => "capped",
            Self::AboveSell => "above_sell",
            Self::LowAsr => "low_asr",
        }
    }
}

/// The routes for `call` over `providers` (in the order the caller ranks equals: a tie is
/// broken by that order), at most `call.limit`, and the providers left out with why.
/// `quality(provider, prefix_len)` gives what calls through a provider to the destination its
/// rule prices did.
pub fn routes<'a>(
    providers: &[Provider<'a>],
    call: &Call<'_>,
    quality: impl Fn(usize, usize) -> Quality,
) -> (Vec<Route<'a>>, Vec<(usize, usize, Excluded)>) {
    // Every provider's match and rule before any is priced: the lookups wait on neither each
    // other nor billing, so their reads from memory overlap.
    let matches: Vec<_> = providers
        .iter()
        .map(|p| {
            p.index
                .longest_match(call.number)
                .map(|m| (m.prefix_len, m.rule()))
        })
        .collect();
    let mut routes = Vec::with_capacity(providers.len());
    let mut excluded = Vec::new();
    for ((i, p), m) in providers.iter().enumerate().zip(matches) {
        let Some((prefix_len, rule)) = m else {
            continue;
        };
        let price = pricing::price_rule(
            prefix_len,
            rule,
            || call.jurisdiction,
            Some(call.duration),
            &p.pricing,
        );
        let why = match price.blocked {
            Some(Blocked::Rule) => Some(Excluded::Blocked),
            Some(Blocked::Capped) => Some(Excluded::Capped),
            None => None,
        };
        let cost = price.charge.map_or(Decimal::ZERO, |c| c.cost);
        let margin = call.sell.map(|sell| sell - cost);
        let q = quality(i, price.prefix_len);
        let why = why
            .or_else(|| {
                (call.assure && margin.is_some_and(|m| m.is_sign_negative() && !m.is_zero()))
                    .then_some(Excluded::AboveSell)
            })
            .or_else(|| {
                let low = call.min_asr.zip(q.asr).is_some_and(|(min, asr)| asr < min);
                low.then_some(Excluded::LowAsr)
            });
        if let Some(why) = why {
            excluded.push((i, price.prefix_len, why));
            continue;
        }
        routes.push(Route {
            provider: i,
            prefix_len: price.prefix_len,
            rule: price.rule,
            rate: price.rate,
            cost,
            margin,
            quality: q,
        });
    }
    let by_cost = |a: &Route, b: &Route| {
        a.cost
            .cmp(&b.cost)
            .then_with(|| a.rate.cmp(&b.rate))
            .then_with(|| a.provider.cmp(&b.provider))
    };
    match call.order {
        Order::Cost => routes.sort_by(by_cost),
        Order::Quality => routes.sort_by(|a, b| {
            // Known ASR first, highest first.
            let asr = |r: &Route| r.quality.asr.map(std::cmp::Reverse);
            match (asr(a), asr(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
            .then_with(|| by_cost(a, b))
        }),
        Order::Margin => routes.sort_by(|a, b| {
            b.margin
                .unwrap_or_default()
                .cmp(&a.margin.unwrap_or_default())
                .then_with(|| by_cost(a, b))
        }),
    }
    routes.truncate(call.limit);
    (routes, excluded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{self, CardBilling};
    use crate::rule::RuleStatus;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn arb_card() -> impl Strategy<Value = Vec<(String, Rule)>> {
        prop::collection::btree_map(
            "4[0-9]{0,3}",
            (1i64..50_000, 0i64..100, prop::bool::weighted(0.1), 1u32..4),
            1..20,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(p, (rate, fee, blocked, inc))| {
                    let mut r = Rule::new(Arc::from("d"), Decimal::new(rate, 5));
                    r.connect_fee = Decimal::new(fee, 4);
                    r.mcd = inc * 6;
                    r.pulse = inc * 6;
                    if blocked {
                        r.status = RuleStatus::Blocked;
                    }
                    (p, r)
                })
                .collect()
        })
    }

    proptest! {
        /// The routes and their order, computed the long way: each card's longest rule by
        /// trying every prefix length, its cost by the billing formula, sorted by cost.
        #[test]
        fn routes_match_a_naive_computation(
            cards in prop::collection::vec(arb_card(), 1..6),
            number in "4[0-9]{3,6}",
            seconds in 0u32..400,
            sell in prop::option::of(1i64..2000),
            limit in 1usize..8,
        ) {
            let indexes: Vec<PrefixIndex> = cards.iter().map(|c| c.iter().cloned().collect()).collect();
            let providers: Vec<Provider> = indexes
                .iter()
                .map(|index| Provider { index, pricing: CardPricing::default() })
                .collect();
            let call = Call {
                number: &number,
                duration: Decimal::from(seconds),
                jurisdiction: Jurisdiction::Unknown,
                sell: sell.map(|s| Decimal::new(s, 4)),
                assure: true,
                min_asr: None,
                order: Order::Cost,
                limit,
            };
            let (got, _) = routes(&providers, &call, |_, _| Quality::default());
            let mut want: Vec<(Decimal, Decimal, usize)> = Vec::new();
            for (i, card) in cards.iter().enumerate() {
                let Some((_, rule)) = (1..=number.len())
                    .rev()
                    .find_map(|l| card.iter().find(|(p, _)| *p == number[..l]))
                else {
                    continue;
                };
                if rule.status == RuleStatus::Blocked {
                    continue;
                }
                let cost = billing::charge(Decimal::from(seconds), &rule.billing(rule.rate), &CardBilling::default()).cost;
                if call.sell.is_some_and(|s| cost > s) {
                    continue;
                }
                want.push((cost, rule.rate, i));
            }
            want.sort();
            want.truncate(limit);
            let got: Vec<(Decimal, Decimal, usize)> = got.iter().map(|r| (r.cost, r.rate, r.provider)).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn quality_and_margin_orders_and_exclusions() {
        let card = |rate: i64| -> PrefixIndex {
            [(
                "44".to_owned(),
                Rule::new(Arc::from("UK"), Decimal::new(rate, 3)),
            )]
            .into_iter()
            .collect()
        };
        let (a, b, c) = (card(10), card(20), card(30));
        let capped = CardPricing {
            cap: Some(Decimal::new(25, 3)),
            ..CardPricing::default()
        };
        let providers = [
            Provider {
                index: &a,
                pricing: CardPricing::default(),
            },
            Provider {
                index: &b,
                pricing: CardPricing::default(),
            },
            Provider {
                index: &c,
                pricing: capped,
            },
        ];
        let mut call = Call {
            number: "441234",
            duration: Decimal::from(60),
            jurisdiction: Jurisdiction::Unknown,
            sell: Some(Decimal::new(15, 3)),
            assure: true,
            min_asr: None,
            order: Order::Cost,
            limit: 10,
        };
        let asr = |i: usize, _: usize| Quality {
            asr: [Some(Decimal::from(30)), Some(Decimal::from(60)), None][i],
            acd: None,
        };
        let (r, x) = routes(&providers, &call, asr);
        assert_eq!(r.iter().map(|r| r.provider).collect::<Vec<_>>(), [0]);
        assert_eq!(x, [(1, 2, Excluded::AboveSell), (2, 2, Excluded::Capped)]);
        call.assure = false;
        call.order = Order::Quality;
        let (r, _) = routes(&providers, &call, asr);
        assert_eq!(r.iter().map(|r| r.provider).collect::<Vec<_>>(), [1, 0]);
        call.order = Order::Margin;
        let (r, _) = routes(&providers, &call, asr);
        assert_eq!(r[0].margin, Some(Decimal::new(5, 3)));
        call.min_asr = Some(Decimal::from(50));
        let (r, x) = routes(&providers, &call, asr);
        assert_eq!(r.iter().map(|r| r.provider).collect::<Vec<_>>(), [1]);
        assert!(x.contains(&(0, 2, Excluded::LowAsr)));
    }
}
