//! Opening files relative to a held descriptor of their directory.
//!
//! Why: for small files, resolving the path is a large share of what an open
//! costs (csv-header over 100,000 files spends about a tenth of its kernel
//! time walking `/a/b/c/d/` again for every file). A batch's files come in
//! listing order, so consecutive files nearly always share a directory; while
//! a batch runs, its thread keeps a descriptor of the last directory and
//! opens the next file with `openat(dir, name)`.
//!
//! The descriptor lives only for one batch ([`BatchScope`]), so a directory
//! replaced between batches or jobs is looked up afresh. Within a batch the
//! held directory is the one the batch began in, which is what a listing
//! taken a moment earlier named anyway.
use std::cell::RefCell;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

struct Held {
    dir: PathBuf,
    fd: OwnedFd,
}

thread_local! {
    /// `None`: no batch is running on this thread (plain path opens).
    static SCOPE: RefCell<Option<Option<Held>>> = const { RefCell::new(None) };
}

/// While alive, [`open_at`] on this thread may reuse a directory descriptor.
pub struct BatchScope(());

impl BatchScope {
    pub fn enter() -> Self {
        SCOPE.with(|s| *s.borrow_mut() = Some(None));
        BatchScope(())
    }
}

impl Drop for BatchScope {
    fn drop(&mut self) {
        SCOPE.with(|s| *s.borrow_mut() = None);
    }
}

/// Opens `path` read-only with extra `flags` through the batch's held
/// directory descriptor; `None` when no batch scope is active or the path
/// has no parent and name (the caller then opens by path, which also gives
/// the usual error for a missing directory).
pub fn open_at(path: &Path, flags: libc::c_int) -> Option<io::Result<File>> {
    let (parent, name) = (path.parent()?, path.file_name()?);
    let name = CString::new(name.as_bytes()).ok()?;
    SCOPE.with(|scope| {
        let mut scope = scope.borrow_mut();
        let slot = scope.as_mut()?;
        if slot.as_ref().is_none_or(|h| h.dir != parent) {
            *slot = Some(Held {
                dir: parent.to_path_buf(),
                fd: open_dir(parent).ok()?,
            });
        }
        let dir = slot.as_ref()?.fd.as_raw_fd();
        // SAFETY: `dir` is a descriptor we hold open and `name` is a valid C
        // string; the returned descriptor is owned by the File below.
        let fd =
            unsafe { libc::openat(dir, name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC | flags) };
        Some(if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: `fd` was just returned by openat and nothing else owns it.
            Ok(unsafe { File::from_raw_fd(fd) })
        })
    })
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid C string; the descriptor is owned by the OwnedFd.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read(path: &Path) -> io::Result<String> {
        let mut s = String::new();
        open_at(path, 0)
            .expect("a batch is active")?
            .read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn outside_a_batch_nothing_is_held() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        assert!(open_at(&dir.path().join("a"), 0).is_none());
    }

    #[test]
    fn files_of_one_and_of_several_directories_open_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(dir.path().join("a"), b"top").unwrap();
        std::fs::write(sub.join("b"), b"nested").unwrap();
        let _scope = BatchScope::enter();
        assert_eq!(read(&dir.path().join("a")).unwrap(), "top");
        assert_eq!(read(&sub.join("b")).unwrap(), "nested");
        assert_eq!(read(&dir.path().join("a")).unwrap(), "top");
        let missing = read(&sub.join("gone")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_missing_directory_falls_back_to_the_path_open() {
        let dir = tempfile::tempdir().unwrap();
        let _scope = BatchScope::enter();
        assert!(open_at(&dir.path().join("no/such/file"), 0).is_none());
    }

    #[test]
    fn a_new_batch_sees_a_replaced_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("f"), b"old").unwrap();
        {
            let _scope = BatchScope::enter();
            assert_eq!(read(&sub.join("f")).unwrap(), "old");
        }
        std::fs::rename(&sub, dir.path().join("moved")).unwrap();
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("f"), b"new").unwrap();
        let _scope = BatchScope::enter();
        assert_eq!(read(&sub.join("f")).unwrap(), "new");
    }
}
