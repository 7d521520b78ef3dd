//! The bulk lane of a link: its heavy work done beside its sync thread, so the small messages
//! behind it (a rule edit, both ways) are not held up for seconds. Heavy is a document sent
//! whole to a peer that lacks it (a shard of an imported deck: Automerge saves the document for
//! the message) and a peer's message for a document of a revision still arriving (written and
//! indexed at the background priority, [`Catalog::receive`]).
//!
//! A document's work is never split between the two: while a job holds a document's sync
//! state, the link neither offers that document nor applies its messages, which wait in order
//! ([`super::PeerSync::complete`] takes them up). Documents' messages may be applied out of
//! order across documents already (a large one travels on a stream of its own), and the
//! catalog takes them in any order.
//!
//! [`Catalog::receive`]: crate::catalog::Catalog::receive

use super::{compose, Replica};
use crate::background;
use automerge::sync;
use automerge::ChangeHash;

/// One document's side of a link, as a job takes it away and gives it back.
#[derive(Default)]
pub(super) struct DocState {
    pub(super) state: sync::State,
    /// The heads our last message to the peer named.
    pub(super) told: Vec<ChangeHash>,
}

/// Heavy work on one document of a link.
pub struct Job {
    pub(super) id: String,
    pub(super) doc: DocState,
    pub(super) work: Work,
}

pub(super) enum Work {
    /// Apply this message of the peer's.
    Receive(sync::Message),
    /// Compose our next message (the document whole).
    Offer,
}

/// A job done: the document's state, back to the link.
pub struct Done {
    pub(super) id: String,
    pub(super) doc: DocState,
    pub(super) outcome: Outcome,
}

pub(super) enum Outcome {
    Received(Result<(), String>),
    Offered(Option<sync::Message>),
    /// The work itself failed (it panicked): not the peer's doing.
    Failed(String),
}

impl Job {
    /// Does the work (on the lane's thread).
    pub fn run(self, replica: &Replica) -> Done {
        let Job { id, mut doc, work } = self;
        let outcome = match work {
            Work::Receive(message) => Outcome::Received(
                replica
                    .catalog
                    .receive(&id, &mut doc.state, message)
                    .map_err(|e| format!("{id}: {e}")),
            ),
            Work::Offer => {
                let docs = replica.catalog.docs();
                Outcome::Offered(background::lowered(|| compose(docs, &id, &mut doc)))
            }
        };
        Done { id, doc, outcome }
    }

    /// What is given back when the work failed without an answer (it panicked): the document
    /// starts its conversation with the peer over, from a fresh sync state, as after a lost
    /// message.
    pub fn failed(id: String) -> Done {
        Done {
            outcome: Outcome::Failed(format!("{id}: the bulk work panicked")),
            id,
            doc: DocState::default(),
        }
    }

    /// The document the job works on.
    pub fn id(&self) -> &str {
        &self.id
    }
}
