//! `ratecard/build`: a customer card's new revision from provider cards ([`model::build`]), the
//! recipe kept on the card, `stale`, and the automatic rebuild after a provider changes.
//!
//! A build reads each provider's revision live now and writes the customer card's new revision
//! like an import (so it replicates like one), then the recipe and what it read. An automatic
//! rebuild runs on the node that took the provider change, so once in the cluster: a whole new
//! revision after a provider's import, activation or settings change; after one rule edit, only
//! the prefixes it can change, edited in place in the customer's live revision.
//!
//! [`model::build`]: edgerate_model::build

use super::{add_revision, find_card, money, revision_json, revision_live_at, Added};
use crate::error::ApiError;
use crate::router::{Ctx, Output};
use crate::vars::Vars;
use edgerate_model::build::{self, ApplyTo, Mix, Profit, Provider, Recipe};
use edgerate_model::card::{BuiltFrom, CardKind, CardMeta, LastBuild};
use edgerate_model::deck;
use edgerate_model::rule::Rule;
use edgerate_replication::catalog::{CardView, Catalog, RevisionView, RuleTarget, View};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Most provider cards one recipe reads.
const MAX_PROVIDERS: usize = 20;
/// Most entries of a profit list, and prefixes per entry.
const MAX_PROFITS: usize = 1_000;

pub fn build(ctx: &Ctx) -> Result<Output, ApiError> {
    let catalog = ctx.state.catalog();
    let view = catalog.view();
    let card = find_card(&view, ctx)?;
    if card.meta.kind != CardKind::Customer {
        return Err(ApiError::invalid(
            "card",
            "is a provider card; builds make customer cards",
        ));
    }
    let recipe = match read_recipe(&ctx.vars, &view, &ctx.account().id)? {
        Some(recipe) => recipe,
        None => card.meta.recipe.clone().ok_or_else(|| {
            ApiError::invalid(
                "from",
                "is required: the card has no recipe to rebuild from",
            )
        })?,
    };
    let live_at = revision_live_at(&ctx.vars, ctx.now)?;
    let done = run(catalog, &view, &card, recipe, live_at, ctx.now)?;
    let card = find_card(&catalog.view(), ctx)?;
    let first = done.added.first.rev;
    let mut out = revision_json(&card, &card.revisions[&first], ctx.now);
    out["card"] = card.meta.id.clone().into();
    out["revision"] = first.into();
    done.added.describe(&mut out);
    out["rules"] = done.rules.into();
    out["from"] = from_json(&done.from);
    out["skipped"] = done.skipped.into();
    Ok(Output::Value(out))
}

/// A build made.
struct Done {
    added: Added,
    rules: usize,
    skipped: usize,
    from: Vec<BuiltFrom>,
}

/// Builds `card` by `recipe` into a new revision live at `live_at`, and keeps the recipe.
fn run(
    catalog: &Catalog,
    view: &View,
    card: &CardView,
    recipe: Recipe,
    live_at: Option<i64>,
    now: i64,
) -> Result<Done, ApiError> {
    let sources = providers_of(view, card, &recipe, now)?;
    let from = built_from(catalog, &sources);
    let built = with_providers(&sources, |providers| {
        build::build(providers, &recipe, &card.meta.billing())
    })
    .map_err(|e| ApiError::bad_request(format!("build refused, nothing applied: {e}")))?;
    if built.rules.is_empty() {
        return Err(ApiError::bad_request(
            "build refused, nothing applied: no provider offers any prefix",
        ));
    }
    let source = format!(
        "build:{}:{}",
        recipe.mix.as_str(),
        from.iter()
            .map(|f| format!("{}@{}", f.card, f.revision))
            .collect::<Vec<_>>()
            .join(",")
    );
    let rules = built.rules.len();
    let added = add_revision(catalog, card, built.rules, live_at, &source, now, true)?;
    let revision = added
        .increases
        .as_ref()
        .map_or(added.first.rev, |(r, _)| r.rev);
    keep(catalog, &card.meta.id, Some(recipe), &from, revision, now)?;
    Ok(Done {
        added,
        rules,
        skipped: built.skipped,
        from,
    })
}

