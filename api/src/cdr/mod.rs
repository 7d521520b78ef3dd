//! `cdr/*`: CDR ingest (rated on the named card), listing, streamed export and stats (API.md §7),
//! and re-rating ([`rerate`]).

mod rerate;

pub use rerate::rerate;

use crate::error::ApiError;
use crate::router::{Ctx, Output};
use crate::vars::Vars;
use bytes::Bytes;
use edgerate_model::card::CardKind;
use edgerate_model::cdr::{parse_cdr, Cdr, CdrInput, Leg, Rating};
use edgerate_model::deck::push_csv_field;
use edgerate_model::pricing;
use edgerate_replication::catalog::{CardView, RevisionView, View};
use edgerate_replication::eventlog::{Filter, GroupBy, Order, Position, Record, Stats};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

/// Most CDRs in one `cdr/add`.
pub const MAX_BATCH: usize = 100_000;
/// Longest `cdr/list` range, seconds.
pub(crate) const MAX_RANGE: i64 = 93 * 86_400;
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
/// Rows per page read from the log while exporting, and bytes per chunk sent.
const EXPORT_PAGE: usize = 5_000;
const EXPORT_CHUNK: usize = 64 * 1024;
/// How long an export waits for a client to take the next chunk before it gives up.
const EXPORT_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub const CSV_HEADER: &str = "callid,dt,source_cli,dest_number,duration,sip_code,sip_reason,card,dest_code,dest_name,rate,billed_duration,cost";

/// Rates a CDR on its card at the time of the call: the card's live revision at `dt`, priced by
/// `model::pricing` as a query would price it. Unrated when there is no card, no match, or the
/// rule is blocked.
fn rate(view: &View, account: &str, cdr: &CdrInput) -> Option<Rating> {
    let card = view.card(account, cdr.card.as_deref()?)?;
    rate_on(view, card, card.live_at(cdr.dt)?, cdr)
}

/// Rates a CDR on revision `rev` of `card` (what ingest and `cdr/rerate` share).
fn rate_on(view: &View, card: &CardView, rev: &RevisionView, cdr: &CdrInput) -> Option<Rating> {
    let index = rev.index.read();
    let cli = Some(cdr.source_cli.as_str()).filter(|c| !c.is_empty());
    let price = pricing::price(
        &index,
        &cdr.dest_number,
        || crate::ratecard::jurisdiction(view, &cdr.dest_number, cli),
        Some(cdr.duration),
        &card.meta.pricing(),
    )?;
    let charge = price.charge?;
    Some(Rating {
        dest_code: cdr.dest_number[..price.prefix_len].to_owned(),
        dest_name: price.rule.name.to_string(),
        rate: price.rate,
        billed_duration: charge.billed_duration,
        cost: charge.cost,
    })
}

/// Where a CDR's call went, when it names a `provider`: that provider card and the prefix of
/// its rule that priced it (what route quality is kept by). A
/// `provider` that is not a provider card of the account refuses the batch.
fn leg(view: &View, account: &str, cdr: &CdrInput) -> Result<Option<Leg>, ApiError> {
    let Some(reference) = cdr.provider.as_deref() else {
        return Ok(None);
    };
    let card = view
        .card(account, reference)
        .filter(|c| c.meta.kind == CardKind::Provider)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "CDR '{}': provider '{reference}' is not a provider card of the account; nothing was stored",
                cdr.callid
            ))
        })?;
    // The revision live at the call's time; for a call older than the card's decks, the one
    // live now.
    let prefix = card
        .live_at(cdr.dt)
        .filter(|rev| !rev.index.read().is_empty())
        .or_else(|| card.live_at(edgerate_model::time::now()))
        .and_then(|rev| {
            let index = rev.index.read();
            index
                .longest_match(&cdr.dest_number)
                .map(|m| cdr.dest_number[..m.prefix_len].to_owned())
        })
        .unwrap_or_default();
    Ok(Some(Leg {
        card: card.meta.id.clone(),
        prefix,
    }))
}

