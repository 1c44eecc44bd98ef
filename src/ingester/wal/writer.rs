//! [`Wal`]: the handle appenders share, and the one thread that writes.
//!
//! Group commit: every [`Wal::append`] sends its batch to a dedicated
//! writer thread. The thread takes the first pending batch and every batch
//! queued behind it (up to [`MAX_GROUP_BYTES`]), writes them all, fsyncs
//! once when the [`FsyncPolicy`] says so, and only then answers every
//! appender of the group, so many concurrent appends share one fsync. If a
//! write or fsync fails, every appender of the group gets the error and the
//! WAL refuses all later appends ([`WalError::Poisoned`]): after a failed
//! write the end of the segment is unknown, and after a failed fsync the
//! kernel may have dropped the dirty pages, so retrying could acknowledge
//! records that are not on disk. The ingester restarts, replays and repairs.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use super::checkpoint::{CheckpointStats, checkpoint};
use super::metrics::WalMetrics;
use super::reader::cut_torn_tail;
use super::segment::{SegmentWriter, list, lock_dir, sync_dir, validate_segment_size};
use super::{FsyncPolicy, WalError, WalOptions, io_error};

/// The most record bytes the writer takes into one group before it commits.
pub const MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;

enum Request {
    Append {
        records: Vec<Vec<u8>>,
        done: oneshot::Sender<Result<(), WalError>>,
    },
    NextSegment {
        done: oneshot::Sender<Result<u32, WalError>>,
    },
    Close {
        done: oneshot::Sender<Result<(), WalError>>,
    },
}

/// An open write-ahead log. Share it (`Arc<Wal>`) between appenders.
/// Dropping it lets the writer thread finish what is queued and exit in the
/// background; [`Wal::close`] waits for that (and for the directory lock to
/// be released).
pub struct Wal {
    dir: PathBuf,
    tx: mpsc::Sender<Request>,
    thread: thread::JoinHandle<()>,
    active: Arc<AtomicU32>,
    segment_size: usize,
    max_record_len: usize,
    metrics: WalMetrics,
}

impl Wal {
    /// Opens the WAL in `dir` (creating the directory if need be) and starts
    /// its writer thread. Appends go to a new segment after the last one;
    /// a torn tail in the last segment is cut off first, and any other
    /// corruption there fails the open (replay and [`repair`] first).
    ///
    /// This does blocking I/O, including a scan of the last segment.
    ///
    /// [`repair`]: super::repair
    pub fn open(dir: &Path, options: WalOptions) -> Result<Wal, WalError> {
        Wal::open_with_hooks(dir, options, TestHooks::default())
    }

