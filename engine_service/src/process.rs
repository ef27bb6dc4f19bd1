//! The Process operation, independent of gRPC: work items in, batches,
//! item completions, bounded-rate progress and a summary out through a
//! [`Sink`].
//!
//! Threads and termination: [`run`] is called on a dedicated blocking
//! thread, the orchestrator. It takes work items in order, turns each into
//! batches ([`Batcher`]; for a SourceSpec while the walk is still running,
//! so discovery and processing overlap) and spawns one job per batch on the
//! global rayon pool. A batch runs its files one after another on one
//! thread, so it closes at [`Task::files_per_batch`] files
//! ([`crate::config::PROCESS_BATCH_FILES`] unless the task is slow per
//! file) and, for a task whose work grows with file size, also at
//! [`crate::config::PROCESS_BATCH_BYTES`]: eight 20 MB logs are then eight
//! batches on every core, not one batch on one core. A semaphore bounds the
//! batches in flight, so memory stays flat and discovery never runs far
//! ahead. A batch
//! job processes its files, writes its part file, sends its BatchResult and,
//! if it was its work item's last, the WorkItemDone; a batch with outputs
//! to make durable hands those steps to the call's [`Settler`] thread,
//! which holds its permit until they are done. When the item channel
//! closes, the orchestrator waits for in-flight batches to drain, stops the
//! progress ticker and sends the final Progress then the Summary.
//!
//! Cancellation: any failed send (client gone) raises the cancel flag;
//! batch jobs check it before every file, the walker before every
//! directory, and the orchestrator before every batch, so work stops within
//! one file per thread. No summary is sent after cancellation. A task that
//! panics on one file is caught around that file ([`process_guarded`]): the
//! file gets an `internal` failure naming the panic and the batch goes on.
//! Should a batch job still panic outside the task, it is caught, counted as
//! failed files, and releases its permit, so the drain always ends.
//!
//! Observability: the call runs inside the caller's current span (the gRPC
//! server span); each work item gets a `process.item` span and each batch a
//! `process.batch` span with its file, failure and byte counts. Files get no
//! span of their own. Metrics ([`crate::metrics`]) are added once per batch.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::chunks;
use crate::config::DEFAULT_PROGRESS_INTERVAL_MS;
use crate::error::{EngineError, Result};
use crate::filters::{FilterSpec, Filters};
use crate::metrics::{TaskMetrics, METRICS};
use crate::output::{Outputs, Settled};
use crate::pb::{self, process_response::Event};
use crate::progress::{Counters, Ticker};
use crate::results::{display_path, push_part_line, write_atomic, FailureKind, FileFailure};
use crate::storage::objects::{self, Io};
use crate::storage::s3::Encryption;
use crate::storage::s3_write::S3Destination;
use crate::storage::{s3_list, staging, Root};
use crate::syncer::{SyncGroup, Syncer};
use crate::tasks::{self, Aggregate, Task};
use crate::walk::{self, WalkEvent};

/// Where Process messages go. `send` returns false when the receiver is
/// gone; it may be called from many threads at once.
pub trait Sink: Send + Sync {
    fn send(&self, msg: pb::ProcessResponse) -> bool;
    /// Whether the receiver is already known to be gone, asked when there
    /// is nothing to send (see [`Ticker`]).
    fn gone(&self) -> bool {
        false
    }
}

/// A validated ProcessStart.
pub struct ProcessConfig {
    pub task: Arc<dyn Task>,
    /// The task's registry name (metric label, span attribute).
    pub task_name: String,
    pub results_dir: Option<PathBuf>,
    /// Where tasks that write files put their outputs (canonical).
    pub destination: Option<PathBuf>,
    /// An `s3://` destination instead (outputs staged, then uploaded).
    pub s3_destination: Option<Arc<S3Destination>>,
    pub progress_interval: Duration,
}

impl ProcessConfig {
    pub fn from_start(start: &pb::ProcessStart) -> Result<Self> {
        let task = tasks::build(&start.task, &start.options_json)?;
        let results_dir = if start.results_dir.is_empty() {
            None
        } else {
            let raw = start
                .results_dir
                .strip_prefix("file://")
                .unwrap_or(&start.results_dir);
            let dir = PathBuf::from(raw);
            Some(crate::sandbox::create_dir_checked(
                &dir,
                "cannot create results_dir",
            )?)
        };
        let s3_destination = if start.destination.starts_with("s3://") {
            let encryption = match &start.encryption {
                Some(e) => Encryption::parse(&e.mode, &e.kms_key_id)?,
                None => Encryption::from_env()?,
            };
            Some(Arc::new(S3Destination::open(
                &start.destination,
                &encryption,
                crate::output::existing_option(&start.options_json),
            )?))
        } else {
            None
        };
        let destination = if start.destination.is_empty() || s3_destination.is_some() {
            None
        } else {
            let raw = start
                .destination
                .strip_prefix("file://")
                .unwrap_or(&start.destination);
            let dir = PathBuf::from(raw);
            std::fs::create_dir_all(&dir)
                .map_err(|e| EngineError::io("cannot create destination", &dir, e))?;
            Some(
                std::fs::canonicalize(&dir)
                    .map_err(|e| EngineError::io("cannot resolve destination", &dir, e))?,
            )
        };
        let ms = match start.progress_interval_ms {
            0 => DEFAULT_PROGRESS_INTERVAL_MS,
            n => n,
        };
        Ok(ProcessConfig {
            task,
            task_name: start.task.clone(),
            results_dir,
            destination,
            s3_destination,
            progress_interval: Duration::from_millis(ms as u64),
        })
    }
}

