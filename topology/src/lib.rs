//! Who is in the cluster: this node's identity and region, its peers and their state, and the
//! TLS identities (cluster CA) peers authenticate each other with. Owns the `[node]`, `[peer]` and `[tls]` sections of
//! the node's config file.

pub mod certs;
pub mod membership;
pub mod tls;

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[node]`: identity and storage.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Unique in the cluster; default `local`.
    #[serde(default = "default_id")]
    pub id: String,
    /// Region the node serves; default `local`.
    #[serde(default = "default_id")]
    pub region: String,
    /// Where the node keeps its state; default `./edgerate-data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            id: default_id(),
            region: default_id(),
            data_dir: default_data_dir(),
        }
    }
}

fn default_id() -> String {
    "local".into()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./edgerate-data")
}

/// `[peer]`: the QUIC listener and the seeds to join through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// QUIC (UDP) address peers connect to.
    pub listen: SocketAddr,
    /// Peers to join the cluster through.
    #[serde(default)]
    pub seeds: Vec<String>,
}

/// `[tls]`: the cluster CA and this node's certificate and key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a topology section is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("[node] {field} must be 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'")]
    BadName { field: &'static str },
}

impl NodeSection {
    /// Checks the identity fields.
    pub fn validate(&self) -> Result<(), TopologyError> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !ok(&self.id) {
            return Err(TopologyError::BadName { field: "id" });
        }
        if !ok(&self.region) {
            return Err(TopologyError::BadName { field: "region" });
        }
        Ok(())
    }
}
