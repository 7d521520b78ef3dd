//! The hourly rollup of CDRs: per account, hour of call time, SIP code, card and the
//! destination prefix a CDR is rated at now, its attempts, connected calls, connected
//! milliseconds and cost. Every transaction that changes the records (a CDR stored, a
//! re-rating put beside it, a CDR pruned) changes it too ([`Tally`], [`forget_before`]), so it
//! is never out of step with them.
//!
//! A listing's `total` and `cdr/stats` over a time range, filtered by nothing the rollup lacks
//! (a called number, which has an index of its own, or a CLI, which scans), read the whole
//! hours inside the range here and only the two partial hours at its edges from the records:
//! about two hours of records whatever the range (10M CDRs over 30 days are ~14k an hour).
//! Rows emptied by a prune or a re-rating are deleted; the number of CDRs held is kept beside
//! it (`meta` key `cdrs`), so counting them reads one row.

use super::{read_stats, EventLog, Filter, GroupBy, LogError, Stats};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};
use std::collections::btree_map::{BTreeMap, Entry};
use std::collections::HashMap;

const HOUR: i64 = 3600;

/// The table (created with the log).
pub(super) const TABLE: &str = "CREATE TABLE IF NOT EXISTS rollup (
       account TEXT NOT NULL, hour INTEGER NOT NULL, sip_code INTEGER NOT NULL,
       card TEXT NOT NULL, dest_code TEXT NOT NULL,
       attempts INTEGER NOT NULL, connected INTEGER NOT NULL, connected_ms INTEGER NOT NULL,
       cost_units INTEGER NOT NULL, cost_fraction INTEGER NOT NULL,
       PRIMARY KEY (account, hour, sip_code, card, dest_code)) WITHOUT ROWID;";

/// The rollup rows of the CDRs matching `filter` (a condition on the records, alias `e`),
/// their figures summed and signed by `sign` (`""`, or `"-"` to take them away): the prefix
/// and cost are the latest rating's. [`Tally`] applies the same rule one CDR at a time.
fn summed(filter: &str, sign: &str) -> String {
    let now =
        |own: &str, re: &str| format!("CASE WHEN e.re_at IS NULL THEN e.{own} ELSE e.{re} END");
    format!(
        "SELECT account, hour, sip_code, card, dest_code, {sign}SUM(attempts),
                {sign}SUM(connected), {sign}SUM(connected_ms), {sign}SUM(cost_units),
                {sign}SUM(cost_fraction)
         FROM (SELECT e.account AS account, e.dt / {HOUR} AS hour, e.sip_code AS sip_code,
                 COALESCE(e.card, '') AS card, COALESCE({dest}, '') AS dest_code,
                 1 AS attempts, (e.sip_code = 200) AS connected,
                 CASE WHEN e.sip_code = 200 THEN e.duration_ms ELSE 0 END AS connected_ms,
                 COALESCE({units}, 0) AS cost_units, COALESCE({fraction}, 0) AS cost_fraction
               FROM events AS e WHERE e.kind = 'cdr' AND {filter})
         WHERE true GROUP BY account, hour, sip_code, card, dest_code",
        dest = now("dest_code", "re_dest_code"),
        units = now("cost_units", "re_cost_units"),
        fraction = now("cost_fraction", "re_cost_fraction"),
    )
}

/// Adds the row being inserted to the one of the same key (an upsert's tail).
const ADD_ON_CONFLICT: &str = "ON CONFLICT (account, hour, sip_code, card, dest_code) DO UPDATE SET
       attempts = attempts + excluded.attempts, connected = connected + excluded.connected,
       connected_ms = connected_ms + excluded.connected_ms,
       cost_units = cost_units + excluded.cost_units,
       cost_fraction = cost_fraction + excluded.cost_fraction";

/// One of an account's CDRs as the rollup counts it: its place and, under its latest rating,
/// its figures.
#[derive(Clone)]
pub(super) struct Counted {
    pub dt: i64,
    pub sip_code: i64,
    pub card: Option<String>,
    pub duration_ms: i64,
    pub dest_code: Option<String>,
    pub cost_units: Option<i64>,
    pub cost_fraction: Option<i64>,
}

#[derive(PartialEq, Eq, Hash)]
struct Key {
    account: String,
    hour: i64,
    sip_code: i64,
    card: String,
    dest_code: String,
}

#[derive(Default, PartialEq)]
struct Figures {
    attempts: i64,
    connected: i64,
    connected_ms: i64,
    cost_units: i64,
    cost_fraction: i64,
}