/// Work ids name part files, so they must be safe file-name fragments.
pub fn validate_work_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadWorkId { id: id.to_owned() })
    }
}

/// A counting semaphore bounding batches in flight.
struct Permits {
    /// Batches currently in flight; guarded by the mutex, waited on by the
    /// orchestrator (to submit, or to drain at the end).
    in_flight: Mutex<usize>,
    changed: Condvar,
    limit: usize,
}

impl Permits {
    fn acquire(&self) {
        let mut n = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= self.limit {
            n = self.changed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
    }

    fn release(&self) {
        let mut n = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        self.changed.notify_all();
    }

    fn drain(&self) {
        let mut n = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = self.changed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// State shared by the orchestrator and all batch jobs of one call.
struct Shared {
    task: Arc<dyn Task>,
    results_dir: Option<PathBuf>,
    /// Destinations and staging: where outputs and staged objects go.
    io: Io,
    /// Whether the task writes output files (an S3 source then needs a
    /// destination: there is no "next to the input").
    writes_files: bool,
    /// Bytes at which a batch closes; `None` for a task whose work per file
    /// does not grow with its size (csv-header reads one record).
    bytes_per_batch: Option<u64>,
    sink: Arc<dyn Sink>,
    /// Raised when the client is gone; checked before each file.
    cancel: Arc<AtomicBool>,
    counters: Arc<Counters>,
    /// Results grouped for the summary; merged once per batch.
    aggregate: Mutex<Aggregate>,
    /// Part files written; appended once per batch.
    part_uris: Mutex<Vec<String>>,
    /// Syncs part files as they are written (with a results_dir).
    syncer: Option<Syncer>,
    /// Settles and reports batches with outputs (a task that writes files
    /// to local folders).
    settler: Option<Settler>,
    permits: Permits,
    metrics: TaskMetrics,
    task_name: String,
}

impl Shared {
    fn send(&self, event: Event) -> bool {
        let ok = self.sink.send(pb::ProcessResponse { event: Some(event) });
        if !ok {
            self.cancel.store(true, Ordering::Relaxed);
        }
        ok
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// One work item's running totals; the last batch to finish reports it.
struct ItemState {
    id: String,
    root: Root,
    /// Batches not yet finished, plus one held by the orchestrator until the
    /// item is fully discovered; whoever takes it to zero sends WorkItemDone.
    pending: AtomicUsize,
    next_sequence: AtomicU32,
    files: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    /// The item's part files, synced in the background as they are
    /// written; waited for when the item is done.
    parts: Arc<SyncGroup>,
    /// The item's span; batches are its children. It ends when the last
    /// batch drops the state.
    span: tracing::Span,
}

impl ItemState {
    fn finish_one(&self, shared: &Shared) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 && !shared.cancelled() {
            // The item's parts must be durable before the client checkpoints it.
            if let Some(dir) = &shared.results_dir {
                if let Err(e) = self.parts.wait(dir) {
                    let failure = FileFailure::from_io(&e, "syncing the part files");
                    return item_failed(shared, &self.id, failure);
                }
            }
            let (files, failed, bytes) = (
                self.files.load(Ordering::Relaxed),
                self.failed.load(Ordering::Relaxed),
                self.bytes.load(Ordering::Relaxed),
            );
            self.span.record("pravah.files", files as i64);
            self.span.record("pravah.files_failed", failed as i64);
            self.span.record("pravah.bytes", bytes as i64);
            shared.send(Event::ItemDone(pb::WorkItemDone {
                work_id: self.id.clone(),
                files: self.files.load(Ordering::Relaxed),
                failed: self.failed.load(Ordering::Relaxed),
                bytes: self.bytes.load(Ordering::Relaxed),
                error: None,
            }));
        }
    }
}

/// A file to process: its relative path, size if known, or a failure found
/// before processing (escaping path, unreadable directory).
struct Job {
    rel: Vec<u8>,
    size: Option<u64>,
    /// Modification time (unix ns), when the listing gave it (an S3
    /// listing does: a task that needs only metadata then asks nothing).
    mtime: Option<i64>,
    failure: Option<FileFailure>,
}

/// Runs a whole Process call; see the module doc. Blocks until done.
pub fn run(
    config: ProcessConfig,
    items: crossbeam_channel::Receiver<pb::WorkItem>,
    sink: Arc<dyn Sink>,
    cancel: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let metrics = METRICS.task(&config.task_name);
    let counters = Arc::new(Counters::default());
    let info = tasks::TASKS.iter().find(|t| t.name == config.task_name);
    let writes_files = info.is_some_and(|t| t.writes_files);
    let bytes_per_batch = match info {
        Some(t) if t.size_independent => None,
        _ => Some(crate::config::PROCESS_BATCH_BYTES),
    };
    let io = Io {
        staging: staging::staging_dir(config.results_dir.as_deref()),
        destination: config.destination,
        s3_destination: config.s3_destination,
    };
    let syncer = config.results_dir.is_some().then(Syncer::start);
    let settler = (writes_files && io.s3_destination.is_none())
        .then(Settler::start)
        .flatten();
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        task_name: config.task_name,
        task: config.task,
        results_dir: config.results_dir,
        io,
        writes_files,
        bytes_per_batch,
        sink: sink.clone(),
        cancel: cancel.clone(),
        counters: counters.clone(),
        aggregate: Mutex::new(Aggregate::default()),
        part_uris: Mutex::new(Vec::new()),
        syncer,
        settler,
        permits: Permits {
            in_flight: Mutex::new(0),
            changed: Condvar::new(),
            limit: 2 * rayon::current_num_threads() + 2,
        },
    });
    let ticker = {
        let (sink, asked) = (sink.clone(), sink.clone());
        Ticker::start(
            counters.clone(),
            config.progress_interval,
            cancel.clone(),
            move |p| {
                sink.send(pb::ProcessResponse {
                    event: Some(Event::Progress(p)),
                })
            },
            move || asked.gone(),
        )
    };
    for item in items.iter() {
        if shared.cancelled() {
            break;
        }
        run_item(&shared, item);
    }
    shared.permits.drain();
    ticker.stop();
    metrics
        .process_duration
        .observe(started.elapsed().as_secs_f64());
    let totals = counters.snapshot();
    let current = tracing::Span::current();
    current.record("pravah.files", totals.files_done as i64);
    current.record("pravah.files_failed", totals.files_failed as i64);
    current.record("pravah.bytes", totals.bytes_done as i64);
    if shared.cancelled() {
        return;
    }
    counters.discovery_complete.store(true, Ordering::Relaxed);
    if !shared.send(Event::Progress(counters.snapshot())) {
        return;
    }
    let summary_json = {
        let agg = shared.aggregate.lock().unwrap_or_else(|e| e.into_inner());
        shared.task.summarize(&agg).to_string()
    };
    let mut part_uris =
        std::mem::take(&mut *shared.part_uris.lock().unwrap_or_else(|e| e.into_inner()));
    part_uris.sort();
    shared.send(Event::Summary(pb::Summary {
        totals: Some(counters.snapshot()),
        summary_json,
        part_uris,
    }));
}

fn item_failed(shared: &Shared, id: &str, failure: FileFailure) {
    tracing::warn!(work_id = %id, error = %failure.message, "work item failed");
    shared.send(Event::ItemDone(pb::WorkItemDone {
        work_id: id.to_owned(),
        error: Some(failure.to_pb(b"")),
        ..Default::default()
    }));
}

fn root_dir(root: &str) -> std::result::Result<Root, FileFailure> {
    Root::resolve(root).map_err(|e| {
        let kind = match e {
            EngineError::SourceNotFound { .. } => FailureKind::NotFound,
            EngineError::OutsideAllowedRoots { .. } | EngineError::BucketNotAllowed { .. } => {
                FailureKind::OutsideRoot
            }
            EngineError::Storage { kind, .. } => kind,
            _ => FailureKind::InvalidData,
        };
        FileFailure::new(kind, e.to_string())
    })
}

fn run_item(shared: &Arc<Shared>, item: pb::WorkItem) {
    use pb::work_item::Target;
    let id = item.id;
    let (root, jobs_or_walk) = match item.target {
        None => {
            item_failed(
                shared,
                &id,
                FileFailure::new(
                    FailureKind::InvalidData,
                    "work item has no target: set chunk, files or source",
                ),
            );
            return;
        }
        Some(Target::Chunk(c)) => {
            let root = match root_dir(&c.root) {
                Ok(r) => r,
                Err(f) => return item_failed(shared, &id, f),
            };
            let path = c.uri.strip_prefix("file://").unwrap_or(&c.uri);
            if let Err(e) = crate::sandbox::check_existing(Path::new(path)) {
                let kind = match e {
                    EngineError::OutsideAllowedRoots { .. } => FailureKind::OutsideRoot,
                    _ => FailureKind::NotFound,
                };
                return item_failed(shared, &id, FileFailure::new(kind, e.to_string()));
            }
            match chunks::read_chunk(Path::new(path)) {
                Ok(entries) => (
                    root,
                    Ok(entries
                        .into_iter()
                        .map(|(rel, size, mtime)| Job {
                            rel,
                            size,
                            mtime,
                            failure: None,
                        })
                        .collect::<Vec<_>>()),
                ),
                Err(f) => return item_failed(shared, &id, f),
            }
        }
        Some(Target::Files(list)) => {
            let root = match root_dir(&list.root) {
                Ok(r) => r,
                Err(f) => return item_failed(shared, &id, f),
            };
            let jobs = list
                .files
                .into_iter()
                .map(|f| Job {
                    rel: if f.raw_path.is_empty() {
                        f.path.into_bytes()
                    } else {
                        f.raw_path
                    },
                    size: (f.size > 0).then_some(f.size),
                    mtime: None,
                    failure: None,
                })
                .collect();
            (root, Ok(jobs))
        }
        Some(Target::Source(spec)) => {
            let root = match root_dir(&spec.source) {
                Ok(r) => r,
                Err(f) => return item_failed(shared, &id, f),
            };
            // The walk runs while outputs are published: a destination
            // inside the walked folder would have its outputs taken as
            // inputs (thumbnails of thumbnails). Listed work is fixed
            // before it starts, so only a walk is refused this way.
            if let (Root::Local(dir), Some(dest)) = (&root, &shared.io.destination) {
                if dest.starts_with(dir) {
                    return item_failed(
                        shared,
                        &id,
                        FileFailure::new(
                            FailureKind::InvalidData,
                            format!(
                                "the destination {} is inside the source {}: its outputs would be walked as inputs; choose a folder outside the source",
                                dest.display(),
                                dir.display()
                            ),
                        ),
                    );
                }
            }
            let fspec: FilterSpec = spec.filters.as_ref().map(Into::into).unwrap_or_default();
            match Filters::compile(&fspec) {
                Ok(filters) => (root, Err(Arc::new(filters))),
                Err(e) => {
                    return item_failed(
                        shared,
                        &id,
                        FileFailure::new(FailureKind::InvalidData, e.to_string()),
                    )
                }
            }
        }
    };
    if matches!(root, Root::S3(_)) && shared.writes_files && !shared.io.has_destination() {
        return item_failed(
            shared,
            &id,
            FileFailure::new(
                FailureKind::InvalidData,
                "this task writes files and the source is on S3: give a destination (a local folder or s3://bucket/prefix)",
            ),
        );
    }
    let span = tracing::info_span!(
        "process.item",
        pravah.work_id = %id,
        pravah.task = %shared.task_name,
        pravah.files = tracing::field::Empty,
        pravah.files_failed = tracing::field::Empty,
        pravah.bytes = tracing::field::Empty,
    );
    let state = Arc::new(ItemState {
        span,
        id,
        root,
        pending: AtomicUsize::new(1),
        next_sequence: AtomicU32::new(0),
        files: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        parts: Arc::default(),
    });
    match jobs_or_walk {
        Ok(jobs) => {
            let c = &shared.counters;
            c.files_discovered
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
            let bytes: u64 = jobs.iter().filter_map(|j| j.size).sum();
            c.bytes_discovered.fetch_add(bytes, Ordering::Relaxed);
            let mut batcher = Batcher::new(shared);
            for job in jobs {
                if shared.cancelled() {
                    break;
                }
                if let Some(batch) = batcher.push(job) {
                    submit(shared, &state, batch);
                }
            }
            if let Some(batch) = batcher.finish().filter(|_| !shared.cancelled()) {
                submit(shared, &state, batch);
            }
        }
        Err(filters) => {
            let walk_span = tracing::info_span!(
                parent: &state.span,
                "list.walk",
                pravah.files = tracing::field::Empty,
                pravah.directories = tracing::field::Empty,
            );
            let walk_started = Instant::now();
            let mut walked = 0u64;
            let rx = match &state.root {
                // Sizes are wanted where batches close at a byte budget.
                Root::Local(dir) => walk::start(
                    dir.clone(),
                    filters,
                    shared.bytes_per_batch.is_some(),
                    shared.cancel.clone(),
                ),
                Root::S3(s3_root) => {
                    match s3_list::start(s3_root.clone(), filters, shared.cancel.clone()) {
                        Ok(rx) => rx,
                        Err(e) => {
                            let (kind, message) = match e {
                                EngineError::Storage { kind, message } => (kind, message),
                                other => (FailureKind::Io, other.to_string()),
                            };
                            // Nothing was submitted: the item's one
                            // message is this failure.
                            return item_failed(shared, &state.id, FileFailure::new(kind, message));
                        }
                    }
                }
            };
            let mut batcher = Batcher::new(shared);
            for ev in rx.iter() {
                if shared.cancelled() {
                    break;
                }
                match ev {
                    WalkEvent::Files(files) => {
                        walked += files.len() as u64;
                        METRICS.walk_files.inc_by(files.len() as u64);
                        shared
                            .counters
                            .files_discovered
                            .fetch_add(files.len() as u64, Ordering::Relaxed);
                        for e in files {
                            // An S3 listing knows sizes; a names-only walk does not.
                            let size = e.meta.map(|m| m.0);
                            if let Some(n) = size {
                                shared
                                    .counters
                                    .bytes_discovered
                                    .fetch_add(n, Ordering::Relaxed);
                            }
                            let job = Job {
                                rel: e.rel,
                                size,
                                mtime: e.meta.map(|m| m.1),
                                failure: None,
                            };
                            if let Some(batch) = batcher.push(job) {
                                submit(shared, &state, batch);
                            }
                        }
                    }
                    WalkEvent::Error { rel, failure } => {
                        shared
                            .counters
                            .files_discovered
                            .fetch_add(1, Ordering::Relaxed);
                        let job = Job {
                            rel,
                            size: Some(0),
                            mtime: None,
                            failure: Some(failure),
                        };
                        if let Some(batch) = batcher.push(job) {
                            submit(shared, &state, batch);
                        }
                    }
                    WalkEvent::Done { directories } => {
                        METRICS.walk_directories.inc_by(directories);
                        walk_span.record("pravah.directories", directories as i64);
                    }
                }
            }
            walk_span.record("pravah.files", walked as i64);
            record_walk_rate(walked, walk_started);
            drop(walk_span);
            if let Some(batch) = batcher.finish().filter(|_| !shared.cancelled()) {
                submit(shared, &state, batch);
            }
        }
    }
    state.finish_one(shared);
}

/// Cuts a stream of files into batches: a batch closes at a file count,
/// or once its known sizes reach a byte budget (a file of unknown size
/// counts nothing; one file above the budget is a batch of its own).
struct Batcher {
    files: usize,
    bytes: Option<u64>,
    batch: Vec<Job>,
    batch_bytes: u64,
}

impl Batcher {
    fn new(shared: &Shared) -> Self {
        Self::with_limits(shared.task.files_per_batch(), shared.bytes_per_batch)
    }

    fn with_limits(files: usize, bytes: Option<u64>) -> Self {
        let files = files.max(1);
        Self {
            files,
            bytes,
            batch: Vec::with_capacity(files.min(crate::config::PROCESS_BATCH_FILES)),
            batch_bytes: 0,
        }
    }

    /// Adds `job`; returns the batch it closed, if any.
    fn push(&mut self, job: Job) -> Option<Vec<Job>> {
        self.batch_bytes = self.batch_bytes.saturating_add(job.size.unwrap_or(0));
        self.batch.push(job);
        let full = self.batch.len() >= self.files
            || self.bytes.is_some_and(|limit| self.batch_bytes >= limit);
        full.then(|| self.take())
    }

    /// The last, partly filled batch.
    fn finish(mut self) -> Option<Vec<Job>> {
        (!self.batch.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<Job> {
        self.batch_bytes = 0;
        let capacity = self.batch.capacity();
        std::mem::replace(&mut self.batch, Vec::with_capacity(capacity))
    }
}

/// Sets the walker-rate gauge from one finished walk.
pub(crate) fn record_walk_rate(files: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    if secs > 0.0 && files > 0 {
        METRICS.walk_rate.set(files as f64 / secs);
    }
}

/// Spawns one batch job on the processing pool, waiting for a permit first.
/// The permit is held until the batch is reported, by this job or, when it
/// has outputs to settle, by the settler.
fn submit(shared: &Arc<Shared>, state: &Arc<ItemState>, batch: Vec<Job>) {
    shared.permits.acquire();
    state.pending.fetch_add(1, Ordering::AcqRel);
    let sequence = state.next_sequence.fetch_add(1, Ordering::Relaxed);
    let shared = shared.clone();
    let state = state.clone();
    rayon::spawn(move || {
        let n = batch.len() as u64;
        let span = tracing::info_span!(
            parent: &state.span,
            "process.batch",
            pravah.work_id = %state.id,
            pravah.sequence = i64::from(sequence),
            pravah.files = n as i64,
            pravah.files_failed = tracing::field::Empty,
            pravah.bytes = tracing::field::Empty,
        );
        let _entered = span.enter();
        METRICS.batches_in_flight.inc();
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_batch(&shared, &state, sequence, batch)
        }));
        shared
            .metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Some(processed)) => {
                if let Some(settler) = &shared.settler {
                    // The settler reports the batch and releases its permit.
                    settler.hand_over(shared.clone(), processed);
                    return;
                }
            }
            Ok(None) => {}
            Err(_) => batch_panicked(&shared, &state, sequence, n),
        }
        batch_over(&shared, &state);
    });
}

