//! `lookup/ping` (API.md §5) and `dial/dial` (§6) through the node's SIP user agent. Every
//! probe and call is appended to the event log as a CDR with its deciding SIP code, so ASR Plus
//! and `cdr/*` see it on every node.
//!
//! Calls are async tasks: no thread waits for a trunk. A request takes the slots for all its
//! calls at once (per account and node-wide) or is answered 429 / 503 at once; nothing queues.

use crate::error::{ApiError, ErrorCode};
use crate::router::{Ctx, Output};
use edgerate_model::cdr::{Cdr, CdrInput};
use edgerate_sip::{message, Busy, Invite, Outcome, SipSection, Slots, UserAgent};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Numbers per `lookup/ping` or `dial/dial` request.
pub const MAX_NUMBERS: usize = 100;
/// How long a trunk's name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
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

/// The node's SIP user agent, its `[sip]` settings (default and allowed trunks) and the caps.
pub struct Telephony {
    pub agent: Arc<UserAgent>,
    pub sip: SipSection,
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
pub async fn ping(ctx: &Ctx) -> Result<Output, ApiError> {
    let numbers = ctx.vars.numbers("number", MAX_NUMBERS)?;
    let answers = ping_numbers(ctx, &numbers).await?;
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
pub async fn ping_numbers(ctx: &Ctx, numbers: &[String]) -> Result<Map<String, Value>, ApiError> {
    let timeout = ping_timeout(ctx)?;
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
    let outcomes = place(ctx, numbers, &probe).await?;
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
pub async fn dial(ctx: &Ctx) -> Result<Output, ApiError> {
    let numbers = ctx.vars.numbers("number", MAX_NUMBERS)?;
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
    let outcomes = place(ctx, &numbers, &call).await?;
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

/// The CDR of each call that was placed (a call whose task failed has no call id and no CDR).
fn call_records(numbers: &[String], outcomes: &[Outcome], cli: Option<&str>) -> Vec<Cdr> {
    outcomes
        .iter()
        .zip(numbers)
        .filter(|(o, _)| !o.call_id.is_empty())
        .map(|(o, number)| Cdr {
            input: CdrInput {
                callid: o.call_id.clone(),
                dt: o.started,
                source_cli: cli.unwrap_or_default().to_owned(),
                dest_number: number.clone(),
                duration: Decimal::from_f64_retain(o.connected_secs)
                    .unwrap_or_default()
                    .round_dp(3),
                sip_code: o.code,
                sip_reason: o.reason().to_owned(),
                card: None,
                provider: None,
            },
            rating: None,
            leg: None,
        })
        .collect()
}

/// A 501 for a variable of a call treatment this node does not perform (`amd`, `ivr`, …), checked
/// before unknown variables are refused.
pub fn unsupported(name: &str) -> Option<ApiError> {
    let base = name.split('_').next().unwrap_or(name);
    UNSUPPORTED.contains(&base).then(|| {
        ApiError::new(
            ErrorCode::NotImplemented,
            format!("'{name}': this node places calls without media, so {base} is not available"),
        )
    })
}

fn valid_target(target: &str) -> bool {
    !target.is_empty()
        && target.len() <= 128
        && !target
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
}

/// A ping's `timeout` (also read by `lookup/smart` before any lookup, ping or not).
pub fn ping_timeout(ctx: &Ctx) -> Result<Duration, ApiError> {
    seconds(ctx, "timeout", PING_TIMEOUT_S, 60)
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

/// Places `call` to each number at once, logs each as a CDR, and returns the outcomes in the
/// numbers' order (a call whose task failed answers 500 for its own number, never another's).
async fn place(ctx: &Ctx, numbers: &[String], call: &Invite) -> Result<Vec<Outcome>, ApiError> {
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
    let trunk_name = match ctx.vars.get("trunk") {
        Some(named) if telephony.sip.allows(named) => named.to_owned(),
        Some(named) => {
            return Err(ApiError::invalid(
                "trunk",
                format!("'{named}' is not one of this node's trunks ([sip] trunk and trunks)"),
            ))
        }
        None => telephony
            .sip
            .trunk
            .clone()
            .ok_or_else(|| ApiError::missing("trunk"))?,
    };
    let account = ctx.account().id.clone();
    if numbers.len() > telephony.slots.per_account() {
        return Err(ApiError::invalid(
            "number",
            format!(
                "at most {} numbers per request on this node ([sip] per_account)",
                telephony.slots.per_account()
            ),
        ));
    }
    let held = telephony
        .slots
        .take(&account, numbers.len())
        .map_err(|busy| match busy {
            Busy::Account(cap) => {
                let mut e = ApiError::new(
                    ErrorCode::TooManyRequests,
                    format!("at most {cap} pings and calls of one account at once"),
                );
                e.retry_after = Some(1);
                e
            }
            Busy::Node(_) => {
                let mut e = ApiError::new(
                    ErrorCode::Unavailable,
                    "this node has as many calls in progress as it takes",
                );
                e.retry_after = Some(1);
                e
            }
        })?;
    let trunk = tokio::time::timeout(RESOLVE_TIMEOUT, edgerate_sip::resolve_trunk(&trunk_name))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::invalid("trunk", format!("'{trunk_name}' does not resolve")))?;
    // The calls, their slots and their CDRs belong to one task of their own: a client that
    // hangs up does not free the slots of calls still in progress, nor lose their CDRs.
    let agent = telephony.agent.clone();
    let log = ctx.state.log_handle();
    let (numbers, call, started) = (numbers.to_vec(), call.clone(), ctx.now);
    let supervised = tokio::spawn(async move {
        let tasks: Vec<_> = numbers
            .iter()
            .map(|number| {
                let agent = agent.clone();
                let call = Invite {
                    trunk,
                    number: number.clone(),
                    ..call.clone()
                };
                tokio::spawn(async move { agent.invite(&call).await })
            })
            .collect();
        let mut outcomes = Vec::with_capacity(tasks.len());
        for task in tasks {
            outcomes.push(task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "a call task failed");
                Outcome {
                    call_id: String::new(),
                    code: 500,
                    status: "500 Server Internal Error".into(),
                    answered: false,
                    transferred: None,
                    started,
                    connected_secs: 0.0,
                }
            }));
        }
        drop(held);
        let cdrs = call_records(&numbers, &outcomes, call.cli.as_deref());
        let logged = tokio::task::spawn_blocking(move || log.append(&account, &cdrs)).await;
        (outcomes, logged)
    });
    let (outcomes, logged) = supervised
        .await
        .map_err(|e| ApiError::internal("placing calls", e))?;
    logged
        .map_err(|e| ApiError::internal("logging calls", e))?
        .map_err(|e| crate::error::from_log("logging calls", e))?;
    Ok(outcomes)
}
