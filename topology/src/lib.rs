//! Who is in the cluster: this node's identity and region, its peers and their state, and the
//! TLS identities (cluster CA) peers authenticate each other with. Owns the `[node]`, `[peer]`
//! and `[tls]` sections of the node's config file.

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

/// `[peer]`: the QUIC listener, the address peers reach it at, and the seeds to join through.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// QUIC (UDP) address to bind; `0.0.0.0` or `::` listens on every interface.
    pub listen: SocketAddr,
    /// Optional: the address peers dial to reach this node, told to every peer. Default: none
    /// told; each peer uses the address it observes this node at (the one it dialled, or the
    /// source address of this node's connection with the port of `listen`). Set it when that is
    /// not reachable by the rest of the cluster (NAT, port forwarding, several interfaces).
    /// Never unspecified (`0.0.0.0`, `::`) nor port 0.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Peers to join the cluster through (`host:port`). Dialled until they answer and their
    /// node id is known; everyone else is learnt from the member lists peers exchange.
    #[serde(default)]
    pub seeds: Vec<String>,
}

impl PeerSection {
    /// Checks `advertise` is an address peers can dial.
    pub fn validate(&self) -> Result<(), TopologyError> {
        match self.advertise {
            Some(addr) if !membership::is_dialable(addr) => {
                Err(TopologyError::BadAdvertise { addr })
            }
            _ => Ok(()),
        }
    }
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
    #[error("[peer] advertise {addr}: peers cannot dial an unspecified address or port 0")]
    BadAdvertise { addr: SocketAddr },
}

/// Whether `s` can be a node id or a region: 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.'.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl NodeSection {
    /// Checks the identity fields.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if !valid_name(&self.id) {
            return Err(TopologyError::BadName { field: "id" });
        }
        if !valid_name(&self.region) {
            return Err(TopologyError::BadName { field: "region" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_must_be_dialable() {
        let peer = |advertise: Option<&str>| PeerSection {
            listen: "0.0.0.0:7080".parse().unwrap(),
            advertise: advertise.map(|a| a.parse().unwrap()),
            seeds: Vec::new(),
        };
        assert_eq!(peer(None).validate(), Ok(()));
        assert_eq!(peer(Some("198.51.100.4:7080")).validate(), Ok(()));
        for bad in ["0.0.0.0:7080", "[::]:7080", "198.51.100.4:0"] {
            assert!(
                matches!(
                    peer(Some(bad)).validate(),
                    Err(TopologyError::BadAdvertise { .. })
                ),
                "{bad}"
            );
        }
    }
}