/// Counts a batch whose job panicked as failed files.
fn batch_panicked(shared: &Shared, state: &ItemState, sequence: u32, n: u64) {
    shared.metrics.files_processed.inc_by(n);
    shared.metrics.files_failed.inc_by(n);
    tracing::error!(work_id = %state.id, sequence, "batch job panicked");
    state.files.fetch_add(n, Ordering::Relaxed);
    state.failed.fetch_add(n, Ordering::Relaxed);
    shared.counters.files_done.fetch_add(n, Ordering::Relaxed);
    shared.counters.files_failed.fetch_add(n, Ordering::Relaxed);
}

/// The end of a batch, reported or not: its item may be done, and its
/// permit goes back.
fn batch_over(shared: &Shared, state: &ItemState) {
    METRICS.batches_in_flight.dec();
    state.finish_one(shared);
    shared.permits.release();
}

/// Settles processed batches off the processing pool, so the pool's
/// threads compress the next files while the disk catches up.
///
/// Why: settling a batch ([`Outputs::settle`]) waits for the disk twice,
/// and it ran on the pool thread that processed the batch. With 10,000
/// small outputs that wait was 1.5 s of the two pool threads' 9 s,
/// cores idle while work was queued. One thread per Process call takes
/// batches as they are processed, and settles all of those waiting
/// together ([`Outputs::settle_together`]: two `syncfs` per group, not
/// per batch), then reports them in the order they came. A batch's
/// results are still reported only once its outputs are durable, and its
/// permit is released only then, so batches in flight stay bounded.
struct Settler {
    queue: crossbeam_channel::Sender<(Arc<Shared>, Processed)>,
}

