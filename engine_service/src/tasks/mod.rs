//! The task registry: every task's name, version, description and option
//! and result JSON Schemas are declared here once, served by
//! GetCapabilities, and used to build a task from a Process start message.
//!
//! A task is a pure per-file function ([`Task::process_file`]) that runs on
//! the processing pool, plus a summary over all its results. Per-file
//! results are JSON objects; the engine writes them merged into part-file
//! lines and groups identical results for the summary.
//!
//! Tasks that write files ([`compress`], [`extract`], [`thumbnail`], ...)
//! get a [`FileCtx`] with the file's relative path and the call's
//! destination, and write through [`crate::output`], which keeps every
//! output inside the destination and atomic.
use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_128;

use crate::error::{EngineError, Result};
use crate::results::FileFailure;

pub mod compress;
pub mod convert;
pub mod csv_header;
mod csv_quotes;
pub mod extract;
pub mod hash;
pub mod inventory;
pub mod thumbnail;

/// One file's outcome: its size and the task's result object or failure.
pub struct FileOutcome {
    pub size: u64,
    pub result: std::result::Result<String, FileFailure>,
}

impl FileOutcome {
    /// Runs `run` with the file's size read first. A file that cannot even
    /// be stat'ed (vanished, unreadable) fails with `doing` as the context
    /// and keeps the size the listing gave.
    pub fn sized(
        ctx: &FileCtx<'_>,
        doing: &str,
        run: impl FnOnce(u64) -> std::result::Result<String, FileFailure>,
    ) -> Self {
        match std::fs::metadata(ctx.path) {
            Ok(m) => FileOutcome {
                size: m.len(),
                result: run(m.len()),
            },
            Err(e) => FileOutcome {
                size: ctx.known_size.unwrap_or(0),
                result: Err(FileFailure::from_io(&e, doing)),
            },
        }
    }

    /// The outcome of a file that `task` settles by its name alone
    /// ([`Task::skipped_by_name`]), so it is never opened and, on S3,
    /// never downloaded: a nightly compress over a folder that holds last
    /// night's `.gz` files reads none of them. Only when the listing gave
    /// the size, so the skipped file's bytes are still counted.
    pub fn settled_by_name(task: &dyn Task, rel: &[u8], known_size: Option<u64>) -> Option<Self> {
        let size = known_size?;
        let result = task.skipped_by_name(Path::new(std::ffi::OsStr::from_bytes(rel)))?;
        Some(FileOutcome {
            size,
            result: Ok(result),
        })
    }
}

/// Everything a task knows about one file.
pub struct FileCtx<'a> {
    /// The file's full path (inside the source root).
    pub path: &'a Path,
    /// Its path relative to the source root, as raw bytes.
    pub rel: &'a [u8],
    /// The size from the listing, if any (the task then need not stat).
    pub known_size: Option<u64>,
    /// The call's destination directory (canonical, existing), if one was
    /// given; tasks that write outputs mirror `rel` under it.
    pub destination: Option<&'a Path>,
    /// The batch's outputs, which tasks that write hand their outputs to
    /// (synced and published when the batch settles); None settles each
    /// output at once.
    pub outputs: Option<&'a crate::output::Outputs>,
    /// Where outputs written under `destination` really go, when that is a
    /// staged folder (an S3 destination); None for a local destination.
    pub elsewhere: Option<&'a dyn crate::output::OutputsElsewhere>,
    /// The call's cancel flag (None when nothing can cancel, as in tests);
    /// tasks that stream a file read it through [`FileCtx::cancellable`].
    pub cancel: Option<&'a AtomicBool>,
    /// `path` is a local copy of an object-store object: its inode and
    /// times are the copy's, and a later copy may get the same inode.
    pub staged: bool,
}

