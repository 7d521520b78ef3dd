//! The HTTP server: the accept loop and each connection's life, bounded so that no client can
//! hold the node's sockets or memory: a cap on open connections (over it a 503 in the envelope,
//! then the connection is closed), a deadline for a request's headers, a deadline for its body
//! (in the router), and an idle timeout that sheds a connection that neither sends nor receives.

mod connection;
mod fastpath;

use crate::router::App;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
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
            connection::connection(stream, app, &settings, stop).await;
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
