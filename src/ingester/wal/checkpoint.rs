//! Checkpoints: compacting the start of the log so that replay stays short.
//!
//! [`checkpoint`] reads the newest checkpoint and the segments up to
//! `up_to_segment`, keeps what the caller's `keep` returns (the ingester
//! keeps the series still in its head and samples newer than what it has
//! flushed), and writes that as `checkpoint.<up_to_segment>`, itself a
//! directory of segments in the same format. Then it deletes the segments
//! and checkpoints it replaces.
//!
//! Invariants:
//! - A checkpoint appears whole or not at all: it is written to
//!   `checkpoint.N.tmp`, fsynced (files and directory), then renamed. A
//!   `.tmp` directory left by a crash is ignored by replay and removed by
//!   the next checkpoint.
//! - Nothing is deleted before the new checkpoint is in place. A crash
//!   after the rename leaves old segments and checkpoints behind; replay
//!   skips them (it starts at the newest checkpoint) and the next checkpoint
//!   deletes them.
//! - Corruption in what is read fails the checkpoint and changes nothing.

use std::fs;
use std::path::Path;

use super::metrics::WalMetrics;
use super::reader::Reader;
use super::segment::{
    DEFAULT_SEGMENT_SIZE, SegmentWriter, check_contiguous, checkpoint_path, checkpoint_tmp_path,
    list, segment_path, sync_dir,
};
use super::{WalError, io_error};

/// What a checkpoint did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// The new checkpoint: the last segment it covers.
    pub checkpoint: u32,
    /// The checkpoint it started from.
    pub previous: Option<u32>,
    /// The segments read (besides the previous checkpoint), ascending.
    pub segments_read: Vec<u32>,
    pub records_read: u64,
    pub records_kept: u64,
    pub bytes_kept: u64,
    /// Segments deleted after the checkpoint was in place.
    pub segments_deleted: Vec<u32>,
    /// Older checkpoints deleted.
    pub checkpoints_deleted: Vec<u32>,
    /// Leftover `checkpoint.N.tmp` directories removed.
    pub tmp_dirs_removed: usize,
}

/// Writes `checkpoint.<up_to_segment>` in `dir` from the newest checkpoint
/// and the segments up to `up_to_segment`, keeping the records `keep`
/// returns (as returned: it may rewrite them), then deletes those segments
/// and older checkpoints.
///
/// `up_to_segment` must be finished: with a [`Wal`](super::Wal) open on
/// `dir`, call [`Wal::checkpoint`](super::Wal::checkpoint), which checks
/// that. Blocking I/O.
pub fn checkpoint(
    dir: &Path,
    up_to_segment: u32,
    mut keep: impl FnMut(&[u8]) -> Option<Vec<u8>>,
) -> Result<CheckpointStats, WalError> {
    let contents = list(dir)?;
    let previous = contents.checkpoint();
    if let Some(previous) = previous
        && previous >= up_to_segment
    {
        return Err(WalError::AlreadyCheckpointed {
            up_to: up_to_segment,
            checkpoint: previous,
        });
    }
    let live = contents.live_segments();
    let to_read = &live[..live.partition_point(|&(s, _)| s <= up_to_segment)];
    if to_read.last().map(|&(s, _)| s) != Some(up_to_segment) {
        return Err(WalError::SegmentNotFound {
            segment: up_to_segment,
        });
    }
    check_contiguous(to_read, previous.map(|cp| cp.saturating_add(1)))?;
    let mut stats = CheckpointStats {
        checkpoint: up_to_segment,
        previous,
        segments_read: to_read.iter().map(|&(s, _)| s).collect(),
        ..CheckpointStats::default()
    };

    let tmp = checkpoint_tmp_path(dir, up_to_segment);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_error("removing", &tmp))?;
    }
    fs::create_dir(&tmp).map_err(io_error("creating", &tmp))?;
    let written = write_checkpoint(dir, &tmp, previous, &mut keep, &mut stats);
    if let Err(err) = written {
        if let Err(rm) = fs::remove_dir_all(&tmp) {
            tracing::warn!(dir = %tmp.display(), error = %rm, "could not remove a failed WAL checkpoint");
        }
        return Err(err);
    }
    let final_path = checkpoint_path(dir, up_to_segment);
    fs::rename(&tmp, &final_path).map_err(io_error("renaming into place", &tmp))?;
    sync_dir(dir)?;

    // The checkpoint is in place; what follows only frees space, and what
    // it leaves behind replay ignores and the next checkpoint retries.
    for &(segment, _) in contents
        .segments
        .iter()
        .filter(|&&(s, _)| s <= up_to_segment)
    {
        let path = segment_path(dir, segment);
        match fs::remove_file(&path) {
            Ok(()) => stats.segments_deleted.push(segment),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "could not delete a checkpointed WAL segment")
            }
        }
    }
    for &cp in contents
        .checkpoints
        .iter()
        .filter(|&&cp| cp < up_to_segment)
    {
        let path = checkpoint_path(dir, cp);
        match fs::remove_dir_all(&path) {
            Ok(()) => stats.checkpoints_deleted.push(cp),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "could not delete an old WAL checkpoint")
            }
        }
    }
    for path in contents.tmp_checkpoints.iter().filter(|&p| *p != tmp) {
        match fs::remove_dir_all(path) {
            Ok(()) => stats.tmp_dirs_removed += 1,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "could not remove a leftover WAL checkpoint")
            }
        }
    }
    if let Err(err) = sync_dir(dir) {
        tracing::warn!(error = %err, "could not fsync the WAL directory after deleting checkpointed segments");
    }
    tracing::info!(
        checkpoint = up_to_segment,
        previous = ?previous,
        records_read = stats.records_read,
        records_kept = stats.records_kept,
        bytes_kept = stats.bytes_kept,
        segments_deleted = stats.segments_deleted.len(),
        "wrote a WAL checkpoint"
    );
    Ok(stats)
}

