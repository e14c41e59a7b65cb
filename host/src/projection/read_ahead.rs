//! Reading the next batches while the current one is projected.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::event::{Event, Subscription};
use crate::source::{EventSource, SourceError};

/// Reads of the next batches, started before the current batch is
/// projected, so that reading (on a store thread) and projecting (on a
/// plugin thread) overlap instead of taking turns. One batch ahead was not
/// enough: a read slowed by a commit on the other core held up the runner
/// for a tenth of its time. The reader keeps several batches ready (see
/// [`batches_ahead`]) and catches up while the store is idle.
pub(crate) struct ReadAhead {
    /// Position the next batch it delivers starts after.
    from: u64,
    /// The head it reads up to.
    up_to: u64,
    /// Batch size it reads with: a full batch ends at its last event.
    limit: usize,
    batches: tokio::sync::mpsc::Receiver<Result<Vec<Event>, SourceError>>,
    task: tokio::task::JoinHandle<()>,
    /// What its batches beyond two take of [`SHARED_AHEAD`].
    _share: Share<'static>,
}

/// Events a runner reads ahead of the one it projects at most, about 2.5
/// MiB of 400-byte events: at batch 1,000, six batches ahead gave about 5%
/// more events/s than two (the reader uses the core the store leaves idle
/// between commits).
const READ_AHEAD_EVENTS: usize = 6_000;

/// Events read ahead beyond each runner's first two batches, shared by all
/// the runners of the process: two projections catching up at once read
/// [`READ_AHEAD_EVENTS`] each, more read two batches each. Per runner, ten
/// projections held 60,000 events (about 24 MiB) in read-ahead.
const SHARED_AHEAD_EVENTS: usize = 8_000;

/// The process's [`SHARED_AHEAD_EVENTS`].
static SHARED_AHEAD: Budget = Budget::new(SHARED_AHEAD_EVENTS);

/// Batches to read ahead at `batch_size` with `free` events of the shared
/// budget left, and the events that takes from it: at least two batches
/// (reading overlaps projecting), at most [`READ_AHEAD_EVENTS`] worth and 64.
fn batches_ahead(batch_size: usize, free: usize) -> (usize, usize) {
    let size = batch_size.max(1);
    let wanted = (READ_AHEAD_EVENTS / size).clamp(2, 64);
    let extra = (wanted - 2).min(free / size);
    (2 + extra, extra * size)
}

/// Events that runners may read ahead beyond their first two batches.
#[derive(Debug)]
struct Budget {
    free: AtomicUsize,
}

impl Budget {
    const fn new(events: usize) -> Self {
        Self { free: AtomicUsize::new(events) }
    }

    /// The batches to read ahead at `batch_size`, and the share of the
    /// budget they take until it is dropped.
    fn take(&self, batch_size: usize) -> (usize, Share<'_>) {
        let (mut batches, mut events) = (2, 0);
        let _ = self.free.fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
            (batches, events) = batches_ahead(batch_size, free);
            Some(free - events)
        });
        (batches, Share { budget: self, events })
    }
}

/// Events taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
struct Share<'a> {
    budget: &'a Budget,
    events: usize,
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.budget.free.fetch_add(self.events, Ordering::AcqRel);
    }
}

/// Events the reader asks the store for at once when batches are smaller:
/// a read costs a query (tens of µs) whatever its size, which at batch 1
/// was most of a batch's time.
const READ_CHUNK_EVENTS: usize = 1_000;

/// Takes the next batch off `buffered`, which holds every subscribed event
/// after the last batch taken, up to `read_to`: the same events and end a
/// read of `limit` events after that batch would give. `None` while more
/// must be read first.
fn next_batch(buffered: &mut VecDeque<Event>, read_to: u64, limit: usize, up_to: u64) -> Option<(Vec<Event>, u64)> {
    if buffered.len() < limit && read_to < up_to {
        return None;
    }
    let batch: Vec<Event> = buffered.drain(..limit.min(buffered.len())).collect();
    let end = batch_end(&batch, limit, up_to);
    Some((batch, end))
}

