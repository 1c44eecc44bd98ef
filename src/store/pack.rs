//! Chunk packs: many chunks in one object, so that a flush costs one
//! object-store request per few megabytes rather than one per chunk.
//!
//! A pack is immutable and named after its content (see [`pack_key`]), so
//! writing it again — a retried flush — writes the same bytes under the
//! same name. Each chunk is a self-contained record: a reader fetches just
//! its byte range (from the index's [`ChunkLocation`]), or one range
//! holding several records, and verifies each.
//!
//! ```text
//! pack:    ┌──────────────┬──────────┬──────────┬─────┐
//!          │ "STRPACK1"   │ record 0 │ record 1 │ ... │
//!          └──────────────┴──────────┴──────────┴─────┘
//! record:  ┌───────────┬──────────┬────────────┬─────────────────────┬──────────────┬────────┬────────────┬──────────────┬──────────────┐
//!          │ magic 0xC8│ fp <8 B> │ from <var> │ through - from <uv> │ encoding <1B>│ labels │ len <uv>   │ data <len B> │ crc32c <4 B> │
//!          └───────────┴──────────┴────────────┴─────────────────────┴──────────────┴────────┴────────────┴──────────────┴──────────────┘
//! labels:  count <uv>, then count × (name len <uv>, name, value len <uv>, value)
//! ```
//!
//! `<var>` is a zigzag varint, `<uv>` an unsigned varint (LEB128); the
//! fingerprint, CRC and the magic are big-endian fixed fields. Records of the
//! first layout (magic 0xC7: every integer fixed-size, big-endian, label
//! name lengths in 2 bytes and value lengths in 4) are still read. The CRC32C covers every byte of the record
//! before it; the chunk's checksum (in its [`ChunkRef`]) is the CRC32C of
//! `data` alone. A reader checks both, and that the record's labels are the
//! series' labels: a fingerprint collision can never mix two series.

use xxhash_rust::xxh3::Xxh3;

use super::chunk_ref::{ChunkEncoding, ChunkRef};
use super::index::{get_uvarint, put_uvarint};
use crate::model::{Label, Labels};

pub const PACK_MAGIC: &[u8; 8] = b"STRPACK1";
/// The record layout written now.
const RECORD_MAGIC: u8 = 0xC8;
/// The first record layout, with fixed-size integers.
const RECORD_MAGIC_V1: u8 = 0xC7;

/// One chunk to store, with everything its record carries.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreChunk {
    pub labels: Labels,
    pub fingerprint: u64,
    pub from: i64,
    pub through: i64,
    pub encoding: ChunkEncoding,
    pub data: Vec<u8>,
}

impl StoreChunk {
    pub fn chunk_ref(&self) -> ChunkRef {
        ChunkRef {
            fingerprint: self.fingerprint,
            from: self.from,
            through: self.through,
            checksum: crc32c::crc32c(&self.data),
            encoding: self.encoding,
        }
    }
}

/// Where a chunk's record lies in its pack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChunkLocation {
    /// The chunk table (Cassandra) or key prefix the pack is stored under.
    pub table: String,
    pub key: String,
    pub offset: u64,
    pub len: u32,
}

/// A pack being built: its bytes and where each chunk went.
pub struct PackBuilder {
    bytes: Vec<u8>,
    hasher: Xxh3,
    entries: Vec<(ChunkRef, u64, u32)>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        PackBuilder::new()
    }
}

