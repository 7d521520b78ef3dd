//! The in-memory prefix index of one revision: longest-prefix match in a few hundred
//! nanoseconds, ordered iteration for listing and export, and in-place upsert/removal so a
//! single rule edit never rebuilds a large card.
//!
//! A decimal trie: node `i` has ten child slots and an optional rule slot. A child slot holds
//! nothing (0: the root is never a child), a node, or — for a prefix nothing longer extends,
//! most of a carrier's card — its rule's slot ([`LEAF`]), so leaves cost no node. Nodes and
//! rules live in flat vectors, so the whole index is a handful of allocations and a lookup
//! touches at most one node per digit. Beside each rule slot a node also holds the rule's
//! rate, packed ([`rates`]): a lookup that needs only the price ends at the node it already
//! read, and the rules themselves — a 1M-rule card's largest part, far past the cache — are
//! read only by who needs a rule. That doubles a node (88 bytes): a 1M-rule card's index is
//! 124 MiB carrier-shaped (112 without), 245 MiB of uniformly random prefixes (173).

mod rates;

use crate::rule::Rule;
use rust_decimal::Decimal;

const NO_RULE: u32 = u32::MAX;
/// Marks a child slot holding a rule slot rather than a node: a prefix with no longer prefix
/// below it.
const LEAF: u32 = 1 << 31;
/// Leading digits resolved by one read of the direct table.
const DIRECT_DIGITS: usize = 5;
const DIRECT_SIZE: usize = 100_000;
/// Indexes of at least this many rules get a direct table when compacted (it costs 1.6 MB).
const DIRECT_MIN_RULES: usize = 20_000;

/// Where the walk stands after [`DIRECT_DIGITS`] digits: the node reached (0: the path ended
/// earlier) and the longest match so far.
#[derive(Debug, Clone, Copy)]
struct Direct {
    node: u32,
    rule: u32,
    /// The packed rate of `rule`.
    rate: u32,
    len: u32,
}

/// A child slot: nothing (0: the root is never a child), a node, or a leaf ([`LEAF`]) — and
/// for a leaf its rule's packed rate, beside it so both come in one cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
struct Slot {
    child: u32,
    rate: u32,
}

impl Slot {
    const EMPTY: Slot = Slot {
        child: 0,
        rate: rates::WIDE,
    };
}

#[derive(Debug, Clone)]
struct Node {
    children: [Slot; 10],
    rule: u32,
    /// The packed rate of `rule`.
    rate: u32,
}

impl Node {
    const EMPTY: Node = Node {
        children: [Slot::EMPTY; 10],
        rule: NO_RULE,
        rate: rates::WIDE,
    };

    /// What child slot `digit` holds.
    fn child(&self, digit: usize) -> Child {
        match self.children[digit].child {
            0 => Child::None,
            leaf if leaf & LEAF != 0 => Child::Leaf(leaf & !LEAF),
            node => Child::Node(node),
        }
    }
}

/// What a child slot holds (decoded; [`LEAF`] is its encoding).
#[derive(Debug, Clone, Copy)]
enum Child {
    None,
    /// A node, by index.
    Node(u32),
    /// A prefix nothing longer extends: its rule slot.
    Leaf(u32),
}

/// Prefix → rule, longest-prefix match. Prefixes are ASCII digit strings.
#[derive(Debug, Clone)]
pub struct PrefixIndex {
    nodes: Vec<Node>,
    rules: Vec<Option<Rule>>,
    free_rules: Vec<u32>,
    len: usize,
    /// Shortcut for the first [`DIRECT_DIGITS`] digits of large indexes, indexed by their value.
    direct: Option<Vec<Direct>>,
}

impl Default for PrefixIndex {
    fn default() -> Self {
        Self::new()
    }
}

/// A match: the prefix length and the rule's rate, read from the index; the rule itself on
/// demand.
#[derive(Clone, Copy)]
pub struct Match<'a> {
    pub prefix_len: usize,
    /// The rule's `rate` (per minute).
    pub rate: Decimal,
    index: &'a PrefixIndex,
    slot: u32,
}

