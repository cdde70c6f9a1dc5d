//! Failover and whole-cluster restart times of node processes on raw Ethernet (AF_PACKET) in
//! the namespace testbed, at several history sizes, with one learner down (root; a benchmark,
//! not a test: it reports times and asserts nothing about them).
//!
//! For each history size H: the roles layout (2 proposers, 3 acceptors, 2 learners, a client
//! node with 16 x 16 values outstanding), one value per instance (`batch_max_values: 1`), so
//! H acknowledged values are H decided instances. Learner 22 is killed at the start and stays
//! down. Once H instances are decided, the leader is killed (`kill -9`) `--kills` times (it is
//! restarted after each); then every node is killed at once and restarted. Times come from the
//! nodes' timestamped log lines: "leading with ballot" (phase 1 done) and "first decision"
//! (the new leader's first instance decided), against the clock read just before the kill or
//! the restart.
//!
//! Run: `cargo bench --bench failover -- --histories 10000,100000,1000000 --kills 5`
//! (add `--heartbeat-ms 2` for the fast-failover settings: heartbeat 2 ms, leader timeout
//! 10 ms, backoff 10 ms, retransmit 4 ms).
//!
//! `--soak SECONDS` instead runs the same cluster under load with learner 22 dead from the
//! start and prints each acceptor's resident memory and storage size every 10 s: with trim
//! following the live learners' snapshots, both must stay flat. Then it restarts learner 22, which
//! fetches what acceptors trimmed from learner 21's journal, and prints how long it took to
//! catch up with learner 21 and at what rate.

use ethpaxos::protocol::ProtocolConfig;
use ethpaxos::testbed::{self, Layout, LayoutSpec, Nodes, Spec, Testbed};
use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EXE: &str = env!("CARGO_BIN_EXE_ethpaxos");
const NAME: &str = "epxfo";
const DOWN_LEARNER: u16 = 22;
const PROPOSERS: [u16; 2] = [1, 2];

struct Args {
    histories: Vec<u64>,
    kills: usize,
    heartbeat_ms: Option<u64>,
    soak_secs: Option<u64>,
}

