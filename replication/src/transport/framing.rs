//! How messages travel on a connection's QUIC streams: small ones in order on one stream, each
//! large one on a stream of its own, within the size limits.

use super::worker::{Inbox, Input};
use super::{Close, Shared, MAX_MESSAGE, SENDS_IN_FLIGHT, STALL_TIMEOUT};
use crate::sync::Message;
use edgerate_topology::membership::AddrSource;
use quinn::Connection;
use std::ops::ControlFlow;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// Messages up to this size travel on the connection's one ordered stream.
const ORDERED_MAX: usize = 64 * 1024;
/// The first byte of a stream: the ordered stream of small messages, or one large message.
const ORDERED: u8 = 0;
const SINGLE: u8 = 1;

/// Reads messages until the connection closes: the ordered stream frame by frame, in order,
/// and each large message from its own stream.
pub(super) async fn read_frames(shared: &Arc<Shared>, conn: &Connection, peer: &str, inbox: Inbox) {
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

pub(super) fn bad_message(peer: &str, error: &str) {
    metrics::counter!("edgerate_replication_bad_messages_total").increment(1);
    tracing::warn!(peer, error, "dropped a bad message from a peer");
}

/// Writes messages up to [`ORDERED_MAX`] bytes, in order, on one stream (a document's sync
/// messages must arrive in the order they were made); each larger one on a stream of its own,
/// a bounded number at once, so a whole-document transfer does not hold up live edits.
pub(super) async fn write_frames(conn: Connection, mut frames: mpsc::Receiver<Vec<u8>>) {
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
            } else {
                // A lost document message would hold back every later one of its document:
                // the link starts over instead.
                Close::Lost.on(&conn);
            }
        });
    }
}

fn sent(bytes: usize) {
    metrics::counter!("edgerate_replication_bytes_total", "direction" => "out")
        .increment(bytes as u64);
}
