//! The error envelope: every failure is a code from a small, transport-free set and a concise
//! reason. The HTTP status and the `{"error":{code,reason}}` body are derived here and nowhere
//! else; internal details are logged, never sent.

use edgerate_replication::catalog::CatalogError;
use edgerate_replication::eventlog::LogError;

/// What went wrong, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    TooManyRequests,
    Internal,
    NotImplemented,
    Unavailable,
    RequestTimeout,
}

impl ErrorCode {
    /// The HTTP status, which is also the `code` in the body.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::TooManyRequests => 429,
            Self::Internal => 500,
            Self::NotImplemented => 501,
            Self::Unavailable => 503,
            Self::RequestTimeout => 408,
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub reason: String,
    /// Seconds, for 429 answers.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, reason)
    }

    /// 409: the request conflicts with the state it found.
    pub fn conflict(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, reason)
    }

    pub fn not_found(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, reason)
    }

    pub fn missing(name: &str) -> Self {
        Self::bad_request(format!("Missing Required Parameter '{name}'"))
    }

    pub fn invalid(name: &str, why: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("Invalid Parameter '{name}': {why}"))
    }

    /// An internal failure: logged in full, answered with a generic reason.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, context, "internal error");
        Self::new(
            ErrorCode::Internal,
            "internal error; the operator has the details in the node's log",
        )
    }
}

/// The answer to a write refused because the disk is full.
pub fn disk_full() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "the node's disk is full; nothing was applied",
    )
}

/// An event-log failure: a full disk is a 503 (nothing was stored), anything else internal.
pub fn from_log(context: &str, e: LogError) -> ApiError {
    if e.is_disk_full() {
        disk_full()
    } else {
        ApiError::internal(context, e)
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(what) => Self::not_found(format!("{what} not found")),
            CatalogError::Conflict(why) => Self::new(ErrorCode::Conflict, why),
            CatalogError::Store(store) if store.is_disk_full() => disk_full(),
            CatalogError::Store(store) => Self::internal("catalog", store),
        }
    }
}
