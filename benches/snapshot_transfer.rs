//! Snapshot transfer between real nodes on raw Ethernet (AF_PACKET over veths) in the
//! namespace testbed (root; a benchmark, not a test: it reports and asserts nothing).
//!
//! For each image size S: 3 replicas whose learners keep their application's snapshots
//! (`learner.snapshot_every: 0`) and journals of 8 MiB (1 MiB segments), a client node with 16 x
//! 16 values of 1 KiB outstanding. Replicas 1 and 2 are handed an application snapshot of S
//! random bytes (`put snapshot` on their stream sockets, as examples/kv.rs does); replica 3
//! is killed (`kill -9`), stays down until both peers' journals dropped what it had not
//! delivered, and is restarted: it fetches a peer's image in chunks and installs it. Reported:
//! the transfer time its summary gives (first chunk asked to image checked) and the rate, and
//! the time from its restart to delivering past where the others stood at the restart.
//!
//! Run: `cargo bench --bench snapshot_transfer -- --sizes 1,16,64 --rounds 3` (add
//! `--answer-frames N` to set `protocol.answer_max_frames`: chunks per request).

use ethpaxos::testbed::{self, Layout, LayoutSpec, Nodes, Spec, Testbed};
use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_ethpaxos");
const NAME: &str = "epxsnp";
const VICTIM: u16 = 3;