impl Settler {
    /// Starts the thread; None when it cannot be spawned (batches are then
    /// settled by their own jobs).
    fn start() -> Option<Self> {
        let (queue, batches) = crossbeam_channel::unbounded::<(Arc<Shared>, Processed)>();
        std::thread::Builder::new()
            .name("pravah-settler".into())
            .spawn(move || {
                while let Ok(first) = batches.recv() {
                    let mut group = vec![first];
                    group.extend(batches.try_iter());
                    settle_group(group);
                }
            })
            .ok()?;
        Some(Settler { queue })
    }

    fn hand_over(&self, shared: Arc<Shared>, processed: Processed) {
        if let Err(crossbeam_channel::SendError((shared, processed))) =
            self.queue.send((shared, processed))
        {
            // The thread is gone (it panicked): settle here.
            settle_group(vec![(shared, processed)]);
        }
    }
}

/// Settles a group of processed batches together, then reports each and
/// ends it. A panic costs the group's files (counted failed), never the
/// permits: every batch is ended whatever happens.
fn settle_group(mut group: Vec<(Arc<Shared>, Processed)>) {
    let outputs: Vec<Outputs> = group
        .iter_mut()
        .map(|(_, p)| std::mem::take(&mut p.outputs))
        .collect();
    let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Outputs::settle_together(outputs)
    }));
    let mut changes = settled.ok().map(Vec::into_iter);
    for (shared, processed) in group {
        let state = processed.state.clone();
        let (sequence, n) = (processed.sequence, processed.done.len() as u64);
        let reported = match changes.as_mut().and_then(Iterator::next) {
            Some(changed) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                report_batch(&shared, processed, changed)
            }))
            .is_ok(),
            None => false,
        };
        if !reported {
            batch_panicked(&shared, &state, sequence, n);
        }
        batch_over(&shared, &state);
    }
}