/// Writes the recipe and what the build read onto the card (its other settings as they are
/// now).
fn keep(
    catalog: &Catalog,
    card: &str,
    recipe: Option<Recipe>,
    from: &[BuiltFrom],
    revision: u32,
    now: i64,
) -> Result<(), ApiError> {
    let view = catalog.view();
    let Some(current) = view.cards.get(card) else {
        return Ok(());
    };
    let mut meta: CardMeta = current.meta.clone();
    if let Some(recipe) = recipe {
        meta.recipe = Some(recipe);
    }
    meta.last_build = Some(LastBuild {
        at: now,
        revision,
        from: from.to_vec(),
    });
    meta.updated = now;
    catalog.update_card(meta)?;
    Ok(())
}

/// A provider card and its revision a build reads.
struct Source<'v> {
    card: &'v CardView,
    rev: &'v RevisionView,
}

/// Runs `f` over the sources as [`Provider`]s, their indexes read-locked meanwhile.
fn with_providers<T>(sources: &[Source<'_>], f: impl FnOnce(&[Provider<'_>]) -> T) -> T {
    let guards: Vec<_> = sources.iter().map(|s| s.rev.index.read()).collect();
    let providers: Vec<Provider> = sources
        .iter()
        .zip(&guards)
        .map(|(s, index)| Provider {
            index,
            cap: s.card.meta.cap,
        })
        .collect();
    f(&providers)
}

/// What the build read: each provider revision and its version (taken before the build reads
/// it, so an edit racing the build makes the card stale, never the reverse).
fn built_from(catalog: &Catalog, sources: &[Source<'_>]) -> Vec<BuiltFrom> {
    sources
        .iter()
        .map(|s| BuiltFrom {
            card: s.card.meta.id.clone(),
            revision: s.rev.meta.rev,
            version: catalog.revision_version(&s.card.meta.id, &s.rev.meta),
            cap: s.card.meta.cap,
        })
        .collect()
}

/// The recipe's provider cards with the revision of each live at `now`.
fn providers_of<'v>(
    view: &'v View,
    card: &CardView,
    recipe: &Recipe,
    now: i64,
) -> Result<Vec<Source<'v>>, ApiError> {
    recipe
        .from
        .iter()
        .map(|id| {
            let provider = view
                .cards
                .get(id)
                .filter(|p| p.meta.account == card.meta.account)
                .ok_or_else(|| {
                    ApiError::conflict(format!("provider card '{id}' no longer exists"))
                })?;
            if provider.meta.kind != CardKind::Provider {
                return Err(ApiError::conflict(format!(
                    "card '{}' is no longer a provider card",
                    provider.meta.name
                )));
            }
            let rev = provider.live_at(now).ok_or_else(|| {
                ApiError::conflict(format!(
                    "provider card '{}' has no live revision",
                    provider.meta.name
                ))
            })?;
            Ok(Source {
                card: provider,
                rev,
            })
        })
        .collect()
}

/// The rules `card`'s kept recipe would build now, with `mix` and the profit variables (as
/// `ratecard/build` takes them) in place of the kept ones when given: what
/// `ratecard/simulate` prices a rebuild with, never applied.
pub(super) fn simulated(
    vars: &Vars,
    view: &View,
    card: &CardView,
    now: i64,
) -> Result<(Recipe, Vec<(String, Rule)>), ApiError> {
    // The variables are read before the card is looked at: a bad one is refused by name.
    let mix = read_mix(vars)?;
    let profit_given = ["profit", "profit_percent", "profit_absolute", "min_margin"]
        .into_iter()
        .any(|n| vars.has(n));
    let profit = if profit_given {
        Some(read_profit(vars)?)
    } else {
        None
    };
    let mut recipe = card.meta.recipe.clone().ok_or_else(|| {
        ApiError::invalid(
            "revision",
            "is required: the card has no recipe to simulate a rebuild with",
        )
    })?;
    if let Some(mix) = mix {
        recipe.mix = mix;
    }
    if let Some(profit) = profit {
        recipe.profit = profit;
    }
    let sources = providers_of(view, card, &recipe, now)?;
    let built = with_providers(&sources, |providers| {
        build::build(providers, &recipe, &card.meta.billing())
    })
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((recipe, built.rules))
}

