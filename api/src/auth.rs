//! Authentication and limits (API.md §1).
//!
//! Keys are random secrets; only their SHA-256 is stored, and a presented key is hashed and
//! compared with the stored hash in constant time. Limits: a token bucket per account (`rps`
//! tokens a second, burst `rps`) and a per-UTC-day request count (`daily`). The day count is
//! the cluster's: this node's own count plus what its peers last reported
//! ([`UsageBoard`]), so it can be stale by one replication tick and a round trip.

use crate::error::{ApiError, ErrorCode};
use crate::vars::Vars;
use base64::Engine;
use edgerate_model::account::Account;
use edgerate_replication::catalog::View;
use edgerate_replication::usage::UsageBoard;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

/// Lowercase hex SHA-256 of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random secret: 32 lowercase hex characters (128 bits).
pub fn new_secret() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// Constant-time comparison of a presented key with a stored hash.
pub fn key_matches(presented: &str, stored_hash: &str) -> bool {
    hash_key(presented)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// Credentials as presented: an account id (when given) and a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub account: Option<String>,
    pub key: String,
}

/// Credentials as a request presents them, not yet read: the `Authorization` header's value, or
/// else the `api_key` variable. The key cache knows the texts it verified, so a client's every
/// request is neither decoded nor hashed again.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    text: &'a str,
    source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Header,
    ApiKey,
}

impl<'a> Presented<'a> {
    /// The `Authorization` header when there is one (readable or not: an unreadable header is
    /// refused, never passed over for `api_key`), else the `api_key` variable.
    pub fn of(authorization: Option<&'a str>, vars: &'a Vars) -> Option<Self> {
        match authorization {
            Some(text) => Some(Self {
                text,
                source: Source::Header,
            }),
            None => vars.get("api_key").map(|text| Self {
                text,
                source: Source::ApiKey,
            }),
        }
    }

    /// Reads `Authorization: Basic`/`Bearer` or `api_key`. A key may also be written
    /// `account:key` in a Bearer token or in `api_key`.
    pub fn credentials(&self) -> Option<Credentials> {
        let split = |s: &str| match s.split_once(':') {
            Some((account, key)) => Credentials {
                account: Some(account.to_owned()),
                key: key.to_owned(),
            },
            None => Credentials {
                account: None,
                key: s.to_owned(),
            },
        };
        if self.source == Source::ApiKey {
            return Some(split(self.text));
        }
        let (scheme, rest) = self.text.trim().split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            return String::from_utf8(decoded).ok().map(|s| split(&s));
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(split(rest));
        }
        None
    }
}

/// The credentials a request presents, read (see [`Presented`]).
pub fn credentials(authorization: Option<&str>, vars: &Vars) -> Option<Credentials> {
    Presented::of(authorization, vars)?.credentials()
}

/// Credentials verified recently, so a client's every request does not decode and hash its key
/// again. An entry holds the account and the key hash it was verified against; it is used only
/// while the account still has that hash (a rotated or deleted key stops working at once).
#[derive(Default)]
pub struct KeyCache {
    verified: Mutex<Texts>,
}

/// Verified credentials by the text presented, one map per place they are presented in (a text
/// reads differently in each). Foldhash: SipHash showed in every request's profile.
#[derive(Default)]
struct Texts {
    header: ByText,
    api_key: ByText,
}

type ByText = HashMap<String, Arc<Verified>, foldhash::fast::RandomState>;

impl Texts {
    fn of(&mut self, source: Source) -> &mut ByText {
        match source {
            Source::Header => &mut self.header,
            Source::ApiKey => &mut self.api_key,
        }
    }
}

/// The account credentials were verified for (the account and the key hash shared, not
/// copied, at each use).
struct Verified {
    account: String,
    key_hash: String,
}

/// Entries kept at most (per place); the cache is emptied when full.
const KEY_CACHE_MAX: usize = 10_000;

/// The account the presented credentials belong to.
pub fn authenticate(
    view: &View,
    presented: Presented<'_>,
    cache: &KeyCache,
) -> Result<Arc<Account>, ApiError> {
    let cached = cache
        .verified
        .lock()
        .of(presented.source)
        .get(presented.text)
        .cloned();
    if let Some(Verified {
        account: id,
        key_hash: hash,
    }) = cached.as_deref()
    {
        if let Some(account) = view.accounts.get(id).filter(|a| a.key_hash == *hash) {
            return Ok(account.clone());
        }
    }
    let unauthorized = || ApiError::new(ErrorCode::Unauthorized, "invalid or missing credentials");
    let creds = presented.credentials().ok_or_else(unauthorized)?;
    let account = match &creds.account {
        Some(id) => view.accounts.get(id).cloned(),
        None => view.account_by_key_hash(&hash_key(&creds.key)),
    }
    .ok_or_else(unauthorized)?;
    if !key_matches(&creds.key, &account.key_hash) {
        return Err(unauthorized());
    }
    let mut verified = cache.verified.lock();
    let texts = verified.of(presented.source);
    if texts.len() >= KEY_CACHE_MAX {
        texts.clear();
    }
    texts.insert(
        presented.text.to_owned(),
        Arc::new(Verified {
            account: account.id.clone(),
            key_hash: account.key_hash.clone(),
        }),
    );
    Ok(account)
}

/// Where an account stands after a request was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
}

struct Usage {
    tokens: f64,
    refilled: Instant,
    day: i64,
    today: u64,
}

