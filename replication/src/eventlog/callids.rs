//! Where a call's records are: for each `(account, callid)` held, the minutes of call time its
//! records carry, in memory.
//!
//! Call ids (SIP Call-IDs) come in no order, so an index keyed by them put each CDR of a batch
//! on a page anywhere in it, and each commit wrote ~1000 such pages (10M CDRs with random call
//! ids: 13k CDRs/s). The log's call-id index leads with the minute of the call instead
//! (`events_callid_by_minute`): a batch's CDRs, which come in call-time order give or take, fill
//! a few of its pages. The minutes a call id was seen in come from here, so "is this call id
//! known?" is one seek per minute ([`CallIds::seek`]): almost always one, none for a new one.
//!
//! Exact: every record's `(account, callid)` is entered with its minute before its transaction
//! commits, so the minutes of every stored record are here. A minute here without a record (a
//! transaction that failed, a record pruned, two call ids of one hash) only costs a seek that
//! finds nothing.

use rusqlite::types::Value;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// The tables' own hasher: their keys are already 32 bits of a keyed hash, so they are only
/// spread over 64 bits (a multiply), not hashed again (SipHash on every lookup was most of the
/// load at open).
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }

    fn write_u32(&mut self, k: u32) {
        self.0 = (self.0 ^ u64::from(k)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Table<V> = HashMap<u32, V, BuildHasherDefault<Spread>>;

/// The minute of call time a record is filed under, as the index computes it (`dt / 60`).
/// Every record's `dt` is in `0..=time::MAX` (year 9999), whose minutes fit 32 bits.
fn minute(dt: i64) -> u32 {
    u32::try_from(dt.max(0) / 60).unwrap_or(u32::MAX)
}

#[derive(Default)]
pub(super) struct CallIds {
    /// Seeded anew at each open (the table is rebuilt then), so a client cannot aim call ids
    /// at one key. foldhash, as ASR Plus's table: SipHash was 5 % of reading 3M call ids at
    /// open.
    hasher: foldhash::fast::RandomState,
    /// The first minute seen per call, by 32 bits of its key's hash: 8 bytes a call, about 16
    /// in the table (10M calls: ~150 MiB more RSS). Two calls of one hash share candidates:
    /// a seek more.
    first: Table<u32>,
    /// Further minutes of calls seen in more than one (a call id reused later, or a hash two
    /// call ids share).
    more: Table<Vec<u32>>,
}

impl CallIds {
    fn key(&self, account: &str, callid: &str) -> u32 {
        let mut h = self.hasher.build_hasher();
        account.hash(&mut h);
        callid.hash(&mut h);
        (h.finish() >> 32) as u32
    }

    /// Notes a record of `(account, callid)` at call time `dt`.
    pub(super) fn insert(&mut self, account: &str, callid: &str, dt: i64) {
        self.insert_minute(self.key(account, callid), minute(dt));
    }

    fn insert_minute(&mut self, k: u32, m: u32) {
        // One probe of the table (10M calls at open: a lookup, then an insert, took twice as
        // long).
        match self.first.entry(k) {
            Entry::Vacant(slot) => {
                slot.insert(m);
            }
            Entry::Occupied(first) if *first.get() == m => {}
            Entry::Occupied(_) => {
                let more = self.more.entry(k).or_default();
                if !more.contains(&m) {
                    more.push(m);
                }
            }
        }
    }

    /// The minutes the records of `(account, callid)` may be in (none: there is no record).
    pub(super) fn minutes(&self, account: &str, callid: &str) -> Vec<u32> {
        let k = self.key(account, callid);
        let mut minutes: Vec<u32> = self.first.get(&k).copied().into_iter().collect();
        if let Some(more) = self.more.get(&k) {
            minutes.extend_from_slice(more);
        }
        minutes
    }

    /// The seek into `events_callid_by_minute` for the records of `kind` of `(account, callid)`:
    /// `INDEXED BY … WHERE …` over the minutes held for it, and its arguments; `None` when
    /// there is no such record.
    pub(super) fn seek(
        &self,
        account: &str,
        callid: &str,
        kind: &str,
    ) -> Option<(String, Vec<Value>)> {
        let minutes = self.minutes(account, callid);
        if minutes.is_empty() {
            return None;
        }
        let marks = vec!["?"; minutes.len()].join(", ");
        let clause = format!(
            "INDEXED BY events_callid_by_minute
             WHERE account = ? AND dt / 60 IN ({marks}) AND callid = ? AND kind = ?"
        );
        let mut args = Vec::with_capacity(minutes.len() + 3);
        args.push(Value::from(account.to_owned()));
        args.extend(minutes.iter().map(|&m| Value::from(i64::from(m))));
        args.push(Value::from(callid.to_owned()));
        args.push(Value::from(kind.to_owned()));
        Some((clause, args))
    }

    /// Forgets minutes before `before` (records older than it were deleted).
    pub(super) fn forget_before(&mut self, before: i64) {
        let cutoff = minute(before);
        self.more.retain(|_, minutes| {
            minutes.retain(|&m| m >= cutoff);
            !minutes.is_empty()
        });
        let more = &mut self.more;
        self.first.retain(|k, m| {
            if *m >= cutoff {
                return true;
            }
            // A later minute of the same call takes the first one's place.
            if let Some(minutes) = more.get_mut(k) {
                if let Some(next) = minutes.pop() {
                    *m = next;
                    if minutes.is_empty() {
                        more.remove(k);
                    }
                    return true;
                }
            }
            false
        });
    }

    /// Reads every record's call id and minute from the log (at open); `records` is about how
    /// many there are (the table is sized for them at once).
    pub(super) fn load(
        conn: &rusqlite::Connection,
        records: usize,
    ) -> Result<Self, rusqlite::Error> {
        let mut ids = Self {
            first: Table::with_capacity_and_hasher(records, BuildHasherDefault::default()),
            ..Self::default()
        };
        let mut stmt = conn.prepare(
            "SELECT account, callid, dt / 60 FROM events INDEXED BY events_callid_by_minute",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let text = |i: usize| row.get_ref(i).ok().and_then(|v| v.as_str().ok());
            let (Some(account), Some(callid)) = (text(0), text(1)) else {
                continue;
            };
            let m = u32::try_from(row.get::<_, i64>(2)?).unwrap_or(u32::MAX);
            let k = ids.key(account, callid);
            ids.insert_minute(k, m);
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_minute_of_a_call_is_kept_until_pruned() {
        let mut ids = CallIds::default();
        ids.insert("a", "c1", 120);
        ids.insert("a", "c1", 130);
        ids.insert("a", "c1", 600);
        ids.insert("b", "c1", 60);
        assert_eq!(ids.minutes("a", "c1"), vec![2, 10]);
        assert_eq!(ids.minutes("b", "c1"), vec![1]);
        assert!(ids.minutes("a", "c2").is_empty());
        ids.forget_before(10 * 60);
        assert_eq!(ids.minutes("a", "c1"), vec![10]);
        assert!(ids.minutes("b", "c1").is_empty());
        assert!(ids.more.is_empty());
    }
}
