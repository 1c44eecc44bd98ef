//! Reading records back in order, across the newest checkpoint and the
//! segments after it; telling a torn tail from corruption; and [`repair`].
//!
//! A torn tail is what a crash in the middle of a write leaves: the last
//! record of the last non-empty segment cut short (the file ends inside it,
//! or nothing but zeros follows the point where it stops parsing). The
//! reader stops before it and reports it through [`Reader::torn_tail`]; it
//! is not an error, since under [`FsyncPolicy::Always`](super::FsyncPolicy)
//! such a record was never acknowledged. Anything else that does not parse,
//! anywhere, is an error naming the segment and offset: the reader never
//! skips over it to reach later records. After an error or a torn tail the
//! reader returns nothing more.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::segment::{
    ScanError, ScanFailure, SegmentScanner, check_contiguous, checkpoint_path, list, lock_dir,
    rest_is_zero, segment_path, sync_dir,
};
use super::{CorruptionReason, WalError, io_error};

/// Where a record was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPosition {
    /// The checkpoint it was read from, or `None` for a WAL segment.
    pub checkpoint: Option<u32>,
    /// The segment (of the checkpoint, if any) it was read from.
    pub segment: u32,
    /// Offset of its first fragment in the segment.
    pub start: u64,
    /// Offset just after its last fragment.
    pub end: u64,
}

/// A record cut short at the end of the last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: u32,
    /// Where the torn record starts: every record before it was read.
    pub offset: u64,
    /// Bytes from `offset` to the end of the segment file.
    pub len: u64,
    pub reason: CorruptionReason,
}

/// What [`repair`] cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairReport {
    pub segment: u32,
    /// The segment's new length: the end of its last good record.
    pub truncated_at: u64,
    /// Bytes cut from the segment.
    pub bytes_cut: u64,
    /// Why the data after `truncated_at` did not parse.
    pub reason: CorruptionReason,
    /// Later segments deleted, ascending.
    pub deleted_segments: Vec<u32>,
    /// Bytes in the deleted segments.
    pub deleted_bytes: u64,
}

struct Source {
    path: PathBuf,
    checkpoint: Option<u32>,
    segment: u32,
    /// This is the last non-empty WAL segment, where a torn tail is expected
    /// after a crash.
    may_be_torn: bool,
}

/// Reads records in order. Records are returned as slices of a buffer the
/// reader reuses; copy what must outlive the next call.
pub struct Reader {
    sources: VecDeque<Source>,
    current: Option<(Source, SegmentScanner)>,
    rec: Vec<u8>,
    position: Option<RecordPosition>,
    torn_tail: Option<TornTail>,
    checkpoint: Option<u32>,
    done: bool,
}

impl Reader {
    /// A reader over the newest checkpoint of `dir` and the segments after
    /// it. Fails at once if the segments have a gap.
    pub fn open(dir: &Path) -> Result<Reader, WalError> {
        let contents = list(dir)?;
        contents.check_contiguous()?;
        let checkpoint = contents.checkpoint();
        let mut sources = checkpoint_sources(dir, checkpoint)?;
        let live = contents.live_segments();
        let last_non_empty = live
            .iter()
            .rev()
            .find(|&&(_, len)| len > 0)
            .map(|&(s, _)| s);
        sources.extend(live.iter().map(|&(segment, _)| Source {
            path: segment_path(dir, segment),
            checkpoint: None,
            segment,
            may_be_torn: Some(segment) == last_non_empty,
        }));
        Ok(Reader::new(sources, checkpoint))
    }

    /// A reader over the newest checkpoint of `dir` and `segments`, none of
    /// which may be torn (checkpointing reads only finished segments).
    pub(crate) fn for_segments(
        dir: &Path,
        checkpoint: Option<u32>,
        segments: &[u32],
    ) -> Result<Reader, WalError> {
        let mut sources = checkpoint_sources(dir, checkpoint)?;
        sources.extend(segments.iter().map(|&segment| Source {
            path: segment_path(dir, segment),
            checkpoint: None,
            segment,
            may_be_torn: false,
        }));
        Ok(Reader::new(sources, checkpoint))
    }

