//! What a value costs the nodes: CPU time, wake-ups and system calls of their processes,
//! counted over a point's measured window (frames come from the nodes' own counters). Divided
//! by the values acknowledged in the window, these barely depend on how busy the machine is,
//! unlike values/s.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// CPU time and wake-ups of a set of processes so far, every thread counted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Times a thread went to sleep of its own accord (`voluntary_ctxt_switches`): each one
    /// is a wake-up when work arrives.
    pub wakeups: u64,
}

impl Usage {
    /// Of every thread of `pids` (a pid of 0: this process).
    pub fn of(pids: &[u32]) -> Usage {
        let mut u = Usage::default();
        for pid in pids {
            let dir = match pid {
                0 => PathBuf::from("/proc/self/task"),
                p => PathBuf::from(format!("/proc/{p}/task")),
            };
            let Ok(tasks) = std::fs::read_dir(&dir) else {
                continue;
            };
            for t in tasks.filter_map(Result::ok) {
                u.cpu_s += crate::cluster::stat_cpu_seconds(&t.path().join("stat"));
                u.wakeups += voluntary_switches(&t.path().join("status"));
            }
        }
        u
    }

    /// What was used from `earlier` to `self`.
    pub fn since(self, earlier: Usage) -> Usage {
        Usage {
            cpu_s: (self.cpu_s - earlier.cpu_s).max(0.0),
            wakeups: self.wakeups.saturating_sub(earlier.wakeups),
        }
    }
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
    fn this_process_has_used_cpu_and_its_usage_only_grows() {
        let before = Usage::of(&[0]);
        let mut x = 0u64;
        for k in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(k);
        }
        std::hint::black_box(x);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let after = Usage::of(&[0]);
        let used = after.since(before);
        assert!(after.cpu_s >= before.cpu_s);
        assert!(
            used.wakeups >= 1,
            "the sleep is a voluntary switch: {used:?}"
        );
    }
}
