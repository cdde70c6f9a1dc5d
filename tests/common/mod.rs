//! Helpers shared by the tests that run real node processes: reading what clients saw
//! acknowledged and what learners delivered, and checking the two against each other.

#![allow(dead_code)]

pub mod cluster;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// `client seq ...` lines as (client, seq) pairs; a torn last line (a process killed while
/// writing) is skipped.
pub fn pairs(path: &Path) -> Vec<(u64, u64)> {
    read_lines(path)
        .iter()
        .filter_map(|l| {
            let mut it = l.split(' ');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Waits (up to `within`) until every learner has delivered every acknowledged value and all
/// learners hold the same number, then checks each delivered every value once and all in
/// one order. `acked` must hold more than `min_acked` values. Err describes the violation.
pub fn check_delivery(
    acked: &Path,
    learners: &[(u16, PathBuf)],
    min_acked: usize,
    within: Duration,
) -> Result<usize, String> {
    let acked: HashSet<(u64, u64)> = pairs(acked).into_iter().collect();
    if acked.len() <= min_acked {
        return Err(format!("only {} values acknowledged", acked.len()));
    }
    let deadline = Instant::now() + within;
    let streams = loop {
        let streams: Vec<Vec<(u64, u64)>> = learners.iter().map(|(_, p)| pairs(p)).collect();
        let complete = streams.iter().all(|s| {
            let got: HashSet<_> = s.iter().copied().collect();
            acked.is_subset(&got)
        });
        if complete && streams.iter().all(|s| s.len() == streams[0].len()) {
            break streams;
        }
        if Instant::now() > deadline {
            let lens: Vec<_> = streams.iter().map(Vec::len).collect();
            return Err(format!(
                "learners did not deliver every acknowledged value ({} acked; delivered {lens:?})",
                acked.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for ((id, _), s) in learners.iter().zip(&streams) {
        let unique: HashSet<_> = s.iter().collect();
        if unique.len() != s.len() {
            return Err(format!("learner {id} delivered a value twice"));
        }
    }
    for ((id, _), s) in learners.iter().zip(&streams).skip(1) {
        if *s != streams[0] {
            return Err(format!(
                "learner {id} delivered another order than learner {}",
                learners[0].0
            ));
        }
    }
    Ok(acked.len())
}

/// A free loopback UDP port (bound, then released).
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to `within`) until `acked` has `more` lines beyond what it has now; Err says
/// `why` and how far it got.
pub fn wait_for_acks(acked: &Path, more: usize, within: Duration, why: &str) -> Result<(), String> {
    let start = read_lines(acked).len();
    let deadline = Instant::now() + within;
    loop {
        let now = read_lines(acked).len();
        if now >= start + more {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no progress {why}: {} of {more} more acknowledgements in {within:?}",
                now - start
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then waits (up to 10 s) for the process to exit; Err if it ignored the signal or
/// exited with a failure.
pub fn terminate(child: &mut std::process::Child, what: &str) -> Result<(), String> {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > deadline {
            return Err(format!("{what} ignored SIGTERM"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} did not shut down cleanly on SIGTERM: {status}"
        ))
    }
}
