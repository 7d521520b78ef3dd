//! `routing/lcr` (API.md §3 "routing"): the routes for a call over the account's provider cards,
//! each priced by the same function as a query ([`model::routing`]), with the sell price and
//! margin when a customer card is named.
//!
//! [`model::routing`]: edgerate_model::routing

use crate::error::ApiError;
use crate::ratecard::{jurisdiction, money};
use crate::router::{Ctx, Output};
use edgerate_model::card::CardKind;
use edgerate_model::pricing;
use edgerate_model::routing::{self, Call, Order, Provider};
use edgerate_replication::catalog::{CardView, View};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Routes per number when `limit` is not given, and its maximum.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Most provider cards one request reads.
const MAX_PROVIDERS: usize = 100;
/// Numbers per request.
const MAX_NUMBERS: usize = 100;
/// The call priced when `duration` is not given, seconds: one minute.
const DEFAULT_DURATION: i64 = 60;

pub fn lcr(ctx: &Ctx) -> Result<Output, ApiError> {
    let view = ctx.state.catalog().view();
    let account = &ctx.account().id;
    let numbers = ctx.vars.numbers("number", MAX_NUMBERS)?;
    let sell_card = ctx
        .vars
        .get("card")
        .map(|reference| {
            view.card(account, reference)
                .ok_or_else(|| ApiError::not_found(format!("card '{reference}' not found")))
        })
        .transpose()?;
    let providers = providers(&view, ctx)?;
    let duration = match ctx
        .vars
        .parse_opt::<Decimal>("duration", "a number of seconds")?
    {
        None => Decimal::from(DEFAULT_DURATION),
        Some(d) if d.is_sign_negative() && !d.is_zero() => {
            return Err(ApiError::invalid("duration", "must not be negative"))
        }
        Some(d) if d > Decimal::from(edgerate_model::cdr::MAX_DURATION) => {
            return Err(ApiError::invalid("duration", "is over 10000000 seconds"))
        }
        Some(d) => d.abs(),
    };
    let at = ctx.vars.time("at")?.unwrap_or(ctx.now);
    let order = match ctx.vars.get("order") {
        None => Order::default(),
        Some(o) => Order::parse(o).ok_or_else(|| {
            ApiError::invalid("order", format!("'{o}' is not cost, quality or margin"))
        })?,
    };
    let limit = match ctx.vars.parse_opt::<usize>("limit", "a whole number")? {
        None => DEFAULT_LIMIT,
        Some(l) if (1..=MAX_LIMIT).contains(&l) => l,
        Some(_) => return Err(ApiError::invalid("limit", format!("must be 1-{MAX_LIMIT}"))),
    };
    let assure = match ctx.vars.get("assure") {
        None => sell_card.is_some(),
        Some("true" | "1" | "yes") => true,
        Some("false" | "0" | "no") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "assure",
                format!("'{other}' is not true or false"),
            ))
        }
    };
    let min_asr = match ctx.vars.parse_opt::<Decimal>("min_asr", "a percentage")? {
        Some(a) if a.is_sign_negative() || a > Decimal::ONE_HUNDRED => {
            return Err(ApiError::invalid("min_asr", "must be 0-100 (percent)"))
        }
        other => other,
    };
    let cli = ctx.vars.number("cli")?;
    let live: Vec<(&Named, &edgerate_replication::catalog::RevisionView)> = providers
        .iter()
        .filter_map(|p| p.card.live_at(at).map(|rev| (p, rev)))
        .collect();
    let guards: Vec<_> = live.iter().map(|(_, rev)| rev.index.read()).collect();
    let priced: Vec<Provider> = live
        .iter()
        .zip(&guards)
        .map(|((p, _), index)| Provider {
            index,
            pricing: p.card.meta.pricing(),
        })
        .collect();
    let quality = ctx.state.log().route_quality();
    let answer = |number: &str| -> Value {
        let jurisdiction = jurisdiction(&view, number, cli.as_deref());
        let sell = sell_card.and_then(|card| {
            let rev = card.live_at(at)?;
            // Recursive: the sell card may be one of the providers, whose index is read-locked
            // above (a plain read would wait behind a queued writer for ever).
            let index = rev.index.read_recursive();
            let price = pricing::price(
                &index,
                number,
                || jurisdiction,
                Some(duration),
                &card.meta.pricing(),
            )?;
            let cost = price.charge.map(|c| c.cost);
            Some((
                json!({
                    "card": card.meta.name,
                    "prefix": &number[..price.prefix_len],
                    "rate": money(price.rate),
                    "cost": cost.map(money),
                }),
                cost,
            ))
        });
        let call = Call {
            number,
            duration,
            jurisdiction,
            sell: sell.as_ref().and_then(|(_, cost)| *cost),
            assure,
            min_asr,
            order,
            limit,
        };
        let (routes, excluded) = routing::routes(&priced, &call, |i, prefix_len| {
            quality.of(&live[i].0.card.meta.id, &number[..prefix_len], at)
        });
        let routes: Vec<Value> = routes
            .iter()
            .map(|r| {
                let named = live[r.provider].0;
                json!({
                    "card": named.reference,
                    "card_id": named.card.meta.id,
                    "name": &*r.rule.name,
                    "prefix": &number[..r.prefix_len],
                    "rate": money(r.rate),
                    "connect_fee": money(r.rule.connect_fee),
                    "cost": money(r.cost),
                    "margin": r.margin.map(money),
                    "asr": r.quality.asr.map(money),
                    "acd": r.quality.acd.map(money),
                    "status": r.rule.status.as_str(),
                })
            })
            .collect();
        let excluded: Vec<Value> = excluded
            .iter()
            .map(|(i, prefix_len, why)| {
                json!({
                    "card": live[*i].0.reference,
                    "prefix": &number[..*prefix_len],
                    "reason": why.as_str(),
                })
            })
            .collect();
        json!({
            "number": number,
            "sell": sell.map(|(s, _)| s),
            "routes": routes,
            "excluded": excluded,
        })
    };
    if let [number] = numbers.as_slice() {
        return Ok(Output::Value(answer(number)));
    }
    let mut by_number = Map::new();
    for number in &numbers {
        by_number.insert(number.clone(), answer(number));
    }
    Ok(Output::Value(Value::Object(by_number)))
}

