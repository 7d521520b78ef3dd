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
//! on its own thread, since applying documents and fsyncing blocks. Every queue between these
//! parts is bounded ([`INPUT_QUEUE`], [`FRAME_QUEUE`]). If that thread panics or stops, its
//! connection is closed, so the link is redialled from scratch instead of lingering with a
//! frozen lag.
//!
//! A file named `isolate` in the data dir cuts this node off: connections are closed and no
//! new ones made or accepted until it is removed (maintenance, and partition tests).

use crate::sync::{MemberInfo, Message, PeerSync, Replica, WireError};
use edgerate_topology::membership::{is_dialable, AddrSource, Members, PeerState};
use edgerate_topology::tls::PeerTls;
use edgerate_topology::TopologyError;
use parking_lot::Mutex;
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{Connection, ConnectionError, Endpoint};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::{watch, Semaphore};

/// Largest message accepted from a peer.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Messages up to this size travel on the connection's one ordered stream.
const ORDERED_MAX: usize = 64 * 1024;
/// The first byte of a stream: the ordered stream of small messages, or one large message.
const ORDERED: u8 = 0;
const SINGLE: u8 = 1;
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
/// Dial attempts and the isolation switch are checked this often.
const DIAL_EVERY: Duration = Duration::from_millis(250);
/// Redials of one target after failures wait from this, doubling up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest hello accepted.
const MAX_HELLO: usize = 64 * 1024;

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

/// What a connection's thread is told.
enum Input {
    Message(Message),
    Dirty(String),
    LocalAppend,
    Tick,
}

/// The sending side of one sync thread's [`INPUT_QUEUE`].
#[derive(Clone)]
struct Inbox {
    queue: mpsc::Sender<Input>,
    /// Set when a local push was dropped for want of room: the thread then runs a full tick.
    overflowed: Arc<AtomicBool>,
}

impl Inbox {
    /// Queues a local push without waiting (it may come from any thread, the runtime's too),
    /// or drops it and flags the thread to run a full pass when the queue is nearly full.
    fn push(&self, input: Input) {
        let room = self.queue.capacity() > PUSH_HEADROOM;
        if !room || matches!(self.queue.try_send(input), Err(TrySendError::Full(_))) {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }
}

/// Something to dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    /// A member, by node id.
    Member(String),
    /// A seed as configured (`host:port`), while the node answering there is unknown.
    Seed(String),
}

/// How a connection came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// This node dialled the peer at this address (known good: it answered there).
    Outbound(SocketAddr),
    /// The peer dialled this node.
    Inbound,
}

struct Backoff {
    next: Instant,
    wait: Duration,
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

/// Binds the QUIC endpoint and starts replicating with peers until `stop`.
pub fn start(
    config: TransportConfig,
    replica: Replica,
    members: Arc<Members>,
    stop: watch::Receiver<bool>,
) -> Result<Transport, TransportError> {
    if let Some(addr) = config.advertise.filter(|a| !is_dialable(*a)) {
        return Err(TopologyError::BadAdvertise { addr }.into());
    }
    let server = QuicServerConfig::try_from(config.tls.server.clone())?;
    let client = QuicClientConfig::try_from(config.tls.client.clone())?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .max_idle_timeout(Some(
            Duration::from_secs(5)
                .try_into()
                .expect("small timeout fits"),
        ))
        .max_concurrent_uni_streams(1024u32.into());
    let transport = Arc::new(transport);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport);
    let mut endpoint =
        Endpoint::server(server, config.listen).map_err(|source| TransportError::Bind {
            addr: config.listen,
            source,
        })?;
    endpoint.set_default_client_config(client);
    let local_addr = endpoint
        .local_addr()
        .map_err(|source| TransportError::Bind {
            addr: config.listen,
            source,
        })?;
    let shared = Arc::new(Shared {
        hello: MemberInfo {
            id: config.id,
            region: config.region,
            addr: hello_addr(config.advertise, local_addr),
            clock_ms: None,
        },
        advertise: config.advertise,
        replica,
        members,
        tls: config.tls,
        endpoint,
        isolate: config.isolate,
        seeds: config.seeds,
        seed_ids: Mutex::new(HashMap::new()),
        live: Mutex::new(HashMap::new()),
        dialing: Mutex::new(HashSet::new()),
        backoff: Mutex::new(HashMap::new()),
    });
    let weak = Arc::downgrade(&shared);
    shared.replica.catalog.docs().on_change(Box::new(move |id| {
        tell_all(&weak, || Input::Dirty(id.to_owned()))
    }));
    let weak = Arc::downgrade(&shared);
    shared
        .replica
        .log
        .on_append(Box::new(move || tell_all(&weak, || Input::LocalAppend)));
    let task = tokio::spawn(run(shared, stop));
    Ok(Transport { local_addr, task })
}

