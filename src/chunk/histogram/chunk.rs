//! The chunk, its appender and its iterator, written once for both sample
//! types over the lanes of [`super::lanes`]. The format is in the
//! [module docs](super).

use super::codec::{
    Fail, XorField, read_dod, read_uvarint, unzigzag, write_dod, write_uvarint, zigzag,
};
use super::lanes::{HistogramSample, Lane};
use super::layout::{Layout, LayoutRef, read_layout, write_layout};
use super::{
    BucketSide, CounterResetHint, HistogramChunkError, MAX_SAMPLES, ResetCause, STALE_NAN_BITS,
    hint_from_header_bits, hint_header_bits, span_buckets,
};
use crate::chunk::bstream::{BitReader, BitWriter};

/// Bytes of the header: sample count and flags.
const HEADER_LEN: usize = 3;
/// Position of the flags byte.
const FLAGS: usize = 2;
/// Set in the flags of float histogram chunks.
const FLOAT_FLAG: u8 = 0b0010_0000;
const RESERVED_FLAGS: u8 = 0b0001_1111;
/// Initial capacity of a new chunk: a histogram chunk of ~20 buckets runs to
/// a few hundred bytes within its first dozen samples.
const INITIAL_CAPACITY: usize = 256;

/// The encoder's state after the last sample, which is also the decoder's:
/// an appender continuing a chunk read from bytes decodes it to get this.
#[derive(Debug, Clone)]
struct State<L: Lane> {
    num: u16,
    /// The chunk's hint, from the header.
    hint: CounterResetHint,
    layout: Layout,
    /// Buckets the positive spans cover.
    positive: usize,
    t: i64,
    t_delta: i64,
    sum: XorField,
    lanes: Vec<L::Field>,
    /// Whether any sample has written the lanes (a leading staleness
    /// marker does not).
    lanes_started: bool,
    /// The last non-stale sample's count.
    last_count: u64,
    /// Whether the last sample is a staleness marker.
    stale: bool,
}

impl<L: Lane> State<L> {
    fn new(hint: CounterResetHint) -> State<L> {
        State {
            num: 0,
            hint,
            layout: Layout::default(),
            positive: 0,
            t: 0,
            t_delta: 0,
            sum: XorField::NEW,
            lanes: Vec::new(),
            lanes_started: false,
            last_count: 0,
            stale: false,
        }
    }

    /// Back to the state of an empty chunk, keeping allocations.
    fn reset(&mut self, hint: CounterResetHint) {
        let State {
            mut layout,
            mut lanes,
            ..
        } = std::mem::replace(self, State::new(hint));
        layout.clear();
        lanes.clear();
        self.layout = layout;
        self.lanes = lanes;
    }

    /// Sizes the lanes for the layout.
    fn start_layout(&mut self) {
        self.positive = span_buckets(&self.layout.positive_spans) as usize;
        let n = 2 + self.positive + span_buckets(&self.layout.negative_spans) as usize;
        self.lanes.clear();
        self.lanes.resize(n, L::NEW);
        self.lanes_started = false;
    }

    /// Whether a valid, non-stale sample may follow the samples so far.
    fn accepts(&self, s: &Input<'_>) -> Result<(), HistogramChunkError> {
        if self.stale {
            return Err(HistogramChunkError::AfterStaleMarker);
        }
        let gauge = self.hint == CounterResetHint::Gauge;
        if gauge != (s.hint == CounterResetHint::Gauge) {
            return Err(HistogramChunkError::GaugeMismatch {
                chunk_is_gauge: gauge,
            });
        }
        if !gauge {
            if s.hint == CounterResetHint::CounterReset {
                return Err(HistogramChunkError::CounterReset(ResetCause::Hint));
            }
            if L::decreased(s.count, self.last_count) {
                return Err(HistogramChunkError::CounterReset(ResetCause::Count));
            }
        }
        self.layout
            .compare(&s.layout)
            .map_err(HistogramChunkError::LayoutChanged)?;
        if !gauge {
            // The layouts match, so the lanes line up; lane 0 (the count
            // residual) is no counter.
            let mut lanes = self.lanes.iter().zip(s.lanes).enumerate().skip(1);
            if let Some((i, _)) = lanes.find(|(_, (f, v))| L::decreased(**v, L::value(f))) {
                let cause = match i - 1 {
                    0 => ResetCause::ZeroCount,
                    b if b <= self.positive => ResetCause::Bucket {
                        side: BucketSide::Positive,
                        index: b - 1,
                    },
                    b => ResetCause::Bucket {
                        side: BucketSide::Negative,
                        index: b - 1 - self.positive,
                    },
                };
                return Err(HistogramChunkError::CounterReset(cause));
            }
        }
        Ok(())
    }
}

