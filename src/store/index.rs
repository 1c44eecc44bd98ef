//! The index's rows: how a series and its chunks are found again.
//!
//! Per tenant and bucket (a day by default), in the bucket's index table:
//!
//! | hash key                          | range key                 | value         | finds                          |
//! |-----------------------------------|---------------------------|---------------|--------------------------------|
//! | `T:B:m:h(metric)`                 | series id                 |               | the series of a metric         |
//! | `T:B:l:h(metric, label)`          | `len value`, series id    |               | a metric's series by label     |
//! | `T:B:g:h(label)`                  | `len value`, series id    |               | series by label, any metric    |
//! | `T:B:n`                           | label name                |               | label names                    |
//! | `T:B:s:<series id hex>`           | `l`                       | labels        | the series' labels             |
//! | `T:B:s:<series id hex>`           | chunk range key (`c`...)  | location      | its chunks, by `through`       |
//! | `:B:tenants`                      | `t` tenant                |               | the tenants with series in B   |
//! | `:B:tenants`                      | `c` tenant                | when (ms)     | compacted (see `compactor`)    |
//! | `:B:tenants`                      | `x` tenant 0 table 0 key  | when (ms)     | a pack the compactor retired   |
//!
//! `T` is the tenant, `B` the bucket number, `h` a 64-bit hash of
//! length-prefixed strings (so any metric or label name fits in a key), the
//! series id the 128-bit hash of the series' labels, `len value` the
//! value's length (4 bytes, big-endian) then its bytes, so an equality
//! matcher is a range-key prefix. A hash collision only ever adds
//! candidates: every series' labels are read back and matched against the
//! query's matchers before its chunks are used, and every chunk record
//! carries its series' labels.

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use super::backend::{IndexEntry, IndexQuery};
use super::chunk_ref::ChunkRef;
use super::pack::ChunkLocation;
use crate::model::{Label, Labels, METRIC_NAME};

/// A series' id in the index: the 128-bit hash of its labels.
pub type SeriesId = [u8; 16];

pub fn series_id(labels: &Labels) -> SeriesId {
    let mut h = Xxh3::new();
    for l in labels.iter() {
        h.update(&(l.name.len() as u32).to_be_bytes());
        h.update(l.name.as_bytes());
        h.update(&(l.value.len() as u32).to_be_bytes());
        h.update(l.value.as_bytes());
    }
    h.digest128().to_be_bytes()
}

fn hash_strs(parts: &[&str]) -> u64 {
    let mut buf = Vec::new();
    for p in parts {
        buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
        buf.extend_from_slice(p.as_bytes());
    }
    xxh3_64(&buf)
}

pub fn metric_key(tenant: &str, bucket: i64, metric: &str) -> String {
    format!("{tenant}:{bucket}:m:{:016x}", hash_strs(&[metric]))
}

pub fn label_key(tenant: &str, bucket: i64, metric: &str, name: &str) -> String {
    format!("{tenant}:{bucket}:l:{:016x}", hash_strs(&[metric, name]))
}

pub fn global_label_key(tenant: &str, bucket: i64, name: &str) -> String {
    format!("{tenant}:{bucket}:g:{:016x}", hash_strs(&[name]))
}

pub fn names_key(tenant: &str, bucket: i64) -> String {
    format!("{tenant}:{bucket}:n")
}