/// The address a hello carries: `advertise`, else the unspecified IP of the listener's family
/// with its port, which tells the peer the port and leaves the IP to what it observes (older
/// nodes read an unspecified IP the same way).
fn hello_addr(advertise: Option<SocketAddr>, local: SocketAddr) -> SocketAddr {
    advertise.unwrap_or_else(|| {
        let any = match local.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        SocketAddr::new(any, local.port())
    })
}

/// The address to record for a peer whose hello said `said`, on a connection that came about
/// by `direction` from `remote`: what it advertised, else the address dialled, else the
/// connection's source IP with the port it listens on. `None` when none is dialable.
fn peer_address(said: SocketAddr, direction: Direction, remote: SocketAddr) -> Option<SocketAddr> {
    if is_dialable(said) {
        return Some(said);
    }
    let observed = match direction {
        Direction::Outbound(dialled) => dialled,
        Direction::Inbound => SocketAddr::new(remote.ip().to_canonical(), said.port()),
    };
    is_dialable(observed).then_some(observed)
}

fn tell_all(shared: &Weak<Shared>, input: impl Fn() -> Input) {
    if let Some(shared) = shared.upgrade() {
        for live in shared.live.lock().values() {
            live.inbox.push(input());
        }
    }
}

async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let accept = tokio::spawn(accept_forever(shared.clone()));
    let mut dial = tokio::time::interval(DIAL_EVERY);
    let mut tick = tokio::time::interval(TICK);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            _ = dial.tick() => dial_round(&shared),
            _ = tick.tick() => tell_all(&Arc::downgrade(&shared), || Input::Tick),
        }
    }
    accept.abort();
    shared.endpoint.close(
        Close::Shutdown.code().into(),
        Close::Shutdown.as_str().as_bytes(),
    );
    shared.live.lock().clear();
    shared.endpoint.wait_idle().await;
}

fn isolated(shared: &Shared) -> bool {
    shared.isolate.exists()
}

async fn accept_forever(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        if isolated(&shared) {
            incoming.refuse();
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                Ok(Ok(conn)) => match greet(&shared, conn, Direction::Inbound, None).await {
                    Ok(_) | Err(PeerError::Myself) => {}
                    Err(e) => tracing::warn!(%remote, error = %e, "peer handshake failed"),
                },
                Ok(Err(e)) => refused(&shared, remote, &e),
                Err(_) => tracing::debug!(%remote, "peer handshake timed out"),
            }
        });
    }
}

/// Whether a connection failed in its TLS handshake (a QUIC crypto error, 0x100-0x1ff: a
/// certificate refused by either side, no common protocol).
fn tls_failed(error: &ConnectionError) -> bool {
    let code = match error {
        ConnectionError::TransportError(e) => e.code,
        ConnectionError::ConnectionClosed(close) => close.error_code,
        _ => return false,
    };
    (0x100..0x200).contains(&u64::from(code))
}

