//! The replicated store of edgerate: Automerge documents on local disk (accounts, cards,
//! revisions, rule shards), the in-memory indexes built from them, the event log, and their
//! sync with peers over QUIC.

pub mod background;
pub mod backup;
pub mod bucketed;
pub mod catalog;
pub mod docstore;
pub mod eventlog;
pub mod layout;
pub mod sync;
pub mod transport;
pub mod usage;

pub use automerge::ActorId;
