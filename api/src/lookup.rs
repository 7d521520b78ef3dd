//! `lookup/asrplus` (API.md §2): has this number failed recently? Answered from the in-memory
//! ASR Plus view over the event log, never from the database.

use crate::error::ApiError;
use crate::router::{Ctx, Output};
use edgerate_model::asrplus::Verdict;
use edgerate_model::cdr::reason_phrase;
use serde::Serialize;

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
    let raw = ctx.vars.list("number");
    if raw.is_empty() {
        return Err(ApiError::missing("number"));
    }
    let numbers = raw
        .iter()
        .map(|n| edgerate_model::number::normalise(n).map_err(|e| ApiError::invalid("number", e)))
        .collect::<Result<Vec<_>, _>>()?;
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
