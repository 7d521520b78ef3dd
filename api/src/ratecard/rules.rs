//! One revision's rules: `ratecard/rules`, `rule/set`, `rule/delete`.

use super::{
    build, chosen_revision, find_card, opt_money, opt_seconds, rule_json, DEFAULT_LIMIT, MAX_LIMIT,
};
use crate::error::ApiError;
use crate::router::{Ctx, Output};
use crate::vars::Vars;
use edgerate_model::deck::{self};
use edgerate_model::number;
use edgerate_model::rule::{Rule, RuleStatus};
use edgerate_replication::catalog::{CardView, RevisionView, RuleTarget};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::sync::Arc;

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

/// After an edit of `prefix` in revision `rev` of `card`: a provider's live revision feeds the
/// cards built from it.
fn rule_changed(ctx: &Ctx, card: &CardView, rev: u32, prefix: &str) {
    if card
        .live_at(ctx.now)
        .is_some_and(|live| live.meta.rev == rev)
    {
        build::after_provider_change(
            ctx.state.catalog(),
            &card.meta.id,
            build::ProviderChange::Rule(prefix),
            ctx.now,
        );
    }
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
    rule_changed(ctx, &card, rev.meta.rev, prefix);
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
    rule_changed(ctx, &card, rev.meta.rev, prefix);
    Ok(Output::Value(
        json!({ "card": card.meta.id, "revision": rev.meta.rev, "prefix": prefix, "deleted": true }),
    ))
}