/// In debug builds only, a file with exactly this name makes the task panic,
/// so tests can prove a panic costs one file and not the call. Release
/// builds (what is shipped) have no such name.
#[cfg(debug_assertions)]
pub const PANIC_TEST_NAME: &str = "__pravah_test_panic__";

/// Runs the task on one file, turning a panic into this file's `internal`
/// failure (the message says it panicked, and why), so one bad file never
/// costs the other files of its batch, the call, or the engine.
fn process_guarded(task: &dyn Task, ctx: &tasks::FileCtx<'_>) -> tasks::FileOutcome {
    guarded(
        ctx.path.as_os_str().as_encoded_bytes(),
        ctx.known_size,
        || task.process(ctx),
    )
}

/// Runs `run` for the file `path`, turning a panic into its `internal`
/// failure; see [`process_guarded`]. Staged files and folders are guards,
/// so a panic still removes them while unwinding.
fn guarded(
    path: &[u8],
    known_size: Option<u64>,
    run: impl FnOnce() -> tasks::FileOutcome,
) -> tasks::FileOutcome {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        #[cfg(debug_assertions)]
        if path.rsplit(|&b| b == b'/').next() == Some(PANIC_TEST_NAME.as_bytes()) {
            panic!("test panic requested by the file name {PANIC_TEST_NAME}");
        }
        run()
    }));
    outcome.unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_owned());
        tracing::error!(path = %String::from_utf8_lossy(path), panic = %why, "task panicked on a file");
        tasks::FileOutcome {
            size: known_size.unwrap_or(0),
            result: Err(FileFailure::new(
                FailureKind::Internal,
                format!("the task panicked on this file ({why}); the other files were processed"),
            )),
        }
    })
}

