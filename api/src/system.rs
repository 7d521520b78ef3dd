//! Endpoints outside `/api`: health, readiness, metrics, the OpenAPI document and the
//! operator's status page.

use crate::auth;
use crate::error::ApiError;
use crate::format::{self, Format};
use crate::state::AppState;
use crate::vars::Vars;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use std::fmt::Write;

pub async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
}

/// Ready while serving; a node whose disk is full still serves reads, so it answers 200 with
/// `"writable":false` (a balancer that needs writes can route on it).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        let body = if state.disk_full() {
            "{\"status\":\"ready\",\"writable\":false,\"reason\":\"disk full: writes are refused until space returns\"}"
        } else {
            "{\"status\":\"ready\",\"writable\":true}"
        };
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"status\":\"shutting down\"}",
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let view = state.catalog().view();
    metrics::gauge!(crate::metrics::RULES_LOADED).set(view.rules_loaded() as f64);
    metrics::gauge!(crate::metrics::CARDS_LOADED).set(view.cards.len() as f64);
    metrics::gauge!(crate::metrics::ASRPLUS_ENTRIES).set(state.log().asrplus().len() as f64);
    metrics::gauge!(crate::metrics::DISK_FULL).set(if state.disk_full() { 1.0 } else { 0.0 });
    metrics::gauge!(crate::metrics::QUARANTINED_FILES)
        .set(state.catalog().docs().quarantined().len() as f64);
    let log = state.log_handle();
    if let Ok(Ok(records)) = tokio::task::spawn_blocking(move || log.record_count()).await {
        metrics::gauge!(crate::metrics::LOG_RECORDS).set(records as f64);
    }
    let body = state
        .metrics()
        .map(crate::metrics::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::text(),
    )
}

pub async fn not_found() -> Response {
    crate::router::error_response(
        Format::Json,
        &ApiError::not_found("no such path; services live under /api/"),
        None,
    )
}

/// The operator's page: this node, its peers, and (with the operator key) the cards.
pub async fn index(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Html<String> {
    let vars = Vars::parse(query.as_deref(), None, bytes::Bytes::new())
        .await
        .unwrap_or_default();
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let operator = auth::credentials(authz, &vars)
        .is_some_and(|c| auth::key_matches(&c.key, state.operator_key_hash()));
    let view = state.catalog().view();
    let node = state.node();
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h2>Node</h2><table><tr><td class=\"k\">node</td><td id=\"node\">{}</td></tr>\
         <tr><td class=\"k\">region</td><td id=\"region\">{}</td></tr>\
         <tr><td class=\"k\">uptime</td><td>{} s</td></tr>\
         <tr><td class=\"k\">accounts</td><td>{}</td></tr>\
         <tr><td class=\"k\">cards</td><td>{}</td></tr>\
         <tr><td class=\"k\">rules loaded</td><td>{}</td></tr>\
         <tr><td class=\"k\">storage</td><td id=\"storage\">{}</td></tr></table>",
        esc(&node.id),
        esc(&node.region),
        state.uptime_secs(),
        view.accounts.len(),
        view.cards.len(),
        view.rules_loaded(),
        if state.disk_full() {
            "disk full: writes are refused until space returns"
        } else {
            "writable"
        }
    );
    let quarantined = state.catalog().docs().quarantined();
    if !quarantined.is_empty() {
        body.push_str("<h2>Quarantined files</h2><table id=\"quarantine\">");
        for (file, why) in quarantined {
            let _ = write!(body, "<tr><td>{}</td><td>{}</td></tr>", esc(file), esc(why));
        }
        body.push_str("</table><p>Moved to the data dir's <code>quarantine/</code> at start; peers send these documents again.</p>");
    }
    body.push_str("<h2>Peers</h2><table id=\"peers\"><tr><td class=\"k\">peer</td><td class=\"k\">region</td><td class=\"k\">address</td><td class=\"k\">state</td><td class=\"k\">rtt</td><td class=\"k\">last sync</td><td class=\"k\">lag</td><td class=\"k\">clock skew</td></tr>");
    let peers = crate::cluster::peers(node);
    for p in &peers {
        let text = |key: &str| esc(p[key].as_str().unwrap_or("-"));
        let _ = write!(
            body,
            "<tr class=\"peer\" data-state=\"{state}\"><td>{}</td><td>{}</td><td>{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text("node"),
            text("region"),
            text("addr"),
            p["rtt_ms"].as_f64().map_or("-".into(), |ms| format!("{ms:.2} ms")),
            text("last_sync"),
            p["lag"],
            p["clock_skew_ms"].as_i64().map_or("-".into(), |ms| {
                let flag = if p["clock_skewed"] == true { " (over 1 s!)" } else { "" };
                format!("{ms} ms{flag}")
            }),
            state = text("state"),
        );
    }
    body.push_str("</table>");
    if node.members.is_none() {
        body.push_str("<p>This node runs alone: no peers are configured.</p>");
    }
    body.push_str("<h2>Cards</h2>");
    if operator {
        body.push_str("<table id=\"cards\"><tr><td class=\"k\">id</td><td class=\"k\">account</td><td class=\"k\">name</td><td class=\"k\">live revision</td><td class=\"k\">rules</td><td class=\"k\">updated</td></tr>");
        let now = edgerate_model::time::now();
        let mut cards: Vec<_> = view.cards.values().collect();
        cards.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        for card in cards {
            let live = card.live_at(now);
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&card.meta.id),
                esc(&card.meta.account),
                esc(&card.meta.name),
                live.map_or(String::from("none"), |r| r.meta.rev.to_string()),
                live.map_or(0, |r| r.index.read().len()),
                edgerate_model::time::format_datetime(card.updated())
            );
        }
        body.push_str("</table>");
    } else {
        body.push_str(
            "<p>Add <code>?api_key=</code> with the operator key to list every card.</p>",
        );
    }
    Html(format::page("status", &body))
}
