//! Whole decks and revisions: `ratecard/import`, `export`, `revisions`, `activate`, `diff`.

use super::{
    add_revision, build, chosen_revision, find_card, future_time, revision_json, revision_live_at,
    rule_json,
};
use crate::error::{ApiError, ErrorCode};
use crate::router::{Ctx, Output};
use crate::vars::Vars;
use edgerate_model::deck::{self, DeckError, ImeCard, CSV_HEADER};
use edgerate_model::rule::Rule;
use edgerate_replication::catalog::RevisionView;
use serde_json::{json, Value};

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
    let live_at = revision_live_at(&ctx.vars, ctx.now)?;
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
    let catalog = ctx.state.catalog();
    let added = add_revision(catalog, &card, deck.rules, live_at, &source, ctx.now)?;
    if live_at.is_some_and(|t| t <= ctx.now) {
        build::after_provider_change(catalog, &card.meta.id, build::ProviderChange::Card, ctx.now);
    }
    let card = find_card(&catalog.view(), ctx)?;
    let mut out = revision_json(&card, &card.revisions[&added.first.rev], ctx.now);
    out["card"] = card.meta.id.clone().into();
    out["rules"] = rules.into();
    added.describe(&mut out);
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
    if at <= ctx.now {
        build::after_provider_change(
            ctx.state.catalog(),
            &card.meta.id,
            build::ProviderChange::Card,
            ctx.now,
        );
    }
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
