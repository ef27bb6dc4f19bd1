//! Output files of tasks that write (compress, extract, thumbnail, convert):
//! contained in their destination and written atomically.
//!
//! Containment: an output path is built only from the `Normal` components of
//! a relative name ([`contained_join`] refuses `..`, absolute paths and
//! prefixes), and after its parent directories are created the parent is
//! canonicalized and must still lie under the destination, so a symlink
//! planted inside the destination cannot redirect a write outside it.
//!
//! Atomicity ([`AtomicFile`]): bytes go to a hidden temp file created with
//! `O_EXCL` in the final directory (so the rename never crosses file
//! systems). Until it is published, and if the task fails or panics, only
//! the temp file exists and `Drop` removes it: a crash never leaves a
//! half-written output under its final name. Policies that must not replace
//! an existing output (skip, fail) publish with `link(2)`, which fails
//! atomically when the name exists, instead of `rename(2)`, which replaces.
//!
//! Durability, batched ([`Outputs`]): a task hands its written temp file
//! (or, for extract, its staging folder) to the batch's [`Outputs`] instead
//! of syncing it. When the batch's files are done, [`Outputs::settle`]
//! makes them durable in three steps: `syncfs(2)` once per file system the
//! batch wrote to (the data), then every output is published under its
//! final name, then `syncfs(2)` again (the names); only then do the
//! deferred follow-ups run (removing a compressed original), and only then
//! are the batch's results reported. A Process call settles on a thread of
//! its own, several waiting batches at once ([`Outputs::settle_together`],
//! from `crate::process`'s settler), so the disk waits overlap the next
//! batches' work. One `fsync` per output cost more than
//! the compression of a 50 KB file; two `syncfs` per 1,000 files cost
//! little. Write-back is started early ([`start_writeback`]) only for
//! outputs of at least [`EARLY_WRITEBACK_MIN`] bytes, such as an extracted
//! photo: their data then goes to disk while the next file is worked on,
//! and `syncfs` waits for the tail only (a 390 MB ZIP of photos: 0.19 s
//! of waiting at the end before). For small outputs it was measured and
//! dropped: 10,000 small zstd outputs took 10% longer, the per-file
//! submission cost more than the `syncfs` wait it saved. The price:
//! `syncfs` also flushes what other processes wrote to that file system,
//! and an output's name appears only at the end of its batch. A file with
//! no batch (a caller outside [`crate::process`]) is settled at once,
//! through the same code.
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Deserialize;

use crate::results::{FailureKind, FileFailure};

/// What to do when an output already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    /// Leave the existing output alone and report the file as skipped.
    #[default]
    Skip,
    /// Replace it (atomically).
    Overwrite,
    /// Report the file as failed.
    Fail,
}

/// The JSON Schema of an `existing` option.
pub fn existing_schema() -> serde_json::Value {
    serde_json::json!({
        "description": "What to do when an output already exists: skip the file, overwrite the output, or fail the file.",
        "enum": ["skip", "overwrite", "fail"],
        "default": "skip"
    })
}

