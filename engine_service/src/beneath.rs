//! Opening a batch's files beneath their source root.
//!
//! Why, twice over. Safety: a file listed as regular can be swapped for a
//! symlink before it is read, and a direct gRPC client's file list can name
//! `link/secret` where `link` is a folder symlink leading out of the root;
//! the lexical checks on the relative path cannot see either. `openat2` with
//! `RESOLVE_BENEATH` makes the kernel refuse any open whose resolution
//! (symlinks included) leaves the root, with no window for a race. Speed:
//! the path is resolved from a held descriptor instead of from `/` for
//! every file; csv-header over small files spends about a tenth of its
//! kernel time walking paths.
//!
//! Which descriptor. The root's, opened once per batch ([`BatchScope`]), so
//! a root replaced between batches or jobs is looked up afresh. And, since a
//! batch's files come folder by folder, the last folder a file was opened
//! in: it is itself opened beneath the root (`O_PATH`, so a folder symlink
//! out of the root is refused like any other path), kept, and the next file
//! in the same folder is opened by its bare name in that descriptor with
//! `O_NOFOLLOW` (see [`open_name`]); the kernel then resolves one name
//! instead of the whole path, and the file costs no allocation. A name that
//! is a symlink (to `../other/x.csv`, say, still inside the root) is opened
//! again from the root with `RESOLVE_BENEATH`, so exactly the paths allowed
//! before are allowed now. A kept
//! folder descriptor names the folder it was opened on: should that folder
//! be renamed or replaced (by a symlink out of the root, say) while the
//! batch runs, its remaining files open in the folder as it was, never
//! through the replacement; the next batch resolves the path afresh.
//!
//! Outside a batch, for paths not under the batch's root, and on kernels
//! without `openat2` (before Linux 5.6) files open by path as before.
use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the kernel answered ENOSYS: every later open goes by path.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

struct Root {
    path: PathBuf,
    /// `None` when the root could not be opened (the path open reports why).
    fd: Option<OwnedFd>,
    /// The folder the last file was opened in: its path relative to the
    /// root and a descriptor of it, opened beneath the root.
    parent: Option<OwnedFd>,
    parent_rel: Vec<u8>,
}

impl Root {
    /// A descriptor of the folder `dir` (relative to the root), the kept
    /// one when it is the same folder as last time; `None` when it cannot
    /// be opened beneath the root (the caller opens the whole path from the
    /// root, whose error then says why).
    fn parent(&mut self, root_fd: RawFd, dir: &[u8]) -> Option<RawFd> {
        if let Some(fd) = &self.parent {
            if self.parent_rel == dir {
                return Some(fd.as_raw_fd());
            }
        }
        self.parent = None;
        let fd = with_cstr(dir, |c| {
            openat2(root_fd, c, libc::O_PATH | libc::O_DIRECTORY)
        })?
        .ok()?;
        self.parent_rel.clear();
        self.parent_rel.extend_from_slice(dir);
        Some(self.parent.insert(fd).as_raw_fd())
    }
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
                parent: None,
                parent_rel: Vec::new(),
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
        let mut scope = scope.borrow_mut();
        let root = scope.as_mut()?;
        let rel = relative(
            path.as_os_str().as_bytes(),
            root.path.as_os_str().as_bytes(),
        )?;
        let root_fd = root.fd.as_ref()?.as_raw_fd();
        let flags = libc::O_RDONLY | flags;
        let in_parent =
            split_parent(rel).and_then(|(dir, name)| Some((root.parent(root_fd, dir)?, name)));
        let from_root = |rel: &[u8]| with_cstr(rel, |c| openat2(root_fd, c, flags));
        let opened = match in_parent {
            // ELOOP: the name is a symlink, which the root resolves (and
            // judges) as before.
            Some((dir_fd, name)) => match with_cstr(name, |c| open_name(dir_fd, c, flags))? {
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => from_root(rel)?,
                other => other,
            },
            None => from_root(rel)?,
        };
        match opened {
            Ok(fd) => Some(Ok(File::from(fd))),
            Err(err) => match err.raw_os_error() {
                Some(libc::ENOSYS) => {
                    UNSUPPORTED.store(true, Ordering::Relaxed);
                    None
                }
                Some(libc::EXDEV) => Some(Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    LeadsOutsideRoot,
                ))),
                _ => Some(Err(err)),
            },
        }
    })
}

/// `openat2(dir, name)` with `flags` (plus `O_CLOEXEC`), refusing any
/// resolution that leaves `dir` (`EXDEV`) and magic links.
fn openat2(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_CLOEXEC | flags) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `dir` is a descriptor the caller holds, `name` a valid C
    // string and `how` a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor openat2 just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens the entry `name` (one path component, never `.` or `..`) of the
