//! Any bytes read back from the store as a chunk record, a whole pack (the
//! compactor reads those) or a packed chunk: decoding must never panic, the
//! records of a pack that decodes must tile it, a range of a packed chunk
//! must decode as the whole chunk filtered, and a packed chunk that decodes must hold
//! strictly increasing timestamps and encode back to samples that decode
//! the same, bit for bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::chunk::packed;
use strata::store::pack::{PACK_MAGIC, decode_pack, decode_record};

fuzz_target!(|data: &[u8]| {
    let _ = decode_record(data);
    let mut pack = PACK_MAGIC.to_vec();
    pack.extend_from_slice(data);
    if let Ok(records) = decode_pack(&pack) {
        let mut at = PACK_MAGIC.len() as u64;
        for (offset, len, _) in &records {
            assert_eq!(*offset, at);
            at += u64::from(*len);
        }
        assert_eq!(at, pack.len() as u64);
    }
    if let Ok(samples) = packed::decode(data) {
        assert!(samples.windows(2).all(|p| p[0].t < p[1].t));
        // A range decodes as the whole, filtered.
        if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
            let (mint, maxt) = (first.t / 2 + last.t / 2, last.t);
            let range = packed::decode_range(data, mint, maxt).expect("the whole decoded");
            let want: Vec<_> = samples.iter().filter(|s| s.t >= mint && s.t <= maxt).collect();
            assert_eq!(range.len(), want.len());
            for (a, b) in range.iter().zip(want) {
                assert_eq!((a.t, a.v.to_bits()), (b.t, b.v.to_bits()));
            }
        }
        let again = packed::decode(&packed::encode(&samples)).expect("re-encoded chunk decodes");
        assert_eq!(again.len(), samples.len());
        for (a, b) in samples.iter().zip(&again) {
            assert_eq!(a.t, b.t);
            assert_eq!(a.v.to_bits(), b.v.to_bits());
        }
    }
});
