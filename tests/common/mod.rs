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

/// `client seq hash position` lines of a delivered file: (client, seq) and the position
/// (a torn last line is skipped).
pub fn positioned(path: &Path) -> Vec<((u64, u64), ethpaxos::protocol::Position)> {
    read_lines(path)
        .iter()
        .filter_map(|l| {
            let mut it = l.split(' ');
            let key = (it.next()?.parse().ok()?, it.next()?.parse().ok()?);
            Some((key, it.nth(1)?.parse().ok()?))
        })
        .collect()
}

/// Waits (up to `within`) until every learner has delivered every acknowledged value and all
/// learners hold the same number, then checks each delivered every value once and all in
/// one order. A learner that installed a peer's snapshot (`installed_at` says where, asked
/// on every look) is held to every value from there on, in the same order, and to nothing
/// else. `acked` must hold more than `min_acked` values. Err describes the violation.
pub fn check_delivery(
    acked: &Path,
    learners: &[(u16, PathBuf)],
    min_acked: usize,
    within: Duration,
    installed_at: &dyn Fn(u16) -> Option<ethpaxos::protocol::Position>,
) -> Result<usize, String> {
    let acked: HashSet<(u64, u64)> = pairs(acked).into_iter().collect();
    if acked.len() <= min_acked {
        return Err(format!("only {} values acknowledged", acked.len()));
    }
    let deadline = Instant::now() + within;
    loop {
        let installs: Vec<_> = learners.iter().map(|(id, _)| installed_at(*id)).collect();
        let streams: Vec<Vec<_>> = learners.iter().map(|(_, p)| positioned(p)).collect();
        let whole: Vec<usize> = (0..learners.len())
            .filter(|k| installs[*k].is_none())
            .collect();
        let Some(&reference) = whole.first() else {
            return Err("every learner installed a snapshot: none to compare with".into());
        };
        let full = &streams[reference];
        let complete = whole.iter().all(|k| {
            let got: HashSet<_> = streams[*k].iter().map(|(key, _)| *key).collect();
            acked.is_subset(&got) && streams[*k].len() == full.len()
        }) && installs.iter().zip(&streams).all(|(at, s)| {
            at.is_none_or(|p| {
                let got: HashSet<_> = s.iter().map(|(key, _)| *key).collect();
                full.iter()
                    .filter(|(_, q)| *q >= p)
                    .all(|(key, _)| got.contains(key))
            })
        });
        if complete {
            break;
        }
        if Instant::now() > deadline {
            let lens: Vec<_> = streams.iter().map(Vec::len).collect();
            return Err(format!(
                "learners did not deliver every acknowledged value ({} acked; delivered \
                 {lens:?}; snapshots installed at {installs:?})",
                acked.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let streams: Vec<Vec<_>> = learners.iter().map(|(_, p)| positioned(p)).collect();
    let installs: Vec<_> = learners.iter().map(|(id, _)| installed_at(*id)).collect();
    let reference = installs
        .iter()
        .position(Option::is_none)
        .expect("checked above");
    let full = &streams[reference];
    for (((id, _), s), at) in learners.iter().zip(&streams).zip(&installs) {
        let unique: HashSet<_> = s.iter().map(|(key, _)| key).collect();
        if unique.len() != s.len() {
            return Err(format!("learner {id} delivered a value twice"));
        }
        match at {
            None if s != full => {
                return Err(format!(
                    "learner {id} delivered another order than learner {}",
                    learners[reference].0
                ))
            }
            None => {}
            Some(p) => {
                // In the reference's order, at the reference's positions, nothing skipped
                // from the image on.
                let mut rest = full.iter();
                if !s.iter().all(|e| rest.any(|f| f == e)) {
                    return Err(format!(
                        "learner {id} (snapshot installed at {p}) delivered another order \
                         than learner {}",
                        learners[reference].0
                    ));
                }
                if s.iter().any(|(_, q)| q >= p)
                    && s.iter().filter(|(_, q)| q >= p).count()
                        != full.iter().filter(|(_, q)| q >= p).count()
                {
                    return Err(format!(
                        "learner {id} skipped values after its snapshot at {p}"
                    ));
                }
            }
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

/// Waits (up to `within`, looking every 50 ms) until `ready` holds; Err names `what`.
pub fn wait_until(
    what: &str,
    within: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting until {what} ({within:?})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
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
