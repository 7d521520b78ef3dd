//! Whole decks and revisions: `ratecard/import`, `export`, `revisions`, `activate`, `diff`.

use super::{
    add_revision, build, chosen_revision, find_card, future_time, revision_json, revision_live_at,
    rule_json,
};
use crate::error::{ApiError, ErrorCode};
use crate::router::{Ctx, Output};
use crate::vars::Vars;
use edgerate_model::deck::{self, Deck, DeckError, ImeCard, CSV_HEADER};
use edgerate_model::rule::Rule;
use edgerate_model::{notice, schedule};
use edgerate_replication::catalog::{CardView, RevisionView};
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

/// What `mode` of an import may be: the deck is the whole card, or changes to it.
pub const IMPORT_MODES: [&str; 2] = ["full", "delta"];

pub fn import(ctx: &Ctx) -> Result<Output, ApiError> {
    let card = find_card(&ctx.state.catalog().view(), ctx)?;
    let bytes = ctx
        .vars
        .file("file")
        .or_else(|| ctx.vars.raw_body().cloned())
        .ok_or_else(|| ApiError::missing("file"))?;
    let format = deck_format(&ctx.vars, &bytes)?;
    let live_at = revision_live_at(&ctx.vars, ctx.now)?;
    let delta = ctx.vars.choice("mode", &IMPORT_MODES)? == Some("delta");
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
    let source = format!("import:{format}");
    let catalog = ctx.state.catalog();
    let mut out = if deck.terms.is_empty() && !delta {
        let rules = deck.rules.len();
        let added = add_revision(catalog, &card, deck.rules, live_at, &source, ctx.now, true)?;
        let card = find_card(&catalog.view(), ctx)?;
        let mut out = revision_json(&card, &card.revisions[&added.first.rev], ctx.now);
        out["rules"] = rules.into();
        added.describe(&mut out);
        out
    } else {
        import_dated(ctx, &card, &deck, live_at, delta, &source)?
    };
    if live_at.is_some_and(|t| t <= ctx.now) {
        build::after_provider_change(catalog, &card.meta.id, build::ProviderChange::Card, ctx.now);
    }
    out["card"] = card.meta.id.clone().into();
    Ok(Output::Value(out))
}

/// Most change-code warnings listed in an answer (the rest are counted).
const MAX_WARNINGS: usize = 100;

/// An import whose rows carry dates or change codes, or a delta: one revision at `live_at`
/// and one scheduled at each later date of its rows ([`schedule`]), the first applied to the
/// revision live at `live_at` for a delta. Change codes that contradict what a row does to the
/// rule it replaces are listed in `warnings`.
///
/// [`schedule`]: edgerate_model::schedule
fn import_dated(
    ctx: &Ctx,
    card: &CardView,
    deck: &Deck,
    live_at: Option<i64>,
    delta: bool,
    source: &str,
) -> Result<Value, ApiError> {
    let start = live_at.unwrap_or(ctx.now);
    let dates = schedule::dates(deck, start).ok_or_else(|| {
        ApiError::bad_request(format!(
            "deck rejected, nothing applied: its dates make more than {} revisions",
            schedule::MAX_STEPS
        ))
    })?;
    if live_at.is_none() && dates.len() > 1 {
        return Err(ApiError::invalid(
            "live_at",
            "cannot be a draft for a deck whose rows carry later dates (they schedule themselves)",
        ));
    }
    let current: Vec<(String, Rule)> = card.live_at(start).map_or_else(Vec::new, |rev| {
        rev.index
            .read()
            .iter()
            .map(|(p, r)| (p, r.clone()))
            .collect()
    });
    let mut warnings = Vec::new();
    let mut contradicted = 0usize;
    for ((prefix, rule), terms) in deck.rules.iter().zip(&deck.terms) {
        let Some(change) = terms.change else { continue };
        let before = current
            .binary_search_by(|(p, _)| p.as_str().cmp(prefix))
            .ok()
            .map(|i| &current[i].1);
        if let Some(why) = schedule::contradiction(change, before, rule) {
            contradicted += 1;
            if warnings.len() < MAX_WARNINGS {
                warnings.push(format!("prefix {prefix}: {why}"));
            }
        }
    }
    let base: &[(String, Rule)] = if delta { &current } else { &[] };
    // Notice: every revision of the chain that goes live before now + `notice_days` keeps the
    // rules whose price it raises (against the revision it replaces) at their old price, and
    // the chain gains a revision at the end of the notice if that held anything back.
    let notice_at = card
        .meta
        .notice_days
        .filter(|d| *d > 0 && live_at.is_some())
        .map(|d| ctx.now + i64::from(d) * 86_400);
    let old: Option<edgerate_model::index::PrefixIndex> =
        notice_at.map(|_| current.iter().cloned().collect());
    let mut dates = dates;
    let catalog = ctx.state.catalog();
    let mut first = None;
    let mut scheduled = Vec::new();
    let mut held = 0usize;
    let mut k = 0;
    while k < dates.len() {
        let at = dates[k];
        let mut rules = schedule::rules_at(base, deck, at);
        if let (Some(n), Some(old)) = (notice_at, &old) {
            if at < n {
                if let Some((early, raised)) = notice::without_increases(old, &rules) {
                    rules = early;
                    held = held.max(raised);
                    if !dates.contains(&n) {
                        let i = dates.partition_point(|t| *t < n);
                        dates.insert(i, n);
                    }
                }
            }
        }
        let count = rules.len();
        let live = if k == 0 { live_at } else { Some(at) };
        let view = catalog.view();
        let card = view
            .cards
            .get(&card.meta.id)
            .ok_or_else(|| ApiError::not_found(format!("card '{}' was deleted", card.meta.name)))?;
        // The first revision supersedes increases an earlier import still holds back; no
        // revision is split again (the increases were held above).
        let held_source = format!("notice:{source}");
        let this_source = if Some(at) == notice_at && held > 0 {
            &held_source
        } else {
            source
        };
        let added = add_revision(catalog, card, rules, live, this_source, ctx.now, k == 0)?;
        if k == 0 {
            first = Some((added, count));
        } else {
            scheduled.push(json!({
                "revision": added.first.rev,
                "live_at": at,
                "rules": count,
            }));
        }
        k += 1;
    }
    let (added, count) = first.expect("dates start with live_at");
    let card = find_card(&catalog.view(), ctx)?;
    let mut out = revision_json(&card, &card.revisions[&added.first.rev], ctx.now);
    out["rules"] = count.into();
    added.describe(&mut out);
    if held > 0 {
        out["increases_held"] = held.into();
    }
    if !scheduled.is_empty() {
        out["scheduled"] = scheduled.into();
    }
    if delta || !warnings.is_empty() {
        out["warnings"] = warnings.into();
        if contradicted > MAX_WARNINGS {
            out["warnings_total"] = contradicted.into();
        }
    }
    Ok(out)
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
        .revision("revision")?
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
            .revision(name)?
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
