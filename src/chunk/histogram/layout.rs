//! The layout a histogram chunk stores once, before its first sample:
//! zero threshold, schema, spans and custom bucket bounds. Every sample in
//! the chunk has exactly this layout.

use super::codec::{Fail, read_varbit_int, read_varbit_uint, write_varbit_int, write_varbit_uint};
use super::{CUSTOM_BUCKETS_SCHEMA, HistogramError, LayoutChange, Span, validate_layout};
use crate::chunk::bstream::{BitReader, BitWriter};

/// A histogram's layout, borrowed from the histogram.
#[derive(Debug, Clone, Copy)]
pub struct LayoutRef<'a> {
    pub schema: i32,
    pub zero_threshold: f64,
    pub positive_spans: &'a [Span],
    pub negative_spans: &'a [Span],
    pub custom_values: &'a [f64],
}

/// An owned layout: the chunk's, as written or read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    pub schema: i32,
    pub zero_threshold: f64,
    pub positive_spans: Vec<Span>,
    pub negative_spans: Vec<Span>,
    pub custom_values: Vec<f64>,
}

fn same_floats(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

impl Layout {
    /// The empty layout (schema 0, no buckets), kept by a chunk whose first
    /// sample is a staleness marker.
    pub fn clear(&mut self) {
        self.schema = 0;
        self.zero_threshold = 0.0;
        self.positive_spans.clear();
        self.negative_spans.clear();
        self.custom_values.clear();
    }

    /// Copies `l`, reusing this layout's allocations.
    pub fn set(&mut self, l: &LayoutRef<'_>) {
        self.schema = l.schema;
        self.zero_threshold = l.zero_threshold;
        self.positive_spans.clear();
        self.positive_spans.extend_from_slice(l.positive_spans);
        self.negative_spans.clear();
        self.negative_spans.extend_from_slice(l.negative_spans);
        self.custom_values.clear();
        self.custom_values.extend_from_slice(l.custom_values);
    }

    pub fn as_ref(&self) -> LayoutRef<'_> {
        LayoutRef {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            positive_spans: &self.positive_spans,
            negative_spans: &self.negative_spans,
            custom_values: &self.custom_values,
        }
    }

    /// What differs between this (the chunk's) layout and a sample's, if
    /// anything. Floats are compared bit for bit, so a round trip is exact.
    pub fn compare(&self, l: &LayoutRef<'_>) -> Result<(), LayoutChange> {
        if self.schema != l.schema {
            return Err(LayoutChange::Schema {
                chunk: self.schema,
                sample: l.schema,
            });
        }
        if self.zero_threshold.to_bits() != l.zero_threshold.to_bits() {
            return Err(LayoutChange::ZeroThreshold {
                chunk: self.zero_threshold,
                sample: l.zero_threshold,
            });
        }
        if self.positive_spans != l.positive_spans {
            return Err(LayoutChange::PositiveSpans);
        }
        if self.negative_spans != l.negative_spans {
            return Err(LayoutChange::NegativeSpans);
        }
        if !same_floats(&self.custom_values, l.custom_values) {
            return Err(LayoutChange::CustomValues);
        }
        Ok(())
    }
}

impl LayoutRef<'_> {
    /// Checks everything about a layout that does not depend on counts.
    pub fn validate(&self) -> Result<(), HistogramError> {
        validate_layout(
            self.schema,
            self.zero_threshold,
            self.positive_spans,
            self.negative_spans,
            self.custom_values,
        )
    }
}

/// Zero threshold codes: 0 is `+0.0`, 255 escapes to the raw 64 bits, and
/// `c` in 1..=254 is `2^(c - 244)`, so 2^-243 ..= 2^10 take one byte.
const ZERO_THRESHOLD_RAW: u64 = 255;

/// `2^(c - 244)` has the IEEE 754 exponent field `c - 244 + 1023`.
const ZERO_THRESHOLD_EXP_BIAS: u64 = 1023 - 244;

fn write_zero_threshold(w: &mut BitWriter, zt: f64) {
    let bits = zt.to_bits();
    if bits == 0 {
        w.write_bits(0, 8);
        return;
    }
    // The sign bit lands above 2047, out of range, so negatives go raw.
    let exponent = bits >> 52;
    let code = exponent.wrapping_sub(ZERO_THRESHOLD_EXP_BIAS);
    if bits & ((1 << 52) - 1) == 0 && (1..=254).contains(&code) {
        w.write_bits(code, 8);
    } else {
        w.write_bits(ZERO_THRESHOLD_RAW, 8);
        w.write_bits(bits, 64);
    }
}

fn read_zero_threshold(r: &mut BitReader<'_>) -> f64 {
    match u64::from(r.read_byte()) {
        0 => 0.0,
        ZERO_THRESHOLD_RAW => f64::from_bits(r.read_bits(64)),
        code => f64::from_bits((code + ZERO_THRESHOLD_EXP_BIAS) << 52),
    }
}

/// Bounds that are whole thousandths (0.005, 0.25, 10, ...) are stored as
/// `k + 1` for `k / 1000`, when that gives the very same bits back; others
/// as `0` and the raw 64 bits.
fn write_custom_bound(w: &mut BitWriter, v: f64) {
    let k = (v * 1000.0).round();
    if v.is_sign_positive() && (0.0..9.0e15).contains(&k) && (k / 1000.0).to_bits() == v.to_bits() {
        write_varbit_uint(w, k as u64 + 1);
    } else {
        write_varbit_uint(w, 0);
        w.write_bits(v.to_bits(), 64);
    }
}

fn read_custom_bound(r: &mut BitReader<'_>) -> f64 {
    match read_varbit_uint(r) {
        0 => f64::from_bits(r.read_bits(64)),
        k => (k - 1) as f64 / 1000.0,
    }
}

