//! `lookup/ping` (API.md §5) and `dial/dial` (§6) through the node's SIP user agent. Every
//! probe and call is appended to the event log as a CDR with its deciding SIP code, so ASR Plus
//! and `cdr/*` see it on every node.

use crate::error::{ApiError, ErrorCode};
use crate::router::{Ctx, Output};
use edgerate_model::cdr::{Cdr, CdrInput};
use edgerate_sip::{message, Invite, Outcome, Slots, UserAgent};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Numbers per `lookup/ping` or `dial/dial` request.
const MAX_NUMBERS: usize = 100;
const MAX_EXTRA_HEADERS: usize = 4;
const PING_TIMEOUT_S: u64 = 8;
const DIAL_TIMEOUT_S: u64 = 30;
/// The trunk of a call template, resolved once per request by [`place`].
const UNSET: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
/// Variables of call treatments this node does not perform: a 501 naming them, never ignored.
const UNSUPPORTED: &[&str] = &[
    "amd",
    "ivr",
    "message",
    "play",
    "audio",
    "tts",
    "voicemail",
    "machine",
];

/// The node's SIP user agent, its default trunk and the per-account caps.
pub struct Telephony {
    pub agent: Arc<UserAgent>,
    pub trunk: Option<String>,
    pub slots: Slots,
}

/// Ping's verdict for a deciding SIP code.
fn short(code: u16) -> &'static str {
    match code {
        101..=299 => "Live",
        404 | 410 | 484 | 604 => "Dead",
        _ => "Re-Try",
    }
}

/// `lookup/ping`: one or more numbers probed in parallel.
pub fn ping(ctx: &Ctx) -> Result<Output, ApiError> {
    let numbers = ctx.vars.numbers("number")?;
    let answers = ping_numbers(ctx, &numbers)?;
    Ok(Output::Value(match answers.len() {
        1 => answers
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or_default(),
        _ => Value::Object(answers),
    }))
}

/// Ping answers by number (also the `ping` type of `lookup/smart`).
pub fn ping_numbers(ctx: &Ctx, numbers: &[String]) -> Result<Map<String, Value>, ApiError> {
    let timeout = seconds(ctx, "timeout", PING_TIMEOUT_S, 60)?;
    let probe = Invite {
        trunk: UNSET,
        number: String::new(),
        cli: None,
        name: None,
        headers: Vec::new(),
        timeout,
        probe: true,
        refer_to: None,
    };
    let outcomes = place(ctx, numbers, &probe)?;
    let mut answers = Map::new();
    for (number, outcome) in numbers.iter().zip(outcomes) {
        answers.insert(
            number.clone(),
            json!({
                "number": number,
                "Short": short(outcome.code),
                "msg": outcome.status,
                "code": outcome.code,
            }),
        );
    }
    Ok(answers)
}

/// `dial/dial`: each number called through the trunk; answered calls transferred to
/// `route_all` (REFER) when given, then hung up.
pub fn dial(ctx: &Ctx) -> Result<Output, ApiError> {
    for (name, _) in ctx.vars.with_prefix("") {
        let base = name.split('_').next().unwrap_or(name);
        if UNSUPPORTED.contains(&base) {
            return Err(ApiError::new(
                ErrorCode::NotImplemented,
                format!(
                    "'{name}': this node places calls without media, so {base} is not available"
                ),
            ));
        }
    }
    let numbers = ctx.vars.numbers("number")?;
    let cli = ctx.vars.number("cli")?;
    let name = ctx.vars.get("name").map(str::to_owned);
    if name
        .as_deref()
        .is_some_and(|n| n.len() > 64 || n.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "name",
            "at most 64 characters, no control characters",
        ));
    }
    let extra: Vec<(&str, &str)> = ctx.vars.with_prefix("header_");
    if extra.len() > MAX_EXTRA_HEADERS {
        return Err(ApiError::invalid(
            "header_*",
            format!("at most {MAX_EXTRA_HEADERS} extra headers"),
        ));
    }
    let mut headers = Vec::new();
    for (var, value) in extra {
        let header = &var["header_".len()..];
        message::check_extra_header(header, value).map_err(|e| ApiError::invalid(var, e))?;
        headers.push((header.to_owned(), value.to_owned()));
    }
    let refer_to = match ctx.vars.get("route_all") {
        None => None,
        Some(target) if valid_target(target) => Some(target.to_owned()),
        Some(_) => {
            return Err(ApiError::invalid(
                "route_all",
                "a number or a sip: URI without spaces, quotes or angle brackets",
            ))
        }
    };
    let timeout = seconds(ctx, "timeout", DIAL_TIMEOUT_S, 300)?;
    let call = Invite {
        trunk: UNSET,
        number: String::new(),
        cli,
        name,
        headers,
        timeout,
        probe: false,
        refer_to,
    };
    let outcomes = place(ctx, &numbers, &call)?;
    let calls: Vec<Value> = numbers
        .iter()
        .zip(outcomes)
        .map(|(number, o)| {
            let mut call = json!({
                "number": number,
                "callid": o.call_id,
                "status": if o.answered { "answered" } else { "failed" },
                "code": o.code,
                "reason": o.reason(),
            });
            if let Some(transferred) = o.transferred {
                call["transferred"] = json!(transferred);
            }
            call
        })
        .collect();
    Ok(Output::Value(json!({ "calls": calls })))
}

