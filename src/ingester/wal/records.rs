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
//! ```text
//! Histograms (type 3): integer native histograms; FloatHistograms (type 4): float ones
//! ┌────────────┬─────────────┬──────────────────────────────────────────────────┐
//! │ 3|4 <1b>   │ n <uvarint> │ if n > 0: base_ref <uvarint> │ base_t <varint> │
//! ├────────────┴─────────────┴──────────────────────────────────────────────────┤
//! │ n × ( series_ref - base_ref <varint> │ t - base_t <varint> │ histogram )    │
//! └─────────────────────────────────────────────────────────────────────────────┘
//! histogram:
//! ┌───────────┬─────────────────┬──────────────────────┬──────────────┬─────────┬──────────┐
//! │ hint <1b> │ schema <varint> │ zero_threshold <8b>  │ zero_count   │ count   │ sum <8b> │
//! ├───────────┴───────┬─────────┴──────────┬───────────┴──────────┬───┴─────────┴──────────┤
//! │ positive spans    │ negative spans     │ positive buckets     │ negative buckets       │
//! ├───────────────────┴────────────────────┴──────────────────────┴────────────────────────┤
//! │ custom values: k <uvarint> │ k × <8b>                                                  │
//! └────────────────────────────────────────────────────────────────────────────────────────┘
//!  spans:    k <uvarint> │ k × ( offset <varint> │ length <uvarint> )
//!  buckets:  k <uvarint> │ k × count
//! ```
//!
//! `hint` is 0 unknown, 1 counter reset, 2 not a counter reset, 3 gauge
//! (remote write's numbering). Counts (`zero_count`, `count`, buckets) are
//! `uvarint`, `uvarint` and `varint` deltas as remote write sends them in
//! integer histograms, the raw 8-byte bits in float ones. Floats are
//! big-endian IEEE-754 bits.
//!
//! ```text
//! Exemplars (type 5): exemplars of series already logged
//! ┌─────────┬─────────────┬──────────────────────────────────────────────────┐
//! │ 5 <1b>  │ n <uvarint> │ if n > 0: base_ref <uvarint> │ base_t <varint> │
//! ├─────────┴─────────────┴──────────────────────────────────────────────────┤
//! │ n × ( series_ref - base_ref <varint> │ t - base_t <varint> │ v <8b BE> │ │
//! │       k <uvarint> │ k × ( name <str> │ value <str> ) )                   │
//! └──────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! As Prometheus's exemplar record: the exemplar's own labels (e.g.
//! `trace_id`) after its value; the base as in the samples record.
//!
//! Type bytes 6 and up are reserved for later kinds (tombstones,
//! metadata); an unknown type is a decode error, never skipped. Decoding checks every length against the bytes left, so no
//! input makes it panic or allocate more than the input justifies.

use crate::model::histogram::{CounterResetHint, FloatHistogram, Histogram, Span};

/// The kind of a record: its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    Series = 1,
    Samples = 2,
    Histograms = 3,
    FloatHistograms = 4,
    Exemplars = 5,
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

/// One integer native histogram sample of a series already logged.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramRecord {
    pub series_ref: u64,
    pub t: i64,
    pub h: Histogram,
}

/// One float native histogram sample of a series already logged.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatHistogramRecord {
    pub series_ref: u64,
    pub t: i64,
    pub h: FloatHistogram,
}