fn write_checkpoint(
    dir: &Path,
    tmp: &Path,
    previous: Option<u32>,
    keep: &mut impl FnMut(&[u8]) -> Option<Vec<u8>>,
    stats: &mut CheckpointStats,
) -> Result<(), WalError> {
    let mut reader = Reader::for_segments(dir, previous, &stats.segments_read)?;
    let mut writer =
        SegmentWriter::create(tmp, 0, DEFAULT_SEGMENT_SIZE, true, WalMetrics::default())?;
    while let Some(rec) = reader.next_record()? {
        stats.records_read += 1;
        if let Some(kept) = keep(rec) {
            writer.log(&kept)?;
            stats.records_kept += 1;
            stats.bytes_kept += kept.len() as u64;
        }
    }
    writer.finish()?;
    sync_dir(tmp)
}

#[cfg(test)]
mod tests {
    use super::super::records::{
        Record, SampleRecord, SeriesRecord, decode, encode_samples, encode_series,
    };
    use super::super::segment::PAGE_SIZE;
    use super::super::test_util::read_all;
    use super::super::{FsyncPolicy, Wal, WalOptions};
    use super::*;

    fn series(segment: u32) -> Vec<SeriesRecord> {
        (0..3)
            .map(|i| SeriesRecord {
                series_ref: u64::from(segment) * 10 + i,
                tenant: format!("tenant-{}", i % 2),
                labels: vec![
                    ("__name__".into(), "up".into()),
                    ("instance".into(), format!("host-{segment}-{i}")),
                ],
            })
            .collect()
    }

    fn samples(segment: u32) -> Vec<SampleRecord> {
        (0..100)
            .map(|i| SampleRecord {
                series_ref: u64::from(segment) * 10 + i % 3,
                t: i64::from(segment) * 100 + i as i64,
                v: i as f64,
            })
            .collect()
    }

    fn encoded(segment: u32) -> Vec<Vec<u8>> {
        let mut s = Vec::new();
        encode_series(&series(segment), &mut s);
        let mut out = vec![s];
        // Several samples records per segment, enough to span pages.
        for chunk in samples(segment).chunks(10) {
            let mut buf = Vec::new();
            encode_samples(chunk, &mut buf);
            out.push(buf);
        }
        out
    }