impl<'a> FileCtx<'a> {
    /// Whether the output file a task would write at `out` already exists,
    /// here or at its real place ([`FileCtx::elsewhere`]): what the
    /// `existing` policy asks before any work is done.
    pub fn output_exists(&self, out: &Path) -> bool {
        out.exists() || self.elsewhere.is_some_and(|e| e.exists(out, false))
    }

    /// [`FileCtx::output_exists`] for an output folder (extract's).
    pub fn output_folder_exists(&self, out: &Path) -> bool {
        out.exists() || self.elsewhere.is_some_and(|e| e.exists(out, true))
    }

    /// `inner`, failing every read once the call is cancelled. A task that
    /// streams a big file through it stops within one read of a cancel
    /// (a Ctrl-C on `pravah run`), not at the file's end: a 10 GB log is
    /// not compressed to the last byte for nobody, and its temporary output
    /// goes away as on any other failure.
    pub fn cancellable<R>(&self, inner: R) -> Cancellable<'a, R> {
        Cancellable::new(inner, self.cancel)
    }

    /// The `fail` policy's failure for output `out`, naming where it is
    /// (with `elsewhere` the local folder is a fresh staging one, so an
    /// existing output can only be at its real place).
    pub fn exists_failure(&self, out: &Path) -> FileFailure {
        match self.elsewhere {
            Some(e) => e.exists_failure(out),
            None => crate::output::exists_failure(out),
        }
    }
}

/// A reader that fails once its call is cancelled ([`FileCtx::cancellable`]).
pub struct Cancellable<'a, R> {
    inner: R,
    cancel: Option<&'a AtomicBool>,
}

impl<'a, R> Cancellable<'a, R> {
    pub fn new(inner: R, cancel: Option<&'a AtomicBool>) -> Self {
        Cancellable { inner, cancel }
    }
}

impl<R: std::io::Read> std::io::Read for Cancellable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(std::io::Error::other("the job was cancelled"));
        }
        self.inner.read(buf)
    }
}

