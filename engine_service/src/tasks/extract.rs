//! Task `extract`: ZIP and tar (plain, gzip, zstd) archives into a folder
//! named after the archive, under the destination (or next to the archive).
//!
//! Safety, in order: every entry name goes through
//! [`crate::output::contained_join`] (no `..`, no absolute paths) and its
//! folder is checked after symlinks are resolved; symlink entries are
//! created only when their target resolves inside the archive's folder, a
//! tar hard link only to a file extracted before it; device entries are
//! refused. Bombs are bounded on the bytes actually written, not on
//! declared sizes: total bytes, entry count, and the ratio of extracted
//! bytes to the archive's size. A refused archive is refused whole, with
//! the reason.
//!
//! Entries keep the permission bits and modification times their archive
//! gives, as with `tar` and `unzip` ([`crate::entry_meta`]); owners are
//! not taken from archives.
//!
//! Atomicity and durability: an archive is extracted into a hidden staging
//! folder next to its final folder, which is renamed into place only when
//! every entry is written and, with the rest of the batch's outputs, synced
//! (see [`crate::output::Outputs`]: the extracted files are durable before
//! the folder gets its name, and the name before the archive is reported
//! done). A failure removes the staging folder, so a final folder is never
//! half extracted.
//!
//! Reading: an archive is read by byte ranges through a
//! [`BlockReader`], from a local file (positional reads) or in place from
//! an object store (ranged GETs, [`Task::process_ranges`]): a ZIP's central
//! directory and entries are fetched block by block, a tar stream in order,
//! and an archive on S3 is never staged whole on local disk.
//!
//! Parallelism: a ZIP's central directory is parsed once; its entries are
//! split into short ranges (about eight per pool thread, so entries of
//! uneven sizes still keep every thread busy to the end), each reading
//! through its own clone of the parsed archive (rayon `par_iter`; a range
//! stops at the first error or when the shared byte budget is exhausted,
//! and the first error wins). A ZIP's symlinks are made after all its other
//! entries, in archive order, as unzip makes them: otherwise whether an
//! entry under a link's name landed in a folder or failed would depend on
//! which range ran first. tar is a stream and is read sequentially. As with
//! tar and unzip, an entry whose name is already taken replaces it (unlinks
//! it first: a hard link's other names keep their content).
//! An extracted file of some size has its write-back started at once
//! ([`crate::output::start_writeback`]), so the batch's `syncfs` finds
//! little left to wait for; a folder replaced by `existing: overwrite` is
//! removed with its files unlinked in parallel.
use std::fs::OpenOptions;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::json;

use super::{parse_options, Aggregate, FileCtx, FileOutcome, Task, TaskInfo};
use crate::entry_meta::{EntryMeta, Folders};
use crate::output::{
    existing_schema, prepare_parent, skipped_exists, start_writeback, write_failure, Committed,
    Existing, Outputs, Publish,
};
use crate::results::{FailureKind, FileFailure};
use crate::storage::blocks::{BlockReader, LocalFile, RangeSource};

pub const INFO: TaskInfo = TaskInfo {
    name: "extract",
    version: "1",
    description: "Extracts ZIP and tar (plain, gzip, zstd) archives into a folder named after each archive, refusing entries that escape it and bounding bombs.",
    options_schema,
    result_schema,
    writes_files: true,
    size_independent: false,
    build,
};

fn options_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "extract options",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "max_total_bytes": {"description": "Most bytes one archive may extract to.",
                                "type": "integer", "minimum": 1, "default": 10737418240u64},
            "max_entries": {"description": "Most entries one archive may hold.",
                            "type": "integer", "minimum": 1, "default": 100000},
            "max_ratio": {"description": "Most extracted bytes per archive byte (bomb protection).",
                          "type": "integer", "minimum": 1, "default": 200},
            "existing": existing_schema()
        }
    })
}

fn result_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "output": {"type": "string", "description": "The archive's folder, relative to the destination."},
            "format": {"type": "string"},
            "entries": {"type": "integer"},
            "special_entries_skipped": {"type": "integer", "description": "Devices and FIFOs in a tar, not created (only when there were some)."},
            "bytes_out": {"type": "integer"},
            "skipped": {"type": "string"}
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    max_total_bytes: u64,
    max_entries: u64,
    max_ratio: u64,
    existing: Existing,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_total_bytes: 10 << 30,
            max_entries: 100_000,
            max_ratio: 200,
            existing: Existing::Skip,
        }
    }
}

pub struct Extract {
    o: Options,
}

fn build(options_json: &str) -> Result<Arc<dyn Task>, String> {
    let o: Options = parse_options(options_json)?;
    if o.max_total_bytes == 0 || o.max_entries == 0 || o.max_ratio == 0 {
        return Err("max_total_bytes, max_entries and max_ratio must be at least 1".into());
    }
    Ok(Arc::new(Extract { o }))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Zip,
    Tar,
    TarGz,
    TarZst,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Zip => "zip",
            Kind::Tar => "tar",
            Kind::TarGz => "tar.gz",
            Kind::TarZst => "tar.zst",
        }
    }
}

/// The archive kind from its first bytes (and, for compressed tars, name).
fn sniff(head: &[u8], name: &str) -> Option<(Kind, usize)> {
    let lower = name.to_ascii_lowercase();
    let strip = |exts: &[&str]| {
        exts.iter()
            .find(|e| lower.ends_with(*e))
            .map_or(0, |e| e.len())
    };
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some((Kind::Zip, strip(&[".zip"])))
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Some((Kind::TarGz, strip(&[".tar.gz", ".tgz"])))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some((Kind::TarZst, strip(&[".tar.zst", ".tzst"])))
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some((Kind::Tar, strip(&[".tar"])))
    } else if lower.ends_with(".tar") && is_tar_block(head) {
        // A tar of before POSIX (no magic), or an empty one (zero blocks).
        Some((Kind::Tar, strip(&[".tar"])))
    } else {
        None
    }
}

/// Whether `block` opens a tar archive: a header whose checksum (the sum
/// of its bytes, the checksum field counted as spaces) matches, or the
/// zero block that ends an archive, as the whole of an empty one.
fn is_tar_block(block: &[u8]) -> bool {
    let Some(block) = block.get(..512) else {
        return false;
    };
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let field = &block[148..156];
    let digits = std::str::from_utf8(field)
        .ok()
        .map(|f| f.trim_matches(|c: char| c == ' ' || c == '\0'));
    let Some(stored) = digits.and_then(|d| u32::from_str_radix(d, 8).ok()) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

/// Extracts the tar that decoder `d` decompresses, or returns None when
/// what it holds does not open with a tar header: `app.log.gz` beside the
/// archives of an upload is a compressed file, not a corrupt archive.
fn extract_compressed_tar(
    mut d: impl Read,
    stage: &Path,
    budget: &Budget,
    folders: &Folders,
) -> Result<Option<u64>, FileFailure> {
    let mut head = Vec::with_capacity(512);
    if let Err(e) = (&mut d).take(512).read_to_end(&mut head) {
        return Err(FileFailure::new(
            FailureKind::InvalidData,
            format!("corrupt or truncated archive: {e}; nothing was extracted"),
        ));
    }
    if !is_tar_block(&head) {
        return Ok(None);
    }
    extract_tar(std::io::Cursor::new(head).chain(d), stage, budget, folders).map(Some)
}

/// The names an archive may have; see [`folder_name`].
const ARCHIVE_EXTS: &[&str] = &[".zip", ".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"];

/// The folder archive `name` extracts to: its name less its archive
/// extension (`photos.zip` -> `photos`), or its whole name and `.d` when
/// it has none, or when another archive of that stem lies `beside` it (a
/// local source's folder): releases ship `v1.zip` next to `v1.tar.gz`, and
/// with both named `v1` the second was skipped as already extracted.
fn folder_name(name: &str, ext_len: usize, beside: Option<&Path>) -> String {
    if ext_len == 0 || ext_len >= name.len() {
        return format!("{name}.d");
    }
    let (stem, ext) = name.split_at(name.len() - ext_len);
    let sibling = |other: &&str| {
        !other.eq_ignore_ascii_case(ext)
            && beside.is_some_and(|dir| {
                [other.to_string(), other.to_ascii_uppercase()]
                    .iter()
                    .any(|e| dir.join(format!("{stem}{e}")).is_file())
            })
    };
    if ARCHIVE_EXTS.iter().any(sibling) {
        format!("{name}.d")
    } else {
        stem.to_owned()
    }
}

/// The byte, entry and ratio budget of one archive, shared by its threads.
struct Budget<'a> {
    /// Bytes written so far by every thread of this archive.
    written: AtomicU64,
    /// Device and FIFO entries skipped.
    special: AtomicU64,
    entries: AtomicU64,
    max_bytes: u64,
    max_entries: u64,
    /// The call's cancel flag: a cancelled call stops within one read,
    /// not at the archive's end, and its staging folder goes away.
    cancel: Option<&'a AtomicBool>,
}