/// What `rebuild` of a build may be: by itself when a provider card changes, or on request.
pub const REBUILDS: [&str; 2] = ["auto", "manual"];

/// The `mix` variable, if given.
fn read_mix(vars: &Vars) -> Result<Option<Mix>, ApiError> {
    vars.get("mix")
        .map(|m| {
            Mix::parse(m).ok_or_else(|| {
                ApiError::invalid("mix", format!("'{m}' is not min, max, avg or first"))
            })
        })
        .transpose()
}

/// The recipe a build's variables give, or `None` when they give none (a rebuild). The
/// variables of a recipe other than `from` need `from`.
fn read_recipe(vars: &Vars, view: &View, account: &str) -> Result<Option<Recipe>, ApiError> {
    let refs = vars.list("from");
    if refs.is_empty() {
        if let Some(name) = [
            "mix",
            "profit",
            "profit_percent",
            "profit_absolute",
            "min_margin",
            "round",
            "rebuild",
        ]
        .into_iter()
        .find(|n| vars.has(n))
        {
            return Err(ApiError::invalid(
                name,
                "makes a new recipe, which needs 'from' (the provider cards)",
            ));
        }
        return Ok(None);
    }
    // The card built is a customer card, so it is never among them.
    let from = super::provider_cards(view, account, "from", &refs, MAX_PROVIDERS)?
        .into_iter()
        .map(|(provider, _)| provider.meta.id.clone())
        .collect();
    let mix = read_mix(vars)?.unwrap_or_default();
    let profit = read_profit(vars)?;
    let auto = vars.choice("rebuild", &REBUILDS)? == Some("auto");
    Ok(Some(Recipe {
        from,
        mix,
        profit,
        round: vars.flag("round")?.unwrap_or(true),
        auto,
    }))
}

/// The profit list: `profit` (JSON: a list of entries, or one), else one entry for every
/// prefix from `profit_percent`, `profit_absolute` and `min_margin`; not both.
fn read_profit(vars: &Vars) -> Result<Vec<Profit>, ApiError> {
    let simple = ["profit_percent", "profit_absolute", "min_margin"];
    let entries = vars.values("profit");
    if !entries.is_empty() {
        if let Some(name) = simple.into_iter().find(|n| vars.has(n)) {
            return Err(ApiError::invalid(
                name,
                "cannot be given with a 'profit' list",
            ));
        }
        let mut list = Vec::new();
        for text in entries {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                ApiError::invalid("profit", format!("is not a JSON list of entries: {e}"))
            })?;
            match value {
                Value::Array(items) => {
                    for item in items {
                        list.push(profit_entry(item)?);
                    }
                }
                item => list.push(profit_entry(item)?),
            }
            if list.len() > MAX_PROFITS {
                return Err(ApiError::invalid(
                    "profit",
                    format!("has more than {MAX_PROFITS} entries"),
                ));
            }
        }
        return Ok(list);
    }
    let money = |name: &str| -> Result<rust_decimal::Decimal, ApiError> {
        Ok(super::opt_money(vars, name)?.unwrap_or_default())
    };
    let entry = Profit {
        matches: Vec::new(),
        percent: money("profit_percent")?,
        absolute: money("profit_absolute")?,
        min_margin: money("min_margin")?,
        apply_to: ApplyTo::All,
    };
    entry
        .check()
        .map_err(|e| ApiError::invalid("profit_percent", e))?;
    Ok(if entry == Profit::default() {
        Vec::new()
    } else {
        vec![entry]
    })
}

