//! Running a task on one file wherever it and its outputs live: a local
//! file or an S3 object in, a local folder or an S3 prefix out.
//!
//! An S3 object goes to [`Task::process_reader`] through ranged GETs when
//! the task reads streams (csv-header reads only the header's bytes), to
//! [`Task::process_ranges`] through block-sized ranged GETs when the task
//! reads by ranges (extract); otherwise it is downloaded to a staged local
//! file that is deleted after the task ran. With an S3 destination the task
//! writes into a fresh staged folder that is uploaded, then deleted
//! ([`super::s3_write`]). The file's outcome fails when its upload fails.
//!
//! Before any of that, a file the task skips by its name is settled without
//! a request ([`FileOutcome::settled_by_name`]), and a file whose planned
//! output is already on the S3 destination by one HEAD, not a download.
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;

use super::blocks::RangeSource;
use super::s3::{self, Encryption};
use super::s3_read::{download, ObjectRanges, RangedReader};
use super::s3_write::{Planned, S3Destination, StagedOutputs, Uploaded};
use super::staging::Staged;
use super::S3Root;
use crate::output::OutputsElsewhere;
use crate::results::{FailureKind, FileFailure};
use crate::tasks::{Cancellable, FileCtx, FileOutcome, Task};

/// Where a call's outputs and staged files go.
pub struct Io {
    /// A local destination (canonical), if given.
    pub destination: Option<PathBuf>,
    /// An S3 destination, if given (then `destination` is None).
    pub s3_destination: Option<Arc<S3Destination>>,
    /// Where objects and outputs are staged ([`super::staging`]).
    pub staging: PathBuf,
}

impl Io {
    /// Whether outputs have somewhere to go other than next to the input.
    pub fn has_destination(&self) -> bool {
        self.destination.is_some() || self.s3_destination.is_some()
    }

    /// Runs `run` with the destination folder the task should write into
    /// (and, for an S3 destination, where that staged folder's outputs
    /// really go), uploading what it wrote for input `rel` when the
    /// destination is on S3 (where an existing output makes the file
    /// skipped or failed, as the task's `existing` policy says:
    /// [`super::s3_write`]).
    ///
    /// `absent` is an output (relative to the destination) already looked
    /// up and found missing, which the task need not ask about again.
    pub fn with_destination(
        &self,
        known_size: Option<u64>,
        rel: &[u8],
        absent: Option<&Path>,
        run: impl FnOnce(Option<&Path>, Option<&dyn OutputsElsewhere>) -> FileOutcome,
    ) -> FileOutcome {
        let Some(dest) = &self.s3_destination else {
            return run(self.destination.as_deref(), None);
        };
        let folder = match Staged::folder(&self.staging) {
            Ok(f) => f,
            Err(f) => return failed(known_size, f),
        };
        let elsewhere = StagedOutputs::new(dest, folder.path(), absent);
        let mut outcome = run(Some(folder.path()), Some(&elsewhere));
        if outcome.result.is_ok() {
            match dest.upload_tree(folder.path(), rel) {
                Ok(Uploaded::Written(_)) => {}
                Ok(Uploaded::Skipped(output)) => {
                    outcome.result = Ok(
                        serde_json::json!({"skipped": "output exists", "output": output})
                            .to_string(),
                    );
                }
                Err(f) => outcome.result = Err(f),
            }
        }
        outcome
    }
}

fn failed(known_size: Option<u64>, failure: FileFailure) -> FileOutcome {
    FileOutcome {
        size: known_size.unwrap_or(0),
        result: Err(failure),
    }
}

/// Bytes of each object's start fetched ahead for tasks that read streams.
const HEAD_BYTES: u64 = 16 * 1024;

/// For a batch on S3 whose task reads streams: the first bytes of each file
/// (listing sizes known), fetched concurrently (`PRAVAH_S3_READ_CONCURRENCY`,
/// default 32 per batch); None for a file to read on demand.
pub fn prefetch(
    task: &dyn Task,
    root: &S3Root,
    files: &[(&[u8], Option<u64>)],
) -> Vec<Option<Bytes>> {
    let none = || vec![None; files.len()];
    if !task.reads_streams() {
        return none();
    }
    let Ok(store) = s3::store(&root.bucket, &Encryption::Default) else {
        return none();
    };
    let wanted: Vec<(usize, (String, u64))> = files
        .iter()
        .enumerate()
        .filter_map(|(i, (rel, size))| Some((i, (root.key(rel).ok()?, (*size)?))))
        .collect();
    let objects: Vec<(String, u64)> = wanted.iter().map(|(_, o)| o.clone()).collect();
    let concurrency = std::env::var("PRAVAH_S3_READ_CONCURRENCY")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(32);
    let heads = super::s3_read::prefetch_heads(&store, &objects, HEAD_BYTES, concurrency);
    let mut out = none();
    for ((i, _), head) in wanted.into_iter().zip(heads) {
        out[i] = head;
    }
    out
}

