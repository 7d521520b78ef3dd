//! The QUIC endpoint: binding it with the cluster's TLS configs, the accept loop, dial rounds
//! to members and seeds with backoff, the isolation switch, and shutdown.

use super::session::{greet, Direction};
use super::worker::Input;
use super::{
    Close, Live, PeerError, Shared, Transport, TransportConfig, TransportError, HANDSHAKE_TIMEOUT,
    TICK,
};
use crate::sync::{MemberInfo, Replica};
use edgerate_topology::membership::{is_dialable, Members, PeerState};
use edgerate_topology::TopologyError;
use parking_lot::Mutex;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, Endpoint};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Dial attempts and the isolation switch are checked this often.
const DIAL_EVERY: Duration = Duration::from_millis(250);
/// Redials of one target after failures wait from this, doubling up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Something to dial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Target {
    /// A member, by node id.
    Member(String),
    /// A seed as configured (`host:port`), while the node answering there is unknown.
    Seed(String),
}

pub(super) struct Backoff {
    next: Instant,
    wait: Duration,
}

/// Binds the QUIC endpoint and starts replicating with peers until `stop`.
pub fn start(
    config: TransportConfig,
    replica: Replica,
    members: Arc<Members>,
    stop: watch::Receiver<bool>,
) -> Result<Transport, TransportError> {
    if let Some(addr) = config.advertise.filter(|a| !is_dialable(*a)) {
        return Err(TopologyError::BadAdvertise { addr }.into());
    }
    match members.recall(&config.members_file) {
        Ok(n) => tracing::info!(members = n, "members remembered from the last run"),
        Err(e) => tracing::warn!(error = %e, "could not read the members remembered"),
    }
    let server = QuicServerConfig::try_from(config.tls.server.clone())?;
    let client = QuicClientConfig::try_from(config.tls.client.clone())?;
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
        hello: MemberInfo {
            id: config.id,
            region: config.region,
            addr: hello_addr(config.advertise, local_addr),
            clock_ms: None,
            protocol: None,
        },
        advertise: config.advertise,
        replica,
        members,
        tls: config.tls,
        endpoint,
        isolate: config.isolate,
        members_file: config.members_file,
        seeds: config.seeds,
        seed_ids: Mutex::new(HashMap::new()),
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

/// The address a hello carries: `advertise`, else the unspecified IP of the listener's family
/// with its port, which tells the peer the port and leaves the IP to what it observes (older
/// nodes read an unspecified IP the same way).
fn hello_addr(advertise: Option<SocketAddr>, local: SocketAddr) -> SocketAddr {
    advertise.unwrap_or_else(|| {
        let any = match local.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        SocketAddr::new(any, local.port())
    })
}

fn tell_all(shared: &Weak<Shared>, input: impl Fn() -> Input) {
    if let Some(shared) = shared.upgrade() {
        for live in shared.live.lock().values() {
            live.inbox.push(input());
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
            _ = dial.tick() => {
                if let Err(e) = shared.members.remember(&shared.members_file) {
                    tracing::debug!(error = %e, "could not remember the members");
                }
                dial_round(&shared);
            }
            _ = tick.tick() => tell_all(&Arc::downgrade(&shared), || Input::Tick),
        }
    }
    accept.abort();
    shared.endpoint.close(
        Close::Shutdown.code().into(),
        Close::Shutdown.as_str().as_bytes(),
    );
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
                Ok(Ok(conn)) => match greet(&shared, conn, Direction::Inbound, None).await {
                    Ok(_) | Err(PeerError::Myself) => {}
                    Err(e) => tracing::warn!(%remote, error = %e, "peer handshake failed"),
                },
                Ok(Err(e)) => refused(&shared, remote, &e),
                Err(_) => tracing::debug!(%remote, "peer handshake timed out"),
            }
        });
    }
}

/// Whether a connection failed in its TLS handshake (a QUIC crypto error, 0x100-0x1ff: a
/// certificate refused by either side, no common protocol).
fn tls_failed(error: &ConnectionError) -> bool {
    tls_alert(error).is_some()
}

/// The TLS alert a connection failed with (its QUIC crypto error is 0x100 plus the alert).
fn tls_alert(error: &ConnectionError) -> Option<u8> {
    let code = match error {
        ConnectionError::TransportError(e) => e.code,
        ConnectionError::ConnectionClosed(close) => close.error_code,
        _ => return None,
    };
    u64::from(code)
        .checked_sub(0x100)
        .and_then(|alert| u8::try_from(alert).ok())
}

/// TLS alert 120: the two ends share no ALPN protocol (another replication protocol version).
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// A failed TLS handshake: counted and logged, nothing more. The attempt is not a member (it
/// never authenticated), so it is not recorded where peers are: anyone can knock.
fn refused(shared: &Shared, addr: SocketAddr, error: &ConnectionError) {
    if let Some(name) = shared.tls.refusals.take() {
        metrics::counter!("edgerate_peer_refused_total").increment(1);
        tracing::warn!(%addr, peer = %name, %error, "refused a peer: certificate not signed by the cluster CA");
    } else if tls_alert(error) == Some(NO_APPLICATION_PROTOCOL) {
        metrics::counter!("edgerate_peer_refused_total").increment(1);
        tracing::warn!(%addr, %error, ours = %String::from_utf8_lossy(edgerate_topology::tls::ALPN),
            "refused a peer of another replication protocol version (ALPN): run one edgerate version \
             across the cluster, or upgrade node by node as docs/operations.md says");
    } else if tls_failed(error) {
        metrics::counter!("edgerate_peer_refused_total").increment(1);
        tracing::warn!(%addr, %error, "a peer refused this node's certificate");
    } else {
        tracing::debug!(%addr, %error, "could not connect to a peer");
    }
}

