//! Lanes: the per-sample fields coded against the same field of the
//! previous sample (count residual, zero count, absolute bucket counts),
//! how each sample type turns into them and back, and how a lane is coded
//! in integer and float chunks.

use std::fmt::Debug;

use super::codec::{DodField, Fail, XorField};
use super::layout::{Layout, LayoutRef};
use super::{CounterResetHint, FloatHistogram, Histogram, HistogramError, span_buckets};
use crate::chunk::bstream::{BitReader, BitWriter};
use crate::model::histogram::absolute;

/// How one lane (count residual, zero count or a bucket) is coded.
pub trait Lane: Debug + Clone + Copy + 'static {
    type Field: Debug + Clone + Copy;
    const NEW: Self::Field;
    fn write(f: &mut Self::Field, w: &mut BitWriter, v: u64, first: bool);
    fn read(f: &mut Self::Field, r: &mut BitReader<'_>, first: bool) -> Result<u64, Fail>;
    /// The field's last value.
    fn value(f: &Self::Field) -> u64;
    /// Whether a counter went down from `old` to `new`.
    fn decreased(new: u64, old: u64) -> bool;
    /// The count the lanes (residual first) stand for.
    fn count(lanes: &[Self::Field]) -> u64;
}

/// Integer lanes: delta of deltas.
#[derive(Debug, Clone, Copy)]
pub struct IntLane;

impl Lane for IntLane {
    type Field = DodField;
    const NEW: DodField = DodField::NEW;

    #[inline]
    fn write(f: &mut DodField, w: &mut BitWriter, v: u64, first: bool) {
        f.write(w, v, first);
    }

    #[inline]
    fn read(f: &mut DodField, r: &mut BitReader<'_>, first: bool) -> Result<u64, Fail> {
        Ok(f.read(r, first))
    }

    #[inline]
    fn value(f: &DodField) -> u64 {
        f.prev
    }

    #[inline]
    fn decreased(new: u64, old: u64) -> bool {
        new < old
    }

    fn count(lanes: &[DodField]) -> u64 {
        lanes.iter().fold(0u64, |sum, f| sum.wrapping_add(f.prev))
    }
}

/// Float lanes: XOR against the previous value.
#[derive(Debug, Clone, Copy)]
pub struct FloatLane;

impl Lane for FloatLane {
    type Field = XorField;
    const NEW: XorField = XorField::NEW;

    #[inline]
    fn write(f: &mut XorField, w: &mut BitWriter, v: u64, first: bool) {
        f.write(w, v, first);
    }

    #[inline]
    fn read(f: &mut XorField, r: &mut BitReader<'_>, first: bool) -> Result<u64, Fail> {
        f.read(r, first)
    }

    #[inline]
    fn value(f: &XorField) -> u64 {
        f.prev
    }

    #[inline]
    fn decreased(new: u64, old: u64) -> bool {
        f64::from_bits(new) < f64::from_bits(old)
    }

    fn count(lanes: &[XorField]) -> u64 {
        let Some((residual, rest)) = lanes.split_first() else {
            return 0;
        };
        let predicted = rest.iter().fold(0.0, |sum, f| sum + f64::from_bits(f.prev));
        residual.prev ^ predicted.to_bits()
    }
}

pub(super) mod sealed {
    use super::*;

    /// What the chunk needs of a histogram type.
    pub trait Sealed: Debug + Clone + Default {
        type Lane: Lane;
        const FLOAT: bool;
        fn hint(&self) -> CounterResetHint;
        fn set_hint(&mut self, hint: CounterResetHint);
        fn sum(&self) -> f64;
        fn set_sum(&mut self, sum: f64);
        fn layout_ref(&self) -> LayoutRef<'_>;
        fn check(&self) -> Result<(), HistogramError>;
        /// The count, comparable with [`Lane::decreased`].
        fn count_value(&self) -> u64;
        /// Lanes in order: count residual, zero count, positive buckets,
        /// negative buckets.
        fn lanes(&self, out: &mut Vec<u64>);
        /// Takes the layout, sizing the buckets to match.
        fn set_layout(&mut self, layout: &Layout);
        fn set_values(&mut self, sum: u64, lanes: &[<Self::Lane as Lane>::Field]);
    }
}

use sealed::Sealed;

/// A histogram type a [`NativeChunk`](super::NativeChunk) holds: [`Histogram`] or
/// [`FloatHistogram`].
pub trait HistogramSample: Sealed {}

impl HistogramSample for Histogram {}
impl HistogramSample for FloatHistogram {}

impl Sealed for Histogram {
    type Lane = IntLane;
    const FLOAT: bool = false;