    fn new(sources: VecDeque<Source>, checkpoint: Option<u32>) -> Reader {
        Reader {
            sources,
            current: None,
            rec: Vec::new(),
            position: None,
            torn_tail: None,
            checkpoint,
            done: false,
        }
    }

    /// The checkpoint replay starts from, if any.
    pub fn checkpoint(&self) -> Option<u32> {
        self.checkpoint
    }

    /// The next record, or `None` at the end (or after a torn tail, or after
    /// an error was returned).
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, WalError> {
        if self.done {
            return Ok(None);
        }
        loop {
            if self.current.is_none() {
                let Some(source) = self.sources.pop_front() else {
                    self.done = true;
                    return Ok(None);
                };
                match SegmentScanner::open(&source.path) {
                    Ok(scanner) => self.current = Some((source, scanner)),
                    Err(err) => {
                        self.done = true;
                        return Err(err);
                    }
                }
            }
            let Some((source, scanner)) = &mut self.current else {
                continue;
            };
            match scanner.next(&mut self.rec) {
                Ok(Some((start, end))) => {
                    self.position = Some(RecordPosition {
                        checkpoint: source.checkpoint,
                        segment: source.segment,
                        start,
                        end,
                    });
                    return Ok(Some(&self.rec));
                }
                Ok(None) => self.current = None,
                Err(ScanError::Io(err)) => {
                    self.done = true;
                    return Err(err);
                }
                Err(ScanError::Bad(failure)) => {
                    self.done = true;
                    let torn = judge(source, failure)?;
                    self.torn_tail = Some(torn);
                    return Ok(None);
                }
            }
        }
    }

    /// Where the record last returned was read.
    pub fn position(&self) -> Option<RecordPosition> {
        self.position
    }

    /// The torn tail reading stopped at, once `next_record` returned `None`.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }
}

/// Owned records, for callers that prefer an iterator to reusing a buffer.
impl Iterator for Reader {
    type Item = Result<Vec<u8>, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
            .map(|rec| rec.map(<[u8]>::to_vec))
            .transpose()
    }
}

fn checkpoint_sources(dir: &Path, checkpoint: Option<u32>) -> Result<VecDeque<Source>, WalError> {
    let Some(checkpoint) = checkpoint else {
        return Ok(VecDeque::new());
    };
    let cp_dir = checkpoint_path(dir, checkpoint);
    let contents = list(&cp_dir)?;
    check_contiguous(&contents.segments, Some(0))?;
    Ok(contents
        .segments
        .iter()
        .map(|&(segment, _)| Source {
            path: segment_path(&cp_dir, segment),
            checkpoint: Some(checkpoint),
            segment,
            may_be_torn: false,
        })
        .collect())
}

/// Decides whether a failure is a torn tail (`Ok`) or corruption (`Err`).
fn judge(source: &Source, failure: ScanFailure) -> Result<TornTail, WalError> {
    if let Some(checkpoint) = source.checkpoint {
        return Err(WalError::CheckpointCorruption {
            checkpoint,
            segment: source.segment,
            offset: failure.offset,
            reason: failure.reason,
        });
    }
    if source.may_be_torn && rest_is_zero(&source.path, failure.after)? {
        let file_len = fs::metadata(&source.path)
            .map_err(io_error("stat", &source.path))?
            .len();
        let torn = TornTail {
            segment: source.segment,
            offset: failure.record_start,
            len: file_len.saturating_sub(failure.record_start),
            reason: failure.reason,
        };
        tracing::warn!(
            segment = torn.segment,
            offset = torn.offset,
            bytes = torn.len,
            reason = %torn.reason,
            "WAL ends with a torn record (a write cut short by a crash); replay stops before it"
        );
        return Ok(torn);
    }
    Err(WalError::Corruption {
        segment: source.segment,
        offset: failure.offset,
        reason: failure.reason,
    })
}

/// Scans segment `path` to its first failure, if any.
fn first_failure(path: &Path) -> Result<Option<ScanFailure>, WalError> {
    let mut scanner = SegmentScanner::open(path)?;
    let mut rec = Vec::new();
    loop {
        match scanner.next(&mut rec) {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(ScanError::Io(err)) => return Err(err),
            Err(ScanError::Bad(failure)) => return Ok(Some(failure)),
        }
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error("opening segment", path))?;
    file.set_len(len)
        .map_err(io_error("truncating segment", path))?;
    file.sync_all().map_err(io_error("fsyncing", path))
}