/// Dials, with backoff, every member this node has no live connection to and every seed whose
/// node is not known yet; or, while isolated, drops every connection.
fn dial_round(shared: &Arc<Shared>) {
    if isolated(shared) {
        let dropped: Vec<Live> = shared.live.lock().drain().map(|(_, l)| l).collect();
        for live in dropped {
            Close::Isolated.on(&live.conn);
        }
        return;
    }
    let mut targets: Vec<(Target, Option<SocketAddr>)> = {
        let live = shared.live.lock();
        shared
            .members
            .dialable()
            .into_iter()
            .filter(|(id, _)| live.get(id).is_none_or(|l| l.conn.close_reason().is_some()))
            .map(|(id, addr)| (Target::Member(id), Some(addr)))
            .collect()
    };
    {
        let known = shared.seed_ids.lock();
        targets.extend(
            shared
                .seeds
                .iter()
                .filter(|seed| !known.contains_key(*seed))
                .map(|seed| (Target::Seed(seed.clone()), None)),
        );
    }
    let now = Instant::now();
    for (target, addr) in targets {
        let due = shared
            .backoff
            .lock()
            .get(&target)
            .is_none_or(|b| now >= b.next);
        if !due || !shared.dialing.lock().insert(target.clone()) {
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = dial_target(&shared, &target, addr).await;
            shared.dialing.lock().remove(&target);
            match result {
                Ok(()) => {
                    shared.backoff.lock().remove(&target);
                }
                Err(e) => {
                    tracing::debug!(?target, error = %e, "dial failed");
                    if let Target::Member(id) = &target {
                        shared.members.update(id, |p| {
                            if p.state == PeerState::Connecting {
                                p.state = PeerState::Down;
                            }
                        });
                    }
                    let mut backoff = shared.backoff.lock();
                    let wait = backoff
                        .get(&target)
                        .map_or(MIN_BACKOFF, |b| (b.wait * 2).min(MAX_BACKOFF));
                    backoff.insert(
                        target,
                        Backoff {
                            next: Instant::now() + wait,
                            wait,
                        },
                    );
                }
            }
        });
    }
}

/// Dials one target: a member at `addr`, or a seed (resolved here, so a slow DNS answer holds
/// up only this dial). Learns which node a seed is once it answered.
async fn dial_target(
    shared: &Arc<Shared>,
    target: &Target,
    addr: Option<SocketAddr>,
) -> Result<(), PeerError> {
    let seed = match (target, addr) {
        (Target::Member(id), Some(addr)) => {
            return dial(shared, addr, Some(id)).await.map(drop);
        }
        (Target::Member(id), None) => return Err(PeerError::NoAddress { id: id.clone() }),
        (Target::Seed(seed), _) => seed,
    };
    let addr = tokio::net::lookup_host(seed.as_str())
        .await
        .map_err(|source| PeerError::Resolve {
            seed: seed.clone(),
            source,
        })?
        .find(|a| is_dialable(*a))
        .ok_or_else(|| PeerError::Unresolved { seed: seed.clone() })?;
    // Already connected to the node there (it dialled us first)? Then that is the seed.
    let connected = {
        let live = shared.live.lock();
        shared
            .members
            .dialable()
            .into_iter()
            .find(|(id, at)| *at == addr && live.contains_key(id))
            .map(|(id, _)| id)
    };
    let answered = match connected {
        Some(id) => id,
        None => match dial(shared, addr, None).await {
            Ok(id) => id,
            Err(PeerError::Myself) => shared.me().to_owned(),
            Err(e) => return Err(e),
        },
    };
    tracing::debug!(seed = %seed, node = %answered, "seed answered");
    shared.seed_ids.lock().insert(seed.clone(), answered);
    Ok(())
}

/// Dials `addr` and greets whoever answers (which must be `expected`, when given); returns
/// the node id that answered.
async fn dial(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    expected: Option<&str>,
) -> Result<String, PeerError> {
    let connecting = shared.endpoint.connect(addr, "edgerate")?;
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            refused(shared, addr, &e);
            return Err(e.into());
        }
        Err(_) => return Err(PeerError::HandshakeTimeout),
    };
    greet(shared, conn, Direction::Outbound(addr), expected).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_hello_tells_the_advertised_address_or_only_the_port() {
        let bound = addr("0.0.0.0:7080");
        assert_eq!(hello_addr(None, bound), addr("0.0.0.0:7080"));
        assert_eq!(
            hello_addr(None, addr("127.0.0.1:7081")),
            addr("0.0.0.0:7081")
        );
        assert_eq!(hello_addr(None, addr("[::1]:7082")), addr("[::]:7082"));
        let public = addr("198.51.100.4:7080");
        assert_eq!(hello_addr(Some(public), bound), public);
    }
}
