//! Metrics (Prometheus text via `metrics-exporter-prometheus`): requests by service and status,
//! request latency, rules loaded.

use crate::service::Service;
use metrics::Counter;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicU64, Ordering};
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
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Every metric as Prometheus text: the recorder's, then the request latency histogram.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    latency().render(&mut text);
    text
}

/// The status labels (bounded): these codes, and `other`.
const STATUSES: [u16; 11] = [200, 400, 401, 404, 405, 409, 413, 429, 500, 501, 503];
const STATUS_LABELS: [&str; 12] = [
    "200", "400", "401", "404", "405", "409", "413", "429", "500", "501", "503", "other",
];

/// Records one answered request.
pub fn record_request(service: Service, status: u16, elapsed: Duration) {
    static COUNTERS: OnceLock<Vec<[OnceLock<Counter>; STATUS_LABELS.len()]>> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        Service::ALL
            .iter()
            .map(|_| std::array::from_fn(|_| OnceLock::new()))
            .collect()
    });
    let Some(by_status) = counters.get(service as usize) else {
        return;
    };
    let label = STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len());
    by_status[label]
        .get_or_init(|| {
            metrics::counter!(REQUESTS, "service" => service.as_str(), "status" => STATUS_LABELS[label])
        })
        .increment(1);
    latency().record(service, elapsed);
}

/// The latency histogram's upper bounds, in seconds (and `+Inf`).
const BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
];

/// Request latency by service, in fixed buckets: a request adds one to its bucket and its time
/// to the sum (two relaxed additions). The recorder's histogram kept every value until a scrape
/// (a lock-free list and an epoch guard per request: 1.5 % of a rate query).
struct Latency {
    services: Vec<ServiceLatency>,
}

#[derive(Default)]
struct ServiceLatency {
    /// Requests per bucket (not cumulative); the last is over every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    nanos: AtomicU64,
}

fn latency() -> &'static Latency {
    static LATENCY_BY_SERVICE: OnceLock<Latency> = OnceLock::new();
    LATENCY_BY_SERVICE.get_or_init(|| Latency {
        services: Service::ALL
            .iter()
            .map(|_| ServiceLatency::default())
            .collect(),
    })
}

impl Latency {
    fn record(&self, service: Service, elapsed: Duration) {
        let Some(s) = self.services.get(service as usize) else {
            return;
        };
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(BUCKETS.len());
        s.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        s.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The Prometheus text of every service that answered a request.
    fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# TYPE {LATENCY} histogram");
        for (service, s) in Service::ALL.iter().zip(&self.services) {
            let counts = s.buckets.each_ref().map(|b| b.load(Ordering::Relaxed));
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let name = service.as_str();
            let mut cumulative = 0;
            for (le, count) in BUCKETS.iter().zip(counts) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "{LATENCY}_bucket{{service=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "{LATENCY}_bucket{{service=\"{name}\",le=\"+Inf\"}} {total}"
            );
            let sum = s.nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{LATENCY}_sum{{service=\"{name}\"}} {sum}");
            let _ = writeln!(out, "{LATENCY}_count{{service=\"{name}\"}} {total}");
        }
    }
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
