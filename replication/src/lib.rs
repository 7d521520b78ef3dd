//! The replicated store of edgerate: Automerge documents on local disk (accounts, cards,
//! revisions, rule shards), the in-memory indexes built from them, and (with the replication
//! work) their sync with peers over QUIC.

pub mod bucketed;
pub mod catalog;
pub mod docstore;
pub mod eventlog;

pub use automerge::ActorId;
