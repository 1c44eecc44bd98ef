//! Segment files: their names, their 32 KiB pages, and how a record is cut
//! into fragments (see the format in the module above).
//!
//! [`SegmentWriter`] writes records into numbered segments of one directory
//! (the WAL's, or a checkpoint's). [`SegmentScanner`] reads the records of
//! one segment back and says precisely where and why it stopped if the data
//! does not parse; deciding whether that is a torn tail or corruption is the
//! reader's business, since it depends on what follows the segment.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::metrics::WalMetrics;
use super::{CorruptionReason, WalError, io_error};

/// Pages are the unit a fragment never crosses.
pub const PAGE_SIZE: usize = 32 * 1024;
/// Bytes of a fragment header: type (1), length (2), CRC32C (4).
pub const HEADER_SIZE: usize = 7;
/// The default largest size of a segment file.
pub const DEFAULT_SEGMENT_SIZE: usize = 128 * 1024 * 1024;

const TYPE_MASK: u8 = 0b0000_0111;
/// Fragment types (bits 0-2 of the type byte). 0 marks page padding.
const PADDING: u8 = 0;
const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;

/// Bytes buffered by the writer before it writes them to the file.
const WRITE_BUFFER: usize = 8 * PAGE_SIZE;
/// Bytes the scanner reads from the file at a time.
const READ_BUFFER: usize = 8 * PAGE_SIZE;

/// The file an open `Wal` holds locked in its directory.
const LOCK_FILE: &str = "lock";
const CHECKPOINT_PREFIX: &str = "checkpoint.";
const TMP_SUFFIX: &str = ".tmp";

/// The largest record a segment of `segment_size` bytes holds.
pub fn max_record_len(segment_size: usize) -> usize {
    (segment_size / PAGE_SIZE) * (PAGE_SIZE - HEADER_SIZE)
}

pub(crate) fn validate_segment_size(segment_size: usize) -> Result<(), WalError> {
    if segment_size == 0 || !segment_size.is_multiple_of(PAGE_SIZE) {
        return Err(WalError::InvalidSegmentSize { segment_size });
    }
    Ok(())
}

pub(crate) fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:08}"))
}

pub(crate) fn checkpoint_path(dir: &Path, checkpoint: u32) -> PathBuf {
    dir.join(format!("{CHECKPOINT_PREFIX}{checkpoint:08}"))
}

pub(crate) fn checkpoint_tmp_path(dir: &Path, checkpoint: u32) -> PathBuf {
    dir.join(format!("{CHECKPOINT_PREFIX}{checkpoint:08}{TMP_SUFFIX}"))
}