/// A task as the engine runs it. Implement [`Task::process`] (tasks that
/// need the relative path or destination) or [`Task::process_file`] (pure
/// readers); each defaults to the other.
pub trait Task: Send + Sync {
    /// Processes one file. `known_size` is the size from the listing, if any
    /// (the task then need not stat the file).
    fn process_file(&self, path: &Path, known_size: Option<u64>) -> FileOutcome {
        self.process(&FileCtx {
            path,
            rel: path.as_os_str().as_encoded_bytes(),
            known_size,
            destination: None,
            outputs: None,
            elsewhere: None,
            cancel: None,
            staged: false,
        })
    }
    /// Processes one file with its full context.
    fn process(&self, ctx: &FileCtx<'_>) -> FileOutcome {
        self.process_file(ctx.path, ctx.known_size)
    }
    /// Most files in one batch (see [`crate::process`]): a batch runs on one
    /// thread and reports, syncs and publishes its outputs at its end. The
    /// default suits tasks that take a millisecond or less per file; a task
    /// that takes tens of milliseconds per file (decoding photos) asks for
    /// small batches, so a few hundred files still spread over every core
    /// and their results and outputs appear as they go.
    fn files_per_batch(&self) -> usize {
        crate::config::PROCESS_BATCH_FILES
    }
    /// Whether the task reads a file as one stream from its start
    /// ([`Task::process_reader`]), so an object-store file need not be
    /// staged locally first.
    fn reads_streams(&self) -> bool {
        false
    }
    /// Processes one file read from `reader` (`size` bytes) instead of a
    /// path; only called when [`Task::reads_streams`] is true.
    fn process_reader(&self, reader: &mut dyn std::io::Read, size: u64) -> FileOutcome {
        let _ = reader;
        FileOutcome {
            size,
            result: Err(FileFailure::new(
                crate::results::FailureKind::Internal,
                "this task cannot read streams",
            )),
        }
    }
    /// The task's result for input `rel` when its name alone settles it (a
    /// file it skips by extension), None otherwise. The engine then skips
    /// the file before opening or downloading it
    /// ([`FileOutcome::settled_by_name`]). `process` must give the same
    /// result for such a file, as it still sees files the listing gave no
    /// size for; a test holds every task to that.
    fn skipped_by_name(&self, rel: &Path) -> Option<String> {
        let _ = rel;
        None
    }
    /// The output file the task would write for input `rel`, relative to
    /// the destination, when the input's name alone decides it; None when
    /// it writes nothing or needs the content to tell. An S3 source with
    /// an S3 destination then looks the output up before the object is
    /// downloaded ([`crate::storage::objects`]), so a re-run's `skip` costs
    /// one HEAD, not a download. Must agree with the name `process` uses.
    fn planned_output(&self, rel: &Path) -> Option<std::path::PathBuf> {
        let _ = rel;
        None
    }
    /// Whether the task needs only a file's size and modification time
    /// ([`Task::process_metadata`]): an object-store file is then never
    /// downloaded (the listing gave both, or one HEAD tells them), and its
    /// time is the object's, not a staged copy's.
    fn metadata_only(&self) -> bool {
        false
    }
    /// The outcome for file `rel` of `size` bytes modified at `mtime`
    /// (seconds since the epoch); only called when
    /// [`Task::metadata_only`] is true.
    fn process_metadata(&self, rel: &[u8], size: u64, mtime: i64) -> FileOutcome {
        let _ = (rel, mtime);
        FileOutcome {
            size,
            result: Err(FileFailure::new(
                crate::results::FailureKind::Internal,
                "this task reads content, not only metadata",
            )),
        }
    }
    /// Whether the task reads a file by byte ranges
    /// ([`Task::process_ranges`]), so an object-store file is read in place
    /// with ranged GETs rather than staged whole on local disk.
    fn reads_ranges(&self) -> bool {
        false
    }
    /// Processes one file read through `source` (random access by byte
    /// ranges) instead of a local path; only called when
    /// [`Task::reads_ranges`] is true. `ctx.path` is then the file's
    /// relative path, not a local file, and `ctx.destination` is set.
    fn process_ranges(
        &self,
        ctx: &FileCtx<'_>,
        source: Arc<dyn crate::storage::blocks::RangeSource>,
    ) -> FileOutcome {
        let _ = (ctx, source);
        FileOutcome {
            size: ctx.known_size.unwrap_or(0),
            result: Err(FileFailure::new(
                crate::results::FailureKind::Internal,
                "this task cannot read by ranges",
            )),
        }
    }
    /// Adds one outcome to a batch's aggregate. The default groups identical
    /// results; tasks whose results are unique per file (outputs, hashes)
    /// keep their own counters instead so the aggregate stays small.
    fn account(
        &self,
        agg: &mut Aggregate,
        rel: &[u8],
        size: u64,
        result: &std::result::Result<String, FileFailure>,
    ) {
        let _ = size;
        agg.add(rel, result);
    }
    /// The summary JSON of all results.
    fn summarize(&self, agg: &Aggregate) -> serde_json::Value;
}

/// What the registry knows of a task.
pub struct TaskInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    pub options_schema: fn() -> serde_json::Value,
    pub result_schema: fn() -> serde_json::Value,
    /// Whether the task writes output files (under the destination).
    pub writes_files: bool,
    /// Whether the work per file stays the same whatever the file's size
    /// (see `size_independent` in the proto): listings for it skip sizes.
    pub size_independent: bool,
    /// Builds the task from its options JSON ("" means defaults); the error
    /// is a sentence naming the bad option.
    pub build: fn(&str) -> std::result::Result<Arc<dyn Task>, String>,
}

/// All tasks this engine runs.
pub static TASKS: &[TaskInfo] = &[
    csv_header::INFO,
    compress::COMPRESS,
    compress::DECOMPRESS,
    extract::INFO,
    thumbnail::INFO,
    convert::INFO,
    hash::INFO,
    inventory::INFO,
];

