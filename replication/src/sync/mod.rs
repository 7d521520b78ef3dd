//! Replication between two nodes, independent of the wire: what one node says to a peer and
//! what it does with what the peer says.
//!
//! - Documents: Automerge's sync protocol, one [`automerge::sync::State`] per document for the
//!   life of the connection. A local change marks its document for every peer (push); every
//!   anti-entropy tick marks every live document, which costs nothing for documents already in
//!   sync and catches up whatever was missed while cut off.
//! - Event log: the peer pulls by version vector ([`Message::LogPull`]), in batches; a local
//!   append sends [`Message::LogNotify`] so it pulls at once.
//! - The member list ([`Message::Members`]) is sent when a link opens, daily request counts
//!   ([`Message::Usage`]) at its first tick; then each at a tick when it changed, and every
//!   30 s.

mod lane;

pub use lane::{Done, Job};

use crate::background;
use crate::catalog::Catalog;
use crate::eventlog::{EventLog, Record};
use crate::usage::UsageBoard;
use automerge::sync;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use thiserror::Error;

/// Records per [`Message::LogRecords`] batch.
const LOG_BATCH: usize = 2_000;
/// Bytes of document messages held back, over all documents of one connection, while each waits
/// for an earlier message of its document (see [`Message::Doc`]).
const EARLY_BYTES: usize = 256 << 20;
/// What one held message counts for beyond its bytes.
const EARLY_OVERHEAD: usize = 64;
/// How long a document's messages may wait for an earlier one before the link is taken as
/// having lost it ([`PeerSync::stalled`]): far beyond the time a large message takes to arrive.
pub const EARLY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A peer's message could not be used.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Why [`PeerSync::handle`] did not use a peer's message.
#[derive(Debug, Error)]
pub enum HandleError {
    /// The message could not be applied; nothing changed.
    #[error("{0}")]
    Bad(String),
    /// Too many of the peer's messages arrived ahead of an earlier one of their document to be
    /// held: the connection must start over.
    #[error("{0} bytes of document messages wait for earlier ones")]
    TooFarAhead(usize),
}

/// A member of the cluster as nodes tell each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: String,
    pub region: String,
    /// Its QUIC address.
    pub addr: std::net::SocketAddr,
    /// In a hello: the sender's clock (unix milliseconds) when it sent it, so the receiver can
    /// see a skew. Absent in member lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_ms: Option<i64>,
    /// In a hello: the replication protocol the sender speaks ([`PROTOCOL`]), so a node meeting
    /// a newer one says so and refuses it rather than misread its messages. Absent in member
    /// lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
}

/// The replication protocol this build speaks: the version in its ALPN name (`edgerate/3`) and
/// in its hellos.
pub const PROTOCOL: u32 = 3;

/// What nodes say to each other.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Who I am (first message of a connection, both ways).
    Hello(MemberInfo),
    /// An Automerge sync message for one document, numbered `seq` (from 0) among that
    /// document's messages on this connection. A large message travels on a stream of its own
    /// and a later small one can overtake it, while Automerge's sync state must see a peer's
    /// messages in the order they were made (applied out of order, a peer's last word on its
    /// heads can be an old one, and the lag figure never settles): the receiver applies them by
    /// number.
    Doc { id: String, seq: u64, sync: Vec<u8> },
    /// Send me the records I lack: I have these sequences per origin.
    LogPull(HashMap<String, u64>),
    /// Records you lacked; `more` when another pull would bring more.
    LogRecords { records: Vec<Record>, more: bool },
    /// I have new records.
    LogNotify,
    /// My request counts per account on UTC day `day`.
    Usage {
        day: i64,
        counts: HashMap<String, u64>,
    },
    /// Everyone I know.
    Members(Vec<MemberInfo>),
}

/// Bodies of [`Message::LogRecords`] and [`Message::Usage`]: borrowed to send, owned received.
#[derive(Serialize, Deserialize)]
struct Records<R> {
    records: R,
    more: bool,
}

