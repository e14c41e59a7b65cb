//! Group commit: appends that arrive while another is being written wait
//! and are then written together, in one transaction, each still all or
//! nothing on its own.
//!
//! With a transaction per append, concurrent single-event appends over
//! HTTP were bound by each transaction's statements, every one a hand-off
//! to the database's thread and back (BENCHMARKS.md, "HTTP API load
//! test"). An append that finds nothing written or waiting is written at
//! once, by its caller, as before.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::{Appended, SourceError};
use crate::db::{DatabaseError, DbErrorKind};
use crate::model::event::AppendRequest;

/// What one append call gets back.
pub(crate) type Outcome = Result<Vec<Appended>, SourceError>;

/// Writes several append calls in one transaction.
#[async_trait]
pub(crate) trait GroupWriter: Send + Sync + 'static {
    /// Writes `calls` in one transaction. Each call is checked against
    /// the stream versions the calls before it leave; one that fails
    /// (a version conflict) writes nothing and does not stop the others.
    /// An `Err` is the transaction's own failure: nothing was written.
    async fn write(&self, calls: &[&[AppendRequest]]) -> Result<Vec<Outcome>, SourceError>;
}

/// An append waiting for the next group.
struct Waiting {
    requests: Vec<AppendRequest>,
    reply: oneshot::Sender<Outcome>,
}

struct Inner<W> {
    waiting: Mutex<Vec<Waiting>>,
    /// Held while a transaction is written: one at a time.
    turn: tokio::sync::Mutex<()>,
    writer: W,
}

/// The appends of one store. Cheap to clone.
pub(crate) struct GroupCommit<W>(Arc<Inner<W>>);

impl<W> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<W> std::fmt::Debug for GroupCommit<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<W: GroupWriter> GroupCommit<W> {
    pub(crate) fn new(writer: W) -> Self {
        Self(Arc::new(Inner { waiting: Mutex::new(Vec::new()), turn: tokio::sync::Mutex::new(()), writer }))
    }

    fn waiting(&self) -> MutexGuard<'_, Vec<Waiting>> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.0.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `requests` atomically, with whatever other appends wait.
    pub(crate) async fn append(&self, requests: &[AppendRequest]) -> Outcome {
        if let Ok(_turn) = self.0.turn.try_lock() {
            if self.waiting().is_empty() {
                let mut outcomes = self.0.writer.write(&[requests]).await?;
                return outcomes.pop().unwrap_or_else(|| Err(interrupted()));
            }
        }
        let (reply, answer) = oneshot::channel();
        self.waiting().push(Waiting { requests: requests.to_vec(), reply });
        // The group is written by a task of its own, so a caller that
        // gives up (a client that disconnects) cannot cut short the
        // transaction of the appends it carries.
        tokio::spawn(self.clone().write_waiting());
        answer.await.unwrap_or_else(|_| Err(interrupted()))
    }

    /// Writes every waiting append, in one transaction, once it is this
    /// group's turn; another task may have written them first.
    async fn write_waiting(self) {
        let _turn = self.0.turn.lock().await;
        let group = std::mem::take(&mut *self.waiting());
        if group.is_empty() {
            return;
        }
        let calls: Vec<&[AppendRequest]> = group.iter().map(|w| w.requests.as_slice()).collect();
        let written = self.0.writer.write(&calls).await;
        drop(calls);
        match written {
            Ok(outcomes) if outcomes.len() == group.len() => {
                for (w, outcome) in group.into_iter().zip(outcomes) {
                    let _ = w.reply.send(outcome);
                }
            }
            Ok(_) => {
                for w in group {
                    let _ = w.reply.send(Err(interrupted()));
                }
            }
            Err(e) => {
                for w in group {
                    let _ = w.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A group's writer went away without an answer (it panicked).
fn interrupted() -> SourceError {
    SourceError::Database(DatabaseError::new(
        DbErrorKind::Other,
        "the append was interrupted; it may not have been written",
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::model::event::{ExpectedVersion, NewEvent};

    /// Records each transaction's calls; streams whose id starts with
    /// `conflict` fail alone, `fail` fails the whole transaction.
    #[derive(Default)]
    struct Recorder {
        transactions: Mutex<Vec<Vec<String>>>,
        writing: AtomicUsize,
    }

    #[async_trait]
    impl GroupWriter for Arc<Recorder> {
        async fn write(&self, calls: &[&[AppendRequest]]) -> Result<Vec<Outcome>, SourceError> {
            assert_eq!(self.writing.fetch_add(1, Ordering::SeqCst), 0, "two transactions at once");
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.writing.fetch_sub(1, Ordering::SeqCst);
            let ids: Vec<String> = calls.iter().map(|c| c[0].stream_id.clone()).collect();
            if ids.iter().any(|id| id.starts_with("fail")) {
                return Err(SourceError::Corrupt("disk on fire".into()));
            }
            self.transactions.lock().unwrap().push(ids.clone());
            Ok(ids
                .iter()
                .map(|id| match id.starts_with("conflict") {
                    true => Err(SourceError::Conflict { stream_id: id.clone(), expected: 0, actual: 1 }),
                    false => Ok(vec![Appended { first_position: 1, last_position: 1, stream_version: 1 }]),
                })
                .collect())
        }
    }

    fn request(stream: &str) -> Vec<AppendRequest> {
        vec![AppendRequest {
            stream_id: stream.into(),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new("Happened", "{}")],
        }]
    }

    /// Appends to `first` and, while it is being written, to each of
    /// `then`; returns the recorder and the outcomes of `then`.
    async fn while_one_is_written(then: &[&'static str]) -> (Arc<Recorder>, Vec<Outcome>) {
        let recorder = Arc::new(Recorder::default());
        let group = GroupCommit::new(recorder.clone());
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.append(&request("a-0")).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await; // a-0 is being written
        let rest: Vec<_> = then
            .iter()
            .map(|&s| {
                let group = group.clone();
                tokio::spawn(async move { group.append(&request(s)).await })
            })
            .collect();
        assert!(first.await.unwrap().is_ok());
        let outcomes = futures_util::future::join_all(rest).await.into_iter().map(Result::unwrap).collect();
        (recorder, outcomes)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_that_wait_are_written_together_and_each_gets_its_own_outcome() {
        let (recorder, outcomes) = while_one_is_written(&["a-1", "conflict-2", "a-3"]).await;
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok());
        assert!(matches!(&outcomes[1], Err(SourceError::Conflict { stream_id, .. }) if stream_id == "conflict-2"));
        let mut transactions = recorder.transactions.lock().unwrap().clone();
        assert_eq!(transactions.remove(0), ["a-0"]);
        // The three that waited went in one transaction, in some order.
        let mut second = transactions.remove(0);
        second.sort();
        assert_eq!(second, ["a-1", "a-3", "conflict-2"]);
        assert!(transactions.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_transaction_fails_every_append_in_it() {
        let (recorder, outcomes) = while_one_is_written(&["fail-1", "a-2"]).await;
        for outcome in outcomes {
            assert!(matches!(outcome, Err(SourceError::Corrupt(m)) if m == "disk on fire"));
        }
        assert_eq!(*recorder.transactions.lock().unwrap(), [["a-0"]]);
    }
}