impl std::fmt::Debug for Match<'_> {
    /// Not the index it points into.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Match")
            .field("prefix_len", &self.prefix_len)
            .field("rate", &self.rate)
            .field("slot", &self.slot)
            .finish()
    }
}

impl<'a> Match<'a> {
    /// The matching rule (one more read from memory than the match).
    pub fn rule(&self) -> &'a Rule {
        self.index.rule_at(self.slot)
    }
}

impl PrefixIndex {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An index sized for about `rules` rules.
    pub fn with_capacity(rules: usize) -> Self {
        let mut nodes = Vec::with_capacity(rules.saturating_mul(2).max(1));
        nodes.push(Node::EMPTY);
        Self {
            nodes,
            rules: Vec::with_capacity(rules),
            free_rules: Vec::new(),
            len: 0,
            direct: None,
        }
    }

    /// Bytes the index holds on the heap (its nodes, rule slots and direct table; not what the
    /// rules point to, such as shared names).
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.rules.capacity() * std::mem::size_of::<Option<Rule>>()
            + self.free_rules.capacity() * std::mem::size_of::<u32>()
            + self
                .direct
                .as_ref()
                .map_or(0, |d| d.capacity() * std::mem::size_of::<Direct>())
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
        let bytes = number.as_bytes();
        let mut start = 0usize;
        let mut node_id = 0u32;
        let mut best = None;
        if let (Some(direct), Some(head)) = (&self.direct, bytes.get(..DIRECT_DIGITS)) {
            if head.iter().all(u8::is_ascii_digit) {
                let key = head
                    .iter()
                    .fold(0usize, |k, b| k * 10 + usize::from(b - b'0'));
                let entry = direct[key];
                if entry.rule != NO_RULE {
                    best = Some((entry.len as usize, entry.rule, entry.rate));
                }
                if entry.node == 0 {
                    return best
                        .map(|(prefix_len, slot, rate)| self.match_at(prefix_len, slot, rate));
                }
                node_id = entry.node;
                start = DIRECT_DIGITS;
            }
        }
        let mut node = &self.nodes[node_id as usize];
        for (depth, b) in bytes.iter().enumerate().skip(start) {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            match node.child(usize::from(digit)) {
                Child::None => break,
                Child::Leaf(slot) => {
                    best = Some((depth + 1, slot, node.children[usize::from(digit)].rate));
                    break;
                }
                Child::Node(id) => {
                    node = &self.nodes[id as usize];
                    if node.rule != NO_RULE {
                        best = Some((depth + 1, node.rule, node.rate));
                    }
                }
            }
        }
        best.map(|(prefix_len, slot, rate)| self.match_at(prefix_len, slot, rate))
    }

    /// The match of the rule in `slot`, whose packed rate is `rate`.
    fn match_at(&self, prefix_len: usize, slot: u32, rate: u32) -> Match<'_> {
        Match {
            prefix_len,
            rate: rates::unpack(rate).unwrap_or_else(|| self.rule_at(slot).rate),
            index: self,
            slot,
        }
    }

    /// The rule stored exactly under `prefix`.
    pub fn get(&self, prefix: &str) -> Option<&Rule> {
        match self.find(prefix)? {
            At::Node(node) => {
                let slot = self.nodes[node].rule;
                (slot != NO_RULE).then(|| self.rule_at(slot))
            }
            At::Leaf { slot, .. } => Some(self.rule_at(slot)),
        }
    }

    /// Inserts or replaces the rule for `prefix` (ASCII digits, non-empty); returns the old one.
    pub fn insert(&mut self, prefix: &str, rule: Rule) -> Option<Rule> {
        debug_assert!(
            crate::number::is_prefix(prefix),
            "prefix {prefix:?} must be validated"
        );
        let (&last, path) = prefix.as_bytes().split_last()?;
        let rate = rates::pack(rule.rate);
        let mut node = 0usize;
        for b in path {
            let digit = usize::from(b - b'0');
            node = match self.nodes[node].child(digit) {
                Child::Node(id) => id as usize,
                // A new node; a leaf that a longer prefix now extends becomes one, keeping
                // its rule.
                held => {
                    let id = u32::try_from(self.nodes.len())
                        .ok()
                        .filter(|id| id & LEAF == 0)
                        .expect("fewer than 2^31 trie nodes");
                    let mut new = Node::EMPTY;
                    if let Child::Leaf(slot) = held {
                        new.rule = slot;
                        new.rate = self.nodes[node].children[digit].rate;
                    }
                    self.nodes.push(new);
                    self.nodes[node].children[digit].child = id;
                    id as usize
                }
            };
        }
        let digit = usize::from(last - b'0');
        let child = self.nodes[node].child(digit);
        let held = match child {
            Child::None => NO_RULE,
            Child::Leaf(slot) => slot,
            Child::Node(id) => self.nodes[id as usize].rule,
        };
        let (slot, old) = if held == NO_RULE {
            (self.new_slot(rule), None)
        } else {
            (held, self.rules[held as usize].replace(rule))
        };
        match child {
            Child::Node(id) => {
                let at = &mut self.nodes[id as usize];
                at.rule = slot;
                at.rate = rate;
            }
            _ => {
                self.nodes[node].children[digit] = Slot {
                    child: LEAF | slot,
                    rate,
                };
            }
        }
        self.refresh_direct(prefix);
        old
    }

    fn new_slot(&mut self, rule: Rule) -> u32 {
        let slot = match self.free_rules.pop() {
            Some(free) => {
                self.rules[free as usize] = Some(rule);
                free
            }
            None => {
                self.rules.push(Some(rule));
                u32::try_from(self.rules.len() - 1)
                    .ok()
                    .filter(|slot| slot & LEAF == 0)
                    .expect("fewer than 2^31 rules")
            }
        };
        self.len += 1;
        slot
    }

    /// Removes the rule for `prefix`; returns it. Trie nodes stay (they are cheap and a removed
    /// prefix is often set again).
    pub fn remove(&mut self, prefix: &str) -> Option<Rule> {
        let slot = match self.find(prefix)? {
            At::Node(node) => std::mem::replace(&mut self.nodes[node].rule, NO_RULE),
            At::Leaf {
                parent,
                digit,
                slot,
            } => {
                self.nodes[parent].children[digit].child = 0;
                slot
            }
        };
        if slot == NO_RULE {
            return None;
        }
        self.free_rules.push(slot);
        self.len -= 1;
        self.refresh_direct(prefix);
        self.rules[slot as usize].take()
    }

    /// Recomputes the direct-table entries a change at `prefix` can affect.
    fn refresh_direct(&mut self, prefix: &str) {
        if self.direct.is_none() {
            return;
        }
        let value = prefix
            .bytes()
            .take(DIRECT_DIGITS)
            .fold(0usize, |k, b| k * 10 + usize::from(b - b'0'));
        let span = 10usize.pow((DIRECT_DIGITS.saturating_sub(prefix.len())) as u32);
        for key in value * span..(value + 1) * span {
            let entry = self.direct_entry(key);
            if let Some(direct) = &mut self.direct {
                direct[key] = entry;
            }
        }
    }

    /// Walks the first [`DIRECT_DIGITS`] digits of `key` (zero-padded) from the root.
    fn direct_entry(&self, key: usize) -> Direct {
        let mut entry = Direct {
            node: 0,
            rule: NO_RULE,
            rate: rates::WIDE,
            len: 0,
        };
        let mut node = 0usize;
        for depth in 0..DIRECT_DIGITS {
            let digit = key / 10usize.pow((DIRECT_DIGITS - 1 - depth) as u32) % 10;
            match self.nodes[node].child(digit) {
                Child::None => return entry,
                Child::Leaf(slot) => {
                    entry.rule = slot;
                    entry.rate = self.nodes[node].children[digit].rate;
                    entry.len = depth as u32 + 1;
                    return entry;
                }
                Child::Node(id) => node = id as usize,
            }
            let at = &self.nodes[node];
            if at.rule != NO_RULE {
                entry.rule = at.rule;
                entry.rate = at.rate;
                entry.len = depth as u32 + 1;
            }
        }
        entry.node = node as u32;
        entry
    }

    /// Renumbers the trie's nodes in depth-first order, so that a lookup walking down a sparse
    /// branch reads consecutive memory. Built indexes are compacted once; later edits append.
    pub fn compact(&mut self) {
        let mut order: Vec<u32> = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![0u32];
        while let Some(node) = stack.pop() {
            order.push(node);
            let at = &self.nodes[node as usize];
            stack.extend((0..10).rev().filter_map(|digit| match at.child(digit) {
                Child::Node(id) => Some(id),
                _ => None,
            }));
        }
        let mut new_id = vec![0u32; self.nodes.len()];
        for (new, &old) in order.iter().enumerate() {
            new_id[old as usize] = new as u32;
        }
        let nodes = order
            .iter()
            .map(|&old| {
                let mut node = self.nodes[old as usize].clone();
                for digit in 0..10 {
                    if let Child::Node(id) = node.child(digit) {
                        node.children[digit].child = new_id[id as usize];
                    }
                }
                node
            })
            .collect();
        self.nodes = nodes;
        self.direct = None;
        if self.len >= DIRECT_MIN_RULES {
            self.build_direct();
        }
    }

    /// Builds the direct table (kept up to date by later edits).
    fn build_direct(&mut self) {
        self.direct = Some((0..DIRECT_SIZE).map(|key| self.direct_entry(key)).collect());
    }

    /// Rules whose prefix starts with `filter` (all when empty), in ascending prefix order.
    pub fn iter_prefixed<'a>(&'a self, filter: &str) -> Iter<'a> {
        let (stack, leaf) = match self.find(filter) {
            Some(At::Node(n)) => (vec![(n as u32, 0u8)], None),
            Some(At::Leaf { slot, .. }) => (Vec::new(), Some(slot)),
            None => (Vec::new(), None),
        };
        Iter {
            index: self,
            stack,
            leaf,
            prefix: filter.to_owned(),
            base_len: filter.len(),
            started: false,
        }
    }

    /// All rules in ascending prefix order.
    pub fn iter(&self) -> Iter<'_> {
        self.iter_prefixed("")
    }

    /// Where `prefix` ends in the trie, if it does.
    fn find(&self, prefix: &str) -> Option<At> {
        let mut node = 0usize;
        let mut bytes = prefix.bytes();
        while let Some(b) = bytes.next() {
            let digit = usize::from(b.wrapping_sub(b'0'));
            if digit > 9 {
                return None;
            }
            match self.nodes[node].child(digit) {
                Child::None => return None,
                Child::Leaf(slot) => {
                    return bytes.next().is_none().then_some(At::Leaf {
                        parent: node,
                        digit,
                        slot,
                    });
                }
                Child::Node(id) => node = id as usize,
            }
        }
        Some(At::Node(node))
    }

    fn rule_at(&self, slot: u32) -> &Rule {
        self.rules[slot as usize]
            .as_ref()
            .expect("a node's rule slot is always filled")
    }
}