#[derive(Serialize, Deserialize)]
struct Usage<C> {
    day: i64,
    counts: C,
}

fn json<T: Serialize + ?Sized>(tag: u8, value: &T) -> Vec<u8> {
    let mut out = vec![tag];
    serde_json::to_writer(&mut out, value).expect("wire types serialise");
    out
}

impl Message {
    /// One byte of type, then the body: JSON, or for documents `id length (u16 LE), id,
    /// seq (u64 LE), Automerge bytes`.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Hello(m) => json(1, m),
            Self::Doc { id, seq, sync } => {
                let mut out = Vec::with_capacity(11 + id.len() + sync.len());
                out.push(2);
                out.extend_from_slice(&(id.len() as u16).to_le_bytes());
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(sync);
                out
            }
            Self::LogPull(have) => json(3, have),
            Self::LogRecords { records, more } => json(
                4,
                &Records {
                    records: &records[..],
                    more: *more,
                },
            ),
            Self::LogNotify => vec![5],
            Self::Usage { day, counts } => json(6, &Usage { day: *day, counts }),
            Self::Members(members) => json(7, members),
        }
    }

    /// Parses a message; anything malformed is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (&tag, body) = bytes.split_first().ok_or(WireError::Empty)?;
        let bad = |e: serde_json::Error| WireError::Malformed(e.to_string());
        Ok(match tag {
            1 => Self::Hello(serde_json::from_slice(body).map_err(bad)?),
            2 => {
                let len = body
                    .get(..2)
                    .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
                    .ok_or_else(|| WireError::Malformed("short document message".into()))?;
                let id = body
                    .get(2..2 + len)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .ok_or_else(|| WireError::Malformed("bad document id".into()))?;
                let seq = body
                    .get(2 + len..10 + len)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .ok_or_else(|| WireError::Malformed("short document message".into()))?;
                Self::Doc {
                    id: id.to_owned(),
                    seq,
                    sync: body[10 + len..].to_vec(),
                }
            }
            3 => Self::LogPull(serde_json::from_slice(body).map_err(bad)?),
            4 => {
                let r: Records<Vec<Record>> = serde_json::from_slice(body).map_err(bad)?;
                Self::LogRecords {
                    records: r.records,
                    more: r.more,
                }
            }
            5 => Self::LogNotify,
            6 => {
                let u: Usage<HashMap<String, u64>> = serde_json::from_slice(body).map_err(bad)?;
                Self::Usage {
                    day: u.day,
                    counts: u.counts,
                }
            }
            7 => Self::Members(serde_json::from_slice(body).map_err(bad)?),
            other => return Err(WireError::UnknownType(other)),
        })
    }
}

/// What a node replicates: its documents, its event log and its request counts.
#[derive(Clone)]
pub struct Replica {
    pub catalog: Catalog,
    pub log: Arc<EventLog>,
    pub usage: Arc<UsageBoard>,
}

/// One node's side of the conversation with one peer, for the life of a connection.
pub struct PeerSync {
    replica: Replica,
    peer: String,
    /// Per document: its sync state and the order of its messages.
    links: HashMap<String, DocLink>,
    /// Bytes held in every [`DocLink::early`], and of the messages the lane is applying.
    early_bytes: usize,
    dirty: BTreeSet<String>,
    /// The peer's version vector, as of its last pull.
    their_log: HashMap<String, u64>,
    /// Where heavy work goes ([`lane`]); without one (tests), it is done inline.
    lane: Option<std::sync::mpsc::Sender<Job>>,
}

impl PeerSync {
    pub fn new(replica: Replica, peer: String) -> Self {
        Self {
            replica,
            peer,
            links: HashMap::new(),
            early_bytes: 0,
            dirty: BTreeSet::new(),
            their_log: HashMap::new(),
            lane: None,
        }
    }

    /// Sends heavy work to `lane`, whose jobs come back through [`Self::complete`].
    pub fn with_lane(mut self, lane: std::sync::mpsc::Sender<Job>) -> Self {
        self.lane = Some(lane);
        self
    }

