//! The hourly rollup of CDRs: per account, hour of call time, SIP code, card and the
//! destination prefix a CDR is rated at now, its attempts, connected calls, connected
//! milliseconds and cost. Every transaction that changes the records (a CDR stored, a
//! re-rating put beside it, a CDR pruned) changes it too ([`Tally`], [`forget_before`]), so it
//! is never out of step with them.
//!
//! A listing's `total` and `cdr/stats` over a time range, filtered by nothing the rollup lacks
//! (a called number or a CLI, which have indexes of their own), read the whole hours inside
//! the range here. Each hour at an edge of the range, covered only in part, is read from the
//! records, or as its rollup rows less the records of the rest of the hour, whichever holds
//! fewer CDRs ([`plan`]): at most half an hour of records at each edge, whatever the range,
//! and fewer than [`PROBE`] for a range that ends after the last call.
//! Rows emptied by a prune or a re-rating are deleted; the number of CDRs held is kept beside
//! it (`meta` key `cdrs`), so counting them reads one row.

use super::{read_stats, EventLog, Filter, GroupBy, LogError, Stats};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
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

/// How the rollup answers for a filter: its hours `first..=last` (none if `first > last`),
/// plus the records of the ranges in `add`, less those in `take`, each with how many CDRs it
/// holds.
struct Plan {
    first: i64,
    last: i64,
    add: Vec<(Filter, i64)>,
    take: Vec<(Filter, i64)>,
}

/// The first and last second of `hour` (the last one cut at `i64::MAX`).
fn span(hour: i64) -> (i64, i64) {
    let start = hour * HOUR;
    (start, start.saturating_add(HOUR - 1))
}

/// `filter` over `from..=to` instead of its own range.
fn within(filter: &Filter, from: i64, to: i64) -> Filter {
    Filter {
        from,
        to,
        ..filter.clone()
    }
}

/// The plan for `filter`, when the rollup can answer for it: nothing filters on what the
/// rollup does not keep. Each hour the range covers in part is read from the records (the part
/// inside the range) or from the rollup less the records of the rest of the hour, whichever
/// holds fewer CDRs: at most half of each edge hour is read, and fewer than [`PROBE`] records
/// when the range ends after the last call (a range ending now).
fn plan(conn: &Connection, filter: &Filter) -> Result<Option<Plan>, LogError> {
    if filter.number.is_some()
        || filter.cli.is_some()
        || filter.card.as_deref() == Some("")
        || filter.from < 0
        || filter.from > filter.to
    {
        return Ok(None);
    }
    let (h0, h1) = (filter.from / HOUR, filter.to / HOUR);
    let mut plan = Plan {
        first: h0,
        last: h1,
        add: Vec::new(),
        take: Vec::new(),
    };
    // The hours covered in part, and the part of each inside the range.
    let mut partial = Vec::with_capacity(2);
    if h0 == h1 {
        if (filter.from, filter.to) != span(h0) {
            partial.push((h0, filter.from, filter.to));
        }
    } else {
        if filter.from != span(h0).0 {
            partial.push((h0, filter.from, span(h0).1));
        }
        if filter.to != span(h1).1 {
            partial.push((h1, span(h1).0, filter.to));
        }
    }
    for (hour, from, to) in partial {
        let (start, end) = span(hour);
        let inside = vec![within(filter, from, to)];
        let mut rest = Vec::with_capacity(2);
        if from > start {
            rest.push(within(filter, start, from - 1));
        }
        if to < end {
            rest.push(within(filter, to + 1, end));
        }
        let (direct, counts) = smaller_side(conn, filter, hour, &inside, &rest)?;
        if direct {
            plan.add.extend(inside.into_iter().zip(counts));
            if hour == h0 {
                plan.first = h0 + 1;
            }
            if hour == h1 {
                plan.last = h1 - 1;
            }
        } else {
            plan.take.extend(rest.into_iter().zip(counts));
        }
    }
    Ok(Some(plan))
}

