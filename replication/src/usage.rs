//! Request counts per account and day across the cluster, so an account's `daily` limit counts
//! the requests it made on every node. Each node sends its own counts to its peers every
//! replication tick; a node admits a request against its own count plus the latest counts its
//! peers sent, so the total can be stale by one tick plus one round trip.

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;
use std::collections::HashMap;

/// Counts per account of one day.
pub type Counts = HashMap<String, u64>;

/// Where this node's own counts come from (the HTTP surface's limiter).
pub type LocalCounts = Box<dyn Fn(i64) -> Counts + Send + Sync>;

/// The cluster's request counts.
#[derive(Default)]
pub struct UsageBoard {
    /// Node → (day, counts) as that node last sent them.
    by_node: Mutex<HashMap<String, (i64, Counts)>>,
    /// Account → (day, requests on other nodes), rebuilt when a node's counts arrive.
    totals: ArcSwap<HashMap<String, Vec<(i64, u64)>>>,
    local: ArcSwapOption<LocalCounts>,
}

impl UsageBoard {
    /// Records the counts `node` sent for `day` (older days than it sent before are ignored).
    pub fn set(&self, node: &str, day: i64, counts: Counts) {
        let mut by_node = self.by_node.lock();
        if by_node.get(node).is_some_and(|(d, _)| *d > day) {
            return;
        }
        by_node.insert(node.to_owned(), (day, counts));
        let mut totals: HashMap<String, Vec<(i64, u64)>> = HashMap::new();
        for (day, counts) in by_node.values() {
            for (account, n) in counts {
                let days = totals.entry(account.clone()).or_default();
                match days.iter_mut().find(|(d, _)| d == day) {
                    Some((_, total)) => *total += n,
                    None => days.push((*day, *n)),
                }
            }
        }
        self.totals.store(totals.into());
    }

    /// Requests `account` made on other nodes on `day`, as last heard.
    pub fn elsewhere(&self, account: &str, day: i64) -> u64 {
        self.totals
            .load()
            .get(account)
            .and_then(|days| days.iter().find(|(d, _)| *d == day))
            .map_or(0, |(_, n)| *n)
    }

    /// Sets where this node's own counts come from.
    pub fn set_local(&self, source: LocalCounts) {
        self.local.store(Some(source.into()));
    }

    /// This node's own counts for `day`.
    pub fn local(&self, day: i64) -> Counts {
        self.local
            .load()
            .as_ref()
            .map(|source| source(day))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_other_nodes_for_the_day() {
        let board = UsageBoard::default();
        board.set("b", 10, HashMap::from([("acc".into(), 3)]));
        board.set("c", 10, HashMap::from([("acc".into(), 4)]));
        board.set("c", 9, HashMap::from([("acc".into(), 100)]));
        assert_eq!(board.elsewhere("acc", 10), 7);
        assert_eq!(board.elsewhere("acc", 11), 0);
        board.set("b", 11, HashMap::from([("acc".into(), 1)]));
        assert_eq!(board.elsewhere("acc", 10), 4);
        assert_eq!(board.elsewhere("acc", 11), 1);
    }
}