/// The CDRs of a request: a JSON array or CSV body (or `file`), else one CDR as variables
/// (public for the fuzz target). A batch is parsed row by row straight into CDRs, never into an
/// intermediate tree, so its peak memory is the body plus the CDRs it stores.
pub fn read_batch(vars: &Vars, now: i64) -> Result<Vec<CdrInput>, ApiError> {
    let body = vars.file("file").or_else(|| vars.raw_body().cloned());
    let Some(body) = body else {
        return parse_cdr(|k| vars.get(k), now)
            .map(|c| vec![c])
            .map_err(ApiError::bad_request);
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        json_batch(&body, now)
    } else {
        csv_batch(&body, now)
    }
}

fn too_big() -> String {
    format!("a batch holds at most {MAX_BATCH} CDRs")
}

fn json_batch(body: &[u8], now: i64) -> Result<Vec<CdrInput>, ApiError> {
    use serde::de::Deserializer as _;
    let mut reader = serde_json::Deserializer::from_slice(body);
    let parsed = reader
        .deserialize_seq(CdrRows { now })
        .and_then(|cdrs| reader.end().map(|()| cdrs));
    parsed.map_err(|e| {
        if e.is_data() {
            // One of ours (a bad row): the reason without serde's position suffix.
            let text = e.to_string();
            let reason = text.split(" at line ").next().unwrap_or(&text).to_owned();
            ApiError::bad_request(format!("{reason}; nothing was stored"))
        } else {
            ApiError::bad_request(format!(
                "body is not valid JSON (line {}, column {}); nothing was stored",
                e.line(),
                e.column()
            ))
        }
    })
}

/// A JSON array of CDR objects, each turned into a CDR as soon as it is read.
struct CdrRows {
    now: i64,
}

impl<'de> serde::de::Visitor<'de> for CdrRows {
    type Value = Vec<CdrInput>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of CDR objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let mut cdrs = Vec::new();
        let mut row = 0usize;
        while let Some(item) = seq.next_element::<Value>()? {
            row += 1;
            if cdrs.len() == MAX_BATCH {
                return Err(A::Error::custom(too_big()));
            }
            let obj = item
                .as_object()
                .ok_or_else(|| A::Error::custom(format!("row {row}: not an object")))?;
            let mut fields: Vec<(&str, String)> = Vec::with_capacity(obj.len());
            for (k, v) in obj {
                match v {
                    Value::String(s) => fields.push((k, s.clone())),
                    Value::Number(n) => fields.push((k, n.to_string())),
                    Value::Null => {}
                    _ => {
                        return Err(A::Error::custom(format!(
                            "row {row}: '{k}' must be a string or a number"
                        )))
                    }
                }
            }
            let get = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.as_str())
            };
            let cdr = parse_cdr(get, self.now)
                .map_err(|e| A::Error::custom(format!("row {row}: {e}")))?;
            cdrs.push(cdr);
        }
        Ok(cdrs)
    }
}

fn csv_batch(body: &[u8], now: i64) -> Result<Vec<CdrInput>, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(body);
    let unreadable = |line: u64| {
        ApiError::bad_request(format!("line {line}: unreadable CSV; nothing was stored"))
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(|_| unreadable(1))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut cdrs = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(unreadable(e.position().map_or(0, |p| p.line()))),
        }
        let line = record.position().map_or(0, |p| p.line());
        if cdrs.len() == MAX_BATCH {
            return Err(ApiError::bad_request(too_big()));
        }
        if record.len() > header.len() {
            return Err(ApiError::bad_request(format!(
                "line {line}: more fields than the header names; nothing was stored"
            )));
        }
        let get = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .and_then(|i| record.get(i))
        };
        let cdr = parse_cdr(get, now)
            .map_err(|e| ApiError::bad_request(format!("line {line}: {e}; nothing was stored")))?;
        cdrs.push(cdr);
    }
    Ok(cdrs)
}

pub fn add(ctx: &Ctx) -> Result<Output, ApiError> {
    let inputs = read_batch(&ctx.vars, ctx.now)?;
    let view = ctx.state.catalog().view();
    let account = &ctx.account().id;
    let cdrs: Vec<Cdr> = inputs
        .into_iter()
        .map(|input| {
            let rating = rate(&view, account, &input);
            let leg = leg(&view, account, &input)?;
            Ok(Cdr { input, rating, leg })
        })
        .collect::<Result<_, ApiError>>()?;
    let done = ctx
        .state
        .log()
        .append(account, &cdrs)
        .map_err(|e| crate::error::from_log("cdr/add", e))?;
    metrics::counter!(crate::metrics::CDRS_INGESTED).increment(done.added as u64);
    Ok(Output::Value(
        json!({ "added": done.added, "duplicates": done.duplicates }),
    ))
}