fn parse_index(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What a WAL directory holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirContents {
    /// Every segment file, ascending, with its length in bytes.
    pub segments: Vec<(u32, u64)>,
    /// Every finished checkpoint, ascending; replay uses the last.
    pub checkpoints: Vec<u32>,
    /// Checkpoint directories still being written or left by a crash.
    pub tmp_checkpoints: Vec<PathBuf>,
}

impl DirContents {
    /// The newest checkpoint.
    pub fn checkpoint(&self) -> Option<u32> {
        self.checkpoints.last().copied()
    }

    /// The segments replay reads: those after the newest checkpoint.
    pub fn live_segments(&self) -> &[(u32, u64)] {
        match self.checkpoint() {
            Some(cp) => {
                let first = self.segments.partition_point(|&(s, _)| s <= cp);
                &self.segments[first..]
            }
            None => &self.segments,
        }
    }

    /// Checks that the live segments follow the checkpoint and each other
    /// without gaps.
    pub(crate) fn check_contiguous(&self) -> Result<(), WalError> {
        check_contiguous(
            self.live_segments(),
            self.checkpoint().map(|cp| cp.saturating_add(1)),
        )
    }
}

/// Checks that `segments` follow each other, starting at `first` if given.
pub(crate) fn check_contiguous(
    segments: &[(u32, u64)],
    first: Option<u32>,
) -> Result<(), WalError> {
    let mut expected = first;
    for &(segment, _) in segments {
        if let Some(expected) = expected
            && segment != expected
        {
            return Err(WalError::MissingSegment { missing: expected });
        }
        expected = segment.checked_add(1);
    }
    Ok(())
}

/// Lists the segments and checkpoints in `dir`, ignoring other files.
pub fn list(dir: &Path) -> Result<DirContents, WalError> {
    let mut contents = DirContents::default();
    for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
        let entry = entry.map_err(io_error("listing", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let file_type = entry.file_type().map_err(io_error("stat", &entry.path()))?;
        if let Some(segment) = parse_index(name) {
            if file_type.is_file() {
                let len = entry
                    .metadata()
                    .map_err(io_error("stat", &entry.path()))?
                    .len();
                contents.segments.push((segment, len));
            }
        } else if let Some(rest) = name.strip_prefix(CHECKPOINT_PREFIX)
            && file_type.is_dir()
        {
            if rest.ends_with(TMP_SUFFIX) {
                contents.tmp_checkpoints.push(entry.path());
            } else if let Some(cp) = parse_index(rest) {
                contents.checkpoints.push(cp);
            }
        }
    }
    contents.segments.sort_unstable();
    contents.checkpoints.sort_unstable();
    contents.tmp_checkpoints.sort_unstable();
    Ok(contents)
}

/// Takes the directory's lock file, or fails if another `Wal`
/// (or a repair) holds it. The lock lasts as long as the returned file.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error("opening lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(WalError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(err)) => Err(io_error("locking", &path)(err)),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsyncing directory", dir))
}

/// Writes records into the numbered segments of one directory.
pub(crate) struct SegmentWriter {
    dir: PathBuf,
    segment: u32,
    path: PathBuf,
    file: File,
    pages_per_segment: usize,
    /// Pages of the current segment that are complete (padded if need be).
    done_pages: usize,
    /// Bytes used in the current page.
    page_used: usize,
    /// Bytes not yet written to the file; they end where `page_used` says.
    buf: Vec<u8>,
    /// Whether finishing a segment fsyncs it and creating one fsyncs the
    /// directory.
    sync: bool,
    metrics: WalMetrics,
}

impl SegmentWriter {
    /// Creates segment `segment` in `dir` (it must not exist).
    pub fn create(
        dir: &Path,
        segment: u32,
        segment_size: usize,
        sync: bool,
        metrics: WalMetrics,
    ) -> Result<SegmentWriter, WalError> {
        validate_segment_size(segment_size)?;
        let path = segment_path(dir, segment);
        let file = create_segment(dir, &path, sync)?;
        metrics.segment_current.set(i64::from(segment));
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            segment,
            path,
            file,
            pages_per_segment: segment_size / PAGE_SIZE,
            done_pages: 0,
            page_used: 0,
            buf: Vec::with_capacity(WRITE_BUFFER + PAGE_SIZE),
            sync,
            metrics,
        })
    }

    /// The segment being written.
    pub fn segment(&self) -> u32 {
        self.segment
    }

    pub fn max_record_len(&self) -> usize {
        self.pages_per_segment * (PAGE_SIZE - HEADER_SIZE)
    }

    /// Whether a record of `len` bytes fits in what is left of the segment.
    fn fits(&self, len: usize) -> bool {
        if self.done_pages >= self.pages_per_segment {
            return false;
        }
        // After each fragment the page is finished when HEADER_SIZE bytes or
        // fewer are left, so at least one data byte fits in this page.
        let in_page = PAGE_SIZE - self.page_used - HEADER_SIZE;
        let in_later_pages =
            (self.pages_per_segment - self.done_pages - 1) * (PAGE_SIZE - HEADER_SIZE);
        len <= in_page + in_later_pages
    }

    /// Buffers one record, starting a new segment first if it does not fit
    /// in this one. The record reaches the file at the latest on `flush`.
    pub fn log(&mut self, rec: &[u8]) -> Result<(), WalError> {
        if rec.len() > self.max_record_len() {
            return Err(WalError::RecordTooLarge {
                len: rec.len(),
                max: self.max_record_len(),
                segment_size: self.pages_per_segment * PAGE_SIZE,
            });
        }
        if !self.fits(rec.len()) {
            self.next_segment()?;
        }
        let mut rest = rec;
        let mut first = true;
        loop {
            let room = PAGE_SIZE - self.page_used - HEADER_SIZE;
            let (part, tail) = rest.split_at(rest.len().min(room));
            let typ = match (first, tail.is_empty()) {
                (true, true) => FULL,
                (true, false) => FIRST,
                (false, false) => MIDDLE,
                (false, true) => LAST,
            };
            let len = u16::try_from(part.len())
                .expect("a fragment fits in a page, whose size fits in u16");
            self.buf.push(typ);
            self.buf.extend_from_slice(&len.to_be_bytes());
            self.buf
                .extend_from_slice(&crc32c::crc32c(part).to_be_bytes());
            self.buf.extend_from_slice(part);
            self.page_used += HEADER_SIZE + part.len();
            if PAGE_SIZE - self.page_used <= HEADER_SIZE {
                self.finish_page();
            }
            if self.buf.len() >= WRITE_BUFFER {
                self.flush()?;
            }
            rest = tail;
            first = false;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Zero-pads the rest of the current page, if it was started.
    fn finish_page(&mut self) {
        if self.page_used == 0 {
            return;
        }
        self.buf
            .resize(self.buf.len() + (PAGE_SIZE - self.page_used), 0);
        self.page_used = 0;
        self.done_pages += 1;
    }

    /// Writes what is buffered to the file (a partial page included; later
    /// records continue that page).
    pub fn flush(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.buf);
        // What was buffered is either in the file or lost with the error;
        // either way it must not be written twice.
        let len = self.buf.len();
        self.buf.clear();
        written.map_err(io_error("writing", &self.path))?;
        self.metrics.bytes_written.inc_by(len as u64);
        Ok(())
    }

    /// Flushes and fsyncs the current segment.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.flush()?;
        let start = Instant::now();
        self.file
            .sync_data()
            .map_err(io_error("fsyncing", &self.path))?;
        self.metrics.fsyncs.inc();
        self.metrics
            .fsync_duration_seconds
            .inc_by(start.elapsed().as_secs_f64());
        Ok(())
    }

    /// Finishes the current segment (padded, flushed, fsynced if `sync`) and
    /// starts the next one.
    pub fn next_segment(&mut self) -> Result<u32, WalError> {
        self.finish_page();
        if self.sync {
            self.sync()?;
        } else {
            self.flush()?;
        }
        let next = self.segment.checked_add(1).ok_or_else(|| {
            io_error("numbering the next segment", &self.path)(io::Error::other(
                "segment numbers exhausted",
            ))
        })?;
        let path = segment_path(&self.dir, next);
        self.file = create_segment(&self.dir, &path, self.sync)?;
        self.path = path;
        self.segment = next;
        self.done_pages = 0;
        self.metrics.segment_current.set(i64::from(next));
        Ok(next)
    }

    /// Pads the last page and writes everything out, fsyncing if `sync`.
    /// Records logged after this start a new page.
    pub fn finish(&mut self) -> Result<(), WalError> {
        self.finish_page();
        if self.sync { self.sync() } else { self.flush() }
    }
}

