//! The HTTP server: the accept loop and each connection's life, bounded so that no client can
//! hold the node's sockets or memory: a cap on open connections (over it a 503 in the envelope,
//! then the connection is closed), a deadline for a request's headers, a deadline for its body
//! (in the router), and an idle timeout that sheds a connection that neither sends nor receives.

use crate::router::App;
use crate::router::PREAUTH_BODY_BYTES;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// `[http]`: the API listener and its bounds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Seconds a client has to send a request's headers; default 10.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_s: u64,
    /// Seconds a client has to send a request's body; default 60.
    #[serde(default = "default_body_timeout")]
    pub body_read_timeout_s: u64,
    /// Seconds a connection may stay open with no request in progress and no bytes moving
    /// either way; default 30. (An idle keep-alive connection is closed sooner, at
    /// `header_read_timeout_s`: the header deadline also runs while it waits for the next
    /// request.)
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_s: u64,
    /// Connections open at once; default 4096. Over it a new connection gets a 503 and is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Threads of the runtime that serves requests (1-1024); default: the CPUs this process may
    /// run on when it starts (its CPU affinity and cgroup quota). Set it when the process is
    /// pinned to fewer CPUs after it started.
    #[serde(default)]
    pub workers: Option<usize>,
}

impl HttpSection {
    /// The runtime's worker threads: `workers`, else the CPUs the process may use.
    pub fn worker_threads(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            header_read_timeout_s: default_header_timeout(),
            body_read_timeout_s: default_body_timeout(),
            idle_timeout_s: default_idle_timeout(),
            max_connections: default_max_connections(),
            workers: None,
        }
    }
}

impl HttpSection {
    /// Checks the bounds make sense.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("header_read_timeout_s", self.header_read_timeout_s),
            ("body_read_timeout_s", self.body_read_timeout_s),
            ("idle_timeout_s", self.idle_timeout_s),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(format!("[http] {name} must be 1-3600 seconds"));
            }
        }
        if self.max_connections == 0 {
            return Err("[http] max_connections must be at least 1".into());
        }
        if self.workers.is_some_and(|w| !(1..=1024).contains(&w)) {
            return Err("[http] workers must be 1-1024".into());
        }
        Ok(())
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_s)
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_header_timeout() -> u64 {
    10
}
fn default_body_timeout() -> u64 {
    60
}
fn default_idle_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    4096
}

/// Connections over the cap that are being told so at once; past this they are just closed.
const MAX_REFUSING: usize = 256;

/// Serves `app` on `listener` until `stop` turns true, then lets open requests finish (at most
/// `drain` long).
pub async fn serve(
    listener: TcpListener,
    app: App,
    settings: HttpSection,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let open = Arc::new(Semaphore::new(settings.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::HTTP_REFUSED).increment(1);
            if let Ok(slot) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(slot);
                });
            }
            continue;
        };
        let app = app.clone();
        let settings = settings.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            connection(stream, app, &settings, stop).await;
            drop(permit);
        });
    }
    // No new connections while the open ones drain (they would wait in the backlog unanswered).
    drop(listener);
    // Every connection holds a permit until it is done.
    let all = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(drain, open.acquire_many(all)).await;
}

/// A 503 in the envelope for a connection over the cap, then close.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":{"code":503,"reason":"the node has as many open connections as it takes; retry shortly"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One connection: HTTP/1.1 with keep-alive, closed when idle past the timeout or at shutdown.
async fn connection(
    stream: TcpStream,
    app: App,
    settings: &HttpSection,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        moved: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
    });
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let counted = activity.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let counted = counted.clone();
            async move {
                counted.in_flight.fetch_add(1, Ordering::Relaxed);
                counted.started.fetch_add(1, Ordering::Relaxed);
                let done = InFlight(counted);
                let request = request.map(axum::body::Body::new);
                let response = app.call(request).await;
                // In progress until the last byte of the body is sent (a streamed export that
                // pauses while it reads is not idle).
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    axum::body::Body::new(Guarded {
                        inner: body,
                        _done: done,
                    })
                }))
            }
        });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The header deadline is kept by the loop below, at its tick: hyper's arms a timer for
        // every request (a sleep allocated, registered and dropped each time), which cost a
        // rate query 8 % of its throughput on one core (BENCHMARKS.md).
        .header_read_timeout(None::<Duration>)
        .max_buf_size(PREAUTH_BODY_BYTES.max(64 * 1024))
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let idle = Duration::from_secs(settings.idle_timeout_s);
    let head = Duration::from_secs(settings.header_read_timeout_s);
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(idle).min(head));
    let mut last_moved = Instant::now();
    // Since when the connection has waited for a request's head, no request in progress and
    // none started: the header deadline runs from there, between requests too.
    let (mut waiting_since, mut started) = (Instant::now(), 0);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if activity.moved.swap(false, Ordering::Relaxed) {
                    last_moved = now;
                }
                let quiet = now.saturating_duration_since(last_moved);
                let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
                let started_now = activity.started.load(Ordering::Relaxed);
                if busy || started_now != started {
                    (waiting_since, started) = (now, started_now);
                }
                // A service at work (a ping waiting for its trunk) is never shed; an idle
                // keep-alive, a half-sent request or a download whose client stopped reading is.
                if quiet >= idle && !busy {
                    metrics::counter!(crate::metrics::HTTP_IDLE_CLOSED).increment(1);
                    return;
                }
                // A head sent too slowly (a byte now and then keeps a connection from being
                // quiet), or none coming.
                if now.saturating_duration_since(waiting_since) >= head {
                    return;
                }
            }
        }
    }
}

/// Whether a connection moved a byte since its last tick, and how many of its requests are in
/// progress. A flag, not a time: reading the clock at every read and write was 1-2 % of a rate
/// query; the tick (at least once a second) notes when the connection last moved.
struct Activity {
    moved: AtomicBool,
    in_flight: AtomicUsize,
    /// Requests started on the connection.
    started: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }
}

struct InFlight(Arc<Activity>);

/// A response body that keeps its request counted as in progress until it ends.
struct Guarded {
    inner: axum::body::Body,
    _done: InFlight,
}

impl axum::body::HttpBody for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A socket that notes when it last moved a byte.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