/// One local file, its path already checked to lie inside the root:
/// settled by its name when the task skips it so, else run by the task.
fn process_local(
    shared: &Shared,
    path: &Path,
    rel: &[u8],
    known_size: Option<u64>,
    outputs: Option<&Outputs>,
) -> tasks::FileOutcome {
    let task = shared.task.as_ref();
    if let Some(outcome) = tasks::FileOutcome::settled_by_name(task, rel, known_size) {
        return outcome;
    }
    shared
        .io
        .with_destination(known_size, rel, None, |destination, elsewhere| {
            let ctx = tasks::FileCtx {
                path,
                rel,
                known_size,
                destination,
                outputs,
                elsewhere,
                cancel: Some(shared.cancel.as_ref()),
                staged: false,
            };
            process_guarded(task, &ctx)
        })
}

/// A batch whose files are processed, waiting for its outputs to settle
/// before its results are reported.
struct Processed {
    state: Arc<ItemState>,
    /// The batch's `process.batch` span: reporting records into it.
    span: tracing::Span,
    sequence: u32,
    done: Vec<(Vec<u8>, bool, tasks::FileOutcome)>,
    outputs: Outputs,
}

/// Processes a batch's files. Returns None when the batch is over (it had
/// no outputs to settle and is reported, or the call was cancelled and its
/// temp outputs are gone); else the batch, for the settler
/// ([`Settler`]) to settle and report while this thread goes on.
fn run_batch(
    shared: &Shared,
    state: &Arc<ItemState>,
    sequence: u32,
    batch: Vec<Job>,
) -> Option<Processed> {
    // Local files open beneath their root; staged S3 objects by path.
    let _beneath = match &state.root {
        Root::Local(dir) => Some(crate::beneath::BatchScope::enter(dir)),
        Root::S3(_) => None,
    };
    // On S3, a stream-reading task gets each object's start fetched ahead.
    let mut heads = match &state.root {
        Root::S3(root) => {
            let files: Vec<(&[u8], Option<u64>)> =
                batch.iter().map(|j| (j.rel.as_slice(), j.size)).collect();
            objects::prefetch(shared.task.as_ref(), root, &files).into_iter()
        }
        Root::Local(_) => Vec::new().into_iter(),
    };
    // Outputs to local folders are synced and published once for the whole
    // batch, before its results are counted and reported (see
    // crate::output). Dropped unsettled on cancellation, it removes their
    // temp files. Outputs staged for an S3 upload are settled per file, as
    // the upload follows the task at once.
    let outputs = Outputs::default();
    let batched = shared.io.s3_destination.is_none().then_some(&outputs);
    let mut done: Vec<(Vec<u8>, bool, tasks::FileOutcome)> = Vec::with_capacity(batch.len());
    // Every local file's full path, joined into one reused buffer.
    let mut path = PathBuf::new();
    for (index, job) in batch.into_iter().enumerate() {
        let head = heads.next().flatten();
        if shared.cancelled() {
            return None;
        }
        outputs.start_file(index);
        let size_was_known = job.size.is_some();
        let outcome = match job.failure {
            Some(f) => tasks::FileOutcome {
                size: job.size.unwrap_or(0),
                result: Err(f),
            },
            None => match &state.root {
                Root::Local(root) => match chunks::join_inside_into(root, &job.rel, &mut path) {
                    Ok(()) => process_local(shared, &path, &job.rel, job.size, batched),
                    Err(f) => tasks::FileOutcome {
                        size: 0,
                        result: Err(f),
                    },
                },
                Root::S3(root) => guarded(&job.rel, job.size, || {
                    objects::process_object(
                        &shared.io,
                        shared.task.as_ref(),
                        root,
                        &job.rel,
                        objects::Listed {
                            size: job.size,
                            mtime: job.mtime,
                        },
                        head,
                        &shared.cancel,
                    )
                }),
            },
        };
        done.push((job.rel, size_was_known, outcome));
    }
    let mut processed = Processed {
        state: state.clone(),
        span: tracing::Span::current(),
        sequence,
        done,
        outputs,
    };
    if processed.outputs.is_empty() || shared.settler.is_none() {
        // Nothing to wait for, or no settler thread could be started.
        let changed = std::mem::take(&mut processed.outputs).settle();
        report_batch(shared, processed, changed);
        return None;
    }
    Some(processed)
}