impl Budget<'_> {
    fn entry(&self) -> Result<(), FileFailure> {
        self.not_cancelled()?;
        let n = self.entries.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.max_entries {
            return Err(FileFailure::new(
                FailureKind::LimitExceeded,
                format!(
                    "the archive holds more than max_entries ({}) entries; nothing was extracted",
                    self.max_entries
                ),
            ));
        }
        Ok(())
    }

    fn not_cancelled(&self) -> Result<(), FileFailure> {
        match self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(FileFailure::new(
                FailureKind::Io,
                "the job was cancelled; nothing was extracted",
            )),
            _ => Ok(()),
        }
    }

    fn add(&self, n: u64) -> Result<(), FileFailure> {
        self.not_cancelled()?;
        let total = self.written.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.max_bytes {
            return Err(FileFailure::new(
                FailureKind::LimitExceeded,
                format!(
                    "the archive extracts to more than {} bytes (max_total_bytes, or max_ratio times its size): refused as a likely bomb; nothing was extracted",
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

fn refused(name: &str, why: &str) -> FileFailure {
    FileFailure::new(
        FailureKind::OutsideRoot,
        format!("entry {name:?} refused: {why}; nothing was extracted"),
    )
}

/// A ZIP entry's name with `/` between its folders. Archives written on
/// Windows by some tools (Windows PowerShell's `Compress-Archive`, .NET
/// before 4.6.1) separate them with `\`, against the ZIP specification;
/// taken literally, `photos\a.jpg` was one file of that name. As `unzip`
/// does, a backslash is a separator in an entry not made on Unix (where it
/// may be part of a name); the converted name is then checked like any
/// other, so `..\..\x` is refused as `../../x` is.
fn zip_entry_name<R: Read>(entry: &zip::read::ZipFile<'_, R>) -> Vec<u8> {
    use zip::HasZipMetadata;
    let mut name = entry.name_raw().to_vec();
    // The "made by" host (the zip crate does not export its enum).
    const UNIX: u8 = 3;
    if entry.get_metadata().system as u8 != UNIX {
        for b in &mut name {
            if *b == b'\\' {
                *b = b'/';
            }
        }
    }
    name
}

/// Checks an entry name and joins it under the staging folder.
fn entry_path(stage: &Path, name: &[u8]) -> Result<PathBuf, FileFailure> {
    let shown = String::from_utf8_lossy(name).into_owned();
    let rel = Path::new(std::ffi::OsStr::from_bytes(name));
    crate::output::contained_join(stage, rel).map_err(|_| {
        refused(
            &shown,
            "it would escape the destination (absolute path or '..')",
        )
    })
}

/// Whether a folder entry names the archive's folder itself: `./`, which
/// `tar -C dir -cf x.tar .` writes first. Nothing to create.
fn names_the_folder(name: &[u8]) -> bool {
    Path::new(std::ffi::OsStr::from_bytes(name))
        .components()
        .all(|c| c == Component::CurDir)
}

/// Whether a symlink in folder `parent` (canonical, inside `stage`)
/// pointing at `target` resolves inside `stage`, judged on the files
/// extracted so far: each part of the target that exists is resolved as
/// the kernel would (so an earlier symlink to `.` cannot make `d/..` climb
/// out), and `..` after a part that does not exist yet is refused, since a
/// later entry could make that part a symlink. Existing parts cannot change
/// afterwards (a symlink is never created over an existing name), and every
/// symlink in the folder passed this check, so none points out.
fn link_resolves_inside(stage: &Path, parent: &Path, target: &Path) -> bool {
    let mut at = parent.to_path_buf();
    let mut exists = true;
    for c in target.components() {
        match c {
            Component::Normal(part) => {
                at.push(part);
                if exists {
                    match std::fs::canonicalize(&at) {
                        Ok(real) => at = real,
                        Err(_) => exists = false,
                    }
                }
            }
            Component::ParentDir if exists => {
                at.pop();
            }
            Component::CurDir => {}
            _ => return false,
        }
        if !at.starts_with(stage) {
            return false;
        }
    }
    true
}

/// Writes one regular entry from `r`, charging the budget as it goes, with
/// the entry's permissions and time.
fn write_entry(
    stage: &Path,
    path: &Path,
    r: &mut dyn Read,
    budget: &Budget,
    buf: &mut [u8],
    meta: EntryMeta,
) -> Result<(), FileFailure> {
    prepare_parent(stage, path)?;
    let file = replacing(path, "creating an extracted file", || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.create_mode())
            .open(path)
    })?;
    let mut w = BufWriter::with_capacity(256 * 1024, file);
    let mut written = 0u64;
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FileFailure::new(
                    FailureKind::InvalidData,
                    format!("corrupt or truncated archive: {e}; nothing was extracted"),
                ))
            }
        };
        budget.add(n as u64)?;
        w.write_all(&buf[..n])
            .map_err(|e| write_failure(&e, "writing an extracted file"))?;
        written += n as u64;
    }
    let file = w
        .into_inner()
        .map_err(|e| write_failure(e.error(), "writing an extracted file"))?;
    start_writeback(&file, written);
    meta.apply_time(&file)
}

fn make_symlink(stage: &Path, path: &Path, name: &[u8], target: &Path) -> Result<(), FileFailure> {
    let parent = prepare_parent(stage, path)?;
    if !link_resolves_inside(stage, &parent, target) {
        return Err(refused(
            &String::from_utf8_lossy(name),
            &format!(
                "a symlink to {:?} points outside the destination",
                target.display().to_string()
            ),
        ));
    }
    replacing(path, "creating a symlink", || {
        std::os::unix::fs::symlink(target, path)
    })
}

/// Creates an entry with `create`, which fails if the name exists; an
/// earlier entry of the same name is unlinked first and the entry made
/// again, as tar and unzip do. Never written through: a hard link's other
/// names keep their content, and a symlink's target is left alone. A
/// folder is not replaced by a file or link.
fn replacing<T>(
    path: &Path,
    doing: &str,
    create: impl Fn() -> std::io::Result<T>,
) -> Result<T, FileFailure> {
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                return Err(FileFailure::new(
                    FailureKind::InvalidData,
                    format!(
                        "entry {:?} is a file or link, and other entries make a folder of \
                         that name; nothing was extracted",
                        path.file_name().unwrap_or_default()
                    ),
                ));
            }
            std::fs::remove_file(path).map_err(|e| write_failure(&e, doing))?;
            create()
        }
        other => other,
    }
    .map_err(|e| write_failure(&e, doing))
}

/// A tar hard link: `target` names an earlier entry of the archive, which
/// must be a regular file extracted inside the folder.
fn make_hard_link(
    stage: &Path,
    path: &Path,
    name: &[u8],
    target: &[u8],
) -> Result<(), FileFailure> {
    let shown = String::from_utf8_lossy(name);
    let existing = entry_path(stage, target)?;
    let inside = existing
        .parent()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .is_some_and(|p| p.starts_with(stage));
    let is_file = std::fs::symlink_metadata(&existing).is_ok_and(|m| m.is_file());
    if !inside || !is_file {
        return Err(refused(
            &shown,
            &format!(
                "a hard link to {:?}, which is not a file extracted before it",
                String::from_utf8_lossy(target)
            ),
        ));
    }
    prepare_parent(stage, path)?;
    if existing == path {
        // A link to itself: the file is already there.
        return Ok(());
    }
    replacing(path, "creating a hard link", || {
        std::fs::hard_link(&existing, path)
    })
}

fn zip_error(e: zip::result::ZipError) -> FileFailure {
    FileFailure::new(
        FailureKind::InvalidData,
        format!("not a readable ZIP archive: {e}; nothing was extracted"),
    )
}