/// A sample to append, taken apart.
struct Input<'a> {
    hint: CounterResetHint,
    layout: LayoutRef<'a>,
    sum: u64,
    count: u64,
    lanes: &'a [u64],
}

/// Appends one sample, or refuses it leaving everything unchanged.
fn append_sample<L: Lane>(
    w: &mut BitWriter,
    st: &mut State<L>,
    float: bool,
    t: i64,
    s: &Input<'_>,
) -> Result<(), HistogramChunkError> {
    let stale = s.sum == STALE_NAN_BITS;
    if st.num > 0 {
        if usize::from(st.num) >= MAX_SAMPLES {
            return Err(HistogramChunkError::Full);
        }
        if t <= st.t {
            return Err(HistogramChunkError::OutOfOrder {
                timestamp: t,
                last: st.t,
            });
        }
        if !stale {
            st.accepts(s)?;
        }
    }
    match st.num {
        0 => {
            st.hint = s.hint;
            w.bytes_mut()[FLAGS] = hint_header_bits(s.hint) | if float { FLOAT_FLAG } else { 0 };
            if stale {
                st.layout.clear();
            } else {
                st.layout.set(&s.layout);
            }
            st.start_layout();
            write_layout(w, &st.layout.as_ref());
            write_uvarint(w, zigzag(t));
        }
        1 => {
            st.t_delta = t.wrapping_sub(st.t);
            write_uvarint(w, st.t_delta as u64);
        }
        _ => {
            let delta = t.wrapping_sub(st.t);
            write_dod(w, delta.wrapping_sub(st.t_delta));
            st.t_delta = delta;
        }
    }
    st.sum.write(w, s.sum, st.num == 0);
    if !stale {
        let first = !st.lanes_started;
        for (f, &v) in st.lanes.iter_mut().zip(s.lanes) {
            L::write(f, w, v, first);
        }
        st.lanes_started = true;
        st.last_count = s.count;
    }
    st.stale = stale;
    st.t = t;
    st.num += 1;
    w.bytes_mut()[..2].copy_from_slice(&st.num.to_be_bytes());
    Ok(())
}

/// Checks the header of chunk `bytes` for a chunk of `H`; returns the
/// sample count and the hint.
fn read_header<H: HistogramSample>(
    bytes: &[u8],
) -> Result<(u16, CounterResetHint), HistogramChunkError> {
    let Some(&[hi, lo, flags]) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(HistogramChunkError::HeaderTooShort { len: bytes.len() });
    };
    if flags & RESERVED_FLAGS != 0 {
        return Err(HistogramChunkError::Corrupt {
            offset: FLAGS,
            reason: "reserved header bits are set",
        });
    }
    if (flags & FLOAT_FLAG != 0) != H::FLOAT {
        return Err(HistogramChunkError::WrongKind {
            chunk_is_float: !H::FLOAT,
        });
    }
    Ok((u16::from_be_bytes([hi, lo]), hint_from_header_bits(flags)))
}

/// A chunk of native histograms, owning its bytes: [`HistogramChunk`]
/// (integer counts) or [`FloatHistogramChunk`] (float counts).
///
/// [`HistogramChunk`]: super::HistogramChunk
/// [`FloatHistogramChunk`]: super::FloatHistogramChunk
#[derive(Debug, Clone)]
pub struct NativeChunk<H: HistogramSample> {
    stream: BitWriter,
    /// The appender's state; `None` until recovered for a chunk from bytes.
    state: Option<State<H::Lane>>,
    /// Lanes of the sample being appended.
    scratch: Vec<u64>,
}

impl<H: HistogramSample> Default for NativeChunk<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: HistogramSample> NativeChunk<H> {
    pub fn new() -> NativeChunk<H> {
        let mut bytes = Vec::with_capacity(INITIAL_CAPACITY);
        bytes.extend_from_slice(&[0, 0, if H::FLOAT { FLOAT_FLAG } else { 0 }]);
        NativeChunk {
            stream: BitWriter::from_vec(bytes),
            state: Some(State::new(CounterResetHint::Unknown)),
            scratch: Vec::new(),
        }
    }

