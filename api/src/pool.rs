//! The pool that runs blocking work (imports, CDR batches, edits, database reads) off the async
//! runtime, with caps so that no account can fill it: a request over its account's share or over
//! the node's total is answered at once (429 or 503 with `Retry-After`), never queued.

use crate::error::{ApiError, ErrorCode};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Blocking tasks in progress on the node, all accounts together.
pub const DEFAULT_TOTAL: usize = 64;
/// Blocking tasks in progress for one account (or for the operator).
pub const DEFAULT_PER_ACCOUNT: usize = 16;

/// A task's permits, its account's and the node's, held while the work runs.
type Held = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// Caps on blocking work. Cheap to clone.
#[derive(Clone)]
pub struct BlockingPool {
    inner: Arc<Inner>,
}

struct Inner {
    total: Arc<Semaphore>,
    per_account: usize,
    accounts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Default for BlockingPool {
    fn default() -> Self {
        Self::new(DEFAULT_TOTAL, DEFAULT_PER_ACCOUNT)
    }
}

impl BlockingPool {
    pub fn new(total: usize, per_account: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                total: Arc::new(Semaphore::new(total.max(1))),
                per_account: per_account.max(1),
                accounts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Runs `work` on a blocking thread for `who` (an account id, or the operator), or refuses
    /// at once when `who` or the node is at its cap.
    pub async fn run<T: Send + 'static>(
        &self,
        who: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let held = self.admit(who)?;
        // The permits go with the work: a client that hangs up does not free them while the
        // work still runs.
        tokio::task::spawn_blocking(move || {
            let _held = held;
            work()
        })
        .await
        .map_err(|e| ApiError::internal("blocking task", e))
    }

    /// [`Self::run`] for bulk work (an import, a build, a re-rating): on a thread of its own at
    /// background priority ([`edgerate_replication::background`]), so that queries answered
    /// meanwhile get the cores first.
    pub async fn run_background<T: Send + 'static>(
        &self,
        who: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let held = self.admit(who)?;
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("background".into())
            .spawn(move || {
                edgerate_replication::background::lower_this_thread();
                let out = work();
                drop(held);
                let _ = done.send(out);
            })
            .map_err(|e| ApiError::internal("background thread", e))?;
        result
            .await
            .map_err(|e| ApiError::internal("background thread", e))
    }

    /// The permits of one task for `who`, or the refusal when `who` or the node is at its cap.
    fn admit(&self, who: &str) -> Result<Held, ApiError> {
        let busy = |code, reason: String| {
            let mut e = ApiError::new(code, reason);
            e.retry_after = Some(1);
            e
        };
        let account = {
            let mut accounts = self.inner.accounts.lock();
            if accounts.len() > 100_000 {
                // Idle entries only (a held permit keeps its semaphore alive elsewhere).
                accounts.retain(|_, s| s.available_permits() < self.inner.per_account);
            }
            // Taken under the lock, so a clean-up cannot swap the semaphore in between.
            accounts
                .entry(who.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.inner.per_account)))
                .clone()
                .try_acquire_owned()
        }
        .map_err(|_| {
            busy(
                ErrorCode::TooManyRequests,
                format!(
                    "at most {} writes, imports and CDR queries of one account at once",
                    self.inner.per_account
                ),
            )
        })?;
        let node = self.inner.total.clone().try_acquire_owned().map_err(|_| {
            busy(
                ErrorCode::Unavailable,
                "the node is busy with as much blocking work as it takes".into(),
            )
        })?;
        Ok((account, node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_account_cannot_fill_the_pool() {
        let pool = BlockingPool::new(3, 2);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        let mut running = Vec::new();
        for _ in 0..2 {
            let (pool, wait) = (pool.clone(), wait.clone());
            running.push(tokio::spawn(async move {
                pool.run("a", move || {
                    let _ = wait.lock().recv();
                })
                .await
            }));
        }
        // Wait until both hold their slots.
        while pool.inner.total.available_permits() > 1 {
            tokio::task::yield_now().await;
        }
        let refused = pool.run("a", || ()).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::TooManyRequests);
        assert_eq!(refused.retry_after, Some(1));
        assert!(
            pool.run("b", || ()).await.is_ok(),
            "another account still runs"
        );
        let refused = pool.run_background("a", || ()).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::TooManyRequests, "the same caps");
        release.send(()).unwrap();
        release.send(()).unwrap();
        for task in running {
            task.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn bulk_work_runs_at_background_priority() {
        let pool = BlockingPool::new(3, 2);
        let ours = rustix::process::getpriority_process(None).unwrap();
        let nice = pool
            .run_background("a", || rustix::process::getpriority_process(None).unwrap())
            .await
            .unwrap();
        assert_eq!(nice, ours.max(edgerate_replication::background::NICE));
        assert_eq!(
            pool.inner.total.available_permits(),
            3,
            "permits given back"
        );
    }
}
