//! `ratecard/*`: the query and billing hot path, card management, rules, decks and revisions
//! (API.md §3).

use crate::error::{ApiError, ErrorCode};
use crate::router::{Ctx, Output};
use crate::vars::Vars;
use edgerate_model::billing::{Rounding, MAX_PRECISION};
use edgerate_model::card::{is_currency, revision_state, CardMeta, Direction};
use edgerate_model::dataset::DatasetKind;
use edgerate_model::deck::{self, DeckError, ImeCard, CSV_HEADER};
use edgerate_model::number;
use edgerate_model::pricing::{self, Jurisdiction};
use edgerate_model::rule::{Rule, RuleStatus};
use edgerate_replication::catalog::{CardView, RevisionView, RuleTarget, View};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Number, Value};
use std::str::FromStr;
use std::sync::Arc;

/// Page size of `ratecard/rules` when `limit` is not given, and its maximum.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
/// How far in the past `live_at`/`at` may lie (clock skew between client and node), seconds.
const PAST_TOLERANCE: i64 = 60;
/// Longest card name, in bytes.
const MAX_CARD_NAME: usize = 100;

/// A decimal as an exact JSON value.
pub fn money(d: Decimal) -> Value {
    Value::Number(number_of(d))
}

fn find_card(view: &View, ctx: &Ctx) -> Result<Arc<CardView>, ApiError> {
    let reference = ctx.vars.required("card")?;
    view.card(&ctx.account().id, reference)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("card '{reference}' not found")))
}

/// The revision named by `revision`, else the one live now.
fn chosen_revision<'a>(
    card: &'a CardView,
    vars: &Vars,
    now: i64,
) -> Result<&'a RevisionView, ApiError> {
    match vars.parse_opt::<u32>("revision", "a revision number")? {
        Some(rev) => card
            .revisions
            .get(&rev)
            .ok_or_else(|| ApiError::not_found(format!("revision {rev} not found"))),
        None => card.live_at(now).ok_or_else(|| {
            ApiError::not_found(format!(
                "card '{}' has no live revision; name one with 'revision'",
                card.meta.name
            ))
        }),
    }
}

/// A time that may not lie in the past (beyond a little clock skew); clamped to `now`.
fn future_time(name: &str, at: i64, now: i64) -> Result<i64, ApiError> {
    if at < now - PAST_TOLERANCE {
        return Err(ApiError::invalid(
            name,
            "is in the past; a revision cannot go live retroactively",
        ));
    }
    Ok(at.max(now))
}

fn rule_json(prefix: &str, rule: &Rule) -> Value {
    let opt = |d: Option<Decimal>| d.map_or(Value::Null, money);
    json!({
        "prefix": prefix,
        "name": &*rule.name,
        "rate": money(rule.rate),
        "connect_fee": money(rule.connect_fee),
        "mcd": rule.mcd,
        "pulse": rule.pulse,
        "grace": rule.grace,
        "rate_inter": opt(rule.rate_inter),
        "rate_intra": opt(rule.rate_intra),
        "status": rule.status.as_str(),
    })
}

/// The fields a `rule/set` gives, checked before the catalog is touched; applied to the rule
/// in place under the catalog's write lock.
struct RulePatch {
    name: Option<Arc<str>>,
    rate: Option<Decimal>,
    connect_fee: Option<Decimal>,
    mcd: Option<u32>,
    pulse: Option<u32>,
    grace: Option<u32>,
    /// `Some(None)`: given empty, which clears it.
    rate_inter: Option<Option<Decimal>>,
    rate_intra: Option<Option<Decimal>>,
    status: Option<RuleStatus>,
}