pub fn series_key(tenant: &str, bucket: i64, id: &SeriesId) -> String {
    let mut s = format!("{tenant}:{bucket}:s:");
    for b in id {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The partition of a bucket's bookkeeping, shared by its tenants (no
/// tenant id has a `:`, so no tenant's key starts with one).
pub fn bucket_key(bucket: i64) -> String {
    format!(":{bucket}:tenants")
}

/// Range-key tags in [`bucket_key`]'s partition.
pub const TENANT_TAG: u8 = b't';
pub const COMPACTED_TAG: u8 = b'c';
pub const RETIRED_TAG: u8 = b'x';

fn tagged(tag: u8, tenant: &str) -> Vec<u8> {
    let mut r = Vec::with_capacity(1 + tenant.len());
    r.push(tag);
    r.extend_from_slice(tenant.as_bytes());
    r
}

/// The row saying `tenant` has series in `bucket`.
pub fn tenant_entry(tenant: &str, bucket: i64) -> IndexEntry {
    IndexEntry {
        hash: bucket_key(bucket),
        range: tagged(TENANT_TAG, tenant),
        value: Vec::new(),
    }
}

/// The range key of the row saying the compactor finished `tenant`'s part
/// of a bucket.
pub fn compacted_range(tenant: &str) -> Vec<u8> {
    tagged(COMPACTED_TAG, tenant)
}

/// The range key of a pack the compactor retired: deleted once its grace
/// period is over.
pub fn retired_range(tenant: &str, table: &str, key: &str) -> Vec<u8> {
    let mut r = tagged(RETIRED_TAG, tenant);
    r.push(0);
    r.extend_from_slice(table.as_bytes());
    r.push(0);
    r.extend_from_slice(key.as_bytes());
    r
}

/// What a row of [`bucket_key`]'s partition says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketRow {
    Tenant(String),
    Compacted(String),
    Retired {
        tenant: String,
        table: String,
        key: String,
    },
}

pub fn parse_bucket_row(range: &[u8]) -> Option<BucketRow> {
    let (&tag, rest) = range.split_first()?;
    let rest = std::str::from_utf8(rest).ok()?;
    match tag {
        TENANT_TAG => Some(BucketRow::Tenant(rest.to_string())),
        COMPACTED_TAG => Some(BucketRow::Compacted(rest.to_string())),
        RETIRED_TAG => {
            let mut parts = rest.splitn(3, '\0');
            let (tenant, table, key) = (parts.next()?, parts.next()?, parts.next()?);
            Some(BucketRow::Retired {
                tenant: tenant.to_string(),
                table: table.to_string(),
                key: key.to_string(),
            })
        }
        _ => None,
    }
}

/// The range key of the labels row in a series' partition.
pub const LABELS_RANGE: &[u8] = b"l";

/// `len value` — the range-key prefix of a label value.
pub fn value_prefix(value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + value.len() + 16);
    k.extend_from_slice(&(value.len() as u32).to_be_bytes());
    k.extend_from_slice(value.as_bytes());
    k
}

/// Splits a label row's range key into value and series id.
pub fn split_value_range(range: &[u8]) -> Option<(&str, SeriesId)> {
    let n = u32::from_be_bytes(range.get(..4)?.try_into().ok()?) as usize;
    let value = std::str::from_utf8(range.get(4..4 + n)?).ok()?;
    let id: SeriesId = range.get(4 + n..)?.try_into().ok()?;
    Some((value, id))
}

pub fn encode_labels(labels: &Labels) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(labels.len() as u16).to_be_bytes());
    for l in labels.iter() {
        out.extend_from_slice(&(l.name.len() as u32).to_be_bytes());
        out.extend_from_slice(l.name.as_bytes());
        out.extend_from_slice(&(l.value.len() as u32).to_be_bytes());
        out.extend_from_slice(l.value.as_bytes());
    }
    out
}

pub fn decode_labels(b: &[u8]) -> Option<Labels> {
    let mut at = 2;
    let count = u16::from_be_bytes(b.get(..2)?.try_into().ok()?) as usize;
    let take = |at: &mut usize| -> Option<String> {
        let n = u32::from_be_bytes(b.get(*at..*at + 4)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(b.get(*at + 4..*at + 4 + n)?).ok()?;
        *at += 4 + n;
        Some(s.to_string())
    };
    let mut labels = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take(&mut at)?;
        let value = take(&mut at)?;
        labels.push(Label { name, value });
    }
    (at == b.len()).then(|| Labels::from_sorted(labels))
}

