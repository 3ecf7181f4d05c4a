//! CPU affinity of threads (Linux): which CPUs this process may run on, and pinning the
//! calling thread to some of them — for data-plane worker threads that should keep a core to
//! themselves (as nginx's `worker_cpu_affinity`), and for benchmarks that keep the load
//! generator off the cores of the server they measure — and how much CPU time the process
//! has used, so a benchmark can say what a rate cost in cores.
//!
//! On other systems [`allowed_cpus`], [`pin_current_thread`] and [`process_cpu_time`] return
//! [`std::io::ErrorKind::Unsupported`].

use std::{io, time::Duration};

/// CPU time used by this process so far, all its threads together (user + system;
/// `CLOCK_PROCESS_CPUTIME_ID`). The difference of two readings over a wall-clock interval is
/// the number of cores the process kept busy in it.
pub fn process_cpu_time() -> io::Result<Duration> {
    imp::process_cpu_time()
}

/// The CPUs (numbered as the kernel numbers them) that this thread may run on, ascending.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    imp::allowed_cpus()
}

/// Restricts the calling thread to `cpus` (not empty); threads it starts afterwards inherit
/// that restriction.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no CPU to pin the thread to",
        ));
    }
    imp::pin_current_thread(cpus)
}

/// The CPUs as a list with ranges (`0-3,6`), as `taskset -c` and the kernel print them.
pub fn format_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        out.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(target_os = "linux")]
mod imp {
    use rustix::{
        thread::{CpuSet, sched_getaffinity, sched_setaffinity},
        time::{ClockId, clock_gettime},
    };
    use std::{io, time::Duration};

    pub fn process_cpu_time() -> io::Result<Duration> {
        let t = clock_gettime(ClockId::ProcessCPUTime);
        Ok(Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        ))
    }

    pub fn allowed_cpus() -> io::Result<Vec<usize>> {
        let set = sched_getaffinity(None)?;
        Ok((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
    }

    pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
        let mut set = CpuSet::new();
        for &c in cpus {
            if c >= CpuSet::MAX_CPU {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "CPU {c} is beyond the largest CPU number {}",
                        CpuSet::MAX_CPU - 1
                    ),
                ));
            }
            set.set(c);
        }
        Ok(sched_setaffinity(None, &set)?)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "CPU affinity is supported on Linux only",
        )
    }

    pub fn allowed_cpus() -> io::Result<Vec<usize>> {
        Err(unsupported())
    }

    pub fn process_cpu_time() -> io::Result<std::time::Duration> {
        Err(unsupported())
    }

    pub fn pin_current_thread(_: &[usize]) -> io::Result<()> {
        Err(unsupported())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn lists_are_printed_with_ranges() {
        assert_eq!(format_list(&[3, 0, 1, 2, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(format_list(&[5]), "5");
        assert_eq!(format_list(&[]), "");
    }

    #[test]
    fn a_pinned_thread_runs_only_where_pinned_and_its_children_inherit() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        std::thread::spawn(move || {
            pin_current_thread(&[last]).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![last]);
            let child = std::thread::spawn(|| allowed_cpus().unwrap())
                .join()
                .unwrap();
            assert_eq!(child, vec![last]);
        })
        .join()
        .unwrap();
        // The calling thread is untouched.
        assert_eq!(allowed_cpus().unwrap(), allowed);
    }

    #[test]
    fn cpu_time_grows_with_work_done_on_any_thread() {
        let before = process_cpu_time().unwrap();
        // Busy for about 50 ms of CPU on another thread: it counts for the process.
        std::thread::spawn(|| {
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(50) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
        .join()
        .unwrap();
        let used = process_cpu_time().unwrap() - before;
        assert!(used >= Duration::from_millis(30), "{used:?}");
    }

    #[test]
    fn bad_cpus_are_refused() {
        std::thread::spawn(|| {
            assert_eq!(
                pin_current_thread(&[]).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(
                pin_current_thread(&[1 << 20]).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        })
        .join()
        .unwrap();
    }
}
