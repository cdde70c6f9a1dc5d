//! The in-process cluster (threads + in-memory transport) at 1 and 64 outstanding values per
//! client, 64-byte values. Each sample is a 2-second demo run (first election after 50 ms);
//! the figure is acknowledged values per second over the run.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ethpaxos::cluster::{run_demo, DemoOptions};
use ethpaxos::protocol::ProtocolConfig;
use ethpaxos::storage::{FsyncPolicy, StorageConfig};
use std::time::{Duration, Instant};

fn cluster(c: &mut Criterion) {
    let mut group = c.benchmark_group("in_process_cluster");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(25));
    for (clients, outstanding) in [(1usize, 1usize), (16, 1), (16, 64)] {
        let opts = DemoOptions {
            duration: Duration::from_secs(2),
            clients,
            outstanding,
            value_size: 64,
            kill_leader_after: None,
            // In memory, as documented: the durable grid comes from `ethpaxos demo --policy`.
            storage: StorageConfig {
                fsync_policy: FsyncPolicy::None,
                ..StorageConfig::default()
            },
            interrupt: None,
            warmup: std::time::Duration::ZERO,
            protocol: ProtocolConfig {
                leader_timeout_ms: 50,
                ..ProtocolConfig::default()
            },
        };
        // Throughput is reported per acknowledged value: one iteration = one value.
        group.throughput(Throughput::Elements(1));
        group.bench_function(
            format!("{clients}_clients_x_{outstanding}_outstanding"),
            |b| {
                b.iter_custom(|iters| {
                    let mut acked = 0u64;
                    let mut spent = Duration::ZERO;
                    while acked < iters {
                        let t = Instant::now();
                        let s = run_demo(&opts, |_| {}).expect("demo runs");
                        assert!(s.learners_agree());
                        // Time per value over the steady measured window (start-up excluded).
                        spent += s.elapsed.min(t.elapsed());
                        acked += s.acknowledged.max(1);
                    }
                    spent.mul_f64(iters as f64 / acked as f64)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, cluster);
criterion_main!(benches);
