//! Threads doing bulk work that must not slow the serving path (an import, a build, a
//! re-rating) run at a lower CPU priority: when the cores are contended, the threads answering
//! queries get them first, and the bulk work takes what is left. Peer sync threads keep the
//! normal priority: at a lower one, a node busy answering queries fell behind its peers' writes
//! (a cluster test under load timed out waiting for convergence). Bulk work holds the
//! catalog's write lock while it writes a card's documents, so on cores saturated at normal
//! priority an edit waits behind it for longer, the lower its priority.

/// The nice value of background threads (0 is the default; 19 the lowest priority). At 10,
/// an import on one node still took the query p99 of a node sharing its cores to 3.4 ms; at
/// 19, 0.6 ms (`scripts/bench-load.sh`), the import taking as long.
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
