//! The frame codec: round trips for generated messages, typed errors for bad frames, and no
//! panic on any input.

use bytes::Bytes;
use ethpaxos::protocol::{
    AcceptedEntry, Ballot, Batch, ClientValue, Message, MessageKind, Position,
};
use ethpaxos::wire::{self, sizes, DecodeError, EncodeError, FrameHeader, FRAME_OVERHEAD};
use proptest::prelude::*;

const JUMBO: usize = 9216;

fn header() -> FrameHeader {
    FrameHeader {
        dst: [2, 0, 0, 0, 0, 1],
        src: [2, 0, 0, 0, 0, 2],
        cluster: 0xC0FFEE,
        sender: 7,
    }
}

fn ballot() -> impl Strategy<Value = Ballot> {
    (any::<u32>(), any::<u16>()).prop_map(|(round, proposer)| Ballot { round, proposer })
}

fn value() -> impl Strategy<Value = ClientValue> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(client, seq, payload)| ClientValue {
            client,
            seq,
            payload: Bytes::from(payload),
        })
}

fn batch() -> impl Strategy<Value = Batch> {
    proptest::collection::vec(value(), 0..8).prop_map(Batch::new)
}

fn entries() -> impl Strategy<Value = Vec<AcceptedEntry>> {
    proptest::collection::vec((any::<u32>(), ballot(), batch()), 0..6).prop_map(|v| {
        v.into_iter()
            .map(|(i, ballot, value)| AcceptedEntry {
                instance: 1_000 + i as u64,
                ballot,
                value,
            })
            .collect()
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (ballot(), any::<u64>()).prop_map(|(ballot, from)| Message::Prepare { ballot, from }),
        (ballot(), entries(), any::<u64>()).prop_map(|(ballot, mut entries, trim)| {
            entries.sort_by_key(|e| e.instance);
            Message::Promise {
                ballot,
                from: 10,
                end: u64::MAX,
                log_end: u64::MAX,
                chunk_start: 1_000,
                chunk_end: 1_000 + u32::MAX as u64 + 1,
                trim,
                entries,
            }
        }),
        (ballot(), any::<u64>(), batch()).prop_map(|(ballot, instance, value)| Message::Accept {
            ballot,
            instance,
            value
        }),
        (ballot(), proptest::collection::vec(any::<u64>(), 0..40))
            .prop_map(|(ballot, instances)| Message::Accepted { ballot, instances }),
        (ballot(), proptest::collection::vec(any::<u64>(), 0..40))
            .prop_map(|(ballot, instances)| Message::Decided { ballot, instances }),
        (ballot(), ballot())
            .prop_map(|(promised, rejected)| Message::Reject { promised, rejected }),
        (ballot(), any::<u64>(), any::<u64>()).prop_map(|(ballot, d, n)| Message::Heartbeat {
            ballot,
            decided_below: d,
            next_instance: n
        }),
        proptest::collection::vec(value(), 0..10)
            .prop_map(|values| Message::ClientRequest { values }),
        (any::<u64>(), proptest::option::of(any::<u16>()))
            .prop_map(|(client, leader)| Message::Redirect { client, leader }),
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Message::CatchupRequest {
            from: a.min(b) as u64,
            to: a.max(b) as u64
        }),
        (any::<u64>(), entries())
            .prop_map(|(trim, entries)| Message::CatchupReply { trim, entries }),
        any::<u64>().prop_map(|d| Message::Progress { delivered_below: d }),
        any::<u64>().prop_map(|below| Message::Trim { below }),
        (any::<u64>(), any::<u32>()).prop_map(|(instance, index)| Message::PeerFetch {
            from: Position { instance, index }
        }),
        any::<u64>().prop_map(|below| Message::SnapshotHeld { below }),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u64>()).prop_map(
            |(at_least, instance, index, offset)| Message::SnapshotFetch {
                at_least,
                below: Position { instance, index },
                offset,
            }
        ),
        (
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            0u64..1 << 20,
            any::<bool>()
        )
            .prop_map(|(instance, index, data, offset, last)| {
                let total = offset + data.len() as u64 + offset % 7;
                Message::SnapshotChunk {
                    below: Position { instance, index },
                    total,
                    offset,
                    last,
                    data: Bytes::from(data),
                }
            }),
        (
            any::<u32>(),
            proptest::collection::vec((0u64..4, any::<u16>(), value()), 0..8),
            any::<bool>(),
            any::<u32>(),
        )
            .prop_map(|(start, steps, last, span)| {
                // Positions that grow from `from`, at or below `through`.
                let from = Position {
                    instance: start as u64,
                    index: 3,
                };
                let mut at = from;
                let mut values = Vec::new();
                for (k, (step, gap, v)) in steps.into_iter().enumerate() {
                    if k > 0 {
                        at = if step == 0 {
                            Position {
                                instance: at.instance,
                                index: at.index + 1 + gap as u32,
                            }
                        } else {
                            Position {
                                instance: at.instance + step,
                                index: gap as u32,
                            }
                        };
                    }
                    values.push((at, v));
                }
                let through = at.instance + (span % 3) as u64;
                Message::PeerValues {
                    from,
                    through,
                    oldest: start as u64 / 2,
                    end: through + span as u64,
                    values,
                    last,
                }
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_of_encode_is_identity(msg in message()) {
        let mut buf = Vec::new();
        wire::encode(&header(), &msg, JUMBO, &mut buf).expect("fits a jumbo frame");
        prop_assert_eq!(buf.len(), FRAME_OVERHEAD + sizes::payload(&msg));
        let frame = wire::decode(&buf).expect("decodes");
        prop_assert_eq!(frame.header, header());
        prop_assert_eq!(frame.msg, msg);
    }

    #[test]
    fn decode_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = wire::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_frames(msg in message(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut buf = Vec::new();
        wire::encode(&header(), &msg, JUMBO, &mut buf).expect("fits");
        for (pos, byte) in flips {
            let n = buf.len();
            buf[pos % n] ^= byte;
        }
        let _ = wire::decode(&buf[..cut % (buf.len() + 1)]);
    }
}

fn encoded(msg: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    wire::encode(&header(), msg, JUMBO, &mut buf).expect("fits");
    buf
}

#[test]
fn header_layout_matches_the_documented_offsets() {
    let buf = encoded(&Message::Progress {
        delivered_below: 0x0102030405060708,
    });
    assert_eq!(&buf[0..6], &header().dst);
    assert_eq!(&buf[6..12], &header().src);
    assert_eq!(&buf[12..14], &[0x88, 0xB5]);
    assert_eq!(buf[14], 2, "version");
    assert_eq!(buf[15], MessageKind::Progress as u8);
    assert_eq!(&buf[16..18], &[0, 0], "flags, reserved");
    assert_eq!(&buf[18..22], &0xC0FFEEu32.to_be_bytes());
    assert_eq!(&buf[22..24], &7u16.to_be_bytes());
    assert_eq!(&buf[24..26], &8u16.to_be_bytes(), "payload length");
    assert_eq!(&buf[26..34], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(buf.len(), 34);
}

#[test]
fn typed_errors_name_the_fault() {
    let good = encoded(&Message::Accept {
        ballot: Ballot::new(3, 1),
        instance: 9,
        value: Batch::new(vec![ClientValue {
            client: 1,
            seq: 2,
            payload: Bytes::from_static(b"hello"),
        }]),
    });
    assert_eq!(
        wire::decode(&good[..10]),
        Err(DecodeError::TooShort {
            len: 10,
            min: FRAME_OVERHEAD
        })
    );
    let mut bad = good.clone();
    bad[12] = 0x08;
    bad[13] = 0x00;
    assert_eq!(wire::decode(&bad), Err(DecodeError::EtherType(0x0800)));
    let mut bad = good.clone();
    bad[14] = 9;
    assert_eq!(wire::decode(&bad), Err(DecodeError::Version(9)));
    let mut bad = good.clone();
    bad[15] = 200;
    assert_eq!(wire::decode(&bad), Err(DecodeError::UnknownType(200)));
    let mut bad = good.clone();
    bad[16] = 0x80;
    assert_eq!(wire::decode(&bad), Err(DecodeError::Flags(0x80)));
    // Cut inside the value's payload: the header's length no longer matches.
    let cut = &good[..good.len() - 2];
    assert!(matches!(wire::decode(cut), Err(DecodeError::Length { .. })));
    // Header length shortened to match the cut: now the value is truncated.
    let mut cut = cut.to_vec();
    let len = (cut.len() - FRAME_OVERHEAD) as u16;
    cut[24..26].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        wire::decode(&cut),
        Err(DecodeError::Truncated {
            kind: MessageKind::Accept,
            field: "value.payload"
        })
    );
    // An extra byte inside the declared payload of a long frame is trailing garbage.
    let mut long = good.clone();
    long.push(0);
    let len = (long.len() - FRAME_OVERHEAD) as u16;
    long[24..26].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(
        wire::decode(&long),
        Err(DecodeError::Trailing { extra: 1, .. })
    ));
}

#[test]
fn ethernet_padding_is_tolerated_only_in_minimum_size_frames() {
    let mut short = encoded(&Message::Trim { below: 5 });
    assert!(short.len() < 60);
    short.resize(60, 0);
    assert_eq!(
        wire::decode(&short).map(|f| f.msg),
        Ok(Message::Trim { below: 5 })
    );
    let mut long = encoded(&Message::Accepted {
        ballot: Ballot::new(1, 1),
        instances: vec![1; 10],
    });
    assert!(long.len() > 60);
    long.push(0);
    assert!(matches!(
        wire::decode(&long),
        Err(DecodeError::Length { .. })
    ));
}

#[test]
fn forged_counts_are_refused_not_allocated() {
    let mut buf = encoded(&Message::ClientRequest { values: vec![] });
    // Count says 65535 values, but the payload holds none.
    let n = buf.len();
    buf[n - 2..].copy_from_slice(&[0xFF, 0xFF]);
    assert!(matches!(
        wire::decode(&buf),
        Err(DecodeError::Truncated {
            field: "values.count",
            ..
        })
    ));
}

#[test]
fn oversized_messages_are_refused_not_truncated() {
    let big = Message::Accept {
        ballot: Ballot::new(1, 1),
        instance: 1,
        value: Batch::new(vec![ClientValue {
            client: 1,
            seq: 1,
            payload: Bytes::from(vec![0u8; 2000]),
        }]),
    };
    let mut buf = Vec::new();
    let err = wire::encode(&header(), &big, 1500, &mut buf).unwrap_err();
    assert!(matches!(
        err,
        EncodeError::FrameTooLarge {
            kind: MessageKind::Accept,
            max: 1500,
            ..
        }
    ));
    assert!(err.to_string().contains("1500-byte maximum"), "{err}");
}

#[test]
fn max_value_fits_every_message_that_carries_it_alone() {
    for max_frame in [128, 256, 1500, 9000] {
        let max = sizes::max_value_payload(max_frame);
        let v = ClientValue {
            client: u64::MAX,
            seq: u64::MAX,
            payload: Bytes::from(vec![7; max]),
        };
        let b = Batch::new(vec![v.clone()]);
        let e = AcceptedEntry {
            instance: 1,
            ballot: Ballot::new(1, 1),
            value: b.clone(),
        };
        for msg in [
            Message::ClientRequest {
                values: vec![v.clone()],
            },
            Message::Accept {
                ballot: Ballot::new(1, 1),
                instance: 1,
                value: b.clone(),
            },
            Message::Promise {
                ballot: Ballot::new(1, 1),
                from: 0,
                end: 2,
                log_end: 2,
                chunk_start: 0,
                chunk_end: 2,
                trim: 0,
                entries: vec![e.clone()],
            },
            Message::CatchupReply {
                trim: 0,
                entries: vec![e.clone()],
            },
        ] {
            let mut buf = Vec::new();
            wire::encode(&header(), &msg, max_frame, &mut buf)
                .unwrap_or_else(|e| panic!("{max_frame}: {e}"));
            assert!(buf.len() <= max_frame);
        }
    }
}

#[test]
fn a_peer_answer_whose_positions_do_not_hold_is_refused_by_field() {
    let v = |seq| ClientValue {
        client: 1,
        seq,
        payload: Bytes::from_static(b"x"),
    };
    let at = |instance, index| Position { instance, index };
    let good = Message::PeerValues {
        from: at(10, 2),
        through: 11,
        oldest: 5,
        end: 20,
        values: vec![(at(10, 2), v(0)), (at(11, 0), v(1))],
        last: true,
    };
    assert_eq!(wire::decode(&encoded(&good)).unwrap().msg, good);
    let bad = |mutate: &dyn Fn(&mut Message), field: &str| {
        let mut m = good.clone();
        mutate(&mut m);
        let err = wire::decode(&encoded(&m)).expect_err(field);
        assert!(err.to_string().contains(field), "{field}: {err}");
    };
    // Positions that go back, start before `from`, or pass `through`.
    bad(
        &|m| {
            if let Message::PeerValues { values, .. } = m {
                values.swap(0, 1);
            }
        },
        "value.position",
    );
    bad(
        &|m| {
            if let Message::PeerValues { values, .. } = m {
                values[0].0 = at(10, 1);
            }
        },
        "value.position",
    );
    bad(
        &|m| {
            if let Message::PeerValues {
                through, values, ..
            } = m
            {
                *through = 10;
                values.truncate(2);
            }
        },
        "value.position",
    );
    bad(
        &|m| {
            if let Message::PeerValues { through, .. } = m {
                *through = 9;
            }
        },
        "through",
    );
    bad(
        &|m| {
            if let Message::PeerValues { oldest, .. } = m {
                *oldest = 21;
            }
        },
        "oldest",
    );
    // The `last` flag is a boolean byte.
    let mut buf = encoded(&good);
    buf[FRAME_OVERHEAD + 12 + 24] = 2;
    let err = wire::decode(&buf).expect_err("last = 2");
    assert!(err.to_string().contains("last"), "{err}");
}

#[test]
fn a_snapshot_chunk_that_claims_past_its_image_is_refused_by_field() {
    let good = Message::SnapshotChunk {
        below: Position {
            instance: 40,
            index: 1,
        },
        total: 10,
        offset: 4,
        last: true,
        data: Bytes::from_static(b"abcdef"),
    };
    assert_eq!(wire::decode(&encoded(&good)).unwrap().msg, good);
    let with = |total: u64, offset: u64| Message::SnapshotChunk {
        below: Position::default(),
        total,
        offset,
        last: false,
        data: Bytes::from_static(b"abcdef"),
    };
    // Bytes past the image's end, an offset that overflows, a total beyond any image.
    for (m, field) in [
        (with(9, 4), "offset"),
        (with(u64::MAX, u64::MAX - 2), "total"),
        (with(1 << 40, 0), "total"),
    ] {
        let err = wire::decode(&encoded(&m)).expect_err(field);
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    // `last` is a boolean byte (after below, total and offset).
    let mut buf = encoded(&good);
    buf[FRAME_OVERHEAD + 12 + 16] = 2;
    let err = wire::decode(&buf).expect_err("last = 2");
    assert!(err.to_string().contains("last"), "{err}");
}
