//! Re-ratings: the log stays grow-only, so a re-rating is a record of its own (kind `rerate`,
//! carrying the CDR with its new rating and the time it was made). The latest re-rating of
//! `(account, callid)` — by time, then origin, then sequence, the same order on every node —
//! supersedes the CDR's rating in every listing, export and sum; the CDR's own rating stays as
//! it came (it is what replication sends), beside the latest re-rating's (the `re_*` columns).
//! Records may arrive in any order: a re-rating whose CDR is not here yet is kept and applied
//! when the CDR comes ([`catch_up`]).

use super::callids::CallIds;
use super::rollup::{Counted, Tally};
use super::{insert_record, EventLog, LogError, RatingColumns, RecordRef, INSERT};
use edgerate_model::cdr::Cdr;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, Transaction};
use std::sync::atomic::{AtomicBool, Ordering};

impl EventLog {
    /// Stores re-ratings of `account`'s CDRs made at `at`: each of `cdrs` is a CDR with its new
    /// rating (`None`: now unrated). Durable before it returns, replicated like CDRs.
    pub fn rerate(&self, account: &str, cdrs: &[Cdr], at: i64) -> Result<usize, LogError> {
        if cdrs.is_empty() {
            return Ok(0);
        }
        let result = (|| {
            let mut conn = self.conn.lock();
            let tx = conn.transaction()?;
            let mut seq: u64 = self.vv.lock().get(&self.origin).copied().unwrap_or(0);
            let mut tally = Tally::default();
            let mut ids = self.callids.lock();
            note(&tx, &self.has_rerates)?;
            {
                let mut insert = tx.prepare_cached(INSERT)?;
                for cdr in cdrs {
                    seq += 1;
                    let record = RecordRef {
                        origin: &self.origin,
                        seq,
                        account,
                        cdr,
                        rerated: Some(at),
                    };
                    insert_record(&mut insert, &record)?;
                    ids.insert(account, &cdr.input.callid, cdr.input.dt);
                    supersede(&tx, &ids, &record, &mut tally)?;
                }
            }
            super::raise_head(&tx, &self.origin, seq)?;
            tally.write(&tx)?;
            self.commit(tx)?;
            drop(ids);
            self.vv.lock().insert(self.origin.clone(), seq);
            Ok(cdrs.len())
        })();
        self.note_space(&result);
        if let (Ok(_), Some(hook)) = (&result, &*self.on_append.load()) {
            hook();
        }
        result
    }
}

/// Records that the log holds re-ratings (from then on an arriving CDR looks for its own).
pub(super) fn note(tx: &Transaction<'_>, flag: &AtomicBool) -> Result<(), LogError> {
    if !flag.load(Ordering::Relaxed) {
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('rerates', 1)",
            [],
        )?;
        flag.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Puts a re-rating's rating beside its CDR when it is the latest one there, and moves the
/// CDR's figures in the rollup from its old rating to this one.
pub(super) fn supersede(
    tx: &Transaction<'_>,
    ids: &CallIds,
    r: &RecordRef<'_>,
    tally: &mut Tally,
) -> Result<(), LogError> {
    let at = r.rerated.unwrap_or_default();
    let Some((clause, mut args)) = ids.seek(r.account, &r.cdr.input.callid, "cdr") else {
        return Ok(());
    };
    args.extend([
        Value::from(at),
        Value::from(r.origin.to_owned()),
        Value::from(r.seq as i64),
    ]);
    // The call's CDRs this re-rating is later than, each as the rollup counts it now.
    let older: Vec<(String, i64, Counted)> = tx
        .prepare_cached(&format!(
            "SELECT origin, seq, dt, sip_code, card, duration_ms,
                    CASE WHEN re_at IS NULL THEN dest_code ELSE re_dest_code END,
                    CASE WHEN re_at IS NULL THEN cost_units ELSE re_cost_units END,
                    CASE WHEN re_at IS NULL THEN cost_fraction ELSE re_cost_fraction END
             FROM events {clause}
               AND (re_at IS NULL OR (re_at, re_origin, re_seq) < (?, ?, ?))"
        ))?
        .query_map(params_from_iter(args.iter()), |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                Counted {
                    dt: row.get(2)?,
                    sip_code: row.get(3)?,
                    card: row.get(4)?,
                    duration_ms: row.get(5)?,
                    dest_code: row.get(6)?,
                    cost_units: row.get(7)?,
                    cost_fraction: row.get(8)?,
                },
            ))
        })?
        .collect::<Result<_, _>>()?;
    if older.is_empty() {
        return Ok(());
    }
    let c = RatingColumns::of(r.cdr.rating.as_ref());
    let mut update = tx.prepare_cached(
        "UPDATE events SET re_at = ?1, re_origin = ?2, re_seq = ?3, re_dest_code = ?4,
           re_dest_name = ?5, re_rate = ?6, re_billed_duration = ?7, re_cost = ?8,
           re_cost_units = ?9, re_cost_fraction = ?10
         WHERE origin = ?11 AND seq = ?12",
    )?;
    for (origin, seq, old) in &older {
        update.execute(params![
            at,
            r.origin,
            r.seq as i64,
            c.dest_code,
            c.dest_name,
            c.rate,
            c.billed_duration,
            c.cost,
            c.cost_units,
            c.cost_fraction,
            origin,
            seq,
        ])?;
        let new = Counted {
            dest_code: c.dest_code.clone(),
            cost_units: c.cost_units,
            cost_fraction: c.cost_fraction,
            ..old.clone()
        };
        tally.rerate(r.account, old, &new);
    }
    Ok(())
}

/// After a CDR came from a peer: the latest re-rating of it already here, applied.
pub(super) fn catch_up(
    tx: &Transaction<'_>,
    ids: &CallIds,
    account: &str,
    callid: &str,
    tally: &mut Tally,
) -> Result<(), LogError> {
    let Some((clause, args)) = ids.seek(account, callid, "rerate") else {
        return Ok(());
    };
    let latest = tx
        .prepare_cached(&format!(
            "SELECT {} FROM events {clause}
             ORDER BY rated_at DESC, origin DESC, seq DESC LIMIT 1",
            super::COLUMNS
        ))?
        .query_row(params_from_iter(args.iter()), super::read_record)
        .optional()?;
    if let Some(r) = latest {
        supersede(tx, ids, &r.as_ref(), tally)?;
    }
    Ok(())
}
