//! The ingester's write-ahead log, in the spirit of Prometheus's
//! `tsdb/wlog` (the ideas are ported, the code is our own).
//!
//! The ingester logs every accepted batch here before it applies the batch
//! to its head ("log, then apply"): [`Wal::append`] resolves only once the
//! records are written (and, under [`FsyncPolicy::Always`], fsynced); if it
//! fails, the push fails and the head is not touched. On start the ingester
//! replays the log ([`Wal::replay`]) to rebuild its head, and from time to
//! time [`checkpoint`]s it so that replay stays short.
//!
//! Submodules, one concept each:
//! - `segment`: segment files, 32 KiB pages and how records are cut into
//!   fragments (writing and scanning one segment);
//! - `reader`: reading records in order across a checkpoint and segments,
//!   telling a torn tail from corruption, and [`repair`];
//! - `writer`: [`Wal`], its dedicated writer thread and group commit;
//! - `metrics`: [`WalMetrics`], counters for the ingester to register;
//! - `checkpoint`: [`checkpoint`];
//! - `records`: what the ingester writes in records (series, samples) and
//!   their binary encoding.
//!
//! # On-disk format
//!
//! A WAL is a directory:
//!
//! ```text
//! wal/
//! ├── checkpoint.00000002/      newest checkpoint: records kept from segments ..=2
//! │   └── 00000000              (a checkpoint is itself a directory of segments)
//! ├── checkpoint.00000005.tmp/  a checkpoint being written, or left by a crash:
//! │                             ignored by replay, removed by the next checkpoint
//! ├── 00000003                  segments, numbered without gaps (8 digits, decimal)
//! ├── 00000004
//! ├── 00000005                  the segment being written
//! └── lock                      held (flock) by the open Wal: one writer per directory
//! ```
//!
//! A segment is at most `segment_size` bytes (default 128 MiB, a multiple of
//! the page size) and is made of 32 KiB pages; only the last page of the
//! segment being written can be short. A record is cut into fragments, each
//! with a 7-byte header:
//!
//! ```text
//! ┌───────────┬──────────┬─────────────┬─────────────────┐
//! │ type <1b> │ len <2b> │ CRC32C <4b> │ data <len bytes>│
//! └───────────┴──────────┴─────────────┴─────────────────┘
//!
//! type    bits 0-2: 1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST; 0 is never a
//!         fragment: a zero byte where a header starts marks the zero
//!         padding that fills the rest of the page.
//!         bits 3-7: flags, all zero for now (bit 3 is kept for compressed
//!         data, as Prometheus uses it for snappy); a reader rejects a
//!         fragment with an unknown flag.
//! len     big-endian length of data; a fragment never crosses a page, so
//!         len <= 32768 - 7.
//! CRC32C  big-endian CRC-32C (Castagnoli) of data.
//! ```
//!
//! A record that fits in what is left of the page is one FULL fragment;
//! otherwise it is FIRST, MIDDLE..., LAST, each but the last filling its page
//! to the end. When 7 bytes or fewer are left in a page the writer fills them
//! with zeros and starts the next page:
//!
//! ```text
//!   page 0 (32 KiB)                       page 1 (32 KiB)
//! ┌──────┬──────┬────────────────────┐  ┌──────────┬──────┬────────┬──────┐
//! │ FULL │ FULL │ FIRST ............ │  │ LAST ... │ FULL │ 0 0 0 0│ ...  │
//! └──────┴──────┴────────────────────┘  └──────────┴──────┴────────┴──────┘
//!                                                          └ padding to the
//!                                                            end of the page
//! ```
//!
//! # Invariants
//!
//! - Records never cross segments: a record that does not fit in what is
//!   left of the segment starts a new one, so a segment always ends on a
//!   record boundary unless a write was cut short. A record larger than an
//!   empty segment can hold is refused ([`WalError::RecordTooLarge`]).
//! - Every page starts with a fragment header (or padding), so damage stays
//!   local to its page (our reader still stops there: it never skips).
//! - A finished segment (one the writer moved on from) is padded to a whole
//!   number of pages and, unless the policy is [`FsyncPolicy::Never`], was
//!   fsynced before any record was written to the next segment.
//! - [`Wal::open`] appends to a new segment after the last one, never to an
//!   existing file; it first cuts off a torn tail left by a crash in the last
//!   segment, so that what was torn never ends up in the middle of the log.
//! - A torn tail (a record cut short at the end of the last segment, with
//!   nothing but zeros after it) was never acknowledged under
//!   [`FsyncPolicy::Always`]; replay stops before it and reports it. (A
//!   last record damaged in place looks the same and is treated the same.)
//!   Anything else that does not parse is [`WalError::Corruption`], with the
//!   segment and byte offset; no record is ever skipped silently. [`repair`]
//!   cuts the log after the last good record on the caller's request.
//! - Replay reads the newest checkpoint, then the segments after it; the
//!   segments must follow each other without gaps.
//!
//! # Use from the ingester
//!
//! ```text
//! let mut reader = Wal::replay(dir)?;          // before opening the WAL
//! loop { match reader.next_record() { Ok(Some(r)) => apply(decode(r)?), Ok(None) => break,
//!        Err(WalError::Corruption { segment, .. }) => { repair(dir, segment)?; break } ... } }
//! let wal = Wal::open(dir, options)?;
//! wal.append(vec![series_record, samples_record]).await?;   // then apply to the head
//! ```