impl RulePatch {
    fn read(vars: &Vars) -> Result<Self, ApiError> {
        let name = vars
            .get("name")
            .map(|name| {
                deck::check_name(name)
                    .map(|()| Arc::from(name))
                    .map_err(|e| ApiError::invalid("name", e))
            })
            .transpose()?;
        let pulse = opt_seconds(vars, "pulse")?;
        if pulse == Some(0) {
            return Err(ApiError::invalid("pulse", "must be at least 1"));
        }
        let cleared = |name: &str| -> Result<Option<Option<Decimal>>, ApiError> {
            if vars.has(name) {
                Ok(Some(opt_money(vars, name)?))
            } else {
                Ok(None)
            }
        };
        let status = vars
            .get("status")
            .map(|status| {
                RuleStatus::parse(status).ok_or_else(|| {
                    ApiError::invalid("status", format!("'{status}' is not Active or Blocked"))
                })
            })
            .transpose()?;
        Ok(Self {
            name,
            rate: opt_money(vars, "rate")?,
            connect_fee: opt_money(vars, "connect_fee")?,
            mcd: opt_seconds(vars, "mcd")?,
            pulse,
            grace: opt_seconds(vars, "grace")?,
            rate_inter: cleared("rate_inter")?,
            rate_intra: cleared("rate_intra")?,
            status,
        })
    }

    /// The rule after the patch: `current` with the given fields changed, or a new rule
    /// (which needs a `rate`).
    fn apply(&self, current: Option<&Rule>) -> Result<Rule, ApiError> {
        let mut rule = match current {
            Some(rule) => rule.clone(),
            None => Rule::new(
                Arc::from(""),
                self.rate.ok_or_else(|| ApiError::missing("rate"))?,
            ),
        };
        /// A field given in the patch replaces the rule's.
        fn given<T: Clone>(field: &mut T, patch: &Option<T>) {
            if let Some(value) = patch {
                *field = value.clone();
            }
        }
        given(&mut rule.name, &self.name);
        given(&mut rule.rate, &self.rate);
        given(&mut rule.connect_fee, &self.connect_fee);
        given(&mut rule.mcd, &self.mcd);
        given(&mut rule.pulse, &self.pulse);
        given(&mut rule.grace, &self.grace);
        given(&mut rule.rate_inter, &self.rate_inter);
        given(&mut rule.rate_intra, &self.rate_intra);
        given(&mut rule.status, &self.status);
        Ok(rule)
    }
}

fn card_json(card: &CardView, now: i64) -> Value {
    let live = card.live_at(now);
    let m = &card.meta;
    json!({
        "id": m.id,
        "name": m.name,
        "currency": m.currency,
        "direction": m.direction,
        "precision": m.precision,
        "rounding": m.rounding,
        "duration_rounding": m.duration_rounding,
        "tech_prefix": m.tech_prefix,
        "revision": live.map(|r| r.meta.rev),
        "rules": live.map_or(0, |r| r.index.read().len()),
        "created": m.created,
        "updated": card.updated(),
    })
}

fn revision_json(card: &CardView, rev: &RevisionView, now: i64) -> Value {
    let live_now = card.live_at(now).map(|r| r.meta.rev);
    json!({
        "rev": rev.meta.rev,
        "created": rev.meta.created,
        "live_at": rev.meta.live_at,
        "state": revision_state(&rev.meta, live_now, now).as_str(),
        "rules": rev.index.read().len(),
        "source": rev.meta.source,
    })
}

// ---- query -------------------------------------------------------------------------------

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
            &self.card.meta.billing(),
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
            rate: number_of(rate),
            connect_fee: number_of(rule.connect_fee),
            mcd: rule.mcd,
            pulse: rule.pulse,
            currency: &self.card.meta.currency,
            status: rule.status.as_str(),
            duration: self.duration.map(number_of),
            billed_duration: charge.map(|c| c.billed_duration),
            cost: charge.map(|c| number_of(c.cost)),
        })
    }
}

/// A decimal as an exact JSON number.
fn number_of(d: Decimal) -> Number {
    Number::from_str(&d.normalize().to_string()).expect("a decimal is a JSON number")
}

/// One priced number (API.md §3, `ratecard/query`).
#[derive(Serialize)]
struct Priced<'a> {
    card: &'a str,
    revision: u32,
    number: &'a str,
    prefix: &'a str,
    name: &'a str,
    rate: Number,
    connect_fee: Number,
    mcd: u32,
    pulse: u32,
    currency: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    billed_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<Number>,
}

#[derive(Serialize)]
struct ErrorBody {
    code: u16,
    reason: String,
}

/// One number's answer among several: its price or its error.
#[derive(Serialize)]
#[serde(untagged)]
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

// ---- cards -------------------------------------------------------------------------------