/// Parses a task's options JSON ("" means defaults) into its options type,
/// whose serde attributes (`deny_unknown_fields`, `default`) mirror the
/// declared schema.
pub fn parse_options<T: serde::de::DeserializeOwned + Default>(
    options_json: &str,
) -> std::result::Result<T, String> {
    if options_json.trim().is_empty() {
        Ok(T::default())
    } else {
        serde_json::from_str(options_json).map_err(|e| e.to_string())
    }
}

/// Finds a task by name and builds it from its options.
pub fn build(name: &str, options_json: &str) -> Result<Arc<dyn Task>> {
    let info = TASKS
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| EngineError::UnknownTask {
            name: name.to_owned(),
            known: TASKS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
        })?;
    (info.build)(options_json).map_err(|message| EngineError::BadOptions {
        task: name.to_owned(),
        message,
    })
}

/// A group's example is its smallest path, not the first one a thread
/// reached: the same files give the same summary on every run.
fn keep_smaller(example: &mut String, candidate: &str) {
    if candidate < example.as_str() {
        candidate.clone_into(example);
    }
}

/// Identical results grouped, for the summary; built per batch on worker
/// threads and merged once per batch.
///
/// Results grouped by [`Aggregate::add`] are kept whole up to
/// [`GROUP_BYTES_KEPT`] bytes of distinct results; beyond that, a new one is
/// counted under a 128-bit hash only (`unkept`). Why: csv-header groups by
/// header, and headerless or generated files can give every file its own
/// header of up to `max_header_bytes` (1 MiB), so 100,000 such files held
/// whole would take some 100 GB. Summaries list kept groups only and count
/// the others; every file's own result is in the result files either way.
#[derive(Debug, Default)]
pub struct Aggregate {
    /// result JSON -> (files, example path)
    pub groups: HashMap<String, (u64, String)>,
    /// Bytes of the keys in `groups` (and their examples).
    group_bytes: usize,
    /// Distinct results beyond [`GROUP_BYTES_KEPT`]: their hash -> files.
    pub unkept: HashMap<u128, u64>,
    pub files: u64,
    pub failed: u64,
    /// Named totals a task keeps (bytes written, files skipped, ...).
    pub counters: BTreeMap<String, u64>,
    /// Largest files seen, (size, path), at most [`LARGEST_KEPT`].
    pub largest: Vec<(u64, String)>,
}

/// How many of the largest files an aggregate keeps (`pravah.summaries`
/// keeps as many when it merges chunks).
pub const LARGEST_KEPT: usize = 20;

/// Most bytes of distinct results (and their example paths) an aggregate
/// keeps whole; see [`Aggregate`].
pub const GROUP_BYTES_KEPT: usize = 64 << 20;

impl Aggregate {
    pub fn add(&mut self, rel: &[u8], result: &std::result::Result<String, FileFailure>) {
        self.files += 1;
        match result {
            Ok(json) => match self.groups.get_mut(json.as_str()) {
                Some(g) => {
                    g.0 += 1;
                    keep_smaller(&mut g.1, &String::from_utf8_lossy(rel));
                }
                None => self.new_group(json.clone(), 1, rel),
            },
            Err(_) => self.failed += 1,
        }
    }

    /// Starts the group `key` with `n` files: whole while the budget lasts,
    /// else counted by its hash.
    fn new_group(&mut self, key: String, n: u64, example: &[u8]) {
        let bytes = key.len() + example.len();
        if self.unkept.is_empty() && self.group_bytes + bytes <= GROUP_BYTES_KEPT {
            self.group_bytes += bytes;
            let example = String::from_utf8_lossy(example).into_owned();
            self.groups.insert(key, (n, example));
        } else {
            *self.unkept.entry(xxh3_128(key.as_bytes())).or_default() += n;
        }
    }

    /// Distinct results, kept or not.
    pub fn distinct(&self) -> usize {
        self.groups.len() + self.unkept.len()
    }