/// Tag of the compact location encoding: the pack's content hash, offset
/// and length. The table and the tenant part of the key are not stored:
/// the reader knows the tenant and derives the table from the chunk's
/// `from` through the schema, as the writer did.
const COMPACT_LOCATION: u8 = 0xff;

pub(super) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn get_uvarint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The pack hash of a key `tenant/<32 hex digits>`, if it is one.
fn pack_hash(key: &str) -> Option<u128> {
    let (_, hex) = key.rsplit_once('/')?;
    (hex.len() == 32).then(|| u128::from_str_radix(hex, 16).ok())?
}

pub fn encode_location(loc: &ChunkLocation) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    if let Some(hash) = pack_hash(&loc.key) {
        out.push(COMPACT_LOCATION);
        out.extend_from_slice(&hash.to_be_bytes());
        put_uvarint(&mut out, loc.offset);
        put_uvarint(&mut out, u64::from(loc.len));
        return out;
    }
    out.extend_from_slice(&(loc.table.len() as u16).to_be_bytes());
    out.extend_from_slice(loc.table.as_bytes());
    out.extend_from_slice(&(loc.key.len() as u16).to_be_bytes());
    out.extend_from_slice(loc.key.as_bytes());
    out.extend_from_slice(&loc.offset.to_be_bytes());
    out.extend_from_slice(&loc.len.to_be_bytes());
    out
}

/// Decodes a location; `tenant` and `table` complete a compact one.
pub fn decode_location(b: &[u8], tenant: &str, table: &str) -> Option<ChunkLocation> {
    if b.first() == Some(&COMPACT_LOCATION) {
        let hash = u128::from_be_bytes(b.get(1..17)?.try_into().ok()?);
        let mut at = 17;
        let offset = get_uvarint(b, &mut at)?;
        let len = u32::try_from(get_uvarint(b, &mut at)?).ok()?;
        return (at == b.len()).then(|| ChunkLocation {
            table: table.to_string(),
            key: super::pack::pack_key(tenant, hash),
            offset,
            len,
        });
    }
    let n = u16::from_be_bytes(b.get(..2)?.try_into().ok()?) as usize;
    let table = std::str::from_utf8(b.get(2..2 + n)?).ok()?.to_string();
    let at = 2 + n;
    let m = u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(b.get(at + 2..at + 2 + m)?)
        .ok()?
        .to_string();
    let at = at + 2 + m;
    let offset = u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?);
    let len = u32::from_be_bytes(b.get(at + 8..at + 12)?.try_into().ok()?);
    (b.len() == at + 12).then_some(ChunkLocation {
        table,
        key,
        offset,
        len,
    })
}

/// The rows that make a series findable in one bucket (without its
/// chunks): written once per series and bucket.
pub fn series_entries(tenant: &str, bucket: i64, labels: &Labels, out: &mut Vec<IndexEntry>) {
    let id = series_id(labels);
    let metric = labels.metric_name().unwrap_or("");
    let row = |hash: String, range: Vec<u8>| IndexEntry {
        hash,
        range,
        value: Vec::new(),
    };
    out.push(row(metric_key(tenant, bucket, metric), id.to_vec()));
    for l in labels.iter() {
        let mut range = value_prefix(&l.value);
        range.extend_from_slice(&id);
        if l.name != METRIC_NAME {
            out.push(row(
                label_key(tenant, bucket, metric, &l.name),
                range.clone(),
            ));
        }
        out.push(row(global_label_key(tenant, bucket, &l.name), range));
        out.push(row(names_key(tenant, bucket), l.name.as_bytes().to_vec()));
    }
    out.push(IndexEntry {
        hash: series_key(tenant, bucket, &id),
        range: LABELS_RANGE.to_vec(),
        value: encode_labels(labels),
    });
}

/// The row of one chunk of a series in one bucket.
pub fn chunk_entry(
    tenant: &str,
    bucket: i64,
    id: &SeriesId,
    chunk: &ChunkRef,
    loc: &ChunkLocation,
) -> IndexEntry {
    IndexEntry {
        hash: series_key(tenant, bucket, id),
        range: chunk.range_key(),
        value: encode_location(loc),
    }
}