/// Applies the card settings present in `vars` to `meta`.
fn apply_card_fields(meta: &mut CardMeta, vars: &Vars) -> Result<(), ApiError> {
    if let Some(name) = vars.get("name") {
        if name.len() > MAX_CARD_NAME || name.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "name",
                format!("must be 1-{MAX_CARD_NAME} printable characters"),
            ));
        }
        name.clone_into(&mut meta.name);
    }
    if let Some(currency) = vars.get("currency") {
        if !is_currency(currency) {
            return Err(ApiError::invalid(
                "currency",
                format!("'{currency}' is not an ISO 4217 code (three capital letters)"),
            ));
        }
        currency.clone_into(&mut meta.currency);
    }
    if let Some(direction) = vars.get("direction") {
        let d = Direction::parse(direction).ok_or_else(|| {
            ApiError::invalid(
                "direction",
                format!("'{direction}' is not termination or origination"),
            )
        })?;
        meta.direction = d.as_str().to_owned();
    }
    if let Some(p) = vars.parse_opt::<u32>("precision", "a whole number")? {
        if p > MAX_PRECISION {
            return Err(ApiError::invalid(
                "precision",
                format!("must be 0-{MAX_PRECISION}"),
            ));
        }
        meta.precision = p;
    }
    for (name, field) in [
        ("rounding", &mut meta.rounding),
        ("duration_rounding", &mut meta.duration_rounding),
    ] {
        if let Some(value) = vars.get(name) {
            let r = Rounding::parse(value).ok_or_else(|| {
                ApiError::invalid(
                    name,
                    format!("'{value}' is not up, down, half_up or half_down"),
                )
            })?;
            *field = r.as_str().to_owned();
        }
    }
    if vars.has("tech_prefix") {
        let tp = vars.get("tech_prefix").unwrap_or("");
        if tp.len() > 16
            || !tp
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'#' || b == b'*')
        {
            return Err(ApiError::invalid(
                "tech_prefix",
                "must be up to 16 digits, '#' or '*'",
            ));
        }
        tp.clone_into(&mut meta.tech_prefix);
    }
    Ok(())
}

pub fn create(ctx: &Ctx) -> Result<Output, ApiError> {
    ctx.vars.required("name")?;
    let mut meta = CardMeta::new(
        crate::new_id('c'),
        ctx.account().id.clone(),
        String::new(),
        ctx.now,
    );
    apply_card_fields(&mut meta, &ctx.vars)?;
    let card = ctx.state.catalog().create_card(meta)?;
    Ok(Output::Value(card_json(&card, ctx.now)))
}

pub fn list(ctx: &Ctx) -> Result<Output, ApiError> {
    let view = ctx.state.catalog().view();
    let cards: Vec<Value> = view
        .cards_of(&ctx.account().id)
        .into_iter()
        .map(|c| card_json(c, ctx.now))
        .collect();
    Ok(Output::Value(json!({ "cards": cards })))
}

pub fn get(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    Ok(Output::Value(card_json(&card, ctx.now)))
}

pub fn update(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let mut meta = card.meta.clone();
    apply_card_fields(&mut meta, &ctx.vars)?;
    meta.updated = ctx.now;
    let card = ctx.state.catalog().update_card(meta)?;
    Ok(Output::Value(card_json(&card, ctx.now)))
}

pub fn delete(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    ctx.state.catalog().delete_card(&card.meta.id)?;
    Ok(Output::Value(
        json!({ "card": card.meta.id, "deleted": true }),
    ))
}

// ---- rules -------------------------------------------------------------------------------

pub fn rules(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let rev = chosen_revision(&card, &ctx.vars, ctx.now)?;
    let filter = ctx.vars.get("prefix").unwrap_or("");
    if !filter.is_empty() && !number::is_prefix(filter) {
        return Err(ApiError::invalid(
            "prefix",
            format!("'{filter}' is not digits"),
        ));
    }
    let (limit, offset) = ctx.vars.page(DEFAULT_LIMIT, MAX_LIMIT)?;
    let index = rev.index.read();
    let total = if filter.is_empty() {
        index.len()
    } else {
        index.iter_prefixed(filter).count()
    };
    let page: Vec<Value> = index
        .iter_prefixed(filter)
        .skip(offset)
        .take(limit)
        .map(|(p, r)| rule_json(&p, r))
        .collect();
    Ok(Output::Value(
        json!({ "card": card.meta.id, "revision": rev.meta.rev, "total": total, "rules": page }),
    ))
}

