//! Acceptor storage: one commit of a batch of votes (64-byte values), for batches of 1, 100
//! and 1000 under each fsync policy. Criterion's time per iteration is one commit; its
//! throughput is votes per second.
//!
//! `full_load`: what one acceptor's storage does at 256 clients x 64 outstanding, alone: a
//! group commit of 400 votes, each a full 1500-byte frame's batch of 17 values, with the trim
//! point following 10,000 instances behind. Its throughput is client values per second: the
//! storage's cost per value, to set against the protocol's (docs/benchmarks.md).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ethpaxos::protocol::{AcceptedEntry, Ballot, Batch, Change, ClientValue};
use ethpaxos::storage::{AcceptorStorage, MemoryStorage, RocksStorage};
use std::path::PathBuf;

fn votes(first: u64, n: u64) -> Vec<Change> {
    votes_of(first, n, 1)
}

fn votes_of(first: u64, n: u64, values: u64) -> Vec<Change> {
    (first..first + n)
        .map(|i| {
            Change::Accept(AcceptedEntry {
                instance: i,
                ballot: Ballot::new(1, 1),
                value: Batch::new(
                    (0..values)
                        .map(|k| ClientValue {
                            client: k,
                            seq: i,
                            payload: Bytes::from_static(&[0xAB; 64]),
                        })
                        .collect(),
                ),
            })
        })
        .collect()
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn storage(c: &mut Criterion) {
    for policy in ["sync", "async", "none"] {
        let mut group = c.benchmark_group(format!("commit_{policy}"));
        group.sample_size(20);
        for n in [1u64, 100, 1000] {
            let dir = Scratch(std::env::temp_dir().join(format!(
                "ethpaxos-bench-{policy}-{n}-{}",
                std::process::id()
            )));
            let mut db: Box<dyn AcceptorStorage> = match policy {
                "none" => Box::new(MemoryStorage::default()),
                _ => Box::new(RocksStorage::open(&dir.0).expect("opens")),
            };
            let sync = policy == "sync";
            let mut next = 0u64;
            group.throughput(Throughput::Elements(n));
            group.bench_function(format!("batch_{n}"), |b| {
                b.iter_batched(
                    || {
                        next += n;
                        votes(next, n)
                    },
                    |batch| db.commit(&batch, sync).expect("commits"),
                    BatchSize::SmallInput,
                )
            });
            // A fresh memory store per size: keep its map from growing across sizes.
            drop(db);
        }
        group.finish();
    }
}

fn full_load(c: &mut Criterion) {
    const VOTES: u64 = 400;
    const VALUES: u64 = 17;
    const KEEP: u64 = 10_000;
    let mut group = c.benchmark_group("full_load");
    group.sample_size(30);
    group.throughput(Throughput::Elements(VOTES * VALUES));
    for policy in ["sync", "async"] {
        let dir = Scratch(std::env::temp_dir().join(format!(
            "ethpaxos-bench-full-{policy}-{}",
            std::process::id()
        )));
        let mut db = RocksStorage::open(&dir.0).expect("opens");
        let sync = policy == "sync";
        let mut next = 0u64;
        group.bench_function(policy, |b| {
            b.iter_batched(
                || {
                    let mut batch = votes_of(next, VOTES, VALUES);
                    next += VOTES;
                    if next > KEEP {
                        batch.push(Change::Trim(next - KEEP));
                    }
                    batch
                },
                |batch| db.commit(&batch, sync).expect("commits"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, storage, full_load);
criterion_main!(benches);