    /// A chunk over encoded bytes (as from [`NativeChunk::bytes`]). Only the
    /// header is checked here; samples are decoded when read or appended to.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<NativeChunk<H>, HistogramChunkError> {
        read_header::<H>(&bytes)?;
        Ok(NativeChunk {
            stream: BitWriter::from_vec(bytes),
            state: None,
            scratch: Vec::new(),
        })
    }

    /// The encoded chunk: header, layout and samples, zero-padded to a
    /// whole byte.
    pub fn bytes(&self) -> &[u8] {
        self.stream.bytes()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.stream.into_bytes()
    }

    /// Bytes allocated for the encoded chunk.
    pub fn capacity(&self) -> usize {
        self.stream.capacity()
    }

    /// Heap bytes of the chunk and its appender's state (the layout, a
    /// field per lane and the lane scratch), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        let state = self.state.as_ref().map_or(0, |st| {
            st.lanes.capacity() * std::mem::size_of::<<H::Lane as Lane>::Field>()
                + (st.layout.positive_spans.capacity() + st.layout.negative_spans.capacity())
                    * std::mem::size_of::<super::Span>()
                + st.layout.custom_values.capacity() * std::mem::size_of::<f64>()
        });
        self.stream.capacity() + state + self.scratch.capacity() * std::mem::size_of::<u64>()
    }

    /// The sample count from the header.
    pub fn num_samples(&self) -> usize {
        let b = self.stream.bytes();
        usize::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The chunk's counter reset hint, from the header: its first sample's.
    pub fn counter_reset_hint(&self) -> CounterResetHint {
        hint_from_header_bits(self.stream.bytes()[FLAGS])
    }

    /// An appender that continues after the existing samples.
    ///
    /// O(1) for a chunk built with [`NativeChunk::new`]. For one from
    /// [`NativeChunk::from_bytes`] the first call decodes every sample to
    /// recover the encoder's state, drops any bytes after the last sample
    /// and keeps the state for later calls; if the samples do not decode,
    /// every `append` returns the decoding error and the chunk is left
    /// untouched.
    pub fn appender(&mut self) -> NativeAppender<'_, H> {
        let NativeChunk {
            stream,
            state,
            scratch,
        } = self;
        let state = match state {
            Some(state) => state,
            slot @ None => match recover::<H>(stream) {
                Ok(recovered) => slot.insert(recovered),
                Err(e) => return NativeAppender { inner: Err(e) },
            },
        };
        NativeAppender {
            inner: Ok((stream, state, scratch)),
        }
    }

    pub fn iter(&self) -> NativeIterator<'_, H> {
        NativeIterator::new(self.stream.bytes())
    }

    /// Timestamp of the first sample; `None` if the chunk is empty or the
    /// first sample does not decode.
    pub fn first_timestamp(&self) -> Option<i64> {
        self.iter().next().map(|(t, _)| t)
    }

    /// Timestamp of the last sample; `None` if the chunk is empty or any
    /// sample does not decode. O(1) once the appender state is known.
    pub fn last_timestamp(&self) -> Option<i64> {
        if let Some(st) = &self.state {
            return (st.num > 0).then_some(st.t);
        }
        let mut it = self.iter();
        while it.advance() {}
        if it.err.is_some() || it.st.num == 0 {
            return None;
        }
        Some(it.st.t)
    }
}

/// Decodes every sample of `stream` and returns the encoder state after the
/// last one, truncating `stream` right after it.
fn recover<H: HistogramSample>(
    stream: &mut BitWriter,
) -> Result<State<H::Lane>, HistogramChunkError> {
    let (mut st, end) = {
        let mut it = NativeIterator::<H>::new(stream.bytes());
        while it.advance() {}
        if let Some(e) = it.err {
            return Err(e);
        }
        let end = it.reader.bit_pos();
        (it.st, end)
    };
    st.last_count = <H::Lane as Lane>::count(&st.lanes);
    stream.truncate_bits(end);
    Ok(st)
}

/// Appends samples to a [`NativeChunk`]; see [`NativeChunk::appender`].
pub struct NativeAppender<'a, H: HistogramSample> {
    inner: Result<ChunkParts<'a, H::Lane>, HistogramChunkError>,
}

/// What an appender borrows of its chunk: bytes, state and scratch lanes.
type ChunkParts<'a, L> = (&'a mut BitWriter, &'a mut State<L>, &'a mut Vec<u64>);