    /// Writes `encoded(s)` into segment `s` for each of `segments`.
    async fn write_segments(dir: &Path, segments: std::ops::RangeInclusive<u32>) {
        let wal = Wal::open(
            dir,
            WalOptions {
                segment_size: 2 * PAGE_SIZE,
                fsync: FsyncPolicy::Never,
            },
        )
        .expect("open");
        assert_eq!(wal.active_segment(), *segments.start());
        for segment in segments.clone() {
            wal.append(encoded(segment)).await.expect("append");
            assert_eq!(wal.active_segment(), segment);
            if segment != *segments.end() {
                wal.next_segment().await.expect("rotate");
            }
        }
        wal.close().await.expect("close");
    }

    const MIN_T: i64 = 150;

    /// Keeps series, and samples at `MIN_T` or later.
    fn keep_recent(rec: &[u8]) -> Option<Vec<u8>> {
        match decode(rec).expect("records decode") {
            Record::Series(_)
            | Record::Histograms(_)
            | Record::FloatHistograms(_)
            | Record::Exemplars(_) => Some(rec.to_vec()),
            Record::Samples(samples) => {
                let recent: Vec<SampleRecord> =
                    samples.into_iter().filter(|s| s.t >= MIN_T).collect();
                if recent.is_empty() {
                    return None;
                }
                let mut buf = Vec::new();
                encode_samples(&recent, &mut buf);
                Some(buf)
            }
        }
    }

    /// Every decoded record in `dir`, with the checkpoint (if any) and
    /// segment it came from.
    fn replay(dir: &Path) -> Vec<(Option<u32>, u32, Record)> {
        let (records, err, reader) = read_all(dir);
        assert!(err.is_none() && reader.torn_tail().is_none(), "{err:?}");
        records
            .into_iter()
            .map(|(r, p)| (p.checkpoint, p.segment, decode(&r).expect("decode")))
            .collect()
    }

    fn flatten(
        records: impl IntoIterator<Item = Record>,
    ) -> (Vec<SeriesRecord>, Vec<SampleRecord>) {
        let (mut series, mut samples) = (Vec::new(), Vec::new());
        for record in records {
            match record {
                Record::Series(s) => series.extend(s),
                Record::Samples(s) => samples.extend(s),
                Record::Histograms(_) | Record::FloatHistograms(_) | Record::Exemplars(_) => {}
            }
        }
        (series, samples)
    }

    #[tokio::test]
    async fn checkpoint_keeps_what_is_asked_and_replay_reads_it_before_later_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_segments(dir.path(), 0..=3).await;
        assert_eq!(
            list(dir.path())
                .expect("list")
                .segments
                .iter()
                .map(|s| s.0)
                .collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );

        let stats = checkpoint(dir.path(), 2, keep_recent).expect("checkpoint");
        assert_eq!(stats.previous, None);
        assert_eq!(stats.segments_read, vec![0, 1, 2]);
        assert_eq!(stats.records_read, 3 * 11);
        assert_eq!(stats.records_kept, 3 + 5 + 10);
        assert_eq!(stats.segments_deleted, vec![0, 1, 2]);

        let contents = list(dir.path()).expect("list");
        assert_eq!(
            contents.segments.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(contents.checkpoints, vec![2]);

        let replayed = replay(dir.path());
        let sources: Vec<(Option<u32>, u32)> =
            replayed.iter().map(|(cp, s, _)| (*cp, *s)).collect();
        let split = sources
            .iter()
            .position(|&(cp, _)| cp.is_none())
            .expect("segment 3 is read");
        assert!(sources[..split].iter().all(|&src| src == (Some(2), 0)));
        assert!(sources[split..].iter().all(|&src| src == (None, 3)));

        let (cp_series, cp_samples) = flatten(replayed[..split].iter().map(|r| r.2.clone()));
        assert_eq!(cp_series, [series(0), series(1), series(2)].concat());
        let want: Vec<SampleRecord> = [samples(1), samples(2)]
            .concat()
            .into_iter()
            .filter(|s| s.t >= MIN_T)
            .collect();
        assert_eq!(cp_samples, want);
        let (tail_series, tail_samples) = flatten(replayed[split..].iter().map(|r| r.2.clone()));
        assert_eq!((tail_series, tail_samples), (series(3), samples(3)));
    }

