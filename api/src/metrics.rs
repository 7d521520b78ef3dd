//! Metrics (Prometheus text via `metrics-exporter-prometheus`): requests by service and status,
//! request latency, rules loaded.

use crate::service::Service;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub const REQUESTS: &str = "edgerate_http_requests_total";
pub const LATENCY: &str = "edgerate_http_request_duration_seconds";
pub const RULES_LOADED: &str = "edgerate_ratecard_rules_loaded";
pub const CARDS_LOADED: &str = "edgerate_ratecard_cards_loaded";
pub const CDRS_INGESTED: &str = "edgerate_cdr_ingested_total";
pub const LOG_RECORDS: &str = "edgerate_eventlog_records";
pub const ASRPLUS_ENTRIES: &str = "edgerate_asrplus_numbers";
pub const ASRPLUS_LOOKUPS: &str = "edgerate_asrplus_lookups_total";
/// 1 while writes fail for want of disk space.
pub const DISK_FULL: &str = "edgerate_store_disk_full";
/// Files moved to quarantine when this node started.
pub const QUARANTINED_FILES: &str = "edgerate_store_quarantined_files";
/// Connections refused because the node had `[http] max_connections` open.
pub const HTTP_REFUSED: &str = "edgerate_http_connections_refused_total";
/// Connections closed for idling past `[http] idle_timeout_s`.
pub const HTTP_IDLE_CLOSED: &str = "edgerate_http_connections_idle_closed_total";

/// Installs the process-wide recorder once and returns its handle (later calls return the same).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0,
                5.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &buckets)
                .expect("buckets are non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// The status labels (bounded): these codes, and `other`.
const STATUSES: [u16; 11] = [200, 400, 401, 404, 405, 409, 413, 429, 500, 501, 503];
const STATUS_LABELS: [&str; 12] = [
    "200", "400", "401", "404", "405", "409", "413", "429", "500", "501", "503", "other",
];

/// One service's metric handles, registered on first use so the request path does no
/// registry lookups.
struct ServiceMetrics {
    latency: Histogram,
    requests: [OnceLock<Counter>; STATUS_LABELS.len()],
}

/// Records one answered request.
pub fn record_request(service: Service, status: u16, elapsed: Duration) {
    static HANDLES: OnceLock<Vec<ServiceMetrics>> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        Service::ALL
            .iter()
            .map(|s| ServiceMetrics {
                latency: metrics::histogram!(LATENCY, "service" => s.as_str()),
                requests: std::array::from_fn(|_| OnceLock::new()),
            })
            .collect()
    });
    let Some(m) = handles.get(service as usize) else {
        return;
    };
    let label = STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len());
    m.requests[label]
        .get_or_init(|| {
            metrics::counter!(REQUESTS, "service" => service.as_str(), "status" => STATUS_LABELS[label])
        })
        .increment(1);
    m.latency.record(elapsed.as_secs_f64());
}

/// Counts one ASR Plus answer by status (`Valid`, `Invalid`, `Unknown`).
pub fn record_asrplus(status: &'static str) {
    static COUNTERS: OnceLock<[Counter; 3]> = OnceLock::new();
    const STATUSES: [&str; 3] = ["Valid", "Invalid", "Unknown"];
    let counters = COUNTERS
        .get_or_init(|| STATUSES.map(|s| metrics::counter!(ASRPLUS_LOOKUPS, "status" => s)));
    if let Some(i) = STATUSES.iter().position(|s| *s == status) {
        counters[i].increment(1);
    }
}
