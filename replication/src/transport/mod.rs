//! Replication over QUIC (quinn, TLS 1.3 with mutual authentication against the cluster CA).
//!
//! Every node listens on `[peer] listen` and keeps a connection to every member it knows (from
//! its seeds and the member lists peers exchange), so the cluster is a full mesh: a member with
//! no live connection is dialled, with backoff, whoever and however many else this node is
//! connected to. Seeds are dialled the same way until the node id answering there is known;
//! from then on that node is dialled as a member. When two nodes dial each other at once,
//! both keep the connection dialled by the smaller node id.
//!
//! A connection opens with one bidirectional exchange of [`Message::Hello`]; the name a peer
//! gives must be the one its certificate carries. A node tells its own address only when
//! `[peer] advertise` is set; otherwise its hello carries just the port it listens on, and the
//! peer records the address it observes: the one it dialled, or for a connection it accepted,
//! the source IP of that connection with the announced port (the source port may be another
//! one behind NAT). Bound addresses (`0.0.0.0`, `::`, port 0) are never told nor recorded:
//! a node listening on every interface would otherwise send peers to dial `0.0.0.0`.
//!
//! Messages up to 64 KiB travel in order on one unidirectional stream per connection (a
//! document's sync messages must not overtake each other, or a peer's view of our heads goes
//! stale); each larger one, up to [`MAX_MESSAGE`] bytes, on a stream of its own, at most
//! [`SENDS_IN_FLIGHT`] at once per peer, so a large transfer (a whole rule shard) moves beside
//! small live edits instead of in front of them. The work of one connection ([`PeerSync`]) runs
//! on its own thread, since applying documents and fsyncing blocks, and its heavy part (a whole
//! document composed, or applied to a revision still arriving) on a second one, its bulk lane
//! ([`crate::sync::Job`]), so the same holds on both ends. Every queue between these
//! parts is bounded ([`INPUT_QUEUE`], [`FRAME_QUEUE`]). If that thread panics or stops, its
//! connection is closed, so the link is redialled from scratch instead of lingering with a
//! frozen lag.
//!
//! The members are remembered in the data dir (`members`) and dialled again after a restart, so
//! a node whose seeds are down when it starts still reaches everyone else it knew.
//!
//! Membership and failure detection are the links themselves, not a SWIM layer beside them.
//! Replication needs a live connection to every member anyway, so whether a member is up is
//! whether its link is (QUIC keep-alives every second, closed after 5 s of silence), and members
//! learn of each other from the lists their links carry (when a link opens, then when the list
//! changes). foca (SWIM, as Corrosion uses it) was measured against this on 10 nodes
//! (`scripts/bench-membership.sh`, BENCHMARKS.md): it declares a killed member down no sooner
//! (5.6 s with its LAN configuration, the same as the links), sees a restarted one back no
//! sooner, and its probes (~110 bytes a second per member) would come on top of the links'
//! keep-alives, which a link needs to notice its own death. It would also be a second opinion
//! on liveness that can disagree with the link replication actually runs over (a member SWIM
//! reaches indirectly but this node cannot dial is still one it cannot sync with).
//!
//! A file named `isolate` in the data dir cuts this node off: connections are closed and no
//! new ones made or accepted until it is removed (maintenance, and partition tests).
//!
//! [`Message::Hello`]: crate::sync::Message::Hello
//! [`PeerSync`]: crate::sync::PeerSync

mod endpoint;
mod framing;
mod session;
mod worker;

use crate::sync::{MemberInfo, Replica, WireError, PROTOCOL};
use edgerate_topology::membership::Members;
use edgerate_topology::tls::PeerTls;
use edgerate_topology::TopologyError;
use endpoint::{Backoff, Target};
use parking_lot::Mutex;
use quinn::crypto::rustls::NoInitialCipherSuite;
use quinn::{Connection, ConnectionError, Endpoint};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use worker::Inbox;

pub use endpoint::start;

/// Largest message accepted from a peer.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Streams written at once to one peer.
pub const SENDS_IN_FLIGHT: usize = 32;
/// Inputs queued for one connection's sync thread: the peer's messages and local pushes.
/// A local push (a changed document, an append, a tick) that finds fewer than
/// [`PUSH_HEADROOM`] places free is dropped, and the thread runs a full anti-entropy pass at
/// its next batch instead, which covers it. The peer's messages are never dropped (an
/// Automerge sync state that lost a message stops resending); the reader waits for room, at
/// most [`STALL_TIMEOUT`].
pub const INPUT_QUEUE: usize = 1024;
/// Places in [`INPUT_QUEUE`] local pushes leave to the peer's messages, so a burst of local
/// changes (an import) does not make the reader wait.
const PUSH_HEADROOM: usize = INPUT_QUEUE / 4;
/// Encoded messages queued from one connection's sync thread to its writer. The thread (not
/// the runtime) waits while it is full; the writer ends with the connection, which ends the
/// wait.
pub const FRAME_QUEUE: usize = 256;
/// How long the reader waits for room in a full [`INPUT_QUEUE`] (the sync thread took no input
/// for that long) before taking the thread as stuck, or the two ends as blocked on each other's
/// full queues, and closing the connection; the redial starts over with fresh sync states,
/// keeping what was applied. Far above the time a batch takes, even applying large shards.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Anti-entropy, counts and member lists, and lag figures, this often.
pub const TICK: Duration = Duration::from_secs(1);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run the transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub id: String,
    pub region: String,
    pub listen: SocketAddr,
    /// The address peers are told to dial (`[peer] advertise`); `None` lets each peer use the
    /// address it observes.
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub tls: PeerTls,
    /// The isolation switch: while this file exists the node talks to no peer.
    pub isolate: PathBuf,
    /// Where the members are remembered across restarts (see [`Members::remember`]).
    pub members_file: PathBuf,
}

