//! Any bytes read back from the store as a chunk record or a packed chunk:
//! decoding must never panic, and a packed chunk that decodes must hold
//! strictly increasing timestamps and encode back to samples that decode
//! the same, bit for bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::chunk::packed;
use strata::store::pack::decode_record;

fuzz_target!(|data: &[u8]| {
    let _ = decode_record(data);
    if let Ok(samples) = packed::decode(data) {
        assert!(samples.windows(2).all(|p| p[0].t < p[1].t));
        let again = packed::decode(&packed::encode(&samples)).expect("re-encoded chunk decodes");
        assert_eq!(again.len(), samples.len());
        for (a, b) in samples.iter().zip(&again) {
            assert_eq!(a.t, b.t);
            assert_eq!(a.v.to_bits(), b.v.to_bits());
        }
    }
});
