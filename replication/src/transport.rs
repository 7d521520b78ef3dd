//! Replication over QUIC (quinn, TLS 1.3 with mutual authentication against the cluster CA).
//!
//! Every node listens on `[peer] listen` and dials its seeds and every member it hears of, so
//! the cluster is a full mesh. A connection opens with one bidirectional exchange of
//! [`Message::Hello`]; the name a peer gives must be the one its certificate carries. When two
//! nodes dial each other at once, both keep the connection dialled by the smaller node id.
//!
//! Messages up to 64 KiB travel in order on one unidirectional stream per connection (a
//! document's sync messages must not overtake each other, or a peer's view of our heads goes
//! stale); each larger one, up to [`MAX_MESSAGE`] bytes, on a stream of its own, at most
//! [`SENDS_IN_FLIGHT`] at once per peer, so a large transfer (a whole rule shard) moves beside
//! small live edits instead of in front of them. The work of one
//! connection ([`PeerSync`]) runs on its own thread, since applying documents and fsyncing
//! blocks.
//!
//! A file named `isolate` in the data dir cuts this node off: connections are closed and no
//! new ones made or accepted until it is removed (maintenance, and partition tests).

use crate::sync::{MemberInfo, Message, PeerSync, Replica};
use edgerate_topology::membership::{Members, PeerState};
use edgerate_topology::tls::PeerTls;
use parking_lot::Mutex;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};

/// Largest message accepted from a peer.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Messages up to this size travel on the connection's one ordered stream.
const ORDERED_MAX: usize = 64 * 1024;
/// The first byte of a stream: the ordered stream of small messages, or one large message.
const ORDERED: u8 = 0;
const SINGLE: u8 = 1;
/// Streams written at once to one peer.
pub const SENDS_IN_FLIGHT: usize = 32;
/// Anti-entropy, counts and member lists, and lag figures, this often.
pub const TICK: Duration = Duration::from_secs(1);
/// Dial attempts and the isolation switch are checked this often.
const DIAL_EVERY: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run the transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub id: String,
    pub region: String,
    pub listen: SocketAddr,
    pub seeds: Vec<String>,
    pub tls: PeerTls,
    /// The isolation switch: while this file exists the node talks to no peer.
    pub isolate: PathBuf,
}

/// Why the transport did not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("[tls] {0}")]
    Tls(String),
    #[error("[peer] listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
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

struct Live {
    conn: Connection,
    dialer: String,
    input: mpsc::UnboundedSender<Input>,
}

struct Shared {
    me: MemberInfo,
    replica: Replica,
    members: Arc<Members>,
    tls: PeerTls,
    endpoint: Endpoint,
    isolate: PathBuf,
    seeds: Vec<String>,
    live: Mutex<HashMap<String, Live>>,
    dialing: Mutex<HashSet<SocketAddr>>,
    backoff: Mutex<HashMap<SocketAddr, (Instant, Duration)>>,
}

/// Binds the QUIC endpoint and starts replicating with peers until `stop`.
pub fn start(
    config: TransportConfig,
    replica: Replica,
    members: Arc<Members>,
    stop: watch::Receiver<bool>,
) -> Result<Transport, TransportError> {
    let server = QuicServerConfig::try_from(config.tls.server.clone())
        .map_err(|e| TransportError::Tls(e.to_string()))?;
    let client = QuicClientConfig::try_from(config.tls.client.clone())
        .map_err(|e| TransportError::Tls(e.to_string()))?;
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
        me: MemberInfo {
            id: config.id,
            region: config.region,
            addr: local_addr,
        },
        replica,
        members,
        tls: config.tls,
        endpoint,
        isolate: config.isolate,
        seeds: config.seeds,
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

fn tell_all(shared: &Weak<Shared>, input: impl Fn() -> Input) {
    if let Some(shared) = shared.upgrade() {
        for live in shared.live.lock().values() {
            let _ = live.input.send(input());
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
            _ = dial.tick() => dial_round(&shared).await,
            _ = tick.tick() => tell_all(&Arc::downgrade(&shared), || Input::Tick),
        }
    }
    accept.abort();
    shared.endpoint.close(0u32.into(), b"shutdown");
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
                Ok(Ok(conn)) => {
                    if let Err(e) = greet(&shared, conn, false).await {
                        tracing::warn!(%remote, error = %e, "peer handshake failed");
                    }
                }
                Ok(Err(e)) => refused(&shared, remote, &e.to_string()),
                Err(_) => tracing::debug!(%remote, "peer handshake timed out"),
            }
        });
    }
}