mod checkpoint;
mod metrics;
mod reader;
pub mod records;
mod segment;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use checkpoint::{CheckpointStats, checkpoint};
pub use metrics::WalMetrics;
pub use reader::{Reader, RecordPosition, RepairReport, TornTail, repair};
pub use segment::{
    DEFAULT_SEGMENT_SIZE, DirContents, HEADER_SIZE, PAGE_SIZE, list, max_record_len,
};
pub use writer::Wal;

/// How a [`Wal`] is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// The largest a segment file grows, in bytes: a positive multiple of
    /// [`PAGE_SIZE`]. Default 128 MiB.
    pub segment_size: usize,
    /// When written records are fsynced. Default [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            fsync: FsyncPolicy::Always,
        }
    }
}

/// When the writer fsyncs what it wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Fsync every group of appends before acknowledging it: an
    /// acknowledged record survives a crash of the machine.
    #[default]
    Always,
    /// Never fsync (not even finished segments); the kernel writes back when
    /// it likes. Acknowledged records survive a crash of the process only.
    Never,
    /// Acknowledge after the write; fsync at most this often while there is
    /// unsynced data, and when a segment is finished. A crash of the machine
    /// loses up to this much of acknowledged records.
    Interval(Duration),
}

/// Errors of the WAL.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WalError {
    /// A file system operation failed.
    #[error("WAL I/O error: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// A segment holds data that does not parse as records. Records before
    /// `offset` were read; [`repair`] cuts the log there.
    #[error("WAL segment {segment:08} is corrupt at byte {offset}: {reason}")]
    Corruption {
        segment: u32,
        offset: u64,
        reason: CorruptionReason,
    },
    /// A checkpoint holds data that does not parse as records. A checkpoint
    /// is fsynced before it is renamed into place, so this is damage, which
    /// [`repair`] cannot fix.
    #[error(
        "WAL checkpoint {checkpoint:08} is corrupt in its segment {segment:08} at byte {offset}: {reason}"
    )]
    CheckpointCorruption {
        checkpoint: u32,
        segment: u32,
        offset: u64,
        reason: CorruptionReason,
    },
    /// The segments on disk have a gap, so records are missing.
    #[error("WAL segment {missing:08} is missing (segments must follow each other without gaps)")]
    MissingSegment { missing: u32 },
    /// The segment named does not exist (or is covered by a checkpoint).
    #[error("WAL segment {segment:08} does not exist")]
    SegmentNotFound { segment: u32 },
    /// `repair` found nothing wrong in the segment named.
    #[error("WAL segment {segment:08} has no torn or corrupt record to cut")]
    NothingToRepair { segment: u32 },
    /// A record larger than an empty segment can hold.
    #[error(
        "WAL record of {len} bytes is larger than a segment of {segment_size} bytes holds ({max} bytes); raise the WAL segment_size"
    )]
    RecordTooLarge {
        len: usize,
        max: usize,
        segment_size: usize,
    },
    /// `segment_size` is not a positive multiple of the page size.
    #[error(
        "invalid WAL segment_size {segment_size}: must be a positive multiple of {PAGE_SIZE} bytes"
    )]
    InvalidSegmentSize { segment_size: usize },
    /// A checkpoint up to this segment (or a later one) already exists.
    #[error("WAL segment {up_to:08} is already covered by checkpoint {checkpoint:08}")]
    AlreadyCheckpointed { up_to: u32, checkpoint: u32 },
    /// Checkpointing must stop before the segment being written.
    #[error("cannot checkpoint up to WAL segment {up_to:08}: segment {active:08} is being written")]
    ActiveSegment { up_to: u32, active: u32 },
    /// An earlier write or fsync failed; what is on disk after it is
    /// unknown, so the WAL refuses further appends. Restart, replay, repair.
    #[error("the WAL refuses appends after an earlier failure: {cause}")]
    Poisoned { cause: Arc<WalError> },
    /// Another [`Wal`] (in this process or another) has the directory open.
    #[error("the WAL in {} is already open (its lock file is held)", dir.display())]
    Locked { dir: PathBuf },
    /// The WAL was closed, or its writer thread is gone.
    #[error("the WAL is closed")]
    Closed,
}