fn extract_zip(
    archive: BlockReader,
    stage: &Path,
    budget: &Budget,
    max_ratio: u64,
    folders: &Folders,
) -> Result<u64, FileFailure> {
    let first = zip::ZipArchive::new(archive).map_err(zip_error)?;
    let n = first.len();
    if n as u64 > budget.max_entries {
        return Err(FileFailure::new(
            FailureKind::LimitExceeded,
            format!(
                "the archive holds {n} entries, more than max_entries ({}); nothing was extracted",
                budget.max_entries
            ),
        ));
    }
    // Many short ranges of entries, each its own rayon job, rather than one
    // range per thread: photos of 6 to 24 megapixels made one half of a ZIP
    // take a quarter longer than the other, one thread idle meanwhile. Each
    // range reads through its own clone of the parsed archive (cheap: the
    // central directory is shared) and buffer.
    const RANGES_PER_THREAD: usize = 8;
    const MIN_ENTRIES_PER_RANGE: usize = 16;
    let threads = rayon::current_num_threads().max(1);
    let per = n
        .div_ceil(threads * RANGES_PER_THREAD)
        .max(MIN_ENTRIES_PER_RANGE);
    let ranges: Vec<(usize, usize)> = (0..n).step_by(per).map(|s| (s, (s + per).min(n))).collect();
    let links = Mutex::new(Vec::new());
    let claims = Claims::default();
    let entries = Entries {
        stage,
        budget,
        max_ratio,
        folders,
        links: &links,
        claims: &claims,
        ordered: false,
    };
    ranges
        .into_par_iter()
        .with_max_len(1)
        .try_for_each(|(from, to)| {
            let mut zip = first.clone();
            let mut buf = vec![0u8; 256 * 1024];
            (from..to).try_for_each(|i| entries.extract(&mut zip, i, &mut buf))
        })?;
    // Entries whose file another entry claimed first, in archive order:
    // the last of a name is the one left, as unzip leaves it, whichever
    // range ran first.
    let mut waiting =
        std::mem::take(&mut *claims.waiting.lock().unwrap_or_else(|e| e.into_inner()));
    if !waiting.is_empty() {
        waiting.sort_unstable();
        let entries = Entries {
            ordered: true,
            ..entries
        };
        let mut zip = first.clone();
        let mut buf = vec![0u8; 256 * 1024];
        for i in waiting {
            entries.extract(&mut zip, i, &mut buf)?;
        }
    }
    // Symlinks last, in archive order, as unzip makes them: the ranges run
    // in any order, and an entry must never be written through a link
    // another range may or may not have made yet.
    let mut links = links.into_inner().unwrap_or_else(|e| e.into_inner());
    links.sort_unstable_by_key(|link| link.index);
    for link in links {
        make_symlink(stage, &link.path, &link.name, &link.target)?;
    }
    Ok(n as u64)
}

/// A ZIP symlink entry, made once every other entry is written.
struct PendingLink {
    index: usize,
    path: PathBuf,
    name: Vec<u8>,
    target: PathBuf,
}

/// What every range of one ZIP extraction shares.
#[derive(Clone, Copy)]
struct Entries<'a> {
    stage: &'a Path,
    budget: &'a Budget<'a>,
    max_ratio: u64,
    folders: &'a Folders,
    links: &'a Mutex<Vec<PendingLink>>,
    claims: &'a Claims,
    /// The ordered pass over the entries that found their file claimed.
    ordered: bool,
}

/// Which entry writes each file of a ZIP. Ranges run in parallel, so two
/// entries of one name (`a.txt` and `./a.txt`, or a name repeated) would
/// otherwise race, and the one left would depend on the threads. The
/// first entry to reach a path claims it; the others wait for an ordered
/// pass after all ranges, where an entry replaces the file only if it
/// comes later in the archive than the one that wrote it.
#[derive(Default)]
struct Claims {
    writer: Mutex<std::collections::HashMap<PathBuf, usize>>,
    waiting: Mutex<Vec<usize>>,
}

impl Claims {
    /// Whether entry `i` writes `path` now.
    fn take(&self, path: &Path, i: usize, ordered: bool) -> bool {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match writer.get_mut(path) {
            None => {
                writer.insert(path.to_path_buf(), i);
                true
            }
            Some(holder) if ordered => {
                let later = *holder < i;
                if later {
                    *holder = i;
                }
                later
            }
            Some(_) => {
                drop(writer);
                self.waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(i);
                false
            }
        }
    }
}

impl Entries<'_> {
    /// Extracts entry `i` of `zip` into the stage: a folder or a file, or a
    /// symlink noted for the end.
    fn extract(
        &self,
        zip: &mut zip::ZipArchive<BlockReader>,
        i: usize,
        buf: &mut [u8],
    ) -> Result<(), FileFailure> {
        let Self {
            stage,
            budget,
            max_ratio,
            folders,
            links,
            claims,
            ordered,
        } = *self;
        let mut entry = zip.by_index(i).map_err(zip_error)?;
        if !ordered {
            budget.entry()?;
        }
        let name = zip_entry_name(&entry);
        if entry.is_dir() && names_the_folder(&name) {
            return Ok(());
        }
        let path = entry_path(stage, &name)?;
        let meta = EntryMeta::from_zip(&entry);
        if entry.is_dir() {
            prepare_parent(stage, &path.join("x")).map_err(|f| at_entry(&name, f))?;
            folders.note(path, meta);
            return Ok(());
        }
        // A single entry may not exceed the ratio either.
        let declared = entry.size();
        if declared > max_ratio.saturating_mul(entry.compressed_size().max(4096)) {
            return Err(FileFailure::new(
                FailureKind::LimitExceeded,
                format!(
                    "entry {:?} declares a compression ratio above max_ratio ({max_ratio}): \
                 refused as a likely bomb; nothing was extracted",
                    String::from_utf8_lossy(&name)
                ),
            ));
        }
        if entry.is_symlink() {
            let mut target = Vec::new();
            (&mut entry)
                .take(4096)
                .read_to_end(&mut target)
                .map_err(|e| {
                    FileFailure::new(FailureKind::InvalidData, format!("corrupt archive: {e}"))
                })?;
            drop(entry);
            let target = PathBuf::from(std::ffi::OsStr::from_bytes(&target));
            links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(PendingLink {
                    index: i,
                    path,
                    name,
                    target,
                });
            return Ok(());
        }
        if !claims.take(&path, i, ordered) {
            return Ok(());
        }
        write_entry(stage, &path, &mut entry, budget, buf, meta).map_err(|f| at_entry(&name, f))
    }
}

fn extract_tar(
    r: impl Read,
    stage: &Path,
    budget: &Budget,
    folders: &Folders,
) -> Result<u64, FileFailure> {
    let mut archive = tar::Archive::new(r);
    let bad = |e: std::io::Error| {
        FileFailure::new(
            FailureKind::InvalidData,
            format!("corrupt or truncated tar archive: {e}; nothing was extracted"),
        )
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        budget.entry()?;
        n += 1;
        let name = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Directory && names_the_folder(&name) {
            continue;
        }
        let path = entry_path(stage, &name)?;
        let meta = EntryMeta::from_tar(entry.header());
        let done = match kind {
            tar::EntryType::Directory => {
                prepare_parent(stage, &path.join("x")).map(|_| folders.note(path, meta))
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                refuse_pax_sparse(&mut entry, &name)
                    .and_then(|()| write_entry(stage, &path, &mut entry, budget, &mut buf, meta))
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(&b)))
                    .unwrap_or_default();
                make_symlink(stage, &path, &name, &target)
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                make_hard_link(stage, &path, &name, &target)
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => Ok(()),
            // A backup of /dev or a folder with a named pipe: as a user
            // running tar would have, the rest without them. A FIFO among
            // the outputs would hang whatever reads the folder next, and a
            // device node is not something a job should create.
            tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                budget.special.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            other => Err(FileFailure::new(
                FailureKind::InvalidData,
                format!(
                    "it has a type this engine does not know ({other:?}); nothing was extracted"
                ),
            )),
        };
        done.map_err(|f| at_entry(&name, f))?;
    }
    Ok(n)
}