/// The `existing` option of a writing task's options JSON (every writing
/// task declares it with [`existing_schema`]); the default when absent.
/// The task itself has already validated the options.
pub fn existing_option(options_json: &str) -> Existing {
    serde_json::from_str::<serde_json::Value>(options_json)
        .ok()
        .and_then(|v| v.get("existing").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Joins a relative name under `base`, refusing anything that could escape:
/// absolute paths, `..`, drive prefixes, and empty names. `.` parts are
/// dropped.
pub fn contained_join(base: &Path, rel: &Path) -> Result<PathBuf, FileFailure> {
    let mut out = base.to_path_buf();
    let mut depth = 0;
    for comp in rel.components() {
        match comp {
            Component::Normal(part) => {
                out.push(part);
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(FileFailure::new(
                    FailureKind::OutsideRoot,
                    format!(
                        "refused output name {:?}: it would escape the destination (absolute path or '..')",
                        rel.display().to_string()
                    ),
                ))
            }
        }
    }
    if depth == 0 {
        return Err(FileFailure::new(
            FailureKind::InvalidData,
            "empty output name",
        ));
    }
    Ok(out)
}

/// Creates the parent directories of `path` and checks that the parent,
/// symlinks resolved, is still inside `base` (which must be canonical);
/// returns the parent so resolved. The deepest folder that already exists
/// is checked before anything is created under it, so a symlink pointing
/// out never gets folders made through it; the parent is checked again
/// once created.
pub fn prepare_parent(base: &Path, path: &Path) -> Result<PathBuf, FileFailure> {
    let parent = path.parent().unwrap_or(base);
    let outside = || {
        FileFailure::new(
            FailureKind::OutsideRoot,
            format!(
                "refused output {}: a symlink in its folder points outside the destination",
                path.display()
            ),
        )
    };
    let mut existing = parent;
    let real = loop {
        match std::fs::canonicalize(existing) {
            Ok(real) => break real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && existing != base => {
                existing = existing.parent().unwrap_or(base);
            }
            Err(e) => return Err(write_failure(&e, "resolving the output folder")),
        }
    };
    if !real.starts_with(base) {
        return Err(outside());
    }
    if existing == parent {
        return Ok(real);
    }
    std::fs::create_dir_all(parent).map_err(|e| write_failure(&e, "creating the output folder"))?;
    let real = std::fs::canonicalize(parent)
        .map_err(|e| write_failure(&e, "resolving the output folder"))?;
    if !real.starts_with(base) {
        return Err(outside());
    }
    Ok(real)
}

/// Where the output for a source file goes: `rel` (plus a changed name)
/// mirrored under the destination, or next to the input when there is none.
/// Returns the output path and its name relative to the destination (or to
/// the source root), for results.
pub fn output_for(
    destination: Option<&Path>,
    input: &Path,
    rel: &Path,
    rename: impl FnOnce(&std::ffi::OsStr) -> OsString,
) -> Result<(PathBuf, PathBuf), FileFailure> {
    let name = rel
        .file_name()
        .ok_or_else(|| FileFailure::new(FailureKind::InvalidData, "the input has no file name"))?;
    let new_name = rename(name);
    let new_rel = rel.with_file_name(&new_name);
    match destination {
        Some(dest) => {
            let out = contained_join(dest, &new_rel)?;
            prepare_parent(dest, &out)?;
            Ok((out, new_rel))
        }
        None => {
            let out = input.with_file_name(&new_name);
            Ok((out, new_rel))
        }
    }
}

/// Classifies an I/O error met while writing an output.
pub fn write_failure(err: &std::io::Error, doing: &str) -> FileFailure {
    match err.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            FileFailure::new(
                FailureKind::PermissionDenied,
                format!("permission denied while {doing}; grant the engine write access to the destination"),
            )
        }
        std::io::ErrorKind::StorageFull => FileFailure::new(
            FailureKind::Io,
            format!("no space left on the device while {doing}; free space or choose another destination"),
        ),
        _ => FileFailure::new(FailureKind::Io, format!("I/O error while {doing}: {err}")),
    }
}

/// Distinguishes temp files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// This process's id, asked of the kernel once (`getpid` is a system call
/// each time, and temp names are made per output). The engine never forks
/// without exec, so it cannot go stale.
fn process_id() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// An output being written; see the module doc.
pub struct AtomicFile {
    tmp: PathBuf,
    target: PathBuf,
    file: Option<File>,
}

/// How a commit ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    Written,
    /// The output existed and the policy was `skip`; nothing changed.
    Skipped,
}

impl AtomicFile {
    /// Creates the temp file for `target` in the target's directory, with
    /// the usual permissions of a new file (0666 less the umask).
    pub fn create(target: &Path) -> Result<Self, FileFailure> {
        Self::create_with_mode(target, 0o666)
    }

    /// As [`AtomicFile::create`], with permission bits `mode` (less the
    /// umask): an output that takes its original's permissions is created
    /// with them ([`original_mode`]), so it is never more readable than the
    /// original, even while it is written.
    pub fn create_with_mode(target: &Path, mode: u32) -> Result<Self, FileFailure> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let short: String = name.chars().take(64).collect();
        let tmp = dir.join(format!(
            ".{short}.pravah-tmp-{}-{}",
            process_id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| write_failure(&e, "creating the output"))?;
        Ok(AtomicFile {
            tmp,
            target: target.to_path_buf(),
            file: Some(file),
        })
    }