    /// Files whose results were counted by hash only.
    pub fn unkept_files(&self) -> u64 {
        self.unkept.values().sum()
    }

    /// Adds `n` to a named counter.
    pub fn count(&mut self, key: &str, n: u64) {
        match self.counters.get_mut(key) {
            Some(v) => *v += n,
            None => {
                self.counters.insert(key.to_owned(), n);
            }
        }
    }

    /// Adds a file to the group `key` (files and bytes per group).
    pub fn group(&mut self, key: &str, size: u64, rel: &[u8]) {
        match self.groups.get_mut(key) {
            Some(g) => {
                g.0 += 1;
                keep_smaller(&mut g.1, &String::from_utf8_lossy(rel));
            }
            None => {
                let example = String::from_utf8_lossy(rel).into_owned();
                self.groups.insert(key.to_owned(), (1, example));
            }
        }
        self.count(&format!("bytes:{key}"), size);
    }

    /// Offers a file to the largest-files list.
    pub fn offer_largest(&mut self, size: u64, rel: &[u8]) {
        if self.largest.len() >= LARGEST_KEPT
            && self.largest.last().is_some_and(|(s, _)| *s >= size)
        {
            return;
        }
        self.largest
            .push((size, String::from_utf8_lossy(rel).into_owned()));
        self.largest
            .sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        self.largest.truncate(LARGEST_KEPT);
    }

