use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ethpaxos::protocol::{Ballot, Batch, ClientValue, Message};
use ethpaxos::wire::{self, sizes, FrameHeader};

fn accept(values: usize) -> Message {
    let batch = Batch::new(
        (0..values as u64)
            .map(|seq| ClientValue {
                client: 1,
                seq,
                payload: Bytes::from(vec![0xAB; 64]),
            })
            .collect(),
    );
    Message::Accept {
        ballot: Ballot::new(3, 1),
        instance: 42,
        value: batch,
    }
}

fn codec(c: &mut Criterion) {
    let header = FrameHeader {
        dst: [2; 6],
        src: [3; 6],
        cluster: 1,
        sender: 1,
    };
    // 1500-byte frames hold 17 values of 64 B; 9000-byte frames hold 109.
    for (frame, values) in [(1500usize, 17usize), (9000, 109)] {
        let msg = accept(values);
        let mut group = c.benchmark_group(format!("accept_{values}x64B"));
        group.throughput(Throughput::Elements(values as u64));
        let mut buf = Vec::with_capacity(frame);
        group.bench_function("encode", |b| {
            b.iter(|| wire::encode(&header, black_box(&msg), frame, &mut buf).unwrap())
        });
        wire::encode(&header, &msg, frame, &mut buf).unwrap();
        let bytes = Bytes::from(buf.clone());
        assert!(buf.len() <= frame && sizes::payload(&msg) + wire::FRAME_OVERHEAD == buf.len());
        group.bench_function("decode", |b| {
            b.iter(|| wire::decode_bytes(black_box(bytes.clone())).unwrap())
        });
        group.finish();
    }
    let votes = Message::Accepted {
        ballot: Ballot::new(3, 1),
        instances: (0..64).collect(),
    };
    let mut buf = Vec::new();
    c.bench_function("accepted_64_votes/encode", |b| {
        b.iter(|| wire::encode(&header, black_box(&votes), 1500, &mut buf).unwrap())
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
