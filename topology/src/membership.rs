//! Who is in the cluster, as this node sees it: every peer it has heard of (from its seeds and
//! from the member lists peers exchange), and per peer its address, state, round-trip time, last
//! sync and replication lag. The transport writes it; `cluster/status`, `/` and `/metrics` read
//! it.
//!
//! Only authenticated nodes are members: a connection whose certificate is refused is counted
//! (`edgerate_peer_refused_total`) by the transport, never recorded here, so an intruder cannot
//! grow this table or show up on the operator page.
//!
//! Every member has an address peers can dial ([`is_dialable`]): an unspecified address
//! (`0.0.0.0`, `::`) or port 0 is what a socket is bound to, not where it can be reached, and
//! is never stored. An address learnt first-hand ([`AddrSource::Direct`]) is never replaced by
//! one heard from another peer ([`AddrSource::Gossip`]), which may be stale or seen from
//! elsewhere in the network.
//!
//! The members are remembered across restarts ([`Members::remember`], [`Members::recall`]), so a
//! node that restarts while its seeds are down still dials everyone else it knew.

use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Whether peers could dial `addr`: not unspecified (`0.0.0.0`, `::`), not port 0, not a
/// multicast or broadcast address. Loopback is dialable (single-host clusters and tests).
pub fn is_dialable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

/// A peer's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Known, being dialled.
    Connecting,
    /// Connected and authenticated.
    Up,
    /// Known, not reachable now (redialled with backoff).
    Down,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Where a peer's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrSource {
    /// Another peer's member list: hearsay, possibly stale or seen from another network.
    Gossip,
    /// First-hand: the address this node dialled the peer at, the one the peer advertised when
    /// it connected, or the one its connection came from (with the port it listens on).
    Direct,
}

impl AddrSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gossip => "gossip",
            Self::Direct => "direct",
        }
    }
}

/// What this node knows of one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// The node id its certificate names.
    pub id: String,
    pub region: String,
    /// Its QUIC address; always [`is_dialable`].
    pub addr: SocketAddr,
    /// How `addr` was learnt.
    pub addr_source: AddrSource,
    pub state: PeerState,
    pub rtt_ms: Option<f64>,
    /// Unix milliseconds of the last replication message received from it.
    pub last_sync: Option<i64>,
    /// Documents not yet confirmed identical on the peer plus event-log records it lacks.
    pub lag: u64,
    /// Its clock minus ours, milliseconds, as of its last hello (`None` before one).
    pub clock_skew_ms: Option<i64>,
}

/// This node and its peers. Shared; cheap to read.
#[derive(Debug)]
pub struct Members {
    pub id: String,
    pub region: String,
    peers: RwLock<BTreeMap<String, PeerStatus>>,
    /// What [`Self::remember`] last wrote.
    remembered: Mutex<String>,
}

impl Members {
    pub fn new(id: String, region: String) -> Self {
        Self {
            id,
            region,
            peers: RwLock::new(BTreeMap::new()),
            remembered: Mutex::new(String::new()),
        }
    }

