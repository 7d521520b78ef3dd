//! The router: `/api/{service}.{format}` through one dispatcher (variables → authentication →
//! limits → service → format), plus `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and `/`.

use crate::auth::{self, Quota};
use crate::error::{ApiError, ErrorCode};
use crate::format::{self, Format};
use crate::service::{Access, Service};
use crate::state::AppState;
use crate::vars::Vars;
use crate::{admin, backup, cdr, cluster, lookup, ratecard, routing, system, telephony};
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use edgerate_model::account::Account;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// The most a request may send before it is authenticated (credentials only in the body).
pub const PREAUTH_BODY_BYTES: usize = 64 * 1024;
/// The buffer a JSON answer is written into: a query's or a route list's answer fits.
const ANSWER_CAPACITY: usize = 2048;

const X_RATELIMIT_LIMIT: header::HeaderName = header::HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: header::HeaderName =
    header::HeaderName::from_static("x-ratelimit-remaining");

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    Account(Arc<Account>),
    Operator,
}

/// What a service gets.
pub struct Ctx {
    pub state: AppState,
    pub vars: Vars,
    pub caller: Caller,
    /// Unix seconds at which the request is answered.
    pub now: i64,
    /// The requested answer format.
    pub format: Format,
}

impl Ctx {
    /// The calling account (services with [`Access::Account`] only).
    pub fn account(&self) -> &Account {
        match &self.caller {
            Caller::Account(a) => a,
            Caller::Operator => unreachable!("account services are only dispatched for accounts"),
        }
    }

    /// An answer from a serialisable value: JSON is written straight from it (the hot path
    /// builds no intermediate tree); XML and HTML render it as a tree.
    pub fn reply<T: serde::Serialize>(&self, answer: &T) -> Result<Output, ApiError> {
        let done = match self.format {
            Format::Json => {
                // Most answers fit: one allocation, no regrowth while writing.
                let mut out = Vec::with_capacity(ANSWER_CAPACITY);
                serde_json::to_writer(&mut out, answer).map(|()| Output::Json(out))
            }
            Format::Xml | Format::Html => serde_json::to_value(answer).map(Output::Value),
        };
        done.map_err(|e| ApiError::internal("serialising an answer", e))
    }
}

/// What a service answers.
pub enum Output {
    /// A value rendered in the requested format.
    Value(Value),
    /// A JSON answer already written (see [`Ctx::reply`]).
    Json(Vec<u8>),
    /// A file streamed as it is produced, whatever the requested format.
    Stream {
        content_type: &'static str,
        filename: String,
        body: Body,
    },
    /// A file sent as it is, whatever the requested format.
    File {
        content_type: &'static str,
        filename: String,
        body: Vec<u8>,
    },
}

/// The routes beside the services: health, metrics, the spec and the operator's page.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .route("/", get(system::index))
        .fallback(system::not_found)
        .with_state(state)
}

/// The whole HTTP surface: a request under `/api/` goes straight to the services' dispatcher,
/// any other through [`router`]. Through axum's Router (a wildcard route) every rate query
/// paid for matching, the path stored as a parameter, a boxed handler future and the response
/// mapped twice: +25 % rps without it (BENCHMARKS.md).
#[derive(Clone)]
pub struct App {
    state: AppState,
    router: Router,
}

impl App {
    pub fn new(state: AppState) -> Self {
        Self {
            router: router(state.clone()),
            state,
        }
    }