/// What one transaction changes in the rollup and the count of CDRs, gathered as its records
/// are stored or re-rated and written once before it commits ([`Tally::write`]); pruning
/// takes its records away in bulk ([`forget_before`]).
/// Kept here rather than by triggers: a trigger on the records' table makes SQLite journal
/// every page each insert touches (measured: a trigger that does nothing doubles an insert's
/// cost), and a batch's CDRs share a few rollup rows.
#[derive(Default)]
pub(super) struct Tally {
    rows: HashMap<Key, Figures>,
    cdrs: i64,
}

impl Tally {
    /// A CDR of `account` stored.
    pub fn count(&mut self, account: &str, c: &Counted) {
        self.cdrs += 1;
        self.figures(account, c, 1);
    }

    /// A CDR's rating replaced: its old figures out, its new ones in.
    pub fn rerate(&mut self, account: &str, old: &Counted, new: &Counted) {
        self.figures(account, old, -1);
        self.figures(account, new, 1);
    }

    /// `c`'s place and figures, by the rule [`summed`] applies in SQL, times `sign`.
    fn figures(&mut self, account: &str, c: &Counted, sign: i64) {
        let key = Key {
            account: account.to_owned(),
            // As SQLite divides (toward zero), so rows match those `fill` wrote.
            hour: c.dt / HOUR,
            sip_code: c.sip_code,
            card: c.card.clone().unwrap_or_default(),
            dest_code: c.dest_code.clone().unwrap_or_default(),
        };
        let f = self.rows.entry(key).or_default();
        let connected = c.sip_code == 200;
        f.attempts += sign;
        f.connected += sign * i64::from(connected);
        f.connected_ms += sign * if connected { c.duration_ms } else { 0 };
        f.cost_units += sign * c.cost_units.unwrap_or(0);
        f.cost_fraction += sign * c.cost_fraction.unwrap_or(0);
    }

    /// Adds what was gathered to the rollup and the count, in the caller's transaction;
    /// deletes the rows it emptied.
    pub fn write(self, tx: &Connection) -> Result<(), LogError> {
        let mut upsert = tx.prepare_cached(&format!(
            "INSERT INTO rollup (account, hour, sip_code, card, dest_code, attempts, connected,
                                 connected_ms, cost_units, cost_fraction)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) {ADD_ON_CONFLICT}"
        ))?;
        let mut emptied = tx.prepare_cached(
            "DELETE FROM rollup WHERE account = ?1 AND hour = ?2 AND sip_code = ?3 AND card = ?4
               AND dest_code = ?5 AND attempts = 0",
        )?;
        for (k, f) in self.rows {
            if f == Figures::default() {
                continue;
            }
            upsert.execute(rusqlite::params![
                k.account,
                k.hour,
                k.sip_code,
                k.card,
                k.dest_code,
                f.attempts,
                f.connected,
                f.connected_ms,
                f.cost_units,
                f.cost_fraction
            ])?;
            if f.attempts < 0 {
                emptied.execute(rusqlite::params![
                    k.account,
                    k.hour,
                    k.sip_code,
                    k.card,
                    k.dest_code
                ])?;
            }
        }
        if self.cdrs != 0 {
            tx.execute(
                "UPDATE meta SET value = value + ?1 WHERE key = 'cdrs'",
                [self.cdrs],
            )?;
        }
        Ok(())
    }
}

/// Takes the CDRs dated before `before` out of the rollup and the count (before they are
/// deleted, in the caller's transaction): summed per rollup row, not one by one.
pub(super) fn forget_before(tx: &Connection, before: i64) -> Result<(), LogError> {
    tx.execute(
        &format!(
            "INSERT INTO rollup {} {ADD_ON_CONFLICT}",
            summed("e.dt < ?1", "-")
        ),
        [before],
    )?;
    tx.execute("DELETE FROM rollup WHERE attempts = 0", [])?;
    tx.execute(
        "UPDATE meta SET value = value -
           (SELECT COUNT(*) FROM events WHERE dt < ?1 AND kind = 'cdr') WHERE key = 'cdrs'",
        [before],
    )?;
    Ok(())
}

/// The triggers earlier builds kept the rollup with; dropped at every open (a log they
/// opened again has them back).
pub(super) const OLD_TRIGGERS: &str = "DROP TRIGGER IF EXISTS rollup_insert;
     DROP TRIGGER IF EXISTS rollup_delete;
     DROP TRIGGER IF EXISTS rollup_rerate;";

