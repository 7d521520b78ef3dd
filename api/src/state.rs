//! What every request shares: the catalog, the limits, the node's identity, the operator key.

use crate::auth::{KeyCache, Limits};
use crate::pool::BlockingPool;
use crate::server::HttpSection;
use edgerate_replication::catalog::Catalog;
use edgerate_replication::eventlog::EventLog;
use edgerate_topology::membership::Members;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// This node's identity, as shown by `cluster/status` and `/`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub region: String,
    /// Its peers, when it replicates (`None`: a single node).
    pub members: Option<Arc<Members>>,
    /// Its data dir (a backup copies the event log there before sending it).
    pub data_dir: std::path::PathBuf,
}

/// Shared state of the HTTP surface. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    log: Arc<EventLog>,
    limits: Limits,
    keys: KeyCache,
    operator_key_hash: String,
    node: NodeInfo,
    metrics: Option<PrometheusHandle>,
    telephony: Option<crate::telephony::Telephony>,
    http: HttpSection,
    pool: BlockingPool,
    ready: AtomicBool,
    /// Set while `admin/backup` streams one (one at a time per node).
    backup_running: AtomicBool,
    started: std::time::Instant,
}

impl AppState {
    /// `operator_key_hash` is [`crate::auth::hash_key`] of the operator key.
    pub fn new(
        catalog: Catalog,
        log: Arc<EventLog>,
        node: NodeInfo,
        operator_key_hash: String,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog,
                log,
                limits: Limits::default(),
                keys: KeyCache::default(),
                operator_key_hash,
                node,
                metrics,
                telephony: None,
                http: HttpSection::default(),
                pool: BlockingPool::default(),
                ready: AtomicBool::new(true),
                backup_running: AtomicBool::new(false),
                started: std::time::Instant::now(),
            }),
        }
    }

    /// Adds the SIP user agent (before the state is shared).
    pub fn with_telephony(mut self, telephony: crate::telephony::Telephony) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.telephony = Some(telephony);
        }
        self
    }

    /// Sets the `[http]` bounds (before the state is shared).
    pub fn with_http(mut self, http: HttpSection) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.http = http;
        }
        self
    }

    /// The `[http]` bounds.
    pub fn http(&self) -> &HttpSection {
        &self.inner.http
    }

    /// Where blocking services run.
    pub fn blocking_pool(&self) -> &BlockingPool {
        &self.inner.pool
    }

    /// The SIP user agent, when this node runs one.
    pub fn telephony(&self) -> Option<&crate::telephony::Telephony> {
        self.inner.telephony.as_ref()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The event log (CDRs and outcomes) and its ASR Plus view.
    pub fn log(&self) -> &EventLog {
        &self.inner.log
    }

    /// A shared handle on the event log, for work that outlives the request.
    pub fn log_handle(&self) -> Arc<EventLog> {
        self.inner.log.clone()
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn key_cache(&self) -> &KeyCache {
        &self.inner.keys
    }

    pub fn operator_key_hash(&self) -> &str {
        &self.inner.operator_key_hash
    }

    pub fn node(&self) -> &NodeInfo {
        &self.inner.node
    }

    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.inner.metrics.as_ref()
    }

    /// Whether `/readyz` says ready (false while shutting down).
    /// The flag of this node's backup in progress.
    pub fn backup_running(&self) -> &AtomicBool {
        &self.inner.backup_running
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Relaxed);
    }

    /// True while writes fail for want of disk space (documents or the event log).
    pub fn disk_full(&self) -> bool {
        self.inner.catalog.docs().disk_full() || self.inner.log.disk_full()
    }

    pub fn uptime_secs(&self) -> u64 {
        self.inner.started.elapsed().as_secs()
    }
}