/// Why data in a segment does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CorruptionReason {
    #[error("checksum mismatch: header says {expected:#010x}, data has {actual:#010x}")]
    ChecksumMismatch { expected: u32, actual: u32 },
    #[error("unknown fragment type {0}")]
    UnknownFragmentType(u8),
    #[error("fragment has unknown flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("{found} fragment where {expected} was expected")]
    UnexpectedFragment {
        found: &'static str,
        expected: &'static str,
    },
    #[error("fragment of {len} bytes runs past the end of its page")]
    FragmentPastPage { len: usize },
    #[error("record cut short by the end of the segment")]
    Truncated,
    #[error("record cut short by page padding")]
    CutByPadding,
    #[error("non-zero byte in page padding")]
    NonZeroPadding,
}

pub(crate) fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io {
        op,
        path,
        source: Arc::new(source),
    }
}

impl Wal {
    /// A reader over every record in `dir`: the newest checkpoint, then the
    /// segments after it. Call before [`Wal::open`] (a torn tail is only
    /// recognised in the last segment).
    pub fn replay(dir: &Path) -> Result<Reader, WalError> {
        Reader::open(dir)
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::Path;

    use super::{Reader, RecordPosition, WalError};

    pub type Replayed = (Vec<(Vec<u8>, RecordPosition)>, Option<WalError>, Reader);

    /// Every record of `dir`, with where it was read, until the end or the
    /// first error; the error; the reader (to ask about a torn tail).
    pub fn read_all(dir: &Path) -> Replayed {
        let mut reader = match Reader::open(dir) {
            Ok(reader) => reader,
            Err(err) => panic!("opening a reader on {}: {err}", dir.display()),
        };
        let mut out = Vec::new();
        loop {
            match reader.next_record() {
                Ok(Some(rec)) => {
                    let rec = rec.to_vec();
                    let pos = reader.position().expect("a record was just read");
                    out.push((rec, pos));
                }
                Ok(None) => return (out, None, reader),
                Err(err) => return (out, Some(err), reader),
            }
        }
    }

    /// A record of `len` bytes whose content says which record it is.
    pub fn record(i: usize, len: usize) -> Vec<u8> {
        let seed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (0..len)
            .map(|j| {
                (seed
                    .wrapping_add(j as u64)
                    .wrapping_mul(0xBF58_476D_1CE4_E5B9)
                    >> 56) as u8
            })
            .collect()
    }
}