/// Why the transport did not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("[tls] {0}")]
    Tls(#[from] NoInitialCipherSuite),
    #[error(transparent)]
    Config(#[from] TopologyError),
    #[error("[peer] listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Why a dial or a new connection came to nothing.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("resolving seed {seed}: {source}")]
    Resolve {
        seed: String,
        source: std::io::Error,
    },
    #[error("seed {seed} resolves to no address a peer can be dialled at")]
    Unresolved { seed: String },
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] ConnectionError),
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("hello timed out")]
    HelloTimeout,
    #[error("sending the hello: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("sending the hello: {0}")]
    Finish(#[from] quinn::ClosedStream),
    #[error("reading the hello: {0}")]
    Read(#[from] quinn::ReadToEndError),
    #[error("bad hello: {0}")]
    Wire(#[from] WireError),
    #[error("expected a hello, got another message")]
    NotHello,
    #[error("the peer speaks replication protocol {0}, this node {PROTOCOL}: upgrade this node (docs/operations.md, Upgrade)")]
    Newer(u32),
    #[error("the peer presented no certificate naming a node")]
    Unnamed,
    #[error("peer says it is {said:?} but its certificate names {certified:?}")]
    Impostor { said: String, certified: String },
    #[error("dialled this node itself")]
    Myself,
    #[error("dialled node {expected:?} but {answered:?} answered")]
    WrongNode { expected: String, answered: String },
    #[error("peer {id:?} gave no address it can be dialled at")]
    NoAddress { id: String },
}

/// Why this node closes a connection; the code and reason travel to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Shutdown,
    Isolated,
    /// The peer is not who it should be (certificate, itself, another node, no address).
    Identity,
    /// Another connection to the same peer is kept.
    Duplicate,
    /// The sync thread could not start or panicked.
    Internal,
    /// The sync thread took no input for [`STALL_TIMEOUT`].
    Stalled,
    /// The sync thread ended (its writer or its inputs are gone).
    SyncEnded,
    /// A message could not be sent whole: the peer would wait for it for ever.
    Lost,
}

impl Close {
    fn code(self) -> u32 {
        match self {
            Self::Shutdown => 0,
            Self::Isolated => 1,
            Self::Identity => 2,
            Self::Duplicate => 3,
            Self::Internal => 4,
            Self::Stalled => 5,
            Self::SyncEnded => 6,
            Self::Lost => 7,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::Isolated => "isolated",
            Self::Identity => "identity",
            Self::Duplicate => "duplicate",
            Self::Internal => "internal",
            Self::Stalled => "stalled",
            Self::SyncEnded => "sync ended",
            Self::Lost => "message lost",
        }
    }

    fn on(self, conn: &Connection) {
        conn.close(self.code().into(), self.as_str().as_bytes());
    }
}

/// A running transport.
pub struct Transport {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

struct Live {
    conn: Connection,
    dialer: String,
    inbox: Inbox,
}

struct Shared {
    /// What this node says in its hellos: its id, region, and `[peer] advertise` or else an
    /// unspecified IP with the port it listens on.
    hello: MemberInfo,
    /// `[peer] advertise`: the only address of its own this node puts in member lists.
    advertise: Option<SocketAddr>,
    replica: Replica,
    members: Arc<Members>,
    tls: PeerTls,
    endpoint: Endpoint,
    isolate: PathBuf,
    members_file: PathBuf,
    seeds: Vec<String>,
    /// Which node answered at each seed (this node's own id for a seed that is itself).
    seed_ids: Mutex<HashMap<String, String>>,
    live: Mutex<HashMap<String, Live>>,
    dialing: Mutex<HashSet<Target>>,
    backoff: Mutex<HashMap<Target, Backoff>>,
}

impl Shared {
    fn me(&self) -> &str {
        &self.hello.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_distinct() {
        let all = [
            Close::Shutdown,
            Close::Isolated,
            Close::Identity,
            Close::Duplicate,
            Close::Internal,
            Close::Stalled,
            Close::SyncEnded,
            Close::Lost,
        ];
        let codes: HashSet<u32> = all.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), all.len());
    }
}
