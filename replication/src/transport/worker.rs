//! The per-peer sync thread's input queue and its loop: applying what the peer sent, pushing
//! local changes, and anti-entropy every tick (request counts and the member list only when
//! they changed, or every 30 s).

use super::framing::bad_message;
use super::{Shared, INPUT_QUEUE, PUSH_HEADROOM};
use crate::sync::{Done, HandleError, Job, MemberInfo, Message, PeerSync, Replica};
use edgerate_topology::membership::is_dialable;
use quinn::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::{self, error::TrySendError};

/// What a connection's thread is told.
pub(super) enum Input {
    Message(Message),
    Dirty(String),
    LocalAppend,
    Tick,
    /// A job of the link's bulk lane, done.
    Bulk(Box<Done>),
}

/// The sending side of one sync thread's [`INPUT_QUEUE`].
#[derive(Clone)]
pub(super) struct Inbox {
    pub(super) queue: mpsc::Sender<Input>,
    /// Set when a local push was dropped for want of room: the thread then runs a full tick.
    pub(super) overflowed: Arc<AtomicBool>,
}

impl Inbox {
    /// Queues a local push without waiting (it may come from any thread, the runtime's too),
    /// or drops it and flags the thread to run a full pass when the queue is nearly full.
    pub(super) fn push(&self, input: Input) {
        let room = self.queue.capacity() > PUSH_HEADROOM;
        if !room || matches!(self.queue.try_send(input), Err(TrySendError::Full(_))) {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }
}

/// Applies what the peer sent, answers, pushes local changes, and every tick (or after local
/// pushes were dropped from a full queue) runs anti-entropy and reports lag; its heavy work
/// goes to the link's bulk lane, a thread beside it ([`crate::sync::Job`]), whose results come
/// back as inputs (`results`: this loop's own inbox). Returns when the connection, its writer
/// or its inputs are gone, once the lane's job in progress is done.
pub(super) fn sync_loop(
    shared: &Shared,
    conn: &Connection,
    peer: &str,
    inputs: mpsc::Receiver<Input>,
    results: mpsc::WeakSender<Input>,
    overflowed: &AtomicBool,
    frames: mpsc::Sender<Vec<u8>>,
) {
    let (lane, jobs) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        let replica = &shared.replica;
        let started = std::thread::Builder::new()
            .name(format!("bulk-{peer}"))
            .spawn_scoped(scope, move || bulk_lane(replica, &jobs, &results));
        let sync = PeerSync::new(shared.replica.clone(), peer.to_owned());
        // Without its thread, the link does its heavy work itself.
        let sync = match started {
            Ok(_) => sync.with_lane(lane),
            Err(e) => {
                tracing::warn!(peer, error = %e, "could not start a bulk lane");
                sync
            }
        };
        run(shared, conn, peer, sync, inputs, overflowed, frames);
    });
}

/// The lane's thread: each job done and given back, until the link is gone. A job that panics
/// gives its document back with a fresh sync state (the conversation about it starts over).
fn bulk_lane(
    replica: &Replica,
    jobs: &std::sync::mpsc::Receiver<Job>,
    results: &mpsc::WeakSender<Input>,
) {
    for job in jobs {
        let id = job.id().to_owned();
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(replica)))
            .unwrap_or_else(|_| {
                tracing::error!(doc = %id, "bulk work on a document panicked");
                Job::failed(id)
            });
        let Some(results) = results.upgrade() else {
            return;
        };
        if results.blocking_send(Input::Bulk(Box::new(done))).is_err() {
            return;
        }
    }
}

