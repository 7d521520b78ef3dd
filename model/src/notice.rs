//! Notice for rate increases (API.md §3): a card with `notice_days` takes a new deck's new rows,
//! decreases and removals at once, and its increases only after the notice.

use crate::index::PrefixIndex;
use crate::rule::Rule;

/// Whether `new` charges more than `old` anywhere: its rate, connect fee or a US rate (a US
/// rate it gains or loses is compared with the plain rate it falls back to).
pub fn raises(old: &Rule, new: &Rule) -> bool {
    let us = |r: &Rule, rate: Option<rust_decimal::Decimal>| rate.unwrap_or(r.rate);
    new.rate > old.rate
        || new.connect_fee > old.connect_fee
        || us(new, new.rate_inter) > us(old, old.rate_inter)
        || us(new, new.rate_intra) > us(old, old.rate_intra)
}

/// What may go live at once when `new` (in prefix order) replaces `old` on a card that needs
/// notice: `new` with every rule that raises its price kept at the old rule, and how many were
/// kept back; `None` when nothing rises (all of `new` goes live at once).
pub fn without_increases(
    old: &PrefixIndex,
    new: &[(String, Rule)],
) -> Option<(Vec<(String, Rule)>, usize)> {
    let mut held = 0;
    let early: Vec<(String, Rule)> = new
        .iter()
        .map(|(prefix, rule)| match old.get(prefix) {
            Some(before) if raises(before, rule) => {
                held += 1;
                (prefix.clone(), before.clone())
            }
            _ => (prefix.clone(), rule.clone()),
        })
        .collect();
    (held > 0).then_some((early, held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::sync::Arc;

    fn rule(rate: i64) -> Rule {
        Rule::new(Arc::from("d"), Decimal::new(rate, 3))
    }

    #[test]
    fn increases_wait_and_everything_else_goes_at_once() {
        let old: PrefixIndex = [("44", rule(10)), ("33", rule(20)), ("49", rule(5))]
            .into_iter()
            .map(|(p, r)| (p.to_owned(), r))
            .collect();
        let new = vec![
            ("1".to_owned(), rule(1)),
            ("33".to_owned(), rule(15)),
            ("44".to_owned(), rule(12)),
        ];
        let (early, held) = without_increases(&old, &new).unwrap();
        assert_eq!(held, 1);
        assert_eq!(
            early,
            vec![
                ("1".to_owned(), rule(1)),
                ("33".to_owned(), rule(15)),
                ("44".to_owned(), rule(10)),
            ]
        );
        let mut fee = rule(10);
        fee.connect_fee = Decimal::new(1, 2);
        assert!(raises(&rule(10), &fee));
        let mut inter = rule(10);
        inter.rate_inter = Some(Decimal::new(11, 3));
        assert!(raises(&rule(10), &inter));
        assert!(without_increases(&old, &[("44".to_owned(), rule(9))]).is_none());
    }
}