/// Failure `f` of entry `name`, which it names if it did not: among
/// thousands of entries, "File name too long" alone does not say which.
fn at_entry(name: &[u8], mut f: FileFailure) -> FileFailure {
    let shown = format!("{:?}", String::from_utf8_lossy(name));
    if !f.message.contains(&shown) {
        f.message = format!("entry {shown}: {}", f.message);
    }
    f
}

/// Refuses a sparse file stored in the PAX format (`GNU.sparse.*` keys,
/// which `tar --sparse --format=pax` and bsdtar write): the tar crate reads
/// only the old GNU sparse headers, and would extract such an entry as its
/// sparse map and data blocks, under a made-up `GNUSparseFile.N/` name,
/// with no error. Refused whole, as other entries this engine cannot
/// extract faithfully are.
fn refuse_pax_sparse<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &[u8],
) -> Result<(), FileFailure> {
    let mut sparse = false;
    let mut real_name = None;
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for e in pax.flatten() {
            if e.key_bytes().starts_with(b"GNU.sparse.") {
                sparse = true;
                if e.key_bytes() == b"GNU.sparse.name" {
                    real_name = Some(e.value_bytes().to_vec());
                }
            }
        }
    }
    if sparse {
        return Err(FileFailure::new(
            FailureKind::InvalidData,
            format!(
                "entry {:?} is a sparse file in the PAX format (GNU.sparse), which this engine \
                 cannot extract; nothing was extracted (GNU tar or bsdtar can, or an archive \
                 made without --sparse)",
                String::from_utf8_lossy(real_name.as_deref().unwrap_or(name))
            ),
        ));
    }
    Ok(())
}

/// Removes a staging folder when dropped (on failure and on success after
/// the rename, when it no longer exists).
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static STAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes what an overwrite moved aside, never what it points to: a
/// symlink or a file goes by `unlink`, and only a real folder is emptied
/// (its files unlinked in parallel: each waits for its blocks to be freed,
/// 0.14 s for 300 photos one by one). `remove_dir_all`'s crate resolves a
/// symlink given as the root and would empty the folder it points to, such
/// as one outside the destination.
fn remove_replaced(aside: &Path) {
    match aside.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            let _ = remove_dir_all::remove_dir_all(aside);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(aside);
        }
        Err(_) => {}
    }
}