/// Cuts the log after the last good record of `segment`: truncates the
/// segment at the start of its first torn or corrupt record and deletes
/// every later segment. Use it on the segment a [`WalError::Corruption`] or
/// a [`TornTail`] names, before opening the WAL; records after the cut are
/// lost, which the report says. Fails with [`WalError::Locked`] while a
/// [`Wal`](super::Wal) is open on `dir`.
pub fn repair(dir: &Path, segment: u32) -> Result<RepairReport, WalError> {
    let _lock = lock_dir(dir)?;
    let contents = list(dir)?;
    let live = contents.live_segments();
    let Some(&(_, len)) = live.iter().find(|&&(s, _)| s == segment) else {
        return Err(WalError::SegmentNotFound { segment });
    };
    let path = segment_path(dir, segment);
    let Some(failure) = first_failure(&path)? else {
        return Err(WalError::NothingToRepair { segment });
    };
    truncate(&path, failure.record_start)?;
    let mut report = RepairReport {
        segment,
        truncated_at: failure.record_start,
        bytes_cut: len.saturating_sub(failure.record_start),
        reason: failure.reason,
        deleted_segments: Vec::new(),
        deleted_bytes: 0,
    };
    for &(later, later_len) in live.iter().filter(|&&(s, _)| s > segment) {
        let later_path = segment_path(dir, later);
        fs::remove_file(&later_path).map_err(io_error("deleting segment", &later_path))?;
        report.deleted_segments.push(later);
        report.deleted_bytes += later_len;
    }
    sync_dir(dir)?;
    tracing::warn!(
        segment,
        truncated_at = report.truncated_at,
        bytes_cut = report.bytes_cut,
        reason = %report.reason,
        deleted_segments = ?report.deleted_segments,
        deleted_bytes = report.deleted_bytes,
        "repaired the WAL: cut it after the last good record"
    );
    Ok(report)
}

/// Cuts a torn tail off the last non-empty segment, as [`Wal::open`] does
/// before appending. Corruption that is not a torn tail is left alone and
/// returned as an error: appending after it would bury it.
///
/// [`Wal::open`]: super::Wal::open
pub(crate) fn cut_torn_tail(dir: &Path) -> Result<Option<TornTail>, WalError> {
    let contents = list(dir)?;
    let Some(&(segment, _)) = contents
        .live_segments()
        .iter()
        .rev()
        .find(|&&(_, len)| len > 0)
    else {
        return Ok(None);
    };
    let source = Source {
        path: segment_path(dir, segment),
        checkpoint: None,
        segment,
        may_be_torn: true,
    };
    let Some(failure) = first_failure(&source.path)? else {
        return Ok(None);
    };
    let torn = judge(&source, failure)?;
    truncate(&source.path, torn.offset)?;
    tracing::warn!(
        segment,
        offset = torn.offset,
        bytes = torn.len,
        "cut the torn tail off the last WAL segment"
    );
    Ok(Some(torn))
}

#[cfg(test)]
mod tests {
    use super::super::metrics::WalMetrics;
    use super::super::segment::{HEADER_SIZE, PAGE_SIZE, SegmentWriter};
    use super::super::test_util::{read_all, record};
    use super::*;

    /// Writes records of `sizes` into segments of `segment_size` and returns
    /// them with where they landed.
    fn write(dir: &Path, segment_size: usize, sizes: &[usize]) -> Vec<(Vec<u8>, RecordPosition)> {
        let mut w = SegmentWriter::create(dir, 0, segment_size, false, WalMetrics::default())
            .expect("create");
        for (i, &len) in sizes.iter().enumerate() {
            w.log(&record(i, len)).expect("log");
        }
        w.finish().expect("close");
        let (records, err, reader) = read_all(dir);
        assert!(err.is_none() && reader.torn_tail().is_none());
        assert_eq!(records.len(), sizes.len());
        records
    }

    fn contents(records: &[(Vec<u8>, RecordPosition)]) -> Vec<Vec<u8>> {
        records.iter().map(|(r, _)| r.clone()).collect()
    }

