//! One peer connection's life: the hello exchange and the identity checks (greet), keeping one
//! connection per pair of nodes (register), and the sync thread that serves it, whose end or
//! panic closes the connection.

use super::framing::{read_frames, write_frames};
use super::worker::{sync_loop, Inbox, Input};
use super::{Close, Live, PeerError, Shared, FRAME_QUEUE, HANDSHAKE_TIMEOUT, INPUT_QUEUE};
use crate::sync::{MemberInfo, Message, PROTOCOL};
use edgerate_topology::membership::{is_dialable, AddrSource, PeerState};
use quinn::Connection;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Largest hello accepted.
const MAX_HELLO: usize = 64 * 1024;

/// A peer clock further off ours than this is shown and logged.
const CLOCK_SKEW_WARN_MS: i64 = 1_000;

/// How a connection came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// This node dialled the peer at this address (known good: it answered there).
    Outbound(SocketAddr),
    /// The peer dialled this node.
    Inbound,
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
pub(super) async fn greet(
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
            protocol: None,
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
        protocol: Some(PROTOCOL),
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
        Message::Hello(hello) => match hello.protocol {
            Some(theirs) if theirs > PROTOCOL => Err(PeerError::Newer(theirs)),
            _ => Ok(hello),
        },
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
        let results = inbox.queue.downgrade();
        std::thread::Builder::new()
            .name(format!("sync-{peer_id}"))
            .spawn(move || {
                sync_thread(
                    &shared,
                    &conn,
                    &peer_id,
                    inputs,
                    results,
                    &overflowed,
                    frames,
                )
            })
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

/// The blocking side of one connection ([`sync_loop`]), guarded: whether it ends or panics,
/// the connection is closed, so the peer is marked down and redialled instead of staying "up"
/// with nobody answering it. A panic is counted (`edgerate_peer_sync_panics_total`) and logged.
fn sync_thread(
    shared: &Shared,
    conn: &Connection,
    peer: &str,
    inputs: mpsc::Receiver<Input>,
    results: mpsc::WeakSender<Input>,
    overflowed: &AtomicBool,
    frames: mpsc::Sender<Vec<u8>>,
) {
    // Unwind safety: what the loop owns is dropped with it, and what it shares (the replica,
    // the member table) is written under locks that do not poison; the connection that saw
    // the panic is dropped and the link restarts from a fresh sync state.
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        sync_loop(shared, conn, peer, inputs, results, overflowed, frames);
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
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
}
