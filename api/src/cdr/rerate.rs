//! `cdr/rerate`: stored CDRs priced again on their card — on a named revision, or on the
//! revision live at each call's time (after a deck was corrected) — each one whose rating
//! changes getting a re-rating record ([`EventLog::rerate`]) that supersedes its rating
//! everywhere. Idempotent: a second run finds nothing to change.
//!
//! [`EventLog::rerate`]: edgerate_replication::eventlog::EventLog::rerate

use super::{range, rate_on, MAX_RANGE};
use crate::error::ApiError;
use crate::ratecard::money;
use crate::router::{Ctx, Output};
use edgerate_model::cdr::Cdr;
use rust_decimal::Decimal;
use serde_json::json;

pub fn rerate(ctx: &Ctx) -> Result<Output, ApiError> {
    let view = ctx.state.catalog().view();
    let reference = ctx.vars.required("card")?;
    let card = view
        .card(&ctx.account().id, reference)
        .ok_or_else(|| ApiError::not_found(format!("card '{reference}' not found")))?;
    let (from, to) = range(ctx, Some(MAX_RANGE))?;
    let revision = match ctx.vars.revision("revision")? {
        Some(rev) => Some(
            card.revisions
                .get(&rev)
                .ok_or_else(|| ApiError::not_found(format!("revision {rev} not found")))?,
        ),
        None => None,
    };
    let log = ctx.state.log();
    let (mut calls, mut changed) = (0u64, 0u64);
    let mut delta = Decimal::ZERO;
    // A CDR names its card by id or by name: both are read.
    let cards = [card.meta.id.as_str(), card.meta.name.as_str()];
    log.by_card_hourly(&ctx.account().id, from, to, &cards, |records| {
        let mut batch: Vec<Cdr> = Vec::new();
        for r in &records {
            // The reference as the CDR gave it, resolved now: a card since renamed, whose old
            // name another card took, is not this one.
            let ours = r
                .cdr
                .input
                .card
                .as_deref()
                .and_then(|c| view.card(&ctx.account().id, c));
            if ours.is_none_or(|c| c.meta.id != card.meta.id) {
                continue;
            }
            calls += 1;
            let rev = revision.or_else(|| card.live_at(r.cdr.input.dt));
            let rating = rev.and_then(|rev| rate_on(&view, card, rev, &r.cdr.input));
            if rating == r.cdr.rating {
                continue;
            }
            let cost = |c: &Cdr| c.rating.as_ref().map_or(Decimal::ZERO, |r| r.cost);
            let mut new = r.cdr.clone();
            new.rating = rating;
            delta += cost(&new) - cost(&r.cdr);
            batch.push(new);
        }
        changed += batch.len() as u64;
        log.rerate(&ctx.account().id, &batch, ctx.now).map(drop)
    })
    .map_err(|e| crate::error::from_log("cdr/rerate", e))?;
    metrics::counter!("edgerate_cdrs_rerated_total").increment(changed);
    Ok(Output::Value(json!({
        "card": card.meta.id,
        "revision": revision.map(|r| r.meta.rev),
        "from": from,
        "to": to,
        "calls": calls,
        "changed": changed,
        "unchanged": calls - changed,
        "cost_delta": money(delta),
    })))
}
