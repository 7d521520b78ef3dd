//! The hourly rollup of CDRs: per account, hour of call time, SIP code, card and the
//! destination prefix a CDR is rated at now, its attempts, connected calls, connected
//! milliseconds and cost. Triggers keep it in the transaction that changes the records (a CDR
//! stored, a re-rating put beside it, a CDR pruned), so it is never out of step with them.
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

const HOUR: i64 = 3600;

/// The table (created with the log).
pub(super) const TABLE: &str = "CREATE TABLE IF NOT EXISTS rollup (
       account TEXT NOT NULL, hour INTEGER NOT NULL, sip_code INTEGER NOT NULL,
       card TEXT NOT NULL, dest_code TEXT NOT NULL,
       attempts INTEGER NOT NULL, connected INTEGER NOT NULL, connected_ms INTEGER NOT NULL,
       cost_units INTEGER NOT NULL, cost_fraction INTEGER NOT NULL,
       PRIMARY KEY (account, hour, sip_code, card, dest_code)) WITHOUT ROWID;";

/// One CDR row's place and figures in the rollup, named as its columns, read from `r` (`NEW`,
/// `OLD` or a table alias), times `sign` (`1` to add it, `-1` to take it away). The prefix and
/// cost are the latest rating's.
fn row(r: &str, sign: &str) -> String {
    let now = |own: &str, re: &str| {
        format!("CASE WHEN {r}.re_at IS NULL THEN {r}.{own} ELSE {r}.{re} END")
    };
    format!(
        "{r}.account AS account, {r}.dt / {HOUR} AS hour, {r}.sip_code AS sip_code,
         COALESCE({r}.card, '') AS card, COALESCE({dest}, '') AS dest_code,
         {sign} AS attempts, {sign} * ({r}.sip_code = 200) AS connected,
         {sign} * (CASE WHEN {r}.sip_code = 200 THEN {r}.duration_ms ELSE 0 END) AS connected_ms,
         {sign} * COALESCE({units}, 0) AS cost_units,
         {sign} * COALESCE({fraction}, 0) AS cost_fraction",
        dest = now("dest_code", "re_dest_code"),
        units = now("cost_units", "re_cost_units"),
        fraction = now("cost_fraction", "re_cost_fraction"),
    )
}

/// Adds one row's figures (an upsert on the rollup's key; `WHERE true` is SQLite's way of
/// telling an upsert's `ON` from a join's).
fn add(r: &str, sign: &str) -> String {
    format!(
        "INSERT INTO rollup SELECT {} WHERE true
           ON CONFLICT (account, hour, sip_code, card, dest_code) DO UPDATE SET
             attempts = attempts + excluded.attempts, connected = connected + excluded.connected,
             connected_ms = connected_ms + excluded.connected_ms,
             cost_units = cost_units + excluded.cost_units,
             cost_fraction = cost_fraction + excluded.cost_fraction;",
        row(r, sign)
    )
}

/// Takes one row's figures away, and deletes the rollup row if that emptied it.
fn subtract(r: &str) -> String {
    format!(
        "{}
         DELETE FROM rollup WHERE attempts = 0 AND (account, hour, sip_code, card, dest_code) =
           (SELECT account, hour, sip_code, card, dest_code FROM (SELECT {}));",
        add(r, "-1"),
        row(r, "1")
    )
}

/// The triggers that keep the rollup and the count of CDRs (re-ratings are records too, but
/// not CDRs to count).
pub(super) fn triggers() -> String {
    format!(
        "CREATE TRIGGER IF NOT EXISTS rollup_insert AFTER INSERT ON events WHEN NEW.kind = 'cdr' BEGIN
           {plus_new}
           UPDATE meta SET value = value + 1 WHERE key = 'cdrs';
         END;
         CREATE TRIGGER IF NOT EXISTS rollup_delete AFTER DELETE ON events WHEN OLD.kind = 'cdr' BEGIN
           {minus_old}
           UPDATE meta SET value = value - 1 WHERE key = 'cdrs';
         END;
         CREATE TRIGGER IF NOT EXISTS rollup_rerate AFTER UPDATE OF re_at ON events WHEN NEW.kind = 'cdr' BEGIN
           {minus_old}
           {plus_new}
         END;",
        plus_new = add("NEW", "1"),
        minus_old = subtract("OLD"),
    )
}

/// Builds the rollup and the count from the records (a log of an older schema), in the
/// caller's transaction.
pub(super) fn fill(conn: &Connection) -> Result<(), LogError> {
    conn.execute_batch(&format!(
        "INSERT OR REPLACE INTO meta (key, value)
           SELECT 'cdrs', COUNT(*) FROM events WHERE kind = 'cdr';
         DELETE FROM rollup;
         INSERT INTO rollup
           SELECT account, hour, sip_code, card, dest_code, SUM(attempts), SUM(connected),
                  SUM(connected_ms), SUM(cost_units), SUM(cost_fraction)
           FROM (SELECT {} FROM events AS e WHERE e.kind = 'cdr')
           GROUP BY account, hour, sip_code, card, dest_code;",
        row("e", "1")
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