fn write_spans(w: &mut BitWriter, spans: &[Span]) {
    write_varbit_uint(w, spans.len() as u64);
    for s in spans {
        write_varbit_uint(w, u64::from(s.length));
        write_varbit_int(w, i64::from(s.offset));
    }
}

pub fn write_layout(w: &mut BitWriter, l: &LayoutRef<'_>) {
    write_zero_threshold(w, l.zero_threshold);
    write_varbit_int(w, i64::from(l.schema));
    write_spans(w, l.positive_spans);
    write_spans(w, l.negative_spans);
    if l.schema == CUSTOM_BUCKETS_SCHEMA {
        write_varbit_uint(w, l.custom_values.len() as u64);
        for &v in l.custom_values {
            write_custom_bound(w, v);
        }
    }
}

/// Bits left in a reader over `total_bits` bits.
fn remaining(r: &BitReader<'_>, total_bits: usize) -> u64 {
    total_bits.saturating_sub(r.bit_pos()) as u64
}

fn read_spans(r: &mut BitReader<'_>, total_bits: usize, into: &mut Vec<Span>) -> Result<(), Fail> {
    let n = read_varbit_uint(r);
    // Each span takes at least 2 bits: never allocate for more than the
    // data can hold.
    if n > remaining(r, total_bits) / 2 {
        return Err(Fail::Truncated);
    }
    into.clear();
    for _ in 0..n {
        let length = u32::try_from(read_varbit_uint(r))
            .map_err(|_| Fail::Corrupt("span length overflows 32 bits"))?;
        let offset = i32::try_from(read_varbit_int(r))
            .map_err(|_| Fail::Corrupt("span offset overflows 32 bits"))?;
        into.push(Span { offset, length });
    }
    Ok(())
}

/// Reads a layout written by [`write_layout`] into `into` (reusing its
/// allocations) and validates it. `total_bits` is the size of the data,
/// which bounds what a corrupt count can make it allocate.
pub fn read_layout(
    r: &mut BitReader<'_>,
    total_bits: usize,
    into: &mut Layout,
) -> Result<(), Fail> {
    into.zero_threshold = read_zero_threshold(r);
    into.schema =
        i32::try_from(read_varbit_int(r)).map_err(|_| Fail::Corrupt("schema overflows 32 bits"))?;
    read_spans(r, total_bits, &mut into.positive_spans)?;
    read_spans(r, total_bits, &mut into.negative_spans)?;
    into.custom_values.clear();
    if into.schema == CUSTOM_BUCKETS_SCHEMA {
        let n = read_varbit_uint(r);
        if n > remaining(r, total_bits) {
            return Err(Fail::Truncated);
        }
        for _ in 0..n {
            into.custom_values.push(read_custom_bound(r));
        }
    }
    if r.overrun() {
        return Err(Fail::Truncated);
    }
    into.as_ref().validate().map_err(Fail::InvalidLayout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(l: &Layout) -> (Layout, usize) {
        let mut w = BitWriter::default();
        write_layout(&mut w, &l.as_ref());
        let bits = w.bit_len();
        let mut r = BitReader::new(w.bytes(), 0);
        let mut back = Layout::default();
        read_layout(&mut r, w.bytes().len() * 8, &mut back).unwrap();
        assert_eq!(r.bit_pos(), bits);
        (back, bits)
    }

    #[test]
    fn zero_thresholds_round_trip_bit_for_bit() {
        for (zt, bits) in [
            (0.0, 8),
            (2f64.powi(-128), 8), // Prometheus's default: code 116
            (2f64.powi(-243), 8),
            (1024.0, 8),
            (2048.0, 72),
            (2f64.powi(-244), 72),
            (0.001, 72),
            (-0.0, 72),
            (f64::MIN_POSITIVE / 4.0, 72),
        ] {
            let mut w = BitWriter::default();
            write_zero_threshold(&mut w, zt);
            assert_eq!(w.bit_len(), bits, "{zt:e}");
            let mut r = BitReader::new(w.bytes(), 0);
            assert_eq!(
                read_zero_threshold(&mut r).to_bits(),
                zt.to_bits(),
                "{zt:e}"
            );
        }
        let mut w = BitWriter::default();
        write_zero_threshold(&mut w, 2f64.powi(-128));
        assert_eq!(w.bytes(), [116]);
    }

    #[test]
    fn custom_bounds_round_trip_bit_for_bit() {
        let classic = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let l = Layout {
            schema: CUSTOM_BUCKETS_SCHEMA,
            positive_spans: vec![Span {
                offset: 0,
                length: 12,
            }],
            custom_values: classic.to_vec(),
            ..Layout::default()
        };
        let (back, bits) = round_trip(&l);
        assert_eq!(back, l);
        // Thousandths take 5 to 24 bits each, not 64.
        assert!(bits < 200, "{bits} bits");

        let odd = Layout {
            custom_values: vec![-3.5, 0.1 + 0.2, 1.0 / 3.0, 1e300],
            positive_spans: vec![Span {
                offset: 1,
                length: 4,
            }],
            ..l
        };
        let (back, _) = round_trip(&odd);
        for (a, b) in back.custom_values.iter().zip(&odd.custom_values) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn corrupt_span_counts_do_not_allocate() {
        let mut w = BitWriter::default();
        write_zero_threshold(&mut w, 0.0);
        write_varbit_int(&mut w, 0);
        write_varbit_uint(&mut w, u64::MAX); // a billion billion spans
        let mut r = BitReader::new(w.bytes(), 0);
        let mut l = Layout::default();
        assert_eq!(
            read_layout(&mut r, w.bytes().len() * 8, &mut l),
            Err(Fail::Truncated)
        );
    }
}