/// A failed TLS handshake: counted and logged, nothing more. The attempt is not a member (it
/// never authenticated), so it is not recorded where peers are: anyone can knock.
fn refused(shared: &Shared, addr: SocketAddr, error: &ConnectionError) {
    if let Some(name) = shared.tls.refusals.take() {
        metrics::counter!("edgerate_peer_refused_total").increment(1);
        tracing::warn!(%addr, peer = %name, %error, "refused a peer: certificate not signed by the cluster CA");
    } else if tls_failed(error) {
        metrics::counter!("edgerate_peer_refused_total").increment(1);
        tracing::warn!(%addr, %error, "a peer refused this node's certificate");
    } else {
        tracing::debug!(%addr, %error, "could not connect to a peer");
    }
}

/// Dials, with backoff, every member this node has no live connection to and every seed whose
/// node is not known yet; or, while isolated, drops every connection.
fn dial_round(shared: &Arc<Shared>) {
    if isolated(shared) {
        let dropped: Vec<Live> = shared.live.lock().drain().map(|(_, l)| l).collect();
        for live in dropped {
            Close::Isolated.on(&live.conn);
        }
        return;
    }
    let mut targets: Vec<(Target, Option<SocketAddr>)> = {
        let live = shared.live.lock();
        shared
            .members
            .dialable()
            .into_iter()
            .filter(|(id, _)| live.get(id).is_none_or(|l| l.conn.close_reason().is_some()))
            .map(|(id, addr)| (Target::Member(id), Some(addr)))
            .collect()
    };
    {
        let known = shared.seed_ids.lock();
        targets.extend(
            shared
                .seeds
                .iter()
                .filter(|seed| !known.contains_key(*seed))
                .map(|seed| (Target::Seed(seed.clone()), None)),
        );
    }
    let now = Instant::now();
    for (target, addr) in targets {
        let due = shared
            .backoff
            .lock()
            .get(&target)
            .is_none_or(|b| now >= b.next);
        if !due || !shared.dialing.lock().insert(target.clone()) {
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = dial_target(&shared, &target, addr).await;
            shared.dialing.lock().remove(&target);
            match result {
                Ok(()) => {
                    shared.backoff.lock().remove(&target);
                }
                Err(e) => {
                    tracing::debug!(?target, error = %e, "dial failed");
                    if let Target::Member(id) = &target {
                        shared.members.update(id, |p| {
                            if p.state == PeerState::Connecting {
                                p.state = PeerState::Down;
                            }
                        });
                    }
                    let mut backoff = shared.backoff.lock();
                    let wait = backoff
                        .get(&target)
                        .map_or(MIN_BACKOFF, |b| (b.wait * 2).min(MAX_BACKOFF));
                    backoff.insert(
                        target,
                        Backoff {
                            next: Instant::now() + wait,
                            wait,
                        },
                    );
                }
            }
        });
    }
}

/// Dials one target: a member at `addr`, or a seed (resolved here, so a slow DNS answer holds
/// up only this dial). Learns which node a seed is once it answered.
async fn dial_target(
    shared: &Arc<Shared>,
    target: &Target,
    addr: Option<SocketAddr>,
) -> Result<(), PeerError> {
    let seed = match (target, addr) {
        (Target::Member(id), Some(addr)) => {
            return dial(shared, addr, Some(id)).await.map(drop);
        }
        (Target::Member(id), None) => return Err(PeerError::NoAddress { id: id.clone() }),
        (Target::Seed(seed), _) => seed,
    };
    let addr = tokio::net::lookup_host(seed.as_str())
        .await
        .map_err(|source| PeerError::Resolve {
            seed: seed.clone(),
            source,
        })?
        .find(|a| is_dialable(*a))
        .ok_or_else(|| PeerError::Unresolved { seed: seed.clone() })?;
    // Already connected to the node there (it dialled us first)? Then that is the seed.
    let connected = {
        let live = shared.live.lock();
        shared
            .members
            .dialable()
            .into_iter()
            .find(|(id, at)| *at == addr && live.contains_key(id))
            .map(|(id, _)| id)
    };
    let answered = match connected {
        Some(id) => id,
        None => match dial(shared, addr, None).await {
            Ok(id) => id,
            Err(PeerError::Myself) => shared.me().to_owned(),
            Err(e) => return Err(e),
        },
    };
    tracing::debug!(seed = %seed, node = %answered, "seed answered");
    shared.seed_ids.lock().insert(seed.clone(), answered);
    Ok(())
}

