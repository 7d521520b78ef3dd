//! `ratecard/*` (API.md §3), one file per part: the query and billing hot path, card
//! management, rules, decks and revisions, and builds from provider cards.

mod build;
mod cards;
mod decks;
mod query;
mod rules;
mod simulate;

pub use build::{build, REBUILDS};
pub use cards::{create, delete, get, list, update};
pub use decks::{activate, diff, export, import, revisions, IMPORT_MODES};
pub use query::{jurisdiction, query};
pub use rules::{rule_delete, rule_set, rules};
pub use simulate::simulate;

use crate::error::ApiError;
use crate::exact::Exact;
use crate::router::Ctx;
use crate::vars::Vars;
use edgerate_model::card::{revision_state, CardKind, RevisionMeta};
use edgerate_model::deck::{self};
use edgerate_model::notice;
use edgerate_model::rule::Rule;
use edgerate_replication::catalog::{CardView, Catalog, RevisionView, View};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::sync::Arc;

/// Page size of `ratecard/rules` when `limit` is not given, and its maximum.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;
/// How far in the past `live_at`/`at` may lie (clock skew between client and node), seconds.
const PAST_TOLERANCE: i64 = 60;
/// Longest card name, in bytes.
const MAX_CARD_NAME: usize = 100;
/// How the source of a revision holding increases held back for notice begins.
const NOTICE_SOURCE: &str = "notice:";
/// Longest notice a card may ask for rate increases.
const MAX_NOTICE_DAYS: u32 = 365;

/// A decimal as an exact JSON value.
pub fn money(d: Decimal) -> Value {
    Exact(d).into()
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
    match vars.revision("revision")? {
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

/// When a new revision goes live (`live_at`): now (absent or `now`), never (`draft`), or a time
/// not in the past.
fn revision_live_at(vars: &Vars, now: i64) -> Result<Option<i64>, ApiError> {
    Ok(match vars.get("live_at") {
        None | Some("now") => Some(now),
        Some("draft") => None,
        Some(_) => Some(future_time(
            "live_at",
            vars.time("live_at")?.unwrap_or(now),
            now,
        )?),
    })
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

fn card_json(catalog: &Catalog, card: &CardView, now: i64) -> Value {
    let live = card.live_at(now);
    let m = &card.meta;
    let mut out = json!({
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
        "kind": m.kind.as_str(),
        "cap": m.cap.map(money),
        "notice_days": m.notice_days,
    });
    if let Some(recipe) = &m.recipe {
        let view = catalog.view();
        out["built_from"] = build::recipe_json(&view, recipe);
        out["stale"] = build::stale(catalog, &view, m, now).into();
    }
    out
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

/// A revision written by an import or a build: the one live at the `live_at` asked for and,
/// when notice split the deck, the one holding its increases with how many rules it raises.
struct Added {
    first: RevisionMeta,
    increases: Option<(RevisionMeta, usize)>,
}

impl Added {
    /// Names the revision of the increases in an answer (`increases`).
    fn describe(&self, out: &mut Value) {
        if let Some((rev, raised)) = &self.increases {
            out["increases"] = json!({
                "revision": rev.rev,
                "live_at": rev.live_at,
                "rules": raised,
            });
        }
    }
}

/// Adds a revision of `card` holding `rules` (in prefix order), live at `live_at`. On a card
/// with `notice_days`, a deck that goes live before the notice is up and raises any price of
/// the revision it replaces is split: everything but the increases at `live_at` (each raised
/// rule kept at its old price), and the whole deck once the notice is up (its source marked
/// [`NOTICE_SOURCE`]). A deck that goes live supersedes the increases an earlier split still
/// holds back: they go back to drafts, or they would bring the older deck back. With `notice`
/// false (a revision a deck's own dates schedule) neither happens.
fn add_revision(
    catalog: &Catalog,
    card: &CardView,
    rules: Vec<(String, Rule)>,
    live_at: Option<i64>,
    source: &str,
    now: i64,
    notice: bool,
) -> Result<Added, ApiError> {
    let notice_at = card
        .meta
        .notice_days
        .filter(|d| *d > 0 && notice)
        .map(|d| now + i64::from(d) * 86_400);
    let split = match (live_at, notice_at) {
        (Some(at), Some(notice_at)) if at < notice_at => card
            .live_at(at)
            .and_then(|before| notice::without_increases(&before.index.read(), &rules))
            .map(|(early, raised)| (at, notice_at, early, raised)),
        _ => None,
    };
    let id = &card.meta.id;
    if live_at.is_some() && notice {
        let pending = card.revisions.values().filter(|r| {
            r.meta.source.starts_with(NOTICE_SOURCE) && r.meta.live_at.is_some_and(|t| t > now)
        });
        for rev in pending {
            catalog.set_live_at(id, rev.meta.rev, None, now)?;
        }
    }
    Ok(match split {
        Some((at, notice_at, early, raised)) => {
            let first = catalog.add_revision(id, early, Some(at), source, now)?;
            let held = format!("{NOTICE_SOURCE}{source}");
            let later = catalog.add_revision(id, rules, Some(notice_at), &held, now)?;
            Added {
                first,
                increases: Some((later, raised)),
            }
        }
        None => Added {
            first: catalog.add_revision(id, rules, live_at, source, now)?,
            increases: None,
        },
    })
}

/// The provider cards `refs` (ids or names) name among `account`'s cards, each once, in the
/// order given with the reference that named it; at most `max`. A card not found is a 404; a
/// card that is not a provider card, or too many, a 400 naming `variable`.
pub(crate) fn provider_cards<'v, 'r>(
    view: &'v View,
    account: &str,
    variable: &str,
    refs: &[&'r str],
    max: usize,
) -> Result<Vec<(&'v Arc<CardView>, &'r str)>, ApiError> {
    if refs.len() > max {
        return Err(ApiError::invalid(
            variable,
            format!("names more than {max} cards"),
        ));
    }
    let mut cards: Vec<(&Arc<CardView>, &str)> = Vec::with_capacity(refs.len());
    for &reference in refs {
        let card = view
            .card(account, reference)
            .ok_or_else(|| ApiError::not_found(format!("card '{reference}' not found")))?;
        if card.meta.kind != CardKind::Provider {
            return Err(ApiError::invalid(
                variable,
                format!("card '{reference}' is not a provider card (kind=provider)"),
            ));
        }
        if !cards.iter().any(|(c, _)| c.meta.id == card.meta.id) {
            cards.push((card, reference));
        }
    }
    Ok(cards)
}
