//! Customer accounts and their limits.

use serde::{Deserialize, Serialize};

/// An account as stored (persisted: versioned by [`Account::VERSION`]). The API key itself is
/// never stored, only its SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the secret key.
    pub key_hash: String,
    /// Requests per second (token bucket rate and burst).
    pub rps: u32,
    /// Requests per UTC day.
    pub daily: u64,
    /// Unix seconds.
    pub created: i64,
}

impl Account {
    pub const VERSION: u32 = 1;
}
