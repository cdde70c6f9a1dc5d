//! Acceptor storage: one commit of a batch of votes (64-byte values), for batches of 1, 100
//! and 1000 under each fsync policy. Criterion's time per iteration is one commit; its
//! throughput is votes per second.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ethpaxos::protocol::{AcceptedEntry, Ballot, Batch, Change, ClientValue};
use ethpaxos::storage::{AcceptorStorage, MemoryStorage, RocksStorage};
use std::path::PathBuf;

fn votes(first: u64, n: u64) -> Vec<Change> {
    (first..first + n)
        .map(|i| {
            Change::Accept(AcceptedEntry {
                instance: i,
                ballot: Ballot::new(1, 1),
                value: Batch::new(vec![ClientValue {
                    client: 1,
                    seq: i,
                    payload: Bytes::from_static(&[0xAB; 64]),
                }]),
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

criterion_group!(benches, storage);
criterion_main!(benches);