    /// Marks a document changed here: it is offered to the peer at the next [`Self::flush`].
    pub fn mark(&mut self, doc: &str) {
        self.dirty.insert(doc.to_owned());
    }

    /// Anti-entropy, and the opening of a connection: offers every live document, and pulls
    /// the log.
    pub fn tick(&mut self, out: &mut Vec<Message>) {
        self.dirty.extend(self.replica.catalog.live_docs());
        self.pull(out);
    }

    fn pull(&self, out: &mut Vec<Message>) {
        match self.replica.log.version_vector() {
            Ok(have) => out.push(Message::LogPull(have)),
            Err(e) => tracing::warn!(error = %e, "reading the log's version vector"),
        }
    }

    /// Handles one message from the peer; replies go to `out`. A message that cannot be
    /// applied is an error and changes nothing.
    pub fn handle(&mut self, message: Message, out: &mut Vec<Message>) -> Result<(), HandleError> {
        let bad = |e: String| HandleError::Bad(e);
        match message {
            Message::Doc { id, seq, sync } => {
                if !crate::docstore::valid_id(&id) {
                    return Err(bad(format!("bad document id {id:?}")));
                }
                let order = self.links.entry(id.clone()).or_default();
                if seq < order.next || order.early.contains_key(&seq) {
                    return Err(bad(format!("{id}: message {seq} again")));
                }
                self.early_bytes += EARLY_OVERHEAD + sync.len();
                order.early.insert(seq, sync);
                if self.early_bytes > EARLY_BYTES {
                    return Err(HandleError::TooFarAhead(self.early_bytes));
                }
                self.deliver(&id, None)?;
            }
            Message::LogPull(have) => {
                let (records, more) = self.records_for(&have).map_err(|e| bad(e.to_string()))?;
                self.their_log = have;
                out.push(Message::LogRecords { records, more });
            }
            Message::LogRecords { records, more } => {
                if records
                    .iter()
                    .any(|r| r.origin == self.replica.log.origin())
                {
                    return Err(bad("records claiming this node as their origin".into()));
                }
                self.replica
                    .log
                    .apply(&records)
                    .map_err(|e| bad(e.to_string()))?;
                if more {
                    self.pull(out);
                }
            }
            Message::LogNotify => self.pull(out),
            Message::Usage { day, counts } => self.replica.usage.set(&self.peer, day, counts),
            Message::Hello(_) | Message::Members(_) => {}
        }
        Ok(())
    }

    /// Applies document `id`'s messages that are next in order, unless a job holds it: each
    /// here, or one of a revision still arriving on the lane (then the rest wait for it). A
    /// message that cannot be used is skipped, and the ones after it go on (a sync state copes
    /// with a lost message, not with a stalled document); the last one's failure is returned
    /// (`failed`: one from before, a job's). A document with a message used is marked, to
    /// answer it.
    fn deliver(&mut self, id: &str, mut failed: Option<String>) -> Result<(), HandleError> {
        let mut used = false;
        while let Some(link) = self.links.get_mut(id).filter(|l| !l.busy) {
            let Some(bytes) = link.early.remove(&link.next) else {
                break;
            };
            link.next += 1;
            used = true;
            // Not the last: the one before is dropped, and said so here.
            if let Some(e) = failed.take() {
                tracing::warn!(peer = %self.peer, error = %e, "dropped a bad document message");
            }
            let weight = EARLY_OVERHEAD + bytes.len();
            let message = match sync::Message::decode(&bytes) {
                Ok(message) => message,
                Err(e) => {
                    self.early_bytes -= weight;
                    failed = Some(format!("{id}: {e}"));
                    continue;
                }
            };
            let lane = self
                .lane
                .as_ref()
                .filter(|_| self.replica.catalog.is_arriving(id));
            let Some(lane) = lane else {
                self.early_bytes -= weight;
                failed = self.apply_doc(id, message).err();
                continue;
            };
            // Still counted while it waits for the lane, and taken off once done.
            link.queued = weight;
            link.hand_over(lane, id, lane::Work::Receive(message));
            break;
        }
        if let Some(link) = self.links.get_mut(id) {
            // A message waits for an earlier one that has not come.
            let gap = link.early.keys().next().is_some_and(|seq| *seq > link.next);
            if !gap {
                link.waiting = None;
            } else if link.waiting.is_none() {
                link.waiting = Some(std::time::Instant::now());
            }
        }
        if used {
            self.dirty.insert(id.to_owned());
        }
        match failed {
            Some(e) => Err(HandleError::Bad(e)),
            None => Ok(()),
        }
    }

