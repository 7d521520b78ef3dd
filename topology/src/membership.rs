//! Who is in the cluster, as this node sees it: every peer it has heard of (from its seeds and
//! from the member lists peers exchange), and per peer its state, round-trip time, last sync
//! and replication lag. The transport writes it; `cluster/status`, `/` and `/metrics` read it.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A peer's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Known, being dialled.
    Connecting,
    /// Connected and authenticated.
    Up,
    /// Known, not reachable now (redialled with backoff).
    Down,
    /// Its certificate was refused (or it refused ours): nothing is exchanged.
    Refused,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Down => "down",
            Self::Refused => "refused",
        }
    }
}

/// What this node knows of one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// The node id its certificate names (for a refused peer, what its certificate claimed).
    pub id: String,
    pub region: String,
    /// Its QUIC address.
    pub addr: SocketAddr,
    pub state: PeerState,
    pub rtt_ms: Option<f64>,
    /// Unix milliseconds of the last replication message received from it.
    pub last_sync: Option<i64>,
    /// Documents not yet confirmed identical on the peer plus event-log records it lacks.
    pub lag: u64,
}

/// This node and its peers. Shared; cheap to read.
#[derive(Debug)]
pub struct Members {
    pub id: String,
    pub region: String,
    peers: RwLock<BTreeMap<String, PeerStatus>>,
}

impl Members {
    pub fn new(id: String, region: String) -> Self {
        Self {
            id,
            region,
            peers: RwLock::new(BTreeMap::new()),
        }
    }

    /// Records a peer heard of; returns whether it is new. A known peer's address and region
    /// are updated (it may have moved).
    pub fn learn(&self, id: &str, region: &str, addr: SocketAddr) -> bool {
        if id == self.id {
            return false;
        }
        let mut peers = self.peers.write();
        match peers.get_mut(id) {
            Some(p) => {
                p.addr = addr;
                region.clone_into(&mut p.region);
                false
            }
            None => {
                peers.insert(
                    id.to_owned(),
                    PeerStatus {
                        id: id.to_owned(),
                        region: region.to_owned(),
                        addr,
                        state: PeerState::Connecting,
                        rtt_ms: None,
                        last_sync: None,
                        lag: 0,
                    },
                );
                true
            }
        }
    }

    /// Records a refused peer at `addr`, named `name` as far as its certificate said.
    pub fn refused(&self, name: &str, addr: SocketAddr) {
        let mut peers = self.peers.write();
        let key = format!("refused:{name}@{addr}");
        if let Some(known) = peers.values_mut().find(|p| p.addr == addr && p.id == name) {
            known.state = PeerState::Refused;
            return;
        }
        peers.insert(
            key,
            PeerStatus {
                id: name.to_owned(),
                region: String::new(),
                addr,
                state: PeerState::Refused,
                rtt_ms: None,
                last_sync: None,
                lag: 0,
            },
        );
    }

    /// Changes peer `id`, if known.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut PeerStatus)) {
        if let Some(p) = self.peers.write().get_mut(id) {
            f(p);
        }
    }

    /// Every peer, refused ones included, by id.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers.read().values().cloned().collect()
    }

    /// Peers that can be dialled (not refused): (id, address).
    pub fn dialable(&self) -> Vec<(String, SocketAddr)> {
        self.peers
            .read()
            .values()
            .filter(|p| p.state != PeerState::Refused)
            .map(|p| (p.id.clone(), p.addr))
            .collect()
    }

    /// The state of peer `id`.
    pub fn state(&self, id: &str) -> Option<PeerState> {
        self.peers.read().get(id).map(|p| p.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_peers_once_and_never_itself() {
        let m = Members::new("a".into(), "uk".into());
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert!(!m.learn("a", "uk", addr));
        assert!(m.learn("b", "us", addr));
        assert!(!m.learn("b", "us", "127.0.0.1:7001".parse().unwrap()));
        assert_eq!(m.peers()[0].addr.port(), 7001);
        m.update("b", |p| p.state = PeerState::Up);
        assert_eq!(m.state("b"), Some(PeerState::Up));
        m.refused("mallory", addr);
        assert_eq!(m.peers().len(), 2);
        assert_eq!(m.dialable().len(), 1);
    }
}