/// Dials `addr` and greets whoever answers (which must be `expected`, when given); returns
/// the node id that answered.
async fn dial(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    expected: Option<&str>,
) -> Result<String, PeerError> {
    let connecting = shared.endpoint.connect(addr, "edgerate")?;
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            refused(shared, addr, &e);
            return Err(e.into());
        }
        Err(_) => return Err(PeerError::HandshakeTimeout),
    };
    greet(shared, conn, Direction::Outbound(addr), expected).await
}

/// The node name the peer's verified certificate carries.
fn certified_name(conn: &Connection) -> Option<String> {
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    chain.first().and_then(edgerate_topology::tls::peer_name)
}

/// Exchanges hellos on a new connection, checks the peer is who its certificate says (and,
/// dialling a member, the member expected), records where it can be dialled, and runs the
/// session. Returns the peer's node id.
async fn greet(
    shared: &Arc<Shared>,
    conn: Connection,
    direction: Direction,
    expected: Option<&str>,
) -> Result<String, PeerError> {
    let refuse = |e: PeerError| {
        Close::Identity.on(&conn);
        Err(e)
    };
    let Some(certified) = certified_name(&conn) else {
        return refuse(PeerError::Unnamed);
    };
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange_hellos(shared, &conn, direction))
        .await
        .map_err(|_| PeerError::HelloTimeout)??;
    if hello.id != certified {
        return refuse(PeerError::Impostor {
            said: hello.id,
            certified,
        });
    }
    if hello.id == shared.me() {
        return refuse(PeerError::Myself);
    }
    if let Some(expected) = expected.filter(|e| *e != hello.id) {
        return refuse(PeerError::WrongNode {
            expected: expected.to_owned(),
            answered: hello.id,
        });
    }
    let Some(addr) = peer_address(hello.addr, direction, conn.remote_address()) else {
        return refuse(PeerError::NoAddress { id: hello.id });
    };
    let dialer = match direction {
        Direction::Outbound(_) => shared.me().to_owned(),
        Direction::Inbound => hello.id.clone(),
    };
    let id = hello.id.clone();
    // Half the round trip is the best guess of how old the hello is on arrival.
    let skew_ms = hello.clock_ms.map(|theirs| {
        let transit = i64::try_from(conn.rtt().as_millis() / 2).unwrap_or(0);
        theirs + transit - now_ms()
    });
    session(
        shared.clone(),
        conn,
        MemberInfo {
            id: hello.id,
            region: hello.region,
            addr,
            clock_ms: None,
        },
        dialer,
    );
    shared.members.update(&id, |p| p.clock_skew_ms = skew_ms);
    if let Some(skew) = skew_ms {
        metrics::gauge!("edgerate_peer_clock_skew_seconds", "peer" => id.clone())
            .set(skew as f64 / 1e3);
    }
    if let Some(skew) = skew_ms.filter(|s| s.abs() > CLOCK_SKEW_WARN_MS) {
        tracing::warn!(peer = %id, skew_ms = skew, "the peer's clock differs from ours by over 1 s");
    }
    Ok(id)
}