fn valid_target(target: &str) -> bool {
    !target.is_empty()
        && target.len() <= 128
        && !target
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
}

fn seconds(ctx: &Ctx, name: &str, default: u64, max: u64) -> Result<Duration, ApiError> {
    let s: u64 = ctx
        .vars
        .parse_opt(name, "whole seconds")?
        .unwrap_or(default);
    if s == 0 || s > max {
        return Err(ApiError::invalid(name, format!("1 to {max} seconds")));
    }
    Ok(Duration::from_secs(s))
}

/// Places `call` to each number (at most the account's cap at once), logs each as a CDR, and
/// returns the outcomes in order. Runs on a blocking thread, like every blocking service.
fn place(ctx: &Ctx, numbers: &[String], call: &Invite) -> Result<Vec<Outcome>, ApiError> {
    let telephony = ctx.state.telephony().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotImplemented,
            "this node runs no SIP user agent",
        )
    })?;
    if numbers.len() > MAX_NUMBERS {
        return Err(ApiError::invalid(
            "number",
            format!("at most {MAX_NUMBERS} numbers per request"),
        ));
    }
    let trunk_name = ctx
        .vars
        .get("trunk")
        .map(str::to_owned)
        .or_else(|| telephony.trunk.clone())
        .ok_or_else(|| ApiError::missing("trunk"))?;
    let runtime = tokio::runtime::Handle::current();
    let trunk = runtime
        .block_on(edgerate_sip::resolve_trunk(&trunk_name))
        .ok_or_else(|| ApiError::invalid("trunk", format!("'{trunk_name}' does not resolve")))?;
    let calls: Vec<Invite> = numbers
        .iter()
        .map(|number| Invite {
            trunk,
            number: number.clone(),
            ..call.clone()
        })
        .collect();
    let account = ctx.account().id.clone();
    let slots = telephony.slots.of(&account);
    let agent = telephony.agent.clone();
    let outcomes: Vec<Outcome> = runtime.block_on(async move {
        let tasks: Vec<_> = calls
            .into_iter()
            .map(|call| {
                let (agent, slots) = (agent.clone(), slots.clone());
                tokio::spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    agent.invite(&call).await
                })
            })
            .collect();
        let mut outcomes = Vec::with_capacity(tasks.len());
        for task in tasks {
            if let Ok(outcome) = task.await {
                outcomes.push(outcome);
            }
        }
        outcomes
    });
    let cdrs: Vec<Cdr> = outcomes
        .iter()
        .zip(numbers)
        .map(|(o, number)| Cdr {
            input: CdrInput {
                callid: o.call_id.clone(),
                dt: o.started,
                source_cli: call.cli.clone().unwrap_or_default(),
                dest_number: number.clone(),
                duration: Decimal::from_f64_retain(o.connected_secs)
                    .unwrap_or_default()
                    .round_dp(3),
                sip_code: o.code,
                sip_reason: o.reason().to_owned(),
                card: None,
            },
            rating: None,
        })
        .collect();
    ctx.state
        .log()
        .append(&account, &cdrs)
        .map_err(|e| ApiError::internal("logging calls", e))?;
    Ok(outcomes)
}