    /// The temp file, to write into.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file present until commit")
    }

    /// The temp file's path (to read the output back before it is
    /// published).
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Hands the written output to `outputs` to be synced and published
    /// under its final name by `existing`'s rule when the batch settles;
    /// `then` runs after that (see [`Outputs::stage`]). Without a batch it
    /// is settled at once and the result says how the publication ended.
    pub fn publish(
        mut self,
        outputs: Option<&Outputs>,
        existing: Existing,
        skipped_result: String,
        then: Option<FollowUp>,
    ) -> Result<Committed, FileFailure> {
        let file = self.file.take().expect("publish once");
        let dir = self.target.parent().unwrap_or(Path::new(".")).to_path_buf();
        let dev = file
            .metadata()
            .map_err(|e| write_failure(&e, "reading the output's metadata"))?
            .dev();
        drop(file);
        let publish = Box::new(move || self.link_into_place(existing));
        Outputs::stage_or_settle(
            outputs,
            (dev, &dir),
            Staged {
                file: 0,
                publish,
                then,
                skipped_result,
            },
        )
    }

    fn link_into_place(mut self, existing: Existing) -> Result<Committed, FileFailure> {
        let r = self.link_or_rename(existing);
        if matches!(r, Ok(Committed::Written)) {
            // The temp name is gone: nothing for Drop to remove.
            self.tmp = PathBuf::new();
        }
        r
    }

    fn link_or_rename(&self, existing: Existing) -> Result<Committed, FileFailure> {
        match existing {
            Existing::Overwrite => {
                // The output this replaces is held open across the rename so
                // that its last close, which frees its blocks, happens on
                // the release thread (see [`release_later`]).
                let replaced = OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
                    .open(&self.target)
                    .ok();
                let r = std::fs::rename(&self.tmp, &self.target)
                    .map(|()| Committed::Written)
                    .map_err(|e| write_failure(&e, "renaming the output into place"));
                if let Some(file) = replaced {
                    release_later(file);
                }
                r
            }
            Existing::Skip | Existing::Fail => match std::fs::hard_link(&self.tmp, &self.target) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&self.tmp);
                    Ok(Committed::Written)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if existing == Existing::Skip {
                        Ok(Committed::Skipped)
                    } else {
                        Err(exists_failure(&self.target))
                    }
                }
                // File systems without hard links: check, then rename.
                Err(_) if !self.target.exists() => std::fs::rename(&self.tmp, &self.target)
                    .map(|()| Committed::Written)
                    .map_err(|e| write_failure(&e, "renaming the output into place")),
                Err(e) => Err(write_failure(&e, "linking the output into place")),
            },
        }
    }
}

/// Removes the file at `path` with its blocks freed on the release thread
/// (see [`release_later`]): for originals removed after compression.
pub fn remove_file_released(path: &Path) -> std::io::Result<()> {
    let held = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .ok();
    let r = std::fs::remove_file(path);
    if let Some(file) = held {
        release_later(file);
    }
    r
}

/// Closes `file`, the last reference to an output that was replaced, on a
/// background thread. Freeing a file's blocks can wait on the disk: on ext4
/// mounted with `discard` and no journal (cloud VMs), the truncate issues
/// and awaits a discard per extent, and a batch of 1,000 replaced outputs
/// spent more time there than compressing. The thread only closes files;
/// its queue is bounded, and when it is full the file is closed here.
/// Closing later changes nothing a reader sees: the name already points to
/// the new output, only the old blocks are freed a moment later.
fn release_later(file: File) {
    static RELEASER: std::sync::OnceLock<Option<crossbeam_channel::Sender<File>>> =
        std::sync::OnceLock::new();
    let tx = RELEASER.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded::<File>(4096);
        // Ends when the process does; it holds nothing but files to close.
        std::thread::Builder::new()
            .name("pravah-release".into())
            .spawn(move || rx.iter().for_each(drop))
            .ok()
            .map(|_| tx)
    });
    if let Some(tx) = tx {
        // Full or gone: `file` comes back in the error and is closed here.
        let _ = tx.try_send(file);
    }
}

/// Work that may only happen once an output is durable under its final
/// name (removing the original it replaces).
pub type FollowUp = Box<dyn FnOnce() -> Result<(), FileFailure> + Send>;

/// Publishes a staged output under its final name.
pub type Publish = Box<dyn FnOnce() -> Result<Committed, FileFailure> + Send>;