/// One hello each way on the connection's first bidirectional stream: the dialer speaks first.
async fn exchange_hellos(
    shared: &Shared,
    conn: &Connection,
    direction: Direction,
) -> Result<MemberInfo, PeerError> {
    let ours = Message::Hello(MemberInfo {
        clock_ms: Some(now_ms()),
        ..shared.hello.clone()
    })
    .encode();
    if let Direction::Outbound(_) = direction {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&ours).await?;
        send.finish()?;
        read_hello(&mut recv).await
    } else {
        let (mut send, mut recv) = conn.accept_bi().await?;
        let theirs = read_hello(&mut recv).await?;
        send.write_all(&ours).await?;
        send.finish()?;
        Ok(theirs)
    }
}

async fn read_hello(recv: &mut quinn::RecvStream) -> Result<MemberInfo, PeerError> {
    let bytes = recv.read_to_end(MAX_HELLO).await?;
    match Message::decode(&bytes)? {
        Message::Hello(hello) => Ok(hello),
        _ => Err(PeerError::NotHello),
    }
}

/// Registers a new connection to `peer`, keeping one connection per pair of nodes: of two, the
/// one dialled by the smaller node id (both ends decide alike). Returns whether this one is
/// kept; the other is closed.
fn register(shared: &Shared, conn: &Connection, peer: &str, dialer: String, inbox: Inbox) -> bool {
    let mut live = shared.live.lock();
    let preferred = shared.me().min(peer);
    if let Some(existing) = live.get(peer) {
        let existing_ok = existing.conn.close_reason().is_none();
        if existing_ok && (existing.dialer == preferred || dialer != preferred) {
            Close::Duplicate.on(conn);
            return false;
        }
        Close::Duplicate.on(&existing.conn);
    }
    live.insert(
        peer.to_owned(),
        Live {
            conn: conn.clone(),
            dialer,
            inbox,
        },
    );
    true
}

/// Runs one peer connection: registers it, then its reader, writer and sync thread until it
/// closes; then marks the peer down (unless a newer connection replaced this one).
fn session(shared: Arc<Shared>, conn: Connection, peer: MemberInfo, dialer: String) {
    let (queue, inputs) = mpsc::channel(INPUT_QUEUE);
    let inbox = Inbox {
        queue,
        overflowed: Arc::default(),
    };
    if !register(&shared, &conn, &peer.id, dialer, inbox.clone()) {
        return;
    }
    shared
        .members
        .learn(&peer.id, &peer.region, peer.addr, AddrSource::Direct);
    shared.members.update(&peer.id, |p| {
        p.state = PeerState::Up;
        p.rtt_ms = Some(conn.rtt().as_secs_f64() * 1e3);
    });
    metrics::gauge!("edgerate_peers_up").increment(1.0);
    tracing::info!(peer = %peer.id, addr = %peer.addr, "peer connected");

    let (frames, frames_rx) = mpsc::channel::<Vec<u8>>(FRAME_QUEUE);
    let worker = {
        let (shared, conn, peer_id) = (shared.clone(), conn.clone(), peer.id.clone());
        let overflowed = inbox.overflowed.clone();
        std::thread::Builder::new()
            .name(format!("sync-{peer_id}"))
            .spawn(move || sync_thread(&shared, &conn, &peer_id, inputs, &overflowed, frames))
    };
    if let Err(e) = worker {
        tracing::error!(peer = %peer.id, error = %e, "could not start a sync thread");
        Close::Internal.on(&conn);
    }
    tokio::spawn(write_frames(conn.clone(), frames_rx));
    tokio::spawn(async move {
        read_frames(&shared, &conn, &peer.id, inbox).await;
        let mut live = shared.live.lock();
        let current = live.get(&peer.id).map(|l| l.conn.stable_id());
        if current == Some(conn.stable_id()) {
            live.remove(&peer.id);
        }
        if current.is_none() || current == Some(conn.stable_id()) {
            shared
                .members
                .update(&peer.id, |p| p.state = PeerState::Down);
            tracing::info!(peer = %peer.id, reason = ?conn.close_reason(), "peer disconnected");
        }
        metrics::gauge!("edgerate_peers_up").decrement(1.0);
    });
}