fn run(
    shared: &Shared,
    conn: &Connection,
    peer: &str,
    mut sync: PeerSync,
    mut inputs: mpsc::Receiver<Input>,
    overflowed: &AtomicBool,
    frames: mpsc::Sender<Vec<u8>>,
) {
    let mut wire = WireBytes::default();
    let mut members = Changed::default();
    let mut usage = Changed::default();
    let mut out = Vec::new();
    sync.tick(&mut out);
    out.extend(members.news(members_list(shared)).map(Message::Members));
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
                Input::Message(message) => match sync.handle(message, &mut out) {
                    Ok(()) => {}
                    Err(HandleError::Bad(e)) => bad_message(peer, &e),
                    Err(e @ HandleError::TooFarAhead(_)) => {
                        bad_message(peer, &e.to_string());
                        return;
                    }
                },
                Input::Bulk(done) => match sync.complete(*done, &mut out) {
                    Ok(()) => {}
                    Err(HandleError::Bad(e)) => bad_message(peer, &e),
                    Err(e @ HandleError::TooFarAhead(_)) => {
                        bad_message(peer, &e.to_string());
                        return;
                    }
                },
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
            let counts = (day, shared.replica.usage.local(day));
            out.extend(
                usage
                    .news(counts)
                    .map(|(day, counts)| Message::Usage { day, counts }),
            );
            out.extend(members.news(members_list(shared)).map(Message::Members));
            if sync.stalled() {
                metrics::counter!("edgerate_peer_stalls_total").increment(1);
                tracing::warn!(
                    peer,
                    "a document message never arrived; restarting the link"
                );
                return;
            }
            let lag = sync.lag();
            let rtt = conn.rtt().as_secs_f64() * 1e3;
            shared.members.update(peer, |p| {
                p.lag = lag;
                p.rtt_ms = Some(rtt);
            });
            metrics::gauge!("edgerate_peer_lag", "peer" => peer.to_owned()).set(lag as f64);
            metrics::gauge!("edgerate_peer_rtt_seconds", "peer" => peer.to_owned()).set(rtt / 1e3);
            wire.count(conn);
        }
    }
}

/// UDP bytes of one connection already counted in `edgerate_peer_wire_bytes_total`: what the
/// link costs on the wire, QUIC framing, keep-alives and retransmissions included.
#[derive(Default)]
struct WireBytes {
    sent: u64,
    received: u64,
}

impl WireBytes {
    fn count(&mut self, conn: &Connection) {
        let stats = conn.stats();
        let (sent, received) = (stats.udp_tx.bytes, stats.udp_rx.bytes);
        metrics::counter!("edgerate_peer_wire_bytes_total", "direction" => "out")
            .increment(sent.saturating_sub(self.sent));
        metrics::counter!("edgerate_peer_wire_bytes_total", "direction" => "in")
            .increment(received.saturating_sub(self.received));
        (self.sent, self.received) = (sent, received);
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

/// How often the member list and the request counts go to a peer even when unchanged.
const RESEND: std::time::Duration = std::time::Duration::from_secs(30);

/// The last value of something told to the peer at ticks only when it changed, or every
/// [`RESEND`]: a new connection starts with nothing sent, and the resend covers a message the
/// peer refused, or a large one overtaken by a later one (each goes on a stream of its own).
/// An idle link then carries anti-entropy and keep-alives, not the member list every second.
struct Changed<T>(Option<(T, std::time::Instant)>);

impl<T> Default for Changed<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T: PartialEq + Clone> Changed<T> {
    /// `value` when it differs from what was sent last or that was sent [`RESEND`] ago (it is
    /// then taken as sent).
    fn news(&mut self, value: T) -> Option<T> {
        let now = std::time::Instant::now();
        let fresh = self
            .0
            .as_ref()
            .is_some_and(|(sent, at)| *sent == value && now.duration_since(*at) < RESEND);
        (!fresh).then(|| {
            self.0 = Some((value.clone(), now));
            value
        })
    }
}

/// Everyone this node knows, at the addresses recorded for them (all dialable), and itself
/// only when it has an address to advertise: peers otherwise use the one they observe. Sorted,
/// so an unchanged membership compares equal.
fn members_list(shared: &Shared) -> Vec<MemberInfo> {
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
            protocol: None,
        })
        .collect();
    if let Some(addr) = shared.advertise {
        list.push(MemberInfo {
            addr,
            clock_ms: None,
            protocol: None,
            ..shared.hello.clone()
        });
    }
    list.sort_by(|a, b| a.id.cmp(&b.id));
    list
}