    #[tokio::test]
    async fn a_leftover_tmp_checkpoint_is_ignored_then_cleaned_and_checkpoints_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_segments(dir.path(), 0..=3).await;
        checkpoint(dir.path(), 2, keep_recent).expect("checkpoint");
        let before = replay(dir.path());

        // A crash while writing checkpoint 3.
        let leftover = checkpoint_tmp_path(dir.path(), 3);
        fs::create_dir(&leftover).expect("mkdir");
        fs::write(leftover.join("00000000"), b"half a checkpoint").expect("write");
        assert_eq!(
            replay(dir.path()),
            before,
            "replay ignores the .tmp directory"
        );

        // Reopening continues after segment 3.
        write_segments(dir.path(), 4..=5).await;
        assert!(matches!(
            checkpoint(dir.path(), 2, keep_recent),
            Err(WalError::AlreadyCheckpointed {
                up_to: 2,
                checkpoint: 2
            })
        ));
        assert!(matches!(
            checkpoint(dir.path(), 9, keep_recent),
            Err(WalError::SegmentNotFound { segment: 9 })
        ));
        let stats = checkpoint(dir.path(), 4, |r| Some(r.to_vec())).expect("checkpoint");
        assert_eq!(stats.previous, Some(2));
        assert_eq!(stats.segments_read, vec![3, 4]);
        assert_eq!(stats.checkpoints_deleted, vec![2]);
        assert_eq!(stats.tmp_dirs_removed, 1);
        assert!(!leftover.exists());
        let contents = list(dir.path()).expect("list");
        assert_eq!(contents.checkpoints, vec![4]);
        assert_eq!(
            contents.segments.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![5]
        );

        let replayed = replay(dir.path());
        let from_cp: Vec<Record> = replayed
            .iter()
            .filter(|r| r.0 == Some(4))
            .map(|r| r.2.clone())
            .collect();
        let mut want: Vec<Record> = before.into_iter().map(|r| r.2).collect();
        want.extend(encoded(4).iter().map(|r| decode(r).expect("decode")));
        assert_eq!(from_cp, want);
        let (series5, samples5) =
            flatten(replayed.into_iter().filter(|r| r.0.is_none()).map(|r| r.2));
        assert_eq!((series5, samples5), (series(5), samples(5)));
    }

    #[tokio::test]
    async fn corruption_in_what_is_checkpointed_fails_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_segments(dir.path(), 0..=2).await;
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).expect("read");
        bytes[100] ^= 0x40;
        fs::write(&path, &bytes).expect("write");
        let before = list(dir.path()).expect("list");
        assert!(matches!(
            checkpoint(dir.path(), 1, |r| Some(r.to_vec())),
            Err(WalError::Corruption { segment: 1, .. })
        ));
        assert_eq!(list(dir.path()).expect("list"), before);
        assert!(!checkpoint_tmp_path(dir.path(), 1).exists());
    }

    #[tokio::test]
    async fn a_corrupt_checkpoint_is_reported_as_such() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_segments(dir.path(), 0..=2).await;
        checkpoint(dir.path(), 1, |r| Some(r.to_vec())).expect("checkpoint");
        let path = segment_path(&checkpoint_path(dir.path(), 1), 0);
        let mut bytes = fs::read(&path).expect("read");
        bytes[50] ^= 0x01;
        fs::write(&path, &bytes).expect("write");
        let (_, err, _) = read_all(dir.path());
        assert!(
            matches!(
                err,
                Some(WalError::CheckpointCorruption {
                    checkpoint: 1,
                    segment: 0,
                    ..
                })
            ),
            "{err:?}"
        );
    }
}