/// Reads messages until the connection closes: the ordered stream frame by frame, in order,
/// and each large message from its own stream.
async fn read_frames(shared: &Arc<Shared>, conn: &Connection, peer: &str, inbox: Inbox) {
    while let Ok(stream) = conn.accept_uni().await {
        let (shared, conn, inbox, peer) =
            (shared.clone(), conn.clone(), inbox.clone(), peer.to_owned());
        tokio::spawn(async move { read_stream(&shared, &conn, &peer, &inbox, stream).await });
    }
}

async fn read_stream(
    shared: &Shared,
    conn: &Connection,
    peer: &str,
    inbox: &Inbox,
    mut stream: quinn::RecvStream,
) {
    let mut kind = [0u8; 1];
    if stream.read_exact(&mut kind).await.is_err() {
        return bad_message(peer, "a stream without its kind");
    }
    match kind[0] {
        ORDERED => loop {
            let mut len = [0u8; 4];
            if stream.read_exact(&mut len).await.is_err() {
                return; // the connection or the stream ended
            }
            let len = u32::from_le_bytes(len) as usize;
            if len > ORDERED_MAX {
                return bad_message(peer, "an ordered frame over the limit");
            }
            let mut bytes = vec![0u8; len];
            if let Err(e) = stream.read_exact(&mut bytes).await {
                return bad_message(peer, &e.to_string());
            }
            if deliver(shared, conn, peer, inbox, &bytes).await.is_break() {
                return;
            }
        },
        SINGLE => match stream.read_to_end(MAX_MESSAGE).await {
            Ok(bytes) => {
                let _ = deliver(shared, conn, peer, inbox, &bytes).await;
            }
            Err(e) => bad_message(peer, &e.to_string()),
        },
        other => bad_message(peer, &format!("unknown stream kind {other}")),
    }
}

/// One message from a peer: member lists are learnt here (as hearsay), the rest go to its sync
/// thread, waiting for room at most [`STALL_TIMEOUT`]; past that the connection is closed.
/// `Break` when reading this connection should stop.
async fn deliver(
    shared: &Shared,
    conn: &Connection,
    peer: &str,
    inbox: &Inbox,
    bytes: &[u8],
) -> ControlFlow<()> {
    metrics::counter!("edgerate_replication_bytes_total", "direction" => "in")
        .increment(bytes.len() as u64);
    shared.members.update(peer, |p| {
        p.last_sync = Some(edgerate_model::time::now_millis());
    });
    let message = match Message::decode(bytes) {
        Ok(Message::Members(list)) => {
            for m in list {
                shared
                    .members
                    .learn(&m.id, &m.region, m.addr, AddrSource::Gossip);
            }
            return ControlFlow::Continue(());
        }
        Ok(message) => message,
        Err(e) => {
            bad_message(peer, &e.to_string());
            return ControlFlow::Continue(());
        }
    };
    match tokio::time::timeout(STALL_TIMEOUT, inbox.queue.send(Input::Message(message))).await {
        Ok(Ok(())) => ControlFlow::Continue(()),
        // The sync thread is gone; it closed the connection.
        Ok(Err(_)) => ControlFlow::Break(()),
        Err(_) => {
            metrics::counter!("edgerate_peer_stalls_total").increment(1);
            tracing::warn!(
                peer,
                "the peer's sync thread took nothing for {STALL_TIMEOUT:?}; closing the connection"
            );
            Close::Stalled.on(conn);
            ControlFlow::Break(())
        }
    }
}

fn bad_message(peer: &str, error: &str) {
    metrics::counter!("edgerate_replication_bad_messages_total").increment(1);
    tracing::warn!(peer, error, "dropped a bad message from a peer");
}