    /// Applies one of the peer's sync messages for document `id`.
    fn apply_doc(&mut self, id: &str, message: sync::Message) -> Result<(), String> {
        let link = self.links.entry(id.to_owned()).or_default();
        self.replica
            .catalog
            .receive(id, &mut link.doc.state, message)
            .map_err(|e| format!("{id}: {e}"))
    }

    /// Takes back a document from the lane: its state, our message composed for the peer
    /// (sent now, numbered in order), or the outcome of applying the peer's; then its messages
    /// that waited.
    pub fn complete(&mut self, done: Done, out: &mut Vec<Message>) -> Result<(), HandleError> {
        let Done { id, doc, outcome } = done;
        let link = self.links.entry(id.clone()).or_default();
        link.busy = false;
        link.doc = doc;
        self.early_bytes -= std::mem::take(&mut link.queued);
        let failed = match outcome {
            lane::Outcome::Offered(message) => {
                if let Some(message) = message {
                    link.send(id.clone(), message, out);
                }
                None
            }
            lane::Outcome::Received(result) => {
                self.dirty.insert(id.clone());
                result.err()
            }
            lane::Outcome::Failed(e) => {
                tracing::error!(peer = %self.peer, doc = %id, error = %e, "bulk work failed; the document's sync starts over");
                self.dirty.insert(id.clone());
                None
            }
        };
        self.deliver(&id, failed)
    }

    /// Records the peer lacks by its version vector, at most one batch.
    fn records_for(
        &self,
        have: &HashMap<String, u64>,
    ) -> Result<(Vec<Record>, bool), crate::eventlog::LogError> {
        let mut records = Vec::new();
        let mut more = false;
        for (origin, ours) in self.replica.log.version_vector()? {
            let theirs = have.get(&origin).copied().unwrap_or(0);
            if ours <= theirs {
                continue;
            }
            let room = LOG_BATCH - records.len();
            if room == 0 {
                more = true;
                break;
            }
            let batch = self.replica.log.since(&origin, theirs, room)?;
            more |= batch.last().is_some_and(|r| r.seq < ours);
            records.extend(batch);
        }
        Ok((records, more))
    }

    /// Sync messages for every marked document that has something to say.
    ///
    /// Automerge says nothing back to a message that brings no changes and names heads equal
    /// to ours: it takes the peer to know them. But the peer may have them from a third node
    /// and not from us, and then it never learns that we hold them too (its lag figure for the
    /// document never settles). So whenever Automerge would stay silent while the heads we last
    /// told this peer are not our heads, we tell them.
    ///
    /// A document the peer said it lacks goes whole, and Automerge saves it for the message:
    /// for the shards of an imported deck, ~0.6 s of compression a million rules. Those are
    /// made on the link's bulk lane ([`lane`]) at the background priority
    /// ([`background::lowered`]), so the queries of a node sharing the cores go first and the
    /// link's other messages are not held up; without a lane, here, after the others. The
    /// others (edits) are made right away.
    pub fn flush(&mut self, out: &mut Vec<Message>) {
        let docs = self.replica.catalog.docs().clone();
        let links = &mut self.links;
        // A document a job holds stays marked until it comes back.
        let (held, ready): (BTreeSet<String>, BTreeSet<String>) = std::mem::take(&mut self.dirty)
            .into_iter()
            .partition(|id| links.get(id).is_some_and(|l| l.busy));
        self.dirty = held;
        // A document removed here meanwhile has nothing to say (and would come back marked).
        let ready = ready.into_iter().filter(|id| docs.get(id).is_some());
        let (whole, edits): (Vec<String>, Vec<String>) = ready.partition(|id| {
            links
                .get(id)
                .is_some_and(|l| l.doc.state.their_heads.as_deref() == Some(&[]))
        });
        for id in edits {
            offer(&docs, links, id, out);
        }
        // Whole documents go to the lane; composed here without one.
        match &self.lane {
            Some(lane) => {
                for id in whole {
                    let link = links.entry(id.clone()).or_default();
                    link.hand_over(lane, &id, lane::Work::Offer);
                }
            }
            None if !whole.is_empty() => background::lowered(|| {
                for id in whole {
                    offer(&docs, links, id, out);
                }
            }),
            None => {}
        }
    }