impl PackBuilder {
    pub fn new() -> PackBuilder {
        let mut bytes = Vec::with_capacity(1 << 16);
        bytes.extend_from_slice(PACK_MAGIC);
        PackBuilder {
            bytes,
            hasher: Xxh3::new(),
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a chunk's record and returns its reference.
    pub fn add(&mut self, chunk: &StoreChunk) -> ChunkRef {
        let chunk_ref = chunk.chunk_ref();
        let offset = self.bytes.len();
        encode_record(&mut self.bytes, chunk);
        let len = (self.bytes.len() - offset) as u32;
        self.hasher.update(&self.bytes[offset..]);
        self.entries.push((chunk_ref.clone(), offset as u64, len));
        chunk_ref
    }

    /// The pack's bytes, its content-derived key under `tenant`, and each
    /// chunk's reference and location.
    pub fn finish(
        self,
        tenant: &str,
        table: &str,
    ) -> (String, Vec<u8>, Vec<(ChunkRef, ChunkLocation)>) {
        let key = pack_key(tenant, self.hasher.digest128());
        let located = self
            .entries
            .into_iter()
            .map(|(r, offset, len)| {
                (
                    r,
                    ChunkLocation {
                        table: table.to_string(),
                        key: key.clone(),
                        offset,
                        len,
                    },
                )
            })
            .collect();
        (key, self.bytes, located)
    }
}

/// A pack's object key: the tenant, then the content hash.
pub fn pack_key(tenant: &str, hash: u128) -> String {
    format!("{tenant}/{hash:032x}")
}

fn encode_record(out: &mut Vec<u8>, c: &StoreChunk) {
    let start = out.len();
    out.push(RECORD_MAGIC);
    out.extend_from_slice(&c.fingerprint.to_be_bytes());
    put_uvarint(out, ((c.from << 1) ^ (c.from >> 63)) as u64);
    put_uvarint(out, c.through.wrapping_sub(c.from) as u64);
    out.push(c.encoding as u8);
    put_uvarint(out, c.labels.len() as u64);
    for l in c.labels.iter() {
        put_uvarint(out, l.name.len() as u64);
        out.extend_from_slice(l.name.as_bytes());
        put_uvarint(out, l.value.len() as u64);
        out.extend_from_slice(l.value.as_bytes());
    }
    put_uvarint(out, c.data.len() as u64);
    out.extend_from_slice(&c.data);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Why a record read back from a pack is not the chunk it should be.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("chunk record truncated at byte {0}")]
    Truncated(usize),
    #[error("chunk record has a bad magic byte {0:#x}")]
    BadMagic(u8),
    #[error("chunk record checksum mismatch (corrupt object)")]
    RecordChecksum,
    #[error("chunk record has an unknown encoding {0}")]
    UnknownEncoding(u8),
    #[error("chunk record label is not UTF-8")]
    BadLabel,
    #[error("chunk record labels are not sorted by name, each name once")]
    UnsortedLabels,
    #[error("chunk record is not the chunk referenced: {0}")]
    Mismatch(&'static str),
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(RecordError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let at = self.at;
        get_uvarint(self.b, &mut self.at).ok_or(RecordError::Truncated(at))
    }

    fn len(&mut self) -> Result<usize, RecordError> {
        let at = self.at;
        let n = self.uvarint()?;
        // A length past the record's end is a truncation, whatever it says.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.b.len())
            .ok_or(RecordError::Truncated(at))
    }

    fn string(&mut self, n: usize) -> Result<String, RecordError> {
        std::str::from_utf8(self.take(n)?)
            .map(str::to_string)
            .map_err(|_| RecordError::BadLabel)
    }
}

/// Decodes one record (exactly the bytes of a [`ChunkLocation`]).
pub fn decode_record(bytes: &[u8]) -> Result<StoreChunk, RecordError> {
    if bytes.len() < 4 {
        return Err(RecordError::Truncated(0));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let want = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != want {
        return Err(RecordError::RecordChecksum);
    }
    let mut c = Cursor { b: body, at: 0 };
    let chunk = parse_record(&mut c)?;
    if c.at != body.len() {
        return Err(RecordError::Mismatch("trailing bytes after the chunk data"));
    }
    Ok(chunk)
}

/// Every record of a whole pack: its offset, its length and its chunk.
pub fn decode_pack(pack: &[u8]) -> Result<Vec<(u64, u32, StoreChunk)>, RecordError> {
    if !pack.starts_with(PACK_MAGIC) {
        return Err(RecordError::Mismatch("not a pack"));
    }
    let mut out = Vec::new();
    let mut at = PACK_MAGIC.len();
    while at < pack.len() {
        // The record's fields say where its data ends; its CRC follows.
        let mut c = Cursor {
            b: &pack[at..],
            at: 0,
        };
        parse_record(&mut c).map_err(|e| match e {
            RecordError::Truncated(n) => RecordError::Truncated(at + n),
            e => e,
        })?;
        let len = c.at + 4;
        let record = pack
            .get(at..at + len)
            .ok_or(RecordError::Truncated(at + c.at))?;
        out.push((at as u64, len as u32, decode_record(record)?));
        at += len;
    }
    Ok(out)
}

/// Reads a record's fields, up to the end of its chunk data.
fn parse_record(c: &mut Cursor<'_>) -> Result<StoreChunk, RecordError> {
    let [magic] = c.array::<1>()?;
    let v1 = match magic {
        RECORD_MAGIC => false,
        RECORD_MAGIC_V1 => true,
        other => return Err(RecordError::BadMagic(other)),
    };
    let fingerprint = u64::from_be_bytes(c.array()?);
    let (from, through) = if v1 {
        (
            i64::from_be_bytes(c.array()?),
            i64::from_be_bytes(c.array()?),
        )
    } else {
        let z = c.uvarint()?;
        let from = ((z >> 1) as i64) ^ -((z & 1) as i64);
        (from, from.wrapping_add(c.uvarint()? as i64))
    };
    let [enc] = c.array::<1>()?;
    let encoding = ChunkEncoding::from_u8(enc).ok_or(RecordError::UnknownEncoding(enc))?;
    let count = if v1 {
        u16::from_be_bytes(c.array()?) as usize
    } else {
        c.len()?
    };
    let mut labels = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let n = if v1 {
            u16::from_be_bytes(c.array()?) as usize
        } else {
            c.len()?
        };
        let name = c.string(n)?;
        let n = if v1 {
            u32::from_be_bytes(c.array()?) as usize
        } else {
            c.len()?
        };
        let value = c.string(n)?;
        labels.push(Label { name, value });
    }
    let n = if v1 {
        u32::from_be_bytes(c.array()?) as usize
    } else {
        c.len()?
    };
    let data = c.take(n)?.to_vec();
    if labels.windows(2).any(|w| w[0].name >= w[1].name) {
        return Err(RecordError::UnsortedLabels);
    }
    Ok(StoreChunk {
        labels: Labels::from_sorted(labels),
        fingerprint,
        from,
        through,
        encoding,
        data,
    })
}

/// Decodes a record and checks it is the chunk `want` of the series
/// `labels`.
pub fn verify_record(
    bytes: &[u8],
    want: &ChunkRef,
    labels: &Labels,
) -> Result<StoreChunk, RecordError> {
    let chunk = decode_record(bytes)?;
    if chunk.fingerprint != want.fingerprint {
        return Err(RecordError::Mismatch("fingerprint"));
    }
    if chunk.from != want.from || chunk.through != want.through {
        return Err(RecordError::Mismatch("time range"));
    }
    if chunk.encoding != want.encoding {
        return Err(RecordError::Mismatch("encoding"));
    }
    if crc32c::crc32c(&chunk.data) != want.checksum {
        return Err(RecordError::Mismatch("chunk checksum"));
    }
    if &chunk.labels != labels {
        return Err(RecordError::Mismatch("series labels"));
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(name: &str, from: i64) -> StoreChunk {
        StoreChunk {
            labels: Labels::from_pairs([("__name__", name), ("job", "j")]),
            fingerprint: 42,
            from,
            through: from + 100,
            encoding: ChunkEncoding::Xor,
            data: vec![1, 2, 3, from as u8],
        }
    }

    #[test]
    fn records_round_trip_at_their_locations() {
        let mut b = PackBuilder::new();
        let a = chunk("a", 1);
        let c = chunk("c", 2);
        let ra = b.add(&a);
        let rc = b.add(&c);
        let (key, bytes, located) = b.finish("tenant-1", "chunks_1");
        assert!(key.starts_with("tenant-1/"));
        assert!(bytes.starts_with(PACK_MAGIC));
        assert_eq!(located.len(), 2);
        for ((r, loc), (want, want_ref)) in located.iter().zip([(&a, &ra), (&c, &rc)]) {
            assert_eq!(r, want_ref);
            let rec = &bytes[loc.offset as usize..loc.offset as usize + loc.len as usize];
            assert_eq!(&verify_record(rec, r, &want.labels).expect("valid"), want);
        }
    }

    /// A record as the first layout wrote it.
    fn encode_record_v1(c: &StoreChunk) -> Vec<u8> {
        let mut out = vec![RECORD_MAGIC_V1];
        out.extend_from_slice(&c.fingerprint.to_be_bytes());
        out.extend_from_slice(&c.from.to_be_bytes());
        out.extend_from_slice(&c.through.to_be_bytes());
        out.push(c.encoding as u8);
        out.extend_from_slice(&(c.labels.len() as u16).to_be_bytes());
        for l in c.labels.iter() {
            out.extend_from_slice(&(l.name.len() as u16).to_be_bytes());
            out.extend_from_slice(l.name.as_bytes());
            out.extend_from_slice(&(l.value.len() as u32).to_be_bytes());
            out.extend_from_slice(l.value.as_bytes());
        }
        out.extend_from_slice(&(c.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&c.data);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn first_layout_records_still_read() {
        let a = chunk("a", -5);
        let v1 = encode_record_v1(&a);
        assert_eq!(decode_record(&v1).expect("v1 decodes"), a);
        let mut v2 = Vec::new();
        encode_record(&mut v2, &a);
        assert_eq!(decode_record(&v2).expect("v2 decodes"), a);
        // Fixed-size integers become varints: 26 bytes less for two labels.
        assert_eq!(v1.len() - v2.len(), 26);
    }

    #[test]
    fn extreme_time_ranges_round_trip() {
        let mut c = chunk("a", 0);
        (c.from, c.through) = (i64::MIN, i64::MAX);
        let mut v2 = Vec::new();
        encode_record(&mut v2, &c);
        assert_eq!(decode_record(&v2).expect("decodes"), c);
        for cut in 0..v2.len() {
            assert!(decode_record(&v2[..cut]).is_err());
        }
    }

    #[test]
    fn whole_packs_decode_record_by_record() {
        let mut b = PackBuilder::new();
        let chunks = [chunk("a", 1), chunk("b", -7), chunk("c", 1 << 40)];
        for c in &chunks {
            b.add(c);
        }
        let (_, bytes, located) = b.finish("t", "x");
        let records = decode_pack(&bytes).expect("decodes");
        assert_eq!(records.len(), 3);
        for ((offset, len, got), ((_, loc), want)) in
            records.iter().zip(located.iter().zip(&chunks))
        {
            assert_eq!((*offset, *len), (loc.offset, loc.len));
            assert_eq!(got, want);
        }
        for cut in PACK_MAGIC.len() + 1..bytes.len() {
            let boundary = located
                .iter()
                .any(|(_, l)| (l.offset + u64::from(l.len)) as usize == cut);
            assert_eq!(
                decode_pack(&bytes[..cut]).is_err(),
                !boundary,
                "cut at {cut}"
            );
        }
        let mut bad = bytes.clone();
        bad[PACK_MAGIC.len() + 3] ^= 1;
        assert!(decode_pack(&bad).is_err());
        assert!(decode_pack(b"nothing").is_err());
        assert_eq!(decode_pack(PACK_MAGIC).expect("empty pack"), vec![]);
    }

    #[test]
    fn records_with_unsorted_labels_are_refused() {
        let mut r = vec![RECORD_MAGIC];
        r.extend_from_slice(&7u64.to_be_bytes());
        r.extend_from_slice(&[2, 1, ChunkEncoding::Xor as u8, 2]);
        for (name, value) in [("b", "1"), ("a", "2")] {
            r.extend_from_slice(&[1, name.as_bytes()[0], 1, value.as_bytes()[0]]);
        }
        r.extend_from_slice(&[1, 9]);
        let crc = crc32c::crc32c(&r);
        r.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(decode_record(&r), Err(RecordError::UnsortedLabels));
        let mut pack = PACK_MAGIC.to_vec();
        pack.extend_from_slice(&r);
        assert_eq!(decode_pack(&pack), Err(RecordError::UnsortedLabels));
    }

    #[test]
    fn same_content_same_key() {
        let build = || {
            let mut b = PackBuilder::new();
            b.add(&chunk("a", 1));
            b.finish("t", "x").0
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn corruption_and_collisions_are_caught() {
        let mut b = PackBuilder::new();
        let a = chunk("a", 1);
        let r = b.add(&a);
        let (_, bytes, located) = b.finish("t", "x");
        let loc = &located[0].1;
        let rec = bytes[loc.offset as usize..].to_vec();
        let mut bad = rec.clone();
        bad[20] ^= 1;
        assert_eq!(
            verify_record(&bad, &r, &a.labels),
            Err(RecordError::RecordChecksum)
        );
        assert!(verify_record(&rec[..rec.len() - 3], &r, &a.labels).is_err());
        // Same fingerprint, other series: refused.
        let other = Labels::from_pairs([("__name__", "b"), ("job", "j")]);
        assert_eq!(
            verify_record(&rec, &r, &other),
            Err(RecordError::Mismatch("series labels"))
        );
    }
}
