//! Part files and listing chunks made durable while the call runs, not
//! after it.
//!
//! Why: a Process call's part files must be on disk before their work item
//! is reported done, and a listing's chunk files before its summary (the
//! control plane checkpoints on both). Syncing them all at the end put a
//! hundred fdatasyncs (10 ms or so on ext4 for 100,000 csv-header files,
//! about 5% of the call) after the last file, with every core idle. Instead
//! each file is handed over as soon as it is written to a few sync threads
//! beside the processing pool; they mostly wait on the disk. The end then
//! waits only for the syncs still in flight, and syncs the folder once (the
//! files' names). Nothing is reported done before its files and their names
//! are durable.
//!
//! Threads end when the [`Syncer`] is dropped, after the syncs queued. If
//! they cannot be spawned, each file is synced at once by whoever hands it
//! over.
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

/// Sync threads: concurrent fdatasyncs share journal commits, so a few
/// threads keep up with parts written on every core.
const THREADS: usize = 4;

/// The parts of one work item: how many are still being synced, and the
/// first failure.
#[derive(Default)]
pub struct SyncGroup {
    state: Mutex<GroupState>,
    settled: Condvar,
}

#[derive(Default)]
struct GroupState {
    pending: usize,
    error: Option<io::Error>,
}

impl SyncGroup {
    fn settle(&self, result: io::Result<()>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.pending -= 1;
        if let (Err(e), None) = (result, &s.error) {
            s.error = Some(e);
        }
        self.settled.notify_all();
    }

    /// Waits until every part handed over so far is synced, then syncs
    /// `dir` (their names); the first failure, if any.
    pub fn wait(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.pending > 0 {
            s = self.settled.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        drop(s);
        File::open(dir)?.sync_all()
    }
}

struct Job {
    path: PathBuf,
    group: Arc<SyncGroup>,
}

impl Job {
    fn run(self) {
        let result = File::open(&self.path).and_then(|f| f.sync_data());
        self.group.settle(result);
    }
}

/// The sync threads of one call.
pub struct Syncer {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Syncer {
    pub fn start() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let threads: Vec<_> = (0..THREADS)
            .filter_map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("pravah-sync-{i}"))
                    .spawn(move || rx.iter().for_each(Job::run))
                    .ok()
            })
            .collect();
        Syncer {
            tx: (!threads.is_empty()).then_some(tx),
            threads,
        }
    }

    /// Syncs the written file `path` in the background, counted in `group`.
    pub fn sync_later(&self, path: PathBuf, group: &Arc<SyncGroup>) {
        group
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending += 1;
        let job = Job {
            path,
            group: group.clone(),
        };
        match &self.tx {
            Some(tx) => {
                if let Err(unsent) = tx.send(job) {
                    unsent.into_inner().run();
                }
            }
            None => job.run(),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::write_atomic;

    fn parts(dir: &Path, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| write_atomic(dir, &format!("part-{i}.jsonl"), b"{}\n").unwrap())
            .collect()
    }

    #[test]
    fn every_part_handed_over_is_synced_before_wait_returns() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::start();
        let group = Arc::new(SyncGroup::default());
        for p in parts(dir.path(), 40) {
            syncer.sync_later(p, &group);
        }
        group.wait(dir.path()).unwrap();
        assert_eq!(group.state.lock().unwrap().pending, 0);
        // Nothing pending: only the folder is synced.
        Arc::new(SyncGroup::default()).wait(dir.path()).unwrap();
    }

    #[test]
    fn a_failed_sync_is_reported_by_its_group_only() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::start();
        let (bad, good) = (
            Arc::new(SyncGroup::default()),
            Arc::new(SyncGroup::default()),
        );
        let written = parts(dir.path(), 6);
        syncer.sync_later(dir.path().join("vanished.jsonl"), &bad);
        for p in written {
            syncer.sync_later(p.clone(), &bad);
            syncer.sync_later(p, &good);
        }
        let err = bad.wait(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        good.wait(dir.path()).unwrap();
        let missing_dir = dir.path().join("no-such-folder");
        assert!(
            good.wait(&missing_dir).is_err(),
            "the folder sync counts too"
        );
    }

    #[test]
    fn without_threads_parts_are_synced_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer {
            tx: None,
            threads: Vec::new(),
        };
        let group = Arc::new(SyncGroup::default());
        syncer.sync_later(dir.path().join("gone"), &group);
        assert_eq!(group.state.lock().unwrap().pending, 0);
        assert!(group.wait(dir.path()).is_err());
    }
}