/// Per-account throughput and volume counters.
#[derive(Default)]
pub struct Limits {
    usage: Mutex<HashMap<String, Usage, foldhash::fast::RandomState>>,
    board: Arc<UsageBoard>,
}

impl Limits {
    /// The cluster's request counts this limiter adds to its own.
    pub fn board(&self) -> &Arc<UsageBoard> {
        &self.board
    }

    /// This node's request counts per account on `day`.
    pub fn counts(&self, day: i64) -> HashMap<String, u64> {
        self.usage
            .lock()
            .iter()
            .filter(|(_, u)| u.day == day)
            .map(|(account, u)| (account.clone(), u.today))
            .collect()
    }

    /// Counts one request by `account` at unix time `now` (`at` on the monotonic clock: the
    /// request's own reading, not one more): Ok with the day's quota, or a 429 (with
    /// `Retry-After`) and the quota as it stands.
    pub fn admit(
        &self,
        account: &Account,
        now: i64,
        at: Instant,
    ) -> Result<Quota, (ApiError, Quota)> {
        let day = now.div_euclid(86_400);
        let rps = f64::from(account.rps.max(1));
        let mut usage = self.usage.lock();
        if !usage.contains_key(&account.id) {
            usage.insert(
                account.id.clone(),
                Usage {
                    tokens: rps,
                    refilled: at,
                    day,
                    today: 0,
                },
            );
        }
        let u = usage.get_mut(&account.id).expect("inserted above");
        if u.day != day {
            u.day = day;
            u.today = 0;
        }
        let elapsed = at.saturating_duration_since(u.refilled).as_secs_f64();
        u.refilled = at.max(u.refilled);
        u.tokens = (u.tokens + elapsed * rps).min(rps);
        let elsewhere = self.board.elsewhere(&account.id, day);
        if u.today + elsewhere >= account.daily {
            let until_midnight = (day + 1) * 86_400 - now;
            let quota = Quota {
                limit: account.daily,
                remaining: 0,
            };
            return Err((
                too_many(
                    format!("daily limit of {} requests reached", account.daily),
                    until_midnight.max(1) as u64,
                ),
                quota,
            ));
        }
        if u.tokens < 1.0 {
            let wait = ((1.0 - u.tokens) / rps).ceil().max(1.0) as u64;
            let quota = Quota {
                limit: account.daily,
                remaining: account.daily - (u.today + elsewhere),
            };
            return Err((
                too_many(
                    format!("rate limit of {} requests per second exceeded", account.rps),
                    wait,
                ),
                quota,
            ));
        }
        u.tokens -= 1.0;
        u.today += 1;
        Ok(Quota {
            limit: account.daily,
            remaining: account.daily.saturating_sub(u.today + elsewhere),
        })
    }

    /// Forgets an account's counters (after it is deleted or its limits change).
    pub fn forget(&self, account: &str) {
        self.usage.lock().remove(account);
    }
}

fn too_many(reason: String, retry_after: u64) -> ApiError {
    let mut e = ApiError::new(ErrorCode::TooManyRequests, reason);
    e.retry_after = Some(retry_after);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(rps: u32, daily: u64) -> Account {
        Account {
            id: "a1".into(),
            name: "n".into(),
            key_hash: hash_key("s3cret"),
            rps,
            daily,
            created: 0,
        }
    }

    #[test]
    fn reads_every_credential_form() {
        let none = Vars::default();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("a1:s3cret")
        );
        let want = Some(Credentials {
            account: Some("a1".into()),
            key: "s3cret".into(),
        });
        assert_eq!(credentials(Some(&basic), &none), want);
        assert_eq!(credentials(Some("Bearer a1:s3cret"), &none), want);
        assert_eq!(
            credentials(Some("Bearer s3cret"), &none).unwrap().account,
            None
        );
        assert_eq!(
            credentials(None, &Vars::from_pairs([("api_key", "a1:s3cret")])),
            want
        );
        assert_eq!(credentials(Some("Digest x"), &none), None);
        assert_eq!(credentials(Some("Basic !!!"), &none), None);
    }

    #[test]
    fn keys_compare_by_hash() {
        assert!(key_matches("s3cret", &hash_key("s3cret")));
        assert!(!key_matches("s3cre", &hash_key("s3cret")));
    }

    #[test]
    fn throughput_and_volume_limits() {
        let limits = Limits::default();
        let a = account(2, 1000);
        assert!(limits.admit(&a, 0, Instant::now()).is_ok());
        assert!(limits.admit(&a, 0, Instant::now()).is_ok());
        let (err, _) = limits.admit(&a, 0, Instant::now()).unwrap_err();
        assert_eq!(
            (err.code, err.retry_after),
            (ErrorCode::TooManyRequests, Some(1))
        );

        let b = Account {
            id: "b".into(),
            ..account(1000, 2)
        };
        assert_eq!(
            limits
                .admit(&b, 86_400 * 3 + 10, Instant::now())
                .unwrap()
                .remaining,
            1
        );
        assert_eq!(
            limits
                .admit(&b, 86_400 * 3 + 10, Instant::now())
                .unwrap()
                .remaining,
            0
        );
        let (err, quota) = limits
            .admit(&b, 86_400 * 3 + 10, Instant::now())
            .unwrap_err();
        assert_eq!((err.retry_after, quota.remaining), (Some(86_400 - 10), 0));
        assert!(
            limits.admit(&b, 86_400 * 4, Instant::now()).is_ok(),
            "a new UTC day resets the volume"
        );
    }
}