fn args() -> Args {
    let mut a = Args {
        histories: vec![10_000, 100_000],
        kills: 5,
        heartbeat_ms: None,
        soak_secs: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--histories" => {
                a.histories = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect()
            }
            "--kills" => a.kills = it.next().and_then(|s| s.parse().ok()).unwrap_or(5),
            "--heartbeat-ms" => a.heartbeat_ms = it.next().and_then(|s| s.parse().ok()),
            "--soak" => a.soak_secs = it.next().and_then(|s| s.parse().ok()),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// Seconds since the epoch of a log line's RFC 3339 timestamp (`2026-11-29T21:48:16.584702Z`).
fn line_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date.split('-').filter_map(|x| x.parse().ok()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').filter_map(|x| x.parse().ok()).collect();
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    Some(secs as f64 + frac)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The first line of node `id`'s log after time `after` that contains `what`, and its time.
fn logged_after(tb: &Testbed, id: u16, what: &str, after: f64) -> Option<(f64, String)> {
    let text = std::fs::read_to_string(tb.dir.join(format!("node-{id}.log"))).ok()?;
    text.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| Some((line_time(l)?, l.to_string())))
        .find(|(t, _)| *t >= after)
}

/// Waits (up to `within`) for any proposer to log `what` after `after`.
fn wait_logged(tb: &Testbed, what: &str, after: f64, within: Duration) -> Option<(u16, f64)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for id in PROPOSERS {
            if let Some((t, _)) = logged_after(tb, id, what, after) {
                return Some((id, t));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn acked(tb: &Testbed) -> u64 {
    std::fs::read(tb.dir.join("acknowledged.txt"))
        .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
        .unwrap_or(0)
}

fn wait_acked(tb: &Testbed, at_least: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut last = Instant::now();
    while Instant::now() < deadline {
        let n = acked(tb);
        if n >= at_least {
            return true;
        }
        if last.elapsed() > Duration::from_secs(10) {
            eprintln!("  ... {n} of {at_least} instances decided");
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn kill9(children: &mut HashMap<u16, Child>, id: u16) {
    if let Some(mut c) = children.remove(&id) {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn ms(from: f64, to: f64) -> f64 {
    (to - from) * 1000.0
}

struct Result {
    history: u64,
    /// Per kill: (to leading, to first decision) in ms.
    kills: Vec<(f64, f64)>,
    restart: Option<(f64, f64)>,
}

/// The roles-layout cluster under load, learner 22 killed once it progresses; runs `f`, then
/// kills every node and removes the testbed, whatever `f` returned.
fn with_cluster<T>(
    protocol: &ProtocolConfig,
    f: impl FnOnce(&Testbed, &mut HashMap<u16, Child>) -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    let dir = std::env::temp_dir().join(format!("ethpaxos-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = Spec {
        name: NAME.into(),
        dir: dir.clone(),
        nodes: Nodes::Layout(LayoutSpec {
            layout: Layout::Roles,
            clients: 16,
            outstanding: 16,
            protocol: protocol.clone(),
            // A learner down for the whole soak comes back through its peer's journal, which
            // must still hold where it stopped.
            journal_retention_mb: 0,
            ..LayoutSpec::default()
        }),
    };
    let tb = testbed::up(&spec).map_err(|e| e.to_string())?;
    let mut children = HashMap::new();
    let result = (|| {
        for n in &tb.nodes {
            children.insert(
                n.id,
                tb.start(n.id, Path::new(EXE)).map_err(|e| e.to_string())?,
            );
        }
        if !wait_acked(&tb, 1000, Duration::from_secs(60)) {
            return Err("no progress at start".to_string());
        }
        kill9(&mut children, DOWN_LEARNER);
        f(&tb, &mut children)
    })();
    for id in children.keys().copied().collect::<Vec<_>>() {
        kill9(&mut children, id);
    }
    let _ = testbed::down(NAME);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(
    history: u64,
    kills: usize,
    protocol: &ProtocolConfig,
) -> std::result::Result<Result, String> {
    with_cluster(protocol, |tb, children| {
        let started = Instant::now();
        if !wait_acked(tb, history, Duration::from_secs(3600)) {
            return Err(format!("history of {history} not reached"));
        }
        eprintln!(
            "  history of {history} instances in {:.0} s, learner {DOWN_LEARNER} down",
            started.elapsed().as_secs_f64()
        );
        let mut out = Result {
            history,
            kills: Vec::new(),
            restart: None,
        };
        for _ in 0..kills {
            let leader = latest_leader(tb);
            let t0 = now_secs();
            kill9(children, leader);
            let (_, lead) = wait_logged(tb, "leading with ballot", t0, Duration::from_secs(60))
                .ok_or("no new leader within 60 s")?;
            let (_, first) = wait_logged(tb, "first decision", t0, Duration::from_secs(60))
                .ok_or("no decision within 60 s of the kill")?;
            out.kills.push((ms(t0, lead), ms(t0, first)));
            children.insert(
                leader,
                tb.start(leader, Path::new(EXE))
                    .map_err(|e| e.to_string())?,
            );
            let now = acked(tb);
            if !wait_acked(tb, now + 2000, Duration::from_secs(60)) {
                return Err("no progress after a failover".into());
            }
        }
        // Every node at once (learner 22 stays down).
        let ids: Vec<u16> = children.keys().copied().collect();
        for id in &ids {
            kill9(children, *id);
        }
        let t0 = now_secs();
        for id in &ids {
            children.insert(
                *id,
                tb.start(*id, Path::new(EXE)).map_err(|e| e.to_string())?,
            );
        }
        let lead = wait_logged(tb, "leading with ballot", t0, Duration::from_secs(120));
        let first = wait_logged(tb, "first decision", t0, Duration::from_secs(120));
        if let (Some((_, l)), Some((_, f))) = (lead, first) {
            out.restart = Some((ms(t0, l), ms(t0, f)));
        }
        Ok(out)
    })
}

/// The proposer whose "leading with ballot" line has the highest round.
fn latest_leader(tb: &Testbed) -> u16 {
    let mut best = (0u32, PROPOSERS[0]);
    for id in PROPOSERS {
        let text =
            std::fs::read_to_string(tb.dir.join(format!("node-{id}.log"))).unwrap_or_default();
        for l in text.lines() {
            if let Some(b) = l.split("leading with ballot ").nth(1) {
                let round = b
                    .split('.')
                    .next()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                best = best.max((round, id));
            }
        }
    }
    best.1
}

/// A process's resident memory in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Bytes under `dir`, recursively.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Load with learner 22 dead for `secs`: each acceptor's RSS and storage every 10 s.
fn soak(secs: u64, protocol: &ProtocolConfig) -> std::result::Result<(), String> {
    with_cluster(protocol, |tb, children| {
        println!("| t (s) | instances decided | acceptor 11 / 12 / 13 RSS (MiB) | storage 11 / 12 / 13 (MiB) |");
        println!("|---|---|---|---|");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_secs(10));
            let rss: Vec<String> = [11u16, 12, 13]
                .iter()
                .map(|a| children.get(a).map_or(f64::NAN, |c| rss_mib(c.id())))
                .map(|m| format!("{m:.0}"))
                .collect();
            let disk: Vec<String> = [11u16, 12, 13]
                .iter()
                .map(|a| dir_bytes(&tb.dir.join("data").join(a.to_string())) as f64 / 1048576.0)
                .map(|m| format!("{m:.0}"))
                .collect();
            println!(
                "| {:.0} | {} | {} | {} |",
                start.elapsed().as_secs_f64(),
                acked(tb),
                rss.join(" / "),
                disk.join(" / ")
            );
        }
        rejoin(tb, children)
    })
}

/// A node's live summary.
fn summary(tb: &Testbed, id: u16) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(tb.dir.join(format!("summary-{id}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// Restarts the dead learner under load and times its catch-up to where learner 21 stood.
fn rejoin(tb: &Testbed, children: &mut HashMap<u16, Child>) -> std::result::Result<(), String> {
    let peer = summary(tb, 21).ok_or("no summary of learner 21")?;
    let target = peer["learner"]["delivered_below"]
        .as_u64()
        .ok_or("no delivered_below")?;
    let _ = std::fs::remove_file(tb.dir.join(format!("summary-{DOWN_LEARNER}.json")));
    let started = Instant::now();
    children.insert(
        DOWN_LEARNER,
        tb.start(DOWN_LEARNER, Path::new(EXE))
            .map_err(|e| e.to_string())?,
    );
    loop {
        if started.elapsed() > Duration::from_secs(1800) {
            return Err(format!(
                "learner {DOWN_LEARNER} did not reach {target} in 30 min"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
        let Some(s) = summary(tb, DOWN_LEARNER) else {
            continue;
        };
        let l = &s["learner"];
        let at = l["delivered_below"].as_u64().unwrap_or(0);
        if s["trimmed_out"].is_u64() {
            return Err(format!("learner {DOWN_LEARNER} is stranded: {l}"));
        }
        if at >= target {
            let secs = started.elapsed().as_secs_f64();
            let values = l["peer_values"].as_u64().unwrap_or(0);
            let bytes = l["journal"]["appended_bytes"].as_u64().unwrap_or(0);
            println!(
                "\nlearner {DOWN_LEARNER} restarted at instance {}: reached instance {target} \
                 (where learner 21 stood at the restart) in {secs:.1} s, {values} values from its \
                 peer's journal ({:.0} values/s, {:.1} MB/s of journal records)",
                l["resumed_at"],
                values as f64 / secs,
                bytes as f64 / secs / 1e6
            );
            return Ok(());
        }
    }
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn main() {
    let a = args();
    let mut protocol = ProtocolConfig {
        batch_max_values: 1,
        ..ProtocolConfig::default()
    };
    if let Some(hb) = a.heartbeat_ms {
        protocol.heartbeat_interval_ms = hb;
        protocol.leader_timeout_ms = 5 * hb;
        protocol.takeover_backoff_ms = 5 * hb;
        protocol.retransmit_timeout_ms = (2 * hb).max(1);
    }
    if let Some(secs) = a.soak_secs {
        println!("learner {DOWN_LEARNER} dead from the start, one value per instance, 16 x 16 outstanding");
        if let Err(e) = soak(secs, &protocol) {
            println!("soak failed: {e}");
        }
        return;
    }
    println!(
        "heartbeat {} ms, leader timeout {} ms, {} kills per history; times in ms from the kill (or the restart)",
        protocol.heartbeat_interval_ms, protocol.leader_timeout_ms, a.kills
    );
    println!("| history (instances) | failover to leading, p50 / max | failover to first decision, p50 / max | whole-cluster restart to leading | to first decision |");
    println!("|---|---|---|---|---|");
    for h in &a.histories {
        eprintln!("history {h}:");
        match run(*h, a.kills, &protocol) {
            Ok(r) => {
                let lead: Vec<f64> = r.kills.iter().map(|k| k.0).collect();
                let first: Vec<f64> = r.kills.iter().map(|k| k.1).collect();
                let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
                let (rl, rf) = r.restart.map_or(
                    ("none in 120 s".into(), "none in 120 s".into()),
                    |(l, f)| (format!("{l:.0}"), format!("{f:.0}")),
                );
                println!(
                    "| {} | {:.0} / {:.0} | {:.0} / {:.0} | {rl} | {rf} |",
                    r.history,
                    percentile(&lead, 0.5),
                    max(&lead),
                    percentile(&first, 0.5),
                    max(&first),
                );
            }
            Err(e) => println!("| {h} | failed: {e} | | | |"),
        }
    }
}
