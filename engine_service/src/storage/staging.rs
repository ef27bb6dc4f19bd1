//! Local staging folders for object-store files: an S3 object staged as a
//! local file for tasks that read by path, and a per-file stand-in
//! destination whose outputs are uploaded to S3 afterwards.
//!
//! Where: a `staging` folder next to the call's results folder (the job's
//! workspace), or the system temp folder when the call has none. Every
//! staged file and folder is a [`Staged`] guard that deletes itself when
//! dropped, on success, failure or a task panic alike, so staging never
//! accumulates; only a crash can leave some behind, inside the workspace.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::output::write_failure;
use crate::results::FileFailure;

/// Distinguishes staged paths of concurrent files in one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The staging folder of a call whose results go to `results_dir`.
pub fn staging_dir(results_dir: Option<&Path>) -> PathBuf {
    match results_dir.and_then(Path::parent) {
        Some(workspace) => workspace.join("staging"),
        None => std::env::temp_dir().join(format!("pravah-staging-{}", std::process::id())),
    }
}

/// A staged file or folder, removed on drop.
pub struct Staged {
    path: PathBuf,
}

impl Staged {
    /// A fresh empty folder under `base`, by its canonical path (outputs
    /// are checked to stay under their canonical destination).
    pub fn folder(base: &Path) -> Result<Self, FileFailure> {
        std::fs::create_dir_all(base)
            .map_err(|e| write_failure(&e, "creating the staging folder"))?;
        let base = std::fs::canonicalize(base)
            .map_err(|e| write_failure(&e, "resolving the staging folder"))?;
        let path = base.join(format!(
            "out-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).map_err(|e| write_failure(&e, "creating a staging folder"))?;
        Ok(Staged { path })
    }

    /// A fresh file under `base` named like `name` (tasks look at the
    /// extension), opened for writing.
    pub fn file(base: &Path, name: &str) -> Result<(Self, std::fs::File), FileFailure> {
        std::fs::create_dir_all(base)
            .map_err(|e| write_failure(&e, "creating the staging folder"))?;
        let dir = base.join(format!(
            "in-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).map_err(|e| write_failure(&e, "creating a staging folder"))?;
        let staged = Staged { path: dir };
        let file = std::fs::File::create_new(staged.path.join(name))
            .map_err(|e| write_failure(&e, "staging the object locally"))?;
        Ok((staged, file))
    }

    /// The staged folder (for [`Staged::file`], the folder holding the file).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
