//! `lookup/asrplus` (API.md §2): has this number failed recently? Answered from the in-memory
//! ASR Plus view over the event log, never from the database. `lookup/smart` (API.md §4): ASR
//! Plus, the numbering plan and the operator's datasets, nested by number and type.

use crate::error::ApiError;
use crate::router::{Ctx, Output};
use edgerate_model::asrplus::Verdict;
use edgerate_model::cdr::reason_phrase;
use edgerate_model::dataset::DatasetKind;
use edgerate_replication::catalog::View;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// One number's ASR Plus answer.
#[derive(Serialize)]
struct AsrAnswer<'a> {
    number: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    datetime: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age_days: Option<i64>,
}

fn answer(number: &str, verdict: Verdict, now: i64) -> AsrAnswer<'_> {
    let outcome = match verdict {
        Verdict::Unknown => None,
        Verdict::Valid(o) | Verdict::Invalid(o) => Some(o),
    };
    let age = outcome.map(|o| (now - o.dt).max(0));
    crate::metrics::record_asrplus(verdict.status());
    AsrAnswer {
        number,
        status: verdict.status(),
        code: outcome.map(|o| o.code),
        reason: outcome.map(|o| reason_phrase(o.code)),
        datetime: outcome.map(|o| o.dt),
        age,
        age_days: age.map(|a| a / 86_400),
    }
}

pub fn asrplus(ctx: &Ctx) -> Result<Output, ApiError> {
    let numbers = ctx.vars.numbers("number", crate::vars::MAX_NUMBERS)?;
    let log = ctx.state.log();
    let view = log.asrplus();
    if let [number] = numbers.as_slice() {
        return ctx.reply(&answer(number, view.verdict(number, ctx.now), ctx.now));
    }
    let answers: serde_json::Map<String, serde_json::Value> = numbers
        .iter()
        .map(|n| {
            let a = serde_json::to_value(answer(n, view.verdict(n, ctx.now), ctx.now))
                .unwrap_or_default();
            (n.clone(), a)
        })
        .collect();
    ctx.reply(&answers)
}

/// The lookup types of `lookup/smart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LookupType {
    AsrPlus,
    Plan,
    Dataset(DatasetKind),
    Ping,
}

impl LookupType {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "asrplus" => Some(Self::AsrPlus),
            "plan" => Some(Self::Plan),
            "ping" => Some(Self::Ping),
            other => DatasetKind::parse(other).map(Self::Dataset),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::AsrPlus => "asrplus",
            Self::Plan => "plan",
            Self::Ping => "ping",
            Self::Dataset(kind) => kind.as_str(),
        }
    }
}

fn unknown() -> Value {
    json!({ "status": "Unknown" })
}

fn dataset_answer(view: &View, kind: DatasetKind, number: &str) -> Value {
    let Some(dataset) = view.datasets.get(&kind) else {
        return unknown();
    };
    let found = dataset.lookup(number);
    if kind == DatasetKind::Tps {
        return json!({ "listed": found.is_some() });
    }
    let Some((key, values)) = found else {
        return unknown();
    };
    let mut out = Map::new();
    if !kind.by_prefix() {
        out.insert(kind.key().into(), key.into());
    }
    for (field, value) in dataset.meta.fields.iter().zip(values.iter()) {
        out.insert(field.clone(), Value::from(&**value));
    }
    Value::Object(out)
}

fn plan_answer(number: &str) -> Value {
    let plan = edgerate_model::plan::lookup(number);
    json!({
        "valid": plan.valid,
        "country": plan.country,
        "country_code": plan.country_code,
        "type": plan.kind,
        "carrier": plan.carrier,
        "e164": plan.e164,
    })
}

/// `lookup/smart`; async, because a `ping` type waits for the trunk.
pub async fn smart(ctx: &Ctx) -> Result<Output, ApiError> {
    let numbers = ctx.vars.numbers("number", crate::vars::MAX_NUMBERS)?;
    crate::telephony::ping_timeout(ctx)?;
    let raw_types = ctx.vars.list("type");
    if raw_types.is_empty() {
        return Err(ApiError::missing("type"));
    }
    let mut types = Vec::new();
    for t in raw_types {
        let parsed = LookupType::parse(t).ok_or_else(|| {
            ApiError::invalid(
                "type",
                format!("'{t}' is not asrplus, plan, range, lrn, hlr, tps or ping"),
            )
        })?;
        if !types.contains(&parsed) {
            types.push(parsed);
        }
    }
    let mut pings = if types.contains(&LookupType::Ping) {
        crate::telephony::ping_numbers(ctx, &numbers).await?
    } else {
        Map::new()
    };
    let view = ctx.state.catalog().view();
    let log = ctx.state.log();
    let asr = log.asrplus();
    let mut by_number = Map::new();
    for number in &numbers {
        let mut by_type = Map::new();
        for t in &types {
            let answer = match t {
                LookupType::AsrPlus => {
                    serde_json::to_value(answer(number, asr.verdict(number, ctx.now), ctx.now))
                        .unwrap_or_default()
                }
                LookupType::Plan => plan_answer(number),
                LookupType::Dataset(kind) => dataset_answer(&view, *kind, number),
                LookupType::Ping => pings.remove(number).unwrap_or_default(),
            };
            by_type.insert(t.as_str().to_owned(), answer);
        }
        by_number.insert(number.clone(), Value::Object(by_type));
    }
    Ok(Output::Value(Value::Object(by_number)))
}
