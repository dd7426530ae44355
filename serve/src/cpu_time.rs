//! CPU time spent by the engine, so that `/metrics` can say how much of the process's CPU
//! the server itself costs (`cifar10_engine_cpu_seconds_total` beside the process's own
//! `/proc` figures): each engine call is timed on its worker thread with that thread's CPU
//! clock, and the CPU engine's helper threads (`--threads` above 1) are read from `/proc`.

use std::time::Duration;

// The CPU engine's helper threads only ever run parts of engine calls, or spin briefly
// waiting for the next one: all their time is the engine's.
use infer::cpu::HELPER_THREAD_PREFIX;

/// The CPU time the calling thread has used so far; `None` where the platform has no
/// per-thread CPU clock (the engine's CPU is then not reported).
pub fn thread_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `now` is a valid timespec for the call to write; the clock id is a
        // constant every supported Unix defines.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        (rc == 0).then(|| Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
    }
    #[cfg(not(unix))]
    None
}

/// The CPU time used so far by every CPU engine helper thread of this process (all
/// engines', should there be several). Zero where `/proc` cannot be read (not Linux).
///
/// Reads `/proc/self/task/*/comm` and `…/schedstat` (its first field is the thread's time
/// on a CPU, in nanoseconds): a few file reads per helper, done only when `/metrics` is
/// rendered.
pub fn helper_threads_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .filter_map(|task| task.ok())
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|name| name.starts_with(HELPER_THREAD_PREFIX))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next().and_then(|ns| ns.parse().ok()))
        .map(Duration::from_nanos)
        .sum()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use infer::Engine;
    use model_format::arch::{INPUT_LEN, NUM_CLASSES};

    #[test]
    fn the_thread_clock_counts_this_threads_work_only() {
        let wall = std::time::Instant::now();
        let before = thread_cpu().expect("Linux has a thread CPU clock");
        while wall.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(wall.elapsed());
        }
        let used = thread_cpu().unwrap() - before;
        // One thread cannot use more CPU than the wall time that passed, and spinning uses some.
        assert!(used > Duration::ZERO && used <= wall.elapsed(), "{used:?} in {:?}", wall.elapsed());
        // Another thread's work does not count in this one's clock.
        let before = thread_cpu().unwrap();
        let other = std::thread::spawn(|| {
            let spin = std::time::Instant::now();
            while spin.elapsed() < Duration::from_millis(20) {
                std::hint::black_box(spin.elapsed());
            }
            thread_cpu().unwrap()
        });
        let others = other.join().unwrap();
        assert!(thread_cpu().unwrap() - before < others, "waiting for the other thread cost less than its spin");
    }

    #[test]
    fn helper_threads_of_a_multi_threaded_engine_are_counted() {
        let engine = infer::cpu::CpuEngine::new(&infer::random_weights(0), 2).unwrap();
        let before = helper_threads_cpu();
        let batch = 64;
        let mut logits = vec![0f32; batch * NUM_CLASSES];
        for _ in 0..3 {
            engine.logits_flat(&vec![0.5; batch * INPUT_LEN], batch, &mut logits).unwrap();
        }
        assert!(helper_threads_cpu() > before, "the helper ran parts of three 64-image calls");
    }
}
