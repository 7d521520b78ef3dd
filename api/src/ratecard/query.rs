//! `ratecard/query`: the hot path, a price per number on the revision live at `at`.

use crate::error::ApiError;
use crate::exact::Exact;
use crate::router::{Ctx, Output};
use edgerate_model::dataset::DatasetKind;
use edgerate_model::pricing::{self, Blocked, Jurisdiction};
use edgerate_replication::catalog::{CardView, View};
use rust_decimal::Decimal;
use serde::Serialize;

pub fn query(ctx: &Ctx) -> Result<Output, ApiError> {
    let view = ctx.state.catalog().view();
    let reference = ctx.vars.required("card")?;
    let card = view
        .card(&ctx.account().id, reference)
        .ok_or_else(|| ApiError::not_found(format!("card '{reference}' not found")))?;
    let numbers = ctx.vars.numbers("number", crate::vars::MAX_NUMBERS)?;
    let duration = ctx
        .vars
        .parse_opt::<Decimal>("duration", "a number of seconds")?;
    if let Some(d) = duration {
        if d.is_sign_negative() && !d.is_zero() {
            return Err(ApiError::invalid("duration", "must not be negative"));
        }
        if d > Decimal::from(10_000_000) {
            return Err(ApiError::invalid("duration", "is over 10000000 seconds"));
        }
    }
    let cli = ctx.vars.number("cli")?;
    let at = ctx.vars.time("at")?.unwrap_or(ctx.now);
    let rev = card.live_at(at).ok_or_else(|| {
        ApiError::not_found(format!("card '{reference}' has no revision live at {at}"))
    })?;
    let index = rev.index.read();
    let pricing = Pricing {
        reference,
        card,
        revision: rev.meta.rev,
        index: &index,
        duration,
        view: &view,
        cli: cli.as_deref(),
    };
    if let [number] = numbers.as_slice() {
        return ctx.reply(&pricing.price(number)?);
    }
    let answers: Vec<(&str, Answer<'_>)> = numbers
        .iter()
        .map(|number| {
            let answer = pricing.price(number).map_or_else(
                |e| Answer::Error {
                    error: ErrorBody {
                        code: e.code.status(),
                        reason: e.reason,
                    },
                },
                Answer::Priced,
            );
            (number.as_str(), answer)
        })
        .collect();
    ctx.reply(&ByNumber(answers))
}

/// Where a call to `number` from `cli` runs (API.md §3, US NPA-NXX): a destination starting `1`
/// and a US `cli`, both with a state in the LRN dataset, are intrastate in the same state and
/// interstate across states; anything else is unknown (the rule's plain `rate`).
pub fn jurisdiction(view: &View, number: &str, cli: Option<&str>) -> Jurisdiction {
    let us = |n: &str| n.starts_with('1') && n.len() == 11;
    let Some(cli) = cli.filter(|c| us(c) && us(number)) else {
        return Jurisdiction::Unknown;
    };
    let Some(lrn) = view.datasets.get(&DatasetKind::Lrn) else {
        return Jurisdiction::Unknown;
    };
    let Some(state_at) = lrn.meta.fields.iter().position(|f| f == "state") else {
        return Jurisdiction::Unknown;
    };
    let state = |n: &str| {
        lrn.lookup(n)
            .and_then(|(_, values)| values.get(state_at))
            .map(|s| &**s)
            .filter(|s| !s.is_empty())
    };
    match (state(number), state(cli)) {
        (Some(to), Some(from)) if to == from => Jurisdiction::Intrastate,
        (Some(_), Some(_)) => Jurisdiction::Interstate,
        _ => Jurisdiction::Unknown,
    }
}

/// What pricing one number needs.
struct Pricing<'a> {
    reference: &'a str,
    card: &'a CardView,
    revision: u32,
    index: &'a edgerate_model::index::PrefixIndex,
    duration: Option<Decimal>,
    view: &'a View,
    cli: Option<&'a str>,
}

impl<'a> Pricing<'a> {
    fn price(&self, number: &'a str) -> Result<Priced<'a>, ApiError> {
        let index: &'a edgerate_model::index::PrefixIndex = self.index;
        let price = pricing::price(
            index,
            number,
            || jurisdiction(self.view, number, self.cli),
            self.duration,
            &self.card.meta.pricing(),
        )
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no rule of card '{}' matches {number}",
                self.reference
            ))
        })?;
        let (rule, rate, charge) = (price.rule, price.rate, price.charge);
        Ok(Priced {
            card: self.reference,
            revision: self.revision,
            number,
            prefix: &number[..price.prefix_len],
            name: &rule.name,
            rate: Exact(rate),
            connect_fee: Exact(rule.connect_fee),
            mcd: rule.mcd,
            pulse: rule.pulse,
            currency: &self.card.meta.currency,
            status: match price.blocked {
                Some(_) => "Blocked",
                None => rule.status.as_str(),
            },
            reason: (price.blocked == Some(Blocked::Capped)).then_some("capped"),
            duration: self.duration.map(Exact),
            billed_duration: charge.map(|c| c.billed_duration),
            cost: charge.map(|c| Exact(c.cost)),
        })
    }
}

/// One priced number (API.md §3, `ratecard/query`).
#[derive(Serialize)]
struct Priced<'a> {
    card: &'a str,
    revision: u32,
    number: &'a str,
    prefix: &'a str,
    name: &'a str,
    rate: Exact,
    connect_fee: Exact,
    mcd: u32,
    pulse: u32,
    currency: &'a str,
    status: &'static str,
    /// Why a rule that is not itself blocked prices no call: `capped` (over the card's cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<Exact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    billed_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<Exact>,
}

#[derive(Serialize)]
struct ErrorBody {
    code: u16,
    reason: String,
}

/// One number's answer among several: its price or its error.
#[derive(Serialize)]
#[serde(untagged)]
// Serialised as soon as made: boxing the price would allocate once per number.
#[allow(clippy::large_enum_variant)]
enum Answer<'a> {
    Priced(Priced<'a>),
    Error { error: ErrorBody },
}

/// Answers keyed by number, in request order.
struct ByNumber<'a>(Vec<(&'a str, Answer<'a>)>);

impl Serialize for ByNumber<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (number, answer) in &self.0 {
            map.serialize_entry(number, answer)?;
        }
        map.end()
    }
}
