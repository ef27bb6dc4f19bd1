//! The producer threads of streaming calls, counted so that the engine can
//! wait for them before it exits.
//!
//! Why: a call whose client went away (a Ctrl-C on `pravah run`) is over
//! for tonic at once, so the SIGTERM that follows finds nothing in flight.
//! Its producer thread is still stopping, though: a task removes its
//! temporary output, extract its staging folder. A process that exited
//! under it left `.name.pravah-tmp-*` files in the user's folders. So
//! serving ends with [`wait_idle`]; cancelled work stops within one read
//! ([`crate::tasks::Cancellable`]), which keeps that wait short.
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

static RUNNING: Mutex<usize> = Mutex::new(0);
static IDLE: Condvar = Condvar::new();

fn running() -> MutexGuard<'static, usize> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one producer from before its thread starts (so a call accepted
/// just before shutdown is waited for) until the thread ends, panics
/// included.
struct Counted;

impl Counted {
    fn enter() -> Self {
        *running() += 1;
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut n = running();
        *n -= 1;
        if *n == 0 {
            IDLE.notify_all();
        }
    }
}

/// Runs `work` on a new thread named `name`, counted until it returns.
pub fn spawn(name: &str, work: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let counted = Counted::enter();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _counted = counted;
            work();
        })
        .map(drop)
}

/// Waits until no producer runs, or `timeout`; returns how many still run.
pub fn wait_idle(timeout: Duration) -> usize {
    let (n, _) = IDLE
        .wait_timeout_while(running(), timeout, |n| *n > 0)
        .unwrap_or_else(|e| e.into_inner());
    *n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn wait_idle_waits_for_a_running_producer_and_not_past_the_timeout() {
        let (release, released) = mpsc::channel::<()>();
        spawn("test-producer", move || {
            let _ = released.recv();
        })
        .unwrap();
        // Still blocked: the wait gives up with it counted.
        assert!(wait_idle(Duration::from_millis(50)) >= 1);
        release.send(()).unwrap();
        assert_eq!(wait_idle(Duration::from_secs(10)), 0);
    }
}