/// Writes messages up to [`ORDERED_MAX`] bytes, in order, on one stream (a document's sync
/// messages must arrive in the order they were made); each larger one on a stream of its own,
/// a bounded number at once, so a whole-document transfer does not hold up live edits.
async fn write_frames(conn: Connection, mut frames: mpsc::Receiver<Vec<u8>>) {
    let Ok(mut ordered) = conn.open_uni().await else {
        return;
    };
    if ordered.write_all(&[ORDERED]).await.is_err() {
        return;
    }
    let in_flight = Arc::new(Semaphore::new(SENDS_IN_FLIGHT));
    while let Some(frame) = frames.recv().await {
        if frame.len() <= ORDERED_MAX {
            let len = (frame.len() as u32).to_le_bytes();
            if ordered.write_all(&len).await.is_err() || ordered.write_all(&frame).await.is_err() {
                return;
            }
            sent(frame.len());
            continue;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let conn = conn.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let written = async {
                let mut stream = conn.open_uni().await.ok()?;
                stream.write_all(&[SINGLE]).await.ok()?;
                stream.write_all(&frame).await.ok()?;
                stream.finish().ok()
            };
            if written.await.is_some() {
                sent(frame.len());
            }
        });
    }
}

fn sent(bytes: usize) {
    metrics::counter!("edgerate_replication_bytes_total", "direction" => "out")
        .increment(bytes as u64);
}

/// The blocking side of one connection ([`sync_loop`]), guarded: whether it ends or panics,
/// the connection is closed, so the peer is marked down and redialled instead of staying "up"
/// with nobody answering it. A panic is counted (`edgerate_peer_sync_panics_total`) and logged.
fn sync_thread(
    shared: &Shared,
    conn: &Connection,
    peer: &str,
    inputs: mpsc::Receiver<Input>,
    overflowed: &AtomicBool,
    frames: mpsc::Sender<Vec<u8>>,
) {
    // Unwind safety: what the loop owns is dropped with it, and what it shares (the replica,
    // the member table) is written under locks that do not poison; the connection that saw
    // the panic is dropped and the link restarts from a fresh sync state.
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        sync_loop(shared, conn, peer, inputs, overflowed, frames);
    }));
    match outcome {
        Ok(()) => Close::SyncEnded.on(conn),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            metrics::counter!("edgerate_peer_sync_panics_total").increment(1);
            tracing::error!(peer, panic = %what, "the sync thread panicked; closing the connection to restart the link");
            Close::Internal.on(conn);
        }
    }
}

/// Applies what the peer sent, answers, pushes local changes, and every tick (or after local
/// pushes were dropped from a full queue) runs anti-entropy and reports lag. Returns when the
/// connection, its writer or its inputs are gone.
fn sync_loop(
    shared: &Shared,
    conn: &Connection,
    peer: &str,
    mut inputs: mpsc::Receiver<Input>,
    overflowed: &AtomicBool,
    frames: mpsc::Sender<Vec<u8>>,
) {
    let mut sync = PeerSync::new(shared.replica.clone(), peer.to_owned());
    let mut out = Vec::new();
    sync.tick(&mut out);
    out.push(members_message(shared));
    loop {
        sync.flush(&mut out);
        for message in out.drain(..) {
            if frames.blocking_send(message.encode()).is_err() {
                return;
            }
        }
        let batch = drain(&mut inputs);
        if batch.is_empty() || conn.close_reason().is_some() {
            return;
        }
        let mut tick = false;
        for input in batch {
            match input {
                Input::Message(message) => {
                    if let Err(e) = sync.handle(message, &mut out) {
                        bad_message(peer, &e);
                    }
                }
                Input::Dirty(id) => sync.mark(&id),
                Input::LocalAppend => out.push(Message::LogNotify),
                Input::Tick => tick = true,
            }
        }
        // A dropped push is covered by a full pass: every live document marked, the log pulled
        // (the peer pulls ours on its own ticks).
        if overflowed.swap(false, Ordering::Relaxed) || tick {
            sync.tick(&mut out);
            let day = edgerate_model::time::now().div_euclid(86_400);
            out.push(Message::Usage {
                day,
                counts: shared.replica.usage.local(day),
            });
            out.push(members_message(shared));
            let lag = sync.lag();
            let rtt = conn.rtt().as_secs_f64() * 1e3;
            shared.members.update(peer, |p| {
                p.lag = lag;
                p.rtt_ms = Some(rtt);
            });
            metrics::gauge!("edgerate_peer_lag", "peer" => peer.to_owned()).set(lag as f64);
            metrics::gauge!("edgerate_peer_rtt_seconds", "peer" => peer.to_owned()).set(rtt / 1e3);
        }
    }
}