fn create_segment(dir: &Path, path: &Path, sync: bool) -> Result<File, WalError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error("creating segment", path))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(file)
}

/// Where and why a segment stopped parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScanFailure {
    /// Offset of the fragment (or padding, or end of file) found wrong.
    pub offset: u64,
    /// Where the record being read began: the end of the last good record.
    pub record_start: u64,
    /// The first byte after the bad fragment as far as its header tells; a
    /// torn write leaves nothing but zeros from here on.
    pub after: u64,
    pub reason: CorruptionReason,
}

pub(crate) enum ScanError {
    Io(WalError),
    Bad(ScanFailure),
}

/// Reads the records of one segment file, page by page.
pub(crate) struct SegmentScanner {
    path: PathBuf,
    input: BufReader<File>,
    page: Box<[u8]>,
    /// Bytes of `page` that hold data (short only for the last page).
    page_len: usize,
    /// Next byte of `page` to parse.
    pos: usize,
    /// File offset of `page`.
    page_offset: u64,
    /// A short page was read: nothing follows it.
    eof: bool,
}

impl SegmentScanner {
    pub fn open(path: &Path) -> Result<SegmentScanner, WalError> {
        let file = File::open(path).map_err(io_error("opening segment", path))?;
        Ok(SegmentScanner {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(READ_BUFFER, file),
            page: vec![0; PAGE_SIZE].into_boxed_slice(),
            page_len: 0,
            pos: 0,
            page_offset: 0,
            eof: false,
        })
    }

