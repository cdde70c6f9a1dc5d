//! Writes one valid frame of every message type to fuzz/seeds/decode, the fuzzer's starting
//! corpus (random bytes rarely get past the EtherType and version checks on their own).
//! Run: cargo run --example fuzz_seeds

use bytes::Bytes;
use ethpaxos::protocol::*;
use ethpaxos::wire::{encode, FrameHeader};

fn main() -> std::io::Result<()> {
    let v = |s| ClientValue {
        client: 3,
        seq: s,
        payload: Bytes::from_static(b"seed-value"),
    };
    let b = Batch::new(vec![v(1), v(2)]);
    let bal = Ballot::new(2, 1);
    let e = AcceptedEntry {
        instance: 5,
        ballot: bal,
        value: b.clone(),
    };
    let msgs = vec![
        Message::Prepare {
            ballot: bal,
            from: 1,
        },
        Message::Promise {
            ballot: bal,
            from: 1,
            end: 9,
            log_end: 12,
            chunk_start: 1,
            chunk_end: 9,
            trim: 0,
            entries: vec![e.clone()],
        },
        Message::Accept {
            ballot: bal,
            instance: 5,
            value: b.clone(),
        },
        Message::Accept {
            ballot: bal,
            instance: 6,
            value: Batch::noop(),
        },
        Message::Accepted {
            ballot: bal,
            instances: vec![5, 6, 7],
        },
        Message::Reject {
            promised: Ballot::new(3, 2),
            rejected: bal,
        },
        Message::Heartbeat {
            ballot: bal,
            decided_below: 4,
            next_instance: 8,
        },
        Message::ClientRequest {
            values: vec![v(1), v(2)],
        },
        Message::Redirect {
            client: 3,
            leader: Some(1),
        },
        Message::Redirect {
            client: 3,
            leader: None,
        },
        Message::CatchupRequest { from: 1, to: 100 },
        Message::CatchupReply {
            trim: 0,
            entries: vec![e],
        },
        Message::Progress { delivered_below: 9 },
        Message::Trim { below: 4 },
    ];
    let h = FrameHeader {
        dst: [2, 0, 0, 0, 0, 1],
        src: [2, 0, 0, 0, 0, 2],
        cluster: 1,
        sender: 1,
    };
    std::fs::create_dir_all("fuzz/seeds/decode")?;
    for (i, m) in msgs.iter().enumerate() {
        let mut buf = Vec::new();
        encode(&h, m, 1500, &mut buf).expect("seed frames fit 1500 bytes");
        std::fs::write(format!("fuzz/seeds/decode/{i:02}-{:?}", m.kind()), &buf)?;
    }
    Ok(())
}