/// A failed TLS handshake: if a verifier refused a certificate, the peer is shown as refused.
fn refused(shared: &Shared, addr: SocketAddr, error: &str) {
    if let Some(name) = shared.tls.refusals.take() {
        metrics::counter!("edgerate_peer_refused_total").increment(1);
        tracing::warn!(%addr, peer = %name, error, "refused a peer: certificate not signed by the cluster CA");
        shared.members.refused(&name, addr);
    } else if error.contains("certificate") || error.contains("crypto") {
        metrics::counter!("edgerate_peer_refused_total").increment(1);
        tracing::warn!(%addr, error, "a peer refused this node's certificate");
        shared.members.refused("unknown", addr);
    } else {
        tracing::debug!(%addr, error, "could not connect to a peer");
    }
}

/// Dials every seed and known member this node has no connection to (with backoff), or,
/// while isolated, drops every connection.
async fn dial_round(shared: &Arc<Shared>) {
    if isolated(shared) {
        let dropped: Vec<Live> = shared.live.lock().drain().map(|(_, l)| l).collect();
        for live in dropped {
            live.conn.close(1u32.into(), b"isolated");
        }
        return;
    }
    // Members not connected; the seeds only while connected to nobody (a node joins through
    // them and learns everyone else from the member lists).
    let mut targets: Vec<SocketAddr> = {
        let live = shared.live.lock();
        shared
            .members
            .dialable()
            .into_iter()
            .filter(|(id, _)| !live.contains_key(id))
            .map(|(_, addr)| addr)
            .collect()
    };
    if shared.live.lock().is_empty() {
        for seed in &shared.seeds {
            if let Ok(addrs) = tokio::net::lookup_host(seed.as_str()).await {
                targets.extend(addrs.take(1));
            }
        }
    }
    for addr in targets {
        if addr == shared.me.addr {
            continue;
        }
        let due = shared
            .backoff
            .lock()
            .get(&addr)
            .is_none_or(|(next, _)| Instant::now() >= *next);
        if !due || !shared.dialing.lock().insert(addr) {
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = dial(&shared, addr).await;
            shared.dialing.lock().remove(&addr);
            let mut backoff = shared.backoff.lock();
            match result {
                Ok(()) => {
                    backoff.remove(&addr);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "dial failed");
                    let wait = backoff
                        .get(&addr)
                        .map_or(Duration::from_millis(200), |(_, w)| {
                            (*w * 2).min(MAX_BACKOFF)
                        });
                    backoff.insert(addr, (Instant::now() + wait, wait));
                }
            }
        });
    }
}

async fn dial(shared: &Arc<Shared>, addr: SocketAddr) -> Result<(), String> {
    let connecting = shared
        .endpoint
        .connect(addr, "edgerate")
        .map_err(|e| e.to_string())?;
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            refused(shared, addr, &e.to_string());
            return Err(e.to_string());
        }
        Err(_) => return Err("handshake timed out".into()),
    };
    greet(shared, conn, true).await
}

