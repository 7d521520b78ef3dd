//! Metrics (Prometheus text via `metrics-exporter-prometheus`): requests by service and status,
//! request latency, rules loaded.

use crate::service::Service;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub const REQUESTS: &str = "edgerate_http_requests_total";
pub const LATENCY: &str = "edgerate_http_request_duration_seconds";
pub const RULES_LOADED: &str = "edgerate_ratecard_rules_loaded";
pub const CARDS_LOADED: &str = "edgerate_ratecard_cards_loaded";

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

/// Records one answered request.
pub fn record_request(service: Service, status: u16, elapsed: Duration) {
    metrics::counter!(REQUESTS, "service" => service.as_str(), "status" => status_label(status))
        .increment(1);
    metrics::histogram!(LATENCY, "service" => service.as_str()).record(elapsed.as_secs_f64());
}

/// A bounded label for a status code.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        429 => "429",
        500 => "500",
        501 => "501",
        503 => "503",
        _ => "other",
    }
}