fn summary(tb: &Testbed, id: u16) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(tb.dir.join(format!("summary-{id}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn num(s: &Option<serde_json::Value>, path: &[&str]) -> Option<u64> {
    let mut v = s.as_ref()?;
    for p in path {
        v = v.get(p)?;
    }
    v.as_u64()
}

fn wait(what: &str, within: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn kill9(children: &mut HashMap<u16, Child>, id: u16) {
    if let Some(mut c) = children.remove(&id) {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Random bytes (a xorshift stream: incompressible enough, no dependency).
fn state(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Round {
    bytes: u64,
    transfer_ms: u64,
    rejoin_ms: u128,
}

fn round(tb: &Testbed, children: &mut HashMap<u16, Child>, size: usize) -> Result<Round, String> {
    let stopped_at = num(&summary(tb, VICTIM), &["learner", "delivered_below"]).unwrap_or(0);
    kill9(children, VICTIM);
    // The peers are handed an image of `size` bytes of application state past where it
    // stopped (their journals keep what follows their newest image), then move on until
    // their journals no longer hold where it stopped.
    wait(
        "the peers delivered past it",
        Duration::from_secs(60),
        || {
            [1u16, 2].iter().all(|id| {
                num(&summary(tb, *id), &["learner", "delivered_below"])
                    .is_some_and(|d| d > stopped_at + 100)
            })
        },
    )?;
    for id in [1u16, 2] {
        let socket = tb.dir.join(format!("stream-{id}.sock"));
        // Where its stream stands now (a `live` reader is told).
        let live = ethpaxos::app::connect_stream(&socket, ethpaxos::app::StreamStart::Live)
            .map_err(|e| format!("replica {id}'s stream: {e}"))?;
        let below = live.from.ok_or("a replica without a journal")?;
        drop(live);
        ethpaxos::app::put_snapshot(&socket, below, &state(size, below.instance))
            .map_err(|e| format!("replica {id} refused the snapshot: {e}"))?;
    }
    // Neither the acceptors (they trim by the newest image) nor a peer's journal hold where
    // it stopped: it can come back only through an image.
    wait(
        "trim and the peers' journals moved past it",
        Duration::from_secs(120),
        || {
            let trimmed = [1u16, 2, 3].iter().any(|id| {
                num(&summary(tb, *id), &["acceptor", "trim"]).is_some_and(|t| t > stopped_at)
            });
            trimmed
                && [1u16, 2].iter().all(|id| {
                    num(&summary(tb, *id), &["learner", "journal", "oldest"])
                        .is_some_and(|o| o > stopped_at)
                })
        },
    )?;
    let target = num(&summary(tb, 1), &["learner", "delivered_below"]).ok_or("no summary")?;
    let _ = std::fs::remove_file(tb.dir.join(format!("summary-{VICTIM}.json")));
    let restarted = Instant::now();
    children.insert(
        VICTIM,
        tb.start(VICTIM, Path::new(EXE))
            .map_err(|e| e.to_string())?,
    );
    let mut done = None;
    wait("it rejoined", Duration::from_secs(300), || {
        let s = summary(tb, VICTIM);
        let caught_up = num(&s, &["learner", "delivered_below"]).is_some_and(|d| d >= target);
        if caught_up && num(&s, &["learner", "snapshots", "installed"]).is_some_and(|n| n > 0) {
            done = Some((
                num(&s, &["learner", "snapshots", "installed_bytes"]).unwrap_or(0),
                num(&s, &["learner", "snapshots", "install_ms"]).unwrap_or(0),
            ));
        }
        done.is_some()
    })?;
    let (bytes, transfer_ms) = done.expect("set when ready");
    Ok(Round {
        bytes,
        transfer_ms,
        rejoin_ms: restarted.elapsed().as_millis(),
    })
}

fn main() {
    let mut sizes = vec![1usize, 16, 64];
    let mut rounds = 3;
    let mut answer_frames = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sizes" => {
                sizes = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect()
            }
            "--rounds" => rounds = it.next().and_then(|s| s.parse().ok()).unwrap_or(3),
            "--answer-frames" => answer_frames = it.next().and_then(|s| s.parse().ok()),
            _ => {} // cargo bench passes --bench
        }
    }
    let spec = LayoutSpec {
        layout: Layout::Replicas,
        clients: 16,
        outstanding: 16,
        ..LayoutSpec::default()
    };
    let mut configs = testbed::layout_configs(&spec, None, Path::new("."));
    for c in &mut configs {
        let me = c.me().clone();
        if let Some(f) = answer_frames {
            c.protocol.answer_max_frames = f;
        }
        c.learner.segment_mb = 1;
        c.learner.retention_mb = 8;
        if me.plays(ethpaxos::config::Role::Client) {
            c.load.value_size = 1024;
        } else {
            c.learner.snapshot_every = 0;
            c.output.socket = Some("stream.sock".into());
        }
    }
    let dir = std::env::temp_dir().join(format!("ethpaxos-snapshot-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tb = match testbed::up(&Spec {
        name: NAME.into(),
        dir: dir.clone(),
        nodes: Nodes::Configs(configs),
    }) {
        Ok(tb) => tb,
        Err(e) => {
            println!("testbed: {e}");
            return;
        }
    };
    let mut children = HashMap::new();
    let result = (|| -> Result<(), String> {
        for n in &tb.nodes {
            children.insert(
                n.id,
                tb.start(n.id, Path::new(EXE)).map_err(|e| e.to_string())?,
            );
        }
        wait(
            "the replicas serve their streams",
            Duration::from_secs(30),
            || {
                [1u16, 2, 3].iter().all(|id| {
                    num(&summary(&tb, *id), &["learner", "delivered_below"])
                        .is_some_and(|d| d > 100)
                })
            },
        )?;
        println!("| image | transfer (first chunk asked to image checked) | rate | restart to caught up under load |");
        println!("|---|---|---|---|");
        for mib in &sizes {
            for r in 0..rounds {
                eprintln!("{mib} MiB, round {}:", r + 1);
                match round(&tb, &mut children, mib << 20) {
                    Ok(x) => println!(
                        "| {:.1} MiB | {} ms | {:.1} MB/s | {} ms |",
                        x.bytes as f64 / (1 << 20) as f64,
                        x.transfer_ms,
                        x.bytes as f64 / 1e6 / (x.transfer_ms.max(1) as f64 / 1000.0),
                        x.rejoin_ms
                    ),
                    Err(e) => {
                        println!("| {mib} MiB | failed: {e} | | |");
                        let log =
                            std::fs::read_to_string(tb.dir.join(format!("node-{VICTIM}.log")))
                                .unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(8).collect();
                        eprintln!(
                            "replica {VICTIM}'s log ends:\n{}",
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        );
                        eprintln!(
                            "its summary: {:?}",
                            summary(&tb, VICTIM).map(|s| s["learner"].clone())
                        );
                    }
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        println!("failed: {e}");
    }
    for id in children.keys().copied().collect::<Vec<_>>() {
        kill9(&mut children, id);
    }
    let _ = testbed::down(NAME);
    let _ = std::fs::remove_dir_all(&dir);
}
