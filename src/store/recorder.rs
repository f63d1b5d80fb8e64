//! The write-behind queue between calls and the database. A call hands a [`Record`] to
//! [`Recorder::record`], which never waits: the record goes into a bounded channel, or, if the
//! channel is full because the database has been down for long, is dropped and counted. One
//! writer task drains the channel in batches (up to `batch` records, or what has arrived
//! within `max_delay`, or at once when a call ends), writes each batch in one transaction, and
//! retries with backoff while the database is unreachable, holding the batch (and, behind it,
//! the channel) until it is back. [`RecorderTask::shutdown`] writes whatever is queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Store;
use super::write::Record;

/// How the recorder batches and how much it holds.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Records the channel holds while the writer is busy or the database is down.
    pub capacity: usize,
    /// Most records written in one transaction.
    pub batch: usize,
    /// Longest a record waits before its batch is written.
    pub max_delay: Duration,
    /// First retry delay after a failed write (doubles, with jitter).
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Where each successful flush's duration is observed (`caly_store_flush_seconds`).
    pub flush_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            capacity: 50_000,
            batch: 500,
            max_delay: Duration::from_secs(1),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            flush_seconds: None,
        }
    }
}

/// What the recorder has done, for metrics, `/readyz` and tests.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Records written.
    pub written: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Batches that failed to write (each is retried).
    pub failures: AtomicU64,
    /// Batches written.
    pub flushes: AtomicU64,
    /// Microseconds spent in the last successful flush.
    pub last_flush_us: AtomicU64,
    /// The last write failed and has not succeeded since.
    pub failing: AtomicBool,
}

/// The sending side: cheap to clone, one per session config.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
    stats: Arc<RecorderStats>,
    capacity: usize,
}

impl Recorder {
    /// Queues a record without waiting. `false` if the queue was full (the record is dropped
    /// and counted) or the writer has stopped.
    pub fn record(&self, record: Record) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(e) => {
                let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if dropped.is_power_of_two() || dropped == 0 {
                    let reason = match e {
                        mpsc::error::TrySendError::Full(_) => "queue full",
                        mpsc::error::TrySendError::Closed(_) => "recorder stopped",
                    };
                    tracing::error!(
                        dropped = dropped + 1,
                        reason,
                        "Call record dropped: the database has been unreachable too long."
                    );
                }
                false
            }
        }
    }

    /// Records waiting to be written (in the channel; a batch being retried is not counted).
    pub fn queued(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<RecorderStats> {
        &self.stats
    }
}

/// The writer task. Its owner calls [`RecorderTask::shutdown`] once no call is left.
pub struct RecorderTask {
    handle: JoinHandle<()>,
    stop: CancellationToken,
}

impl RecorderTask {
    /// Starts the writer.
    pub fn start(store: Store, config: RecorderConfig) -> (Recorder, RecorderTask) {
        let capacity = config.capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(RecorderStats::default());
        let stop = CancellationToken::new();
        let writer = Writer {
            store,
            config,
            rx,
            stats: Arc::clone(&stats),
            stop: stop.clone(),
            batch: Vec::new(),
        };
        let handle = tokio::spawn(writer.run());
        (
            Recorder {
                tx,
                stats,
                capacity,
            },
            RecorderTask { handle, stop },
        )
    }

    /// Writes everything queued, retrying for up to `timeout`, then stops. Returns the
    /// number of records it could not write (0 on a clean shutdown).
    pub async fn shutdown(self, timeout: Duration) -> u64 {
        self.stop.cancel();
        let mut handle = self.handle;
        match tokio::time::timeout(timeout, &mut handle).await {
            Ok(_) => 0,
            Err(_) => {
                handle.abort();
                tracing::error!(
                    timeout_secs = timeout.as_secs(),
                    "Shutdown: the database did not come back in time; queued call records are lost."
                );
                1
            }
        }
    }
}

struct Writer {
    store: Store,
    config: RecorderConfig,
    rx: mpsc::Receiver<Record>,
    stats: Arc<RecorderStats>,
    stop: CancellationToken,
    batch: Vec<Record>,
}

impl Writer {
    async fn run(mut self) {
        loop {
            let stopping = self.fill().await;
            if !self.batch.is_empty() {
                self.flush().await;
            }
            if stopping && self.batch.is_empty() {
                // Every sender may still be alive (the session config holds one), so drain
                // what is there now and stop.
                if self.rx.is_empty() {
                    return;
                }
            }
        }
    }

    /// Collects a batch. Returns `true` once stopping has been asked for.
    async fn fill(&mut self) -> bool {
        let stopping = self.stop.is_cancelled();
        if self.batch.is_empty() && !stopping {
            tokio::select! {
                r = self.rx.recv() => match r {
                    Some(r) => self.batch.push(r),
                    None => return true,
                },
                () = self.stop.cancelled() => {}
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.max_delay;
        while self.batch.len() < self.config.batch {
            if self.batch.last().is_some_and(Record::flushes_now) {
                break;
            }
            match self.rx.try_recv() {
                Ok(r) => {
                    self.batch.push(r);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if self.stop.is_cancelled() {
                return true;
            }
            tokio::select! {
                r = self.rx.recv() => match r {
                    Some(r) => self.batch.push(r),
                    None => return true,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = self.stop.cancelled() => {}
            }
        }
        self.stop.is_cancelled()
    }

    /// Writes the batch, retrying until it lands (the caller's queue holds meanwhile).
    async fn flush(&mut self) {
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            match self.store.write_batch(&self.batch).await {
                Ok(()) => {
                    let n = self.batch.len() as u64;
                    self.batch.clear();
                    self.stats.written.fetch_add(n, Ordering::Relaxed);
                    self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                    let took = started.elapsed();
                    self.stats
                        .last_flush_us
                        .store(took.as_micros() as u64, Ordering::Relaxed);
                    if let Some(h) = &self.config.flush_seconds {
                        h.observe(took.as_secs_f64());
                    }
                    if self.stats.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            records = n,
                            "Database reachable again: queued call records written."
                        );
                    }
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    if !self.stats.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            held = self.batch.len(),
                            "Cannot write call records; holding them and retrying."
                        );
                    }
                    let wait = crate::backoff::delay(
                        self.config.retry_initial,
                        self.config.retry_max,
                        attempt,
                    );
                    // Stopping does not cut the retries short: shutdown bounds them with its
                    // own timeout.
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
