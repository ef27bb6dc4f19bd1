//! Cumulative progress of one Process call, and the ticker that reports it at
//! a bounded rate.
//!
//! Counting convention (the same as BatchResult and WorkItemDone):
//! `files_done` counts every finished file, failed ones included, and
//! `files_failed` the failed subset; the call is complete when `files_done`
//! equals `files_discovered` with `discovery_complete` set.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pb;

/// Shared counters; every field is summed by worker threads (Relaxed: each
/// is an independent monotonic count, read only for reporting).
#[derive(Debug)]
pub struct Counters {
    pub files_done: AtomicU64,
    pub files_failed: AtomicU64,
    pub bytes_done: AtomicU64,
    pub bytes_failed: AtomicU64,
    pub files_discovered: AtomicU64,
    pub bytes_discovered: AtomicU64,
    /// Set once no more work can arrive and every item was discovered.
    pub discovery_complete: AtomicBool,
    started: Instant,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            files_done: AtomicU64::new(0),
            files_failed: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            bytes_failed: AtomicU64::new(0),
            files_discovered: AtomicU64::new(0),
            bytes_discovered: AtomicU64::new(0),
            discovery_complete: AtomicBool::new(false),
            started: Instant::now(),
        }
    }
}

impl Counters {
    pub fn snapshot(&self) -> pb::Progress {
        pb::Progress {
            files_done: self.files_done.load(Ordering::Relaxed),
            files_failed: self.files_failed.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_failed: self.bytes_failed.load(Ordering::Relaxed),
            files_discovered: self.files_discovered.load(Ordering::Relaxed),
            bytes_discovered: self.bytes_discovered.load(Ordering::Relaxed),
            discovery_complete: self.discovery_complete.load(Ordering::Relaxed),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// A thread that sends a Progress at most once per interval, and only when
/// something changed. It stops when the [`Ticker`] is dropped or stopped
/// (the stop channel disconnects, waking it at once), or when the client is
/// gone, in which case it raises the cancel flag: when `send` fails, or, in
/// an interval with nothing to send, when `gone` says so. Without that
/// look, a call cancelled while every thread was inside one big file went
/// unnoticed until a file ended, and the work ran on for nobody.
pub struct Ticker {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    pub fn start(
        counters: Arc<Counters>,
        interval: Duration,
        cancel: Arc<AtomicBool>,
        send: impl Fn(pb::Progress) -> bool + Send + 'static,
        gone: impl Fn() -> bool + Send + 'static,
    ) -> Self {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("pravah-progress".into())
            .spawn(move || {
                let mut last: Option<pb::Progress> = None;
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(interval)
                {
                    let mut now = counters.snapshot();
                    let elapsed = now.elapsed_ms;
                    now.elapsed_ms = 0;
                    if last.as_ref() == Some(&now) {
                        if gone() {
                            cancel.store(true, Ordering::Relaxed);
                            break;
                        }
                        continue;
                    }
                    last = Some(now);
                    now.elapsed_ms = elapsed;
                    if !send(now) {
                        cancel.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            })
            .expect("spawning the progress thread");
        Ticker {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops the ticker and waits for it, so no Progress follows.
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn with_nothing_new_to_send_the_ticker_cancels_once_the_client_is_gone() {
        let cancel = Arc::new(AtomicBool::new(false));
        let gone = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let ticker = Ticker::start(
            Arc::new(Counters::default()),
            Duration::from_millis(2),
            cancel.clone(),
            {
                let sent = sent.clone();
                move |_| {
                    sent.fetch_add(1, Ordering::Relaxed);
                    true
                }
            },
            {
                let gone = gone.clone();
                move || gone.load(Ordering::Relaxed)
            },
        );
        wait_until("the first progress is sent", || {
            sent.load(Ordering::Relaxed) == 1
        });
        // Many intervals with nothing new and the client still there.
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cancel.load(Ordering::Relaxed));
        gone.store(true, Ordering::Relaxed);
        wait_until("the cancel flag is raised", || {
            cancel.load(Ordering::Relaxed)
        });
        assert_eq!(sent.load(Ordering::Relaxed), 1, "nothing new was sent");
        ticker.stop();
    }
}
