//! The HTTP surface of edgerate: the axum router, request variables, authentication and limits,
//! the three answer formats and the error envelope, the OpenAPI document, and one module per
//! service family.

pub mod admin;
pub mod auth;
pub mod backup;
pub mod cdr;
pub mod cluster;
pub mod error;
pub mod exact;
pub mod format;
pub mod lookup;
pub mod metrics;
pub mod openapi;
pub mod pool;
pub mod ratecard;
pub mod router;
pub mod routing;
pub mod server;
pub mod service;
pub mod state;
pub mod stream;
pub mod system;
pub mod telephony;
pub mod vars;

pub use router::App;
pub use state::{AppState, NodeInfo};

/// A new random id: `prefix` then 11 characters of `[a-z0-9]`.
pub fn new_id(prefix: char) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes: [u8; 11] = rand::random();
    std::iter::once(prefix)
        .chain(
            bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])),
        )
        .collect()
}