/// How far each side of an edge hour is counted first: most edges are settled by it (a range
/// ending after the last call has nothing past its end).
const PROBE: i64 = 1024;

/// Which side of `hour` holds fewer of the CDRs `filter` matches: the part `inside` the range
/// (true) or the `rest` of the hour (false), and how many each of its pieces holds. Both are
/// counted up to [`PROBE`]; past it, the side shorter in time is counted up to half the hour's
/// CDRs (the rollup's count), and the other side only if it held more: at most about the
/// hour's CDRs are counted (index entries, not records).
fn smaller_side(
    conn: &Connection,
    filter: &Filter,
    hour: i64,
    inside: &[Filter],
    rest: &[Filter],
) -> Result<(bool, Vec<i64>), LogError> {
    let seconds = |side: &[Filter]| side.iter().map(|f| f.to - f.from).sum::<i64>();
    let short_inside = seconds(inside) <= seconds(rest);
    let (short, long) = if short_inside {
        (inside, rest)
    } else {
        (rest, inside)
    };
    if let Some(counts) = counted(conn, short, PROBE)? {
        return Ok((short_inside, counts));
    }
    if let Some(counts) = counted(conn, long, PROBE)? {
        return Ok((!short_inside, counts));
    }
    let half = attempts(conn, filter, (hour, hour))? / 2;
    if let Some(counts) = counted(conn, short, half + 1)? {
        return Ok((short_inside, counts));
    }
    let counts = long
        .iter()
        .map(|piece| EventLog::count(conn, piece))
        .collect::<Result<_, _>>()?;
    Ok((!short_inside, counts))
}

/// How many CDRs each of `pieces` holds, if they hold fewer than `cap` in all (counting stops
/// there).
fn counted(conn: &Connection, pieces: &[Filter], cap: i64) -> Result<Option<Vec<i64>>, LogError> {
    let mut counts = Vec::with_capacity(pieces.len());
    let mut sum = 0;
    for piece in pieces {
        let n = EventLog::count_upto(conn, piece, Some(cap - sum))?;
        sum += n;
        if sum >= cap {
            return Ok(None);
        }
        counts.push(n);
    }
    Ok(Some(counts))
}

/// How many CDRs matching `filter`'s SIP code and card the rollup holds for the hours
/// `first..=last`.
fn attempts(conn: &Connection, filter: &Filter, hours: (i64, i64)) -> Result<i64, LogError> {
    let (clause, args) = where_clause(filter, hours);
    Ok(conn.query_row(
        &format!("SELECT COALESCE(SUM(attempts), 0) FROM rollup {clause}"),
        params_from_iter(args.iter()),
        |r| r.get(0),
    )?)
}

