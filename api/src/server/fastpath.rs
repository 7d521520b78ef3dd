//! The fast path: an HTTP/1.1 `GET` without a body (every query, lookup and listing) is read
//! with httparse, answered by the API's dispatcher (the one hyper's requests reach: a service's
//! through [`App::call_api_get`] with no `http::Request` built, anything else through
//! [`App::call`]) and written in one `write`; a JSON answer with no response built. Through
//! hyper's connection machinery a rate query spent about a sixth of its time in that machinery
//! (the head parsed into a header map, the response encoded through its buffers); on one core
//! that was the gap to nginx (BENCHMARKS.md).
//!
//! Anything else — a body, `HEAD`, HTTP/1.0, `Expect`, an upgrade, a head httparse refuses or one
//! over [`MAX_HEAD`] — is not served here: the connection goes to hyper for the rest of its life,
//! with the bytes read so far, and hyper answers it as it answers every request it serves.

use super::connection::{Activity, InFlight, Tracked};
use crate::auth::Quota;
use crate::format::Format;
use crate::router::{answer_fields, Answer, App};
use axum::body::Body;
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use std::cell::RefCell;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest request head read (hyper's buffer is the same size: over it, hyper answers 431).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Header fields in a head the fast path reads; a head with more goes to hyper (which takes 100).
const MAX_HEADERS: usize = 64;
/// Bytes asked of the socket at a time.
const READ_CHUNK: usize = 4096;
/// A body up to this size is copied behind the head and the two sent in one write; a larger
/// one is sent as it comes.
const INLINE_BODY: usize = 16 * 1024;
/// The write buffer a keep-alive connection keeps between responses; one grown past it (a large
/// chunk of an export) is let go.
const MAX_KEPT_BUFFER: usize = 64 * 1024;

/// How the fast path left a connection.
pub(super) enum Ended {
    /// Closed: by the client, after `connection: close`, at shutdown or on an I/O error.
    Closed,
    /// A request it does not serve: hyper takes the connection, reading these bytes first.
    HandedOff(Bytes),
}

/// Serves requests on `io` until the connection closes or one is for hyper.
pub(super) async fn serve(io: &mut Tracked, app: &App, activity: &Arc<Activity>) -> Ended {
    let mut read = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::with_capacity(1024);
    loop {
        // Bytes read that hold no end of a head: a head arriving in many pieces is parsed again
        // only once its end may have come, not at every piece.
        let mut scanned: usize = 0;
        let head = loop {
            let parsed = if scanned > 0 && !may_end_head(&read[scanned.saturating_sub(3)..]) {
                Parsed::Partial
            } else {
                parse(&read)
            };
            match parsed {
                Parsed::Head(head) => break head,
                Parsed::NotOurs => return Ended::HandedOff(read.freeze()),
                Parsed::Partial if read.len() >= MAX_HEAD => {
                    return Ended::HandedOff(read.freeze())
                }
                Parsed::Partial => {
                    // Looked at from 3 bytes back: the end of a head may straddle two reads.
                    // (Nothing read yet, nothing to skip: a head that comes whole is parsed
                    // at once, not scanned first.)
                    scanned = read.len();
                    read.reserve(READ_CHUNK);
                    match io.read_buf(&mut read).await {
                        Ok(0) | Err(_) => return Ended::Closed,
                        Ok(_) => {}
                    }
                }
            }
        };
        let bytes = read.split_to(head.len).freeze();
        // The target as hyper reads it (the same checks, no copy).
        let Ok(target) = PathAndQuery::from_maybe_shared(bytes.slice(head.target.clone())) else {
            let mut all = BytesMut::from(&bytes[..]);
            all.extend_from_slice(&read);
            return Ended::HandedOff(all.freeze());
        };
        let done = activity.start();
        let answer = match head.fields {
            Fields::Service { authorization } => {
                let authorization = authorization.and_then(|at| text(&bytes[at]));
                let call = app.clone();
                call.call_api_get(target.path(), target.query(), authorization)
                    .await
            }
            Fields::Other(headers) => {
                let mut request = Request::new(Body::empty());
                *request.uri_mut() = Uri::from(target);
                *request.headers_mut() = headers;
                Answer::Response(app.clone().call(request).await)
            }
        };
        let close = head.close
            || activity.closing()
            || matches!(&answer, Answer::Response(r) if says_close(r.headers()));
        let written = match answer {
            Answer::Json { body, quota } => {
                drop(done);
                json(io, &mut out, &body, quota, close).await
            }
            Answer::Response(response) => respond(io, &mut out, response, close, done).await,
        };
        if !written {
            return Ended::Closed;
        }
        if out.capacity() > MAX_KEPT_BUFFER {
            out = Vec::with_capacity(1024);
        }
        // The node may have begun to stop while this answer was made or sent.
        if close || activity.closing() {
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
    }
}

/// What the bytes read so far hold.
// Returned once per request and taken apart at once: boxing the head would allocate each time.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request for hyper (see the module's documentation).
    NotOurs,
    Head(Head),
}

/// A request the fast path serves.
struct Head {
    /// Its length in bytes, head only (it has no body).
    len: usize,
    /// The client asked to close the connection after it.
    close: bool,
    /// Where its target (path and query) is in the head.
    target: Range<usize>,
    fields: Fields,
}

/// What the dispatcher needs of a request's header fields.
enum Fields {
    /// A service's request (under `/api/`): only its `Authorization`, where it is in the head.
    Service { authorization: Option<Range<usize>> },
    /// Any other: every field.
    Other(HeaderMap),
}

fn parse(read: &[u8]) -> Parsed {
    if read.is_empty() {
        return Parsed::Partial;
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(read) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotOurs,
    };
    if len > MAX_HEAD {
        return Parsed::NotOurs;
    }
    let (Some("GET"), Some(1), Some(target)) = (parsed.method, parsed.version, parsed.path) else {
        return Parsed::NotOurs;
    };
    // Origin form only (`/path?query`); an absolute URI or `*` is hyper's to read.
    if !target.starts_with('/') {
        return Parsed::NotOurs;
    }
    // Where a slice of the head starts in it.
    let at = |part: &[u8]| part.as_ptr() as usize - read.as_ptr() as usize;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let service = !target.contains('#') && crate::router::is_api(path);
    let mut authorization = None;
    let mut headers = HeaderMap::new();
    let mut close = false;
    for field in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else {
            return Parsed::NotOurs;
        };
        let bodyless = match name {
            header::CONTENT_LENGTH => field.value.trim_ascii() == b"0",
            header::TRANSFER_ENCODING | header::EXPECT | header::UPGRADE => false,
            header::CONNECTION => {
                let value = field.value.trim_ascii();
                close |= value.eq_ignore_ascii_case(b"close");
                close || value.eq_ignore_ascii_case(b"keep-alive")
            }
            _ => true,
        };
        if !bodyless {
            return Parsed::NotOurs;
        }
        if service {
            // The first, as the header map's `get` finds it.
            if name == header::AUTHORIZATION && authorization.is_none() {
                let start = at(field.value);
                authorization = Some(start..start + field.value.len());
            }
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(field.value) else {
            return Parsed::NotOurs;
        };
        headers.append(name, value);
    }
    let start = at(target.as_bytes());
    Parsed::Head(Head {
        len,
        close,
        target: start..start + target.len(),
        fields: if service {
            Fields::Service { authorization }
        } else {
            Fields::Other(headers)
        },
    })
}

/// Whether `bytes` may hold the end of a head: an empty line (httparse takes a bare `\n` as a
/// line's end too).
fn may_end_head(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

/// A header value as text, as `HeaderValue::to_str` reads it (visible ASCII, spaces and tabs).
fn text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Whether a response asks for the connection to be closed after it.
fn says_close(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// Writes a JSON answer, head and body in one write.
async fn json(
    io: &mut Tracked,
    out: &mut Vec<u8>,
    body: &[u8],
    quota: Option<Quota>,
    close: bool,
) -> bool {
    out.clear();
    status_line(out, StatusCode::OK);
    answer_fields(Format::Json.content_type(), quota, |name, value| {
        field(out, name.as_str().as_bytes(), value)
    });
    end_head(out, Framing::Length(body.len() as u64), close);
    out.extend_from_slice(body);
    io.send(out).await
}

/// Writes `response`: its head, then its body with `content-length` when its size is known and
/// chunked when not. The request stops being in progress (`done`) once its body is produced.
/// False when the connection is to be dropped (an I/O error, a body that failed or did not
/// match its length).
async fn respond(
    io: &mut Tracked,
    out: &mut Vec<u8>,
    response: Response<Body>,
    close: bool,
    done: InFlight,
) -> bool {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let bodyless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = axum::body::HttpBody::size_hint(&body).exact();
    out.clear();
    status_line(out, status);
    for (name, value) in &parts.headers {
        // Framing is this writer's to say, and the date.
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION | header::DATE
        ) {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = match length {
        _ if bodyless => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    };
    end_head(out, framing, close);
    if bodyless {
        drop(done);
        return io.send(out).await;
    }
    match length {
        Some(n) if n <= INLINE_BODY as u64 => {
            let start = out.len();
            while let Some(data) = next_data(&mut body).await {
                let Ok(data) = data else { return false };
                out.extend_from_slice(&data);
            }
            drop(done);
            out.len() - start == n as usize && io.send(out).await
        }
        Some(n) => {
            if !io.send(out).await {
                return false;
            }
            let mut sent = 0u64;
            let mut done = Some(done);
            while let Some(data) = next_data(&mut body).await {
                let Ok(data) = data else { return false };
                sent += data.len() as u64;
                if sent == n {
                    // The body is made: what is left is the client's to read.
                    done.take();
                }
                if sent > n || !io.send(&data).await {
                    return false;
                }
            }
            sent == n
        }
        None => {
            if !io.send(out).await {
                return false;
            }
            let mut done = Some(done);
            loop {
                match next_data(&mut body).await {
                    Some(Ok(data)) => {
                        out.clear();
                        let _ = write!(out, "{:x}\r\n", data.len());
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                        if !io.send(out).await {
                            return false;
                        }
                    }
                    Some(Err(())) => return false,
                    None => {
                        done.take();
                        return io.send(b"0\r\n\r\n").await;
                    }
                }
            }
        }
    }
}

/// The body's next data, skipping empty frames and trailers (no service sends trailers).
async fn next_data(body: &mut Body) -> Option<Result<Bytes, ()>> {
    loop {
        match body.frame().await? {
            Ok(frame) => match frame.into_data() {
                Ok(data) if !data.is_empty() => return Some(Ok(data)),
                _ => {}
            },
            Err(e) => {
                tracing::debug!(error = %e, "a response body failed; the connection is closed");
                return Some(Err(()));
            }
        }
    }
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// How a response's body is delimited.
enum Framing {
    /// No body (204, 304).
    None,
    Length(u64),
    Chunked,
}

/// The head's last fields (date, framing, `connection: close` when it is the last response) and
/// its end.
fn end_head(out: &mut Vec<u8>, framing: Framing, close: bool) {
    http_date(out);
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            let mut number = itoa::Buffer::new();
            field(out, b"content-length", number.format(n).as_bytes());
        }
        Framing::Chunked => field(out, b"transfer-encoding", b"chunked"),
    }
    if close {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `date:` (RFC 9110 §6.6.1), formatted once a second per thread. The second is read from the
/// coarse clock (updated at each kernel tick, a few milliseconds at most behind, a quarter of the
/// precise clock's cost).
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let second = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse).tv_sec;
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            let since_epoch = Duration::from_secs(u64::try_from(second).unwrap_or(0));
            *text = httpdate::fmt_http_date(UNIX_EPOCH + since_epoch);
        }
        field(out, b"date", text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> Option<Head> {
        match parse(bytes) {
            Parsed::Head(head) => Some(head),
            _ => None,
        }
    }

    #[test]
    fn a_get_without_a_body_is_served_here_with_its_headers() {
        let bytes = b"GET /api/ratecard/query.json?card=demo HTTP/1.1\r\nHost: x\r\nAuthorization: Basic abc\r\nauthorization: Basic def\r\n\r\nGET /";
        let head = parsed(bytes).unwrap();
        assert_eq!(head.len, bytes.len() - 5);
        assert!(!head.close);
        assert_eq!(&bytes[head.target], b"/api/ratecard/query.json?card=demo");
        let Fields::Service {
            authorization: Some(at),
        } = head.fields
        else {
            panic!("a service's request")
        };
        assert_eq!(&bytes[at], b"Basic abc");
        // Anything else keeps every field.
        let head = parsed(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let Fields::Other(headers) = head.fields else {
            panic!("not a service's request")
        };
        assert_eq!(headers["host"], "x");
    }

    #[test]
    fn connection_close_is_kept() {
        let head = parsed(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(head.close);
    }

    #[test]
    fn the_end_of_a_head_is_seen_in_any_line_ending() {
        assert!(may_end_head(b"x: 1\r\n\r\n"));
        assert!(may_end_head(b"x: 1\n\n"));
        assert!(may_end_head(b"\n\r\n"));
        assert!(!may_end_head(b"x: 1\r\ny: 2\r\n"));
        assert!(!may_end_head(b"\n\r"));
    }

    #[test]
    fn a_partial_head_waits_for_more() {
        assert!(matches!(parse(b""), Parsed::Partial));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost:"), Parsed::Partial));
    }

    #[test]
    fn what_hyper_serves_is_handed_to_it() {
        for bytes in [
            &b"POST /api/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"HEAD / HTTP/1.1\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"\x16\x03\x01 not http",
        ] {
            assert!(
                matches!(parse(bytes), Parsed::NotOurs),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let bytes = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse(bytes.as_bytes()), Parsed::NotOurs));
    }
}
