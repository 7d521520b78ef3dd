//! `routing/lcr` (API.md §3 "routing"): the routes for a call over the account's provider cards,
//! each priced by the same function as a query ([`model::routing`]), with the sell price and
//! margin when a customer card is named.
//!
//! [`model::routing`]: edgerate_model::routing

use crate::error::ApiError;
use crate::exact::Exact;
use crate::ratecard::{jurisdiction, provider_cards};
use crate::router::{Ctx, Output};
use edgerate_model::card::CardKind;
use edgerate_model::pricing;
use edgerate_model::routing::{self, Call, Order, Provider};
use edgerate_replication::catalog::{CardView, View};
use rust_decimal::Decimal;
use serde::Serialize;
use std::sync::Arc;

/// Routes per number when `limit` is not given, and its maximum.
const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;
/// Most provider cards one request reads.
const MAX_PROVIDERS: usize = 100;
/// Numbers per request.
pub const MAX_NUMBERS: usize = 100;
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
    let providers = providers(&view, ctx, true)?;
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
    let assure = ctx.vars.flag("assure")?.unwrap_or(sell_card.is_some());
    let min_asr = match ctx.vars.parse_opt::<Decimal>("min_asr", "a percentage")? {
        Some(a) if a.is_sign_negative() || a > Decimal::ONE_HUNDRED => {
            return Err(ApiError::invalid("min_asr", "must be 0-100 (percent)"))
        }
        other => other,
    };
    let cli = ctx.vars.number("cli")?;
    let live: Vec<(&Named<'_>, &edgerate_replication::catalog::RevisionView)> = providers
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
    let sell_pricing = sell_card.map(|card| (card, card.meta.pricing(), card.live_at(at)));
    let answers: Vec<Answer<'_>> = numbers
        .iter()
        .map(|number| {
            let number = number.as_str();
            let jurisdiction = jurisdiction(&view, number, cli.as_deref());
            let sell = sell_pricing.as_ref().and_then(|(card, pricing, rev)| {
                // Recursive: the sell card may be one of the providers, whose index is read-locked
                // above (a plain read would wait behind a queued writer for ever).
                let index = (*rev)?.index.read_recursive();
                let price =
                    pricing::price(&index, number, || jurisdiction, Some(duration), pricing)?;
                let cost = price.charge.map(|c| c.cost);
                Some((
                    Sell {
                        card: &card.meta.name,
                        prefix: &number[..price.prefix_len],
                        rate: Exact(price.rate),
                        cost: cost.map(Exact),
                    },
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
            Answer {
                number,
                sell: sell.map(|(s, _)| s),
                routes: routes
                    .iter()
                    .map(|r| {
                        let named = live[r.provider].0;
                        Route {
                            card: named.reference,
                            card_id: &named.card.meta.id,
                            name: &r.rule.name,
                            prefix: &number[..r.prefix_len],
                            rate: Exact(r.rate),
                            connect_fee: Exact(r.rule.connect_fee),
                            cost: Exact(r.cost),
                            margin: r.margin.map(Exact),
                            asr: r.quality.asr.map(Exact),
                            acd: r.quality.acd.map(Exact),
                            status: r.rule.status.as_str(),
                        }
                    })
                    .collect(),
                excluded: excluded
                    .iter()
                    .map(|(i, prefix_len, why)| Left {
                        card: live[*i].0.reference,
                        prefix: &number[..*prefix_len],
                        reason: why.as_str(),
                    })
                    .collect(),
            }
        })
        .collect();
    if let [one] = answers.as_slice() {
        return ctx.reply(one);
    }
    ctx.reply(&ByNumber(answers))
}

/// One number's routes (API.md §3 "routing").
#[derive(Serialize)]
struct Answer<'a> {
    number: &'a str,
    sell: Option<Sell<'a>>,
    routes: Vec<Route<'a>>,
    excluded: Vec<Left<'a>>,
}

#[derive(Serialize)]
struct Sell<'a> {
    card: &'a str,
    prefix: &'a str,
    rate: Exact,
    cost: Option<Exact>,
}

#[derive(Serialize)]
struct Route<'a> {
    card: &'a str,
    card_id: &'a str,
    name: &'a str,
    prefix: &'a str,
    rate: Exact,
    connect_fee: Exact,
    cost: Exact,
    margin: Option<Exact>,
    asr: Option<Exact>,
    acd: Option<Exact>,
    status: &'static str,
}

/// A provider left out, and why.
#[derive(Serialize)]
struct Left<'a> {
    card: &'a str,
    prefix: &'a str,
    reason: &'static str,
}

/// Answers keyed by number, in request order.
struct ByNumber<'a>(Vec<Answer<'a>>);

impl Serialize for ByNumber<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for answer in &self.0 {
            map.serialize_entry(answer.number, answer)?;
        }
        map.end()
    }
}

/// A provider card and how the answer names it: as the request did, else by its name.
pub(crate) struct Named<'v> {
    pub(crate) card: &'v Arc<CardView>,
    reference: &'v str,
}

/// The provider cards a request routes over: `providers` (ids or names, each a provider card
/// of the account, at most 100, each once), else (with `every`) every provider card of the
/// account; ordered by name, which breaks ties between equal routes.
pub(crate) fn providers<'v>(
    view: &'v View,
    ctx: &'v Ctx,
    every: bool,
) -> Result<Vec<Named<'v>>, ApiError> {
    let account = &ctx.account().id;
    let refs = ctx.vars.list("providers");
    let mut out: Vec<Named> = if refs.is_empty() && !every {
        Vec::new()
    } else if refs.is_empty() {
        view.cards_of(account)
            .into_iter()
            .filter(|c| c.meta.kind == CardKind::Provider)
            .map(|card| Named {
                card,
                reference: &card.meta.name,
            })
            .collect()
    } else {
        provider_cards(view, account, "providers", &refs, MAX_PROVIDERS)?
            .into_iter()
            .map(|(card, reference)| Named { card, reference })
            .collect()
    };
    out.sort_by(|a, b| a.card.meta.name.cmp(&b.card.meta.name));
    Ok(out)
}
