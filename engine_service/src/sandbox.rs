//! The engine's own file-system sandbox: allowed roots and safe opening.
//!
//! Why in the engine too: the control plane already refuses sources and
//! destinations outside `PRAVAH_ALLOWED_ROOTS`, but the engine is a gRPC
//! server any client on the network could reach. Every path a request names
//! (List source and chunk_dir, Process results_dir, work-item roots, chunk
//! files) is canonicalized (so `..` and symlinks are resolved) and must then
//! lie inside one of the configured roots; otherwise the request gets
//! `PERMISSION_DENIED` (a work item fails with kind `outside_root`). With no
//! roots configured every path is allowed (the embedded single-user setup).
//!
//! Buckets: an `s3://bucket/...` source or destination must name a bucket in
//! `--allowed-bucket` / `PRAVAH_ALLOWED_BUCKETS` (the same variable the
//! control plane checks). Unlike roots, no buckets configured means no
//! bucket is allowed: the engine holds the storage credentials, and a
//! network client must not reach every bucket they open.
//!
//! The roots are process-wide configuration, set once at start-up from
//! `--allowed-root` / `PRAVAH_ALLOWED_ROOTS` (like the worker thread count),
//! so every module reads the same policy without threading it through.
//!
//! [`open_regular`] opens a file for a task without ever blocking on a FIFO
//! or device: a listing only yields regular files, but a work item can name
//! any path, and a file can be swapped for a FIFO between listing and
//! processing.
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{EngineError, Result};

/// Canonical allowed roots; set once, empty means "no restriction".
static ALLOWED_ROOTS: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Allowed bucket names; set once, empty means "no bucket".
static ALLOWED_BUCKETS: OnceLock<Vec<String>> = OnceLock::new();

/// Sets the allowed buckets. Call once before serving.
pub fn set_allowed_buckets(buckets: &[String]) -> Result<()> {
    let names = buckets
        .iter()
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .collect();
    ALLOWED_BUCKETS
        .set(names)
        .map_err(|_| EngineError::Internal("allowed buckets were already set".into()))
}

/// The configured buckets (empty: none allowed).
pub fn allowed_buckets() -> &'static [String] {
    ALLOWED_BUCKETS.get().map_or(&[], Vec::as_slice)
}

/// Refuses a bucket that is not in the configured list.
pub fn check_bucket(bucket: &str) -> Result<()> {
    if allowed_buckets().iter().any(|b| b == bucket) {
        Ok(())
    } else {
        Err(EngineError::BucketNotAllowed {
            bucket: bucket.to_owned(),
        })
    }
}

/// Sets the allowed roots (canonicalized). Call once before serving; a
/// root that does not exist is an error (a typo must not open everything).
pub fn set_allowed_roots(roots: &[PathBuf]) -> Result<()> {
    let mut canonical = Vec::with_capacity(roots.len());
    for root in roots {
        let c = std::fs::canonicalize(root)
            .map_err(|e| EngineError::io("cannot resolve allowed root", root, e))?;
        canonical.push(c);
    }
    ALLOWED_ROOTS
        .set(canonical)
        .map_err(|_| EngineError::Internal("allowed roots were already set".into()))
}

/// The configured roots (empty when unrestricted).
pub fn allowed_roots() -> &'static [PathBuf] {
    ALLOWED_ROOTS.get().map_or(&[], Vec::as_slice)
}

/// True when `canonical` lies inside (or is) one of `roots`, or `roots` is empty.
pub fn is_allowed_in(canonical: &Path, roots: &[PathBuf]) -> bool {
    roots.is_empty() || roots.iter().any(|r| canonical.starts_with(r))
}

/// Checks an already canonical path against the configured roots.
pub fn check(canonical: &Path) -> Result<()> {
    if is_allowed_in(canonical, allowed_roots()) {
        Ok(())
    } else {
        Err(EngineError::OutsideAllowedRoots {
            path: canonical.to_path_buf(),
        })
    }
}

/// Canonicalizes an existing path and checks it (symlinks and `..` resolved first).
pub fn check_existing(path: &Path) -> Result<PathBuf> {
    let canonical =
        std::fs::canonicalize(path).map_err(|e| EngineError::io("cannot resolve path", path, e))?;
    check(&canonical)?;
    Ok(canonical)
}

/// Creates a directory the engine writes into, after checking that its
/// nearest existing ancestor (resolved) lies inside the allowed roots, so a
/// refused request creates nothing; then returns its canonical form.
pub fn create_dir_checked(dir: &Path, what: &'static str) -> Result<PathBuf> {
    if !allowed_roots().is_empty() {
        let mut probe = dir.to_path_buf();
        while !probe.exists() {
            if !probe.pop() {
                break;
            }
        }
        let base = if probe.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            probe
        };
        check_existing(&base)?;
    }
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(what, dir, e))?;
    check_existing(dir)
}

/// Opens `path` for reading only if it is a regular file. The open uses
/// `O_NONBLOCK` so a FIFO without a writer cannot hang the worker thread;
/// the file type is then checked on the open descriptor (no race with a
/// swap), and anything but a regular file is refused. The flag stays set:
/// Linux ignores it for regular files, and clearing it would cost two more
/// system calls per file (a third of csv-header's). Inside a batch the path
/// is resolved beneath the batch's root ([`crate::beneath`]): a symlink out
/// of it is refused.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    open_regular_with_meta(path).map(|(file, _)| file)
}

/// Opens `path` as [`open_regular`] does (beneath the root, never blocking)
/// but without its `fstat`, for a reader whose reads are bounded whatever
/// the path turns out to be: csv-header reads at most `max_header_bytes`.
/// A FIFO swapped in after the listing then reads as empty (no writer) or
/// fails with `EAGAIN`, and a device gives at most that many bytes, so the
/// check can wait for a read that failed, the rare case, to name the cause;
/// done up front it cost one syscall per file (csv-header took 10% longer
/// on 100,000 small files).
pub fn open_bounded(path: &Path) -> std::io::Result<File> {
    let flags = libc::O_NONBLOCK | libc::O_NOCTTY;
    match crate::beneath::open_beneath(path, flags) {
        Some(opened) => opened,
        None => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path),
    }
}

/// [`open_regular`], also returning the metadata it read from the open
/// descriptor, for a caller that needs it (one `fstat` per file less).
pub fn open_regular_with_meta(path: &Path) -> std::io::Result<(File, std::fs::Metadata)> {
    let file = open_bounded(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(not_regular());
    }
    Ok((file, meta))
}

/// The error for a path that is not a regular file.
pub fn not_regular() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "not a regular file (FIFO, socket or device); skipped",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_roots_allowed_and_outside_refused() {
        let roots = vec![PathBuf::from("/data"), PathBuf::from("/srv/in")];
        assert!(is_allowed_in(Path::new("/data"), &roots));
        assert!(is_allowed_in(Path::new("/data/a/b"), &roots));
        assert!(!is_allowed_in(Path::new("/database"), &roots));
        assert!(!is_allowed_in(Path::new("/srv"), &roots));
        assert!(is_allowed_in(Path::new("/anything"), &[]));
    }

    #[test]
    fn open_regular_refuses_a_fifo_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        let plain = dir.path().join("a.csv");
        std::fs::write(&plain, b"a,b\n").unwrap();
        let mut s = String::new();
        use std::io::Read;
        open_regular(&plain)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "a,b\n");
    }

    #[test]
    fn dev_null_is_refused() {
        let err = open_regular(Path::new("/dev/null")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
