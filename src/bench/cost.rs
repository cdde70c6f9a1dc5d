//! What a value costs the nodes: wake-ups and system calls of their processes, counted over a
//! point's measured window (frames come from the nodes' own counters, CPU from /proc `stat`). Divided
//! by the values acknowledged in the window, these barely depend on how busy the machine is,
//! unlike values/s.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Times the threads of `pids` (a pid of 0: this process) went to sleep of their own accord
/// so far (`voluntary_ctxt_switches`): each is a wake-up when work arrives. CPU time comes
/// from each process's own /proc `stat`, which also counts threads that have exited.
pub fn wakeups(pids: &[u32]) -> u64 {
    let mut n = 0;
    for pid in pids {
        let dir = match pid {
            0 => PathBuf::from("/proc/self/task"),
            p => PathBuf::from(format!("/proc/{p}/task")),
        };
        let Ok(tasks) = std::fs::read_dir(&dir) else {
            continue;
        };
        for t in tasks.filter_map(Result::ok) {
            n += voluntary_switches(&t.path().join("status"));
        }
    }
    n
}

fn voluntary_switches(status: &Path) -> u64 {
    std::fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// System calls of a set of processes, counted by `perf stat` on the `raw_syscalls:sys_enter`
/// tracepoint while it runs (every thread, including those started later). Needs perf and a
/// kernel that lets it count tracepoints (root); without them there is no count.
pub struct SyscallCount {
    perf: Child,
    out: PathBuf,
}

impl SyscallCount {
    /// Starts counting the system calls of `pids`; the count goes to `out`. None if perf
    /// cannot be started.
    pub fn start(pids: &[u32], out: &Path) -> Option<SyscallCount> {
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let perf = Command::new("perf")
            .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-o"])
            .arg(out)
            .args(["-p", &list.join(",")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(SyscallCount {
            perf,
            out: out.to_path_buf(),
        })
    }

    /// Stops counting (perf writes its count on SIGINT) and returns the count, None if perf
    /// could not count.
    pub fn finish(mut self) -> Option<u64> {
        let interrupted = Command::new("kill")
            .args(["-INT", &self.perf.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !interrupted {
            let _ = self.perf.kill();
        }
        let _ = self.perf.wait();
        let text = std::fs::read_to_string(&self.out).ok()?;
        let _ = std::fs::remove_file(&self.out);
        parse_perf_count(&text)
    }
}

impl Drop for SyscallCount {
    fn drop(&mut self) {
        let _ = self.perf.kill();
        let _ = self.perf.wait();
    }
}

/// The count of `perf stat -x ,` output: the first field of the event's line ("<not
/// counted>" and "<not supported>" are no count).
fn parse_perf_count(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_output_gives_the_count_or_none() {
        let counted = "# started on Mon Nov 30 07:40:00 2026\n\n123456,,raw_syscalls:sys_enter,5003127412,100.00,,\n";
        assert_eq!(parse_perf_count(counted), Some(123456));
        let refused = "<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n";
        assert_eq!(parse_perf_count(refused), None);
        assert_eq!(parse_perf_count(""), None);
    }

    #[test]
    fn this_process_has_used_cpu_and_sleeping_counts_as_a_wake_up() {
        let stat = std::path::Path::new("/proc/self/stat");
        let (cpu_before, before) = (crate::cluster::stat_cpu_seconds(stat), wakeups(&[0]));
        let mut x = 0u64;
        for k in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(k);
        }
        std::hint::black_box(x);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (cpu_after, after) = (crate::cluster::stat_cpu_seconds(stat), wakeups(&[0]));
        assert!(cpu_after >= cpu_before);
        assert!(
            after > before,
            "the sleep is a voluntary switch: {before} then {after}"
        );
    }
}