    /// Whether a document's messages have waited over [`EARLY_WAIT`] for an earlier one that
    /// must have been lost (a stream that failed): the link must start over.
    pub fn stalled(&self) -> bool {
        self.links
            .values()
            .any(|l| l.waiting.is_some_and(|t| t.elapsed() > EARLY_WAIT))
    }

    /// Live documents not yet known identical on the peer, plus log records it lacks.
    pub fn lag(&self) -> u64 {
        let docs = self.replica.catalog.docs();
        let behind_docs = self
            .replica
            .catalog
            .live_docs()
            .iter()
            .filter(|id| {
                let theirs = self
                    .links
                    .get(*id)
                    .and_then(|l| l.doc.state.their_heads.clone());
                docs.heads(id) != theirs
            })
            .count() as u64;
        let behind_records: u64 = self
            .replica
            .log
            .version_vector()
            .map(|vv| {
                vv.iter()
                    .map(|(o, s)| s.saturating_sub(self.their_log.get(o).copied().unwrap_or(0)))
                    .sum()
            })
            .unwrap_or(0);
        behind_docs + behind_records
    }
}

/// Adds to `out` our next sync message for document `id`, if there is anything to say.
fn offer(
    docs: &crate::docstore::DocStore,
    links: &mut HashMap<String, DocLink>,
    id: String,
    out: &mut Vec<Message>,
) {
    let link = links.entry(id.clone()).or_default();
    if let Some(message) = compose(docs, &id, &mut link.doc) {
        link.send(id, message, out);
    }
}

/// Our next sync message for document `id`, if there is anything to say (what we told the peer
/// updated).
fn compose(
    docs: &crate::docstore::DocStore,
    id: &str,
    doc: &mut lane::DocState,
) -> Option<sync::Message> {
    let lane::DocState { state, told } = doc;
    assume_sent_whole(state, told);
    let mut message = docs.generate_sync(id, state);
    if message.is_none() {
        let ours = docs.heads(id);
        let agreed = ours.is_some() && state.their_heads == ours;
        if agreed && ours.as_ref() != Some(told) {
            state.last_sent_heads.clear();
            message = docs.generate_sync(id, state);
        }
    }
    let mut message = message?;
    add_unsent_heads(docs, id, state, &mut message);
    told.clone_from(&message.heads);
    Some(message)
}

/// A document sent whole to a peer that said it had nothing (Automerge sends the whole document
/// then) is taken to be there from then on: the peer applies this document's messages in order,
/// so whatever we send next arrives after it. Without this, an edit made before the peer's
/// answer to the whole document arrives would send the whole document again (a shard of 100k
/// rules, just imported: hundreds of ms for one rule). If the peer could not apply it, it says
/// again that it has nothing, which clears what was sent, and the document goes whole again.
fn assume_sent_whole(state: &mut sync::State, told: &[automerge::ChangeHash]) {
    if state.their_heads.as_deref() == Some(&[])
        && !state.sent_hashes.is_empty()
        && !told.is_empty()
    {
        state.their_heads = Some(told.to_vec());
    }
}