/// Where a prefix ends: at a node (which may hold a rule), or at a leaf child slot.
enum At {
    Node(usize),
    Leaf {
        parent: usize,
        digit: usize,
        slot: u32,
    },
}

impl FromIterator<(String, Rule)> for PrefixIndex {
    fn from_iter<T: IntoIterator<Item = (String, Rule)>>(iter: T) -> Self {
        let iter = iter.into_iter();
        let mut index = PrefixIndex::with_capacity(iter.size_hint().0);
        for (prefix, rule) in iter {
            index.insert(&prefix, rule);
        }
        index.compact();
        index
    }
}

/// Depth-first, pre-order walk: a prefix comes before its extensions, digits ascending, which
/// is ascending string order.
pub struct Iter<'a> {
    index: &'a PrefixIndex,
    /// (node, next child digit to visit); the current prefix is `prefix`.
    stack: Vec<(u32, u8)>,
    /// The filter itself ends at a leaf: its one rule.
    leaf: Option<u32>,
    prefix: String,
    base_len: usize,
    started: bool,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (String, &'a Rule);

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            if let Some(slot) = self.leaf {
                return Some((self.prefix.clone(), self.index.rule_at(slot)));
            }
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
                if !self.stack.is_empty() {
                    self.prefix.pop();
                }
                continue;
            }
            let digit = *next_digit;
            *next_digit += 1;
            let child = match self.index.nodes[*node as usize].child(usize::from(digit)) {
                Child::None => continue,
                Child::Leaf(slot) => {
                    let mut prefix = self.prefix.clone();
                    prefix.push(char::from(b'0' + digit));
                    return Some((prefix, self.index.rule_at(slot)));
                }
                Child::Node(id) => id,
            };
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
        assert_eq!((m.prefix_len, &*m.rule().name), (3, "UK Landline"));
        assert_eq!(m.rate, m.rule().rate);
        assert_eq!(&*index.longest_match("449").unwrap().rule().name, "UK");
        assert!(index.longest_match("33").is_none());
        assert!(index.longest_match("4").is_none());
    }

    #[test]
    fn remove_then_reinsert() {
        let mut index = PrefixIndex::new();
        index.insert("1", sample("a", "1"));
        index.insert("12", sample("b", "2"));
        assert_eq!(
            index.remove("12").map(|r| r.name.to_string()),
            Some("b".into())
        );
        assert_eq!(index.remove("12"), None);
        assert_eq!(index.len(), 1);
        assert_eq!(&*index.longest_match("123").unwrap().rule().name, "a");
        index.insert("12", sample("c", "3"));
        assert_eq!(&*index.longest_match("123").unwrap().rule().name, "c");
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
            ops in proptest::collection::vec(("[0-2]{1,7}", any::<bool>()), 0..200),
            numbers in proptest::collection::vec("[0-2]{0,9}", 1..50),
            compact_at in 0usize..200,
            direct in any::<bool>(),
        ) {
            let mut index = PrefixIndex::new();
            let mut model = BTreeMap::new();
            for (i, (prefix, insert)) in ops.iter().enumerate() {
                if i == compact_at {
                    index.compact();
                    if direct {
                        index.build_direct();
                    }
                }
                if *insert {
                    // Every third rate too precise to pack, so it is read from its rule.
                    let rate = if i % 3 == 0 { format!("{i}.0000000000000001") } else { i.to_string() };
                    let rule = sample(&i.to_string(), &rate);
                    prop_assert_eq!(index.insert(prefix, rule.clone()), model.insert(prefix.clone(), rule));
                } else {
                    prop_assert_eq!(index.remove(prefix), model.remove(prefix));
                }
            }
            prop_assert_eq!(index.len(), model.len());
            for number in &numbers {
                let got = index.longest_match(number).map(|m| (m.prefix_len, m.rule()));
                prop_assert_eq!(got, naive(&model, number));
                let rate = index.longest_match(number).map(|m| m.rate);
                prop_assert_eq!(rate, naive(&model, number).map(|(_, r)| r.rate));
                prop_assert_eq!(index.get(number), model.get(number));
                let under: Vec<&String> = model.keys().filter(|p| p.starts_with(number.as_str())).collect();
                let listed: Vec<String> = index.iter_prefixed(number).map(|(p, _)| p).collect();
                prop_assert_eq!(listed.iter().collect::<Vec<_>>(), under);
            }
            let listed: Vec<(String, Rule)> = index.iter().map(|(p, r)| (p, r.clone())).collect();
            let expected: Vec<(String, Rule)> = model.clone().into_iter().collect();
            prop_assert_eq!(listed, expected);
        }
    }
}