/// The query reading a series' labels and its chunks ending at or after
/// `mint` (the labels row sorts after every chunk row).
pub fn series_query(tenant: &str, bucket: i64, id: &SeriesId, mint: i64) -> IndexQuery {
    IndexQuery {
        hash: series_key(tenant, bucket, id),
        range_prefix: Vec::new(),
        range_start: Some(ChunkRef::range_start(mint)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chunk_ref::ChunkEncoding;

    #[test]
    fn encodings_round_trip() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a:b"), ("ünï", "")]);
        assert_eq!(decode_labels(&encode_labels(&labels)), Some(labels.clone()));
        assert_eq!(decode_labels(&encode_labels(&labels)[1..]), None);
        let loc = ChunkLocation {
            table: "chunks_2900".to_string(),
            key: "t/00ff".to_string(),
            offset: 1 << 40,
            len: 77,
        };
        assert_eq!(decode_location(&encode_location(&loc), "t", "x"), Some(loc));
        let compact = ChunkLocation {
            table: "chunks_2900".to_string(),
            key: crate::store::pack::pack_key("team-a", 0xfeed_u128 << 64),
            offset: 123_456,
            len: 300,
        };
        let bytes = encode_location(&compact);
        assert!(bytes.len() <= 22, "{} bytes", bytes.len());
        assert_eq!(
            decode_location(&bytes, "team-a", "chunks_2900"),
            Some(compact)
        );
        assert_eq!(
            decode_location(&bytes[..bytes.len() - 1], "team-a", "x"),
            None
        );
        for row in [
            BucketRow::Tenant("team-a".to_string()),
            BucketRow::Compacted("team-a".to_string()),
            BucketRow::Retired {
                tenant: "team-a".to_string(),
                table: "chunks_2900".to_string(),
                key: "team-a/00ff".to_string(),
            },
        ] {
            let range = match &row {
                BucketRow::Tenant(t) => tenant_entry(t, 3).range,
                BucketRow::Compacted(t) => compacted_range(t),
                BucketRow::Retired { tenant, table, key } => retired_range(tenant, table, key),
            };
            assert_eq!(parse_bucket_row(&range), Some(row));
        }
        assert_eq!(parse_bucket_row(b"q"), None);
        let mut r = value_prefix("v:1");
        r.extend_from_slice(&series_id(&labels));
        assert_eq!(split_value_range(&r), Some(("v:1", series_id(&labels))));
    }

    #[test]
    fn series_rows_cover_every_lookup() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let mut rows = Vec::new();
        series_entries("t", 5, &labels, &mut rows);
        let id = series_id(&labels);
        let hashes: Vec<&str> = rows.iter().map(|r| r.hash.as_str()).collect();
        assert!(hashes.contains(&metric_key("t", 5, "up").as_str()));
        assert!(hashes.contains(&label_key("t", 5, "up", "job").as_str()));
        assert!(hashes.contains(&global_label_key("t", 5, "job").as_str()));
        assert!(hashes.contains(&global_label_key("t", 5, "__name__").as_str()));
        assert!(hashes.contains(&series_key("t", 5, &id).as_str()));
        // Other tenants and buckets have other keys.
        assert_ne!(metric_key("t", 5, "up"), metric_key("u", 5, "up"));
        assert_ne!(metric_key("t", 5, "up"), metric_key("t", 6, "up"));
        let chunk = ChunkRef {
            fingerprint: 1,
            from: 10,
            through: 20,
            checksum: 3,
            encoding: ChunkEncoding::Xor,
        };
        let q = series_query("t", 5, &id, 15);
        assert!(q.matches(&chunk.range_key()));
        assert!(q.matches(LABELS_RANGE));
        assert!(!series_query("t", 5, &id, 21).matches(&chunk.range_key()));
    }
}