    fn open_with_hooks(dir: &Path, options: WalOptions, hooks: TestHooks) -> Result<Wal, WalError> {
        validate_segment_size(options.segment_size)?;
        let sync = options.fsync != FsyncPolicy::Never;
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(io_error("creating WAL directory", dir))?;
            if sync && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock = lock_dir(dir)?;
        cut_torn_tail(dir)?;
        let contents = list(dir)?;
        let last = contents.segments.last().map(|&(s, _)| s);
        let first = match last.max(contents.checkpoint()) {
            None => 0,
            Some(last) => last.checked_add(1).ok_or_else(|| {
                io_error("numbering the next segment in", dir)(std::io::Error::other(
                    "segment numbers exhausted",
                ))
            })?,
        };

        let metrics = WalMetrics::default();
        let writer =
            SegmentWriter::create(dir, first, options.segment_size, sync, metrics.clone())?;
        let max_record_len = writer.max_record_len();
        let active = Arc::new(AtomicU32::new(first));
        let (tx, rx) = mpsc::channel();
        let state = WriterThread {
            writer,
            rx,
            policy: options.fsync,
            active: active.clone(),
            metrics: metrics.clone(),
            poisoned: None,
            unsynced: false,
            last_sync: Instant::now(),
            hooks,
            _lock: lock,
        };
        let thread = thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || state.run())
            .map_err(io_error("starting the WAL writer thread for", dir))?;
        tracing::info!(dir = %dir.display(), segment = first, "opened the WAL");
        Ok(Wal {
            dir: dir.to_path_buf(),
            tx,
            thread,
            active,
            segment_size: options.segment_size,
            max_record_len,
            metrics,
        })
    }

    /// Logs `records`, in order, after everything appended before this call;
    /// resolves once they are written and, under [`FsyncPolicy::Always`],
    /// fsynced. On error none of them may be applied: the caller rolls back.
    ///
    /// The records are queued when this is called, not when the future is
    /// polled, and dropping the future does not withdraw them. A crash can
    /// keep a prefix of the batch. Bound the appends in flight upstream: the
    /// queue to the writer is not bounded.
    pub fn append(
        &self,
        records: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<(), WalError>> + Send + use<> {
        let queued = self.queue(records);
        async move {
            match queued? {
                Some(done) => done.await.unwrap_or(Err(WalError::Closed)),
                None => Ok(()),
            }
        }
    }

    fn queue(
        &self,
        records: Vec<Vec<u8>>,
    ) -> Result<Option<oneshot::Receiver<Result<(), WalError>>>, WalError> {
        if records.is_empty() {
            return Ok(None);
        }
        if let Some(rec) = records.iter().find(|r| r.len() > self.max_record_len) {
            return Err(WalError::RecordTooLarge {
                len: rec.len(),
                max: self.max_record_len,
                segment_size: self.segment_size,
            });
        }
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::Append { records, done })
            .map_err(|_| WalError::Closed)?;
        Ok(Some(rx))
    }

    /// Finishes the segment being written (after everything appended
    /// before) and starts the next; returns the new segment's number. The
    /// ingester does this before it checkpoints everything written so far.
    pub async fn next_segment(&self) -> Result<u32, WalError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request::NextSegment { done })
            .map_err(|_| WalError::Closed)?;
        rx.await.unwrap_or(Err(WalError::Closed))
    }

    /// The segment being written. Every segment before it is finished.
    pub fn active_segment(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }

    /// [`checkpoint`](super::checkpoint()) up to `up_to_segment`, which must be before the
    /// segment being written. Blocking I/O: run it off the async runtime.
    pub fn checkpoint(
        &self,
        up_to_segment: u32,
        keep: impl FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<CheckpointStats, WalError> {
        let active = self.active_segment();
        if up_to_segment >= active {
            return Err(WalError::ActiveSegment {
                up_to: up_to_segment,
                active,
            });
        }
        checkpoint(&self.dir, up_to_segment, keep)
    }

    /// The largest record this WAL accepts.
    pub fn max_record_len(&self) -> usize {
        self.max_record_len
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn metrics(&self) -> &WalMetrics {
        &self.metrics
    }

    /// Writes out everything appended, pads and (unless the policy is
    /// `Never`) fsyncs the segment, and stops the writer thread.
    pub async fn close(self) -> Result<(), WalError> {
        let (done, rx) = oneshot::channel();
        let sent = self.tx.send(Request::Close { done });
        let result = match sent {
            Ok(()) => rx.await.unwrap_or(Err(WalError::Closed)),
            Err(_) => Err(WalError::Closed),
        };
        drop(self.tx);
        // The thread has answered and only returns now; this does not wait
        // on I/O.
        if self.thread.join().is_err() {
            tracing::error!("the WAL writer thread panicked");
        }
        result
    }
}

struct WriterThread {
    writer: SegmentWriter,
    rx: mpsc::Receiver<Request>,
    policy: FsyncPolicy,
    active: Arc<AtomicU32>,
    metrics: WalMetrics,
    poisoned: Option<Arc<WalError>>,
    /// Written but not fsynced (tracked for `FsyncPolicy::Interval`).
    unsynced: bool,
    last_sync: Instant,
    hooks: TestHooks,
    /// Held while the thread runs, so that one writer has the directory.
    _lock: File,
}

type Waiter = oneshot::Sender<Result<(), WalError>>;

impl WriterThread {
    fn run(mut self) {
        let mut group: Vec<(Vec<Vec<u8>>, Waiter)> = Vec::new();
        let mut carried: Option<Request> = None;
        loop {
            let Some(request) = carried.take().or_else(|| self.receive()) else {
                break;
            };
            self.hooks.before_group();
            match request {
                Request::Append { records, done } => {
                    let mut bytes: usize = records.iter().map(Vec::len).sum();
                    group.push((records, done));
                    while bytes < MAX_GROUP_BYTES {
                        match self.rx.try_recv() {
                            Ok(Request::Append { records, done }) => {
                                bytes += records.iter().map(Vec::len).sum::<usize>();
                                group.push((records, done));
                            }
                            Ok(other) => {
                                carried = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let result = self.commit(&group);
                    self.metrics.appends.inc_by(group.len() as u64);
                    for (_, done) in group.drain(..) {
                        // An appender that went away no longer needs the answer.
                        let _ = done.send(result.clone());
                    }
                }
                Request::NextSegment { done } => {
                    let result = self.guarded(|this| {
                        let next = this.writer.next_segment()?;
                        this.unsynced = false;
                        this.last_sync = Instant::now();
                        Ok(next)
                    });
                    self.active.store(self.writer.segment(), Ordering::Release);
                    let _ = done.send(result);
                }
                Request::Close { done } => {
                    let _ = done.send(self.finish());
                    return;
                }
            }
        }
        // Every handle was dropped without `close`.
        if let Err(err) = self.finish() {
            tracing::error!(error = %err, "finishing the WAL segment on drop failed");
        }
    }

    /// The next request, fsyncing on time under `FsyncPolicy::Interval`
    /// while waiting; `None` once every handle is gone.
    fn receive(&mut self) -> Option<Request> {
        loop {
            let FsyncPolicy::Interval(every) = self.policy else {
                return self.rx.recv().ok();
            };
            if !self.unsynced || self.poisoned.is_some() {
                return self.rx.recv().ok();
            }
            let due = every.saturating_sub(self.last_sync.elapsed());
            match self.rx.recv_timeout(due) {
                Ok(request) => return Some(request),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(err) = self.guarded(Self::sync) {
                        tracing::error!(error = %err, "periodic WAL fsync failed; refusing further appends");
                    }
                }
            }
        }
    }

    /// Runs `f` unless the WAL is poisoned; poisons it if `f` fails.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        if let Some(cause) = &self.poisoned {
            return Err(WalError::Poisoned {
                cause: cause.clone(),
            });
        }
        f(self).inspect_err(|err| {
            self.metrics.write_failures.inc();
            self.poisoned = Some(Arc::new(err.clone()));
        })
    }

    fn commit(&mut self, group: &[(Vec<Vec<u8>>, Waiter)]) -> Result<(), WalError> {
        let result = self.guarded(|this| {
            this.hooks.injected_failure()?;
            let mut records = 0;
            for (batch, _) in group {
                for rec in batch {
                    this.writer.log(rec)?;
                    records += 1;
                }
            }
            match this.policy {
                FsyncPolicy::Always => this.sync()?,
                FsyncPolicy::Never => this.writer.flush()?,
                FsyncPolicy::Interval(every) => {
                    this.writer.flush()?;
                    this.unsynced = true;
                    if this.last_sync.elapsed() >= every {
                        this.sync()?;
                    }
                }
            }
            this.metrics.records_written.inc_by(records);
            this.metrics.commits.inc();
            Ok(())
        });
        self.active.store(self.writer.segment(), Ordering::Release);
        result
    }

    fn sync(&mut self) -> Result<(), WalError> {
        self.writer.sync()?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn finish(&mut self) -> Result<(), WalError> {
        self.guarded(|this| this.writer.finish())
    }
}

/// Knobs tests use to hold the writer or make it fail; empty otherwise.
#[derive(Default)]
pub(crate) struct TestHooks {
    /// While set, the writer waits for a message (or the sender's drop)
    /// after taking the first request of each group.
    #[cfg(test)]
    gate: Option<mpsc::Receiver<()>>,
    /// While true, writing a group fails before anything is written.
    #[cfg(test)]
    fail_writes: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl TestHooks {
    fn before_group(&mut self) {
        #[cfg(test)]
        if let Some(gate) = &self.gate
            && gate.recv().is_err()
        {
            self.gate = None;
        }
    }

    fn injected_failure(&self) -> Result<(), WalError> {
        #[cfg(test)]
        if let Some(fail) = &self.fail_writes
            && fail.load(Ordering::SeqCst)
        {
            return Err(
                io_error("writing (injected failure)", Path::new("segment"))(
                    std::io::Error::other("injected"),
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::time::Duration;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::super::segment::{PAGE_SIZE, segment_path};
    use super::super::test_util::{read_all, record};
    use super::*;

    /// A record no other `i` has, of `len` bytes more than its tag.
    fn tagged(i: usize, len: usize) -> Vec<u8> {
        let mut rec = (i as u64).to_be_bytes().to_vec();
        rec.extend(record(i, len));
        rec
    }

    fn options(segment_size: usize, fsync: FsyncPolicy) -> WalOptions {
        WalOptions {
            segment_size,
            fsync,
        }
    }

    fn open(dir: &Path, options: WalOptions) -> Wal {
        match Wal::open(dir, options) {
            Ok(wal) => wal,
            Err(err) => panic!("opening the WAL: {err}"),
        }
    }

    fn records_of(dir: &Path) -> Vec<Vec<u8>> {
        let (records, err, reader) = read_all(dir);
        assert!(err.is_none(), "{err:?}");
        assert!(reader.torn_tail().is_none());
        records.into_iter().map(|(r, _)| r).collect()
    }

    #[tokio::test]
    async fn records_of_random_sizes_round_trip_across_small_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment_size = 4 * PAGE_SIZE;
        let wal = open(dir.path(), options(segment_size, FsyncPolicy::Never));
        let mut rng = StdRng::seed_from_u64(7);
        let mut expected = Vec::new();
        let mut i = 0;
        while expected.len() < 600 {
            let batch: Vec<Vec<u8>> = (0..rng.random_range(1..6))
                .map(|_| {
                    let len = match rng.random_range(0..10) {
                        0 => 0,
                        1 => rng.random_range(PAGE_SIZE..wal.max_record_len() + 1),
                        2 => rng.random_range(PAGE_SIZE - 20..PAGE_SIZE + 20),
                        _ => rng.random_range(1..3000),
                    };
                    i += 1;
                    record(i, len)
                })
                .collect();
            expected.extend(batch.iter().cloned());
            wal.append(batch).await.expect("append");
        }
        let last = wal.active_segment();
        wal.close().await.expect("close");
        assert!(
            last >= 10,
            "records spread over many segments, got {}",
            last + 1
        );
        for segment in 0..last {
            let len = std::fs::metadata(segment_path(dir.path(), segment))
                .expect("stat")
                .len();
            assert!(len <= segment_size as u64 && len.is_multiple_of(PAGE_SIZE as u64));
        }
        let (read, err, _) = read_all(dir.path());
        assert!(err.is_none(), "{err:?}");
        let positions: Vec<u32> = read.iter().map(|(_, p)| p.segment).collect();
        assert!(positions.is_sorted());
        let read: Vec<Vec<u8>> = read.into_iter().map(|(r, _)| r).collect();
        assert_eq!(read.len(), expected.len());
        assert!(
            read == expected,
            "records read back differ from those written"
        );
    }

    #[tokio::test]
    async fn reopening_appends_to_a_new_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open(dir.path(), WalOptions::default());
        assert_eq!(wal.active_segment(), 0);
        wal.append(vec![b"one".to_vec(), b"two".to_vec()])
            .await
            .expect("append");
        wal.close().await.expect("close");

        let wal = open(dir.path(), WalOptions::default());
        assert_eq!(wal.active_segment(), 1);
        wal.append(vec![b"three".to_vec()]).await.expect("append");
        wal.close().await.expect("close");
        let wal = open(dir.path(), WalOptions::default());
        assert_eq!(
            wal.active_segment(),
            2,
            "an empty segment is still a segment"
        );
        wal.close().await.expect("close");

        let owned: Result<Vec<Vec<u8>>, WalError> =
            Wal::replay(dir.path()).expect("replay").collect();
        assert_eq!(
            owned.expect("records"),
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        let (read, err, _) = read_all(dir.path());
        assert!(err.is_none());
        let read: Vec<(Vec<u8>, u32)> = read.into_iter().map(|(r, p)| (r, p.segment)).collect();
        assert_eq!(
            read,
            vec![
                (b"one".to_vec(), 0),
                (b"two".to_vec(), 0),
                (b"three".to_vec(), 1)
            ]
        );
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs_and_each_lands_exactly_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (gate, gate_rx) = mpsc::channel();
        let hooks = TestHooks {
            gate: Some(gate_rx),
            fail_writes: None,
        };
        let wal = Arc::new(
            Wal::open_with_hooks(
                dir.path(),
                options(2 * PAGE_SIZE, FsyncPolicy::Always),
                hooks,
            )
            .expect("open"),
        );
        let queued = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let wal = wal.clone();
                let queued = queued.clone();
                tokio::spawn(async move {
                    let append = wal.append(vec![record(i, 10 + i * 37)]);
                    queued.fetch_add(1, Ordering::SeqCst);
                    append.await
                })
            })
            .collect();
        while queued.load(Ordering::SeqCst) < 100 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The writer holds the first append; let it go with the 99 others queued.
        drop(gate);
        for task in tasks {
            task.await.expect("task").expect("append acknowledged");
        }
        let metrics = wal.metrics().clone();
        assert_eq!(metrics.appends.get(), 100);
        assert!(
            metrics.fsyncs.get() < 100,
            "group commit: {} fsyncs for 100 appends",
            metrics.fsyncs.get()
        );
        assert!(
            metrics.commits.get() <= 2,
            "{} commits",
            metrics.commits.get()
        );
        assert!(wal.active_segment() > 0, "the group spanned segments");
        Arc::into_inner(wal)
            .expect("last handle")
            .close()
            .await
            .expect("close");

        let read = records_of(dir.path());
        let expected: HashSet<Vec<u8>> = (0..100).map(|i| record(i, 10 + i * 37)).collect();
        assert_eq!(read.len(), 100);
        assert_eq!(read.into_iter().collect::<HashSet<_>>(), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hundred_free_running_appenders_are_all_acknowledged_and_logged_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Arc::new(open(
            dir.path(),
            options(16 * PAGE_SIZE, FsyncPolicy::Always),
        ));
        let tasks: Vec<_> = (0..100)
            .map(|task| {
                let wal = wal.clone();
                tokio::spawn(async move {
                    for j in 0..10 {
                        let i = task * 10 + j;
                        wal.append(vec![tagged(i, i % 700), tagged(i + 1000, 5)])
                            .await?;
                    }
                    Ok::<_, WalError>(())
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("appends acknowledged");
        }
        let metrics = wal.metrics().clone();
        assert_eq!(metrics.appends.get(), 1000);
        assert!(metrics.fsyncs.get() <= 1000);
        Arc::into_inner(wal)
            .expect("last handle")
            .close()
            .await
            .expect("close");

        let read = records_of(dir.path());
        assert_eq!(read.len(), 2000);
        let unique: HashSet<Vec<u8>> = read.iter().cloned().collect();
        assert_eq!(unique.len(), 2000, "no record logged twice");
        for i in 0..1000 {
            assert!(unique.contains(&tagged(i, i % 700)));
        }
        // One task's appends stay in its order.
        let index = |i: usize| read.iter().position(|r| *r == tagged(i, i % 700));
        assert!(index(50) < index(51) && index(51) < index(59));
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_appender_of_the_group_and_later_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (gate, gate_rx) = mpsc::channel();
        let fail = Arc::new(AtomicBool::new(false));
        let hooks = TestHooks {
            gate: Some(gate_rx),
            fail_writes: Some(fail.clone()),
        };
        let wal = Wal::open_with_hooks(
            dir.path(),
            options(2 * PAGE_SIZE, FsyncPolicy::Always),
            hooks,
        )
        .expect("open");
        let good = wal.append(vec![b"before".to_vec()]);
        gate.send(()).expect("writer waits");
        good.await.expect("append");

        fail.store(true, Ordering::SeqCst);
        let doomed: Vec<_> = (0..10).map(|i| wal.append(vec![record(i, 100)])).collect();
        drop(gate);
        for append in doomed {
            assert!(matches!(append.await, Err(WalError::Io { .. })));
        }
        fail.store(false, Ordering::SeqCst);
        assert!(matches!(
            wal.append(vec![b"after".to_vec()]).await,
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(
            wal.next_segment().await,
            Err(WalError::Poisoned { .. })
        ));
        assert_eq!(wal.metrics().write_failures.get(), 1);
        assert!(wal.close().await.is_err());
        assert_eq!(records_of(dir.path()), vec![b"before".to_vec()]);
    }

    #[tokio::test]
    async fn fsync_policies_never_and_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open(dir.path(), options(PAGE_SIZE, FsyncPolicy::Never));
        for i in 0..20 {
            wal.append(vec![record(i, 5000)]).await.expect("append");
        }
        assert!(wal.active_segment() > 0);
        assert_eq!(wal.metrics().fsyncs.get(), 0);
        wal.close().await.expect("close");
        assert_eq!(records_of(dir.path()).len(), 20);

        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open(
            dir.path(),
            options(
                16 * PAGE_SIZE,
                FsyncPolicy::Interval(Duration::from_millis(50)),
            ),
        );
        wal.append(vec![b"x".to_vec()]).await.expect("append");
        wal.append(vec![b"y".to_vec()]).await.expect("append");
        // Idle and unsynced: the writer fsyncs when the interval is up.
        let deadline = Instant::now() + Duration::from_secs(5);
        while wal.metrics().fsyncs.get() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(wal.metrics().fsyncs.get() >= 1);
        let fsyncs = wal.metrics().fsyncs.get();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(wal.metrics().fsyncs.get(), fsyncs, "nothing new, no fsync");
        wal.close().await.expect("close");
    }

    #[tokio::test]
    async fn oversized_records_are_refused_before_queueing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open(dir.path(), options(PAGE_SIZE, FsyncPolicy::Always));
        let too_big = vec![0; wal.max_record_len() + 1];
        assert!(matches!(
            wal.append(vec![b"ok".to_vec(), too_big]).await,
            Err(WalError::RecordTooLarge { .. })
        ));
        wal.append(vec![]).await.expect("an empty batch is a no-op");
        wal.append(vec![vec![1; wal.max_record_len()]])
            .await
            .expect("the largest record fits");
        wal.close().await.expect("close");
        assert_eq!(records_of(dir.path()), vec![vec![1; PAGE_SIZE - 7]]);
    }

    #[tokio::test]
    async fn open_cuts_a_torn_tail_so_it_never_ends_up_mid_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open(dir.path(), options(4 * PAGE_SIZE, FsyncPolicy::Always));
        wal.append(vec![record(1, 100), record(2, 50_000)])
            .await
            .expect("append");
        wal.close().await.expect("close");
        let (read, _, _) = read_all(dir.path());
        let torn_start = read[1].1.start;
        let path = segment_path(dir.path(), 0);
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..torn_start as usize + 40_000]).expect("write");

        let wal = open(dir.path(), options(4 * PAGE_SIZE, FsyncPolicy::Always));
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), torn_start);
        assert_eq!(wal.active_segment(), 1);
        wal.append(vec![record(3, 10)]).await.expect("append");
        wal.close().await.expect("close");
        assert_eq!(records_of(dir.path()), vec![record(1, 100), record(3, 10)]);
    }

    #[tokio::test]
    async fn open_refuses_to_append_after_corruption_in_the_last_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open(dir.path(), options(4 * PAGE_SIZE, FsyncPolicy::Always));
        wal.append(vec![record(1, 100), record(2, 100)])
            .await
            .expect("append");
        wal.close().await.expect("close");
        let path = segment_path(dir.path(), 0);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[20] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            Wal::open(dir.path(), WalOptions::default()),
            Err(WalError::Corruption {
                segment: 0,
                offset: 0,
                ..
            })
        ));
        let report = super::super::repair(dir.path(), 0).expect("repair");
        assert_eq!(report.truncated_at, 0);
        let wal = open(dir.path(), WalOptions::default());
        assert_eq!(wal.active_segment(), 1);
        wal.close().await.expect("close");
    }

    #[tokio::test]
    async fn one_wal_per_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open(dir.path(), WalOptions::default());
        assert!(matches!(
            Wal::open(dir.path(), WalOptions::default()),
            Err(WalError::Locked { .. })
        ));
        assert_eq!(wal.active_segment(), 0, "the refused open touched nothing");
        assert!(matches!(
            super::super::repair(dir.path(), 0),
            Err(WalError::Locked { .. })
        ));
        wal.close().await.expect("close");
        let wal = open(dir.path(), WalOptions::default());
        assert_eq!(wal.active_segment(), 1);
        wal.close().await.expect("close");
    }

    #[tokio::test]
    async fn next_segment_finishes_the_active_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = open(dir.path(), WalOptions::default());
        wal.append(vec![b"a".to_vec()]).await.expect("append");
        assert_eq!(wal.next_segment().await.expect("rotate"), 1);
        assert_eq!(wal.active_segment(), 1);
        assert_eq!(
            std::fs::metadata(segment_path(dir.path(), 0))
                .expect("stat")
                .len(),
            PAGE_SIZE as u64
        );
        assert!(matches!(
            wal.checkpoint(1, |r| Some(r.to_vec())),
            Err(WalError::ActiveSegment {
                up_to: 1,
                active: 1
            })
        ));
        wal.close().await.expect("close");
    }
}
