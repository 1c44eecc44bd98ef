//! Prometheus's float-histogram chunk encoding (`FLOAT_HISTOGRAM`, chunk
//! encoding 3 in remote read), written so that Prometheus's own decoder
//! reads it. Strata stores histograms in its own chunks
//! ([`super::histogram`]); this encoding exists for streamed remote-read
//! answers, where the client decodes the chunks itself.
//!
//! ```text
//! header    2 bytes big-endian sample count
//!           1 byte: counter-reset header in the top two bits
//!             (00 unknown, 10 counter reset, 01 not a reset, 11 gauge)
//! layout    zero threshold: byte 0 (threshold 0) or 255 + 64 bits
//!           schema: varbit int
//!           positive spans, negative spans: varbit uint count, then per
//!             span varbit uint length, varbit int offset
//!           custom bounds (schema -53 only): varbit uint count, then per
//!             bound a 0 bit + 64 bits
//! sample 1  t: varbit int; count, zero count, sum, each positive then
//!           negative bucket: 64 raw bits
//! sample n  t: varbit int of the delta of deltas (of the delta for the
//!           second sample); count, zero count, sum, each bucket XOR'd with
//!           its previous value (as in XOR chunks); a stale sample
//!           (its sum the staleness NaN) stops after the sum
//! ```
//!
//! Varbit integers use Prometheus's buckets: `0` for zero, then prefixes
//! `10`, `110`, ... `11111110` with 3, 6, 9, 12, 18, 25 and 56 value bits,
//! and `11111111` with 64. The layout (schema, zero threshold, spans, custom
//! bounds) is fixed per chunk, so [`encode`] cuts a new chunk whenever it
//! changes, and on every counter reset, which opens a chunk with the
//! counter-reset header: a reader trusts a chunk to hold no reset after its
//! first sample.

use super::bstream::BitWriter;
use super::fields::{XorField, fits_signed};
use crate::model::histogram::{CounterResetHint, FloatHistogram, Span};
use crate::model::{HPoint, STALE_NAN_BITS};

/// Samples per chunk at most, as Prometheus's head cuts chunks.
pub const MAX_SAMPLES: usize = 120;

/// Bits of the counter-reset header in the chunk's third byte.
const UNKNOWN: u8 = 0b0000_0000;
const COUNTER_RESET: u8 = 0b1000_0000;
const GAUGE: u8 = 0b1100_0000;

/// Value bits of the varbit buckets after the zero one, each with a prefix
/// of one more 1 bit.
const VARBIT_BUCKETS: [u32; 7] = [3, 6, 9, 12, 18, 25, 56];

/// One encoded chunk: its first and last timestamps and its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedChunk {
    pub min_time: i64,
    pub max_time: i64,
    pub data: Vec<u8>,
}

fn put_varbit_int(w: &mut BitWriter, v: i64) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    for (i, nbits) in VARBIT_BUCKETS.into_iter().enumerate() {
        if fits_signed(v, nbits) {
            put_prefix(w, i as u32 + 1);
            w.write_bits((v as u64) & ((1 << nbits) - 1), nbits);
            return;
        }
    }
    w.write_bits(0xff, 8);
    w.write_bits(v as u64, 64);
}

fn put_varbit_uint(w: &mut BitWriter, v: u64) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    for (i, nbits) in VARBIT_BUCKETS.into_iter().enumerate() {
        if v < (1 << nbits) {
            put_prefix(w, i as u32 + 1);
            w.write_bits(v, nbits);
            return;
        }
    }
    w.write_bits(0xff, 8);
    w.write_bits(v, 64);
}

/// `ones` 1 bits and a 0 bit.
fn put_prefix(w: &mut BitWriter, ones: u32) {
    w.write_bits(((1u64 << ones) - 1) << 1, ones + 1);
}

fn put_spans(w: &mut BitWriter, spans: &[Span]) {
    put_varbit_uint(w, spans.len() as u64);
    for s in spans {
        put_varbit_uint(w, u64::from(s.length));
        put_varbit_int(w, i64::from(s.offset));
    }
}

