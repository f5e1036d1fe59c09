//! CPU priority of this process's own threads (Linux; elsewhere nothing
//! changes): background work yields the cores to the stages that must keep
//! up. Threads a thread starts afterwards inherit its priority.

/// Lowers the calling thread's nice value to `nice`. A failure leaves it as
/// it was.
pub fn lower_current_thread(nice: i32) {
    // SAFETY: setpriority only reads its integer arguments; on Linux `who =
    // 0` with PRIO_PROCESS is the calling thread.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Moves the calling thread to the lowest priority: nice 19 and the idle
/// scheduling class (it runs when no other thread wants the core).
pub fn idle_current_thread() {
    lower_current_thread(IDLE_NICE);
    // SAFETY: sched_setscheduler reads a parameter that lives through the
    // call; pid 0 is the calling thread.
    #[cfg(target_os = "linux")]
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

/// The nice value of [`idle_current_thread`].
pub const IDLE_NICE: i32 = 19;

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn an_idle_thread_and_the_threads_it_starts_run_at_the_lowest_priority() {
        // SAFETY: getpriority and sched_getscheduler only read their integer
        // arguments (0: the calling thread).
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let before = (nice(), policy());
        let (own, started) = std::thread::spawn(move || {
            idle_current_thread();
            let own = (nice(), policy());
            (own, std::thread::spawn(move || (nice(), policy())).join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(own, (IDLE_NICE, libc::SCHED_IDLE));
        assert_eq!(started, own, "inherited");
        assert_eq!((nice(), policy()), before, "the calling thread keeps its priority");
        assert_eq!(before.1, libc::SCHED_OTHER);
    }
}