    /// Writes every member (id, region, address; one per line) to `path` if that changed since
    /// the last call: the file is replaced whole (a temporary file renamed over it), so a crash
    /// leaves the old list or the new one.
    pub fn remember(&self, path: &Path) -> io::Result<()> {
        let list: String = self
            .peers
            .read()
            .values()
            .map(|p| format!("{} {} {}\n", p.id, p.region, p.addr))
            .collect();
        let mut remembered = self.remembered.lock();
        if *remembered == list {
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(list.as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        *remembered = list;
        Ok(())
    }

    /// Learns the members [`Self::remember`] wrote to `path` (as hearsay: whatever a peer says
    /// now replaces it); returns how many. A missing file is none; a line that is not a member
    /// is skipped.
    pub fn recall(&self, path: &Path) -> io::Result<usize> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut learnt = 0;
        for line in text.lines() {
            let mut fields = line.split(' ');
            let (Some(id), Some(region), Some(addr), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Ok(addr) = addr.parse() else { continue };
            if crate::valid_name(id) && crate::valid_name(region) {
                learnt += usize::from(self.learn(id, region, addr, AddrSource::Gossip));
            }
        }
        *self.remembered.lock() = text;
        Ok(learnt)
    }

    /// Records peer `id` at `addr`, learnt from `source`; returns whether the peer is new.
    ///
    /// This node itself is never recorded. An address that is not [`is_dialable`] is ignored:
    /// a known peer keeps the address it has (its region is still updated), an unknown one is
    /// not recorded until a usable address for it turns up. A known peer's address is replaced
    /// (it may have moved) unless the old one was [`AddrSource::Direct`] and the new one is only
    /// [`AddrSource::Gossip`].
    pub fn learn(&self, id: &str, region: &str, addr: SocketAddr, source: AddrSource) -> bool {
        if id == self.id {
            return false;
        }
        let usable = is_dialable(addr);
        let mut peers = self.peers.write();
        if let Some(known) = peers.get_mut(id) {
            region.clone_into(&mut known.region);
            let hearsay_over_first_hand =
                known.addr_source == AddrSource::Direct && source == AddrSource::Gossip;
            if usable && !hearsay_over_first_hand {
                known.addr = addr;
                known.addr_source = source;
            }
            return false;
        }
        if !usable {
            return false;
        }
        peers.insert(
            id.to_owned(),
            PeerStatus {
                id: id.to_owned(),
                region: region.to_owned(),
                addr,
                addr_source: source,
                state: PeerState::Connecting,
                rtt_ms: None,
                last_sync: None,
                lag: 0,
                clock_skew_ms: None,
            },
        );
        true
    }

    /// Changes peer `id`, if known. The address is not to be changed here ([`Self::learn`]
    /// keeps it dialable).
    pub fn update(&self, id: &str, f: impl FnOnce(&mut PeerStatus)) {
        if let Some(p) = self.peers.write().get_mut(id) {
            f(p);
            debug_assert!(is_dialable(p.addr), "member {id} got address {}", p.addr);
        }
    }

    /// Every peer, by id.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers.read().values().cloned().collect()
    }

    /// Every peer with the address to dial it at: (id, address).
    pub fn dialable(&self) -> Vec<(String, SocketAddr)> {
        self.peers
            .read()
            .values()
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

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn learns_peers_once_and_never_itself() {
        let m = Members::new("a".into(), "uk".into());
        let at = addr("127.0.0.1:7000");
        assert!(!m.learn("a", "uk", at, AddrSource::Direct));
        assert!(m.learn("b", "us", at, AddrSource::Gossip));
        assert!(!m.learn("b", "us", addr("127.0.0.1:7001"), AddrSource::Gossip));
        assert_eq!(m.peers()[0].addr.port(), 7001);
        m.update("b", |p| p.state = PeerState::Up);
        assert_eq!(m.state("b"), Some(PeerState::Up));
        assert_eq!(m.dialable(), vec![("b".to_owned(), addr("127.0.0.1:7001"))]);
    }

    #[test]
    fn bound_addresses_are_never_members_addresses() {
        let m = Members::new("a".into(), "uk".into());
        for bound in [
            "0.0.0.0:7080",
            "[::]:7080",
            "10.0.0.2:0",
            "255.255.255.255:7080",
        ] {
            assert!(!is_dialable(addr(bound)), "{bound}");
            assert!(
                !m.learn("b", "us", addr(bound), AddrSource::Direct),
                "{bound}"
            );
        }
        assert!(m.peers().is_empty(), "no usable address, not recorded");
        m.learn("b", "us", addr("10.0.0.2:7080"), AddrSource::Gossip);
        m.learn("b", "eu", addr("0.0.0.0:7080"), AddrSource::Gossip);
        let b = &m.peers()[0];
        assert_eq!(
            b.addr,
            addr("10.0.0.2:7080"),
            "the address already known is kept"
        );
        assert_eq!(b.region, "eu");
    }

    #[test]
    fn members_are_remembered_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members");
        let m = Members::new("a".into(), "uk".into());
        m.learn("b", "us", addr("10.0.0.2:7080"), AddrSource::Direct);
        m.learn("c", "eu", addr("[2001:db8::3]:7080"), AddrSource::Gossip);
        m.remember(&path).unwrap();
        std::fs::write(
            dir.path().join("other"),
            std::fs::read_to_string(&path).unwrap() + "junk line\nd uk 0.0.0.0:7080\n",
        )
        .unwrap();
        let again = Members::new("a".into(), "uk".into());
        assert_eq!(again.recall(&dir.path().join("other")).unwrap(), 2);
        let peers = again.peers();
        assert_eq!(peers.len(), 2, "junk and bound addresses are skipped");
        assert_eq!(peers[1].addr, addr("[2001:db8::3]:7080"));
        assert_eq!(peers[0].addr_source, AddrSource::Gossip);
        assert_eq!(again.recall(&dir.path().join("none")).unwrap(), 0);
    }

    #[test]
    fn first_hand_addresses_beat_gossip() {
        let m = Members::new("a".into(), "uk".into());
        m.learn("b", "us", addr("10.0.0.2:7080"), AddrSource::Gossip);
        m.learn("b", "us", addr("192.0.2.2:7080"), AddrSource::Direct);
        m.learn("b", "us", addr("10.0.0.2:7080"), AddrSource::Gossip);
        let b = &m.peers()[0];
        assert_eq!(b.addr, addr("192.0.2.2:7080"));
        assert_eq!(b.addr_source, AddrSource::Direct);
        // A new first-hand address replaces the old one: the peer moved.
        m.learn("b", "us", addr("192.0.2.9:7080"), AddrSource::Direct);
        assert_eq!(m.peers()[0].addr, addr("192.0.2.9:7080"));
    }
}
