//! `admin/account/*`: accounts and their keys, with the operator key (API.md §8).

use crate::auth::{hash_key, new_secret};
use crate::error::ApiError;
use crate::router::{Ctx, Output};
use edgerate_model::account::Account;
use edgerate_model::dataset::DatasetKind;
use serde_json::{json, Value};

const DEFAULT_RPS: u32 = 100;
const DEFAULT_DAILY: u64 = 1_000_000;
const MAX_ACCOUNT_NAME: usize = 100;

fn account_json(a: &Account) -> Value {
    json!({ "account": a.id, "name": a.name, "rps": a.rps, "daily": a.daily, "created": a.created })
}

/// Applies `name`, `rps` and `daily` when given.
fn apply_fields(account: &mut Account, ctx: &Ctx) -> Result<(), ApiError> {
    if let Some(name) = ctx.vars.get("name") {
        if name.len() > MAX_ACCOUNT_NAME || name.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "name",
                format!("must be 1-{MAX_ACCOUNT_NAME} printable characters"),
            ));
        }
        name.clone_into(&mut account.name);
    }
    if let Some(rps) = ctx.vars.parse_opt::<u32>("rps", "a whole number")? {
        if rps == 0 {
            return Err(ApiError::invalid("rps", "must be at least 1"));
        }
        account.rps = rps;
    }
    if let Some(daily) = ctx.vars.parse_opt::<u64>("daily", "a whole number")? {
        if daily == 0 {
            return Err(ApiError::invalid("daily", "must be at least 1"));
        }
        account.daily = daily;
    }
    Ok(())
}

/// Creates an account; returns it with its secret key, shown this once.
pub fn create_account(ctx: &Ctx, id: String) -> Result<(Account, String), ApiError> {
    ctx.vars.required("name")?;
    let secret = new_secret();
    let mut account = Account {
        id,
        name: String::new(),
        key_hash: hash_key(&secret),
        rps: DEFAULT_RPS,
        daily: DEFAULT_DAILY,
        created: ctx.now,
    };
    apply_fields(&mut account, ctx)?;
    ctx.state.catalog().put_account(account.clone())?;
    Ok((account, secret))
}

pub fn account_create(ctx: &Ctx) -> Result<Output, ApiError> {
    let (account, secret) = create_account(ctx, crate::new_id('a'))?;
    let mut out = account_json(&account);
    out["key"] = secret.into();
    Ok(Output::Value(out))
}

pub fn account_list(ctx: &Ctx) -> Result<Output, ApiError> {
    let view = ctx.state.catalog().view();
    let mut accounts: Vec<_> = view.accounts.values().collect();
    accounts.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    let list: Vec<Value> = accounts.into_iter().map(|a| account_json(a)).collect();
    Ok(Output::Value(json!({ "accounts": list })))
}

/// Changes the given fields only, applied to the account as it stands (a key rotated at the
/// same time stays rotated). The day's usage is kept: new limits apply from the next request.
pub fn account_update(ctx: &Ctx) -> Result<Output, ApiError> {
    let id = ctx.vars.required("account")?;
    let account = ctx
        .state
        .catalog()
        .update_account(id, |account| apply_fields(account, ctx))?;
    Ok(Output::Value(account_json(&account)))
}

pub fn account_key_rotate(ctx: &Ctx) -> Result<Output, ApiError> {
    let id = ctx.vars.required("account")?;
    let secret = new_secret();
    let account = ctx
        .state
        .catalog()
        .update_account::<ApiError>(id, |account| {
            account.key_hash = hash_key(&secret);
            Ok(())
        })?;
    Ok(Output::Value(
        json!({ "account": account.id, "key": secret }),
    ))
}

pub fn account_delete(ctx: &Ctx) -> Result<Output, ApiError> {
    let id = ctx.vars.required("account")?;
    ctx.state.catalog().delete_account(id)?;
    ctx.state.limits().forget(id);
    Ok(Output::Value(json!({ "account": id, "deleted": true })))
}

pub fn dataset_import(ctx: &Ctx) -> Result<Output, ApiError> {
    let name = ctx.vars.required("name")?;
    let kind = DatasetKind::parse(name).ok_or_else(|| {
        ApiError::invalid("name", format!("'{name}' is not range, lrn, hlr or tps"))
    })?;
    let bytes = ctx
        .vars
        .file("file")
        .or_else(|| ctx.vars.raw_body().cloned())
        .ok_or_else(|| ApiError::missing("file"))?;
    let rows = edgerate_model::dataset::parse_csv(kind, &bytes)
        .map_err(|e| ApiError::bad_request(format!("dataset rejected, nothing applied: {e}")))?;
    let meta = ctx.state.catalog().import_dataset(kind, rows, ctx.now)?;
    Ok(Output::Value(json!({
        "name": meta.name,
        "rows": meta.rows,
        "fields": meta.fields,
        "generation": meta.generation,
        "imported": meta.imported,
    })))
}