impl<H: HistogramSample> NativeAppender<'_, H> {
    /// Appends histogram `h` at `t`, or refuses it and leaves the chunk
    /// unchanged.
    ///
    /// Refusals that mean "cut a new chunk and append there" (see
    /// [`HistogramChunkError::starts_new_chunk`]): [`Full`], [`LayoutChanged`],
    /// [`CounterReset`], [`GaugeMismatch`], [`AfterStaleMarker`]. Others are
    /// the sample's fault: [`OutOfOrder`] (timestamps must strictly
    /// increase) and [`Invalid`] (it fails `validate`). A staleness marker
    /// (sum [`STALE_NAN_BITS`]) is taken whatever its layout and hint.
    ///
    /// [`Full`]: HistogramChunkError::Full
    /// [`LayoutChanged`]: HistogramChunkError::LayoutChanged
    /// [`CounterReset`]: HistogramChunkError::CounterReset
    /// [`GaugeMismatch`]: HistogramChunkError::GaugeMismatch
    /// [`AfterStaleMarker`]: HistogramChunkError::AfterStaleMarker
    /// [`OutOfOrder`]: HistogramChunkError::OutOfOrder
    /// [`Invalid`]: HistogramChunkError::Invalid
    pub fn append(&mut self, t: i64, h: &H) -> Result<(), HistogramChunkError> {
        let (w, st, scratch) = match &mut self.inner {
            Ok((w, st, scratch)) => (&mut **w, &mut **st, &mut **scratch),
            Err(e) => return Err(e.clone()),
        };
        let sum = h.sum().to_bits();
        let stale = sum == STALE_NAN_BITS;
        if stale {
            scratch.clear();
        } else {
            h.check()?;
            h.lanes(scratch);
        }
        let input = Input {
            hint: h.hint(),
            layout: h.layout_ref(),
            sum,
            count: h.count_value(),
            lanes: scratch,
        };
        append_sample(w, st, H::FLOAT, t, &input)
    }
}

/// Reads the samples of an encoded histogram chunk, in order.
///
/// A lending iterator: [`NativeIterator::next`] returns a reference to a
/// histogram the iterator keeps and overwrites with the next sample, so
/// reading allocates nothing per sample (clone what you keep). Reusable
/// across chunks with [`NativeIterator::reset`]. Corrupt or truncated bytes
/// end the iteration early and are reported by [`NativeIterator::err`].
#[derive(Debug, Clone)]
pub struct NativeIterator<'a, H: HistogramSample> {
    reader: BitReader<'a>,
    total_bits: usize,
    total: u16,
    st: State<H::Lane>,
    /// The last non-stale sample, once filled.
    hist: H,
    /// What a staleness marker reads back as.
    stale: H,
    /// Whether the layout was read but not yet copied into `hist`.
    layout_fresh: bool,
    /// Whether the iterator is on a sample, filled in.
    current: bool,
    err: Option<HistogramChunkError>,
}