/// `from` and `to` (both required, `to` not before `from`), at most `max_range` seconds apart.
pub(crate) fn range(ctx: &Ctx, max_range: Option<i64>) -> Result<(i64, i64), ApiError> {
    let required = |name: &str| ctx.vars.time(name)?.ok_or_else(|| ApiError::missing(name));
    let (from, to) = (required("from")?, required("to")?);
    if to < from {
        return Err(ApiError::invalid("to", "is before 'from'"));
    }
    if let Some(max) = max_range {
        if to - from > max {
            return Err(ApiError::invalid(
                "to",
                format!("the range is over {} days", max / 86_400),
            ));
        }
    }
    Ok((from, to))
}

/// The filter of `cdr/list`, `cdr/export` and `cdr/stats`.
fn filter(ctx: &Ctx, max_range: Option<i64>) -> Result<Filter, ApiError> {
    let (from, to) = range(ctx, max_range)?;
    let sip_code = ctx.vars.sip_code("sip_code")?;
    Ok(Filter {
        account: ctx.account().id.clone(),
        from,
        to,
        number: ctx.vars.number("number")?,
        cli: ctx.vars.number("cli")?,
        sip_code,
        card: ctx.vars.get("card").map(str::to_owned),
    })
}

fn cdr_json(r: &Record) -> Value {
    let c = &r.cdr.input;
    let mut out = Map::new();
    out.insert("callid".into(), c.callid.clone().into());
    out.insert("dt".into(), c.dt.into());
    out.insert("source_cli".into(), c.source_cli.clone().into());
    out.insert("dest_number".into(), c.dest_number.clone().into());
    out.insert("duration".into(), crate::ratecard::money(c.duration));
    out.insert("sip_code".into(), c.sip_code.into());
    out.insert("sip_reason".into(), c.sip_reason.clone().into());
    out.insert(
        "card".into(),
        c.card.clone().map_or(Value::Null, Value::from),
    );
    if let Some(provider) = &c.provider {
        out.insert("provider".into(), provider.clone().into());
    }
    if let Some(leg) = &r.cdr.leg {
        out.insert("provider_prefix".into(), leg.prefix.clone().into());
    }
    if let Some(rating) = &r.cdr.rating {
        out.insert("dest_code".into(), rating.dest_code.clone().into());
        out.insert("dest_name".into(), rating.dest_name.clone().into());
        out.insert("rate".into(), crate::ratecard::money(rating.rate));
        out.insert("billed_duration".into(), rating.billed_duration.into());
        out.insert("cost".into(), crate::ratecard::money(rating.cost));
    }
    Value::Object(out)
}

pub fn list(ctx: &Ctx) -> Result<Output, ApiError> {
    let filter = filter(ctx, Some(MAX_RANGE))?;
    let (limit, offset) = ctx.vars.page(DEFAULT_LIMIT, MAX_LIMIT)?;
    let order = match ctx.vars.get("order").unwrap_or("desc") {
        "asc" => Order::Asc,
        "desc" => Order::Desc,
        other => {
            return Err(ApiError::invalid(
                "order",
                format!("'{other}' is not asc or desc"),
            ))
        }
    };
    let (total, page) = ctx
        .state
        .log()
        .list(&filter, order, limit, offset)
        .map_err(|e| ApiError::internal("cdr/list", e))?;
    let cdrs: Vec<Value> = page.iter().map(cdr_json).collect();
    Ok(Output::Value(json!({ "total": total, "cdrs": cdrs })))
}

fn csv_row(out: &mut String, r: &Record) {
    use std::fmt::Write;
    let c = &r.cdr.input;
    push_csv_field(out, &c.callid);
    let _ = write!(
        out,
        ",{},{},{},{},{},",
        c.dt,
        c.source_cli,
        c.dest_number,
        c.duration.normalize(),
        c.sip_code
    );
    push_csv_field(out, &c.sip_reason);
    out.push(',');
    push_csv_field(out, c.card.as_deref().unwrap_or(""));
    match &r.cdr.rating {
        Some(rt) => {
            let _ = write!(out, ",{},", rt.dest_code);
            push_csv_field(out, &rt.dest_name);
            let _ = writeln!(
                out,
                ",{},{},{}",
                rt.rate.normalize(),
                rt.billed_duration,
                rt.cost.normalize()
            );
        }
        None => out.push_str(",,,,,\n"),
    }
}