fn opt_money(vars: &Vars, name: &str) -> Result<Option<Decimal>, ApiError> {
    vars.get(name)
        .map(|s| deck::parse_money(name, s).map_err(|e| ApiError::invalid(name, e)))
        .transpose()
}

fn opt_seconds(vars: &Vars, name: &str) -> Result<Option<u32>, ApiError> {
    vars.get(name)
        .map(|s| deck::parse_seconds(name, s).map_err(|e| ApiError::invalid(name, e)))
        .transpose()
}

/// The card, revision and prefix a rule edit names.
fn rule_target(ctx: &Ctx) -> Result<(Arc<CardView>, RevisionView, &str), ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let rev = chosen_revision(&card, &ctx.vars, ctx.now)?.clone();
    let prefix = ctx.vars.required("prefix")?;
    if !number::is_prefix(prefix) {
        return Err(ApiError::invalid(
            "prefix",
            format!("'{prefix}' is not 1-20 digits"),
        ));
    }
    Ok((card, rev, prefix))
}

pub fn rule_set(ctx: &Ctx) -> Result<Output, ApiError> {
    let (card, rev, prefix) = rule_target(ctx)?;
    let patch = RulePatch::read(&ctx.vars)?;
    let target = RuleTarget {
        card: &card.meta.id,
        rev: rev.meta.rev,
        prefix,
    };
    let (rule, created) = ctx
        .state
        .catalog()
        .set_rule(target, ctx.now, |current| patch.apply(current))?;
    let mut out = rule_json(prefix, &rule);
    out["card"] = card.meta.id.clone().into();
    out["revision"] = rev.meta.rev.into();
    out["created"] = created.into();
    Ok(Output::Value(out))
}

pub fn rule_delete(ctx: &Ctx) -> Result<Output, ApiError> {
    let (card, rev, prefix) = rule_target(ctx)?;
    let target = RuleTarget {
        card: &card.meta.id,
        rev: rev.meta.rev,
        prefix,
    };
    ctx.state.catalog().delete_rule(target, ctx.now)?;
    Ok(Output::Value(
        json!({ "card": card.meta.id, "revision": rev.meta.rev, "prefix": prefix, "deleted": true }),
    ))
}

// ---- decks and revisions -----------------------------------------------------------------

/// The deck format: `format`, else IME when the deck is a JSON object, else CSV.
fn deck_format<'a>(vars: &'a Vars, bytes: &[u8]) -> Result<&'a str, ApiError> {
    match vars.get("format") {
        Some(f @ ("csv" | "ime")) => Ok(f),
        Some(other) => Err(ApiError::invalid(
            "format",
            format!("'{other}' is not csv or ime"),
        )),
        None if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => Ok("ime"),
        None => Ok("csv"),
    }
}

pub fn import(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let bytes = ctx
        .vars
        .file("file")
        .or_else(|| ctx.vars.raw_body().cloned())
        .ok_or_else(|| ApiError::missing("file"))?;
    let format = deck_format(&ctx.vars, &bytes)?;
    let live_at = match ctx.vars.get("live_at") {
        None | Some("now") => Some(ctx.now),
        Some("draft") => None,
        Some(_) => Some(future_time(
            "live_at",
            ctx.vars.time("live_at")?.unwrap_or(ctx.now),
            ctx.now,
        )?),
    };
    let parsed = match format {
        "ime" => deck::parse_ime(&bytes, ctx.vars.get("ime_card")),
        _ => deck::parse_csv(&bytes),
    };
    let deck = parsed.map_err(|e| match e {
        DeckError::Rows(_) => ApiError::bad_request(e.to_string()),
        DeckError::Checksum { .. } | DeckError::Malformed(_) => {
            ApiError::bad_request(format!("deck rejected, nothing applied: {e}"))
        }
    })?;
    if let Some(currency) = &deck.currency {
        if *currency != card.meta.currency {
            return Err(ApiError::bad_request(format!(
                "deck rejected, nothing applied: its currency {currency} is not the card's {}",
                card.meta.currency
            )));
        }
    }
    if deck.rules.is_empty() {
        return Err(ApiError::bad_request(
            "deck rejected, nothing applied: it has no rules",
        ));
    }
    let rules = deck.rules.len();
    let source = format!("import:{format}");
    let meta =
        ctx.state
            .catalog()
            .add_revision(&card.meta.id, deck.rules, live_at, &source, ctx.now)?;
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let mut out = revision_json(&card, &card.revisions[&meta.rev], ctx.now);
    out["card"] = card.meta.id.clone().into();
    out["rules"] = rules.into();
    Ok(Output::Value(out))
}

