//! Background threads step aside for the answer path.
//!
//! sipwake answers from two threads, the async runtime's and the store's; a few more
//! threads do work no answer waits for (copying SQLite's write-ahead log into the
//! database, writing the journal's snapshot). On a machine with few cores, or a
//! proxy pinned to one (as `bench/run.py` does), such a thread took the core from
//! the answer path for milliseconds at a time: 2–3 ms runs of the checkpointer in
//! the slowest probe samples at 8,000 new AORs a second (docs/BENCHMARKS.md, "The
//! latency tail at 8,000/s"). [`lower_this_thread`] puts the calling thread in
//! Linux's `SCHED_IDLE` class: it still gets whatever the core has spare (and a
//! sliver when the core is full, so it is never starved outright), but any other
//! thread that wakes takes the core from it at once.
//!
//! Best effort: it needs no privilege on Linux (a thread may always lower itself);
//! where it fails, or on other systems, the thread stays as it was. A thread cannot
//! raise itself back without privileges, so only threads that do nothing but
//! background work are lowered, never a pool's thread.

/// How a thread ended up after [`lower_this_thread`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lowered {
    /// In the `SCHED_IDLE` class (Linux).
    Idle,
    /// `SCHED_IDLE` refused: at the lowest priority of the usual class instead (nice 19).
    Nice,
    /// Unchanged (not Linux, or both refused).
    Unchanged,
}

/// Lowers the calling thread as far as it goes (see the module's header) and says
/// how far that was.
#[cfg(target_os = "linux")]
pub fn lower_this_thread() -> Lowered {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param that lives
    // across the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        return Lowered::Idle;
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let Ok(tid) = libc::id_t::try_from(tid) else {
        return Lowered::Unchanged;
    };
    // On Linux the nice value is per thread: PRIO_PROCESS with a thread id sets it
    // for that thread only.
    // SAFETY: setpriority takes plain integers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) } == 0 {
        Lowered::Nice
    } else {
        Lowered::Unchanged
    }
}

/// Nothing to lower on this system.
#[cfg(not(target_os = "linux"))]
pub fn lower_this_thread() -> Lowered {
    Lowered::Unchanged
}

/// Lowers the calling thread and logs it at debug level under `name` (a thread name);
/// what background threads call first thing.
pub fn lower_background_thread(name: &str) {
    let how = lower_this_thread();
    tracing::debug!(thread = name, lowered = ?how, "background thread lowered");
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The scheduling policy and nice value of this thread, from /proc (fields 41
    /// and 19 of `stat`, counted from 1; the name in field 2 may hold spaces).
    fn policy_and_nice() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        // `rest` starts at field 3
        (f[41 - 3].parse().unwrap(), f[19 - 3].parse().unwrap())
    }

    #[test]
    fn a_lowered_thread_is_in_the_idle_class_and_others_are_not() {
        let before = policy_and_nice();
        let (how, after) = std::thread::spawn(|| (lower_this_thread(), policy_and_nice()))
            .join()
            .unwrap();
        match how {
            Lowered::Idle => assert_eq!(after.0, libc::SCHED_IDLE as u32),
            Lowered::Nice => assert_eq!(after.1, 19),
            Lowered::Unchanged => panic!("neither SCHED_IDLE nor nice 19 was allowed"),
        }
        // only the thread that asked
        assert_eq!(policy_and_nice(), before);
        assert_eq!(before.0, libc::SCHED_OTHER as u32);
    }
}
