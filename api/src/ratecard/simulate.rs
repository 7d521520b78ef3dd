//! `ratecard/simulate`: what a price change would have earned over the calls already rated on
//! a card — a draft or scheduled revision, or a rebuild by the card's recipe — per destination
//! and in total, with the cost and margin under the cheapest route when `providers` are named.
//! Nothing is written.

use super::{build, find_card, money};
use crate::error::ApiError;
use crate::ratecard::jurisdiction;
use crate::router::{Ctx, Output};
use edgerate_model::index::PrefixIndex;
use edgerate_model::pricing;
use edgerate_model::routing::{self, Call, Order, Provider, Quality};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Sums over the calls to one destination.
#[derive(Default)]
struct Sums {
    calls: u64,
    seconds: Decimal,
    now: Decimal,
    new: Decimal,
    /// Calls the new prices have no rule for (or block): they earn nothing new.
    unpriced: u64,
    cost: Decimal,
    /// Calls no provider route was found for.
    unrouted: u64,
}

impl Sums {
    fn add(&mut self, other: &Sums) {
        self.calls += other.calls;
        self.seconds += other.seconds;
        self.now += other.now;
        self.new += other.new;
        self.unpriced += other.unpriced;
        self.cost += other.cost;
        self.unrouted += other.unrouted;
    }

    fn json(&self, routed: bool) -> Value {
        let mut out = json!({
            "calls": self.calls,
            "minutes": money((self.seconds / Decimal::from(60)).round_dp(2)),
            "revenue_now": money(self.now),
            "revenue_new": money(self.new),
            "delta": money(self.new - self.now),
            "unpriced": self.unpriced,
        });
        if routed {
            out["cost"] = money(self.cost);
            out["margin"] = money(self.new - self.cost);
            out["unrouted"] = self.unrouted.into();
        }
        out
    }
}

pub fn simulate(ctx: &Ctx) -> Result<Output, ApiError> {
    let catalog = ctx.state.catalog();
    let view = catalog.view();
    let card = find_card(&view, ctx)?;
    let (from, to) = crate::cdr::range(ctx, Some(crate::cdr::MAX_RANGE))?;
    // The prices tried: a revision of the card, or a rebuild by its recipe.
    let tried: Value;
    let guard;
    let built: PrefixIndex;
    let index: &PrefixIndex = match ctx.vars.revision("revision")? {
        Some(rev) => {
            let rev = card
                .revisions
                .get(&rev)
                .ok_or_else(|| ApiError::not_found(format!("revision {rev} not found")))?;
            tried = json!({ "revision": rev.meta.rev });
            guard = rev.index.read_recursive();
            &guard
        }
        None => {
            let (recipe, rules) = build::simulated(&ctx.vars, &view, &card, ctx.now)?;
            tried = json!({ "recipe": build::recipe_json(&view, &recipe) });
            built = rules.into_iter().collect();
            &built
        }
    };
    let provider_cards: Vec<_> = crate::routing::providers(&view, ctx, false)?
        .into_iter()
        .filter_map(|p| p.card.live_at(ctx.now).cloned().map(|rev| (p.card, rev)))
        .collect();
    let guards: Vec<_> = provider_cards
        .iter()
        .map(|(_, r)| r.index.read_recursive())
        .collect();
    let providers: Vec<Provider> = provider_cards
        .iter()
        .zip(&guards)
        .map(|((p, _), index)| Provider {
            index,
            pricing: p.meta.pricing(),
        })
        .collect();
    let pricing_of = card.meta.pricing();
    let mut by_prefix: BTreeMap<String, Sums> = BTreeMap::new();
    let cards = [card.meta.id.as_str(), card.meta.name.as_str()];
    let log = ctx.state.log();
    log.rated_calls(&ctx.account().id, from, to, &cards, |c| {
        let cli = Some(c.source_cli).filter(|s| !s.is_empty());
        let jurisdiction = || jurisdiction(&view, c.dest_number, cli);
        let new = pricing::price(
            index,
            c.dest_number,
            jurisdiction,
            Some(c.duration),
            &pricing_of,
        )
        .and_then(|p| p.charge)
        .map(|charge| charge.cost);
        let sums = match by_prefix.get_mut(c.dest_code) {
            Some(sums) => sums,
            None => by_prefix.entry(c.dest_code.to_owned()).or_default(),
        };
        sums.calls += 1;
        sums.seconds += c.duration;
        sums.now += c.cost;
        match new {
            Some(cost) => sums.new += cost,
            None => sums.unpriced += 1,
        }
        if !providers.is_empty() {
            let call = Call {
                number: c.dest_number,
                duration: c.duration,
                jurisdiction: jurisdiction(),
                sell: None,
                assure: false,
                min_asr: None,
                order: Order::Cost,
                limit: 1,
            };
            match routing::routes(&providers, &call, |_, _| Quality::default())
                .0
                .first()
            {
                Some(route) => sums.cost += route.cost,
                None => sums.unrouted += 1,
            }
        }
    })
    .map_err(|e| crate::error::from_log("ratecard/simulate", e))?;
    let routed = !providers.is_empty();
    let mut totals = Sums::default();
    let destinations: Vec<Value> = by_prefix
        .iter()
        .map(|(prefix, sums)| {
            totals.add(sums);
            let mut out = sums.json(routed);
            out["prefix"] = prefix.clone().into();
            out
        })
        .collect();
    let mut out = json!({
        "card": card.meta.id,
        "from": from,
        "to": to,
        "destinations": destinations,
        "totals": totals.json(routed),
    });
    for (k, v) in tried.as_object().into_iter().flatten() {
        out[k] = v.clone();
    }
    Ok(Output::Value(out))
}