/// One output waiting for its batch to settle. Dropping it unpublished
/// drops what the publish closure owns (the temp file or staging folder),
/// which removes it.
pub struct Staged {
    /// The index of its input in the batch.
    file: usize,
    publish: Publish,
    then: Option<FollowUp>,
    /// The input's result if publishing finds the name taken (policy skip).
    skipped_result: String,
}

/// How settling changed one input's outcome (inputs not listed keep the
/// result their task returned).
#[derive(Debug)]
pub enum Settled {
    /// The output name was taken when it was published (policy skip).
    Skipped(String),
    Failed(FileFailure),
}

/// The outputs staged by one batch of files; see the module doc.
#[derive(Default)]
pub struct Outputs {
    /// Staged outputs in input order. A batch runs on one thread; the
    /// mutex only lets a task share its context with helper threads.
    staged: Mutex<Vec<Staged>>,
    /// One open folder per file system (device id) written to, opened
    /// when its first output was staged: `syncfs` reports the write-back
    /// errors seen since its descriptor was opened, so it must be opened
    /// before the data it vouches for is written back. Entries are
    /// (device, order of opening among all folders, folder).
    filesystems: Mutex<Vec<(u64, u64, File)>>,
    /// The index in the batch of the input being processed.
    current: AtomicUsize,
}

impl Outputs {
    /// Marks the start of input `index` of the batch: what it stages from
    /// now on is reported against it.
    pub fn start_file(&self, index: usize) {
        self.current.store(index, Ordering::Relaxed);
    }

    /// Stages an output written under a temporary name in `dir` (a folder
    /// that stays after publishing): `publish`
    /// moves it to its final name once its data are durable, and `then`
    /// runs once that name is durable too. Without a batch (`outputs` is
    /// None) the output is settled at once.
    pub fn stage(
        outputs: Option<&Outputs>,
        dir: &Path,
        publish: Publish,
        then: Option<FollowUp>,
        skipped_result: String,
    ) -> Result<Committed, FileFailure> {
        let dev = std::fs::metadata(dir)
            .map_err(|e| write_failure(&e, "reading the output folder's metadata"))?
            .dev();
        Self::stage_or_settle(
            outputs,
            (dev, dir),
            Staged {
                file: 0,
                publish,
                then,
                skipped_result,
            },
        )
    }

    fn stage_or_settle(
        outputs: Option<&Outputs>,
        (dev, dir): (u64, &Path),
        staged: Staged,
    ) -> Result<Committed, FileFailure> {
        match outputs {
            Some(o) => o.push(dev, dir, staged).map(|()| Committed::Written),
            None => {
                let alone = Outputs::default();
                alone.push(dev, dir, staged)?;
                match alone.settle().pop() {
                    None => Ok(Committed::Written),
                    Some((_, Settled::Skipped(_))) => Ok(Committed::Skipped),
                    Some((_, Settled::Failed(f))) => Err(f),
                }
            }
        }
    }

    fn push(&self, dev: u64, dir: &Path, mut staged: Staged) -> Result<(), FileFailure> {
        let mut filesystems = self.filesystems.lock().unwrap_or_else(|e| e.into_inner());
        if !filesystems.iter().any(|(d, _, _)| *d == dev) {
            let folder =
                File::open(dir).map_err(|e| write_failure(&e, "opening the output folder"))?;
            filesystems.push((dev, FOLDERS_OPENED.fetch_add(1, Ordering::Relaxed), folder));
        }
        staged.file = self.current.load(Ordering::Relaxed);
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(staged);
        Ok(())
    }