/// Adds to `message` the changes of our heads that the peer is not known to have and that were
/// never sent to it. Automerge leaves out of a message every change the peer's Bloom filter says
/// it has, and about one such claim in a hundred is false: that change then waits until the
/// peer asks for it, a second round trip (the tail of an edit's visibility across a WAN). A new
/// change is always a head, so it now travels in the first message that names it. Only once the
/// peer has spoken on this link (its heads known): a first offer carries heads alone.
fn add_unsent_heads(
    docs: &crate::docstore::DocStore,
    id: &str,
    state: &mut sync::State,
    message: &mut sync::Message,
) {
    let Some(theirs) = state.their_heads.as_deref() else {
        return;
    };
    let unsent: Vec<automerge::ChangeHash> = message
        .heads
        .iter()
        .filter(|h| !theirs.contains(h) && !state.sent_hashes.contains(h))
        .copied()
        .collect();
    if unsent.is_empty() {
        return;
    }
    let found = docs.inspect(id, |d| {
        unsent
            .iter()
            .filter_map(|h| d.get_change_by_hash(h).map(|c| c.raw_bytes().to_vec()))
            .collect::<Vec<_>>()
    });
    let Some(found) = found.filter(|f| !f.is_empty()) else {
        return;
    };
    let mut chunks: Vec<Vec<u8>> = message.changes.iter().map(<[u8]>::to_vec).collect();
    chunks.extend(found);
    message.changes = chunks.into();
    state.sent_hashes.extend(unsent);
}

/// One document's side of one connection: its Automerge sync state and what we last told the
/// peer, and the numbering of its messages (see [`Message::Doc`]).
#[derive(Default)]
struct DocLink {
    /// Away on the lane while `busy`.
    doc: lane::DocState,
    /// A job of the lane holds `doc`: the document is neither offered nor applied meanwhile.
    busy: bool,
    /// What the message a job applies counts in [`PeerSync::early_bytes`] until it is done.
    queued: usize,
    /// Our next message's number.
    sent: u64,
    /// The peer's next message's number.
    next: u64,
    /// The peer's messages not yet applied, by number: numbered after `next`, or held while
    /// `busy`.
    early: std::collections::BTreeMap<u64, Vec<u8>>,
    /// Since when `early` has held a message that waits for an earlier one that has not come.
    waiting: Option<std::time::Instant>,
}

impl DocLink {
    /// Hands the document to the lane for `work`: it is busy until the job comes back. The
    /// lane's thread ends only with the link (when its inputs are gone), so a job it can no
    /// longer take goes with the link.
    fn hand_over(&mut self, lane: &std::sync::mpsc::Sender<Job>, id: &str, work: lane::Work) {
        self.busy = true;
        let job = Job {
            id: id.to_owned(),
            doc: std::mem::take(&mut self.doc),
            work,
        };
        if lane.send(job).is_err() {
            tracing::debug!(doc = id, "the bulk lane is gone with its link");
        }
    }