impl Extract {
    /// Extracts the archive `source`; `local` says whether `ctx.path` is a
    /// local file (whose folder is the output's home without a destination).
    fn run(
        &self,
        ctx: &FileCtx<'_>,
        source: Arc<dyn RangeSource>,
        local: bool,
    ) -> Result<String, FileFailure> {
        let size = source.size();
        let mut file = BlockReader::new(source.clone(), source.block_size());
        let mut head = Vec::with_capacity(512);
        (&mut file)
            .take(512)
            .read_to_end(&mut head)
            .map_err(|e| FileFailure::from_io(&e, "reading the archive"))?;
        let rel = Path::new(std::ffi::OsStr::from_bytes(ctx.rel));
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((kind, ext_len)) = sniff(&head, &name) else {
            return Ok(json!({"skipped": "not a ZIP or tar archive"}).to_string());
        };
        let folder = folder_name(&name, ext_len, local.then(|| ctx.path.parent()).flatten());
        let out_rel = rel.with_file_name(&folder);
        let (base, out) = match ctx.destination {
            Some(d) => (d.to_path_buf(), crate::output::contained_join(d, &out_rel)?),
            None if !local => {
                return Err(FileFailure::new(
                    FailureKind::InvalidData,
                    "an archive in an object store needs a destination to extract into",
                ))
            }
            None => {
                let parent = ctx.path.parent().unwrap_or(Path::new("."));
                let canon = std::fs::canonicalize(parent)
                    .map_err(|e| FileFailure::from_io(&e, "resolving the archive's folder"))?;
                (canon.clone(), canon.join(&folder))
            }
        };
        prepare_parent(&base, &out)?;
        if self.o.existing != Existing::Overwrite && ctx.output_folder_exists(&out) {
            if self.o.existing == Existing::Skip {
                return Ok(skipped_exists(&out_rel));
            }
            return Err(ctx.exists_failure(&out));
        }
        let stage = out.with_file_name(format!(
            ".{folder}.pravah-tmp-{}-{}",
            std::process::id(),
            STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&stage).map_err(|e| write_failure(&e, "creating the output folder"))?;
        let staging = Staging(stage.clone());
        let stage = std::fs::canonicalize(&stage)
            .map_err(|e| write_failure(&e, "resolving the output folder"))?;
        let budget = Budget {
            written: AtomicU64::new(0),
            special: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            max_bytes: self
                .o
                .max_total_bytes
                .min(self.o.max_ratio.saturating_mul(size.max(4096))),
            max_entries: self.o.max_entries,
            cancel: ctx.cancel,
        };
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| FileFailure::from_io(&e, "reading the archive"))?;
        let folders = Folders::default();
        let entries = match kind {
            Kind::Zip => extract_zip(file, &stage, &budget, self.o.max_ratio, &folders)?,
            _ => {
                let r = BufReader::with_capacity(64 * 1024, file);
                let tar = match kind {
                    Kind::TarGz => extract_compressed_tar(
                        flate2::bufread::MultiGzDecoder::new(r),
                        &stage,
                        &budget,
                        &folders,
                    )?,
                    Kind::TarZst => {
                        let d = zstd::stream::read::Decoder::with_buffer(r).map_err(|e| {
                            FileFailure::new(FailureKind::InvalidData, e.to_string())
                        })?;
                        extract_compressed_tar(d, &stage, &budget, &folders)?
                    }
                    _ => Some(extract_tar(r, &stage, &budget, &folders)?),
                };
                let Some(entries) = tar else {
                    let format = if kind == Kind::TarGz { "gzip" } else { "zstd" };
                    return Ok(json!({
                        "skipped": format!(
                            "a {format}-compressed file, not a tar archive (the decompress task restores it)"
                        )
                    })
                    .to_string());
                };
                entries
            }
        };
        folders.apply()?;
        // Published when the batch settles, after the extracted files are
        // synced: move an existing folder aside (overwrite), rename the
        // staging folder into place, then drop what was moved aside.
        let existing = self.o.existing;
        let parent = out.parent().unwrap_or(Path::new(".")).to_path_buf();
        let publish: Publish = Box::new(move || {
            let staging = staging;
            let aside = out.with_file_name(format!(
                ".{folder}.pravah-old-{}",
                STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            // Whatever has the name counts, a symlink or a file too (not
            // followed: a link to a folder elsewhere is what would be replaced).
            let present = out.symlink_metadata().is_ok();
            let had_old = existing == Existing::Overwrite && present;
            if had_old {
                std::fs::rename(&out, &aside)
                    .map_err(|e| write_failure(&e, "replacing the output folder"))?;
            } else if present {
                // Created by someone else while this archive was extracted.
                return match existing {
                    Existing::Fail => Err(crate::output::exists_failure(&out)),
                    _ => Ok(Committed::Skipped),
                };
            }
            if let Err(e) = std::fs::rename(&staging.0, &out) {
                if had_old {
                    let _ = std::fs::rename(&aside, &out);
                }
                return Err(write_failure(&e, "renaming the output folder into place"));
            }
            if had_old {
                remove_replaced(&aside);
            }
            Ok(Committed::Written)
        });
        let skipped_result = skipped_exists(&out_rel);
        if Outputs::stage(ctx.outputs, &parent, publish, None, skipped_result.clone())?
            == Committed::Skipped
        {
            return Ok(skipped_result);
        }
        let mut result = json!({
            "output": out_rel.to_string_lossy(),
            "format": kind.name(),
            "entries": entries,
            "bytes_out": budget.written.load(Ordering::Relaxed),
        });
        let special = budget.special.load(Ordering::Relaxed);
        if special > 0 {
            result["special_entries_skipped"] = json!(special);
        }
        Ok(result.to_string())
    }
}

impl Task for Extract {
    fn process(&self, ctx: &FileCtx<'_>) -> FileOutcome {
        FileOutcome::sized(ctx, "opening the archive", |_| {
            let file = crate::sandbox::open_regular(ctx.path)
                .and_then(LocalFile::new)
                .map_err(|e| FileFailure::from_io(&e, "opening the archive"))?;
            self.run(ctx, Arc::new(file), true)
        })
    }

    fn reads_ranges(&self) -> bool {
        true
    }

    fn process_ranges(&self, ctx: &FileCtx<'_>, source: Arc<dyn RangeSource>) -> FileOutcome {
        FileOutcome {
            size: source.size(),
            result: self.run(ctx, source, false),
        }
    }

    fn account(
        &self,
        agg: &mut Aggregate,
        _rel: &[u8],
        size: u64,
        r: &Result<String, FileFailure>,
    ) {
        agg.files += 1;
        match r {
            Err(_) => agg.failed += 1,
            Ok(json) => {
                let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                if v.get("skipped").is_some() {
                    agg.count("skipped", 1);
                } else {
                    agg.count("archives", 1);
                    agg.count("bytes_in", size);
                    agg.count("entries", v["entries"].as_u64().unwrap_or(0));
                    agg.count("bytes_out", v["bytes_out"].as_u64().unwrap_or(0));
                }
            }
        }
    }

    fn summarize(&self, agg: &Aggregate) -> serde_json::Value {
        let c = |k: &str| agg.counters.get(k).copied().unwrap_or(0);
        json!({
            "files": agg.files,
            "failed": agg.failed,
            "archives": c("archives"),
            "skipped": c("skipped"),
            "entries": c("entries"),
            "bytes_in": c("bytes_in"),
            "bytes_out": c("bytes_out"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use zip::write::SimpleFileOptions;

    fn run(o: &str, root: &Path, rel: &str, dest: &Path) -> Result<serde_json::Value, FileFailure> {
        let task = build(o).unwrap();
        task.process(&FileCtx {
            path: &root.join(rel),
            rel: rel.as_bytes(),
            known_size: None,
            destination: Some(dest),
            outputs: None,
            elsewhere: None,
            cancel: None,
            staged: false,
        })
        .result
        .map(|j| serde_json::from_str(&j).unwrap())
    }

    fn make_zip(path: &Path, entries: &[(&str, &[u8])]) {
        let mut z = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, data) in entries {
            z.start_file(*name, SimpleFileOptions::default()).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }

    /// Extracts `name` and checks it is refused as reaching outside.
    fn refused_as_outside(root: &Path, name: &str, dest: &Path) {
        let err = run("", root, name, dest).unwrap_err();
        assert_eq!(
            err.kind,
            FailureKind::OutsideRoot,
            "{name}: {}",
            err.message
        );
    }

    /// Appends a symlink or hard link entry `link` -> `target`.
    fn append_link(b: &mut tar::Builder<File>, kind: tar::EntryType, link: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        b.append_link(&mut h, link, target).unwrap();
    }

    fn dirs() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let canon = dest.path().canonicalize().unwrap();
        (src, dest, canon)
    }

    #[test]
    fn device_and_fifo_entries_are_skipped_and_counted_the_rest_extracted() {
        // A backup of a folder with a named pipe, or of /dev, was refused
        // whole (with error kind outside_root).
        let (src, _d, dest) = dirs();
        let mut b = tar::Builder::new(File::create(src.path().join("backup.tar")).unwrap());
        for (name, kind) in [
            ("run/app.fifo", tar::EntryType::Fifo),
            ("dev/null", tar::EntryType::Char),
            ("dev/sda", tar::EntryType::Block),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(0);
            b.append_data(&mut h, name, std::io::empty()).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/hosts", &b"hosts"[..]).unwrap();
        b.into_inner().unwrap();
        let v = run("", src.path(), "backup.tar", &dest).unwrap();
        assert_eq!(v["special_entries_skipped"], 3);
        assert_eq!(
            std::fs::read(dest.join("backup/etc/hosts")).unwrap(),
            b"hosts"
        );
        assert!(!dest.join("backup/run/app.fifo").exists());
        assert!(!dest.join("backup/dev").exists());
    }

    #[test]
    fn a_cancelled_call_extracts_nothing_and_leaves_no_staging_folder() {
        let (src, _d, dest) = dirs();
        make_zip(
            &src.path().join("a.zip"),
            &[("x.txt", b"x"), ("y.txt", b"y")],
        );
        let mut tgz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        {
            let mut b = tar::Builder::new(&mut tgz);
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            b.append_data(&mut h, "x.txt", &b"x"[..]).unwrap();
            b.finish().unwrap();
        }
        std::fs::write(src.path().join("a.tar.gz"), tgz.finish().unwrap()).unwrap();
        let cancel = AtomicBool::new(true);
        for rel in ["a.zip", "a.tar.gz"] {
            let failure = build("")
                .unwrap()
                .process(&FileCtx {
                    path: &src.path().join(rel),
                    rel: rel.as_bytes(),
                    known_size: None,
                    destination: Some(&dest),
                    outputs: None,
                    elsewhere: None,
                    cancel: Some(&cancel),
                    staged: false,
                })
                .result
                .unwrap_err();
            assert!(
                failure.message.contains("cancelled"),
                "{rel}: {}",
                failure.message
            );
        }
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    }

    #[test]
    fn archives_of_one_stem_side_by_side_extract_to_folders_of_their_own() {
        let (src, _d, dest) = dirs();
        make_zip(&src.path().join("v1.zip"), &[("from-zip.txt", b"z")]);
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        tar.append_data(&mut h, "from-tar.txt", &b"t"[..]).unwrap();
        std::fs::write(src.path().join("v1.TAR"), tar.into_inner().unwrap()).unwrap();
        make_zip(&src.path().join("alone.zip"), &[("a.txt", b"a")]);
        for (rel, folder, inside) in [
            ("v1.zip", "v1.zip.d", "from-zip.txt"),
            ("v1.TAR", "v1.TAR.d", "from-tar.txt"),
            ("alone.zip", "alone", "a.txt"),
        ] {
            let v = run("", src.path(), rel, &dest).unwrap();
            assert_eq!(v["output"], folder, "{rel}: {v}");
            assert!(dest.join(folder).join(inside).is_file(), "{rel}");
        }
    }

    #[test]
    fn zip_tree_and_nested_archive_are_extracted_as_files() {
        let (src, _d, dest) = dirs();
        let inner = {
            let p = src.path().join("inner.zip");
            make_zip(&p, &[("x.txt", b"x")]);
            std::fs::read(&p).unwrap()
        };
        let many: Vec<(String, Vec<u8>)> = (0..300)
            .map(|i| (format!("img/{i:03}.txt"), format!("file {i}").into_bytes()))
            .collect();
        let mut entries: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        entries.push(("nested/inner.zip", &inner));
        make_zip(&src.path().join("photos.zip"), &entries);
        let v = run("", src.path(), "photos.zip", &dest).unwrap();
        assert_eq!(v["output"], "photos");
        assert_eq!(v["entries"], 301);
        // Every entry, whichever range of the parallel extraction it fell in.
        for (name, data) in &many {
            assert_eq!(
                &std::fs::read(dest.join("photos").join(name)).unwrap(),
                data
            );
        }
        assert_eq!(
            std::fs::read(dest.join("photos/nested/inner.zip")).unwrap(),
            inner
        );
        assert!(!dest.join("photos/nested/inner").exists(), "no recursion");
        // Run again: skipped by default.
        let v = run("", src.path(), "photos.zip", &dest).unwrap();
        assert_eq!(v["skipped"], "output exists");
    }

    #[test]
    fn entries_keep_their_permissions_and_times_without_set_id_bits() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let (src, _d, dest) = dirs();
        let mask = crate::output::umask().unwrap_or(0o022);
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        let mtime = |p: &Path| std::fs::symlink_metadata(p).unwrap().mtime();
        // ZIP: MS-DOS times (read as UTC), Unix modes in the central directory.
        let when = zip::DateTime::from_date_and_time(2021, 6, 15, 12, 34, 56).unwrap();
        let opts = |m: u32| {
            SimpleFileOptions::default()
                .unix_permissions(m)
                .last_modified_time(when)
        };
        let mut z = zip::ZipWriter::new(File::create(src.path().join("app.zip")).unwrap());
        z.add_directory("ro/", opts(0o555)).unwrap();
        z.add_directory("open/", opts(0o777)).unwrap();
        z.start_file("ro/notes.txt", opts(0o444)).unwrap();
        z.write_all(b"read only").unwrap();
        z.start_file("bin/run.sh", opts(0o4755)).unwrap();
        z.write_all(b"#!/bin/sh\n").unwrap();
        // An extended timestamp (UTC seconds) wins over the MS-DOS time.
        let mut stamped = zip::write::FileOptions::<zip::write::ExtendedFileOptions>::default()
            .last_modified_time(when);
        let mut field = vec![1u8];
        field.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        stamped.add_extra_data(0x5455, field.into(), false).unwrap();
        z.start_file("stamped.txt", stamped).unwrap();
        z.write_all(b"s").unwrap();
        z.finish().unwrap();
        run("", src.path(), "app.zip", &dest).unwrap();
        let out = dest.join("app");
        let t2021 = 1_623_760_496; // 2021-06-15T12:34:56Z
        assert_eq!(
            mode(&out.join("bin/run.sh")),
            0o755 & !mask,
            "setuid dropped"
        );
        assert_eq!(mode(&out.join("ro/notes.txt")), 0o444 & !mask);
        assert_eq!(
            mode(&out.join("ro")),
            (0o555 & !mask) | 0o700,
            "a folder keeps its owner's rwx"
        );
        assert_eq!(
            mode(&out.join("open")),
            0o777 & !mask,
            "umask applies to folders"
        );
        for p in ["bin/run.sh", "ro/notes.txt", "ro"] {
            assert_eq!(mtime(&out.join(p)), t2021, "{p}");
        }
        assert_eq!(mtime(&out.join("stamped.txt")), 1_700_000_000);
        // tar: a read-only folder written into before its mode is applied.
        let mut b = tar::Builder::new(File::create(src.path().join("t.tar")).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o500);
        h.set_mtime(1_500_000_000);
        h.set_size(0);
        b.append_data(&mut h, "locked/", &b""[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o750);
        h.set_mtime(1_600_000_000);
        h.set_size(2);
        b.append_data(&mut h, "locked/tool", &b"hi"[..]).unwrap();
        b.finish().unwrap();
        drop(b);
        run("", src.path(), "t.tar", &dest).unwrap();
        let out = dest.join("t");
        assert_eq!(std::fs::read(out.join("locked/tool")).unwrap(), b"hi");
        assert_eq!(mode(&out.join("locked/tool")), 0o750 & !mask);
        assert_eq!(mtime(&out.join("locked/tool")), 1_600_000_000);
        assert_eq!(mode(&out.join("locked")), 0o700);
        assert_eq!(mtime(&out.join("locked")), 1_500_000_000);
        // And the extracted tree can still be replaced whole.
        run(r#"{"existing":"overwrite"}"#, src.path(), "t.tar", &dest).unwrap();
        assert_eq!(std::fs::read(out.join("locked/tool")).unwrap(), b"hi");
    }

    #[test]
    fn overwrite_replaces_the_folder_whole_and_removes_the_old_one_without_following_links() {
        let (src, _d, dest) = dirs();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep.txt"), b"not ours").unwrap();
        make_zip(
            &src.path().join("a.zip"),
            &[("new.txt", b"new"), ("sub/n.txt", b"n")],
        );
        // The folder being replaced: a file the archive lacks, a folder,
        // and symlinks to a folder and a file outside (put there by someone).
        let old = dest.join("a");
        std::fs::create_dir_all(old.join("sub/deeper")).unwrap();
        std::fs::write(old.join("stale.txt"), b"old").unwrap();
        std::fs::write(old.join("sub/deeper/s.txt"), b"old").unwrap();
        std::os::unix::fs::symlink(outside.path(), old.join("link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("keep.txt"), old.join("sub/link-file"))
            .unwrap();
        let v = run(r#"{"existing":"overwrite"}"#, src.path(), "a.zip", &dest).unwrap();
        assert_eq!(v["output"], "a");
        assert_eq!(std::fs::read(old.join("new.txt")).unwrap(), b"new");
        assert_eq!(std::fs::read(old.join("sub/n.txt")).unwrap(), b"n");
        assert!(!old.join("stale.txt").exists() && !old.join("link-dir").exists());
        // Nothing of the old folder is left beside it, and nothing outside
        // was touched through its links.
        let names: Vec<_> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a"], "no moved-aside or staging folder left");
        assert_eq!(
            std::fs::read(outside.path().join("keep.txt")).unwrap(),
            b"not ours"
        );
    }

    #[test]
    fn overwrite_replaces_a_symlink_or_file_at_the_output_name_not_what_it_points_to() {
        let (src, _d, dest) = dirs();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep.txt"), b"precious").unwrap();
        make_zip(&src.path().join("a.zip"), &[("p.txt", b"hi")]);
        make_zip(&src.path().join("b.zip"), &[("q.txt", b"ho")]);
        make_zip(&src.path().join("c.zip"), &[("r.txt", b"hu")]);
        std::os::unix::fs::symlink(outside.path(), dest.join("a")).unwrap();
        std::fs::write(dest.join("b"), b"a file in the way").unwrap();
        std::os::unix::fs::symlink(outside.path().join("gone"), dest.join("c")).unwrap();
        for (zip, name, body) in [
            ("a.zip", "p.txt", b"hi"),
            ("b.zip", "q.txt", b"ho"),
            ("c.zip", "r.txt", b"hu"),
        ] {
            run(r#"{"existing":"overwrite"}"#, src.path(), zip, &dest).unwrap();
            let out = dest.join(zip.trim_end_matches(".zip"));
            assert!(
                out.symlink_metadata().unwrap().is_dir(),
                "{zip}: a real folder now"
            );
            assert_eq!(std::fs::read(out.join(name)).unwrap(), body);
        }
        assert_eq!(
            std::fs::read(outside.path().join("keep.txt")).unwrap(),
            b"precious",
            "the folder the symlink pointed to is untouched"
        );
        let mut names: Vec<_> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", "c"], "nothing moved aside is left");
        // skip leaves a symlink, even a dangling one, where it is.
        std::fs::remove_dir_all(dest.join("c")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("gone"), dest.join("c")).unwrap();
        let v = run("{}", src.path(), "c.zip", &dest).unwrap();
        assert!(v.get("skipped").is_some(), "{v}");
        assert!(dest.join("c").symlink_metadata().unwrap().is_symlink());
    }

    #[test]
    fn zip_slip_and_absolute_names_are_refused_whole() {
        let (src, _d, dest) = dirs();
        for (i, bad) in ["../evil.txt", "a/../../evil.txt", "/tmp/evil.txt"]
            .iter()
            .enumerate()
        {
            let name = format!("bad{i}.zip");
            make_zip(
                &src.path().join(&name),
                &[("ok.txt", b"ok"), (bad, b"evil")],
            );
            let err = run("", src.path(), &name, &dest).unwrap_err();
            assert_eq!(err.kind, FailureKind::OutsideRoot, "{bad}: {}", err.message);
        }
        // The bad entry deep inside a big archive, among ranges extracted in
        // parallel: still refused whole.
        let many: Vec<(String, Vec<u8>)> = (0..300)
            .map(|i| (format!("img/{i:03}.txt"), vec![b'x'; 1000]))
            .collect();
        let mut entries: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        entries.insert(200, ("img/../../evil.txt", b"evil"));
        make_zip(&src.path().join("big.zip"), &entries);
        let err = run("", src.path(), "big.zip", &dest).unwrap_err();
        assert_eq!(err.kind, FailureKind::OutsideRoot, "{}", err.message);
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "nothing left behind"
        );
    }

    #[test]
    fn symlink_entries_pointing_out_are_refused_inside_are_kept() {
        let (src, _d, dest) = dirs();
        let build_tar = |name: &str, target: &str| {
            let mut b = tar::Builder::new(File::create(src.path().join(name)).unwrap());
            append_link(&mut b, tar::EntryType::Symlink, "dir/link", target);
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            b.append_data(&mut h, "dir/f.txt", &b"hi"[..]).unwrap();
            b.finish().unwrap();
        };
        build_tar("out.tar", "../../etc/passwd");
        let err = run("", src.path(), "out.tar", &dest).unwrap_err();
        assert_eq!(err.kind, FailureKind::OutsideRoot);
        build_tar("abs.tar", "/etc/passwd");
        assert!(run("", src.path(), "abs.tar", &dest).is_err());
        build_tar("in.tar", "f.txt");
        run("", src.path(), "in.tar", &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("in/dir/link")).unwrap(), b"hi");
        // Out through an earlier symlink: `d` -> `.` makes `d/..` the
        // parent of the folder, though it reads as `.`; and `x` -> `.` puts
        // `x/y` in the folder itself, where `..` leaves it.
        let links_tar = |name: &str, links: &[(&str, &str)]| {
            let mut b = tar::Builder::new(File::create(src.path().join(name)).unwrap());
            for (link, target) in links {
                append_link(&mut b, tar::EntryType::Symlink, link, target);
            }
            b.finish().unwrap();
        };
        links_tar("dot.tar", &[("d", "."), ("l", "d/..")]);
        links_tar("nested.tar", &[("x", "."), ("x/y", "..")]);
        // `..` after a part that does not exist yet: a later entry could
        // make that part a symlink.
        links_tar("later.tar", &[("l", "new/.."), ("new", ".")]);
        for name in ["dot.tar", "nested.tar", "later.tar"] {
            refused_as_outside(src.path(), name, &dest);
        }
        // Through existing folders and links that stay inside: kept.
        links_tar("fine.tar", &[("d", "."), ("sub/l", "../d/sub")]);
        run("", src.path(), "fine.tar", &dest).unwrap();
        assert!(std::fs::symlink_metadata(dest.join("fine/sub/l")).is_ok());
        // A zip symlink entry pointing out is refused too.
        let mut z = zip::ZipWriter::new(File::create(src.path().join("l.zip")).unwrap());
        z.add_symlink("link", "../../etc", SimpleFileOptions::default())
            .unwrap();
        z.finish().unwrap();
        assert_eq!(
            run("", src.path(), "l.zip", &dest).unwrap_err().kind,
            FailureKind::OutsideRoot
        );
    }

    #[test]
    fn tar_hard_links_to_earlier_files_are_kept_others_refused() {
        use std::os::unix::fs::MetadataExt;
        let (src, _d, dest) = dirs();
        let build = |name: &str, links: &[(&str, &str)]| {
            let mut b = tar::Builder::new(File::create(src.path().join(name)).unwrap());
            let mut h = tar::Header::new_gnu();
            h.set_size(4);
            h.set_mode(0o644);
            b.append_data(&mut h, "a/data.bin", &b"data"[..]).unwrap();
            append_link(&mut b, tar::EntryType::Symlink, "a/sym", "data.bin");
            for (link, target) in links {
                append_link(&mut b, tar::EntryType::Link, link, target);
            }
            b.finish().unwrap();
        };
        build("ok.tar", &[("b/same.bin", "a/data.bin")]);
        let v = run("", src.path(), "ok.tar", &dest).unwrap();
        assert_eq!(v["entries"], 3);
        let (a, b) = (dest.join("ok/a/data.bin"), dest.join("ok/b/same.bin"));
        assert_eq!(std::fs::read(&b).unwrap(), b"data");
        assert_eq!(
            std::fs::metadata(&a).unwrap().ino(),
            std::fs::metadata(&b).unwrap().ino()
        );
        let outside = src.path().join("secret.txt");
        std::fs::write(&outside, b"secret").unwrap();
        for (name, target) in [
            ("up.tar", "../secret.txt"),
            ("abs.tar", outside.to_str().unwrap()),
            ("missing.tar", "a/nothing.bin"),
            ("tosym.tar", "a/sym"),
            ("todir.tar", "a"),
        ] {
            build(name, &[("b/x", target)]);
            refused_as_outside(src.path(), name, &dest);
        }
        assert_eq!(std::fs::metadata(&outside).unwrap().nlink(), 1);
    }

    #[test]
    fn an_entry_replaces_an_earlier_one_of_its_name_without_writing_through_it() {
        let (src, _d, dest) = dirs();
        let file = |b: &mut tar::Builder<File>, name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        };
        let mut b = tar::Builder::new(File::create(src.path().join("again.tar")).unwrap());
        file(&mut b, "a", b"one");
        append_link(&mut b, tar::EntryType::Link, "b", "a");
        file(&mut b, "b", b"two");
        append_link(&mut b, tar::EntryType::Symlink, "l", "a");
        file(&mut b, "l", b"three");
        append_link(&mut b, tar::EntryType::Symlink, "m", "a");
        append_link(&mut b, tar::EntryType::Symlink, "m", "b");
        // A hard link to itself: nothing to do (replacing would unlink the
        // only name of the file, then fail to link it).
        append_link(&mut b, tar::EntryType::Link, "a", "a");
        b.finish().unwrap();
        run("", src.path(), "again.tar", &dest).unwrap();
        let out = dest.join("again");
        // The hard link's other name and the symlink's target keep their
        // content; the later entries are files and links of their own.
        assert_eq!(std::fs::read(out.join("a")).unwrap(), b"one");
        assert_eq!(std::fs::read(out.join("b")).unwrap(), b"two");
        assert!(std::fs::symlink_metadata(out.join("l")).unwrap().is_file());
        assert_eq!(std::fs::read(out.join("l")).unwrap(), b"three");
        assert_eq!(std::fs::read_link(out.join("m")).unwrap(), Path::new("b"));
        // A file where entries made a folder: refused, nothing extracted.
        let mut b = tar::Builder::new(File::create(src.path().join("clash.tar")).unwrap());
        file(&mut b, "d/in.txt", b"in");
        file(&mut b, "d", b"file");
        b.finish().unwrap();
        let err = run("", src.path(), "clash.tar", &dest).unwrap_err();
        assert!(err.message.contains("make a folder"), "{}", err.message);
        assert!(!dest.join("clash").exists());
    }

    #[test]
    fn in_a_zip_the_last_entry_of_a_name_wins_whichever_range_runs_first() {
        let (src, _d, dest) = dirs();
        // Big stored entries first keep one thread busy while another
        // takes the later ranges, which hold the later copies of each name.
        let big = vec![7u8; 300_000];
        let mut z = zip::ZipWriter::new(File::create(src.path().join("dup.zip")).unwrap());
        let stored =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let mut add = |name: &str, data: &[u8]| {
            z.start_file(name, stored).unwrap();
            z.write_all(data).unwrap();
        };
        for i in 0..40 {
            add(&format!("big{i}.bin"), &big);
        }
        add("a.txt", b"FIRST");
        add("b.txt", b"one");
        for i in 0..400 {
            add(&format!("f{i}.txt"), b"x");
        }
        add("./a.txt", b"LAST");
        add("./b.txt", b"two");
        for i in 0..400 {
            add(&format!("g{i}.txt"), b"x");
        }
        add("././b.txt", b"three");
        z.finish().unwrap();
        for _ in 0..3 {
            let v = run(r#"{"existing":"overwrite"}"#, src.path(), "dup.zip", &dest).unwrap();
            assert_eq!(v["entries"], 845);
            let out = dest.join("dup");
            assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"LAST");
            assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), b"three");
            assert_eq!(std::fs::read(out.join("big39.bin")).unwrap(), big);
        }
    }

    #[test]
    fn a_sparse_file_in_pax_format_is_refused_not_extracted_as_its_map() {
        let (src, _d, dest) = dirs();
        let record = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            format!("{len}{body}")
        };
        let pax: String = [
            record("GNU.sparse.major", "1"),
            record("GNU.sparse.minor", "0"),
            record("GNU.sparse.name", "sp.bin"),
            record("GNU.sparse.realsize", "1048579"),
        ]
        .concat();
        let mut b = tar::Builder::new(File::create(src.path().join("sparse.tar")).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(pax.len() as u64);
        b.append_data(&mut h, "PaxHeaders.0/sp.bin", pax.as_bytes())
            .unwrap();
        let mut data = b"2\n0\n5\n1048576\n3\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"STARTEND");
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "GNUSparseFile.0/sp.bin", &data[..])
            .unwrap();
        b.finish().unwrap();
        let err = run("", src.path(), "sparse.tar", &dest).unwrap_err();
        assert!(
            err.message.contains("sparse file in the PAX format"),
            "{}",
            err.message
        );
        assert!(!dest.join("sparse").exists(), "nothing extracted");
    }

    #[test]
    fn zip_symlinks_are_made_last_so_no_entry_is_written_through_one() {
        let (src, _d, dest) = dirs();
        let zip_with = |name: &str, link: (&str, &str), files: &[&str]| {
            let mut z = zip::ZipWriter::new(File::create(src.path().join(name)).unwrap());
            z.add_symlink(link.0, link.1, SimpleFileOptions::default())
                .unwrap();
            for f in files {
                z.start_file(*f, SimpleFileOptions::default()).unwrap();
                z.write_all(f.as_bytes()).unwrap();
            }
            z.finish().unwrap();
        };
        // `link/b.txt` once went through the link into `sub/`, or not,
        // depending on which range ran first; now the link never exists
        // while entries are written, so `link` is a folder and the archive
        // is refused, every time.
        zip_with("through.zip", ("link", "sub"), &["sub/a.txt", "link/b.txt"]);
        let err = run("", src.path(), "through.zip", &dest).unwrap_err();
        assert!(err.message.contains("make a folder"), "{}", err.message);
        assert!(!dest.join("through").exists());
        // A link to an entry that comes after it is made, pointing at it.
        zip_with("later.zip", ("lnk", "sub/a.txt"), &["sub/a.txt"]);
        run("", src.path(), "later.zip", &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("later/lnk")).unwrap(), b"sub/a.txt");
    }

    #[test]
    fn zip_bomb_entry_count_and_truncation_are_bounded() {
        let (src, _d, dest) = dirs();
        let zeros = vec![0u8; 20 << 20];
        let mut z = zip::ZipWriter::new(File::create(src.path().join("bomb.zip")).unwrap());
        let opts =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file("zeros.bin", opts).unwrap();
        z.write_all(&zeros).unwrap();
        z.finish().unwrap();
        let err = run("", src.path(), "bomb.zip", &dest).unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded, "{}", err.message);

        let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("{i}"), vec![])).collect();
        let entries: Vec<(&str, &[u8])> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        make_zip(&src.path().join("many.zip"), &entries);
        let err = run(r#"{"max_entries":10}"#, src.path(), "many.zip", &dest).unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded);

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        {
            let mut b = tar::Builder::new(&mut gz);
            let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            b.append_data(&mut h, "big.bin", &data[..]).unwrap();
            b.finish().unwrap();
        }
        let bytes = gz.finish().unwrap();
        std::fs::write(src.path().join("t.tar.gz"), &bytes[..bytes.len() / 2]).unwrap();
        let err = run("", src.path(), "t.tar.gz", &dest).unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidData, "{}", err.message);
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "nothing left behind"
        );
    }