/// Exchanges hellos on a new connection, checks the peer is who its certificate says, and
/// runs the session.
async fn greet(shared: &Arc<Shared>, conn: Connection, dialer: bool) -> Result<(), String> {
    let certified = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|chain| chain.first().and_then(edgerate_topology::tls::peer_name))
        .ok_or("the peer presented no named certificate")?;
    let exchange = async {
        let mut hello = if dialer {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(&Message::Hello(shared.me.clone()).encode())
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            read_hello(&mut recv).await?
        } else {
            let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let hello = read_hello(&mut recv).await?;
            send.write_all(&Message::Hello(shared.me.clone()).encode())
                .await
                .map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            hello
        };
        if hello.addr.ip().is_unspecified() {
            hello.addr.set_ip(conn.remote_address().ip());
        }
        Ok::<_, String>(hello)
    };
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| "hello timed out".to_string())??;
    if hello.id != certified || hello.id == shared.me.id {
        conn.close(2u32.into(), b"identity");
        return Err(format!(
            "peer says it is {:?} but its certificate names {certified:?}",
            hello.id
        ));
    }
    let dialer = if dialer {
        shared.me.id.clone()
    } else {
        hello.id.clone()
    };
    session(shared.clone(), conn, hello, dialer);
    Ok(())
}

