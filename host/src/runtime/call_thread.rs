//! The thread a runner calls its plugin on.
//!
//! A plugin call blocks (wasmtime runs the guest on the calling thread), so
//! it cannot run on the async runtime's workers. tokio's blocking pool ran
//! each call on whichever of its threads was free, so an instance's memory
//! and the host's per-call state moved between threads, and cores, batch
//! after batch. One thread per runner keeps them in one place: about 7% to
//! 12% more events/s at batch 1,000 (BENCHMARKS.md).
//!
//! Each side waits briefly before it sleeps: the caller for the result, the
//! thread for the next job. At batch 1 a call takes microseconds, and two
//! sleeps and wake-ups per call were most of a batch's time.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot::error::TryRecvError;

/// Work sent to the thread.
type Job = Box<dyn FnOnce() + Send>;

/// A thread that runs one blocking call at a time, started on first use
/// and ended when this is dropped (after the call it is running, if any).
///
/// ```ignore
/// let thread = CallThread::new("refract-plugin");
/// assert_eq!(thread.run(|| 2 + 2).await, Ok(4));
/// ```
#[derive(Debug)]
pub(crate) struct CallThread {
    name: String,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

/// Why a call did not return.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    /// The operating system would not start the thread.
    #[error("cannot start the plugin thread: {0}")]
    Spawn(String),
    /// The call panicked (the thread survives it).
    #[error("the plugin call panicked")]
    Panicked,
}

impl CallThread {
    /// A thread named `name`, not started yet.
    pub(crate) fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), jobs: Mutex::new(None) }
    }

    /// Runs `f` on the thread and waits for its result without blocking the
    /// async runtime.
    pub(crate) async fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R, CallError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic drops `done` unsent, which the caller sees as `Panicked`.
            if let Ok(value) = catch_unwind(AssertUnwindSafe(f)) {
                let _ = done.send(value);
            }
        });
        self.send(job)?;
        // A small batch's call returns within microseconds: waiting for it
        // here, briefly, saves parking the async worker and being woken,
        // which cost more than the call itself (BENCHMARKS.md, batch 1).
        let mut result = result;
        let ready = wait_briefly(WAIT_FOR_RESULT, || match result.try_recv() {
            Err(TryRecvError::Empty) => None,
            other => Some(other.map_err(|_| CallError::Panicked)),
        });
        match ready {
            Some(outcome) => outcome,
            None => result.await.map_err(|_| CallError::Panicked),
        }
    }

    /// Like [`run`](Self::run), lending `input` to `f` and giving it back
    /// whatever `f` does, panics included: a batch whose call panicked must
    /// be retried, not lost. It is only copied if `f` somehow still held it.
    pub(crate) async fn run_with<T, R>(
        &self,
        input: T,
        f: impl FnOnce(&T) -> R + Send + 'static,
    ) -> (T, Result<R, CallError>)
    where
        T: Clone + Send + Sync + 'static,
        R: Send + 'static,
    {
        let shared = Arc::new(input);
        let lent = shared.clone();
        // `lent` is dropped when `f` returns or unwinds, before the result
        // (or its absence) reaches this side.
        let result = self.run(move || f(&lent)).await;
        (Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone()), result)
    }

    /// Queues a job, starting the thread if needed.
    fn send(&self, job: Job) -> Result<(), CallError> {
        // Nothing runs under this lock that can panic.
        let mut jobs = self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if jobs.is_none() {
            let (sender, queue) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || {
                    while let Some(job) = next_job(&queue) {
                        job();
                    }
                })
                .map_err(|e| CallError::Spawn(e.to_string()))?;
            *jobs = Some(sender);
        }
        let sender = jobs.as_ref().expect("started above");
        // The thread only ends when the sender is dropped, so this holds.
        sender.send(job).map_err(|_| CallError::Panicked)
    }
}

/// How long a caller waits for a call's result before it parks.
const WAIT_FOR_RESULT: Duration = Duration::from_micros(30);

/// How long the thread looks for the next job before it sleeps: a runner
/// with a backlog of small batches sends one within microseconds, and
/// sleeping and being woken cost more than that.
const WAIT_FOR_JOB: Duration = Duration::from_micros(50);

/// The next job, `None` once the sender is gone.
fn next_job(queue: &mpsc::Receiver<Job>) -> Option<Job> {
    let ready = wait_briefly(WAIT_FOR_JOB, || match queue.try_recv() {
        Err(mpsc::TryRecvError::Empty) => None,
        other => Some(other.ok()),
    });
    ready.unwrap_or_else(|| queue.recv().ok())
}

/// Asks `poll` again and again for up to `limit`, without sleeping: what it
/// gives first, or `None` if it gave nothing in time.
fn wait_briefly<T>(limit: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(value) = poll() {
            return Some(value);
        }
        std::hint::spin_loop();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_calls_in_order_on_one_thread_and_survives_a_panic() {
        let thread = CallThread::new("refract-test-call");
        let first = thread.run(|| std::thread::current().id()).await.unwrap();
        assert_eq!(
            thread.run(|| std::thread::current().name().map(str::to_owned)).await.unwrap().as_deref(),
            Some("refract-test-call")
        );
        assert_eq!(thread.run(|| -> u8 { panic!("boom") }).await, Err(CallError::Panicked));
        let after = thread.run(|| std::thread::current().id()).await.unwrap();
        assert_eq!(first, after, "the same thread, still running after the panic");
    }

    #[tokio::test]
    async fn a_lent_input_comes_back_after_a_panic() {
        let thread = CallThread::new("refract-test-call");
        let batch = vec!["e1".to_string(), "e2".to_string()];
        let (back, result) =
            thread.run_with(batch.clone(), |b| -> usize { panic!("boom after {} events", b.len()) }).await;
        assert_eq!((back, result), (batch.clone(), Err(CallError::Panicked)));
        let (back, result) = thread.run_with(batch.clone(), |b| b.len()).await;
        assert_eq!((back, result), (batch, Ok(2)));
    }
}