/// folder `dir`. `O_NOFOLLOW` makes a symlink fail with ELOOP, so what
/// opens is always an entry of `dir` itself: a plain `openat` cannot leave
/// the folder, and costs the kernel less than `openat2`.
fn open_name(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is a descriptor the caller holds, `name` a valid C string.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_CLOEXEC | libc::O_NOFOLLOW | flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor openat just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `f` on `bytes` as a C string, built on the stack when short (a
/// file name always is), so opening a file allocates nothing. `None` when
/// `bytes` holds a NUL: such a path is left to the open by path, which
/// reports it.
fn with_cstr<T>(bytes: &[u8], f: impl FnOnce(&CStr) -> T) -> Option<T> {
    const STACK: usize = 384;
    if bytes.len() < STACK {
        let mut buf = [0u8; STACK];
        buf[..bytes.len()].copy_from_slice(bytes);
        Some(f(CStr::from_bytes_with_nul(&buf[..=bytes.len()]).ok()?))
    } else {
        Some(f(&CString::new(bytes).ok()?))
    }
}

/// Splits a relative path into its folder and its file name; `None` for a
/// file directly under the root or a path without a plain final name.
fn split_parent(rel: &[u8]) -> Option<(&[u8], &[u8])> {
    let slash = rel.iter().rposition(|&b| b == b'/')?;
    let name = &rel[slash + 1..];
    let dir = &rel[..slash];
    let plain = !dir.is_empty() && !name.is_empty() && name != b"." && name != b"..";
    plain.then_some((dir, name))
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
    fn a_folder_symlink_out_of_the_root_is_refused_between_kept_folders() {
        let (base, root) = tree();
        std::os::unix::fs::symlink(base.path().join("outside"), root.join("dir-link")).unwrap();
        let _scope = BatchScope::enter(&root);
        assert_eq!(read(&root.join("sub/b.csv")).unwrap(), "nested");
        let err = read(&root.join("dir-link/secret")).unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<LeadsOutsideRoot>()));
        // The refused folder was not kept: the next file of `sub` still opens.
        assert_eq!(read(&root.join("sub/b.csv")).unwrap(), "nested");
        let err = read(&root.join("dir-link/secret")).unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<LeadsOutsideRoot>()));
    }

    #[test]
    fn symlinks_in_a_kept_folder_are_judged_from_the_root() {
        let (base, root) = tree();
        std::os::unix::fs::symlink("../a.csv", root.join("sub/up.csv")).unwrap();
        std::os::unix::fs::symlink("../../outside/secret", root.join("sub/out")).unwrap();
        std::os::unix::fs::symlink(base.path().join("outside/secret"), root.join("sub/abs"))
            .unwrap();
        let _scope = BatchScope::enter(&root);
        assert_eq!(read(&root.join("sub/b.csv")).unwrap(), "nested");
        // Leaves its folder but stays in the root: followed, as before.
        assert_eq!(read(&root.join("sub/up.csv")).unwrap(), "top");
        for name in ["sub/out", "sub/abs"] {
            let err = read(&root.join(name)).unwrap_err();
            assert!(
                err.get_ref().is_some_and(|e| e.is::<LeadsOutsideRoot>()),
                "{name}"
            );
        }
    }

    #[test]
    fn a_folder_replaced_by_a_symlink_during_a_batch_never_leads_out() {
        let (base, root) = tree();
        let _scope = BatchScope::enter(&root);
        assert_eq!(read(&root.join("sub/b.csv")).unwrap(), "nested");
        // `sub` is kept; now it is moved away and a symlink out of the root
        // takes its name.
        std::fs::rename(root.join("sub"), base.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(base.path().join("outside"), root.join("sub")).unwrap();
        let err = read(&root.join("sub/secret")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "the folder as it was");
        // A new batch resolves the path afresh, and refuses it.
        drop(_scope);
        let _scope = BatchScope::enter(&root);
        let err = read(&root.join("sub/secret")).unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<LeadsOutsideRoot>()));
    }

    #[test]
    fn a_file_replaced_by_a_symlink_out_of_a_kept_folder_is_refused() {
        let (base, root) = tree();
        std::fs::write(root.join("sub/c.csv"), b"plain").unwrap();
        let _scope = BatchScope::enter(&root);
        assert_eq!(read(&root.join("sub/b.csv")).unwrap(), "nested");
        std::fs::remove_file(root.join("sub/c.csv")).unwrap();
        std::os::unix::fs::symlink(base.path().join("outside/secret"), root.join("sub/c.csv"))
            .unwrap();
        let err = read(&root.join("sub/c.csv")).unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<LeadsOutsideRoot>()));
    }

    #[test]
    fn long_and_odd_names_open_or_fail_like_paths() {
        let (_base, root) = tree();
        let deep = root.join("d".repeat(200)).join("e".repeat(200));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("x.csv"), b"deep").unwrap();
        let _scope = BatchScope::enter(&root);
        assert_eq!(read(&deep.join("x.csv")).unwrap(), "deep");
        assert_eq!(read(&root.join("sub/./b.csv")).unwrap(), "nested");
        assert_eq!(read(&root.join("sub//b.csv")).unwrap(), "nested");
        use std::os::unix::ffi::OsStrExt;
        let nul = root.join(std::ffi::OsStr::from_bytes(b"sub/a\0b"));
        assert!(open_beneath(&nul, 0).is_none(), "left to the open by path");
    }

    #[test]
    fn paths_split_into_folder_and_plain_name() {
        assert_eq!(
            split_parent(b"a/b/c.csv"),
            Some((&b"a/b"[..], &b"c.csv"[..]))
        );
        assert_eq!(split_parent(b"c.csv"), None);
        assert_eq!(split_parent(b"a/"), None);
        assert_eq!(split_parent(b"a/."), None);
        assert_eq!(split_parent(b"a/.."), None);
        assert_eq!(split_parent(b"/c.csv"), None);
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
