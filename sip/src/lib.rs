//! The SIP user agent for number ping and call origination: SIP over UDP to a trunk, with
//! `rsip` for the messages (parsing and rendering; chosen over `rsipstack` because edgerate
//! needs only a client with a handful of flows, and a full stack would bring its own transport
//! layer and dialog layer to configure around them).

pub mod agent;
pub mod message;

pub use agent::{Invite, Outcome, UserAgent};

use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// `[sip]`: where pings and calls are sent from and to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSection {
    /// The default trunk, `host:port` (port 5060 when left out).
    pub trunk: Option<String>,
    /// The UDP address the user agent sends from; default any interface, a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Pings and calls of one account in progress at once; default 64.
    #[serde(default = "default_parallel")]
    pub per_account: usize,
}

impl Default for SipSection {
    fn default() -> Self {
        Self {
            trunk: None,
            listen: default_listen(),
            per_account: default_parallel(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

fn default_parallel() -> usize {
    64
}

/// A trunk address: `host:port`, or `host` for port 5060.
pub async fn resolve_trunk(trunk: &str) -> Option<SocketAddr> {
    let with_port = if trunk
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        trunk.to_owned()
    } else {
        format!("{trunk}:5060")
    };
    tokio::net::lookup_host(with_port).await.ok()?.next()
}

/// Per-account caps on pings and calls in progress.
#[derive(Debug)]
pub struct Slots {
    per_account: usize,
    accounts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Slots {
    pub fn new(per_account: usize) -> Self {
        Self {
            per_account: per_account.max(1),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// The account's semaphore.
    pub fn of(&self, account: &str) -> Arc<Semaphore> {
        self.accounts
            .lock()
            .entry(account.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_account)))
            .clone()
    }
}
