//! Opening a batch's files beneath their source root.
//!
//! Why, twice over. Safety: a file listed as regular can be swapped for a
//! symlink before it is read, and a direct gRPC client's file list can name
//! `link/secret` where `link` is a folder symlink leading out of the root;
//! the lexical checks on the relative path cannot see either. `openat2` with
//! `RESOLVE_BENEATH` makes the kernel refuse any open whose resolution
//! (symlinks included) leaves the root, with no window for a race. Speed:
//! the path is resolved from a held descriptor of the root instead of from
//! `/` for every file; csv-header over small files spends about a tenth of
//! its kernel time walking paths.
//!
//! The root descriptor lives for one batch ([`BatchScope`]), so a root
//! replaced between batches or jobs is looked up afresh. Outside a batch,
//! for paths not under the batch's root, and on kernels without `openat2`
//! (before Linux 5.6) files open by path as before.
use std::cell::RefCell;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the kernel answered ENOSYS: every later open goes by path.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

struct Root {
    path: PathBuf,
    /// `None` when the root could not be opened (the path open reports why).
    fd: Option<OwnedFd>,
}

thread_local! {
    static SCOPE: RefCell<Option<Root>> = const { RefCell::new(None) };
}

/// The error an open gets when its path resolves outside the root;
/// [`crate::results::FileFailure::from_io`] reports it as `outside_root`.
#[derive(Debug)]
pub struct LeadsOutsideRoot;

impl std::fmt::Display for LeadsOutsideRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the path leads outside the source root (through a symlink); refused")
    }
}

impl std::error::Error for LeadsOutsideRoot {}

/// While alive, [`open_beneath`] on this thread opens files under `root`
/// through one held descriptor of it.
pub struct BatchScope(());

impl BatchScope {
    pub fn enter(root: &Path) -> Self {
        let fd = if UNSUPPORTED.load(Ordering::Relaxed) {
            None
        } else {
            open_dir(root).ok()
        };
        SCOPE.with(|s| {
            *s.borrow_mut() = Some(Root {
                path: root.to_path_buf(),
                fd,
            })
        });
        BatchScope(())
    }
}

impl Drop for BatchScope {
    fn drop(&mut self) {
        SCOPE.with(|s| *s.borrow_mut() = None);
    }
}

/// Opens `path` read-only with extra `flags`, resolved beneath the batch's
/// root; `None` when that does not apply (see the module doc) and the
/// caller should open by path.
pub fn open_beneath(path: &Path, flags: libc::c_int) -> Option<io::Result<File>> {
    SCOPE.with(|scope| {
        let scope = scope.borrow();
        let root = scope.as_ref()?;
        let rel = relative(
            path.as_os_str().as_bytes(),
            root.path.as_os_str().as_bytes(),
        )?;
        let dir = root.fd.as_ref()?.as_raw_fd();
        let rel = CString::new(rel).ok()?;
        // SAFETY: open_how is plain data; zeroed is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | flags) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: `dir` is a descriptor we hold, `rel` a valid C string and
        // `how` a valid open_how of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                rel.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a descriptor openat2 just returned, owned by nobody else.
            return Some(Ok(unsafe { File::from_raw_fd(fd as libc::c_int) }));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOSYS) => {
                UNSUPPORTED.store(true, Ordering::Relaxed);
                None
            }
            Some(libc::EXDEV) => Some(Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                LeadsOutsideRoot,
            ))),
            _ => Some(Err(err)),
        }
    })
}

/// `path` relative to `root`, compared as bytes: the paths a batch opens
/// are `root.join(rel)`, and `Path::strip_prefix` (component by component)
/// showed up in csv-header's profile. `None` when `path` is not under `root`.
fn relative<'a>(path: &'a [u8], root: &[u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(root)?;
    if !root.ends_with(b"/") && !rest.starts_with(b"/") {
        return None; // `/a/bc` is not under `/a/b`
    }
    let rest = &rest[rest.iter().take_while(|&&b| b == b'/').count()..];
    (!rest.is_empty()).then_some(rest)
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
        open_beneath(path, 0)
            .expect("inside a batch, under its root")?
            .read_to_string(&mut s)?;
        Ok(s)
    }

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir(base.path().join("outside")).unwrap();
        std::fs::write(root.join("a.csv"), b"top").unwrap();
        std::fs::write(root.join("sub/b.csv"), b"nested").unwrap();
        std::fs::write(base.path().join("outside/secret"), b"hunter2").unwrap();
        (base, root)
    }

    #[test]
    fn files_under_the_root_open_and_inner_symlinks_are_followed() {
        let (_base, root) = tree();
        std::os::unix::fs::symlink("sub/b.csv", root.join("link.csv")).unwrap();
        let _scope = BatchScope::enter(&root);
        assert_eq!(read(&root.join("a.csv")).unwrap(), "top");
        assert_eq!(read(&root.join("sub/b.csv")).unwrap(), "nested");
        assert_eq!(read(&root.join("link.csv")).unwrap(), "nested");
        let missing = read(&root.join("sub/gone")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let (base, root) = tree();
        let outside = base.path().join("outside");
        std::os::unix::fs::symlink(outside.join("secret"), root.join("file-link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dir-link")).unwrap();
        std::os::unix::fs::symlink("../outside/secret", root.join("relative-link")).unwrap();
        let _scope = BatchScope::enter(&root);
        for name in ["file-link", "dir-link/secret", "relative-link"] {
            let err = read(&root.join(name)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{name}");
            assert!(
                err.get_ref().is_some_and(|e| e.is::<LeadsOutsideRoot>()),
                "{name}"
            );
        }
    }

    #[test]
    fn outside_a_batch_or_its_root_the_caller_opens_by_path() {
        let (base, root) = tree();
        assert!(open_beneath(&root.join("a.csv"), 0).is_none());
        let _scope = BatchScope::enter(&root);
        assert!(open_beneath(&base.path().join("outside/secret"), 0).is_none());
    }

    #[test]
    fn relative_paths_are_cut_at_a_separator_only() {
        assert_eq!(relative(b"/a/b/x.csv", b"/a/b"), Some(&b"x.csv"[..]));
        assert_eq!(relative(b"/a/b/x.csv", b"/a/b/"), Some(&b"x.csv"[..]));
        assert_eq!(relative(b"/a/b//s/x", b"/a/b"), Some(&b"s/x"[..]));
        assert_eq!(relative(b"/a/bc/x", b"/a/b"), None);
        assert_eq!(relative(b"/a/b", b"/a/b"), None);
        assert_eq!(relative(b"/etc/x", b"/"), Some(&b"etc/x"[..]));
    }

    #[test]
    fn a_new_batch_sees_a_replaced_root() {
        let (base, root) = tree();
        {
            let _scope = BatchScope::enter(&root);
            assert_eq!(read(&root.join("a.csv")).unwrap(), "top");
        }
        std::fs::rename(&root, base.path().join("moved")).unwrap();
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.csv"), b"new").unwrap();
        let _scope = BatchScope::enter(&root);
        assert_eq!(read(&root.join("a.csv")).unwrap(), "new");
    }
}