    /// Loads the next page; false at the end of the file.
    fn load_page(&mut self) -> Result<bool, WalError> {
        if self.eof {
            return Ok(false);
        }
        self.page_offset += self.page_len as u64;
        let mut filled = 0;
        while filled < PAGE_SIZE {
            match self.input.read(&mut self.page[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(io_error("reading segment", &self.path)(err)),
            }
        }
        self.page_len = filled;
        self.pos = 0;
        if filled < PAGE_SIZE {
            self.eof = true;
        }
        Ok(filled > 0)
    }

    /// Reads the next record into `rec` (cleared first) and returns the
    /// offsets it spans, or `None` at a clean end of the segment.
    pub fn next(&mut self, rec: &mut Vec<u8>) -> Result<Option<(u64, u64)>, ScanError> {
        rec.clear();
        let mut record_start: Option<u64> = None;
        loop {
            if self.pos >= self.page_len && !self.load_page().map_err(ScanError::Io)? {
                let end = self.page_offset + self.page_len as u64;
                return match record_start {
                    None => Ok(None),
                    Some(record_start) => Err(ScanError::Bad(ScanFailure {
                        offset: end,
                        record_start,
                        after: end,
                        reason: CorruptionReason::Truncated,
                    })),
                };
            }
            let offset = self.page_offset + self.pos as u64;
            let page_end = self.page_offset + self.page_len as u64;
            let fail = |reason, after| {
                Err(ScanError::Bad(ScanFailure {
                    offset,
                    record_start: record_start.unwrap_or(offset),
                    after,
                    reason,
                }))
            };
            let room = PAGE_SIZE - self.pos;
            if room <= HEADER_SIZE || self.page[self.pos] == PADDING {
                // Padding: zeros to the end of the page.
                if self.page[self.pos..self.page_len].iter().any(|&b| b != 0) {
                    return fail(CorruptionReason::NonZeroPadding, page_end);
                }
                if record_start.is_some() {
                    // A fragment that does not end its record fills its page.
                    return fail(CorruptionReason::CutByPadding, offset);
                }
                self.pos = self.page_len;
                continue;
            }
            if self.page_len - self.pos < HEADER_SIZE {
                // Only the last, short page can end inside a header.
                return fail(CorruptionReason::Truncated, page_end);
            }
            let header = &self.page[self.pos..self.pos + HEADER_SIZE];
            let flags = header[0] & !TYPE_MASK;
            let typ = header[0] & TYPE_MASK;
            let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
            let expected_crc = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
            let claimed_end = (offset + (HEADER_SIZE + len) as u64).min(page_end);
            if flags != 0 {
                return fail(CorruptionReason::UnknownFlags(flags), claimed_end);
            }
            if HEADER_SIZE + len > room {
                return fail(CorruptionReason::FragmentPastPage { len }, page_end);
            }
            if self.pos + HEADER_SIZE + len > self.page_len {
                return fail(CorruptionReason::Truncated, page_end);
            }
            let data = &self.page[self.pos + HEADER_SIZE..self.pos + HEADER_SIZE + len];
            let actual_crc = crc32c::crc32c(data);
            if actual_crc != expected_crc {
                return fail(
                    CorruptionReason::ChecksumMismatch {
                        expected: expected_crc,
                        actual: actual_crc,
                    },
                    claimed_end,
                );
            }
            let in_record = record_start.is_some();
            match (typ, in_record) {
                (FULL | FIRST, false) | (MIDDLE | LAST, true) => {}
                (FULL | FIRST | MIDDLE | LAST, _) => {
                    let expected = if in_record {
                        "a MIDDLE or LAST"
                    } else {
                        "a FULL or FIRST"
                    };
                    return fail(
                        CorruptionReason::UnexpectedFragment {
                            found: fragment_name(typ),
                            expected,
                        },
                        claimed_end,
                    );
                }
                _ => return fail(CorruptionReason::UnknownFragmentType(typ), claimed_end),
            }
            rec.extend_from_slice(data);
            self.pos += HEADER_SIZE + len;
            let start = *record_start.get_or_insert(offset);
            if typ == FULL || typ == LAST {
                return Ok(Some((start, self.page_offset + self.pos as u64)));
            }
        }
    }
}

fn fragment_name(typ: u8) -> &'static str {
    match typ {
        FULL => "a FULL",
        FIRST => "a FIRST",
        MIDDLE => "a MIDDLE",
        LAST => "a LAST",
        _ => "an unknown",
    }
}