/// `WHERE …` over the rollup for the hours `(first, last)` of `filter`, and its arguments.
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
        let Some(plan) = plan(conn, filter)? else {
            return Self::count(conn, filter);
        };
        let total = attempts(conn, filter, (plan.first, plan.last))?;
        let added: i64 = plan.add.iter().map(|(_, n)| n).sum();
        let taken: i64 = plan.take.iter().map(|(_, n)| n).sum();
        Ok(total + added - taken)
    }

    /// Stats of the CDRs matching `filter`, grouped: from the rollup where it can answer, else
    /// read from the records. Ordered by key.
    pub(super) fn stats_of(
        conn: &Connection,
        filter: &Filter,
        group_by: Option<GroupBy>,
    ) -> Result<Vec<Stats>, LogError> {
        let Some(plan) = plan(conn, filter)? else {
            return Self::stats_scan(conn, filter, group_by);
        };
        let mut groups: BTreeMap<String, Sum> = BTreeMap::new();
        let mut merge = |stats: Vec<Stats>, sign: i64| {
            for s in stats {
                let group = groups.entry(s.key).or_default();
                let sign_of = |n: u64| sign * i64::try_from(n).unwrap_or(i64::MAX);
                group.attempts += sign_of(s.attempts);
                group.connected += sign_of(s.connected);
                group.seconds += Decimal::from(sign) * s.seconds;
                group.cost += Decimal::from(sign) * s.cost;
            }
        };
        if plan.first <= plan.last {
            let (clause, args) = where_clause(filter, (plan.first, plan.last));
            let sql = format!(
                "SELECT {} AS k, SUM(attempts), SUM(connected), SUM(connected_ms),
                        SUM(cost_units), SUM(cost_fraction)
                 FROM rollup {clause} GROUP BY k",
                group_key(group_by)
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(args.iter()), read_stats)?;
            merge(rows.collect::<Result<_, _>>()?, 1);
        }
        for (sign, pieces) in [(1, &plan.add), (-1, &plan.take)] {
            for (range, _) in pieces.iter().filter(|(_, n)| *n > 0) {
                merge(Self::stats_scan(conn, range, group_by)?, sign);
            }
        }
        Ok(groups
            .into_iter()
            .filter(|(_, sum)| sum.attempts > 0)
            .map(|(key, sum)| Stats {
                key,
                attempts: u64::try_from(sum.attempts).unwrap_or(0),
                connected: u64::try_from(sum.connected).unwrap_or(0),
                seconds: sum.seconds,
                cost: sum.cost,
            })
            .collect())
    }
}

/// One group's figures while the rollup's rows and the records' are added and taken away.
#[derive(Default)]
struct Sum {
    attempts: i64,
    connected: i64,
    seconds: Decimal,
    cost: Decimal,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::Cdr;
    use edgerate_model::cdr::CdrInput;

    /// A range ending inside an hour, after its last call, reads no record: the rest of the
    /// hour is taken from the rollup's, and it holds none. A range covering a hour's last calls
    /// reads them alone; one covering most of them takes the others away.
    #[test]
    fn an_edge_hour_is_read_on_its_smaller_side() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("log"), "a", &[], 10_000).unwrap();
        let cdrs: Vec<Cdr> = (0..3000)
            .map(|i| Cdr {
                input: CdrInput {
                    callid: format!("c{i}"),
                    dt: 3600 + i,
                    source_cli: "1".into(),
                    dest_number: "2".into(),
                    duration: Decimal::new(i % 97, 1),
                    sip_code: [200, 486][(i % 2) as usize],
                    sip_reason: String::new(),
                    card: None,
                    provider: None,
                },
                rating: None,
                leg: None,
            })
            .collect();
        log.append("acc", &cdrs).unwrap();
        let conn = log.conn.lock();
        let range = |from, to| Filter {
            account: "acc".into(),
            from,
            to,
            number: None,
            cli: None,
            sip_code: None,
            card: None,
        };
        let counts = |side: &[(Filter, i64)]| side.iter().map(|(_, n)| *n).collect::<Vec<_>>();
        for (from, to, hours, add, take, total) in [
            (0, 6700, (0, 1), vec![], vec![0], 3000),
            (6000, 7199, (2, 0), vec![600], vec![], 600),
            (5000, 7199, (1, 1), vec![], vec![1400], 1600),
            (3000, 5000, (1, 0), vec![0, 1401], vec![], 1401),
        ] {
            let plan = plan(&conn, &range(from, to)).unwrap().unwrap();
            assert_eq!((plan.first, plan.last), hours, "{from}..{to}");
            assert_eq!(counts(&plan.add), add, "{from}..{to}");
            assert_eq!(counts(&plan.take), take, "{from}..{to}");
            assert_eq!(EventLog::total(&conn, &range(from, to)).unwrap(), total);
            for group in [None, Some(GroupBy::Prefix), Some(GroupBy::Day)] {
                assert_eq!(
                    EventLog::stats_of(&conn, &range(from, to), group).unwrap(),
                    EventLog::stats_scan(&conn, &range(from, to), group).unwrap(),
                    "{from}..{to} {group:?}"
                );
            }
        }
    }
}