/// One exemplar of a series already logged.
#[derive(Clone, Debug, PartialEq)]
pub struct ExemplarRecord {
    pub series_ref: u64,
    pub t: i64,
    pub v: f64,
    pub labels: Vec<(String, String)>,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Series(Vec<SeriesRecord>),
    Samples(Vec<SampleRecord>),
    Histograms(Vec<HistogramRecord>),
    FloatHistograms(Vec<FloatHistogramRecord>),
    Exemplars(Vec<ExemplarRecord>),
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
    #[error("{what} at byte {offset} is out of range")]
    OutOfRange { what: &'static str, offset: usize },
}

/// Smallest encodings, to bound counts by the bytes left.
const MIN_SERIES_LEN: usize = 3;
const MIN_SAMPLE_LEN: usize = 10;
const MIN_LABEL_LEN: usize = 2;
/// Ref and timestamp deltas, hint, schema, zero count and count (1 byte
/// each at least), zero threshold and sum (8), five list lengths (1).
const MIN_HISTOGRAM_LEN: usize = 1 + 1 + 1 + 1 + 8 + 1 + 1 + 8 + 5;
const MIN_SPAN_LEN: usize = 2;
/// Ref and timestamp deltas (1 byte each), value (8), label count (1).
const MIN_EXEMPLAR_LEN: usize = 11;

/// Appends a series record holding `series` to `out`.
pub fn encode_series(series: &[SeriesRecord], out: &mut Vec<u8>) {
    out.push(RecordType::Series as u8);
    put_uvarint(out, series.len() as u64);
    for s in series {
        put_uvarint(out, s.series_ref);
        put_str(out, &s.tenant);
        put_labels(out, &s.labels);
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

/// Appends an exemplars record holding `exemplars` to `out`.
pub fn encode_exemplars(exemplars: &[ExemplarRecord], out: &mut Vec<u8>) {
    out.push(RecordType::Exemplars as u8);
    put_uvarint(out, exemplars.len() as u64);
    let Some(base) = exemplars.first() else {
        return;
    };
    put_uvarint(out, base.series_ref);
    put_varint(out, base.t);
    for e in exemplars {
        put_varint(out, e.series_ref.wrapping_sub(base.series_ref) as i64);
        put_varint(out, e.t.wrapping_sub(base.t));
        out.extend_from_slice(&e.v.to_bits().to_be_bytes());
        put_labels(out, &e.labels);
    }
}

/// Appends an integer histograms record holding `histograms` to `out`.
pub fn encode_histograms(histograms: &[HistogramRecord], out: &mut Vec<u8>) {
    encode_histogram_record(
        RecordType::Histograms,
        histograms,
        out,
        |r| (r.series_ref, r.t),
        |out, r| {
            let h = &r.h;
            put_histogram_head(out, h.counter_reset_hint, h.schema, h.zero_threshold);
            put_uvarint(out, h.zero_count);
            put_uvarint(out, h.count);
            put_f64(out, h.sum);
            put_spans(out, &h.positive_spans);
            put_spans(out, &h.negative_spans);
            for side in [&h.positive_buckets, &h.negative_buckets] {
                put_uvarint(out, side.len() as u64);
                for &d in side {
                    put_varint(out, d);
                }
            }
            put_floats(out, &h.custom_values);
        },
    );
}

/// Appends a float histograms record holding `histograms` to `out`.
pub fn encode_float_histograms(histograms: &[FloatHistogramRecord], out: &mut Vec<u8>) {
    encode_histogram_record(
        RecordType::FloatHistograms,
        histograms,
        out,
        |r| (r.series_ref, r.t),
        |out, r| {
            let h = &r.h;
            put_histogram_head(out, h.counter_reset_hint, h.schema, h.zero_threshold);
            put_f64(out, h.zero_count);
            put_f64(out, h.count);
            put_f64(out, h.sum);
            put_spans(out, &h.positive_spans);
            put_spans(out, &h.negative_spans);
            put_floats(out, &h.positive_buckets);
            put_floats(out, &h.negative_buckets);
            put_floats(out, &h.custom_values);
        },
    );
}

fn encode_histogram_record<R>(
    typ: RecordType,
    records: &[R],
    out: &mut Vec<u8>,
    key: impl Fn(&R) -> (u64, i64),
    body: impl Fn(&mut Vec<u8>, &R),
) {
    out.push(typ as u8);
    put_uvarint(out, records.len() as u64);
    let Some(base) = records.first().map(&key) else {
        return;
    };
    put_uvarint(out, base.0);
    put_varint(out, base.1);
    for r in records {
        let (series_ref, t) = key(r);
        put_varint(out, series_ref.wrapping_sub(base.0) as i64);
        put_varint(out, t.wrapping_sub(base.1));
        body(out, r);
    }
}

fn hint_byte(hint: CounterResetHint) -> u8 {
    match hint {
        CounterResetHint::Unknown => 0,
        CounterResetHint::CounterReset => 1,
        CounterResetHint::NotCounterReset => 2,
        CounterResetHint::Gauge => 3,
    }
}

fn put_histogram_head(out: &mut Vec<u8>, hint: CounterResetHint, schema: i32, zero_threshold: f64) {
    out.push(hint_byte(hint));
    put_varint(out, i64::from(schema));
    put_f64(out, zero_threshold);
}

fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

fn put_floats(out: &mut Vec<u8>, values: &[f64]) {
    put_uvarint(out, values.len() as u64);
    for &v in values {
        put_f64(out, v);
    }
}

fn put_spans(out: &mut Vec<u8>, spans: &[Span]) {
    put_uvarint(out, spans.len() as u64);
    for s in spans {
        put_varint(out, i64::from(s.offset));
        put_uvarint(out, u64::from(s.length));
    }
}

/// The type of a record, from its first byte.
pub fn record_type(rec: &[u8]) -> Result<RecordType, RecordError> {
    match rec.first() {
        None => Err(RecordError::Empty),
        Some(1) => Ok(RecordType::Series),
        Some(2) => Ok(RecordType::Samples),
        Some(3) => Ok(RecordType::Histograms),
        Some(4) => Ok(RecordType::FloatHistograms),
        Some(5) => Ok(RecordType::Exemplars),
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
        RecordType::Histograms => {
            let mut histograms = Vec::new();
            decode_histograms_into(rec, &mut histograms)?;
            Ok(Record::Histograms(histograms))
        }
        RecordType::FloatHistograms => {
            let mut histograms = Vec::new();
            decode_float_histograms_into(rec, &mut histograms)?;
            Ok(Record::FloatHistograms(histograms))
        }
        RecordType::Exemplars => {
            let mut exemplars = Vec::new();
            decode_exemplars_into(rec, &mut exemplars)?;
            Ok(Record::Exemplars(exemplars))
        }
    }
}

/// Decodes an integer histograms record, appending to `out`.
pub fn decode_histograms_into(
    rec: &[u8],
    out: &mut Vec<HistogramRecord>,
) -> Result<(), RecordError> {
    decode_delta_record(
        rec,
        RecordType::Histograms,
        ("histograms", MIN_HISTOGRAM_LEN),
        out,
        |d, series_ref, t| {
            let (counter_reset_hint, schema, zero_threshold) = d.histogram_head()?;
            let zero_count = d.uvarint("zero count")?;
            let count = d.uvarint("count")?;
            let sum = d.f64("sum")?;
            let positive_spans = d.spans()?;
            let negative_spans = d.spans()?;
            let mut sides = [Vec::new(), Vec::new()];
            for side in &mut sides {
                let n = d.count("bucket deltas", 1)?;
                side.reserve(n);
                for _ in 0..n {
                    side.push(d.varint("bucket delta")?);
                }
            }
            let [positive_buckets, negative_buckets] = sides;
            let custom_values = d.floats("custom values")?;
            Ok(HistogramRecord {
                series_ref,
                t,
                h: Histogram {
                    counter_reset_hint,
                    schema,
                    zero_threshold,
                    zero_count,
                    count,
                    sum,
                    positive_spans,
                    negative_spans,
                    positive_buckets,
                    negative_buckets,
                    custom_values,
                },
            })
        },
    )
}

/// Decodes a float histograms record, appending to `out`.
pub fn decode_float_histograms_into(
    rec: &[u8],
    out: &mut Vec<FloatHistogramRecord>,
) -> Result<(), RecordError> {
    decode_delta_record(
        rec,
        RecordType::FloatHistograms,
        ("histograms", MIN_HISTOGRAM_LEN),
        out,
        |d, series_ref, t| {
            let (counter_reset_hint, schema, zero_threshold) = d.histogram_head()?;
            let zero_count = d.f64("zero count")?;
            let count = d.f64("count")?;
            let sum = d.f64("sum")?;
            let positive_spans = d.spans()?;
            let negative_spans = d.spans()?;
            let positive_buckets = d.floats("positive buckets")?;
            let negative_buckets = d.floats("negative buckets")?;
            let custom_values = d.floats("custom values")?;
            Ok(FloatHistogramRecord {
                series_ref,
                t,
                h: FloatHistogram {
                    counter_reset_hint,
                    schema,
                    zero_threshold,
                    zero_count,
                    count,
                    sum,
                    positive_spans,
                    negative_spans,
                    positive_buckets,
                    negative_buckets,
                    custom_values,
                },
            })
        },
    )
}

/// Decodes a record of entries that each start with a series ref and a
/// timestamp as deltas from the record's base ones (samples, exemplars,
/// histograms); `one` reads the rest of an entry. `count` names the entries
/// and gives their minimum encoded length.
fn decode_delta_record<R>(
    rec: &[u8],
    typ: RecordType,
    count: (&'static str, usize),
    out: &mut Vec<R>,
    one: impl Fn(&mut Decoder<'_>, u64, i64) -> Result<R, RecordError>,
) -> Result<(), RecordError> {
    let mut d = Decoder::new(rec, typ)?;
    let n = d.count(count.0, count.1)?;
    if n == 0 {
        return d.finish();
    }
    let base_ref = d.uvarint("base series ref")?;
    let base_t = d.varint("base timestamp")?;
    out.reserve(n);
    for _ in 0..n {
        let series_ref = base_ref.wrapping_add(d.varint("series ref delta")? as u64);
        let t = base_t.wrapping_add(d.varint("timestamp delta")?);
        out.push(one(&mut d, series_ref, t)?);
    }
    d.finish()
}

/// Decodes a series record, appending to `out` (a buffer to reuse).
pub fn decode_series_into(rec: &[u8], out: &mut Vec<SeriesRecord>) -> Result<(), RecordError> {
    let mut d = Decoder::new(rec, RecordType::Series)?;
    let n = d.count("series", MIN_SERIES_LEN)?;
    out.reserve(n);
    for _ in 0..n {
        let series_ref = d.uvarint("series ref")?;
        let tenant = d.string("tenant")?;
        let labels = d.labels()?;
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
    decode_delta_record(
        rec,
        RecordType::Samples,
        ("samples", MIN_SAMPLE_LEN),
        out,
        |d, series_ref, t| {
            Ok(SampleRecord {
                series_ref,
                t,
                v: d.f64("value")?,
            })
        },
    )
}

/// Decodes an exemplars record, appending to `out` (a buffer to reuse).
pub fn decode_exemplars_into(rec: &[u8], out: &mut Vec<ExemplarRecord>) -> Result<(), RecordError> {
    decode_delta_record(
        rec,
        RecordType::Exemplars,
        ("exemplars", MIN_EXEMPLAR_LEN),
        out,
        |d, series_ref, t| {
            Ok(ExemplarRecord {
                series_ref,
                t,
                v: d.f64("value")?,
                labels: d.labels()?,
            })
        },
    )
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

fn put_labels(out: &mut Vec<u8>, labels: &[(String, String)]) {
    put_uvarint(out, labels.len() as u64);
    for (name, value) in labels {
        put_str(out, name);
        put_str(out, value);
    }
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

    fn labels(&mut self) -> Result<Vec<(String, String)>, RecordError> {
        let k = self.count("labels", MIN_LABEL_LEN)?;
        let mut labels = Vec::with_capacity(k);
        for _ in 0..k {
            let name = self.string("label name")?;
            let value = self.string("label value")?;
            labels.push((name, value));
        }
        Ok(labels)
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, RecordError> {
        Ok(f64::from_bits(u64::from_be_bytes(self.array(what)?)))
    }

    fn floats(&mut self, what: &'static str) -> Result<Vec<f64>, RecordError> {
        let n = self.count(what, 8)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.f64(what)?);
        }
        Ok(out)
    }

    fn spans(&mut self) -> Result<Vec<Span>, RecordError> {
        let n = self.count("spans", MIN_SPAN_LEN)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let start = self.pos;
            let offset = i32::try_from(self.varint("span offset")?).map_err(|_| {
                RecordError::OutOfRange {
                    what: "span offset",
                    offset: start,
                }
            })?;
            let start = self.pos;
            let length = u32::try_from(self.uvarint("span length")?).map_err(|_| {
                RecordError::OutOfRange {
                    what: "span length",
                    offset: start,
                }
            })?;
            out.push(Span { offset, length });
        }
        Ok(out)
    }

    fn histogram_head(&mut self) -> Result<(CounterResetHint, i32, f64), RecordError> {
        let start = self.pos;
        let hint = match self.array::<1>("hint")?[0] {
            0 => CounterResetHint::Unknown,
            1 => CounterResetHint::CounterReset,
            2 => CounterResetHint::NotCounterReset,
            3 => CounterResetHint::Gauge,
            _ => {
                return Err(RecordError::OutOfRange {
                    what: "counter reset hint",
                    offset: start,
                });
            }
        };
        let start = self.pos;
        let schema =
            i32::try_from(self.varint("schema")?).map_err(|_| RecordError::OutOfRange {
                what: "schema",
                offset: start,
            })?;
        let zero_threshold = self.f64("zero threshold")?;
        Ok((hint, schema, zero_threshold))
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

    fn hint_strategy() -> impl Strategy<Value = CounterResetHint> {
        prop_oneof![
            Just(CounterResetHint::Unknown),
            Just(CounterResetHint::CounterReset),
            Just(CounterResetHint::NotCounterReset),
            Just(CounterResetHint::Gauge),
        ]
    }

    fn spans_strategy() -> impl Strategy<Value = Vec<Span>> {
        prop::collection::vec(
            (any::<i32>(), any::<u32>()).prop_map(|(offset, length)| Span { offset, length }),
            0..4,
        )
    }

    fn float_bits() -> impl Strategy<Value = f64> {
        prop_oneof![any::<u64>(), Just(STALE_NAN), Just(0f64.to_bits())].prop_map(f64::from_bits)
    }

    fn histogram_strategy() -> impl Strategy<Value = HistogramRecord> {
        (
            (any::<u64>(), any::<i64>(), hint_strategy(), any::<i32>()),
            (float_bits(), any::<u64>(), any::<u64>(), float_bits()),
            (spans_strategy(), spans_strategy()),
            (
                prop::collection::vec(any::<i64>(), 0..6),
                prop::collection::vec(any::<i64>(), 0..6),
                prop::collection::vec(float_bits(), 0..4),
            ),
        )
            .prop_map(
                |(
                    (series_ref, t, counter_reset_hint, schema),
                    (zero_threshold, zero_count, count, sum),
                    (positive_spans, negative_spans),
                    (positive_buckets, negative_buckets, custom_values),
                )| HistogramRecord {
                    series_ref,
                    t,
                    h: Histogram {
                        counter_reset_hint,
                        schema,
                        zero_threshold,
                        zero_count,
                        count,
                        sum,
                        positive_spans,
                        negative_spans,
                        positive_buckets,
                        negative_buckets,
                        custom_values,
                    },
                },
            )
    }

    /// A float histogram record from an integer one's random fields.
    fn float_record(r: &HistogramRecord) -> FloatHistogramRecord {
        FloatHistogramRecord {
            series_ref: r.series_ref,
            t: r.t,
            h: FloatHistogram {
                counter_reset_hint: r.h.counter_reset_hint,
                schema: r.h.schema,
                zero_threshold: r.h.zero_threshold,
                zero_count: f64::from_bits(r.h.zero_count),
                count: f64::from_bits(r.h.count),
                sum: r.h.sum,
                positive_spans: r.h.positive_spans.clone(),
                negative_spans: r.h.negative_spans.clone(),
                positive_buckets: r
                    .h
                    .positive_buckets
                    .iter()
                    .map(|&b| f64::from_bits(b as u64))
                    .collect(),
                negative_buckets: r
                    .h
                    .negative_buckets
                    .iter()
                    .map(|&b| f64::from_bits(b as u64))
                    .collect(),
                custom_values: r.h.custom_values.clone(),
            },
        }
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
        fn exemplars_round_trip_bit_for_bit(
            records in prop::collection::vec(
                (sample_strategy(), prop::collection::vec((".{0,10}", ".{0,20}"), 0..4)),
                0..50,
            )
        ) {
            let exemplars: Vec<ExemplarRecord> = records
                .into_iter()
                .map(|(s, labels)| ExemplarRecord { series_ref: s.series_ref, t: s.t, v: s.v, labels })
                .collect();
            let mut buf = Vec::new();
            encode_exemplars(&exemplars, &mut buf);
            let key = |e: &ExemplarRecord| (e.series_ref, e.t, e.v.to_bits(), e.labels.clone());
            match decode(&buf) {
                Ok(Record::Exemplars(decoded)) => prop_assert_eq!(
                    decoded.iter().map(key).collect::<Vec<_>>(),
                    exemplars.iter().map(key).collect::<Vec<_>>()
                ),
                other => prop_assert!(false, "decoded {:?}", other),
            }
            // Every cut of the record is refused, never a panic.
            for cut in 1..buf.len() {
                prop_assert!(decode(&buf[..cut]).is_err());
            }
        }

        #[test]
        fn histograms_round_trip_bit_for_bit(records in prop::collection::vec(histogram_strategy(), 0..30)) {
            let mut buf = Vec::new();
            encode_histograms(&records, &mut buf);
            match decode(&buf) {
                Ok(Record::Histograms(decoded)) => {
                    prop_assert_eq!(decoded.len(), records.len());
                    for (d, r) in decoded.iter().zip(&records) {
                        prop_assert!(d.series_ref == r.series_ref && d.t == r.t && d.h.bitwise_eq(&r.h), "{:?} != {:?}", d, r);
                    }
                }
                other => prop_assert!(false, "decoded {:?}", other),
            }
            let floats: Vec<FloatHistogramRecord> = records.iter().map(float_record).collect();
            let mut buf = Vec::new();
            encode_float_histograms(&floats, &mut buf);
            match decode(&buf) {
                Ok(Record::FloatHistograms(decoded)) => {
                    prop_assert_eq!(decoded.len(), floats.len());
                    for (d, r) in decoded.iter().zip(&floats) {
                        prop_assert!(d.series_ref == r.series_ref && d.t == r.t && d.h.bitwise_eq(&r.h), "{:?} != {:?}", d, r);
                    }
                }
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }

        #[test]
        fn damaged_histogram_records_never_panic(
            records in prop::collection::vec(histogram_strategy(), 1..5),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            mask in 1u8..,
        ) {
            let mut int_buf = Vec::new();
            encode_histograms(&records, &mut int_buf);
            let floats: Vec<FloatHistogramRecord> = records.iter().map(float_record).collect();
            let mut float_buf = Vec::new();
            encode_float_histograms(&floats, &mut float_buf);
            for mut buf in [int_buf, float_buf] {
                let truncated = &buf[..cut.index(buf.len())];
                prop_assert!(decode(truncated).is_err(), "a truncated record must not decode");
                let i = flip.index(buf.len());
                buf[i] ^= mask;
                let _ = decode(&buf);
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
