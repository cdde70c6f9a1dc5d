//! DPDK (feature `dpdk`): EAL on a ring virtual device, which loops every frame sent back to
//! its receive side, carries our frames byte for byte and the codec reads them back; a
//! sender and a receiver thread use the port's two queues at once. EAL may be initialised
//! once per process, so this file holds one test. `cargo test --features dpdk --test dpdk`.
#![cfg(feature = "dpdk")]

use ethpaxos::config::DpdkConfig;
use ethpaxos::protocol::Message;
use ethpaxos::transport::dpdk::{open_port, DpdkError, Eal, Pool, Port};
use ethpaxos::wire::{self, FrameHeader};
use std::sync::Arc;

fn frame(src: [u8; 6], i: u64) -> Vec<u8> {
    let mut f = Vec::new();
    let header = FrameHeader {
        dst: [2, 0, 0, 0, 0, 2],
        src,
        cluster: 7,
        sender: 1,
    };
    wire::encode(&header, &Message::Trim { below: i }, 1500, &mut f).unwrap();
    f
}

fn cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .unwrap()
        .to_string();
    let mut out = Vec::new();
    for part in line.split_whitespace().nth(1).unwrap().split(',') {
        let mut ends = part.split('-').map(|n| n.parse::<usize>().unwrap());
        let a = ends.next().unwrap();
        out.extend(a..=ends.next().unwrap_or(a));
    }
    out
}

#[test]
#[ignore = "needs root and DPDK (cargo test --features dpdk; .ci/run runs it as root)"]
fn frames_go_round_a_ring_device() {
    assert_root();
    // Refused before EAL, with the reason: huge pages asked for, not there.
    let free = std::fs::read_to_string("/proc/meminfo").unwrap();
    if free.contains("HugePages_Free:       0") {
        let cfg = DpdkConfig {
            hugepages: true,
            vdevs: vec!["net_ring0".into()],
            ..DpdkConfig::default()
        };
        let err = open_port(&cfg).err().expect("no huge pages");
        assert!(matches!(err, DpdkError::NoHugepages { .. }), "{err}");
        assert!(err.to_string().contains("hugepages.sh reserve"), "{err}");
    }

    let cfg = DpdkConfig {
        lcores: "0".into(),
        vdevs: vec!["net_ring0".into()],
        ..DpdkConfig::default()
    };
    let before = cpus();
    let eal = Eal::init(&cfg.eal_command_line(0)).expect("EAL on a ring vdev");
    // EAL pinned this thread to lcore 0 and gave its CPUs back.
    assert_eq!(cpus(), before, "EAL left this thread pinned");
    // A second EAL in the same process is refused, not attempted.
    assert!(matches!(
        Eal::init(&cfg.eal_command_line(0)),
        Err(DpdkError::AlreadyInitialised)
    ));
    assert!(matches!(
        Port::start(&Pool::new(&eal, "bad", 511).unwrap(), 3, 512, 512),
        Err(DpdkError::BadPort { port: 3, count: 1 })
    ));
    let pool = Pool::new(&eal, "pool", 8191).expect("a pool");
    let port = Arc::new(Port::start(&pool, 0, 512, 512).expect("port 0"));
    drop((eal, pool));
    port.wait_for_link(std::time::Duration::from_secs(3))
        .expect("a ring device's link is up");

    // Byte for byte, and the codec reads them back.
    let frames: Vec<Vec<u8>> = (0..40).map(|i| frame(port.mac(), i)).collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(port.send(&refs), 40);
    let mut got = Vec::new();
    for _ in 0..1000 {
        port.recv(64, |f| got.push(f.to_vec()));
        if got.len() == 40 {
            break;
        }
    }
    assert_eq!(got, frames, "the ring gave back other bytes");
    for (i, f) in got.iter().enumerate() {
        assert_eq!(
            wire::decode(f).unwrap().msg,
            Message::Trim { below: i as u64 }
        );
    }

    // A sender thread and a receiver thread on the two queues at once (the pipeline's TX and
    // RX stages): every frame arrives once, in order.
    const N: u64 = 20_000;
    let sender = {
        let port = port.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                let batch: Vec<Vec<u8>> =
                    (i..(i + 32).min(N)).map(|k| frame(port.mac(), k)).collect();
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                i += port.send(&refs) as u64;
                std::thread::yield_now();
            }
        })
    };
    let receiver = {
        let port = port.clone();
        std::thread::spawn(move || {
            let mut next = 0u64;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while next < N && std::time::Instant::now() < deadline {
                port.recv(64, |f| {
                    let msg = wire::decode(f).unwrap().msg;
                    assert_eq!(msg, Message::Trim { below: next }, "out of order or lost");
                    next += 1;
                });
            }
            next
        })
    };
    sender.join().unwrap();
    assert_eq!(receiver.join().unwrap(), N, "frames went missing");

    drop(port);
    // Nothing left behind: no runtime directory, no hugepage files (--no-huge).
    assert!(
        !std::path::Path::new("/var/run/dpdk/rte").exists(),
        "EAL's runtime directory stayed behind"
    );
}

/// DPDK on virtual devices needs root: fail with the reason rather than pass unrun.
fn assert_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        .unwrap();
    assert_eq!(uid, "0", "DPDK on virtual devices needs root; run as root");
}