    pub fn merge(&mut self, other: Aggregate) {
        self.files += other.files;
        self.failed += other.failed;
        for (k, v) in other.counters {
            self.count(&k, v);
        }
        for (size, path) in other.largest {
            self.offer_largest(size, path.as_bytes());
        }
        // Only results grouped by `add` count against the budget; groups a
        // task keeps itself (hash's duplicates, inventory's folders) are
        // merged whole, as its summary needs every one.
        let budgeted = other.group_bytes > 0 || !other.unkept.is_empty();
        for (key, (n, example)) in other.groups {
            match self.groups.get_mut(key.as_str()) {
                Some(g) => {
                    g.0 += n;
                    keep_smaller(&mut g.1, &example);
                }
                None if budgeted => self.new_group(key, n, example.as_bytes()),
                None => {
                    self.groups.insert(key, (n, example));
                }
            }
        }
        if other.unkept.is_empty() {
            return;
        }
        // A result `other` counted by hash may be one kept whole here.
        let kept: HashMap<u128, &str> = self
            .groups
            .keys()
            .map(|k| (xxh3_128(k.as_bytes()), k.as_str()))
            .collect();
        let mut found: Vec<(String, u64)> = Vec::new();
        for (hash, n) in other.unkept {
            match kept.get(&hash) {
                Some(key) => found.push(((*key).to_owned(), n)),
                None => *self.unkept.entry(hash).or_default() += n,
            }
        }
        for (key, n) in found {
            if let Some(g) = self.groups.get_mut(key.as_str()) {
                g.0 += n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Distinct results past the budget are counted, not kept, whatever
    /// the order batches are merged in; results seen again stay one group.
    #[test]
    fn distinct_results_past_the_budget_are_counted_by_hash() {
        let big = "h".repeat(1 << 20);
        let result = |i: usize| Ok(format!(r#"{{"columns":["{big}","{i}"]}}"#));
        let kept = GROUP_BYTES_KEPT >> 20; // about this many 1 MiB results fit
        let mut a = Aggregate::default();
        for i in 0..kept + 30 {
            a.add(format!("{i}.csv").as_bytes(), &result(i));
        }
        assert!(a.group_bytes <= GROUP_BYTES_KEPT);
        assert!(a.groups.len() < kept && a.groups.len() > kept - 3);
        assert_eq!(a.distinct(), kept + 30);
        assert_eq!(a.unkept_files(), (kept + 30 - a.groups.len()) as u64);
        // The same results again, in another batch: no new distinct ones.
        let mut b = Aggregate::default();
        for i in (0..kept + 30).rev() {
            b.add(format!("again-{i}.csv").as_bytes(), &result(i));
        }
        let mut merged = Aggregate::default();
        merged.merge(b);
        merged.merge(a);
        assert_eq!(merged.distinct(), kept + 30);
        assert_eq!(merged.files, 2 * (kept as u64 + 30));
        assert_eq!(
            merged.groups.values().map(|g| g.0).sum::<u64>() + merged.unkept_files(),
            merged.files
        );
        assert!(merged.group_bytes <= GROUP_BYTES_KEPT);
    }

    /// A group's example is its smallest path, whichever file a thread
    /// reached first and in whichever order batches merge: the same files
    /// give the same summary on every run.
    #[test]
    fn a_groups_example_is_its_smallest_path_in_any_order() {
        let ok = || Ok(r#"{"columns":["a"]}"#.to_owned());
        let paths = ["m/x.csv", "b.csv", "z.csv", "a/y.csv"];
        let mut examples = Vec::new();
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
            let (mut first, mut second) = (Aggregate::default(), Aggregate::default());
            for (n, i) in order.iter().enumerate() {
                let batch = if n % 2 == 0 { &mut first } else { &mut second };
                batch.add(paths[*i].as_bytes(), &ok());
                batch.group("k", 1, paths[*i].as_bytes());
            }
            let mut merged = Aggregate::default();
            merged.merge(second);
            merged.merge(first);
            let mut found: Vec<_> = merged.groups.values().map(|g| g.1.clone()).collect();
            found.sort();
            examples.push(found);
        }
        assert_eq!(examples[0], ["a/y.csv", "a/y.csv"]);
        assert!(examples.iter().all(|e| *e == examples[0]));
    }

    /// Groups a task keeps itself (hash, inventory) are not results of
    /// `add`: merging keeps every one of them, past the budget too.
    #[test]
    fn groups_kept_by_tasks_are_merged_whole() {
        let big = "k".repeat(1 << 20);
        let mut batch = Aggregate::default();
        let groups = (GROUP_BYTES_KEPT >> 20) + 10;
        for i in 0..groups {
            batch.group(&format!("{big}{i}"), 1, b"f");
        }
        let mut call = Aggregate::default();
        call.merge(batch);
        assert_eq!(call.groups.len(), groups);
        assert!(call.unkept.is_empty());
    }

    /// A PNG of 4x3 pixels.
    fn png() -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::new(4, 3)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// `planned_output` names exactly what `process` writes (a skip decided
    /// by the planned name must be about the real output), and nothing for
    /// inputs the task would not write for.
    #[test]
    fn planned_outputs_are_the_outputs_process_writes() {
        let csv = b"a,b\n1,2\n".to_vec();
        let cases: &[(&str, &str, &str, Vec<u8>)] = &[
            (
                "compress",
                r#"{"format":"gzip"}"#,
                "d/a.log",
                b"log".to_vec(),
            ),
            ("compress", r#"{"format":"zstd"}"#, "a.tar", b"tar".to_vec()),
            ("decompress", "{}", "d/a.log.gz", gzip(b"x")),
            ("decompress", "{}", "b.tgz", gzip(b"x")),
            ("decompress", "{}", "noext", gzip(b"x")),
            ("convert", r#"{"to":"jsonl"}"#, "t.csv", csv.clone()),
            (
                "convert",
                r#"{"to":"parquet"}"#,
                "d/t.tsv",
                b"a\tb\n1\t2\n".to_vec(),
            ),
            (
                "convert",
                r#"{"to":"csv"}"#,
                "r.jsonl",
                b"{\"a\":1}\n".to_vec(),
            ),
            ("thumbnail", r#"{"width":2,"height":2}"#, "p/a.png", png()),
            (
                "thumbnail",
                r#"{"width":2,"height":2,"format":"png"}"#,
                "B.PNG",
                png(),
            ),
        ];
        for (name, options, rel, data) in cases {
            let src = tempfile::tempdir().unwrap();
            let dest = tempfile::tempdir().unwrap();
            let path = src.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, data).unwrap();
            let task = build(name, options).unwrap();
            let outcome = task.process(&FileCtx {
                path: &path,
                rel: rel.as_bytes(),
                known_size: None,
                destination: Some(dest.path()),
                outputs: None,
                elsewhere: None,
                cancel: None,
                staged: false,
            });
            let result: serde_json::Value = serde_json::from_str(&outcome.result.unwrap()).unwrap();
            let written = result["output"].as_str().unwrap();
            let planned = task.planned_output(Path::new(rel)).unwrap();
            assert_eq!(planned, Path::new(written), "{name} {options} {rel}");
            assert!(dest.path().join(written).is_file(), "{name} {rel}");
        }
        let none = [
            ("convert", r#"{"to":"jsonl"}"#, "notes.txt"),
            ("thumbnail", "{}", "notes.txt"),
            ("hash", "{}", "a.bin"),
            ("compress", "{}", "a.log.gz"), // skipped as already compressed
            ("extract", "{}", "a.zip"),     // a folder, named by the archive's kind
        ];
        for (name, options, rel) in none {
            let task = build(name, options).unwrap();
            assert_eq!(task.planned_output(Path::new(rel)), None, "{name} {rel}");
        }
    }

    /// A file skipped by its name gets the result `process` gives it, and
    /// only the names `process` skips unread are skipped so.
    #[test]
    fn a_file_skipped_by_its_name_gets_what_process_gives_it() {
        let skipped: &[(&str, &str, &str)] = &[
            ("compress", "{}", "d/a.log.GZ"),
            ("compress", r#"{"format":"zstd"}"#, "b.zip"),
            ("thumbnail", r#"{"width":2,"height":2}"#, "p/notes.txt"),
            ("thumbnail", r#"{"width":2,"height":2}"#, "noext"),
            ("convert", r#"{"to":"csv"}"#, "t.csv"),
            ("convert", r#"{"to":"parquet"}"#, "r.jsonl"),
        ];
        for (name, options, rel) in skipped {
            let src = tempfile::tempdir().unwrap();
            let path = src.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"not what the name says").unwrap();
            let task = build(name, options).unwrap();
            let by_name = task.skipped_by_name(Path::new(rel));
            assert!(by_name.is_some(), "{name} {rel}");
            let outcome = task.process(&FileCtx {
                path: &path,
                rel: rel.as_bytes(),
                known_size: None,
                destination: None,
                outputs: None,
                elsewhere: None,
                cancel: None,
                staged: false,
            });
            assert_eq!(outcome.result.ok(), by_name, "{name} {rel}");
            let settled = FileOutcome::settled_by_name(task.as_ref(), rel.as_bytes(), Some(22));
            assert_eq!(
                settled.map(|o| (o.size, o.result.ok())),
                Some((22, by_name))
            );
            // Without a size from the listing, the file is left to `process`.
            assert!(FileOutcome::settled_by_name(task.as_ref(), rel.as_bytes(), None).is_none());
        }
        let read_first: &[(&str, &str, &str)] = &[
            ("compress", r#"{"force":true}"#, "a.log.gz"),
            ("compress", "{}", "a.log"), // may still be gzip inside: sniffed
            ("decompress", "{}", "a.txt"),
            ("extract", "{}", "a.bin"),
            ("thumbnail", r#"{"width":2,"height":2}"#, "a.JPEG"),
            ("convert", r#"{"to":"jsonl"}"#, "a.TSV"),
            ("csv-header", "{}", "a.gz"),
            ("hash", "{}", "a.gz"),
        ];
        for (name, options, rel) in read_first {
            let task = build(name, options).unwrap();
            assert_eq!(task.skipped_by_name(Path::new(rel)), None, "{name} {rel}");
        }
    }
}
