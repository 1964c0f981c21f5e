//! Clean-up that a guard runs when it is dropped, also on a panic: what a
//! test declared on a server (queues, streams, tables) is deleted even when
//! the test fails.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// Runs `work` to its end on a runtime of its own, on a thread of its own,
/// and waits for it.
///
/// For the `Drop` of clean-up guards: a guard may be dropped inside a test's
/// runtime, where blocking on a future is not allowed. A runtime that cannot
/// be built, or a panic in `work`, is printed, never raised: a clean-up must
/// not fail a test, nor abort one that is already panicking.
pub fn run_to_end<F>(work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let done = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(work),
            Err(e) => eprintln!("clean-up skipped: no runtime ({e})"),
        }
    });
    if done.join().is_err() {
        eprintln!("the clean-up panicked");
    }
}

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A guard for any clean-up: runs it (with [`run_to_end`]) when dropped,
/// also when the test panics. Keep it in a named binding
/// (`let _tables = ...`): `let _ = ...` drops it at once.
///
/// ```
/// use flow_events_testkit::cleanup::OnDrop;
///
/// let table = String::from("t_example");
/// let _tables = OnDrop::new(async move {
///     // drop `table` here; errors are ignored, the test is over
///     let _ = table;
/// });
/// ```
#[must_use = "the clean-up runs when this is dropped"]
pub struct OnDrop(Option<Work>);

impl OnDrop {
    /// Runs `cleanup` when dropped. `cleanup` bounds its own waits: a server
    /// that does not answer must not hold the test forever.
    pub fn new(cleanup: impl Future<Output = ()> + Send + 'static) -> Self {
        Self(Some(Box::pin(cleanup)))
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(work) = self.0.take() {
            run_to_end(work);
        }
    }
}

impl fmt::Debug for OnDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnDrop")
            .field("pending", &self.0.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{OnDrop, run_to_end};

    #[tokio::test]
    async fn runs_inside_a_runtime_and_waits_for_the_work() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        run_to_end(async move {
            tokio::task::yield_now().await;
            flag.store(true, Ordering::SeqCst);
        });
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn a_panic_in_the_work_is_not_raised() {
        run_to_end(async { panic!("a failing clean-up") });
    }

    #[test]
    fn a_guard_runs_its_clean_up_once_when_dropped() {
        let done = Arc::new(AtomicBool::new(false));
        let guard = OnDrop::new({
            let done = done.clone();
            async move {
                tokio::task::yield_now().await;
                done.store(true, Ordering::SeqCst);
            }
        });
        assert!(!done.load(Ordering::SeqCst), "not before the drop");
        drop(guard);
        assert!(done.load(Ordering::SeqCst));
    }
}
