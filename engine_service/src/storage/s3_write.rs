//! Writing outputs to an `s3://bucket/prefix` destination.
//!
//! Tasks write their outputs locally and atomically, as always, into a
//! fresh per-file staging folder ([`super::staging`]) that stands in for
//! the destination. [`S3Destination::upload_tree`] then uploads each staged
//! file to `prefix/<its path relative to the folder>` and deletes it.
//!
//! Atomicity: an object becomes visible under its key only when its upload
//! completes. Small outputs (below `PRAVAH_S3_MULTIPART_THRESHOLD`, 16 MiB)
//! are one PUT; larger ones are a multipart upload of
//! `PRAVAH_S3_PART_SIZE` (8 MiB) parts with at most
//! `PRAVAH_S3_UPLOAD_CONCURRENCY` (4) parts in flight, and any failure
//! aborts it, so a failed upload never leaves a partial object under the
//! final key (an upload cut by a crash leaves only invisible parts, which a
//! bucket lifecycle rule for incomplete multipart uploads reclaims).
//!
//! Existing outputs (the writing tasks' `existing` option, default skip):
//! the task looks its output up under the final key before it does any
//! work ([`StagedOutputs`], asked through
//! [`crate::tasks::FileCtx::output_exists`]): an output file with a HEAD,
//! an output folder (extract's) by listing at most one key under it. With
//! `skip` the file is reported skipped, with `fail` it fails, and nothing
//! is read, computed or uploaded; with `overwrite` its outputs replace the
//! objects of the same keys, and once a folder's new objects are all
//! uploaded, the objects under it that the new folder lacks are deleted, so
//! it holds what the archive holds, as a local folder replaced whole does
//! (S3 has no atomic folder swap: for a moment both old and new objects
//! are listed). Another writer may create the key while the task works:
//! single-PUT uploads are therefore conditional (`If-None-Match: *`) unless
//! the policy is overwrite, so such a race ends as skip or fail too;
//! folders and multipart uploads are looked up once more just before they
//! are uploaded, and a multipart upload relies on that look-up alone.
//!
//! Encryption: the store is built with the call's server-side encryption
//! ([`super::s3::Encryption`]), which object_store sends on every PUT and
//! multipart creation.
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use super::s3::{self, Encryption};
use super::s3_read::object_path;
use super::S3Root;
use crate::error::{EngineError, Result};
use crate::output::{Existing, OutputsElsewhere};
use crate::results::{FailureKind, FileFailure};

fn env_bytes(name: &str, default: usize, least: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(default)
        .max(least)
}

/// An `s3://` destination of a Process call.
pub struct S3Destination {
    pub root: S3Root,
    store: Arc<AmazonS3>,
    /// Outputs at least this large use a multipart upload.
    multipart_threshold: usize,
    part_size: usize,
    parts_in_flight: usize,
    /// The task's `existing` policy, applied to objects already there.
    existing: Existing,
}

/// How uploading one file's outputs ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Uploaded {
    /// This many objects were written.
    Written(u64),
    /// An output existed and the policy was skip: nothing was uploaded.
    /// Holds the output's path relative to the destination.
    Skipped(String),
}

/// What looking up a planned output found ([`S3Destination::look_up_planned`]).
pub enum Planned {
    /// It is there: the file's result (skip) or failure (fail).
    Settled(std::result::Result<String, FileFailure>),
    /// It is not there: process the file, no need to ask again.
    Absent,
    /// Not asked (overwrite), or the look-up failed: process the file.
    Unknown,
}

/// An output of one input: a file, or a folder of files (extract's).
struct Unit {
    rel: PathBuf,
    folder: bool,
}

