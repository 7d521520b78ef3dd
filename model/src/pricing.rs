//! Pricing one call on one revision — the longest matching rule, its rate for the call's
//! jurisdiction, and the billing formula. One function, so a query, the rating of a CDR and
//! whatever else prices a call (builds, routing) can never disagree.

use crate::billing::{self, CardBilling, Charge};
use crate::index::PrefixIndex;
use crate::rule::{Rule, RuleStatus};
use rust_decimal::Decimal;

/// Where a call runs, for rules with US inter/intrastate rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jurisdiction {
    /// Not known (not a US call, no caller, no LRN data): the rule's `rate`.
    Unknown,
    /// Caller and callee in one state: `rate_intra`, else `rate`.
    Intrastate,
    /// In different states: `rate_inter`, else `rate`.
    Interstate,
}

impl Rule {
    /// The per-minute rate of this rule for a call in `jurisdiction`.
    pub fn rate_in(&self, jurisdiction: Jurisdiction) -> Decimal {
        match jurisdiction {
            Jurisdiction::Unknown => self.rate,
            Jurisdiction::Intrastate => self.rate_intra.unwrap_or(self.rate),
            Jurisdiction::Interstate => self.rate_inter.unwrap_or(self.rate),
        }
    }
}

/// What a card adds to pricing its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CardPricing {
    pub billing: CardBilling,
    /// A per-minute ceiling: a call whose rate is above it is not priced (capped).
    pub cap: Option<Decimal>,
}

/// Why a matching rule prices no call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The rule's status is `Blocked`.
    Rule,
    /// The call's rate is above the card's `cap`.
    Capped,
}

/// A number priced on a revision.
#[derive(Debug, Clone, Copy)]
pub struct Price<'r> {
    /// How many leading digits of the number the rule's prefix covers.
    pub prefix_len: usize,
    pub rule: &'r Rule,
    /// The rule's rate for this call.
    pub rate: Decimal,
    /// Set when the call may not be priced; `charge` is then `None`.
    pub blocked: Option<Blocked>,
    /// The call's charge, when a duration was given and nothing blocks it.
    pub charge: Option<Charge>,
}

/// Prices `number` on `index`: `None` when no rule matches. `jurisdiction` is asked only when
/// the matching rule has an inter- or intrastate rate.
pub fn price<'r>(
    index: &'r PrefixIndex,
    number: &str,
    jurisdiction: impl FnOnce() -> Jurisdiction,
    duration: Option<Decimal>,
    card: &CardPricing,
) -> Option<Price<'r>> {
    let m = index.longest_match(number)?;
    Some(price_rule(
        m.prefix_len,
        m.rule(),
        jurisdiction,
        duration,
        card,
    ))
}

/// [`price`] of a rule already found under a prefix of `prefix_len` digits (routing looks up
/// every provider's rule before pricing any).
pub fn price_rule<'r>(
    prefix_len: usize,
    rule: &'r Rule,
    jurisdiction: impl FnOnce() -> Jurisdiction,
    duration: Option<Decimal>,
    card: &CardPricing,
) -> Price<'r> {
    let rate = match (rule.rate_inter, rule.rate_intra) {
        (None, None) => rule.rate,
        _ => rule.rate_in(jurisdiction()),
    };
    let blocked = if rule.status == RuleStatus::Blocked {
        Some(Blocked::Rule)
    } else if card.cap.is_some_and(|cap| rate > cap) {
        Some(Blocked::Capped)
    } else {
        None
    };
    let charge = duration
        .filter(|_| blocked.is_none())
        .map(|d| billing::charge(d, &rule.billing(rate), &card.billing));
    Price {
        prefix_len,
        rule,
        rate,
        blocked,
        charge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deck::parse_csv;

    fn index(csv: &str) -> PrefixIndex {
        parse_csv(csv.as_bytes())
            .unwrap()
            .rules
            .into_iter()
            .collect()
    }

    #[test]
    fn the_longest_match_is_priced_by_the_billing_formula() {
        let index = index(
            "prefix,name,rate,connect_fee,mcd,pulse,status\n44,UK,0.05,0,60,60,Active\n447,UK Mobile,0.2,0.01,30,6,Active\n4479,Blocked,1,0,1,1,Blocked\n",
        );
        let card = CardPricing::default();
        let unknown = || Jurisdiction::Unknown;
        let d = Some(Decimal::from(61));
        let p = price(&index, "447700900123", unknown, d, &card).unwrap();
        assert_eq!((p.prefix_len, p.rate), (3, Decimal::new(2, 1)));
        let want = billing::charge(Decimal::from(61), &p.rule.billing(p.rate), &card.billing);
        assert_eq!(p.charge, Some(want));
        // A blocked rule matches but prices no call; no rule, no price.
        let blocked = price(&index, "44790", unknown, d, &card).unwrap();
        assert_eq!((blocked.prefix_len, blocked.charge), (4, None));
        assert_eq!(blocked.blocked, Some(Blocked::Rule));
        assert!(price(&index, "33", unknown, d, &card).is_none());
        // Over the card's cap: matched, blocked as capped, no charge.
        let capped = CardPricing {
            cap: Some(Decimal::new(1, 1)),
            ..card
        };
        let p = price(&index, "447700900123", unknown, d, &capped).unwrap();
        assert_eq!((p.blocked, p.charge), (Some(Blocked::Capped), None));
        let p = price(&index, "441", unknown, d, &capped).unwrap();
        assert_eq!(p.blocked, None, "0.05 is under the cap");
        assert!(price(&index, "441", unknown, None, &card)
            .unwrap()
            .charge
            .is_none());
    }

    #[test]
    fn jurisdiction_is_asked_only_for_rules_with_us_rates() {
        let index = index(
            "prefix,name,rate,connect_fee,mcd,pulse,rate_inter,rate_intra\n1212,NY,0.01,0,6,6,0.02,0.005\n44,UK,0.05,0,60,60,,\n",
        );
        let card = CardPricing::default();
        let never = || -> Jurisdiction { panic!("asked for a rule without US rates") };
        assert_eq!(
            price(&index, "441", never, None, &card).unwrap().rate,
            Decimal::new(5, 2)
        );
        for (j, rate) in [
            (Jurisdiction::Unknown, Decimal::new(1, 2)),
            (Jurisdiction::Interstate, Decimal::new(2, 2)),
            (Jurisdiction::Intrastate, Decimal::new(5, 3)),
        ] {
            assert_eq!(
                price(&index, "12125550100", || j, None, &card)
                    .unwrap()
                    .rate,
                rate
            );
        }
    }
}