/// Builds the rollup and the count from the records (a log of an older schema), in the
/// caller's transaction.
pub(super) fn fill(conn: &Connection) -> Result<(), LogError> {
    conn.execute_batch(&format!(
        "INSERT OR REPLACE INTO meta (key, value)
           SELECT 'cdrs', COUNT(*) FROM events WHERE kind = 'cdr';
         DELETE FROM rollup;
         INSERT INTO rollup {};",
        summed("true", "")
    ))?;
    Ok(())
}

/// The whole hours of a filter's range, first and last, when the rollup can answer for them:
/// some whole hour lies inside the range and nothing filters on what the rollup does not keep.
fn whole_hours(filter: &Filter) -> Option<(i64, i64)> {
    if filter.number.is_some()
        || filter.cli.is_some()
        || filter.card.as_deref() == Some("")
        || filter.from < 0
    {
        return None;
    }
    let first = filter.from.saturating_add(HOUR - 1).div_euclid(HOUR);
    let last = filter.to.saturating_add(1).div_euclid(HOUR) - 1;
    (first <= last).then_some((first, last))
}

/// The filter's range outside its whole hours `(first, last)`: the partial hour at each edge.
fn edges(filter: &Filter, (first, last): (i64, i64)) -> [Filter; 2] {
    [
        Filter {
            to: first * HOUR - 1,
            ..filter.clone()
        },
        Filter {
            from: (last + 1) * HOUR,
            ..filter.clone()
        },
    ]
}

/// `WHERE …` over the rollup for the whole hours `(first, last)` of `filter`, and its
/// arguments.
fn where_clause(filter: &Filter, (first, last): (i64, i64)) -> (String, Vec<Value>) {
    let mut sql = "WHERE account = ? AND hour >= ? AND hour <= ?".to_owned();
    let mut args = vec![
        Value::from(filter.account.clone()),
        Value::from(first),
        Value::from(last),
    ];
    EventLog::code_and_card(filter, &mut sql, &mut args);
    (sql, args)
}

fn group_key(group_by: Option<GroupBy>) -> &'static str {
    match group_by {
        None => "''",
        Some(GroupBy::Prefix) => "dest_code",
        Some(GroupBy::Card) => "card",
        Some(GroupBy::SipCode) => "CAST(sip_code AS TEXT)",
        // `hour * 3600` ([`HOUR`]): the hour's first second.
        Some(GroupBy::Day) => "strftime('%Y-%m-%d', hour * 3600, 'unixepoch')",
    }
}

impl EventLog {
    /// How many CDRs match `filter`: from the rollup where it can answer, else counted.
    pub(super) fn total(conn: &Connection, filter: &Filter) -> Result<i64, LogError> {
        let Some(hours) = whole_hours(filter) else {
            return Self::count(conn, filter);
        };
        let (clause, args) = where_clause(filter, hours);
        let whole: i64 = conn.query_row(
            &format!("SELECT COALESCE(SUM(attempts), 0) FROM rollup {clause}"),
            params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        let [before, after] = edges(filter, hours);
        Ok(whole + Self::count(conn, &before)? + Self::count(conn, &after)?)
    }

    /// Stats of the CDRs matching `filter`, grouped: from the rollup where it can answer, else
    /// read from the records. Ordered by key.
    pub(super) fn stats_of(
        conn: &Connection,
        filter: &Filter,
        group_by: Option<GroupBy>,
    ) -> Result<Vec<Stats>, LogError> {
        let Some(hours) = whole_hours(filter) else {
            return Self::stats_scan(conn, filter, group_by);
        };
        let (clause, args) = where_clause(filter, hours);
        let sql = format!(
            "SELECT {} AS k, SUM(attempts), SUM(connected), SUM(connected_ms), SUM(cost_units),
                    SUM(cost_fraction)
             FROM rollup {clause} GROUP BY k HAVING SUM(attempts) > 0",
            group_key(group_by)
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut all: Vec<Stats> = stmt
            .query_map(params_from_iter(args.iter()), read_stats)?
            .collect::<Result<_, _>>()?;
        for edge in edges(filter, hours) {
            all.extend(Self::stats_scan(conn, &edge, group_by)?);
        }
        let mut groups: BTreeMap<String, Stats> = BTreeMap::new();
        for stats in all {
            match groups.entry(stats.key.clone()) {
                Entry::Vacant(e) => {
                    e.insert(stats);
                }
                Entry::Occupied(e) => {
                    let group = e.into_mut();
                    group.attempts += stats.attempts;
                    group.connected += stats.connected;
                    group.seconds += stats.seconds;
                    group.cost += stats.cost;
                }
            }
        }
        Ok(groups.into_values().collect())
    }
}
