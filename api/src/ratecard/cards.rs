//! Card management: `ratecard/create`, `list`, `get`, `update`, `delete`.

use super::{build, card_json, find_card, opt_money, MAX_CARD_NAME, MAX_NOTICE_DAYS};
use crate::error::ApiError;
use crate::router::{Ctx, Output};
use crate::vars::Vars;
use edgerate_model::billing::{Rounding, MAX_PRECISION};
use edgerate_model::card::{is_currency, CardKind, CardMeta, Direction};
use serde_json::{json, Value};

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
    if let Some(kind) = vars.get("kind") {
        meta.kind = CardKind::parse(kind).ok_or_else(|| {
            ApiError::invalid("kind", format!("'{kind}' is not customer or provider"))
        })?;
    }
    if vars.has("cap") {
        meta.cap = opt_money(vars, "cap")?;
    }
    if vars.has("notice_days") {
        meta.notice_days = vars.parse_opt::<u32>("notice_days", "a whole number of days")?;
        if meta.notice_days.is_some_and(|d| d > MAX_NOTICE_DAYS) {
            return Err(ApiError::invalid(
                "notice_days",
                format!("must be 0-{MAX_NOTICE_DAYS}"),
            ));
        }
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
    Ok(Output::Value(card_json(
        ctx.state.catalog(),
        &card,
        ctx.now,
    )))
}

pub fn list(ctx: &Ctx) -> Result<Output, ApiError> {
    let view = ctx.state.catalog().view();
    let cards: Vec<Value> = view
        .cards_of(&ctx.account().id)
        .into_iter()
        .map(|c| card_json(ctx.state.catalog(), c, ctx.now))
        .collect();
    Ok(Output::Value(json!({ "cards": cards })))
}

pub fn get(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    Ok(Output::Value(card_json(
        ctx.state.catalog(),
        &card,
        ctx.now,
    )))
}

pub fn update(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let mut meta = card.meta.clone();
    apply_card_fields(&mut meta, &ctx.vars)?;
    meta.updated = ctx.now;
    let priced_as_before = meta.kind == card.meta.kind && meta.cap == card.meta.cap;
    let card = ctx.state.catalog().update_card(meta)?;
    if !priced_as_before {
        build::after_provider_change(
            ctx.state.catalog(),
            &card.meta.id,
            build::ProviderChange::Card,
            ctx.now,
        );
    }
    Ok(Output::Value(card_json(
        ctx.state.catalog(),
        &card,
        ctx.now,
    )))
}

pub fn delete(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    ctx.state.catalog().delete_card(&card.meta.id)?;
    Ok(Output::Value(
        json!({ "card": card.meta.id, "deleted": true }),
    ))
}