    /// Whether nothing was staged: settling would do nothing.
    pub fn is_empty(&self) -> bool {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Syncs, publishes and follows up every staged output (module doc);
    /// returns the inputs whose outcome changed, in batch order, at most
    /// one entry per input (its first failure).
    pub fn settle(self) -> Vec<(usize, Settled)> {
        Self::settle_together(vec![self]).pop().unwrap_or_default()
    }

    /// [`Outputs::settle`] for several batches at once, as a group commit:
    /// one `syncfs` per file system before publishing and one after,
    /// however many batches wait. Returns each batch's changes, in the
    /// order given. Per file system, the folder opened first vouches for
    /// the group: `syncfs` reports every write-back error since its
    /// descriptor was opened, so the oldest covers the others' data too.
    pub fn settle_together(batches: Vec<Outputs>) -> Vec<Vec<(usize, Settled)>> {
        let mut changed: Vec<Vec<(usize, Settled)>> = batches.iter().map(|_| Vec::new()).collect();
        let mut filesystems: Vec<(u64, u64, File)> = Vec::new();
        let mut staged: Vec<(usize, Staged)> = Vec::new();
        for (batch, outputs) in batches.into_iter().enumerate() {
            let opened = outputs
                .filesystems
                .into_inner()
                .unwrap_or_else(|e| e.into_inner());
            for (dev, order, folder) in opened {
                match filesystems.iter_mut().find(|f| f.0 == dev) {
                    Some(f) if f.1 > order => *f = (dev, order, folder),
                    Some(_) => {}
                    None => filesystems.push((dev, order, folder)),
                }
            }
            let mine = outputs
                .staged
                .into_inner()
                .unwrap_or_else(|e| e.into_inner());
            staged.extend(mine.into_iter().map(|s| (batch, s)));
        }
        if staged.is_empty() {
            return changed;
        }
        let fail_all =
            |changed: &mut Vec<Vec<(usize, Settled)>>, files: &[(usize, usize)], f: FileFailure| {
                for &(batch, i) in files {
                    changed[batch].push((i, Settled::Failed(f.clone())));
                }
            };
        if let Err(e) = sync_filesystems(&filesystems) {
            let files: Vec<(usize, usize)> = staged.iter().map(|(b, s)| (*b, s.file)).collect();
            fail_all(
                &mut changed,
                &files,
                write_failure(&e, "syncing the outputs (nothing was published)"),
            );
            return changed.into_iter().map(dedup).collect();
        }
        let mut published = Vec::with_capacity(staged.len());
        for (batch, s) in staged {
            match (s.publish)() {
                Ok(Committed::Written) => published.push((batch, s.file, s.then)),
                Ok(Committed::Skipped) => {
                    changed[batch].push((s.file, Settled::Skipped(s.skipped_result)))
                }
                Err(f) => changed[batch].push((s.file, Settled::Failed(f))),
            }
        }
        if published.is_empty() {
            return changed.into_iter().map(dedup).collect();
        }
        if let Err(e) = sync_filesystems(&filesystems) {
            let files: Vec<(usize, usize)> = published.iter().map(|p| (p.0, p.1)).collect();
            fail_all(
                &mut changed,
                &files,
                write_failure(&e, "syncing the output folder (originals were kept)"),
            );
            return changed.into_iter().map(dedup).collect();
        }
        for (batch, file, then) in published {
            if let Some(Err(f)) = then.map(|then| then()) {
                changed[batch].push((file, Settled::Failed(f)));
            }
        }
        changed.into_iter().map(dedup).collect()
    }
}

/// Orders changes by input and keeps each input's first.
fn dedup(mut changed: Vec<(usize, Settled)>) -> Vec<(usize, Settled)> {
    changed.sort_by_key(|c| c.0);
    changed.dedup_by_key(|c| c.0);
    changed
}

/// Gives an output its original's owner (where allowed), permission bits
/// and access and modification times, as gzip and zstd do: a log readable
/// by its owner only must not become readable by everyone once compressed,
/// a root engine must not take a user's file from them, and age-based
/// clean-ups (`find -mtime +30`) must see the log's age, not the day it was
/// compressed. Call it after the last write (a write sets the mtime), on an
/// output created with [`original_mode`]`(from)`.
///
/// Only what differs is changed (each change is a system call and an inode
/// write, 3% of compressing 10,000 small files when all three were made):
/// the owner when the original is not the engine's user and group (a new
/// file in a setgid folder keeps that folder's group then, as the folder
/// asks), the permissions when the umask took bits away at creation.
pub fn copy_attributes(from: &std::fs::Metadata, to: &File) -> Result<(), FileFailure> {
    let (euid, egid) = *PROCESS_IDS.get_or_init(|| {
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        unsafe { (libc::geteuid(), libc::getegid()) }
    });
    if (from.uid(), from.gid()) != (euid, egid)
        && std::os::unix::fs::fchown(to, Some(from.uid()), Some(from.gid())).is_err()
    {
        // Not root: the group at least, when the engine's user is in it;
        // a refusal leaves the engine's own.
        let _ = std::os::unix::fs::fchown(to, None, Some(from.gid()));
    }
    let mode = original_mode(from);
    if umask().is_none_or(|mask| mode & mask != 0) {
        to.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| write_failure(&e, "setting the output's permissions"))?;
    }
    let mut times = std::fs::FileTimes::new();
    if let Ok(t) = from.accessed() {
        times = times.set_accessed(t);
    }
    if let Ok(t) = from.modified() {
        times = times.set_modified(t);
    }
    to.set_times(times)
        .map_err(|e| write_failure(&e, "setting the output's times"))
}

