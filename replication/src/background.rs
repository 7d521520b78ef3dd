//! Threads doing bulk work that must not slow the serving path (an import, a build, a
//! re-rating) run at a lower CPU priority: when the cores are contended, the threads answering
//! queries get them first, and the bulk work takes what is left. Peer sync threads keep the
//! normal priority: at a lower one, a node busy answering queries fell behind its peers' writes
//! (a cluster test under load timed out waiting for convergence). What they do in bulk, a
//! document sent or received whole (a deck replicated), they hand to a lowered thread and wait
//! for it ([`lowered`]), holding no lock of the catalog meanwhile: only this peer's link, and
//! an edit of the very document being sent (its document's lock), wait behind it. Bulk work holds the catalog's write lock while it writes a card's
//! documents, so on cores saturated at normal priority an edit waits behind it for longer, the
//! lower its priority.

/// The nice value of background threads (0 is the default; 19 the lowest priority). At 10,
/// an import on one node still took the query p99 of a node sharing its cores to 3.4 ms; at
/// 19, 2.1 ms, and 0.44–0.87 ms once the deck's replication was lowered too
/// (`scripts/bench-load.sh`), the import taking as long.
pub const NICE: i32 = 19;

/// Lowers the calling thread's CPU priority to [`NICE`], or leaves it where it is when it is
/// lower already (a node started under `nice` or systemd's `Nice=`). Linux only, where a nice
/// value is per thread; best effort: where it is not allowed, the thread goes on as it was.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        let now = rustix::process::getpriority_process(None).unwrap_or(0);
        if now < NICE {
            if let Err(e) = rustix::process::setpriority_process(None, NICE) {
                tracing::debug!(error = %e, "could not lower a background thread's priority");
            }
        }
    }
}

/// Runs `work` at the background priority and returns what it returns, the caller waiting for
/// it: on a thread of its own, lowered (a thread's nice value cannot be raised back without
/// privilege, so the caller's own priority is left as it was). Inline when the caller is at
/// that priority already, or when no thread can be started. A panic in `work` goes on in the
/// caller.
pub fn lowered<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    #[cfg(target_os = "linux")]
    if rustix::process::getpriority_process(None).unwrap_or(NICE) < NICE {
        // Borrowed by the thread, so `work` is still here to run inline if it cannot start.
        let slot = parking_lot::Mutex::new(Some(work));
        let take = || slot.lock().take().expect("runs once");
        let started = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("bulk-apply".into())
                .spawn_scoped(scope, || {
                    lower_this_thread();
                    take()()
                })
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
        });
        return started.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "could not start a lowered thread; running inline");
            take()()
        });
    }
    work()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(None).unwrap()
    }

    #[test]
    fn lowered_work_runs_at_the_background_priority_and_the_caller_keeps_its_own() {
        let caller = nice();
        assert_eq!(lowered(nice), caller.max(NICE));
        assert_eq!(nice(), caller);
    }

    #[test]
    fn a_panic_in_lowered_work_goes_on_in_the_caller() {
        let caught = std::panic::catch_unwind(|| lowered(|| panic!("in the bulk work")));
        assert!(caught.is_err());
    }
}