/// One entry of a `profit` list: `{"match":"^44,^33","percent":12,"absolute":0.001,
/// "min_margin":0.002,"apply_to":"rate"}` (`match` `*` or absent: every prefix).
fn profit_entry(item: Value) -> Result<Profit, ApiError> {
    let bad = |e: String| ApiError::invalid("profit", e);
    let Value::Object(map) = item else {
        return Err(bad("entries must be JSON objects".into()));
    };
    if let Some(key) = map.keys().find(|k| {
        !matches!(
            k.as_str(),
            "match" | "percent" | "absolute" | "min_margin" | "apply_to"
        )
    }) {
        return Err(bad(format!("an entry has an unknown field '{key}'")));
    }
    let text = |key: &str| -> Option<String> {
        map.get(key).and_then(|v| match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
    };
    let money = |key: &str| -> Result<rust_decimal::Decimal, ApiError> {
        text(key)
            .map(|t| deck::parse_money(key, &t).map_err(|e| bad(e.to_string())))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let matches = match text("match") {
        None => Vec::new(),
        Some(m) => m
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty() && *p != "*")
            .map(|p| p.strip_prefix('^').unwrap_or(p).to_owned())
            .collect(),
    };
    let apply_to = match text("apply_to") {
        None => ApplyTo::All,
        Some(a) => ApplyTo::parse(&a).ok_or_else(|| {
            bad(format!(
                "apply_to '{a}' is not rate, connect_fee, rate_inter, rate_intra or all"
            ))
        })?,
    };
    let entry = Profit {
        matches,
        percent: money("percent")?,
        absolute: money("absolute")?,
        min_margin: money("min_margin")?,
        apply_to,
    };
    entry.check().map_err(bad)?;
    if entry.matches.len() > MAX_PROFITS {
        return Err(bad(format!(
            "an entry matches more than {MAX_PROFITS} prefixes"
        )));
    }
    Ok(entry)
}

fn from_json(from: &[BuiltFrom]) -> Value {
    from.iter()
        .map(|f| json!({ "card": f.card, "revision": f.revision }))
        .collect()
}

/// A recipe as `ratecard/get` shows it (`built_from`).
pub(super) fn recipe_json(view: &View, recipe: &Recipe) -> Value {
    let cards: Vec<Value> = recipe
        .from
        .iter()
        .map(|id| {
            let name = view.cards.get(id).map(|c| c.meta.name.clone());
            json!({ "card": id, "name": name })
        })
        .collect();
    let profit: Vec<Value> = recipe
        .profit
        .iter()
        .map(|p| {
            let mut entry = Map::new();
            let matches = if p.matches.is_empty() {
                "*".to_owned()
            } else {
                p.matches
                    .iter()
                    .map(|m| format!("^{m}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            entry.insert("match".into(), matches.into());
            entry.insert("percent".into(), money(p.percent));
            entry.insert("absolute".into(), money(p.absolute));
            entry.insert("min_margin".into(), money(p.min_margin));
            entry.insert(
                "apply_to".into(),
                serde_json::to_value(p.apply_to).unwrap_or_default(),
            );
            Value::Object(entry)
        })
        .collect();
    json!({
        "from": cards,
        "mix": recipe.mix.as_str(),
        "profit": profit,
        "round": recipe.round,
        "rebuild": if recipe.auto { "auto" } else { "manual" },
    })
}

/// Whether a built card's provider cards changed since its last build: a provider has another
/// live revision now, or its rules or its cap changed, or it is gone. `false` before any build.
pub(super) fn stale(catalog: &Catalog, view: &View, meta: &CardMeta, now: i64) -> bool {
    let Some(last) = &meta.last_build else {
        return false;
    };
    last.from.iter().any(|f| {
        let Some(provider) = view.cards.get(&f.card) else {
            return true;
        };
        changed(catalog, provider, f, now)
    })
}

/// Whether `provider` is not as the build that read `read` found it.
fn changed(catalog: &Catalog, provider: &CardView, read: &BuiltFrom, now: i64) -> bool {
    provider.meta.cap != read.cap
        || provider.live_at(now).is_none_or(|rev| {
            rev.meta.rev != read.revision
                || catalog.revision_version(&read.card, &rev.meta) != read.version
        })
}

/// Whether an edit of one rule of `provider_id` can be carried into `customer` prefix by
/// prefix: its live revision is the one last built, nothing else changed since (no other
/// provider, no other revision of this one), and no notice or scheduled revision would have
/// to hold part of it back. Otherwise the card is built again whole.
fn incremental(
    catalog: &Catalog,
    view: &View,
    customer: &CardView,
    provider_id: &str,
    now: i64,
) -> bool {
    let Some(last) = &customer.meta.last_build else {
        return false;
    };
    let built_live = customer
        .live_at(now)
        .is_some_and(|live| live.meta.rev == last.revision);
    let scheduled = customer
        .revisions
        .values()
        .any(|r| r.meta.live_at.is_some_and(|t| t > now));
    let notice = customer.meta.notice_days.unwrap_or(0) > 0;
    built_live
        && !scheduled
        && !notice
        && last.from.iter().all(|f| {
            view.cards.get(&f.card).is_some_and(|p| {
                if f.card == provider_id {
                    p.meta.cap == f.cap && p.live_at(now).is_some_and(|r| r.meta.rev == f.revision)
                } else {
                    !changed(catalog, p, f, now)
                }
            })
        })
}

/// What changed on a provider card.
#[derive(Debug, Clone, Copy)]
pub enum ProviderChange<'a> {
    /// One rule of its live revision.
    Rule(&'a str),
    /// Anything else: a new or activated revision, its settings.
    Card,
}

/// After a change to card `provider_id`: rebuilds every customer card whose recipe reads it
/// with `rebuild=auto`. The change itself has succeeded, so a rebuild that fails is logged, not
/// returned; the card then shows `stale`.
pub fn after_provider_change(
    catalog: &Catalog,
    provider_id: &str,
    change: ProviderChange<'_>,
    now: i64,
) {
    let view = catalog.view();
    let Some(provider) = view.cards.get(provider_id) else {
        return;
    };
    if provider.meta.kind != CardKind::Provider {
        return;
    }
    let customers: Vec<Arc<CardView>> = view
        .cards_of(&provider.meta.account)
        .into_iter()
        .filter(|c| {
            c.meta
                .recipe
                .as_ref()
                .is_some_and(|r| r.auto && r.from.iter().any(|f| f == provider_id))
        })
        .cloned()
        .collect();
    for customer in customers {
        let recipe = customer.meta.recipe.clone().expect("filtered above");
        let result = match change {
            ProviderChange::Rule(prefix)
                if incremental(catalog, &view, &customer, provider_id, now) =>
            {
                rebuild_prefixes(catalog, &view, &customer, &recipe, prefix, now)
            }
            _ => run(catalog, &view, &customer, recipe, Some(now), now).map(drop),
        };
        match result {
            Ok(()) => metrics::counter!("edgerate_card_rebuilds_total").increment(1),
            Err(e) => tracing::warn!(
                card = %customer.meta.id,
                provider = provider_id,
                error = %e.reason,
                "automatic rebuild failed; the card shows stale"
            ),
        }
    }
}

/// The incremental rebuild after one provider rule edit: every prefix the edit can change,
/// built again and written into the customer's live revision where it differs.
fn rebuild_prefixes(
    catalog: &Catalog,
    view: &View,
    customer: &CardView,
    recipe: &Recipe,
    prefix: &str,
    now: i64,
) -> Result<(), ApiError> {
    let Some(live) = customer.live_at(now) else {
        return run(catalog, view, customer, recipe.clone(), Some(now), now).map(drop);
    };
    let sources = providers_of(view, customer, recipe, now)?;
    let from = built_from(catalog, &sources);
    let billing = customer.meta.billing();
    let changes = with_providers(&sources, |providers| {
        let own = live.index.read();
        let mut prefixes = build::affected(providers, prefix);
        prefixes.extend(own.iter_prefixed(prefix).map(|(p, _)| p));
        prefixes.sort_unstable();
        prefixes.dedup();
        let mut changes: Vec<(String, Option<Rule>)> = Vec::new();
        for p in prefixes {
            let rule = build::build_rule(providers, recipe, &billing, &p)?;
            if own.get(&p) != rule.as_ref() {
                changes.push((p, rule));
            }
        }
        Ok::<_, build::BuildError>(changes)
    })
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    for (p, rule) in changes {
        let target = RuleTarget {
            card: &customer.meta.id,
            rev: live.meta.rev,
            prefix: &p,
        };
        match rule {
            Some(rule) => {
                catalog.set_rule::<ApiError>(target, now, |_| Ok(rule))?;
            }
            None => {
                catalog.delete_rule(target, now)?;
            }
        }
    }
    keep(catalog, &customer.meta.id, None, &from, live.meta.rev, now)
}