    /// Answers one request.
    pub async fn call(self, request: Request) -> Response {
        if is_api(request.uri().path()) {
            let (parts, body) = request.into_parts();
            let incoming = Incoming {
                method: &parts.method,
                path: parts.uri.path(),
                query: parts.uri.query(),
                authorization: header_str(&parts.headers, header::AUTHORIZATION),
                body: Some((body, &parts.headers)),
            };
            return api(self.state, incoming).await.into_response();
        }
        match tower::ServiceExt::oneshot(self.router, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Answers a service's `GET` without a body (its `path` under `/api/`), read by the server's
    /// fast path: no `http::Request` is built for it, and no response for a JSON answer.
    pub(crate) async fn call_api_get(
        self,
        path: &str,
        query: Option<&str>,
        authorization: Option<&str>,
    ) -> Answer {
        let incoming = Incoming {
            method: &Method::GET,
            path,
            query,
            authorization,
            body: None,
        };
        api(self.state, incoming).await
    }
}

/// A request to a service, as the dispatcher reads it.
struct Incoming<'a> {
    method: &'a Method,
    path: &'a str,
    query: Option<&'a str>,
    /// The `Authorization` header, when it is text.
    authorization: Option<&'a str>,
    /// The body and the headers that describe it (type, declared length); none for a request
    /// the fast path read.
    body: Option<(Body, &'a HeaderMap)>,
}

/// A service's path: `/api/` and a name (`/api/` alone is no path at all).
pub(crate) fn is_api(path: &str) -> bool {
    path.len() > "/api/".len() && path.starts_with("/api/")
}

/// A service's answer.
pub(crate) enum Answer {
    /// A JSON answer, written (the hot path: the server's fast path sends it with no response
    /// built), and the caller's quota.
    Json { body: Vec<u8>, quota: Option<Quota> },
    /// Any other, or an error.
    Response(Response),
}

impl Answer {
    pub(crate) fn into_response(self) -> Response {
        match self {
            Answer::Json { body, quota } => {
                let mut response = body_response(StatusCode::OK, Format::Json.content_type(), body);
                add_quota(response.headers_mut(), quota);
                response
            }
            Answer::Response(response) => response,
        }
    }
}

async fn api(state: AppState, request: Incoming<'_>) -> Answer {
    let started = Instant::now();
    let (service, format) = match target(request.path) {
        Ok(target) => target,
        Err((format, e)) => return Answer::Response(error_response(format, &e, None)),
    };
    let (answer, status) = match handle(state, service, format, request, started).await {
        Ok((Output::Json(body), quota)) => (Answer::Json { body, quota }, 200),
        Ok((output, quota)) => {
            let response = output_response(service, format, output, quota);
            let status = response.status().as_u16();
            (Answer::Response(response), status)
        }
        Err((e, quota)) => (
            Answer::Response(error_response(format, &e, quota)),
            e.code.status(),
        ),
    };
    crate::metrics::record_request(service, status, started.elapsed());
    answer
}

/// The service and answer format a path under `/api/` names, or why not and the format to say it
/// in (the one asked for, when it is one).
fn target(path: &str) -> Result<(Service, Format), (Format, ApiError)> {
    let path = path.trim_start_matches("/api/");
    let (name, format) = match path.rsplit_once('.') {
        Some((name, ext)) => match Format::parse(ext) {
            Some(format) => (name, format),
            None => {
                let e =
                    ApiError::not_found(format!("unknown format '{ext}': use html, json or xml"));
                return Err((Format::Html, e));
            }
        },
        None => (path, Format::Html),
    };
    let service = Service::parse(name).ok_or_else(|| {
        (
            format,
            ApiError::not_found(format!("unknown service '{name}'")),
        )
    })?;
    Ok((service, format))
}

async fn handle(
    state: AppState,
    service: Service,
    format: Format,
    request: Incoming<'_>,
    started: Instant,
) -> Result<(Output, Option<Quota>), (ApiError, Option<Quota>)> {
    if request.method != Method::GET && request.method != Method::POST {
        return Err((
            ApiError::new(ErrorCode::MethodNotAllowed, "use GET or POST"),
            None,
        ));
    }
    let no_quota = |e| (e, None);
    let mut vars = Vars::from_query(request.query).map_err(no_quota)?;
    let authorization = request.authorization;
    let now = edgerate_model::time::now();
    // Credentials in the headers or the query string are checked before the body is read, so
    // an unauthenticated client never makes the node read (or parse) a large body.
    // A header that is there but unreadable is a 401 before the body, like a wrong key.
    let early = match auth::Presented::of(authorization, &vars) {
        Some(presented) => Some(admit(&state, service, presented, now, started)?),
        None => None,
    };
    let limit = match early {
        Some(_) => service.max_body(),
        None => PREAUTH_BODY_BYTES.min(service.max_body()),
    };
    let (body, content_type) = match request.body {
        Some((body, headers)) => (
            read_body(body, headers, limit, state.http().body_timeout()).await,
            header_str(headers, header::CONTENT_TYPE),
        ),
        None => (Ok(bytes::Bytes::new()), None),
    };
    let body = body.map_err(|e| match early {
        None if e.code == ErrorCode::PayloadTooLarge => (
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "a request without credentials in the Authorization header or the query \
                         string may send at most {PREAUTH_BODY_BYTES} bytes"
                ),
            ),
            None,
        ),
        _ => (e, None),
    })?;
    vars.add_body(content_type, body).await.map_err(no_quota)?;
    let (caller, quota) = match early {
        Some(admitted) => admitted,
        None => {
            let presented =
                auth::Presented::of(authorization, &vars).ok_or_else(|| (unauthorized(), None))?;
            admit(&state, service, presented, now, started)?
        }
    };
    let refused = vars.first_unknown(|name| service.takes(name)).map(|name| {
        crate::telephony::unsupported(name)
            .filter(|_| service == Service::DialDial)
            .unwrap_or_else(|| ApiError::bad_request(format!("unknown variable '{name}'")))
    });
    if let Some(e) = refused {
        return Err((e, quota));
    }
    let ctx = Ctx {
        state,
        vars,
        caller,
        now,
        format,
    };
    let output = match service {
        // Calls wait for a trunk: async tasks, so no thread is held for a call.
        Service::LookupPing => telephony::ping(&ctx).await,
        Service::DialDial => telephony::dial(&ctx).await,
        Service::LookupSmart => lookup::smart(&ctx).await,
        _ if service.blocking() => {
            let pool = ctx.state.blocking_pool().clone();
            let who = match &ctx.caller {
                Caller::Account(account) => account.id.clone(),
                Caller::Operator => String::new(),
            };
            let work = move || run(service, &ctx);
            let done = if service.background() {
                pool.run_background(&who, work).await
            } else {
                pool.run(&who, work).await
            };
            done.unwrap_or_else(Err)
        }
        _ => run(service, &ctx),
    };
    output.map(|output| (output, quota)).map_err(|e| (e, quota))
}