/// Whether `path` holds nothing but zero bytes from `from` to its end.
pub(crate) fn rest_is_zero(path: &Path, from: u64) -> Result<bool, WalError> {
    let mut file = File::open(path).map_err(io_error("opening segment", path))?;
    file.seek(SeekFrom::Start(from))
        .map_err(io_error("seeking in segment", path))?;
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                if buf[..n].iter().any(|&b| b != 0) {
                    return Ok(false);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(io_error("reading segment", path)(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &Path, segment_size: usize) -> SegmentWriter {
        match SegmentWriter::create(dir, 0, segment_size, false, WalMetrics::default()) {
            Ok(w) => w,
            Err(err) => panic!("creating a segment: {err}"),
        }
    }

    fn scan(path: &Path) -> Vec<(Vec<u8>, (u64, u64))> {
        let mut scanner = SegmentScanner::open(path).expect("segment exists");
        let mut out = Vec::new();
        let mut rec = Vec::new();
        loop {
            match scanner.next(&mut rec) {
                Ok(Some(span)) => out.push((rec.clone(), span)),
                Ok(None) => return out,
                Err(ScanError::Bad(f)) => panic!("segment does not parse: {f:?}"),
                Err(ScanError::Io(err)) => panic!("reading: {err}"),
            }
        }
    }

    #[test]
    fn fragments_fill_pages_and_pad_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = writer(dir.path(), 4 * PAGE_SIZE);
        // One record of exactly a page's worth of data spans two pages.
        let big = vec![7u8; PAGE_SIZE];
        w.log(b"abc").expect("log");
        w.log(&big).expect("log");
        w.log(b"").expect("log");
        w.finish().expect("close");
        let bytes = fs::read(segment_path(dir.path(), 0)).expect("read");
        assert_eq!(
            bytes.len(),
            2 * PAGE_SIZE,
            "closed segments are whole pages"
        );
        assert_eq!(&bytes[..3], &[FULL, 0, 3]);
        let second = HEADER_SIZE + 3;
        assert_eq!(bytes[second], FIRST);
        let first_part = PAGE_SIZE - second - HEADER_SIZE;
        assert_eq!(
            usize::from(u16::from_be_bytes([bytes[second + 1], bytes[second + 2]])),
            first_part
        );
        assert_eq!(bytes[PAGE_SIZE], LAST);
        let records = scan(&segment_path(dir.path(), 0));
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].0, b"abc");
        assert_eq!(records[1].0, big);
        assert_eq!(
            records[1].1,
            (
                second as u64,
                (PAGE_SIZE + HEADER_SIZE + PAGE_SIZE - first_part) as u64
            )
        );
        assert_eq!(records[2].0, b"");
    }

    #[test]
    fn a_record_that_does_not_fit_starts_the_next_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = writer(dir.path(), PAGE_SIZE);
        assert_eq!(w.max_record_len(), PAGE_SIZE - HEADER_SIZE);
        w.log(&[1; 100]).expect("log");
        w.log(&vec![2; PAGE_SIZE - HEADER_SIZE]).expect("log");
        assert_eq!(w.segment(), 1);
        let too_big = vec![3; PAGE_SIZE];
        assert!(matches!(
            w.log(&too_big),
            Err(WalError::RecordTooLarge { .. })
        ));
        w.log(b"").expect("log");
        assert_eq!(
            w.segment(),
            2,
            "a full segment takes no more records, not even empty ones"
        );
        w.finish().expect("close");
        assert_eq!(scan(&segment_path(dir.path(), 0)).len(), 1);
        assert_eq!(scan(&segment_path(dir.path(), 1)).len(), 1);
        assert_eq!(scan(&segment_path(dir.path(), 2)).len(), 1);
    }

    #[test]
    fn listing_ignores_strangers() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["00000000", "00000002", "00000001", "notes", "0000000x"] {
            fs::write(dir.path().join(name), b"x").expect("write");
        }
        for name in [
            "checkpoint.00000001",
            "checkpoint.00000003.tmp",
            "checkpoint.x",
        ] {
            fs::create_dir(dir.path().join(name)).expect("mkdir");
        }
        let contents = list(dir.path()).expect("list");
        assert_eq!(contents.segments, vec![(0, 1), (1, 1), (2, 1)]);
        assert_eq!(contents.checkpoints, vec![1]);
        assert_eq!(contents.tmp_checkpoints.len(), 1);
        assert_eq!(contents.live_segments(), &[(2, 1)]);
        assert!(contents.check_contiguous().is_ok());
    }

    #[test]
    fn invalid_segment_sizes_are_refused() {
        for size in [0, 1000, PAGE_SIZE + 1] {
            assert!(matches!(
                validate_segment_size(size),
                Err(WalError::InvalidSegmentSize { .. })
            ));
        }
        assert!(validate_segment_size(2 * PAGE_SIZE).is_ok());
    }
}