fn same_layout(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    a.schema == b.schema
        && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
        && a.positive_spans == b.positive_spans
        && a.negative_spans == b.negative_spans
        && a.custom_values == b.custom_values
}

fn is_stale(h: &FloatHistogram) -> bool {
    h.sum.to_bits() == STALE_NAN_BITS
}

fn is_gauge(h: &FloatHistogram) -> bool {
    h.counter_reset_hint == CounterResetHint::Gauge
}

/// Whether `h` after `prev` (same layout) is a counter reset.
fn counts_went_down(prev: &FloatHistogram, h: &FloatHistogram) -> bool {
    h.count < prev.count
        || h.zero_count < prev.zero_count
        || h.positive_buckets
            .iter()
            .zip(&prev.positive_buckets)
            .any(|(a, b)| a < b)
        || h.negative_buckets
            .iter()
            .zip(&prev.negative_buckets)
            .any(|(a, b)| a < b)
}

/// A chunk being written.
struct Builder<'a> {
    w: BitWriter,
    count: u16,
    min_time: i64,
    max_time: i64,
    /// The layout, from the first sample.
    first: &'a FloatHistogram,
    /// The last non-stale sample, for reset detection.
    last: &'a FloatHistogram,
    last_stale: bool,
    t_delta: i64,
    count_field: XorField,
    zero_field: XorField,
    sum_field: XorField,
    buckets: Vec<XorField>,
}

impl<'a> Builder<'a> {
    fn new(t: i64, h: &'a FloatHistogram, header: u8) -> Builder<'a> {
        let mut w = BitWriter::from_vec(vec![0, 0, header]);
        if h.zero_threshold == 0.0 {
            w.write_bits(0, 8);
        } else {
            w.write_bits(0xff, 8);
            w.write_bits(h.zero_threshold.to_bits(), 64);
        }
        put_varbit_int(&mut w, i64::from(h.schema));
        put_spans(&mut w, &h.positive_spans);
        put_spans(&mut w, &h.negative_spans);
        if h.uses_custom_buckets() {
            put_varbit_uint(&mut w, h.custom_values.len() as u64);
            for bound in &h.custom_values {
                w.write_bit(false);
                w.write_bits(bound.to_bits(), 64);
            }
        }
        put_varbit_int(&mut w, t);
        let raw = |w: &mut BitWriter, v: f64| {
            w.write_bits(v.to_bits(), 64);
            XorField::starting_at(v.to_bits())
        };
        let count_field = raw(&mut w, h.count);
        let zero_field = raw(&mut w, h.zero_count);
        let sum_field = raw(&mut w, h.sum);
        let buckets = h
            .positive_buckets
            .iter()
            .chain(&h.negative_buckets)
            .map(|b| raw(&mut w, *b))
            .collect();
        Builder {
            w,
            count: 1,
            min_time: t,
            max_time: t,
            first: h,
            last: h,
            last_stale: is_stale(h),
            t_delta: 0,
            count_field,
            zero_field,
            sum_field,
            buckets,
        }
    }

    /// Whether `h` can follow in this chunk.
    fn takes(&self, h: &FloatHistogram) -> bool {
        if usize::from(self.count) >= MAX_SAMPLES || is_gauge(h) != is_gauge(self.first) {
            return false;
        }
        if is_stale(h) {
            return true;
        }
        if self.last_stale
            || h.counter_reset_hint == CounterResetHint::CounterReset
            || !same_layout(self.first, h)
        {
            return false;
        }
        is_gauge(h) || !counts_went_down(self.last, h)
    }

    fn append(&mut self, t: i64, h: &'a FloatHistogram) {
        let delta = t - self.max_time;
        put_varbit_int(&mut self.w, delta - self.t_delta);
        self.t_delta = delta;
        self.max_time = t;
        self.count += 1;
        self.count_field.write_xor(&mut self.w, h.count.to_bits());
        self.zero_field
            .write_xor(&mut self.w, h.zero_count.to_bits());
        self.sum_field.write_xor(&mut self.w, h.sum.to_bits());
        self.last_stale = is_stale(h);
        if self.last_stale {
            return;
        }
        for (field, b) in self
            .buckets
            .iter_mut()
            .zip(h.positive_buckets.iter().chain(&h.negative_buckets))
        {
            field.write_xor(&mut self.w, b.to_bits());
        }
        self.last = h;
    }

    fn finish(self) -> EncodedChunk {
        let mut data = self.w.into_bytes();
        data[..2].copy_from_slice(&self.count.to_be_bytes());
        EncodedChunk {
            min_time: self.min_time,
            max_time: self.max_time,
            data,
        }
    }
}

/// Float histograms (sorted by time, one per timestamp) as Prometheus
/// float-histogram chunks.
pub fn encode(points: &[HPoint]) -> Vec<EncodedChunk> {
    let mut out = Vec::new();
    let mut current: Option<Builder<'_>> = None;
    for p in points {
        match current.as_mut() {
            Some(b) if b.takes(&p.h) => b.append(p.t, &p.h),
            _ => {
                // A new chunk: a reset if the hint says so or the counts
                // went down from the previous chunk's last sample.
                let header = if is_gauge(&p.h) {
                    GAUGE
                } else if p.h.counter_reset_hint == CounterResetHint::CounterReset
                    || current.as_ref().is_some_and(|b| {
                        !b.last_stale
                            && !is_gauge(b.last)
                            && (b.last.count > p.h.count
                                || (same_layout(b.last, &p.h) && counts_went_down(b.last, &p.h)))
                    })
                {
                    COUNTER_RESET
                } else {
                    UNKNOWN
                };
                if let Some(done) = current.take() {
                    out.push(done.finish());
                }
                current = Some(Builder::new(p.t, &p.h, header));
            }
        }
    }
    out.extend(current.map(Builder::finish));
    out
}

#[cfg(test)]
mod tests {
    use super::super::bstream::BitReader;
    use super::super::fields::signed_from_bits;
    use super::*;