impl<'a, H: HistogramSample> NativeIterator<'a, H> {
    /// An iterator over the encoded chunk `bytes` (as from
    /// [`NativeChunk::bytes`]).
    pub fn new(bytes: &'a [u8]) -> NativeIterator<'a, H> {
        let mut stale = H::default();
        stale.set_sum(f64::from_bits(STALE_NAN_BITS));
        let mut it = NativeIterator {
            reader: BitReader::new(bytes, HEADER_LEN),
            total_bits: 0,
            total: 0,
            st: State::new(CounterResetHint::Unknown),
            hist: H::default(),
            stale,
            layout_fresh: false,
            current: false,
            err: None,
        };
        it.reset(bytes);
        it
    }

    /// Starts over on another chunk, reusing this iterator's allocations.
    pub fn reset(&mut self, bytes: &'a [u8]) {
        let (total, hint, err) = match read_header::<H>(bytes) {
            Ok((total, hint)) => (total, hint, None),
            Err(e) => (0, CounterResetHint::Unknown, Some(e)),
        };
        self.reader = BitReader::new(bytes, HEADER_LEN);
        self.total_bits = bytes.len() * 8;
        self.total = total;
        self.st.reset(hint);
        self.layout_fresh = false;
        self.current = false;
        self.err = err;
    }

    /// The sample count from the header.
    pub fn num_samples(&self) -> usize {
        usize::from(self.total)
    }

    /// The chunk's counter reset hint, from the header.
    pub fn counter_reset_hint(&self) -> CounterResetHint {
        self.st.hint
    }

    /// The next sample, or `None` at the end of the chunk or on corrupt
    /// bytes (then [`NativeIterator::err`] says which).
    #[allow(
        clippy::should_implement_trait,
        reason = "a lending iterator: the histogram is borrowed from the iterator"
    )]
    pub fn next(&mut self) -> Option<(i64, &H)> {
        if !self.advance() {
            return None;
        }
        self.fill();
        self.at()
    }

    /// Advances to the first sample with a timestamp at or after `t` and
    /// returns it. If the current sample already qualifies it stays put, so
    /// seeking never moves backwards. Histograms skipped over are decoded
    /// but not filled in.
    pub fn seek(&mut self, t: i64) -> Option<(i64, &H)> {
        if !(self.current && self.st.t >= t) {
            loop {
                if !self.advance() {
                    return None;
                }
                if self.st.t >= t {
                    break;
                }
            }
            self.fill();
        }
        self.at()
    }

    /// The sample the iterator is on, if any.
    pub fn at(&self) -> Option<(i64, &H)> {
        if !self.current {
            return None;
        }
        let h = if self.st.stale {
            &self.stale
        } else {
            &self.hist
        };
        Some((self.st.t, h))
    }

    /// Why iteration stopped before the header's sample count, if it did.
    pub fn err(&self) -> Option<&HistogramChunkError> {
        self.err.as_ref()
    }

    /// Decodes the next sample into the state, without filling in `hist`.
    fn advance(&mut self) -> bool {
        self.current = false;
        if self.st.num >= self.total || self.err.is_some() {
            return false;
        }
        let start = self.reader.bit_pos();
        let decoded = self.decode_fields();
        // Zeros read past the end can look like anything: truncation wins.
        let decoded = if self.reader.overrun() {
            Err(Fail::Truncated)
        } else {
            decoded
        };
        match decoded {
            Ok(()) => {
                self.st.num += 1;
                self.current = true;
                true
            }
            Err(fail) => {
                let offset = start / 8;
                self.err = Some(match fail {
                    Fail::Truncated => HistogramChunkError::Truncated { offset },
                    Fail::Corrupt(reason) => HistogramChunkError::Corrupt { offset, reason },
                    Fail::InvalidLayout(source) => {
                        HistogramChunkError::InvalidLayout { offset, source }
                    }
                });
                false
            }
        }
    }

    fn decode_fields(&mut self) -> Result<(), Fail> {
        let NativeIterator {
            reader: r,
            st,
            total_bits,
            layout_fresh,
            ..
        } = self;
        match st.num {
            0 => {
                read_layout(r, *total_bits, &mut st.layout)?;
                let buckets = span_buckets(&st.layout.positive_spans)
                    .saturating_add(span_buckets(&st.layout.negative_spans));
                // Every bucket of the first sample takes a bit or more:
                // never allocate for more than the data can hold.
                let left = total_bits.saturating_sub(r.bit_pos()) as u64;
                if buckets > left {
                    return Err(Fail::Truncated);
                }
                st.start_layout();
                *layout_fresh = true;
                st.t = unzigzag(read_uvarint(r)?);
            }
            1 => {
                st.t_delta = read_uvarint(r)? as i64;
                st.t = st.t.wrapping_add(st.t_delta);
            }
            _ => {
                st.t_delta = st.t_delta.wrapping_add(read_dod(r));
                st.t = st.t.wrapping_add(st.t_delta);
            }
        }
        st.stale = st.sum.read(r, st.num == 0)? == STALE_NAN_BITS;
        if !st.stale {
            let first = !st.lanes_started;
            for f in &mut st.lanes {
                <H::Lane as Lane>::read(f, r, first)?;
            }
            st.lanes_started = true;
        }
        Ok(())
    }

    /// Fills the histogram (or marker) returned for the current sample.
    fn fill(&mut self) {
        let hint = match (self.st.hint, self.st.num) {
            (CounterResetHint::Gauge, _) => CounterResetHint::Gauge,
            (hint, 1) => hint,
            _ => CounterResetHint::NotCounterReset,
        };
        if self.st.stale {
            self.stale.set_hint(hint);
            return;
        }
        if self.layout_fresh {
            self.hist.set_layout(&self.st.layout);
            self.layout_fresh = false;
        }
        self.hist.set_hint(hint);
        self.hist.set_values(self.st.sum.prev, &self.st.lanes);
    }
}
