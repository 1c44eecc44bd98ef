//! Any body sent to /api/v1/push: snappy decompression under the size cap,
//! then remote-write 1.0 and 2.0 decoding and label/sample validation must
//! never panic, and the size cap must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::distributor::decode::{Protocol, decode, decompress};
use strata::distributor::validate::{validate_labels, validate_samples};
use strata::limits::Limits;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut scratch = Vec::new();
    // As a snappy body.
    if decompress(data, LIMIT, &mut scratch).is_ok() {
        assert!(scratch.len() <= LIMIT);
        for protocol in [Protocol::V1, Protocol::V2] {
            if let Ok(batch) = decode(protocol, &scratch) {
                for mut series in batch.timeseries {
                    if validate_labels(&mut series, &limits).is_ok() {
                        let _ = validate_samples(&mut series, &limits, 1_700_000_000_000);
                    }
                }
            }
        }
    }
    // As an already-decompressed protobuf.
    for protocol in [Protocol::V1, Protocol::V2] {
        let _ = decode(protocol, data);
    }
});