/// The permission bits an output of `from` is created with (less the
/// umask, so never more readable than `from`) and ends with.
pub fn original_mode(from: &std::fs::Metadata) -> u32 {
    from.mode() & 0o777
}

static PROCESS_IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();

/// The process's umask, read once from /proc (reading it with umask(2)
/// would set it, for a moment, under other threads' feet); None when
/// /proc does not say.
pub fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// Outputs at least this big have their write-back started as soon as
/// they are written (see the module doc).
const EARLY_WRITEBACK_MIN: u64 = 256 * 1024;

/// For an output of `len` bytes just written: starts writing `file`'s dirty
/// pages to disk without waiting for them
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`) when it is at least
/// [`EARLY_WRITEBACK_MIN`] bytes, else leaves it to the batch's `syncfs`.
/// A hint: durability, and any write-back error, still come from `syncfs`.
pub fn start_writeback(file: &File, len: u64) {
    if len < EARLY_WRITEBACK_MIN {
        return;
    }
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Output folders opened for `syncfs`, in order: which was opened first.
static FOLDERS_OPENED: AtomicU64 = AtomicU64::new(0);

/// `syncfs(2)` on each file system, through the folder opened on it.
fn sync_filesystems(filesystems: &[(u64, u64, File)]) -> std::io::Result<()> {
    for (_, _, folder) in filesystems {
        // SAFETY: syncfs only reads the descriptor, which `folder` keeps open.
        if unsafe { libc::syncfs(folder.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Not committed or failed: the temp goes away (published, it has
        // no name left).
        self.file.take();
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Where a task's outputs really go when it writes them into a staged
/// folder that is uploaded afterwards (an S3 destination): asked before the
/// work, so `existing=skip` and `fail` save the work there as they do
/// for a local destination, not only the upload.
pub trait OutputsElsewhere: Sync {
    /// Whether the output staged at `staged` (a file, or a folder of files
    /// when `folder`) is already at its real place. A look-up that fails
    /// answers false: the task runs, and the look-up before the upload
    /// reports the error.
    fn exists(&self, staged: &Path, folder: bool) -> bool;
    /// The `fail` policy's failure for `staged`, naming its real place.
    fn exists_failure(&self, staged: &Path) -> FileFailure;
}

/// The result of the `skip` policy: the file was left alone because its
/// output `out_rel` (relative to the destination) exists. Every writing
/// task reports it the same way, so a re-run's results say which output
/// was in the way.
pub fn skipped_exists(out_rel: &Path) -> String {
    serde_json::json!({"skipped": "output exists", "output": out_rel.to_string_lossy()}).to_string()
}

/// The failure of the `fail` policy.
pub fn exists_failure(target: &Path) -> FileFailure {
    FileFailure::new(
        FailureKind::Io,
        format!(
            "output {} already exists; set existing=overwrite or existing=skip",
            target.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn contained_join_refuses_escapes() {
        let base = Path::new("/dest");
        assert_eq!(
            contained_join(base, Path::new("a/./b.txt")).unwrap(),
            Path::new("/dest/a/b.txt")
        );
        for bad in ["../x", "a/../../x", "/etc/passwd"] {
            let err = contained_join(base, Path::new(bad)).unwrap_err();
            assert_eq!(err.kind, FailureKind::OutsideRoot, "{bad}");
        }
        assert!(contained_join(base, Path::new("")).is_err());
    }

    #[test]
    fn symlinked_folder_inside_destination_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dest = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(outside.path(), dest.join("link")).unwrap();
        let err = prepare_parent(&dest, &dest.join("link/x.txt")).unwrap_err();
        assert_eq!(err.kind, FailureKind::OutsideRoot);
        // Folders that do not exist yet are not created through the link.
        let err = prepare_parent(&dest, &dest.join("link/new/deeper/x.txt")).unwrap_err();
        assert_eq!(err.kind, FailureKind::OutsideRoot);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // Inside, missing folders are created.
        prepare_parent(&dest, &dest.join("a/b/x.txt")).unwrap();
        assert!(dest.join("a/b").is_dir());
    }

    #[test]
    fn uncommitted_output_leaves_nothing_and_policies_hold() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.file().write_all(b"half").unwrap();
            // dropped without commit, as on a failure
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut f = AtomicFile::create(&target).unwrap();
        f.file().write_all(b"one").unwrap();
        assert_eq!(
            f.publish(None, Existing::Fail, String::new(), None)
                .unwrap(),
            Committed::Written
        );
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().write_all(b"two").unwrap();
        assert_eq!(
            f.publish(None, Existing::Skip, String::new(), None)
                .unwrap(),
            Committed::Skipped
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().write_all(b"two").unwrap();
        assert!(f
            .publish(None, Existing::Fail, String::new(), None)
            .is_err());
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().write_all(b"three").unwrap();
        f.publish(None, Existing::Overwrite, String::new(), None)
            .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"three");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn batched_outputs_appear_only_when_settled_then_follow_ups_run() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = Outputs::default();
        let ran = std::sync::Arc::new(AtomicUsize::new(0));
        for (i, name) in ["a.out", "b.out", "taken.out"].iter().enumerate() {
            outputs.start_file(i);
            let mut f = AtomicFile::create(&dir.path().join(name)).unwrap();
            f.file().write_all(name.as_bytes()).unwrap();
            let ran = ran.clone();
            let then: FollowUp = Box::new(move || {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(())
            });
            let r = f.publish(
                Some(&outputs),
                Existing::Skip,
                format!("skip {i}"),
                Some(then),
            );
            assert_eq!(r.unwrap(), Committed::Written);
        }
        // Another writer takes one name before the batch settles.
        std::fs::write(dir.path().join("taken.out"), b"theirs").unwrap();
        assert!(
            !dir.path().join("a.out").exists(),
            "not published before settle"
        );
        let changed = outputs.settle();
        assert_eq!(changed.len(), 1);
        assert!(matches!(&changed[0], (2, Settled::Skipped(r)) if r == "skip 2"));
        assert_eq!(std::fs::read(dir.path().join("a.out")).unwrap(), b"a.out");
        assert_eq!(
            std::fs::read(dir.path().join("taken.out")).unwrap(),
            b"theirs"
        );
        assert_eq!(
            ran.load(Ordering::Relaxed),
            2,
            "follow-ups only for published outputs"
        );
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn batches_settled_together_each_get_their_own_changes() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let stage = |outputs: &Outputs, index: usize, path: PathBuf| {
            outputs.start_file(index);
            let mut f = AtomicFile::create(&path).unwrap();
            f.file().write_all(b"new").unwrap();
            f.publish(Some(outputs), Existing::Fail, String::new(), None)
                .unwrap();
        };
        let (first, second) = (Outputs::default(), Outputs::default());
        stage(&first, 0, dir.path().join("a.out"));
        stage(&first, 1, dir.path().join("b.out"));
        stage(&second, 0, other.path().join("c.out"));
        stage(&second, 1, dir.path().join("taken.out"));
        std::fs::write(dir.path().join("taken.out"), b"theirs").unwrap();
        let changed = Outputs::settle_together(vec![first, second]);
        assert_eq!(changed.len(), 2);
        assert!(changed[0].is_empty(), "{:?}", changed[0]);
        // Input 1 of the second batch, not of the first, found its name taken.
        assert!(
            matches!(&changed[1][..], [(1, Settled::Failed(f))] if f.message.contains("already exists")),
            "{:?}",
            changed[1]
        );
        for path in [
            dir.path().join("a.out"),
            dir.path().join("b.out"),
            other.path().join("c.out"),
        ] {
            assert_eq!(std::fs::read(&path).unwrap(), b"new", "{path:?}");
        }
        assert_eq!(
            std::fs::read(dir.path().join("taken.out")).unwrap(),
            b"theirs"
        );
        assert!(Outputs::settle_together(Vec::new()).is_empty());
    }

    #[test]
    fn a_batch_dropped_unsettled_leaves_no_output_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let outputs = Outputs::default();
        let mut f = AtomicFile::create(&dir.path().join("a.out")).unwrap();
        f.file().write_all(b"data").unwrap();
        f.publish(Some(&outputs), Existing::Overwrite, String::new(), None)
            .unwrap();
        drop(outputs); // cancelled before the batch ended
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