impl ReadAhead {
    /// Starts reading the batches after `from`, up to `up_to`.
    pub fn start(
        source: Arc<dyn EventSource>,
        subscription: Subscription,
        from: u64,
        up_to: u64,
        limit: usize,
    ) -> Self {
        let (ahead, share) = SHARED_AHEAD.take(limit);
        // One batch waits in the channel while the task reads the next.
        let (tx, batches) = tokio::sync::mpsc::channel(ahead - 1);
        let chunk = limit.max(READ_CHUNK_EVENTS);
        let task = tokio::spawn(async move {
            let (mut after, mut read_to) = (from, from);
            let mut buffered = VecDeque::new();
            while after < up_to {
                let Some((batch, end)) = next_batch(&mut buffered, read_to, limit, up_to) else {
                    match source.read(read_to, up_to, &subscription, chunk).await {
                        Ok(events) => {
                            read_to = batch_end(&events, chunk, up_to);
                            buffered.extend(events);
                        }
                        // The runner reads again itself after a failed read.
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    }
                    continue;
                };
                after = end;
                if tx.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
        });
        Self { from, up_to, limit, batches, task, _share: share }
    }

    /// The next batch if it starts at `from`, with the head it was read up to.
    /// `None` when it does not (the runner went back to its checkpoint) or
    /// the read failed: the caller reads on its own.
    pub async fn next(&mut self, from: u64) -> Option<(Vec<Event>, u64)> {
        if from != self.from {
            return None;
        }
        let events = self.batches.recv().await?.ok()?;
        self.from = batch_end(&events, self.limit, self.up_to);
        Some((events, self.up_to))
    }

    /// The head it reads up to.
    pub fn up_to(&self) -> u64 {
        self.up_to
    }

    /// Whether it is reading, or has read, the batch after `from`.
    pub fn covers(&self, from: u64) -> bool {
        self.from == from && self.up_to > from
    }
}

impl Drop for ReadAhead {
    /// Reads nobody will use should not hold a reader connection.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a batch read after some position up to `up_to` ends: at its last
/// event if it is full (more may follow), else at `up_to` (everything up to
/// it was read, including events the subscription skips).
pub(crate) fn batch_end(events: &[Event], limit: usize, up_to: u64) -> u64 {
    match events.last() {
        Some(last) if events.len() >= limit => last.position,
        _ => up_to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(positions: &[u64]) -> Vec<Event> {
        positions
            .iter()
            .map(|&position| Event {
                position,
                stream_id: "s".into(),
                stream_version: position,
                event_type: "t".into(),
                payload: "{}".into(),
                metadata: "{}".into(),
                timestamp: 0,
            })
            .collect()
    }

    #[test]
    fn a_full_batch_ends_at_its_last_event_any_other_at_the_head() {
        assert_eq!(batch_end(&events(&[3, 5, 9]), 3, 20), 9, "full: more may follow the last event");
        assert_eq!(batch_end(&events(&[3, 5]), 3, 20), 20, "partial: everything up to the head was read");
        assert_eq!(batch_end(&[], 3, 20), 20, "nothing subscribed up to the head");
    }

    #[test]
    fn batches_cut_from_chunks_are_the_batches_reads_would_give() {
        // Every third position is subscribed; a source read as the stores do it.
        let subscribed: Vec<u64> = (1..=40).filter(|p| p % 3 != 0).collect();
        let read = |after: u64, up_to: u64, limit: usize| -> Vec<Event> {
            events(&subscribed.iter().copied().filter(|&p| p > after && p <= up_to).take(limit).collect::<Vec<_>>())
        };
        let positions = |batch: &[Event]| batch.iter().map(|e| e.position).collect::<Vec<_>>();
        for up_to in [1, 2, 3, 17, 39, 40] {
            for limit in [1, 2, 3, 5, 40, 100] {
                for chunk in [limit, limit + 1, 7 * limit, 1_000] {
                    let mut direct = vec![];
                    let mut after = 0;
                    while after < up_to {
                        let batch = read(after, up_to, limit);
                        after = batch_end(&batch, limit, up_to);
                        direct.push((positions(&batch), after));
                    }
                    let mut cut = vec![];
                    let (mut after, mut read_to, mut buffered) = (0, 0, VecDeque::new());
                    while after < up_to {
                        match next_batch(&mut buffered, read_to, limit, up_to) {
                            Some((batch, end)) => {
                                after = end;
                                cut.push((positions(&batch), end));
                            }
                            None => {
                                let more = read(read_to, up_to, chunk);
                                read_to = batch_end(&more, chunk, up_to);
                                buffered.extend(more);
                            }
                        }
                    }
                    assert_eq!(cut, direct, "up_to {up_to}, limit {limit}, chunk {chunk}");
                }
            }
        }
    }

    #[test]
    fn read_ahead_is_bounded_in_events_but_always_overlaps() {
        let plenty = usize::MAX;
        assert_eq!(batches_ahead(1_000, plenty), (6, 4_000));
        assert_eq!(batches_ahead(100, plenty), (60, 5_800));
        assert_eq!(batches_ahead(1, plenty), (64, 62), "capped for realtime batches");
        assert_eq!(batches_ahead(0, plenty), (64, 62));
        assert_eq!(batches_ahead(10_000, plenty), (2, 0), "large batches still read one ahead while one waits");
        assert_eq!(batches_ahead(1_000, 3_999), (5, 3_000), "only whole batches of what is left");
        assert_eq!(batches_ahead(1_000, 0), (2, 0), "two batches whatever is left");
    }

    #[test]
    fn runners_share_one_budget_and_give_it_back() {
        let budget = Budget::new(8_000);
        let shares: Vec<_> = (0..10).map(|_| budget.take(1_000)).collect();
        let batches: Vec<usize> = shares.iter().map(|(b, _)| *b).collect();
        assert_eq!(batches, [6, 6, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(budget.free.load(Ordering::Acquire), 0);
        drop(shares);
        assert_eq!(budget.free.load(Ordering::Acquire), 8_000);
        assert_eq!(budget.take(1_000).0, 6, "a runner alone reads its full amount again");
    }
}
