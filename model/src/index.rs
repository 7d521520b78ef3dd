//! The in-memory prefix index of one revision: longest-prefix match in a few hundred
//! nanoseconds, ordered iteration for listing and export, and in-place upsert/removal so a
//! single rule edit never rebuilds a large card.
//!
//! A decimal trie: node `i` has ten child slots (0 = none, the root is never a child) and an
//! optional rule slot. Nodes and rules live in flat vectors, so the whole index is a handful of
//! allocations and a lookup touches at most one node per digit.

use crate::rule::Rule;

const NO_RULE: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    children: [u32; 10],
    rule: u32,
}

impl Node {
    const EMPTY: Node = Node { children: [0; 10], rule: NO_RULE };
}

/// Prefix → rule, longest-prefix match. Prefixes are ASCII digit strings.
#[derive(Debug, Clone)]
pub struct PrefixIndex {
    nodes: Vec<Node>,
    rules: Vec<Option<Rule>>,
    free_rules: Vec<u32>,
    len: usize,
}

impl Default for PrefixIndex {
    fn default() -> Self {
        Self::new()
    }
}

/// A match: the prefix length and the rule.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    pub prefix_len: usize,
    pub rule: &'a Rule,
}

impl PrefixIndex {
    pub fn new() -> Self {
        Self { nodes: vec![Node::EMPTY], rules: Vec::new(), free_rules: Vec::new(), len: 0 }
    }

    /// An index sized for about `rules` rules.
    pub fn with_capacity(rules: usize) -> Self {
        let mut nodes = Vec::with_capacity(rules.saturating_mul(2).max(1));
        nodes.push(Node::EMPTY);
        Self { nodes, rules: Vec::with_capacity(rules), free_rules: Vec::new(), len: 0 }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rule with the longest prefix of `number` (ASCII digits; anything else ends the walk).
    pub fn longest_match(&self, number: &str) -> Option<Match<'_>> {
        let mut node = &self.nodes[0];
        let mut best = None;
        for (depth, b) in number.bytes().enumerate() {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            let child = node.children[usize::from(digit)];
            if child == 0 {
                break;
            }
            node = &self.nodes[child as usize];
            if node.rule != NO_RULE {
                best = Some((depth + 1, node.rule));
            }
        }
        best.map(|(prefix_len, slot)| Match { prefix_len, rule: self.rule_at(slot) })
    }

    /// The rule stored exactly under `prefix`.
    pub fn get(&self, prefix: &str) -> Option<&Rule> {
        let node = self.find_node(prefix)?;
        let slot = self.nodes[node].rule;
        (slot != NO_RULE).then(|| self.rule_at(slot))
    }

    /// Inserts or replaces the rule for `prefix` (ASCII digits, non-empty); returns the old one.
    pub fn insert(&mut self, prefix: &str, rule: Rule) -> Option<Rule> {
        debug_assert!(crate::number::is_prefix(prefix), "prefix {prefix:?} must be validated");
        let mut node = 0usize;
        for b in prefix.bytes() {
            let digit = usize::from(b - b'0');
            let child = self.nodes[node].children[digit];
            node = if child == 0 {
                let id = u32::try_from(self.nodes.len()).expect("fewer than 2^32 trie nodes");
                self.nodes.push(Node::EMPTY);
                self.nodes[node].children[digit] = id;
                id as usize
            } else {
                child as usize
            };
        }
        let slot = self.nodes[node].rule;
        if slot != NO_RULE {
            return self.rules[slot as usize].replace(rule);
        }
        let slot = match self.free_rules.pop() {
            Some(free) => {
                self.rules[free as usize] = Some(rule);
                free
            }
            None => {
                self.rules.push(Some(rule));
                u32::try_from(self.rules.len() - 1).expect("fewer than 2^32 rules")
            }
        };
        self.nodes[node].rule = slot;
        self.len += 1;
        None
    }

    /// Removes the rule for `prefix`; returns it. Trie nodes stay (they are cheap and a removed
    /// prefix is often set again).
    pub fn remove(&mut self, prefix: &str) -> Option<Rule> {
        let node = self.find_node(prefix)?;
        let slot = std::mem::replace(&mut self.nodes[node].rule, NO_RULE);
        if slot == NO_RULE {
            return None;
        }
        self.free_rules.push(slot);
        self.len -= 1;
        self.rules[slot as usize].take()
    }

    /// Rules whose prefix starts with `filter` (all when empty), in ascending prefix order.
    pub fn iter_prefixed<'a>(&'a self, filter: &str) -> Iter<'a> {
        let start = self.find_node(filter);
        Iter {
            index: self,
            stack: start.map(|n| vec![(n as u32, 0u8)]).unwrap_or_default(),
            prefix: filter.to_owned(),
            base_len: filter.len(),
            started: false,
        }
    }

    /// All rules in ascending prefix order.
    pub fn iter(&self) -> Iter<'_> {
        self.iter_prefixed("")
    }

    fn find_node(&self, prefix: &str) -> Option<usize> {
        let mut node = 0usize;
        for b in prefix.bytes() {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            let child = self.nodes[node].children[usize::from(digit)];
            if child == 0 {
                return None;
            }
            node = child as usize;
        }
        Some(node)
    }

    fn rule_at(&self, slot: u32) -> &Rule {
        self.rules[slot as usize].as_ref().expect("a node's rule slot is always filled")
    }
}