/// Waits for the next input, then takes every input already queued (at most a queue's worth),
/// so bursts are handled in one batch. Empty when the connection is gone.
fn drain(inputs: &mut mpsc::Receiver<Input>) -> Vec<Input> {
    let mut batch = Vec::new();
    match inputs.blocking_recv() {
        Some(first) => batch.push(first),
        None => return batch,
    }
    while batch.len() < INPUT_QUEUE {
        match inputs.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch
}

/// A peer clock further off ours than this is shown and logged.
const CLOCK_SKEW_WARN_MS: i64 = 1_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Everyone this node knows, at the addresses recorded for them (all dialable), and itself
/// only when it has an address to advertise: peers otherwise use the one they observe.
fn members_message(shared: &Shared) -> Message {
    let mut list: Vec<MemberInfo> = shared
        .members
        .peers()
        .into_iter()
        .filter(|p| is_dialable(p.addr))
        .map(|p| MemberInfo {
            id: p.id,
            region: p.region,
            addr: p.addr,
            clock_ms: None,
        })
        .collect();
    if let Some(addr) = shared.advertise {
        list.push(MemberInfo {
            addr,
            clock_ms: None,
            ..shared.hello.clone()
        });
    }
    Message::Members(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_hello_tells_the_advertised_address_or_only_the_port() {
        let bound = addr("0.0.0.0:7080");
        assert_eq!(hello_addr(None, bound), addr("0.0.0.0:7080"));
        assert_eq!(
            hello_addr(None, addr("127.0.0.1:7081")),
            addr("0.0.0.0:7081")
        );
        assert_eq!(hello_addr(None, addr("[::1]:7082")), addr("[::]:7082"));
        let public = addr("198.51.100.4:7080");
        assert_eq!(hello_addr(Some(public), bound), public);
    }

    #[test]
    fn a_peer_is_recorded_where_it_can_be_dialled() {
        let remote = addr("192.0.2.7:53124"); // an ephemeral source port behind NAT
        let advertised = addr("198.51.100.4:7080");
        let port_only = addr("0.0.0.0:7080");
        // Advertised: taken as said, both ways.
        assert_eq!(
            peer_address(advertised, Direction::Inbound, remote),
            Some(advertised)
        );
        let dialled = addr("10.0.0.4:7080");
        assert_eq!(
            peer_address(advertised, Direction::Outbound(dialled), dialled),
            Some(advertised)
        );
        // Not advertised: the address dialled, or the source IP with the listening port.
        assert_eq!(
            peer_address(port_only, Direction::Outbound(dialled), dialled),
            Some(dialled)
        );
        assert_eq!(
            peer_address(port_only, Direction::Inbound, remote),
            Some(addr("192.0.2.7:7080"))
        );
        assert_eq!(
            peer_address(
                port_only,
                Direction::Inbound,
                addr("[::ffff:192.0.2.7]:53124")
            ),
            Some(addr("192.0.2.7:7080")),
            "an IPv4 peer seen on a dual-stack socket"
        );
        // No port to dial: nothing usable.
        assert_eq!(
            peer_address(addr("0.0.0.0:0"), Direction::Inbound, remote),
            None
        );
    }

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
        ];
        let codes: HashSet<u32> = all.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), all.len());
    }
}
