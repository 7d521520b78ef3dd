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
    /// Pings and calls of one account in progress at once; default 64. A request that would
    /// go over it is answered 429 at once, never queued.
    #[serde(default = "default_parallel")]
    pub per_account: usize,
    /// Pings and calls in progress on this node, all accounts together; default 1024.
    #[serde(default = "default_node_wide")]
    pub max_calls: usize,
    /// Trunks a request may name with `trunk`, beside the default `trunk`: `host:port`, `host`
    /// (port 5060) or `host:*` (any port of that host). Default none: only the default trunk.
    #[serde(default)]
    pub trunks: Vec<String>,
}

impl Default for SipSection {
    fn default() -> Self {
        Self {
            trunk: None,
            listen: default_listen(),
            per_account: default_parallel(),
            max_calls: default_node_wide(),
            trunks: Vec::new(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

fn default_parallel() -> usize {
    64
}

fn default_node_wide() -> usize {
    1024
}

impl SipSection {
    /// Whether a request may send calls to `trunk` (as written in the request): the default
    /// trunk or one that `trunks` allows.
    pub fn allows(&self, trunk: &str) -> bool {
        let wanted = with_port(trunk);
        self.trunk
            .iter()
            .chain(&self.trunks)
            .any(|allowed| match allowed.strip_suffix(":*") {
                Some(host) => wanted
                    .rsplit_once(':')
                    .is_some_and(|(h, _)| h.eq_ignore_ascii_case(host)),
                None => with_port(allowed).eq_ignore_ascii_case(&wanted),
            })
    }
}

/// `host:port`, with port 5060 when `trunk` has none.
fn with_port(trunk: &str) -> String {
    if trunk
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        trunk.to_owned()
    } else {
        format!("{trunk}:5060")
    }
}

/// A trunk address: `host:port`, or `host` for port 5060.
pub async fn resolve_trunk(trunk: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(with_port(trunk)).await.ok()?.next()
}

/// Caps on pings and calls in progress: per account and for the whole node. Slots are taken
/// all at once for a request, or not at all: nothing waits for a slot.
#[derive(Debug)]
pub struct Slots {
    per_account: usize,
    node: Arc<Semaphore>,
    accounts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Which cap a request would go over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The account has this many calls in progress already (its cap).
    Account(usize),
    /// The node is at its cap.
    Node(usize),
}

/// Slots held for one request's calls; given back when dropped.
#[derive(Debug)]
pub struct Held {
    _account: tokio::sync::OwnedSemaphorePermit,
    _node: tokio::sync::OwnedSemaphorePermit,
}

impl Slots {
    pub fn new(per_account: usize, node_wide: usize) -> Self {
        Self {
            per_account: per_account.max(1),
            node: Arc::new(Semaphore::new(node_wide.max(1))),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// The per-account cap: a request for more slots than this can never be served.
    pub fn per_account(&self) -> usize {
        self.per_account
    }

    /// Takes `n` slots of `account` and of the node at once, or says which cap is full.
    pub fn take(&self, account: &str, n: usize) -> Result<Held, Busy> {
        let semaphore = self
            .accounts
            .lock()
            .entry(account.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_account)))
            .clone();
        let count = u32::try_from(n).unwrap_or(u32::MAX);
        let account_permit = semaphore
            .try_acquire_many_owned(count)
            .map_err(|_| Busy::Account(self.per_account))?;
        let node_permit = self
            .node
            .clone()
            .try_acquire_many_owned(count)
            .map_err(|_| Busy::Node(self.node.available_permits()))?;
        Ok(Held {
            _account: account_permit,
            _node: node_permit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunks_allowed() {
        let section = SipSection {
            trunk: Some("sip.example.net".into()),
            trunks: vec!["127.0.0.1:*".into(), "10.0.0.1:5070".into()],
            ..SipSection::default()
        };
        assert!(section.allows("sip.example.net"));
        assert!(section.allows("sip.example.net:5060"));
        assert!(!section.allows("sip.example.net:5061"));
        assert!(section.allows("127.0.0.1:40000"));
        assert!(section.allows("10.0.0.1:5070"));
        assert!(!section.allows("10.0.0.1"));
        assert!(!section.allows("evil.example.com:5060"));
        assert!(!SipSection::default().allows("127.0.0.1:5060"));
    }

    #[test]
    fn slots_are_taken_whole_or_not_at_all() {
        let slots = Slots::new(3, 4);
        let held = slots.take("a", 2).unwrap();
        assert_eq!(slots.take("a", 2).unwrap_err(), Busy::Account(3));
        let b = slots.take("b", 2).unwrap();
        assert!(matches!(slots.take("c", 1), Err(Busy::Node(_))));
        drop(held);
        drop(b);
        assert!(slots.take("a", 3).is_ok());
    }
}