impl FromIterator<(String, Rule)> for PrefixIndex {
    fn from_iter<T: IntoIterator<Item = (String, Rule)>>(iter: T) -> Self {
        let iter = iter.into_iter();
        let mut index = PrefixIndex::with_capacity(iter.size_hint().0);
        for (prefix, rule) in iter {
            index.insert(&prefix, rule);
        }
        index
    }
}

/// Depth-first, pre-order walk: a prefix comes before its extensions, digits ascending, which
/// is ascending string order.
pub struct Iter<'a> {
    index: &'a PrefixIndex,
    /// (node, next child digit to visit); the current prefix is `prefix`.
    stack: Vec<(u32, u8)>,
    prefix: String,
    base_len: usize,
    started: bool,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (String, &'a Rule);

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            if let Some(&(node, _)) = self.stack.first() {
                let slot = self.index.nodes[node as usize].rule;
                if slot != NO_RULE && self.base_len > 0 {
                    return Some((self.prefix.clone(), self.index.rule_at(slot)));
                }
            }
        }
        loop {
            let (node, next_digit) = self.stack.last_mut()?;
            if *next_digit >= 10 {
                self.stack.pop();
                if self.stack.len() >= 1 {
                    self.prefix.pop();
                }
                continue;
            }
            let digit = *next_digit;
            *next_digit += 1;
            let child = self.index.nodes[*node as usize].children[usize::from(digit)];
            if child == 0 {
                continue;
            }
            self.stack.push((child, 0));
            self.prefix.push(char::from(b'0' + digit));
            let slot = self.index.nodes[child as usize].rule;
            if slot != NO_RULE {
                return Some((self.prefix.clone(), self.index.rule_at(slot)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::sample;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn longest_prefix_wins() {
        let mut index = PrefixIndex::new();
        index.insert("44", sample("UK", "0.02"));
        index.insert("441", sample("UK Landline", "0.012"));
        index.insert("447", sample("UK Mobile", "0.028"));
        let m = index.longest_match("441234567890").unwrap();
        assert_eq!((m.prefix_len, &*m.rule.name), (3, "UK Landline"));
        assert_eq!(&*index.longest_match("449").unwrap().rule.name, "UK");
        assert!(index.longest_match("33").is_none());
        assert!(index.longest_match("4").is_none());
    }

    #[test]
    fn remove_then_reinsert() {
        let mut index = PrefixIndex::new();
        index.insert("1", sample("a", "1"));
        index.insert("12", sample("b", "2"));
        assert_eq!(index.remove("12").map(|r| r.name.to_string()), Some("b".into()));
        assert_eq!(index.remove("12"), None);
        assert_eq!(index.len(), 1);
        assert_eq!(&*index.longest_match("123").unwrap().rule.name, "a");
        index.insert("12", sample("c", "3"));
        assert_eq!(&*index.longest_match("123").unwrap().rule.name, "c");
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn iteration_is_ordered_and_filtered() {
        let index: PrefixIndex = ["9", "1", "12", "121", "2", "13"]
            .iter()
            .map(|p| (p.to_string(), sample(p, "1")))
            .collect();
        let all: Vec<String> = index.iter().map(|(p, _)| p).collect();
        assert_eq!(all, ["1", "12", "121", "13", "2", "9"]);
        let under: Vec<String> = index.iter_prefixed("12").map(|(p, _)| p).collect();
        assert_eq!(under, ["12", "121"]);
        assert_eq!(index.iter_prefixed("5").count(), 0);
        assert_eq!(index.iter_prefixed("x").count(), 0);
    }

    fn naive<'a>(rules: &'a BTreeMap<String, Rule>, number: &str) -> Option<(usize, &'a Rule)> {
        rules
            .iter()
            .filter(|(p, _)| number.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(p, r)| (p.len(), r))
    }

    proptest! {
        #[test]
        fn matches_a_naive_scan(
            ops in proptest::collection::vec(("[0-2]{1,5}", any::<bool>()), 0..200),
            numbers in proptest::collection::vec("[0-2]{0,7}", 1..50),
        ) {
            let mut index = PrefixIndex::new();
            let mut model = BTreeMap::new();
            for (i, (prefix, insert)) in ops.iter().enumerate() {
                if *insert {
                    let rule = sample(&i.to_string(), "1");
                    prop_assert_eq!(index.insert(prefix, rule.clone()), model.insert(prefix.clone(), rule));
                } else {
                    prop_assert_eq!(index.remove(prefix), model.remove(prefix));
                }
            }
            prop_assert_eq!(index.len(), model.len());
            for number in &numbers {
                let got = index.longest_match(number).map(|m| (m.prefix_len, m.rule));
                prop_assert_eq!(got, naive(&model, number));
            }
            let listed: Vec<(String, Rule)> = index.iter().map(|(p, r)| (p, r.clone())).collect();
            let expected: Vec<(String, Rule)> = model.clone().into_iter().collect();
            prop_assert_eq!(listed, expected);
        }
    }
}