/// Applies what settling changed to a processed batch (whose outputs are
/// settled), then accounts for it, writes its part file and sends its
/// BatchResult.
fn report_batch(shared: &Shared, processed: Processed, changed: Vec<(usize, Settled)>) {
    let Processed {
        state,
        span,
        sequence,
        mut done,
        outputs: _,
    } = processed;
    let _entered = span.enter();
    for (index, settled) in changed {
        done[index].2.result = match settled {
            Settled::Skipped(result) => Ok(result),
            Settled::Failed(f) => Err(f),
        };
    }
    let mut agg = Aggregate::default();
    let mut part: Vec<u8> = Vec::new();
    let mut streamed: Vec<pb::FileResult> = Vec::new();
    let (mut files, mut failed, mut bytes, mut bytes_failed) = (0u64, 0u64, 0u64, 0u64);
    // Bytes of files whose size the discovery did not know (names-only walk).
    let mut newly_sized = 0u64;
    for (rel, size_was_known, outcome) in done {
        files += 1;
        bytes += outcome.size;
        if !size_was_known {
            newly_sized += outcome.size;
        }
        if outcome.result.is_err() {
            failed += 1;
            bytes_failed += outcome.size;
        }
        shared
            .task
            .account(&mut agg, &rel, outcome.size, &outcome.result);
        if shared.results_dir.is_some() {
            push_part_line(&mut part, &rel, outcome.size, &outcome.result);
        } else {
            let (path, raw_path) = display_path(&rel);
            let outcome_pb = match outcome.result {
                Ok(json) => pb::file_result::Outcome::ResultJson(json),
                Err(f) => pb::file_result::Outcome::Error(f.to_pb(&rel)),
            };
            streamed.push(pb::FileResult {
                path,
                raw_path,
                size: outcome.size,
                outcome: Some(outcome_pb),
            });
        }
    }
    let c = &shared.counters;
    let part_uri = match &shared.results_dir {
        Some(dir) => {
            let name = format!("part-{}-{sequence:06}.jsonl", state.id);
            match write_atomic(dir, &name, &part) {
                Ok(path) => {
                    let uri = path.to_string_lossy().into_owned();
                    if let Some(syncer) = &shared.syncer {
                        syncer.sync_later(path, &state.parts);
                    }
                    shared
                        .part_uris
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(uri.clone());
                    uri
                }
                Err(e) => {
                    // The results are lost: count the whole batch as failed.
                    tracing::error!(error = %e, part = %name, "cannot write part file");
                    failed = files;
                    bytes_failed = bytes;
                    String::new()
                }
            }
        }
        None => String::new(),
    };
    let m = &shared.metrics;
    m.files_processed.inc_by(files);
    m.files_failed.inc_by(failed);
    m.bytes_processed.inc_by(bytes);
    m.bytes_failed.inc_by(bytes_failed);
    span.record("pravah.files_failed", failed as i64);
    span.record("pravah.bytes", bytes as i64);
    c.bytes_discovered.fetch_add(newly_sized, Ordering::Relaxed);
    c.files_done.fetch_add(files, Ordering::Relaxed);
    c.files_failed.fetch_add(failed, Ordering::Relaxed);
    c.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    c.bytes_failed.fetch_add(bytes_failed, Ordering::Relaxed);
    state.files.fetch_add(files, Ordering::Relaxed);
    state.failed.fetch_add(failed, Ordering::Relaxed);
    state.bytes.fetch_add(bytes, Ordering::Relaxed);
    shared
        .aggregate
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .merge(agg);
    if shared.cancelled() {
        return;
    }
    shared.send(Event::Batch(pb::BatchResult {
        work_id: state.id.clone(),
        sequence,
        files,
        failed,
        part_uri,
        results: streamed,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Panicky;

    fn guarded(task: &dyn Task, path: &Path, known_size: Option<u64>) -> tasks::FileOutcome {
        let ctx = tasks::FileCtx {
            path,
            rel: path.as_os_str().as_encoded_bytes(),
            known_size,
            destination: None,
            outputs: None,
            elsewhere: None,
            cancel: None,
            staged: false,
        };
        process_guarded(task, &ctx)
    }

    impl Task for Panicky {
        fn process_file(&self, path: &Path, _known_size: Option<u64>) -> tasks::FileOutcome {
            if path.ends_with("bad") {
                panic!("boom on {}", path.display());
            }
            tasks::FileOutcome {
                size: 1,
                result: Ok("{}".to_owned()),
            }
        }

        fn summarize(&self, _agg: &Aggregate) -> serde_json::Value {
            serde_json::Value::Null
        }
    }

    #[test]
    fn a_task_panic_costs_only_its_file() {
        let bad = guarded(&Panicky, Path::new("/x/bad"), Some(7));
        let failure = bad.result.expect_err("the panic becomes a failure");
        assert_eq!(failure.kind, FailureKind::Internal);
        assert!(
            failure.message.contains("boom on /x/bad"),
            "{}",
            failure.message
        );
        assert_eq!(bad.size, 7);
        let good = guarded(&Panicky, Path::new("/x/good"), None);
        assert_eq!(good.result.ok().as_deref(), Some("{}"));
    }

    #[cfg(debug_assertions)]
    #[test]
    fn the_test_panic_name_panics_in_debug_builds() {
        let out = guarded(&Panicky, &Path::new("/x").join(PANIC_TEST_NAME), None);
        let failure = out
            .result
            .expect_err("debug builds panic on the magic name");
        assert!(
            failure.message.contains("test panic"),
            "{}",
            failure.message
        );
    }

    /// Records what a Process call reports, and whether any batch was
    /// reported before its outputs were published and its originals gone.
    struct SettledCheck {
        root: PathBuf,
        /// (files reported, batches, files reported too early, summaries)
        seen: Mutex<(usize, usize, usize, usize)>,
    }

    impl Sink for SettledCheck {
        fn send(&self, msg: pb::ProcessResponse) -> bool {
            let mut seen = self.seen.lock().unwrap();
            match msg.event {
                Some(Event::Batch(b)) => {
                    seen.1 += 1;
                    for r in &b.results {
                        seen.0 += 1;
                        let original = self.root.join(&r.path);
                        let output = self.root.join(format!("{}.zst", r.path));
                        if original.exists() || !output.exists() {
                            seen.2 += 1;
                        }
                    }
                }
                Some(Event::Summary(_)) => seen.3 += 1,
                _ => {}
            }
            true
        }
    }

    /// Compresses every file of `root` (originals removed) in one Process
    /// call; returns (files reported, batches, files reported too early,
    /// summaries).
    fn compress_folder(root: &Path) -> (usize, usize, usize, usize) {
        let start = pb::ProcessStart {
            task: "compress".into(),
            options_json: r#"{"format":"zstd","keep_original":false}"#.into(),
            ..Default::default()
        };
        let config = ProcessConfig::from_start(&start).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(pb::WorkItem {
            id: "dir".into(),
            target: Some(pb::work_item::Target::Source(pb::SourceSpec {
                source: root.to_string_lossy().into_owned(),
                filters: None,
            })),
        })
        .unwrap();
        drop(tx);
        let sink = Arc::new(SettledCheck {
            root: root.to_owned(),
            seen: Mutex::new((0, 0, 0, 0)),
        });
        run(config, rx, sink.clone(), Arc::new(AtomicBool::new(false)));
        let seen = *sink.seen.lock().unwrap();
        seen
    }

    #[test]
    fn batches_settled_off_the_pool_are_reported_after_their_outputs_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        // Three batches, the last one short.
        let n = crate::config::PROCESS_BATCH_FILES * 2 + 7;
        for i in 0..n {
            std::fs::write(
                root.join(format!("f{i}.log")),
                format!("line {i}\n").repeat(9),
            )
            .unwrap();
        }
        let (files, batches, early, summaries) = compress_folder(&root);
        assert_eq!((files, batches, summaries), (n, 3, 1));
        assert_eq!(early, 0, "a batch was reported before it was settled");
        // Every original was replaced by its output, and no temp is left.
        let names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), n);
        assert!(names.iter().all(|n| n.ends_with(".log.zst")), "{names:?}");
    }

    #[test]
    fn files_above_the_byte_budget_are_batches_of_their_own() {
        // Two files a little over the budget: one batch each, so each can
        // take a core, where a count alone made them one batch on one.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let size = crate::config::PROCESS_BATCH_BYTES as usize + 1;
        for i in 0..2 {
            std::fs::write(root.join(format!("big{i}.log")), vec![b'a' + i as u8; size]).unwrap();
        }
        let (files, batches, early, summaries) = compress_folder(&root);
        assert_eq!((files, batches, early, summaries), (2, 2, 0, 1));
    }

    fn job(size: Option<u64>) -> Job {
        Job {
            rel: b"f".to_vec(),
            size,
            mtime: None,
            failure: None,
        }
    }

    /// Batch lengths the batcher cuts from files of `sizes`.
    fn cut(files: usize, bytes: Option<u64>, sizes: &[Option<u64>]) -> Vec<usize> {
        let mut batcher = Batcher::with_limits(files, bytes);
        let mut lens: Vec<usize> = sizes
            .iter()
            .filter_map(|&s| batcher.push(job(s)))
            .map(|b| b.len())
            .collect();
        lens.extend(batcher.finish().map(|b| b.len()));
        lens
    }

    #[test]
    fn a_batch_closes_at_its_file_count_or_byte_budget() {
        let mb = |n: u64| Some(n << 20);
        // By count alone, sizes ignored (a size-independent task).
        assert_eq!(cut(2, None, &[mb(100), mb(100), mb(100)]), [2, 1]);
        // By bytes: small files gather until the budget, a big one closes
        // its batch, and a file above the budget is a batch of its own.
        assert_eq!(
            cut(
                1000,
                mb(16),
                &[mb(5), mb(5), mb(6), mb(20), mb(1), mb(40), mb(1)]
            ),
            [3, 1, 2, 1]
        );
        // Unknown sizes count nothing: only the count closes a batch.
        assert_eq!(cut(3, mb(16), &[None; 7]), [3, 3, 1]);
        assert!(cut(3, mb(16), &[]).is_empty());
    }
}
