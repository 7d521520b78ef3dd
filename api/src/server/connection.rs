//! One connection's life: its requests served by the fast path ([`super::fastpath`]) until one
//! it does not serve, then by hyper; closed past its deadlines (a request's head, idleness) or at
//! shutdown.

use super::fastpath::{self, Ended};
use super::HttpSection;
use crate::router::App;
use crate::router::PREAUTH_BODY_BYTES;
use bytes::{Buf, Bytes};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// One connection: HTTP/1.1 with keep-alive, closed when idle past the timeout or at shutdown.
pub(super) async fn connection(
    stream: TcpStream,
    app: App,
    settings: &HttpSection,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::default());
    let mut io = Tracked {
        inner: stream,
        activity: activity.clone(),
        unread: Bytes::new(),
    };
    let mut deadlines = Deadlines::new(settings);
    let mut tick = tokio::time::interval(deadlines.tick());
    let mut closing = false;

    let read = {
        let fast = fastpath::serve(&mut io, &app, &activity);
        let mut fast = std::pin::pin!(fast);
        loop {
            tokio::select! {
                ended = fast.as_mut() => break ended,
                _ = stop.wait_for(|s| *s), if !closing => {
                    // Between requests the connection just closes; a request in progress is
                    // answered first, with `connection: close`.
                    if activity.in_flight.load(Ordering::Relaxed) == 0
                        && !activity.writing.load(Ordering::Relaxed)
                    {
                        return;
                    }
                    activity.closing.store(true, Ordering::Relaxed);
                    closing = true;
                }
                _ = tick.tick() => if deadlines.passed(&activity) { return },
            }
        }
    };
    // Not handed to hyper at shutdown: its request is not started.
    let Ended::HandedOff(read) = read else {
        return;
    };
    if closing {
        return;
    }

    // Hyper serves the rest, starting with the bytes the fast path read and did not serve.
    io.unread = read;
    let io = TokioIo::new(io);
    let counted = activity.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let done = counted.start();
            async move {
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
        // every request (a sleep allocated, registered and dropped each time).
        .header_read_timeout(None::<Duration>)
        .max_buf_size(PREAUTH_BODY_BYTES.max(fastpath::MAX_HEAD))
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait_for(|s| *s), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tick.tick() => if deadlines.passed(&activity) { return },
        }
    }
}

/// Whether a connection moved a byte since its last tick, and how many of its requests are in
/// progress. A flag, not a time: reading the clock at every read and write was 1-2 % of a rate
/// query; the tick (at least once a second) notes when the connection last moved.
#[derive(Default)]
pub(super) struct Activity {
    moved: AtomicBool,
    in_flight: AtomicUsize,
    /// Requests started on the connection.
    started: AtomicUsize,
    /// The fast path is writing a response: the connection waits on its client, so a client
    /// that stops reading is shed when idle even while its request counts as in progress (a
    /// large or streamed body being sent).
    writing: AtomicBool,
    /// The node is shutting down: the request in progress is the connection's last.
    closing: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    /// A request starts; it is in progress until the guard is dropped.
    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }
}

/// A request in progress on its connection, until dropped.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A connection's deadlines, checked at its tick: idle (nothing moved, nothing in progress) and
/// a request's head (since the connection last waited for one: between requests too).
struct Deadlines {
    idle: Duration,
    head: Duration,
    last_moved: Instant,
    waiting_since: Instant,
    /// Requests started as of the last tick.
    started: usize,
}

impl Deadlines {
    fn new(settings: &HttpSection) -> Self {
        let now = Instant::now();
        Self {
            idle: Duration::from_secs(settings.idle_timeout_s),
            head: Duration::from_secs(settings.header_read_timeout_s),
            last_moved: now,
            waiting_since: now,
            started: 0,
        }
    }

    /// How often they are checked: at least once a second.
    fn tick(&self) -> Duration {
        Duration::from_secs(1).min(self.idle).min(self.head)
    }

    /// Whether the connection is to be closed now.
    fn passed(&mut self, activity: &Activity) -> bool {
        let now = Instant::now();
        if activity.moved.swap(false, Ordering::Relaxed) {
            self.last_moved = now;
        }
        let quiet = now.saturating_duration_since(self.last_moved);
        let in_progress = activity.in_flight.load(Ordering::Relaxed) > 0;
        let writing = activity.writing.load(Ordering::Relaxed);
        let busy = in_progress && !writing;
        let started = activity.started.load(Ordering::Relaxed);
        // Not waiting for a head while a request is in progress or its answer is being sent.
        if in_progress || writing || started != self.started {
            (self.waiting_since, self.started) = (now, started);
        }
        // A service at work (a ping waiting for its trunk) is never shed; an idle keep-alive, a
        // half-sent request or a download whose client stopped reading is.
        if quiet >= self.idle && !busy {
            metrics::counter!(crate::metrics::HTTP_IDLE_CLOSED).increment(1);
            return true;
        }
        // A head sent too slowly (a byte now and then keeps a connection from being quiet), or
        // none coming.
        now.saturating_duration_since(self.waiting_since) >= self.head
    }
}

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

impl Tracked {
    /// Writes all of `bytes` (the fast path's responses), noting meanwhile that the connection
    /// waits on its client, not on a service; false on an I/O error.
    pub(super) async fn send(&mut self, bytes: &[u8]) -> bool {
        self.activity.writing.store(true, Ordering::Relaxed);
        let sent = self.write_all(bytes).await.is_ok();
        self.activity.writing.store(false, Ordering::Relaxed);
        sent
    }
}

/// A socket that notes when it last moved a byte; what the fast path read and left for hyper is
/// read from it first.
pub(super) struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    unread: Bytes,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
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
