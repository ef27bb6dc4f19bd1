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
//! systems); [`AtomicFile::commit`] fsyncs it and moves it to its final name.
//! The directory itself is fsynced ([`sync_dir`]) only where a later step
//! depends on the name being durable (before an original is removed): one
//! fsync per output instead of two makes many small outputs about twice as
//! fast, and a crash can then lose the new name but never expose a partial
//! file under it. Until then, and if the task fails or panics, only
//! the temp file exists and `Drop` removes it: a crash never leaves a
//! half-written output under its final name. Policies that must not replace
//! an existing output (skip, fail) publish with `link(2)`, which fails
//! atomically when the name exists, instead of `rename(2)`, which replaces.
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
/// symlinks resolved, is still inside `base` (which must be canonical).
pub fn prepare_parent(base: &Path, path: &Path) -> Result<(), FileFailure> {
    let parent = path.parent().unwrap_or(base);
    std::fs::create_dir_all(parent).map_err(|e| write_failure(&e, "creating the output folder"))?;
    let real = std::fs::canonicalize(parent)
        .map_err(|e| write_failure(&e, "resolving the output folder"))?;
    if !real.starts_with(base) {
        return Err(FileFailure::new(
            FailureKind::OutsideRoot,
            format!(
                "refused output {}: a symlink in its folder points outside the destination",
                path.display()
            ),
        ));
    }
    Ok(())
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
    /// Creates the temp file for `target` in the target's directory.
    pub fn create(target: &Path) -> Result<Self, FileFailure> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let short: String = name.chars().take(64).collect();
        let tmp = dir.join(format!(
            ".{short}.pravah-tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
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

    /// Syncs the data and publishes it under the final name by `existing`'s
    /// rule.
    pub fn commit(mut self, existing: Existing) -> Result<Committed, FileFailure> {
        let file = self.file.take().expect("commit once");
        file.sync_all()
            .map_err(|e| write_failure(&e, "syncing the output"))?;
        drop(file);
        match existing {
            Existing::Overwrite => std::fs::rename(&self.tmp, &self.target)
                .map(|()| Committed::Written)
                .map_err(|e| write_failure(&e, "renaming the output into place")),
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

/// Makes the names in `path`'s folder durable (fsync of the directory).
pub fn sync_dir(path: &Path) -> Result<(), FileFailure> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| write_failure(&e, "syncing the output folder"))
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Not committed, failed, or published by link: the temp goes away.
        self.file.take();
        let _ = std::fs::remove_file(&self.tmp);
    }
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
        assert_eq!(f.commit(Existing::Fail).unwrap(), Committed::Written);
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().write_all(b"two").unwrap();
        assert_eq!(f.commit(Existing::Skip).unwrap(), Committed::Skipped);
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().write_all(b"two").unwrap();
        assert!(f.commit(Existing::Fail).is_err());
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().write_all(b"three").unwrap();
        f.commit(Existing::Overwrite).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"three");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