    /// Sends our next message, numbered in order.
    fn send(&mut self, id: String, message: sync::Message, out: &mut Vec<Message>) {
        let seq = self.sent;
        self.sent += 1;
        out.push(Message::Doc {
            id,
            seq,
            sync: message.encode(),
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_alpn_name_carries_the_protocol_version() {
        assert_eq!(
            edgerate_topology::tls::ALPN,
            format!("edgerate/{PROTOCOL}").as_bytes()
        );
    }

    use super::*;
    use automerge::sync::SyncDoc;
    use proptest::prelude::*;

    /// A new change the peer's Bloom filter wrongly claims it has still travels in the first
    /// message that names it.
    #[test]
    fn a_new_change_is_sent_whatever_the_peers_bloom_filter_says() {
        use automerge::transaction::Transactable;
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let open = |dir: &std::path::Path, actor: u8| {
            crate::docstore::DocStore::open(
                dir,
                &dir.join("q"),
                automerge::ActorId::from(&[actor; 16][..]),
            )
            .unwrap()
        };
        let (a, b) = (open(a_dir.path(), 1), open(b_dir.path(), 2));
        a.create::<_, crate::docstore::StoreError>("d", |d| {
            d.put(automerge::ROOT, "k", 1)?;
            Ok(())
        })
        .unwrap();
        let (mut to_b, mut to_a) = (sync::State::new(), sync::State::new());
        for _ in 0..10 {
            let mut quiet = true;
            if let Some(m) = a.generate_sync("d", &mut to_b) {
                quiet = false;
                b.receive_sync("d", &mut to_a, m).unwrap();
            }
            if let Some(m) = b.generate_sync("d", &mut to_a) {
                quiet = false;
                a.receive_sync("d", &mut to_b, m).unwrap();
            }
            if quiet {
                break;
            }
        }
        let shared = a.heads("d").unwrap();
        assert_eq!(b.heads("d"), Some(shared.clone()));
        a.change::<_, crate::docstore::StoreError>("d", |d| {
            d.put(automerge::ROOT, "k", 2)?;
            Ok(())
        })
        .unwrap();
        let new = a.heads("d").unwrap();
        // The peer's last summary, as if its Bloom filter matched the new change by chance.
        to_b.their_have = Some(vec![sync::Have {
            last_sync: shared,
            bloom: sync::BloomFilter::from_hashes(new.iter()),
        }]);
        let mut message = a.generate_sync("d", &mut to_b).unwrap();
        assert!(message.changes.is_empty(), "Automerge leaves it out");
        add_unsent_heads(&a, "d", &mut to_b, &mut message);
        let message = sync::Message::decode(&message.encode()).unwrap();
        b.receive_sync("d", &mut to_a, message).unwrap();
        assert_eq!(b.heads("d"), Some(new), "one message brought it");
    }

    #[test]
    fn every_message_survives_the_wire() {
        let member = MemberInfo {
            id: "lon-1".into(),
            region: "uk".into(),
            addr: "127.0.0.1:7080".parse().unwrap(),
            clock_ms: Some(1_700_000_000_000),
            protocol: Some(PROTOCOL),
        };
        for message in [
            Message::Hello(member.clone()),
            Message::Doc {
                id: "cards".into(),
                seq: 7,
                sync: vec![0x42, 1, 2, 3],
            },
            Message::LogPull(HashMap::from([("lon-1".into(), 7)])),
            Message::LogRecords {
                records: Vec::new(),
                more: true,
            },
            Message::LogNotify,
            Message::Usage {
                day: 20_000,
                counts: HashMap::from([("acc".into(), 3)]),
            },
            Message::Members(vec![member]),
        ] {
            assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        }
    }

    proptest! {
        #[test]
        fn garbage_from_a_peer_is_an_error_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Message::Doc { sync, .. }) = Message::decode(&bytes) {
                let _ = sync::Message::decode(&sync);
            }
        }
    }

    #[test]
    fn a_bad_sync_message_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path(), automerge::ActorId::random()).unwrap();
        let log = EventLog::open(&dir.path().join("events.sqlite"), "a", &[404], 0).unwrap();
        let replica = Replica {
            catalog: catalog.clone(),
            log: Arc::new(log),
            usage: Arc::default(),
        };
        let mut peer = PeerSync::new(replica, "b".into());
        let before = catalog.docs().heads("accounts");
        let mut out = Vec::new();
        let bad = Message::Doc {
            id: "accounts".into(),
            seq: 0,
            sync: vec![0x42, 0xff, 0xff],
        };
        assert!(peer.handle(bad, &mut out).is_err());
        let valid = automerge::AutoCommit::new()
            .sync()
            .generate_sync_message(&mut sync::State::new())
            .unwrap()
            .encode();
        let escape = Message::Doc {
            id: "../etc".into(),
            seq: 0,
            sync: valid,
        };
        assert!(peer.handle(escape, &mut out).is_err());
        assert_eq!(catalog.docs().heads("accounts"), before);
        assert!(out.is_empty());
    }
}