/// The response of a service's output other than written JSON.
fn output_response(
    service: Service,
    format: Format,
    output: Output,
    quota: Option<Quota>,
) -> Response {
    let mut response = match output {
        Output::Value(value) => {
            let root = service.as_str().rsplit('/').next().unwrap_or("reply");
            body_response(
                StatusCode::OK,
                format.content_type(),
                format::render(format, root, &value),
            )
        }
        Output::Json(body) => return Answer::Json { body, quota }.into_response(),
        Output::File {
            content_type,
            filename,
            body,
        } => attachment(body_response(StatusCode::OK, content_type, body), &filename),
        Output::Stream {
            content_type,
            filename,
            body,
        } => {
            let mut r = Response::new(body);
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            attachment(r, &filename)
        }
    };
    add_quota(response.headers_mut(), quota);
    response
}

fn unauthorized() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "invalid or missing credentials")
}

/// Authenticates the `presented` credentials for `service` and counts the request against the account's limits.
fn admit(
    state: &AppState,
    service: Service,
    presented: auth::Presented<'_>,
    now: i64,
    at: Instant,
) -> Result<(Caller, Option<Quota>), (ApiError, Option<Quota>)> {
    match service.access() {
        Access::Operator => {
            let operator = presented
                .credentials()
                .is_some_and(|creds| auth::key_matches(&creds.key, state.operator_key_hash()));
            if !operator {
                return Err((unauthorized(), None));
            }
            Ok((Caller::Operator, None))
        }
        Access::Account => {
            let account = auth::authenticate(&state.catalog().view(), presented, state.key_cache())
                .map_err(|e| (e, None))?;
            let quota = state
                .limits()
                .admit(&account, now, at)
                .map_err(|(e, q)| (e, Some(q)))?;
            Ok((Caller::Account(account), Some(quota)))
        }
    }
}