impl S3Destination {
    /// Parses and checks `uri` (allowed bucket) and builds its client;
    /// `existing` is what to do with outputs already under their keys.
    pub fn open(uri: &str, encryption: &Encryption, existing: Existing) -> Result<Self> {
        let root = S3Root::parse(uri)?;
        let store = s3::store(&root.bucket, encryption)?;
        // One key listed now: a missing bucket fails the call at once, as a
        // local destination that cannot be made does, rather than every
        // file one upload at a time ("completed", all failed). Any other
        // answer is left to the uploads: write-only credentials may not list.
        let probe = object_store::list::PaginatedListOptions {
            max_keys: Some(1),
            ..Default::default()
        };
        let prefix = (!root.prefix.is_empty()).then(|| format!("{}/", root.prefix));
        let listed = s3::block_on(object_store::list::PaginatedListStore::list_paginated(
            &*store,
            prefix.as_deref(),
            probe,
        ));
        if let Err(e) = listed {
            let error = s3::request_error(&e, &format!("checking the destination {}", root.uri()));
            if matches!(
                &error,
                EngineError::Storage {
                    kind: FailureKind::NotFound,
                    ..
                }
            ) {
                return Err(error);
            }
        }
        Ok(S3Destination {
            root,
            store,
            multipart_threshold: env_bytes("PRAVAH_S3_MULTIPART_THRESHOLD", 16 << 20, 1),
            // S3 refuses parts under 5 MiB (but the last).
            part_size: env_bytes("PRAVAH_S3_PART_SIZE", 8 << 20, 5 << 20),
            parts_in_flight: env_bytes("PRAVAH_S3_UPLOAD_CONCURRENCY", 4, 1),
            existing,
        })
    }