    fn hint(&self) -> CounterResetHint {
        self.counter_reset_hint
    }

    fn set_hint(&mut self, hint: CounterResetHint) {
        self.counter_reset_hint = hint;
    }

    fn sum(&self) -> f64 {
        self.sum
    }

    fn set_sum(&mut self, sum: f64) {
        self.sum = sum;
    }

    fn layout_ref(&self) -> LayoutRef<'_> {
        LayoutRef {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            positive_spans: &self.positive_spans,
            negative_spans: &self.negative_spans,
            custom_values: &self.custom_values,
        }
    }

    fn check(&self) -> Result<(), HistogramError> {
        self.validate()
    }

    fn count_value(&self) -> u64 {
        self.count
    }

    fn lanes(&self, out: &mut Vec<u64>) {
        out.clear();
        out.extend([0, self.zero_count]);
        out.extend(absolute(&self.positive_buckets).map(|c| c as u64));
        out.extend(absolute(&self.negative_buckets).map(|c| c as u64));
        let total = out.iter().fold(0u64, |sum, &c| sum.wrapping_add(c));
        out[0] = self.count.wrapping_sub(total);
    }

    fn set_layout(&mut self, l: &Layout) {
        self.schema = l.schema;
        self.zero_threshold = l.zero_threshold;
        self.positive_spans.clone_from(&l.positive_spans);
        self.negative_spans.clone_from(&l.negative_spans);
        self.custom_values.clone_from(&l.custom_values);
        self.positive_buckets
            .resize(span_buckets(&l.positive_spans) as usize, 0);
        self.negative_buckets
            .resize(span_buckets(&l.negative_spans) as usize, 0);
    }

    fn set_values(&mut self, sum: u64, lanes: &[DodField]) {
        self.sum = f64::from_bits(sum);
        self.count = IntLane::count(lanes);
        self.zero_count = lanes[1].prev;
        let (positive, negative) = lanes[2..].split_at(self.positive_buckets.len());
        for (deltas, fields) in [
            (&mut self.positive_buckets, positive),
            (&mut self.negative_buckets, negative),
        ] {
            let mut prev = 0u64;
            for (d, f) in deltas.iter_mut().zip(fields) {
                *d = f.prev.wrapping_sub(prev) as i64;
                prev = f.prev;
            }
        }
    }
}

impl Sealed for FloatHistogram {
    type Lane = FloatLane;
    const FLOAT: bool = true;

    fn hint(&self) -> CounterResetHint {
        self.counter_reset_hint
    }

    fn set_hint(&mut self, hint: CounterResetHint) {
        self.counter_reset_hint = hint;
    }

    fn sum(&self) -> f64 {
        self.sum
    }

    fn set_sum(&mut self, sum: f64) {
        self.sum = sum;
    }

    fn layout_ref(&self) -> LayoutRef<'_> {
        LayoutRef {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            positive_spans: &self.positive_spans,
            negative_spans: &self.negative_spans,
            custom_values: &self.custom_values,
        }
    }

    fn check(&self) -> Result<(), HistogramError> {
        self.validate()
    }

    fn count_value(&self) -> u64 {
        self.count.to_bits()
    }

    fn lanes(&self, out: &mut Vec<u64>) {
        out.clear();
        out.extend([0, self.zero_count.to_bits()]);
        // The same additions, in the same order, as FloatLane::count.
        let mut predicted = 0.0 + self.zero_count;
        for &b in self.positive_buckets.iter().chain(&self.negative_buckets) {
            out.push(b.to_bits());
            predicted += b;
        }
        out[0] = self.count.to_bits() ^ predicted.to_bits();
    }

    fn set_layout(&mut self, l: &Layout) {
        self.schema = l.schema;
        self.zero_threshold = l.zero_threshold;
        self.positive_spans.clone_from(&l.positive_spans);
        self.negative_spans.clone_from(&l.negative_spans);
        self.custom_values.clone_from(&l.custom_values);
        self.positive_buckets
            .resize(span_buckets(&l.positive_spans) as usize, 0.0);
        self.negative_buckets
            .resize(span_buckets(&l.negative_spans) as usize, 0.0);
    }

    fn set_values(&mut self, sum: u64, lanes: &[XorField]) {
        self.sum = f64::from_bits(sum);
        self.count = f64::from_bits(FloatLane::count(lanes));
        self.zero_count = f64::from_bits(lanes[1].prev);
        let buckets = self
            .positive_buckets
            .iter_mut()
            .chain(self.negative_buckets.iter_mut());
        for (b, f) in buckets.zip(&lanes[2..]) {
            *b = f64::from_bits(f.prev);
        }
    }
}
