#![no_main]
//! Any byte string: decoding returns a frame or a typed error, never panics; a frame that
//! decodes re-encodes to the same bytes (up to Ethernet padding).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = ethpaxos::wire::decode(data) {
        let mut out = Vec::new();
        ethpaxos::wire::encode(&frame.header, &frame.msg, ethpaxos::wire::MAX_MAX_FRAME.max(data.len()), &mut out)
            .expect("a decoded frame re-encodes");
        assert_eq!(&out[..], &data[..out.len()]);
        assert!(data[out.len()..].len() <= 60, "only Ethernet padding may follow");
    }
});
