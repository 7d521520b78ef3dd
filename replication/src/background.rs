//! Threads doing bulk work that must not slow the serving path (an import, a build, a
//! re-rating) run at a lower CPU priority: when the cores are contended, the threads answering
//! queries get them first, and the bulk work takes what is left. Peer sync threads keep the
//! normal priority: at a lower one, a node busy answering queries fell behind its peers' writes
//! (a cluster test under load timed out waiting for convergence). What they do in bulk, a
//! document sent or received whole (a deck replicated), goes to a lowered thread ([`lowered`]),
//! holding no lock of the catalog meanwhile. An import holds the catalog's write lock only to
//! enter its revision, not while it writes the revision's documents.

/// The nice value of background threads (0 is the default; 19 the lowest priority). At 10,
/// an import on one node still took the query p99 of a node sharing its cores to 3.4 ms; at
/// 19, 2.1 ms, and 0.44–0.87 ms once the deck's replication was lowered too
/// (`scripts/bench-load.sh`), the import taking as long.
pub const NICE: i32 = 19;

/// Puts the calling thread in the idle scheduling class (`SCHED_IDLE`) and lowers its nice value
/// ([`nice_this_thread`]): a node's own bulk work (an import, a build, a re-rating). A nice value
/// alone is a share: the scheduler (EEVDF) lets a thread at nice 19 finish its slice, ~1 ms,
/// before a query's woken thread runs, and with an import on every core a query waited up to
/// 4–5 ms so (a scheduler trace of an import with rule edits beside it: query p99 2.10 ms at
/// nice 19, 0.52 ms in the idle class, BENCHMARKS.md); an idle-class thread gives way at once.
/// Linux only; best effort: where it is not allowed, the thread goes on as it was.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        // The class first: setting it also sets the nice value (to 0, where that is allowed),
        // which is lowered after.
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let native = thread_priority::unix::thread_native_id();
        if let Err(e) =
            thread_priority::unix::set_thread_priority_and_policy(native, ThreadPriority::Min, idle)
        {
            tracing::debug!(error = ?e, "could not put a background thread in the idle class");
        }
    }
    nice_this_thread();
}

/// Lowers the calling thread's nice value to [`NICE`], or leaves it where it is when it is
/// lower already (a node started under `nice` or systemd's `Nice=`). Linux only, where a nice
/// value is per thread; best effort.
fn nice_this_thread() {
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

/// Runs `work` at the background priority (nice 19, not the idle class: a replicated deck's
/// bulk done in the idle class took a 1M-row deck to every peer of three nodes sharing 2 cores
/// in 18.7 s against 14.2 s, as every other thread of the three preempted it) and returns what it
/// returns, the caller waiting for it: on a thread of its own, lowered (a thread's nice value cannot be raised back without
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
                    nice_this_thread();
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

    /// The calling thread's scheduling class, as the kernel reports it (5: `SCHED_IDLE`).
    fn policy() -> String {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").unwrap();
        let line = sched.lines().find(|l| l.starts_with("policy")).unwrap();
        line.rsplit(':').next().unwrap().trim().to_owned()
    }

    #[test]
    fn a_nodes_own_bulk_work_runs_in_the_idle_class_a_replicated_decks_at_nice_19() {
        let (own, nice) = std::thread::spawn(|| {
            lower_this_thread();
            (policy(), nice())
        })
        .join()
        .unwrap();
        assert_eq!((own.as_str(), nice), ("5", NICE));
        assert_eq!(lowered(policy), "0");
    }

    #[test]
    fn a_panic_in_lowered_work_goes_on_in_the_caller() {
        let caught = std::panic::catch_unwind(|| lowered(|| panic!("in the bulk work")));
        assert!(caught.is_err());
    }
}