fn file_name(name: &str, rev: u32, ext: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-r{rev}.{ext}")
}

pub fn export(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let rev = chosen_revision(&card, &ctx.vars, ctx.now)?;
    let index = rev.index.read();
    match ctx.vars.get("format").unwrap_or("csv") {
        "csv" => {
            let mut body = String::with_capacity(64 * (index.len() + 1));
            body.push_str(CSV_HEADER);
            body.push('\n');
            for (prefix, rule) in index.iter() {
                deck::write_csv_row(&mut body, &prefix, rule);
            }
            Ok(Output::File {
                content_type: "text/csv; charset=utf-8",
                filename: file_name(&card.meta.name, rev.meta.rev, "csv"),
                body: body.into_bytes(),
            })
        }
        "ime" => {
            let m = &card.meta;
            let ime = ImeCard {
                id: &m.id,
                name: &m.name,
                direction: &m.direction,
                currency: &m.currency,
                tech_prefix: &m.tech_prefix,
                precision: m.precision,
                rounding: &m.rounding,
                revision: rev.meta.rev,
                date: rev.meta.live_at.unwrap_or(rev.meta.created),
            };
            let doc = deck::write_ime(&ime, index.iter());
            let body = serde_json::to_vec(&doc).map_err(|e| ApiError::internal("export", e))?;
            Ok(Output::File {
                content_type: "application/json",
                filename: file_name(&m.name, rev.meta.rev, "json"),
                body,
            })
        }
        other => Err(ApiError::invalid(
            "format",
            format!("'{other}' is not csv or ime"),
        )),
    }
}

pub fn revisions(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let list: Vec<Value> = card
        .revisions
        .values()
        .map(|r| revision_json(&card, r, ctx.now))
        .collect();
    Ok(Output::Value(
        json!({ "card": card.meta.id, "revisions": list }),
    ))
}

pub fn activate(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let rev: u32 = ctx
        .vars
        .parse_opt("revision", "a revision number")?
        .ok_or_else(|| ApiError::missing("revision"))?;
    if !card.revisions.contains_key(&rev) {
        return Err(ApiError::not_found(format!("revision {rev} not found")));
    }
    let at = future_time("at", ctx.vars.time("at")?.unwrap_or(ctx.now), ctx.now)?;
    ctx.state
        .catalog()
        .set_live_at(&card.meta.id, rev, Some(at), ctx.now)?;
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let mut out = revision_json(&card, &card.revisions[&rev], ctx.now);
    out["card"] = card.meta.id.clone().into();
    Ok(Output::Value(out))
}

pub fn diff(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let revision = |name: &str| -> Result<&RevisionView, ApiError> {
        let n: u32 = ctx
            .vars
            .parse_opt(name, "a revision number")?
            .ok_or_else(|| ApiError::missing(name))?;
        card.revisions
            .get(&n)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("revision {n} not found")))
    };
    let (from, to) = (revision("from")?, revision("to")?);
    let (old, new) = (from.index.read(), to.index.read());
    let d = edgerate_model::diff::diff(&old, &new);
    let rules = |list: &[(String, &Rule)]| {
        list.iter()
            .map(|(p, r)| rule_json(p, r))
            .collect::<Vec<_>>()
    };
    let changes = |list: &[(String, &Rule, &Rule)]| {
        list.iter()
            .map(|(p, a, b)| json!({ "prefix": p, "name": &*b.name, "from": rule_json(p, a), "to": rule_json(p, b) }))
            .collect::<Vec<_>>()
    };
    Ok(Output::Value(json!({
        "card": card.meta.id,
        "from": from.meta.rev,
        "to": to.meta.rev,
        "added": rules(&d.added),
        "removed": rules(&d.removed),
        "increased": changes(&d.increased),
        "decreased": changes(&d.decreased),
        "changed": changes(&d.changed),
        "unchanged": d.unchanged,
    })))
}