    /// Uploads every file under `staged`, the outputs of input `rel`, to
    /// its key and removes it, after applying the `existing` policy (module
    /// doc). The first failure stops the upload of this folder (objects
    /// already uploaded stay, each one whole).
    pub fn upload_tree(
        &self,
        staged: &Path,
        rel: &[u8],
    ) -> std::result::Result<Uploaded, FileFailure> {
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(staged).min_depth(1) {
            let entry = entry.map_err(|e| {
                let io = std::io::Error::other(e.to_string());
                FileFailure::from_io(&io, "reading the staged outputs")
            })?;
            if entry.file_type().is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(staged)
                    .expect("walkdir yields paths under its root")
                    .to_path_buf();
                files.push((entry.into_path(), rel));
            }
        }
        if self.existing != Existing::Overwrite {
            for unit in units(&files, rel) {
                // The task looked before its work ([`StagedOutputs`]); this
                // look again catches a writer since then. A single PUT is
                // conditional, which settles that race by itself.
                if !unit.folder && !self.is_multipart(&staged.join(&unit.rel)) {
                    continue;
                }
                if self.exists(&unit)? {
                    let shown = unit.rel.to_string_lossy().into_owned();
                    return match self.existing {
                        Existing::Fail => Err(self.exists_failure(&unit.rel)),
                        _ => Ok(Uploaded::Skipped(shown)),
                    };
                }
            }
        }
        let mut written = 0;
        let mut uploaded = HashSet::new();
        for (local, out_rel) in &files {
            let key = self.root.key(out_rel.as_os_str().as_encoded_bytes())?;
            match self.upload_file(local, &key) {
                Ok(()) => {}
                // Created by another writer since the look-up.
                Err(Refused::Exists) => {
                    return match self.existing {
                        Existing::Fail => Err(self.exists_failure(out_rel)),
                        _ => Ok(Uploaded::Skipped(out_rel.to_string_lossy().into_owned())),
                    }
                }
                Err(Refused::Failed(f)) => return Err(f),
            }
            let _ = std::fs::remove_file(local);
            written += 1;
            uploaded.insert(object_path(&key)?);
        }
        if self.existing == Existing::Overwrite {
            for unit in units(&files, rel).iter().filter(|u| u.folder) {
                self.remove_stale(unit, &uploaded)?;
            }
        }
        Ok(Uploaded::Written(written))
    }

    /// Deletes the objects under output folder `unit` that are not among
    /// the `kept` ones just uploaded (an older extraction's leftovers).
    fn remove_stale(
        &self,
        unit: &Unit,
        kept: &HashSet<ObjectPath>,
    ) -> std::result::Result<(), FileFailure> {
        let key = self.root.key(unit.rel.as_os_str().as_encoded_bytes())?;
        let prefix = object_path(&key)?;
        let doing = format!(
            "removing older objects under s3://{}/{key}",
            self.root.bucket
        );
        s3::block_on(async {
            let stale: Vec<ObjectPath> = self
                .store
                .list(Some(&prefix))
                .try_filter_map(|meta| async move {
                    Ok((!kept.contains(&meta.location)).then_some(meta.location))
                })
                .try_collect()
                .await?;
            let mut deleted = self
                .store
                .delete_stream(futures::stream::iter(stale.into_iter().map(Ok)).boxed());
            while let Some(r) = deleted.next().await {
                match r {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .map_err(|e| s3::classify(&e, &doing))
    }

    fn exists_failure(&self, out_rel: &Path) -> FileFailure {
        FileFailure::new(
            FailureKind::Io,
            format!(
                "output s3://{}/{} already exists; set existing=overwrite or existing=skip",
                self.root.bucket,
                self.root
                    .key(out_rel.as_os_str().as_encoded_bytes())
                    .unwrap_or_default()
            ),
        )
    }

    /// Looks up an input's planned output file `out` (relative to the
    /// destination; [`crate::tasks::Task::planned_output`]) before the
    /// input is even fetched.
    pub fn look_up_planned(&self, out: &Path) -> Planned {
        if self.existing == Existing::Overwrite {
            return Planned::Unknown;
        }
        let unit = Unit {
            rel: out.to_path_buf(),
            folder: false,
        };
        match self.exists(&unit) {
            Ok(true) if self.existing == Existing::Fail => {
                Planned::Settled(Err(self.exists_failure(out)))
            }
            Ok(true) => Planned::Settled(Ok(crate::output::skipped_exists(out))),
            Ok(false) => Planned::Absent,
            // The look-ups that follow, or the upload, report it.
            Err(_) => Planned::Unknown,
        }
    }

    /// Whether an output is already in the store: an object under the
    /// file's key, or any object under the folder's.
    fn exists(&self, unit: &Unit) -> std::result::Result<bool, FileFailure> {
        let key = self.root.key(unit.rel.as_os_str().as_encoded_bytes())?;
        let path = object_path(&key)?;
        let doing = format!("looking for an existing s3://{}/{key}", self.root.bucket);
        if unit.folder {
            let first = s3::block_on(async { self.store.list(Some(&path)).next().await });
            return match first {
                None => Ok(false),
                Some(Ok(_)) => Ok(true),
                Some(Err(e)) => Err(s3::classify(&e, &doing)),
            };
        }
        match s3::block_on(self.store.head(&path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(s3::classify(&e, &doing)),
        }
    }

    /// Whether the staged file `local` is large enough for a multipart
    /// upload (an unreadable one is looked up, to be safe).
    fn is_multipart(&self, local: &Path) -> bool {
        std::fs::metadata(local).map_or(true, |m| m.len() >= self.multipart_threshold as u64)
    }

    /// Uploads one local file to `key` (single PUT or multipart).
    fn upload_file(&self, local: &Path, key: &str) -> std::result::Result<(), Refused> {
        let path = object_path(key)?;
        let mut file = std::fs::File::open(local)
            .map_err(|e| FileFailure::from_io(&e, "opening a staged output"))?;
        let size = file
            .metadata()
            .map_err(|e| FileFailure::from_io(&e, "reading a staged output"))?
            .len();
        let doing = format!("uploading s3://{}/{key}", self.root.bucket);
        if size < self.multipart_threshold as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data)
                .map_err(|e| FileFailure::from_io(&e, "reading a staged output"))?;
            let mode = match self.existing {
                Existing::Overwrite => PutMode::Overwrite,
                Existing::Skip | Existing::Fail => PutMode::Create,
            };
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            return match s3::block_on(self.store.put_opts(&path, PutPayload::from(data), opts)) {
                Ok(_) => Ok(()),
                Err(object_store::Error::AlreadyExists { .. }) => Err(Refused::Exists),
                Err(e) => Err(s3::classify(&e, &doing).into()),
            };
        }
        let upload =
            s3::block_on(self.store.put_multipart(&path)).map_err(|e| s3::classify(&e, &doing))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut buf = vec![0u8; self.part_size];
        loop {
            let n = match read_full(&mut file, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = s3::block_on(writer.abort());
                    return Err(FileFailure::from_io(&e, "reading a staged output").into());
                }
            };
            if n == 0 {
                break;
            }
            // write() spawns the part upload, so it runs on the S3 runtime.
            let parts_in_flight = self.parts_in_flight;
            let sent = s3::block_on(async {
                writer.write(&buf[..n]);
                writer.wait_for_capacity(parts_in_flight).await
            });
            if let Err(e) = sent {
                let _ = s3::block_on(writer.abort());
                return Err(s3::classify(&e, &doing).into());
            }
        }
        // finish() aborts the upload itself when a part or the completion fails.
        s3::block_on(writer.finish()).map_err(|e| s3::classify(&e, &doing))?;
        Ok(())
    }
}

/// An S3 destination as seen from the staged folder a task writes into:
/// an output staged at `folder/<rel>` goes to the key of `<rel>`.
pub struct StagedOutputs<'a> {
    dest: &'a S3Destination,
    folder: &'a Path,
    /// An output (relative) already looked up and found absent, not asked again.
    absent: Option<&'a Path>,
}