/// Streams the matching CDRs as CSV: pages are read from the log one at a time and sent in
/// chunks as the client takes them, so nothing holds the whole result.
pub fn export(ctx: &Ctx) -> Result<Output, ApiError> {
    let filter = filter(ctx, Some(MAX_RANGE))?;
    let log = ctx.state.log_handle();
    // A client that stops reading stalls the stream; past the timeout the export stops.
    let (chunks, body) = crate::stream::channel(EXPORT_SEND_TIMEOUT);
    tokio::task::spawn_blocking(move || {
        let mut buf = String::with_capacity(EXPORT_CHUNK * 2);
        buf.push_str(CSV_HEADER);
        buf.push('\n');
        let mut after: Option<Position> = None;
        loop {
            let page = match log.page_after(&filter, after.as_ref(), EXPORT_PAGE) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "cdr export stopped");
                    return;
                }
            };
            for r in &page {
                csv_row(&mut buf, r);
                if buf.len() >= EXPORT_CHUNK && !chunks.send(Bytes::from(std::mem::take(&mut buf)))
                {
                    return;
                }
            }
            match page.last() {
                Some(last) if page.len() == EXPORT_PAGE => after = Some(last.position()),
                _ => break,
            }
        }
        chunks.send(Bytes::from(buf));
    });
    Ok(Output::Stream {
        content_type: "text/csv; charset=utf-8",
        filename: "cdrs.csv".into(),
        body,
    })
}

fn stats_json(s: &Stats) -> Map<String, Value> {
    let hundred = Decimal::from(100);
    let ratio = |num: Decimal, den: u64| {
        if den == 0 {
            Decimal::ZERO
        } else {
            (num / Decimal::from(den)).round_dp(2)
        }
    };
    let mut out = Map::new();
    out.insert("attempts".into(), s.attempts.into());
    out.insert("connected".into(), s.connected.into());
    out.insert(
        "asr".into(),
        crate::ratecard::money(ratio(Decimal::from(s.connected) * hundred, s.attempts)),
    );
    out.insert(
        "acd".into(),
        crate::ratecard::money(ratio(s.seconds, s.connected)),
    );
    out.insert(
        "minutes".into(),
        crate::ratecard::money((s.seconds / Decimal::from(60)).round_dp(2)),
    );
    out.insert("cost".into(), crate::ratecard::money(s.cost));
    out
}

pub fn stats(ctx: &Ctx) -> Result<Output, ApiError> {
    let filter = filter(ctx, None)?;
    let group_by = ctx
        .vars
        .get("group_by")
        .map(|g| {
            GroupBy::parse(g).ok_or_else(|| {
                ApiError::invalid(
                    "group_by",
                    format!("'{g}' is not prefix, card, sip_code or day"),
                )
            })
        })
        .transpose()?;
    let groups = ctx
        .state
        .log()
        .stats(&filter, group_by)
        .map_err(|e| ApiError::internal("cdr/stats", e))?;
    let (from, to) = (filter.from, filter.to);
    match group_by {
        None => {
            let total = groups.first().cloned().unwrap_or(Stats {
                key: String::new(),
                attempts: 0,
                connected: 0,
                seconds: Decimal::ZERO,
                cost: Decimal::ZERO,
            });
            let mut out = stats_json(&total);
            out.insert("from".into(), from.into());
            out.insert("to".into(), to.into());
            Ok(Output::Value(Value::Object(out)))
        }
        Some(g) => {
            let name = ctx.vars.get("group_by").unwrap_or_default().to_owned();
            let list: Vec<Value> = groups
                .iter()
                .map(|s| {
                    let mut row = Map::new();
                    row.insert(
                        name.clone(),
                        if g == GroupBy::SipCode {
                            s.key.parse::<u16>().map_or(Value::Null, Value::from)
                        } else {
                            s.key.clone().into()
                        },
                    );
                    row.extend(stats_json(s));
                    Value::Object(row)
                })
                .collect();
            Ok(Output::Value(
                json!({ "from": from, "to": to, "group_by": name, "groups": list }),
            ))
        }
    }
}