/// The file name of an object's staged copy: the key's last segment, cut
/// to the 255 bytes a Linux file name may have, its extension kept (tasks
/// go by it). A key's segment may be 1,024 bytes; staged whole, such an
/// object failed every task with "File name too long". Outputs are named
/// after the key, not the copy.
fn staged_name(segment: &str) -> String {
    const MAX: usize = 255;
    if segment.len() <= MAX {
        return segment.to_owned();
    }
    let ext = segment
        .rfind('.')
        .map(|i| &segment[i..])
        .filter(|e| e.len() <= 32)
        .unwrap_or("");
    let mut end = MAX - ext.len();
    while !segment.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ext}", &segment[..end])
}

/// What the listing said of an object, where it said it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Listed {
    pub size: Option<u64>,
    /// Modification time, unix ns.
    pub mtime: Option<i64>,
}

/// Runs `task` on the object `rel` under `root`; see the module doc.
pub fn process_object(
    io: &Io,
    task: &dyn Task,
    root: &S3Root,
    rel: &[u8],
    listed: Listed,
    head: Option<Bytes>,
    cancel: &AtomicBool,
) -> FileOutcome {
    let known_size = listed.size;
    let key = match root.key(rel) {
        Ok(k) => k,
        Err(f) => return failed(known_size, f),
    };
    if let Some(outcome) = FileOutcome::settled_by_name(task, rel, known_size) {
        return outcome;
    }
    let store = match s3::store(&root.bucket, &Encryption::Default) {
        Ok(s) => s,
        Err(e) => return failed(known_size, FileFailure::new(FailureKind::Io, e.to_string())),
    };
    // A task that needs only size and time: the listing's (chunk files
    // keep both), else one HEAD; never a download.
    if task.metadata_only() {
        if let Listed {
            size: Some(size),
            mtime: Some(ns),
        } = listed
        {
            return task.process_metadata(rel, size, ns.div_euclid(1_000_000_000));
        }
        let head = super::s3_read::object_path(&key).and_then(|path| {
            s3::block_on(object_store::ObjectStoreExt::head(&*store, &path))
                .map_err(|e| s3::classify(&e, "reading the object's metadata"))
        });
        return match head {
            Ok(meta) => task.process_metadata(rel, meta.size, meta.last_modified.timestamp()),
            Err(f) => failed(known_size, f),
        };
    }
    if task.reads_streams() {
        let mut reader = match RangedReader::open(store.clone(), &key, known_size) {
            Ok(r) => r.with_head(head.unwrap_or_default()),
            Err(f) => return failed(known_size, f),
        };
        let size = reader.size();
        return task.process_reader(&mut Cancellable::new(&mut reader, Some(cancel)), size);
    }
    if task.reads_ranges() {
        let source = match ObjectRanges::open(store, &key, known_size) {
            Ok(s) => s,
            Err(f) => return failed(known_size, f),
        };
        let size = source.size();
        let path = Path::new(std::ffi::OsStr::from_bytes(rel));
        return io.with_destination(Some(size), rel, None, |destination, elsewhere| {
            task.process_ranges(
                &FileCtx {
                    path,
                    rel,
                    known_size: Some(size),
                    destination,
                    outputs: None,
                    elsewhere,
                    cancel: Some(cancel),
                    staged: true,
                },
                Arc::new(source),
            )
        });
    }
    // A re-run onto an S3 destination: an output already there settles
    // the file before its object is downloaded.
    let planned = io.s3_destination.as_ref().and_then(|dest| {
        let out = task.planned_output(Path::new(std::ffi::OsStr::from_bytes(rel)))?;
        Some((dest.look_up_planned(&out), out))
    });
    let absent = match planned {
        Some((Planned::Settled(result), _)) => {
            return FileOutcome {
                size: known_size.unwrap_or(0),
                result,
            }
        }
        Some((Planned::Absent, out)) => Some(out),
        _ => None,
    };
    let name = staged_name(key.rsplit('/').next().unwrap_or(&key));
    let name = name.as_str();
    let staging = io.staging.join("objects");
    let (staged, mut file) = match Staged::file(&staging, name) {
        Ok(s) => s,
        Err(f) => return failed(known_size, f),
    };
    let size = match download(&store, &key, &mut file, cancel) {
        Ok(n) => n,
        Err(f) => return failed(known_size, f),
    };
    drop(file);
    let path = staged.path().join(name);
    io.with_destination(
        Some(size),
        rel,
        absent.as_deref(),
        |destination, elsewhere| {
            task.process(&FileCtx {
                path: &path,
                rel,
                known_size: Some(size),
                destination,
                outputs: None,
                elsewhere,
                cancel: Some(cancel),
                staged: true,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::staged_name;

    #[test]
    fn staged_names_fit_a_file_name_and_keep_their_extension() {
        assert_eq!(staged_name("a.csv"), "a.csv");
        let long = format!("{}.csv", "L".repeat(300));
        let name = staged_name(&long);
        assert_eq!(name.len(), 255);
        assert!(name.ends_with("L.csv"), "{name}");
        // Cut between characters, never inside one.
        let wide = format!("{}.tar.gz", "日".repeat(100));
        let name = staged_name(&wide);
        assert!(name.len() <= 255 && name.ends_with("日.gz"), "{name}");
    }
}