impl<'a> StagedOutputs<'a> {
    pub fn new(dest: &'a S3Destination, folder: &'a Path, absent: Option<&'a Path>) -> Self {
        StagedOutputs {
            dest,
            folder,
            absent,
        }
    }
}

impl OutputsElsewhere for StagedOutputs<'_> {
    fn exists(&self, staged: &Path, folder: bool) -> bool {
        let Ok(rel) = staged.strip_prefix(self.folder) else {
            return false;
        };
        if self.absent == Some(rel) {
            return false;
        }
        let unit = Unit {
            rel: rel.to_path_buf(),
            folder,
        };
        self.dest.exists(&unit).unwrap_or(false)
    }

    fn exists_failure(&self, staged: &Path) -> FileFailure {
        match staged.strip_prefix(self.folder) {
            Ok(rel) => self.dest.exists_failure(rel),
            Err(_) => crate::output::exists_failure(staged),
        }
    }
}

/// Why an upload did not happen.
enum Refused {
    /// A conditional PUT found the key taken.
    Exists,
    Failed(FileFailure),
}

impl From<FileFailure> for Refused {
    fn from(f: FileFailure) -> Self {
        Refused::Failed(f)
    }
}

/// The outputs of input `rel` among the staged `files` (paths relative to
/// the staging folder): a task mirrors `rel`'s folder, so each entry right
/// under that folder is one output, a file or a folder of files.
fn units(files: &[(PathBuf, PathBuf)], rel: &[u8]) -> Vec<Unit> {
    let rel = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(rel));
    let parent = rel.parent().unwrap_or(Path::new(""));
    let mut out: Vec<Unit> = Vec::new();
    for (_, file) in files {
        let unit = match file.strip_prefix(parent) {
            Ok(below) if below.components().count() > 1 => Unit {
                rel: parent.join(below.components().next().expect("counted")),
                folder: true,
            },
            _ => Unit {
                rel: file.clone(),
                folder: false,
            },
        };
        if !out.iter().any(|u| u.rel == unit.rel) {
            out.push(unit);
        }
    }
    out
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
