//! What changed between two revisions of a card.

use crate::index::PrefixIndex;
use crate::rule::Rule;

/// Rules of `to` compared with `from`, by prefix. A rule whose rate rose is `increased`, one
/// whose rate fell `decreased`; one with the same rate but other terms changed (name, fees,
/// increments, status) is `changed`, since whether that costs callers more depends on the call.
#[derive(Debug, Default)]
pub struct Diff<'a> {
    pub added: Vec<(String, &'a Rule)>,
    pub removed: Vec<(String, &'a Rule)>,
    /// (prefix, old, new)
    pub increased: Vec<(String, &'a Rule, &'a Rule)>,
    pub decreased: Vec<(String, &'a Rule, &'a Rule)>,
    pub changed: Vec<(String, &'a Rule, &'a Rule)>,
    pub unchanged: usize,
}

/// Compares two indexes in one ordered merge pass.
pub fn diff<'a>(from: &'a PrefixIndex, to: &'a PrefixIndex) -> Diff<'a> {
    let mut out = Diff::default();
    let mut old = from.iter().peekable();
    let mut new = to.iter().peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => out.removed.push(old.next().expect("peeked")),
            (None, Some(_)) => out.added.push(new.next().expect("peeked")),
            (Some((po, _)), Some((pn, _))) => match po.cmp(pn) {
                std::cmp::Ordering::Less => out.removed.push(old.next().expect("peeked")),
                std::cmp::Ordering::Greater => out.added.push(new.next().expect("peeked")),
                std::cmp::Ordering::Equal => {
                    let (prefix, a) = old.next().expect("peeked");
                    let (_, b) = new.next().expect("peeked");
                    if b.rate > a.rate {
                        out.increased.push((prefix, a, b));
                    } else if b.rate < a.rate {
                        out.decreased.push((prefix, a, b));
                    } else if !a.same_price(b) || a.name != b.name {
                        out.changed.push((prefix, a, b));
                    } else {
                        out.unchanged += 1;
                    }
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::sample;

    #[test]
    fn classifies_every_prefix() {
        let from: PrefixIndex = [("1", "0.01"), ("2", "0.02"), ("3", "0.03"), ("4", "0.04")]
            .iter()
            .map(|(p, r)| (p.to_string(), sample("x", r)))
            .collect();
        let to: PrefixIndex = [("2", "0.03"), ("3", "0.01"), ("4", "0.04"), ("5", "0.05")]
            .iter()
            .map(|(p, r)| (p.to_string(), sample("x", r)))
            .collect();
        let d = diff(&from, &to);
        assert_eq!(
            d.removed.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["1"]
        );
        assert_eq!(
            d.added.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["5"]
        );
        assert_eq!(d.increased[0].0, "2");
        assert_eq!(d.decreased[0].0, "3");
        assert_eq!(d.unchanged, 1);
        assert!(d.changed.is_empty());
    }
}