/// A provider card and how the answer names it: as the request did, else by its name.
struct Named {
    card: Arc<CardView>,
    reference: String,
}

/// The provider cards a request routes over: `providers` (ids or names, each a provider card
/// of the account), else every provider card of the account; ordered by name, which breaks
/// ties between equal routes.
fn providers(view: &View, ctx: &Ctx) -> Result<Vec<Named>, ApiError> {
    let account = &ctx.account().id;
    let refs = ctx.vars.list("providers");
    let mut out: Vec<Named> = if refs.is_empty() {
        view.cards_of(account)
            .into_iter()
            .filter(|c| c.meta.kind == CardKind::Provider)
            .map(|c| Named {
                card: c.clone(),
                reference: c.meta.name.clone(),
            })
            .collect()
    } else {
        if refs.len() > MAX_PROVIDERS {
            return Err(ApiError::invalid(
                "providers",
                format!("names more than {MAX_PROVIDERS} cards"),
            ));
        }
        let mut named = Vec::with_capacity(refs.len());
        for reference in refs {
            let card = view
                .card(account, reference)
                .ok_or_else(|| ApiError::not_found(format!("card '{reference}' not found")))?;
            if card.meta.kind != CardKind::Provider {
                return Err(ApiError::invalid(
                    "providers",
                    format!("card '{reference}' is not a provider card (kind=provider)"),
                ));
            }
            if !named.iter().any(|n: &Named| n.card.meta.id == card.meta.id) {
                named.push(Named {
                    card: card.clone(),
                    reference: reference.to_owned(),
                });
            }
        }
        named
    };
    out.sort_by(|a, b| a.card.meta.name.cmp(&b.card.meta.name));
    Ok(out)
}