    #[test]
    fn tar_zst_extracts_and_non_archives_are_skipped() {
        let (src, _d, dest) = dirs();
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        {
            let mut b = tar::Builder::new(&mut enc);
            // `tar -C dir -cf x.tar .` starts with the folder itself, `./`.
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            h.as_old_mut().name[..2].copy_from_slice(b"./");
            h.set_cksum();
            b.append(&h, &b""[..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_size(5);
            b.append_data(&mut h, "./a/b.txt", &b"hello"[..]).unwrap();
            b.finish().unwrap();
        }
        std::fs::write(src.path().join("x.tar.zst"), enc.finish().unwrap()).unwrap();
        let v = run("", src.path(), "x.tar.zst", &dest).unwrap();
        assert_eq!(v["output"], "x");
        assert_eq!(std::fs::read(dest.join("x/a/b.txt")).unwrap(), b"hello");
        std::fs::write(src.path().join("readme.txt"), b"text").unwrap();
        let v = run("", src.path(), "readme.txt", &dest).unwrap();
        assert!(v["skipped"].is_string());
    }

    #[test]
    fn compressed_files_that_are_not_tars_are_skipped_and_empty_tars_extract_empty() {
        let (src, _d, dest) = dirs();
        let log = b"hello log\n".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&log).unwrap();
        std::fs::write(src.path().join("app.log.gz"), gz.finish().unwrap()).unwrap();
        let zst = zstd::stream::encode_all(&log[..], 3).unwrap();
        std::fs::write(src.path().join("x.log.zst"), zst).unwrap();
        for (name, format) in [("app.log.gz", "gzip"), ("x.log.zst", "zstd")] {
            let v = run("", src.path(), name, &dest).unwrap();
            let why = v["skipped"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {v}"));
            assert!(
                why.contains(&format!("a {format}-compressed file, not a tar")),
                "{why}"
            );
        }
        assert_eq!(
            std::fs::read_dir(&dest).unwrap().count(),
            0,
            "no output, no staging"
        );
        // An empty tar is its end-of-archive zero blocks: an empty folder,
        // plain as compressed.
        std::fs::write(src.path().join("e.tar"), vec![0u8; 10240]).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[0u8; 10240]).unwrap();
        std::fs::write(src.path().join("f.tgz"), gz.finish().unwrap()).unwrap();
        for (name, out) in [("e.tar", "e"), ("f.tgz", "f")] {
            let v = run("", src.path(), name, &dest).unwrap();
            assert_eq!(v["entries"], 0, "{name}: {v}");
            assert_eq!(std::fs::read_dir(dest.join(out)).unwrap().count(), 0);
        }
        // A tar of before POSIX has no magic, only its checksum.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_old();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "v7.txt", &b"v7"[..]).unwrap();
        std::fs::write(src.path().join("old.tar"), b.into_inner().unwrap()).unwrap();
        run("", src.path(), "old.tar", &dest).unwrap();
        assert_eq!(std::fs::read(dest.join("old/v7.txt")).unwrap(), b"v7");
        // Damaged text named .tar is still no archive.
        std::fs::write(src.path().join("not.tar"), vec![b'x'; 1024]).unwrap();
        assert!(run("", src.path(), "not.tar", &dest).unwrap()["skipped"].is_string());
    }

    #[test]
    fn a_failure_at_one_entry_names_it() {
        let (src, _d, dest) = dirs();
        make_zip(
            &src.path().join("fd.zip"),
            &[("x", b"f"), ("x/", b""), ("x/y", b"i")],
        );
        let err = run("", src.path(), "fd.zip", &dest).unwrap_err();
        assert!(err.message.contains("\"x"), "{}", err.message);
        let long = "a".repeat(300);
        let mut b = tar::Builder::new(File::create(src.path().join("lc.tar")).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"x"[..]).unwrap();
        b.finish().unwrap();
        let err = run("", src.path(), "lc.tar", &dest).unwrap_err();
        assert!(
            err.message.contains(&format!("entry \"{long}\"")),
            "{}",
            err.message
        );
        assert!(err.message.contains("name too long"), "{}", err.message);
    }

    #[test]
    fn archives_of_a_batch_are_published_when_it_settles_and_hostile_ones_leave_nothing() {
        let (src, _d, dest) = dirs();
        make_zip(&src.path().join("good.zip"), &[("a/b.txt", b"kept")]);
        make_zip(
            &src.path().join("slip.zip"),
            &[("ok.txt", b"x"), ("../evil.txt", b"x")],
        );
        make_zip(&src.path().join("other.zip"), &[("c.txt", b"also kept")]);
        let task = build("").unwrap();
        let outputs = crate::output::Outputs::default();
        let mut results = Vec::new();
        for (i, rel) in ["good.zip", "slip.zip", "other.zip"].iter().enumerate() {
            outputs.start_file(i);
            let r = task
                .process(&FileCtx {
                    path: &src.path().join(rel),
                    rel: rel.as_bytes(),
                    known_size: None,
                    destination: Some(&dest),
                    outputs: Some(&outputs),
                    elsewhere: None,
                    cancel: None,
                    staged: false,
                })
                .result;
            results.push(r);
        }
        assert_eq!(
            results[1].as_ref().unwrap_err().kind,
            FailureKind::OutsideRoot
        );
        // Extracted and synced in staging, but not yet under their names.
        assert!(!dest.join("good").exists());
        assert!(
            outputs.settle().is_empty(),
            "every staged archive was published"
        );
        assert_eq!(std::fs::read(dest.join("good/a/b.txt")).unwrap(), b"kept");
        assert_eq!(
            std::fs::read(dest.join("other/c.txt")).unwrap(),
            b"also kept"
        );
        assert!(!dest.join("slip").exists());
        assert!(!dest.parent().unwrap().join("evil.txt").exists());
        let mut names: Vec<_> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["good", "other"], "no staging folder is left");
    }
}