async fn read_hello(recv: &mut quinn::RecvStream) -> Result<MemberInfo, String> {
    let bytes = recv
        .read_to_end(64 * 1024)
        .await
        .map_err(|e| e.to_string())?;
    match Message::decode(&bytes) {
        Ok(Message::Hello(hello)) => Ok(hello),
        Ok(_) => Err("expected a hello".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs one peer connection: registers it (keeping one connection per pair of nodes), then
/// its reader, writer and sync thread until it closes.
fn session(shared: Arc<Shared>, conn: Connection, peer: MemberInfo, dialer: String) {
    let (input, inputs) = mpsc::unbounded_channel();
    {
        let mut live = shared.live.lock();
        let preferred = shared.me.id.clone().min(peer.id.clone());
        if let Some(existing) = live.get(&peer.id) {
            let existing_ok = existing.conn.close_reason().is_none();
            if existing_ok && (existing.dialer == preferred || dialer != preferred) {
                conn.close(3u32.into(), b"duplicate");
                return;
            }
            existing.conn.close(3u32.into(), b"duplicate");
        }
        live.insert(
            peer.id.clone(),
            Live {
                conn: conn.clone(),
                dialer,
                input: input.clone(),
            },
        );
    }
    shared.members.learn(&peer.id, &peer.region, peer.addr);
    shared.members.update(&peer.id, |p| {
        p.state = PeerState::Up;
        p.rtt_ms = Some(conn.rtt().as_secs_f64() * 1e3);
    });
    metrics::gauge!("edgerate_peers_up").increment(1.0);
    tracing::info!(peer = %peer.id, addr = %peer.addr, "peer connected");

    let (frames, frames_rx) = mpsc::channel::<Vec<u8>>(256);
    let worker = {
        let (shared, conn, peer_id) = (shared.clone(), conn.clone(), peer.id.clone());
        std::thread::Builder::new()
            .name(format!("sync-{peer_id}"))
            .spawn(move || sync_thread(&shared, &conn, peer_id, inputs, frames))
    };
    if let Err(e) = worker {
        tracing::error!(error = %e, "could not start a sync thread");
        conn.close(4u32.into(), b"internal");
        return;
    }
    tokio::spawn(write_frames(conn.clone(), frames_rx));
    tokio::spawn(async move {
        read_frames(&shared, &conn, &peer.id, input).await;
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
async fn read_frames(
    shared: &Arc<Shared>,
    conn: &Connection,
    peer: &str,
    input: mpsc::UnboundedSender<Input>,
) {
    while let Ok(mut stream) = conn.accept_uni().await {
        let (shared, input, peer) = (shared.clone(), input.clone(), peer.to_owned());
        tokio::spawn(async move {
            let mut kind = [0u8; 1];
            if stream.read_exact(&mut kind).await.is_err() {
                return bad_message(&peer, "a stream without its kind");
            }
            match kind[0] {
                ORDERED => loop {
                    let mut len = [0u8; 4];
                    if stream.read_exact(&mut len).await.is_err() {
                        return; // the connection or the stream ended
                    }
                    let len = u32::from_le_bytes(len) as usize;
                    if len > ORDERED_MAX {
                        return bad_message(&peer, "an ordered frame over the limit");
                    }
                    let mut bytes = vec![0u8; len];
                    if let Err(e) = stream.read_exact(&mut bytes).await {
                        return bad_message(&peer, &e.to_string());
                    }
                    deliver(&shared, &peer, &input, &bytes);
                },
                SINGLE => match stream.read_to_end(MAX_MESSAGE).await {
                    Ok(bytes) => deliver(&shared, &peer, &input, &bytes),
                    Err(e) => bad_message(&peer, &e.to_string()),
                },
                other => bad_message(&peer, &format!("unknown stream kind {other}")),
            }
        });
    }
}

/// One message from a peer: member lists are learnt here, the rest go to its sync thread.
fn deliver(shared: &Shared, peer: &str, input: &mpsc::UnboundedSender<Input>, bytes: &[u8]) {
    metrics::counter!("edgerate_replication_bytes_total", "direction" => "in")
        .increment(bytes.len() as u64);
    shared.members.update(peer, |p| {
        p.last_sync = Some(edgerate_model::time::now_millis());
    });
    match Message::decode(bytes) {
        Ok(Message::Members(list)) => {
            for m in list {
                shared.members.learn(&m.id, &m.region, m.addr);
            }
        }
        Ok(message) => {
            let _ = input.send(Input::Message(message));
        }
        Err(e) => bad_message(peer, &e.to_string()),
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

/// The blocking side of one connection: applies what the peer sent, answers, pushes local
/// changes, and every tick runs anti-entropy and reports lag.
fn sync_thread(
    shared: &Shared,
    conn: &Connection,
    peer: String,
    mut inputs: mpsc::UnboundedReceiver<Input>,
    frames: mpsc::Sender<Vec<u8>>,
) {
    let mut sync = PeerSync::new(shared.replica.clone(), peer.clone());
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
                        bad_message(&peer, &e);
                    }
                }
                Input::Dirty(id) => sync.mark(&id),
                Input::LocalAppend => out.push(Message::LogNotify),
                Input::Tick => tick = true,
            }
        }
        if tick {
            sync.tick(&mut out);
            let day = edgerate_model::time::now().div_euclid(86_400);
            out.push(Message::Usage {
                day,
                counts: shared.replica.usage.local(day),
            });
            out.push(members_message(shared));
            let lag = sync.lag();
            let rtt = conn.rtt().as_secs_f64() * 1e3;
            shared.members.update(&peer, |p| {
                p.lag = lag;
                p.rtt_ms = Some(rtt);
            });
            metrics::gauge!("edgerate_peer_lag", "peer" => peer.clone()).set(lag as f64);
            metrics::gauge!("edgerate_peer_rtt_seconds", "peer" => peer.clone()).set(rtt / 1e3);
        }
    }
}

/// Waits for the next input, then takes every input already queued, so bursts are handled in
/// one batch. Empty when the connection is gone.
fn drain(inputs: &mut mpsc::UnboundedReceiver<Input>) -> Vec<Input> {
    let mut batch = Vec::new();
    match inputs.blocking_recv() {
        Some(first) => batch.push(first),
        None => return batch,
    }
    while let Ok(next) = inputs.try_recv() {
        batch.push(next);
        if batch.len() >= 4096 {
            break;
        }
    }
    batch
}

fn members_message(shared: &Shared) -> Message {
    let mut list: Vec<MemberInfo> = shared
        .members
        .peers()
        .into_iter()
        .filter(|p| p.state != PeerState::Refused)
        .map(|p| MemberInfo {
            id: p.id,
            region: p.region,
            addr: p.addr,
        })
        .collect();
    list.push(shared.me.clone());
    Message::Members(list)
}