    /// Reads a varbit int as Prometheus's `readVarbitInt` does.
    fn read_varbit(r: &mut BitReader<'_>, signed: bool) -> i64 {
        let ones = r.read_unary(8);
        match ones {
            0 => 0,
            8 => r.read_bits(64) as i64,
            n => {
                let nbits = VARBIT_BUCKETS[n as usize - 1];
                let bits = r.read_bits(nbits);
                if signed {
                    signed_from_bits(bits, nbits)
                } else {
                    bits as i64
                }
            }
        }
    }

    fn h(count: f64, buckets: &[f64]) -> FloatHistogram {
        FloatHistogram {
            schema: 3,
            zero_threshold: 2f64.powi(-128),
            count,
            sum: count * 1.5,
            positive_spans: vec![Span {
                offset: -2,
                length: buckets.len() as u32,
            }],
            positive_buckets: buckets.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn varbits_take_prometheus_buckets() {
        for v in [
            0i64,
            1,
            -3,
            4,
            5,
            -31,
            32,
            -255,
            256,
            2048,
            -2047,
            131_072,
            -16_777_215,
            1 << 40,
            i64::MIN + 1,
            1_795_671_251_842,
        ] {
            let mut w = BitWriter::from_vec(Vec::new());
            put_varbit_int(&mut w, v);
            let bytes = w.into_bytes();
            let mut r = BitReader::new(&bytes, 0);
            assert_eq!(read_varbit(&mut r, true), v, "{v}");
        }
        for v in [0u64, 7, 8, 63, 511, 4095, 262_143, 33_554_431, 1 << 50] {
            let mut w = BitWriter::from_vec(Vec::new());
            put_varbit_uint(&mut w, v);
            let bytes = w.into_bytes();
            let mut r = BitReader::new(&bytes, 0);
            assert_eq!(read_varbit(&mut r, false) as u64, v, "{v}");
        }
    }

    #[test]
    fn first_sample_and_layout_are_written_as_prometheus_reads_them() {
        let first = h(10.0, &[3.0, 7.0]);
        let chunks = encode(&[HPoint {
            t: 1_000,
            h: first.clone(),
        }]);
        assert_eq!(chunks.len(), 1);
        let data = &chunks[0].data;
        assert_eq!(&data[..3], &[0, 1, UNKNOWN]);
        let mut r = BitReader::new(data, 3);
        assert_eq!(r.read_byte(), 0xff);
        assert_eq!(f64::from_bits(r.read_bits(64)), first.zero_threshold);
        assert_eq!(read_varbit(&mut r, true), 3);
        assert_eq!(read_varbit(&mut r, false), 1, "one positive span");
        assert_eq!(read_varbit(&mut r, false), 2, "its length");
        assert_eq!(read_varbit(&mut r, true), -2, "its offset");
        assert_eq!(read_varbit(&mut r, false), 0, "no negative spans");
        assert_eq!(read_varbit(&mut r, true), 1_000);
        for want in [10.0, 0.0, 15.0, 3.0, 7.0] {
            assert_eq!(f64::from_bits(r.read_bits(64)), want);
        }
    }

    #[test]
    fn later_samples_are_xor_coded_with_delta_of_delta_times() {
        let points: Vec<HPoint> = (0..3)
            .map(|i| HPoint {
                t: 1_000 + i * 15_000 + if i == 2 { 7 } else { 0 },
                h: h(10.0 + i as f64, &[3.0 + i as f64, 7.0]),
            })
            .collect();
        let chunks = encode(&points);
        assert_eq!(chunks.len(), 1);
        let mut r = BitReader::new(&chunks[0].data, 3);
        // Skip the layout and the first sample.
        r.read_bits(8);
        r.read_bits(64);
        for _ in 0..5 {
            read_varbit(&mut r, true);
        }
        assert_eq!(read_varbit(&mut r, true), 1_000);
        for _ in 0..5 {
            r.read_bits(64);
        }
        let mut fields = [XorField::NEW; 5];
        for (field, first) in fields.iter_mut().zip([10.0, 0.0, 15.0, 3.0, 7.0]) {
            *field = XorField::starting_at(f64::to_bits(first));
        }
        let mut t_delta = 0;
        let mut t = 1_000;
        for p in &points[1..] {
            t_delta += read_varbit(&mut r, true);
            t += t_delta;
            assert_eq!(t, p.t);
            let want = [
                p.h.count,
                p.h.zero_count,
                p.h.sum,
                p.h.positive_buckets[0],
                p.h.positive_buckets[1],
            ];
            for (field, want) in fields.iter_mut().zip(want) {
                assert_eq!(f64::from_bits(field.read_xor(&mut r).unwrap()), want);
            }
        }
    }

    #[test]
    fn resets_layout_changes_and_full_chunks_cut_new_chunks() {
        let at = |t: i64, h: FloatHistogram| HPoint { t, h };
        let mut wider = h(30.0, &[3.0, 7.0, 1.0]);
        wider.positive_spans[0].length = 3;
        let mut points = vec![
            at(1, h(10.0, &[3.0, 7.0])),
            at(2, h(12.0, &[4.0, 8.0])),
            // A bucket went down: a reset.
            at(3, h(13.0, &[1.0, 12.0])),
            // Another layout.
            at(4, wider),
        ];
        let last = 5 + MAX_SAMPLES as i64;
        points.extend((5..=last).map(|t| at(t, h(40.0 + t as f64, &[9.0, 9.0]))));
        let chunks = encode(&points);
        let headers: Vec<(u16, u8)> = chunks
            .iter()
            .map(|c| (u16::from_be_bytes([c.data[0], c.data[1]]), c.data[2]))
            .collect();
        assert_eq!(
            headers,
            [
                (2, UNKNOWN),
                (1, COUNTER_RESET),
                (1, UNKNOWN),
                (120, UNKNOWN),
                (1, UNKNOWN)
            ]
        );
        assert_eq!(chunks[1].min_time, 3);
        assert_eq!(chunks[4].max_time, last);
    }
}
