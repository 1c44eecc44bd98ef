//! What the ingester writes in WAL records, and its binary encoding.
//!
//! Every record starts with a type byte; the rest depends on the type.
//! Integers are LEB128 varints (`uvarint`), signed ones zig-zag encoded
//! first (`varint`); strings are a `uvarint` length and UTF-8 bytes.
//!
//! ```text
//! Series (type 1): series the ingester created, with the tenant they belong to
//! ┌─────────┬─────────────┬──────────────────────────────────────────────────────────────┐
//! │ 1 <1b>  │ n <uvarint> │ n × ( series_ref <uvarint> │ tenant <str> │                 │
//! │         │             │       k <uvarint> │ k × ( name <str> │ value <str> ) )      │
//! └─────────┴─────────────┴──────────────────────────────────────────────────────────────┘
//!
//! Samples (type 2): float samples of series already logged
//! ┌─────────┬─────────────┬──────────────────────────────────────────────────┐
//! │ 2 <1b>  │ n <uvarint> │ if n > 0: base_ref <uvarint> │ base_t <varint> │
//! ├─────────┴─────────────┴──────────────────────────────────────────────────┤
//! │ n × ( series_ref - base_ref <varint> │ t - base_t <varint> │ v <8b BE> ) │
//! └──────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The base is the first sample's ref and timestamp, as in Prometheus's
//! samples record; differences wrap around (two's complement), so any
//! `u64`/`i64` round-trips. Values are the raw IEEE-754 bits, so NaN
//! payloads, including Prometheus's staleness marker, survive.
//!
//! Type bytes 3 and up are reserved for later kinds (tombstones, exemplars,
//! metadata, native histograms); an unknown type is a decode error, never
//! skipped. Decoding checks every length against the bytes left, so no
//! input makes it panic or allocate more than the input justifies.

/// The kind of a record: its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    Series = 1,
    Samples = 2,
}

/// One series, as created by the ingester.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesRecord {
    pub series_ref: u64,
    pub tenant: String,
    pub labels: Vec<(String, String)>,
}

/// One float sample of a series already logged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleRecord {
    pub series_ref: u64,
    pub t: i64,
    pub v: f64,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Series(Vec<SeriesRecord>),
    Samples(Vec<SampleRecord>),
}

/// Why a record does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("unknown record type {0}")]
    UnknownType(u8),
    #[error("record truncated while reading {what} at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("varint longer than 64 bits at byte {offset}")]
    VarintOverflow { offset: usize },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str, offset: usize },
    #[error("record claims {count} {what}, more than its {remaining} remaining bytes can hold")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("{count} bytes left over after the record")]
    TrailingBytes { count: usize },
}

/// Smallest encodings, to bound counts by the bytes left.
const MIN_SERIES_LEN: usize = 3;
const MIN_SAMPLE_LEN: usize = 10;
const MIN_LABEL_LEN: usize = 2;

/// Appends a series record holding `series` to `out`.
pub fn encode_series(series: &[SeriesRecord], out: &mut Vec<u8>) {
    out.push(RecordType::Series as u8);
    put_uvarint(out, series.len() as u64);
    for s in series {
        put_uvarint(out, s.series_ref);
        put_str(out, &s.tenant);
        put_uvarint(out, s.labels.len() as u64);
        for (name, value) in &s.labels {
            put_str(out, name);
            put_str(out, value);
        }
    }
}

/// Appends a samples record holding `samples` to `out`.
pub fn encode_samples(samples: &[SampleRecord], out: &mut Vec<u8>) {
    out.push(RecordType::Samples as u8);
    put_uvarint(out, samples.len() as u64);
    let Some(base) = samples.first() else {
        return;
    };
    out.reserve(samples.len() * 12);
    put_uvarint(out, base.series_ref);
    put_varint(out, base.t);
    for s in samples {
        put_varint(out, s.series_ref.wrapping_sub(base.series_ref) as i64);
        put_varint(out, s.t.wrapping_sub(base.t));
        out.extend_from_slice(&s.v.to_bits().to_be_bytes());
    }
}

/// The type of a record, from its first byte.
pub fn record_type(rec: &[u8]) -> Result<RecordType, RecordError> {
    match rec.first() {
        None => Err(RecordError::Empty),
        Some(1) => Ok(RecordType::Series),
        Some(2) => Ok(RecordType::Samples),
        Some(&other) => Err(RecordError::UnknownType(other)),
    }
}

