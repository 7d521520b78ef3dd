//! The edgerate node: starts the parts (storage, the HTTP surface, background tasks) from a
//! config and stops them on one shutdown signal. `main.rs` is the thin CLI around it; tests
//! start nodes in process with [`start`].

pub mod client;
pub mod config;

use anyhow::Context;
use config::Config;
use edgerate_api::auth::{hash_key, new_secret};
use edgerate_api::telephony::Telephony;
use edgerate_api::{AppState, NodeInfo};
use edgerate_model::account::Account;
use edgerate_model::card::CardMeta;
use edgerate_replication::catalog::Catalog;
use edgerate_replication::eventlog::EventLog;
use edgerate_replication::layout;
use edgerate_replication::sync::Replica;
use edgerate_replication::transport::{self, TransportConfig};
use edgerate_replication::ActorId;
use edgerate_sip::{Slots, UserAgent};
use edgerate_topology::certs::write_new;
use edgerate_topology::membership::Members;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The demo deck loaded on a first start on the embedded default.
pub const DEMO_DECK: &str = include_str!("demo.csv");
/// The demo account's id and card name.
pub const DEMO_ACCOUNT: &str = "demo";
pub const DEMO_CARD: &str = "demo";
/// How often shard histories are weighed for a rebase and document logs for compaction.
const COMPACT_EVERY: Duration = Duration::from_secs(10);
/// How long a shutdown waits for requests in progress.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// How often CDRs past retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How to start a node.
#[derive(Debug, Default)]
pub struct Options {
    pub config: Config,
    /// Create the demo account and card on first start (the embedded default does).
    pub demo: bool,
    /// A listener already bound (tests bind `127.0.0.1:0`); else `config.http.listen` is bound.
    pub listener: Option<std::net::TcpListener>,
}

/// Secrets created on a first start, to be shown once.
#[derive(Debug, Clone)]
pub struct FirstStart {
    /// Set when the operator key was generated (not from config or environment).
    pub operator_key: Option<String>,
    /// The demo account's key, when the demo was created.
    pub demo_key: Option<String>,
}