    const SIZES: [usize; 8] = [10, 0, 5000, 40_000, 33, 70_000, 12, 50_000];

    #[test]
    fn a_torn_last_record_is_reported_and_repaired_and_earlier_records_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write(dir.path(), 8 * PAGE_SIZE, &SIZES);
        let last = written.last().expect("records").1;
        assert_eq!(last.segment, 0);
        let path = segment_path(dir.path(), 0);
        let original = fs::read(&path).expect("read");
        let first_fragment_end = (last.start as usize / PAGE_SIZE + 1) * PAGE_SIZE;
        let cuts = [
            last.start + 1,
            last.start + HEADER_SIZE as u64,
            last.start + HEADER_SIZE as u64 + 100,
            first_fragment_end as u64,
            first_fragment_end as u64 + 3,
            first_fragment_end as u64 + HEADER_SIZE as u64 + 1000,
            last.end - 1,
        ];
        for cut in cuts {
            fs::write(&path, &original[..cut as usize]).expect("write");
            let (records, err, reader) = read_all(dir.path());
            assert!(
                err.is_none(),
                "cut at {cut}: a torn tail is no error: {err:?}"
            );
            assert_eq!(
                contents(&records),
                contents(&written[..SIZES.len() - 1]),
                "cut at {cut}"
            );
            let torn = reader.torn_tail().expect("torn tail reported").clone();
            assert_eq!(
                (torn.segment, torn.offset, torn.len),
                (0, last.start, cut - last.start)
            );

            let report = repair(dir.path(), 0).expect("repair");
            assert_eq!(report.truncated_at, last.start);
            assert_eq!(report.bytes_cut, cut - last.start);
            assert!(report.deleted_segments.is_empty());
            assert_eq!(fs::metadata(&path).expect("stat").len(), last.start);
            let (records, err, reader) = read_all(dir.path());
            assert!(err.is_none() && reader.torn_tail().is_none());
            assert_eq!(records.len(), SIZES.len() - 1);
            assert!(matches!(
                repair(dir.path(), 0),
                Err(WalError::NothingToRepair { segment: 0 })
            ));
        }
    }

    #[test]
    fn a_torn_write_that_left_zeros_or_a_bad_checksum_at_the_end_is_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write(dir.path(), 8 * PAGE_SIZE, &SIZES);
        let last = written.last().expect("records").1;
        let path = segment_path(dir.path(), 0);
        let original = fs::read(&path).expect("read");

        // The file was extended but the last pages never reached the disk.
        let mut zeroed = original.clone();
        let from = last.start as usize + 2 * PAGE_SIZE / 3;
        zeroed[from..].fill(0);
        fs::write(&path, &zeroed).expect("write");
        let (records, err, reader) = read_all(dir.path());
        assert!(err.is_none(), "{err:?}");
        assert_eq!(records.len(), SIZES.len() - 1);
        assert_eq!(reader.torn_tail().map(|t| t.offset), Some(last.start));

        // Half a sector of the last fragment made it.
        let mut garbled = original.clone();
        garbled[last.end as usize - 1] ^= 0xff;
        fs::write(&path, &garbled).expect("write");
        let (records, err, reader) = read_all(dir.path());
        assert!(err.is_none(), "{err:?}");
        assert_eq!(records.len(), SIZES.len() - 1);
        assert!(matches!(
            reader.torn_tail().map(|t| &t.reason),
            Some(CorruptionReason::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn a_bad_checksum_in_the_middle_is_corruption_naming_segment_and_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sizes: Vec<usize> = (0..40).map(|i| 1000 + i * 997).collect();
        let written = write(dir.path(), 2 * PAGE_SIZE, &sizes);
        let segments: Vec<u32> = written.iter().map(|(_, p)| p.segment).collect();
        assert!(segments.last() > Some(&3), "several segments: {segments:?}");
        // A record in the middle of segment 1 that is not its first.
        let victim = written
            .iter()
            .enumerate()
            .filter(|(_, (_, p))| p.segment == 1)
            .nth(1)
            .map(|(i, _)| i)
            .expect("segment 1 has two records");
        let pos = written[victim].1;
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).expect("read");
        bytes[pos.start as usize + HEADER_SIZE + 17] ^= 0x01;
        fs::write(&path, &bytes).expect("write");

        let (records, err, reader) = read_all(dir.path());
        assert_eq!(
            contents(&records),
            contents(&written[..victim]),
            "every record before it is read"
        );
        match err {
            Some(WalError::Corruption {
                segment: 1,
                offset,
                reason: CorruptionReason::ChecksumMismatch { .. },
            }) => assert_eq!(offset, pos.start),
            other => panic!(
                "expected a checksum mismatch in segment 1 at {}: {other:?}",
                pos.start
            ),
        }
        assert!(reader.torn_tail().is_none());

        let report = repair(dir.path(), 1).expect("repair");
        assert_eq!(report.truncated_at, pos.start);
        let last_segment = *segments.last().expect("segments");
        assert_eq!(
            report.deleted_segments,
            (2..=last_segment).collect::<Vec<_>>()
        );
        let (records, err, _) = read_all(dir.path());
        assert!(err.is_none());
        assert_eq!(contents(&records), contents(&written[..victim]));
    }

    #[test]
    fn a_bad_fragment_sequence_or_type_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write(dir.path(), 8 * PAGE_SIZE, &[100, 100, 100]);
        let path = segment_path(dir.path(), 0);
        let original = fs::read(&path).expect("read");
        let second = written[1].1.start as usize;
        for (typ, want) in [
            (
                3u8,
                CorruptionReason::UnexpectedFragment {
                    found: "a MIDDLE",
                    expected: "a FULL or FIRST",
                },
            ),
            (6, CorruptionReason::UnknownFragmentType(6)),
            (0x09, CorruptionReason::UnknownFlags(0x08)),
        ] {
            let mut bytes = original.clone();
            bytes[second] = typ;
            fs::write(&path, &bytes).expect("write");
            let (records, err, _) = read_all(dir.path());
            assert_eq!(records.len(), 1);
            match err {
                Some(WalError::Corruption {
                    segment: 0,
                    offset,
                    reason,
                }) => {
                    assert_eq!((offset, reason), (second as u64, want));
                }
                other => panic!("type {typ}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_segment_cut_short_before_a_later_segment_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write(dir.path(), 2 * PAGE_SIZE, &[30_000, 30_000, 30_000, 30_000]);
        assert_eq!(written[2].1.segment, 1);
        let path = segment_path(dir.path(), 0);
        let bytes = fs::read(&path).expect("read");
        let cut = written[1].1.start as usize + 50;
        fs::write(&path, &bytes[..cut]).expect("write");
        let (records, err, reader) = read_all(dir.path());
        assert_eq!(records.len(), 1);
        assert!(
            matches!(
                err,
                Some(WalError::Corruption {
                    segment: 0,
                    reason: CorruptionReason::Truncated,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(reader.torn_tail().is_none());
    }

    #[test]
    fn a_missing_segment_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write(dir.path(), PAGE_SIZE, &[30_000, 30_000, 30_000]);
        assert_eq!(written[2].1.segment, 2);
        fs::remove_file(segment_path(dir.path(), 1)).expect("rm");
        assert!(matches!(
            Reader::open(dir.path()),
            Err(WalError::MissingSegment { missing: 1 })
        ));
    }

    #[test]
    fn non_zero_bytes_in_padding_are_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write(dir.path(), 2 * PAGE_SIZE, &[100, 20_000]);
        let path = segment_path(dir.path(), 0);
        let mut bytes = fs::read(&path).expect("read");
        let padding = written[1].1.end as usize + 10;
        bytes[padding] = 1;
        // Another page after it, so this is not the tail.
        let mut page = vec![0u8; PAGE_SIZE];
        page[0] = 1;
        page[3..7].copy_from_slice(&crc32c::crc32c(&[]).to_be_bytes());
        bytes.extend_from_slice(&page);
        fs::write(&path, &bytes).expect("write");
        let (records, err, _) = read_all(dir.path());
        assert_eq!(records.len(), 2);
        assert!(
            matches!(
                err,
                Some(WalError::Corruption {
                    reason: CorruptionReason::NonZeroPadding,
                    ..
                })
            ),
            "{err:?}"
        );
    }
}