/// Decodes a record.
pub fn decode(rec: &[u8]) -> Result<Record, RecordError> {
    match record_type(rec)? {
        RecordType::Series => {
            let mut series = Vec::new();
            decode_series_into(rec, &mut series)?;
            Ok(Record::Series(series))
        }
        RecordType::Samples => {
            let mut samples = Vec::new();
            decode_samples_into(rec, &mut samples)?;
            Ok(Record::Samples(samples))
        }
    }
}

/// Decodes a series record, appending to `out` (a buffer to reuse).
pub fn decode_series_into(rec: &[u8], out: &mut Vec<SeriesRecord>) -> Result<(), RecordError> {
    let mut d = Decoder::new(rec, RecordType::Series)?;
    let n = d.count("series", MIN_SERIES_LEN)?;
    out.reserve(n);
    for _ in 0..n {
        let series_ref = d.uvarint("series ref")?;
        let tenant = d.string("tenant")?;
        let k = d.count("labels", MIN_LABEL_LEN)?;
        let mut labels = Vec::with_capacity(k);
        for _ in 0..k {
            let name = d.string("label name")?;
            let value = d.string("label value")?;
            labels.push((name, value));
        }
        out.push(SeriesRecord {
            series_ref,
            tenant,
            labels,
        });
    }
    d.finish()
}