/// A running node.
pub struct NodeHandle {
    pub http_addr: SocketAddr,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    /// Stops accepting requests, lets in-flight ones finish, stops background tasks.
    pub async fn shutdown(self) {
        self.state.set_ready(false);
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts a node. Every write it acknowledges is already on disk, so stopping it at any point
/// (even with SIGKILL) loses nothing acknowledged.
pub async fn start(options: Options) -> anyhow::Result<(NodeHandle, FirstStart)> {
    let config = options.config;
    config.validate()?;
    let data_dir = config.node.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    layout::prepare(&data_dir)?;
    let (operator_key, generated) = operator_key(&config, &data_dir)?;
    let actor = actor_id(&data_dir)?;
    let docs_dir = data_dir.join(layout::DOCS_DIR);
    let quarantine = data_dir.join(layout::QUARANTINE_DIR);
    let catalog =
        tokio::task::spawn_blocking(move || Catalog::open_in(&docs_dir, &quarantine, actor))
            .await?
            .context("opening the catalog")?;
    let log_path = data_dir.join(layout::LOG_FILE);
    // A restored data dir writes CDRs under an origin of its own (see `backup`).
    let origin = layout::origin(&data_dir, &config.node.id)
        .with_context(|| format!("reading {}", data_dir.join(layout::ORIGIN_FILE).display()))?;
    let bad_codes = config.asrplus.bad_codes.clone();
    let quality_days = config.routing.quality_days;
    let log = tokio::task::spawn_blocking(move || {
        let now = edgerate_model::time::now();
        EventLog::open_with(&log_path, &origin, &bad_codes, quality_days, now)
    })
    .await?
    .context("opening the event log")?;
    let log = Arc::new(log);
    let demo_key = if options.demo {
        create_demo(&catalog, &data_dir)?
    } else {
        None
    };
    let metrics = edgerate_api::metrics::install();
    let peer_tls = match &config.tls {
        Some(section) => {
            let tls = edgerate_topology::tls::load(section)?;
            anyhow::ensure!(
                tls.name == config.node.id,
                "[tls] cert {} is issued to {:?} but [node] id is {:?}: peers would refuse it",
                section.cert.display(),
                tls.name,
                config.node.id
            );
            Some(tls)
        }
        None => None,
    };
    let members = peer_tls.as_ref().map(|_| {
        Arc::new(Members::new(
            config.node.id.clone(),
            config.node.region.clone(),
        ))
    });
    let node = NodeInfo {
        id: config.node.id.clone(),
        region: config.node.region.clone(),
        members: members.clone(),
        data_dir: data_dir.clone(),
    };
    let sip = config.sip.clone().unwrap_or_default();
    let agent = UserAgent::bind(sip.listen)
        .await
        .with_context(|| format!("[sip] listen {}", sip.listen))?;
    let state = AppState::new(
        catalog.clone(),
        log.clone(),
        node,
        hash_key(&operator_key),
        Some(metrics),
    )
    .with_http(config.http.clone())
    .with_telephony(Telephony {
        agent,
        slots: Slots::new(sip.per_account, sip.max_calls),
        sip,
    });

    let listener = match options.listener {
        Some(l) => {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)?
        }
        None => TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding {}", config.http.listen))?,
    };
    let http_addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let app = edgerate_api::App::new(state.clone());
    let http = tokio::spawn(edgerate_api::server::serve(
        listener,
        app,
        config.http.clone(),
        shutdown_rx.clone(),
        SHUTDOWN_DRAIN,
    ));
    let mut tasks = vec![http];
    let mut peer_addr = None;
    let cluster = members.clone();
    if let (Some(tls), Some(members), Some(peer)) = (peer_tls, members, &config.peer) {
        let usage = state.limits().board().clone();
        let counted = state.clone();
        usage.set_local(Box::new(move |day| counted.limits().counts(day)));
        let replica = Replica {
            catalog: catalog.clone(),
            log: log.clone(),
            usage,
        };
        let transport = transport::start(
            TransportConfig {
                id: config.node.id.clone(),
                region: config.node.region.clone(),
                listen: peer.listen,
                advertise: peer.advertise,
                seeds: peer.seeds.clone(),
                tls,
                isolate: data_dir.join("isolate"),
                members_file: data_dir.join("members"),
            },
            replica,
            members,
            shutdown_rx.clone(),
        )?;
        peer_addr = Some(transport.local_addr);
        tasks.push(transport.task);
    }
    tasks.push(tokio::spawn(compact_forever(
        catalog,
        cluster,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(prune_forever(
        log,
        config.cdr.retention_days,
        shutdown_rx,
    )));
    tracing::info!(%http_addr, peer = ?peer_addr, node = %config.node.id, region = %config.node.region, data = %data_dir.display(), "node started");
    let first = FirstStart {
        operator_key: generated.then_some(operator_key),
        demo_key,
    };
    Ok((
        NodeHandle {
            http_addr,
            state,
            shutdown,
            tasks,
        },
        first,
    ))
}

/// Rebases shard documents whose history outgrew their rules, then compacts document logs,
/// every [`COMPACT_EVERY`]. `cluster`: the members, whose reachability decides how long a
/// history may grow (see [`Catalog::rebase_due`]).
async fn compact_forever(
    catalog: Catalog,
    cluster: Option<Arc<Members>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(COMPACT_EVERY) => {}
        }
        let pass = catalog.clone();
        let whole = cluster.as_ref().is_none_or(|m| {
            m.peers()
                .iter()
                .all(|p| p.state == edgerate_topology::membership::PeerState::Up)
        });
        // Shard documents whose history outgrew their rules are rebased first, so the
        // compaction after it drops what they replaced.
        match tokio::task::spawn_blocking(move || (pass.rebase_due(whole), pass.docs().compact()))
            .await
        {
            Ok((0, 0)) => {}
            Ok((rebased, compacted)) => tracing::debug!(rebased, compacted, "compacted"),
            Err(e) => tracing::warn!(error = %e, "compaction task failed"),
        }
    }
}

/// Deletes CDRs past retention, hourly.
async fn prune_forever(log: Arc<EventLog>, retention_days: u32, mut stop: watch::Receiver<bool>) {
    loop {
        let now = edgerate_model::time::now();
        let horizon = now - i64::from(retention_days) * 86_400;
        let handle = log.clone();
        match tokio::task::spawn_blocking(move || handle.prune(horizon, now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(records = n, "pruned CDRs past retention"),
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning CDRs failed; will retry"),
            Err(e) => tracing::warn!(error = %e, "pruning task failed"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

/// The operator key: config, else `EDGERATE_OPERATOR_KEY`, else the data dir's
/// `operator.key` (generated on first start). The flag says it was generated just now.
fn operator_key(config: &Config, data_dir: &Path) -> anyhow::Result<(String, bool)> {
    if let Some(key) = &config.operator.key {
        return Ok((key.clone(), false));
    }
    if let Ok(key) = std::env::var("EDGERATE_OPERATOR_KEY") {
        if !key.trim().is_empty() {
            return Ok((key.trim().to_owned(), false));
        }
    }
    let path = data_dir.join("operator.key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        if !key.trim().is_empty() {
            return Ok((key.trim().to_owned(), false));
        }
    }
    let key = new_secret();
    write_new(&path, &key, true)?;
    Ok((key, true))
}

/// This node's Automerge actor id, kept in the data dir so every change it ever makes is
/// attributed to one actor.
fn actor_id(data_dir: &Path) -> anyhow::Result<ActorId> {
    let path = data_dir.join(layout::ACTOR_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        match hex::decode(text.trim()) {
            Ok(bytes) if bytes.len() == 16 => return Ok(ActorId::from(bytes)),
            _ => anyhow::bail!(
                "{} is not 32 hex digits; restore it or remove it",
                path.display()
            ),
        }
    }
    let bytes: [u8; 16] = rand::random();
    write_new(&path, &hex::encode(bytes), true)?;
    Ok(ActorId::from(&bytes[..]))
}

/// Creates the demo account and card once per data dir; returns the demo key when it did.
fn create_demo(catalog: &Catalog, data_dir: &Path) -> anyhow::Result<Option<String>> {
    let marker = data_dir.join("demo.created");
    if marker.exists() || catalog.view().accounts.contains_key(DEMO_ACCOUNT) {
        return Ok(None);
    }
    let now = edgerate_model::time::now();
    let secret = new_secret();
    catalog.put_account(Account {
        id: DEMO_ACCOUNT.into(),
        name: "Demo account".into(),
        key_hash: hash_key(&secret),
        rps: 1_000_000,
        daily: 100_000_000,
        created: now,
    })?;
    let card = catalog.create_card(CardMeta::new(
        edgerate_api::new_id('c'),
        DEMO_ACCOUNT.into(),
        DEMO_CARD.into(),
        now,
    ))?;
    let deck =
        edgerate_model::deck::parse_csv(DEMO_DECK.as_bytes()).context("the embedded demo deck")?;
    catalog.add_revision(&card.meta.id, deck.rules, Some(now), "import:csv", now)?;
    write_new(&marker, "", true)?;
    Ok(Some(secret))
}