/// Reads a request body of at most `limit` bytes within `timeout`: a declared length over the
/// limit is refused before a byte is read.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("this service takes a body of at most {limit} bytes"),
        )
    };
    if axum::body::HttpBody::is_end_stream(&body) {
        // A GET without a body (the hot path): no timer, no read.
        return Ok(bytes::Bytes::new());
    }
    let declared = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large()),
        Ok(Err(_)) => Err(ApiError::bad_request("the request body is unreadable")),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn run(service: Service, ctx: &Ctx) -> Result<Output, ApiError> {
    use Service::*;
    match service {
        RatecardQuery => ratecard::query(ctx),
        RatecardCreate => ratecard::create(ctx),
        RatecardList => ratecard::list(ctx),
        RatecardGet => ratecard::get(ctx),
        RatecardUpdate => ratecard::update(ctx),
        RatecardDelete => ratecard::delete(ctx),
        RatecardRules => ratecard::rules(ctx),
        RatecardRuleSet => ratecard::rule_set(ctx),
        RatecardRuleDelete => ratecard::rule_delete(ctx),
        RatecardImport => ratecard::import(ctx),
        RatecardExport => ratecard::export(ctx),
        RatecardRevisions => ratecard::revisions(ctx),
        RatecardActivate => ratecard::activate(ctx),
        RatecardDiff => ratecard::diff(ctx),
        RatecardBuild => ratecard::build(ctx),
        RatecardSimulate => ratecard::simulate(ctx),
        RoutingLcr => routing::lcr(ctx),
        CdrRerate => cdr::rerate(ctx),
        AdminAccountCreate => admin::account_create(ctx),
        AdminAccountList => admin::account_list(ctx),
        AdminAccountUpdate => admin::account_update(ctx),
        AdminAccountKeyRotate => admin::account_key_rotate(ctx),
        AdminAccountDelete => admin::account_delete(ctx),
        AdminBackup => backup::backup(ctx),
        ClusterStatus => cluster::status(ctx),
        LookupAsrplus => lookup::asrplus(ctx),
        LookupSmart | LookupPing | DialDial => Err(ApiError::internal(
            service.as_str(),
            "an async service reached the synchronous dispatcher",
        )),
        AdminDatasetImport => admin::dataset_import(ctx),
        CdrAdd => cdr::add(ctx),
        CdrList => cdr::list(ctx),
        CdrExport => cdr::export(ctx),
        CdrStats => cdr::stats(ctx),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Marks a response as a file download named `filename`.
fn attachment(mut response: Response, filename: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

fn body_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    answer_fields(content_type, None, |name, value| {
        insert(response.headers_mut(), name, value)
    });
    response
}

fn add_quota(headers: &mut HeaderMap, quota: Option<Quota>) {
    quota_fields(quota, |name, value| insert(headers, name, value));
}

/// The header fields of an answer with a body, besides its framing and date: its type,
/// `cache-control: no-store` (answers are live: a price changes with the card) and the caller's
/// quota. One list for the server's fast path, which writes them, and for a built response.
pub(crate) fn answer_fields(
    content_type: &'static str,
    quota: Option<Quota>,
    mut field: impl FnMut(header::HeaderName, &[u8]),
) {
    field(header::CONTENT_TYPE, content_type.as_bytes());
    field(header::CACHE_CONTROL, b"no-store");
    quota_fields(quota, field);
}

/// `X-RateLimit-Limit` and `X-RateLimit-Remaining`: the day's requests, and what is left.
fn quota_fields(quota: Option<Quota>, mut field: impl FnMut(header::HeaderName, &[u8])) {
    if let Some(q) = quota {
        let mut number = itoa::Buffer::new();
        field(X_RATELIMIT_LIMIT, number.format(q.limit).as_bytes());
        field(X_RATELIMIT_REMAINING, number.format(q.remaining).as_bytes());
    }
}

/// Sets a field whose value is known to be valid (a media type, digits).
fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.insert(name, value);
    }
}

/// An error in `format`, with the matching status and, for 429, `Retry-After`; for 405, `Allow`
/// (RFC 9110 §15.5.6).
pub fn error_response(format: Format, error: &ApiError, quota: Option<Quota>) -> Response {
    let status =
        StatusCode::from_u16(error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = body_response(
        status,
        format.content_type(),
        format::render_error(format, error),
    );
    if let Some(secs) = error.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if error.code == ErrorCode::MethodNotAllowed {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
    }
    add_quota(response.headers_mut(), quota);
    response
}