/// Decodes a samples record, appending to `out` (a buffer to reuse).
pub fn decode_samples_into(rec: &[u8], out: &mut Vec<SampleRecord>) -> Result<(), RecordError> {
    let mut d = Decoder::new(rec, RecordType::Samples)?;
    let n = d.count("samples", MIN_SAMPLE_LEN)?;
    if n == 0 {
        return d.finish();
    }
    let base_ref = d.uvarint("base series ref")?;
    let base_t = d.varint("base timestamp")?;
    out.reserve(n);
    for _ in 0..n {
        let series_ref = base_ref.wrapping_add(d.varint("series ref delta")? as u64);
        let t = base_t.wrapping_add(d.varint("timestamp delta")?);
        let v = f64::from_bits(u64::from_be_bytes(d.array("value")?));
        out.push(SampleRecord { series_ref, t, v });
    }
    d.finish()
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn new(rec: &'a [u8], typ: RecordType) -> Result<Decoder<'a>, RecordError> {
        if record_type(rec)? != typ {
            return Err(RecordError::UnknownType(rec[0]));
        }
        Ok(Decoder { buf: rec, pos: 1 })
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn uvarint(&mut self, what: &'static str) -> Result<u64, RecordError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(RecordError::Truncated {
                    what,
                    offset: start,
                });
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(RecordError::VarintOverflow { offset: start });
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(RecordError::VarintOverflow { offset: start })
    }

    fn varint(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let u = self.uvarint(what)?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    /// A count of items each at least `min_len` bytes long.
    fn count(&mut self, what: &'static str, min_len: usize) -> Result<usize, RecordError> {
        let count = self.uvarint(what)?;
        let remaining = self.remaining();
        if count > (remaining / min_len) as u64 {
            return Err(RecordError::CountTooLarge {
                what,
                count,
                remaining,
            });
        }
        Ok(count as usize)
    }

    fn bytes(&mut self, what: &'static str, len: usize) -> Result<&'a [u8], RecordError> {
        if len > self.remaining() {
            return Err(RecordError::Truncated {
                what,
                offset: self.pos,
            });
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RecordError> {
        let bytes = self.bytes(what, N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        let start = self.pos;
        let len = self.uvarint(what)?;
        let len = usize::try_from(len).map_err(|_| RecordError::Truncated {
            what,
            offset: start,
        })?;
        let bytes = self.bytes(what, len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(RecordError::InvalidUtf8 {
                what,
                offset: start,
            }),
        }
    }

    fn finish(self) -> Result<(), RecordError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(RecordError::TrailingBytes { count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Prometheus's staleness marker.
    const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

    fn series_strategy() -> impl Strategy<Value = SeriesRecord> {
        (
            any::<u64>(),
            ".{0,12}",
            prop::collection::vec((".{0,10}", ".{0,20}"), 0..6),
        )
            .prop_map(|(series_ref, tenant, labels)| SeriesRecord {
                series_ref,
                tenant,
                labels,
            })
    }

    fn sample_strategy() -> impl Strategy<Value = SampleRecord> {
        (
            prop_oneof![any::<u64>(), 0u64..1000],
            prop_oneof![any::<i64>(), 1_700_000_000_000i64..1_700_000_100_000],
            prop_oneof![any::<u64>(), Just(STALE_NAN), Just(0f64.to_bits())],
        )
            .prop_map(|(series_ref, t, bits)| SampleRecord {
                series_ref,
                t,
                v: f64::from_bits(bits),
            })
    }

    fn bits(samples: &[SampleRecord]) -> Vec<(u64, i64, u64)> {
        samples
            .iter()
            .map(|s| (s.series_ref, s.t, s.v.to_bits()))
            .collect()
    }

    proptest! {
        #[test]
        fn series_round_trip(series in prop::collection::vec(series_strategy(), 0..20)) {
            let mut buf = Vec::new();
            encode_series(&series, &mut buf);
            prop_assert_eq!(decode(&buf), Ok(Record::Series(series)));
        }

        #[test]
        fn samples_round_trip_bit_for_bit(samples in prop::collection::vec(sample_strategy(), 0..200)) {
            let mut buf = Vec::new();
            encode_samples(&samples, &mut buf);
            match decode(&buf) {
                Ok(Record::Samples(decoded)) => prop_assert_eq!(bits(&decoded), bits(&samples)),
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn damaged_records_never_panic(
            series in prop::collection::vec(series_strategy(), 1..5),
            samples in prop::collection::vec(sample_strategy(), 1..20),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            mask in 1u8..,
        ) {
            let mut series_buf = Vec::new();
            encode_series(&series, &mut series_buf);
            let mut samples_buf = Vec::new();
            encode_samples(&samples, &mut samples_buf);
            for mut buf in [series_buf, samples_buf] {
                let truncated = &buf[..cut.index(buf.len())];
                prop_assert!(decode(truncated).is_err(), "a truncated record must not decode");
                let i = flip.index(buf.len());
                buf[i] ^= mask;
                let _ = decode(&buf);
            }
        }
    }

    #[test]
    fn samples_are_compact_and_stale_markers_survive() {
        let samples: Vec<SampleRecord> = (0..1000)
            .map(|i| SampleRecord {
                series_ref: 5000 + i,
                t: 1_700_000_000_000 + i as i64,
                v: if i == 7 {
                    f64::from_bits(STALE_NAN)
                } else {
                    i as f64
                },
            })
            .collect();
        let mut buf = Vec::new();
        encode_samples(&samples, &mut buf);
        assert!(buf.len() < 1000 * 13, "{} bytes", buf.len());
        let mut decoded = Vec::new();
        decode_samples_into(&buf, &mut decoded).expect("decode");
        assert_eq!(bits(&decoded), bits(&samples));
        assert_eq!(decoded[7].v.to_bits(), STALE_NAN);
    }

    #[test]
    fn decode_errors_are_typed() {
        assert_eq!(decode(&[]), Err(RecordError::Empty));
        assert_eq!(decode(&[9]), Err(RecordError::UnknownType(9)));
        assert_eq!(
            decode(&[2]),
            Err(RecordError::Truncated {
                what: "samples",
                offset: 1
            })
        );
        assert!(matches!(
            decode(&[2, 0xff, 0xff, 0xff, 0x7f]),
            Err(RecordError::CountTooLarge { .. })
        ));
        assert_eq!(
            decode(&[2, 0, 0]),
            Err(RecordError::TrailingBytes { count: 1 })
        );
        assert!(matches!(
            decode(&[1, 1, 0, 1, 0xff, 0]),
            Err(RecordError::InvalidUtf8 { what: "tenant", .. })
        ));
        let mut overflow = vec![2, 1];
        overflow.extend_from_slice(&[0xff; 10]);
        overflow.extend_from_slice(&[0; 10]);
        assert!(matches!(
            decode(&overflow),
            Err(RecordError::VarintOverflow { offset: 2 })
        ));
        assert_eq!(decode(&[2, 0]), Ok(Record::Samples(vec![])));
    }
}
