//! What a generation's `get` import reads before it asks the store: the
//! changes of batches projected but not yet committed (staged), those of the
//! commit in flight (committing), then the committed documents already read
//! or written.
//!
//! Without it every `get` is a point read through the async pool (a thread
//! hop each way), which made a read-modify-write projection such as
//! account-summary spend most of its time waiting on reads of documents it
//! had itself written one batch earlier.
//!
//! Exactly-once rests on three rules:
//! - the committed layer only ever holds committed state: misses are filled
//!   from the store, and changes move into it only after their commit
//!   succeeded;
//! - a failed commit clears both layers, since its outcome is unknown; the
//!   runner then re-reads from its committed checkpoint;
//! - the staged layer is never evicted (the runner bounds it by committing),
//!   so a batch always sees every batch before it.
//!
//! Only one runner writes a generation's tables (a second host's commit
//! fails on the checkpoint), so nothing else can make an entry stale.
//!
//! The committed layer is bounded in entries and in bytes (ids and bodies
//! plus a fixed cost per entry, [`Limits::document_cache_bytes`]), since a
//! plugin chooses what it reads: without the byte bound, `get` with large
//! distinct ids, or of large documents, grew the host without limit.
//!
//! [`Limits::document_cache_bytes`]: crate::Limits::document_cache_bytes

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::model::changes::{ChangeSet, CollectionChanges};

/// Most committed documents a [`DocumentCache`] holds before it starts over:
/// about 15 MiB of small documents, so ten projections stay well inside 300 MiB.
const CACHED_DOCUMENTS: usize = 50_000;

/// What an entry costs besides its id and body: the map slot and the two
/// strings' headers and allocations, roughly.
const ENTRY_OVERHEAD: u64 = 96;

/// Id to document; `None` records that the document does not exist. The
/// hasher is seeded per map, so ids chosen by a plugin cannot force collisions.
type Ids = HashMap<String, Option<String>, RandomState>;

/// Collection, then id.
type Docs = HashMap<String, Ids, RandomState>;

/// The documents one generation's runner and plugin share; see the module docs.
///
/// ```ignore
/// let cache = DocumentCache::for_empty_generation(64 << 20);
/// assert_eq!(cache.get("accounts", "a-1"), Some(None)); // known absent: nothing was written yet
/// ```
#[derive(Debug)]
pub(crate) struct DocumentCache {
    inner: Mutex<Inner>,
    /// Most bytes the committed layer holds before it starts over.
    budget: u64,
}

impl Default for DocumentCache {
    fn default() -> Self {
        Self::new(crate::Limits::default().document_cache_bytes)
    }
}

#[derive(Debug, Default)]
struct Inner {
    committed: Docs,
    /// Entries in `committed`, for the eviction bound.
    count: usize,
    /// What the entries in `committed` cost, for the byte bound (see [`entry_cost`]).
    bytes: u64,
    /// Changes of projected batches whose commit is still to come, per
    /// collection; a later batch's change to a document replaces an earlier one.
    staged: Docs,
    /// The change set being committed: older than `staged`, newer than
    /// `committed`. Shared with the commit, not copied.
    committing: Option<Committing>,
    /// Every document of the generation passed through this cache: a miss
    /// means "absent", with no store read. True only for a generation that
    /// started from position 0 (empty tables) until the first eviction or clear.
    complete: bool,
    /// How many times projected work was discarded (`clear`); see [`DocumentCache::epoch`].
    epoch: u64,
}

impl DocumentCache {
    /// A cache whose committed layer holds at most `budget` bytes.
    pub(crate) fn new(budget: u64) -> Self {
        Self { inner: Mutex::new(Inner::default()), budget }
    }

    /// A cache for a generation whose tables are still empty, so that a
    /// rebuild from position 0 never reads the store for a document it has
    /// not written.
    pub(crate) fn for_empty_generation(budget: u64) -> Self {
        Self { inner: Mutex::new(Inner { complete: true, ..Inner::default() }), budget }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters more than losing the cache: start over.
        self.inner.lock().unwrap_or_else(|poisoned| {
            let mut inner = poisoned.into_inner();
            let epoch = inner.epoch + 1;
            *inner = Inner { epoch, ..Inner::default() };
            inner
        })
    }

    /// The document as the next batch must see it, or `None` when only the
    /// store knows.
    pub(crate) fn get(&self, collection: &str, id: &str) -> Option<Option<String>> {
        let inner = self.lock();
        if let Some(doc) = inner.staged.get(collection).and_then(|ids| ids.get(id)) {
            return Some(doc.clone());
        }
        if let Some(doc) = inner.committing.as_ref().and_then(|c| c.get(collection, id)) {
            return Some(doc);
        }
        match inner.committed.get(collection).and_then(|ids| ids.get(id)) {
            Some(doc) => Some(doc.clone()),
            None if inner.complete => Some(None),
            None => None,
        }
    }

    /// Records what the store returned for a miss.
    pub(crate) fn remember(&self, collection: &str, id: &str, doc: Option<String>) {
        self.lock().insert(self.budget, collection, id.to_owned(), doc);
    }

    /// Adds a projected batch's changes, to be committed later.
    pub(crate) fn stage(&self, changes: ChangeSet) {
        let mut inner = self.lock();
        for (collection, c) in changes.collections {
            let ids = inner.staged.entry(collection).or_default();
            for (id, body) in c.upserts {
                ids.insert(id, Some(body));
            }
            for id in c.deletes {
                ids.insert(id, None);
            }
        }
    }

    /// Starts a commit of everything staged: the staged changes become the
    /// committing layer and are returned as one change set, ids in order
    /// (which B-trees insert fastest). A commit still in flight must have
    /// been promoted or cleared first.
    pub(crate) fn begin_commit(&self) -> Arc<ChangeSet> {
        let mut inner = self.lock();
        debug_assert!(inner.committing.is_none(), "one commit in flight at a time");
        let mut set = ChangeSet::default();
        for (collection, ids) in std::mem::take(&mut inner.staged) {
            let mut c = CollectionChanges::default();
            for (id, doc) in ids {
                match doc {
                    Some(body) => c.upserts.push((id, body)),
                    None => c.deletes.push(id),
                }
            }
            c.upserts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            c.deletes.sort_unstable();
            if !c.upserts.is_empty() || !c.deletes.is_empty() {
                set.collections.insert(collection, c);
            }
        }
        let set = Arc::new(set);
        inner.committing = Some(Committing::new(set.clone()));
        set
    }

    /// The commit in flight succeeded: its changes become committed state.
    /// Moves them when the commit has let go of the change set, as it has
    /// by the time its outcome is known.
    pub(crate) fn promote(&self) {
        let mut inner = self.lock();
        let Some(committing) = inner.committing.take() else {
            return;
        };
        let set = Arc::try_unwrap(committing.set).unwrap_or_else(|shared| (*shared).clone());
        inner.fold(self.budget, set);
    }

    /// Folds in changes committed directly (not staged first); rare enough
    /// (dead-letter replays) to copy them.
    pub(crate) fn committed(&self, changes: &ChangeSet) {
        self.lock().fold(self.budget, changes.clone());
    }

    /// Forgets everything, staged and committing changes included: the next
    /// reads go to the store.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        let epoch = inner.epoch + 1;
        *inner = Inner { epoch, ..Inner::default() };
    }

    /// Changes with every [`clear`](Self::clear). A plugin instance that
    /// projected under an earlier epoch remembers work the host has since
    /// discarded (the SDK keeps documents decoded between batches, and a
    /// projection may keep its own caches), so the runner replaces it.
    pub(crate) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// What the committed layer costs now, in the bytes `budget` counts.
    #[cfg(test)]
    fn committed_bytes(&self) -> u64 {
        self.lock().bytes
    }
}

/// Where a document sits in a change set: `Ok` an upsert, `Err` a delete.
type Slot = Result<usize, usize>;

/// A change set being committed, with a hash index over its ids. Its ids
/// are sorted, but a binary search over thousands of heap strings cost a
/// cache miss per probe, and the `get` import runs once per event.
#[derive(Debug)]
struct Committing {
    set: Arc<ChangeSet>,
    /// Per collection, the slot of every id.
    index: HashMap<String, HashTable<Slot>, RandomState>,
    hasher: RandomState,
}

impl Committing {
    fn new(set: Arc<ChangeSet>) -> Self {
        let hasher = RandomState::default();
        let mut index = HashMap::with_hasher(RandomState::default());
        for (collection, c) in &set.collections {
            let hash = |slot: &Slot| hasher.hash_one(id_at(c, *slot));
            let mut table = HashTable::with_capacity(c.upserts.len() + c.deletes.len());
            for slot in (0..c.upserts.len()).map(Ok).chain((0..c.deletes.len()).map(Err)) {
                table.insert_unique(hash(&slot), slot, hash);
            }
            index.insert(collection.clone(), table);
        }
        Self { set, index, hasher }
    }

    fn get(&self, collection: &str, id: &str) -> Option<Option<String>> {
        let c = self.set.collections.get(collection)?;
        let slot = self.index.get(collection)?.find(self.hasher.hash_one(id), |slot| id_at(c, *slot) == id)?;
        Some(match *slot {
            Ok(i) => Some(c.upserts[i].1.clone()),
            Err(_) => None,
        })
    }
}

fn id_at(c: &CollectionChanges, slot: Slot) -> &str {
    match slot {
        Ok(i) => &c.upserts[i].0,
        Err(i) => &c.deletes[i],
    }
}

impl Inner {
    /// Makes committed changes part of the committed layer.
    fn fold(&mut self, budget: u64, set: ChangeSet) {
        for (collection, c) in set.collections {
            for (id, body) in c.upserts {
                self.insert(budget, &collection, id, Some(body));
            }
            for id in c.deletes {
                self.insert(budget, &collection, id, None);
            }
        }
    }

    fn insert(&mut self, budget: u64, collection: &str, id: String, doc: Option<String>) {
        let cost = entry_cost(id.len(), &doc);
        if cost > budget {
            // Not kept, and neither is the id's older version: a miss must
            // then ask the store, not read a stale document or "absent".
            if let Some(old) = self.committed.get_mut(collection).and_then(|ids| ids.remove(id.as_str())) {
                self.count -= 1;
                self.bytes -= entry_cost(id.len(), &old);
            }
            self.complete = false;
            return;
        }
        // Starting over is cheaper than tracking recency, and a miss costs
        // only what every read cost before this cache existed.
        if self.count >= CACHED_DOCUMENTS || self.bytes + cost > budget {
            self.committed.clear();
            self.count = 0;
            self.bytes = 0;
            self.complete = false;
        }
        // Looked up by `&str` first: the collection name is only copied for
        // its first document.
        if !self.committed.contains_key(collection) {
            self.committed.insert(collection.to_owned(), Ids::default());
        }
        if let Some(ids) = self.committed.get_mut(collection) {
            let id_len = id.len();
            match ids.insert(id, doc) {
                Some(old) => self.bytes -= entry_cost(id_len, &old),
                None => self.count += 1,
            }
            self.bytes += cost;
        }
    }
}

/// What a committed entry (an id of `id_len` bytes and its document)
/// costs against the byte budget.
fn entry_cost(id_len: usize, doc: &Option<String>) -> u64 {
    (id_len + doc.as_ref().map_or(0, String::len)) as u64 + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    fn set(upserts: &[(&str, &str)], deletes: &[&str]) -> ChangeSet {
        let c = CollectionChanges {
            upserts: upserts.iter().map(|(id, b)| (id.to_string(), b.to_string())).collect(),
            deletes: deletes.iter().map(|id| id.to_string()).collect(),
        };
        ChangeSet { collections: [("c".to_string(), c)].into() }
    }

    #[test]
    fn follows_commits_and_forgets_on_clear() {
        let cache = DocumentCache::default();
        assert_eq!(cache.get("c", "a"), None, "unknown until read or committed");
        cache.remember("c", "a", None);
        assert_eq!(cache.get("c", "a"), Some(None), "a read that found nothing is remembered");
        cache.committed(&set(&[("a", "{\"v\":1}")], &["b"]));
        assert_eq!(cache.get("c", "a"), Some(Some("{\"v\":1}".to_string())));
        assert_eq!(cache.get("c", "b"), Some(None), "a committed delete reads as absent");
        assert_eq!(cache.get("other", "a"), None, "collections are kept apart");
        cache.clear();
        assert_eq!(cache.get("c", "a"), None);
    }

    #[test]
    fn staged_changes_are_seen_first_and_merge_later_wins() {
        let cache = DocumentCache::default();
        cache.committed(&set(&[("a", "{\"v\":1}")], &[]));
        cache.stage(set(&[("a", "{\"v\":2}"), ("b", "{\"v\":1}")], &[]));
        cache.stage(set(&[], &["b"]));
        assert_eq!(cache.get("c", "a"), Some(Some("{\"v\":2}".to_string())), "staged beats committed");
        assert_eq!(cache.get("c", "b"), Some(None), "a later staged delete wins");
        let net = cache.begin_commit();
        assert_eq!(net.collections["c"].upserts, vec![("a".to_string(), "{\"v\":2}".to_string())]);
        assert_eq!(net.collections["c"].deletes, vec!["b".to_string()]);
        cache.stage(set(&[("a", "{\"v\":3}")], &[]));
        assert_eq!(cache.get("c", "a"), Some(Some("{\"v\":3}".to_string())), "staged beats committing");
        assert_eq!(cache.get("c", "b"), Some(None), "committing is read while the commit runs");
        cache.promote();
        assert_eq!(cache.get("c", "b"), Some(None), "committed after promotion");
        let next = cache.begin_commit();
        assert_eq!(next.collections["c"].upserts, vec![("a".to_string(), "{\"v\":3}".to_string())]);
        cache.promote();
        assert!(cache.begin_commit().is_empty(), "nothing left to commit");
        assert_eq!(cache.get("c", "a"), Some(Some("{\"v\":3}".to_string())));
    }

    #[test]
    fn the_commit_in_flight_is_found_by_id_in_every_collection() {
        let cache = DocumentCache::default();
        cache.committed(&set(&[("old", "{\"v\":0}")], &[]));
        let mut big = set(&[], &[]);
        let c = big.collections.get_mut("c").unwrap();
        for i in 0..5_000 {
            c.upserts.push((format!("doc-{i}"), format!("{{\"v\":{i}}}")));
        }
        c.deletes.push("old".to_string());
        big.collections.insert(
            "d".to_string(),
            CollectionChanges { upserts: vec![("doc-1".to_string(), "{\"d\":1}".to_string())], deletes: vec![] },
        );
        cache.stage(big);
        let _in_flight = cache.begin_commit();
        for i in [0, 1, 2_499, 4_999] {
            assert_eq!(cache.get("c", &format!("doc-{i}")), Some(Some(format!("{{\"v\":{i}}}"))));
        }
        assert_eq!(cache.get("d", "doc-1"), Some(Some("{\"d\":1}".to_string())), "collections are kept apart");
        assert_eq!(cache.get("c", "old"), Some(None), "a delete in flight hides the committed document");
        assert_eq!(cache.get("c", "doc-5000"), None, "not in flight, not committed: only the store knows");
        assert_eq!(cache.get("d", "doc-2"), None);
    }

    #[test]
    fn a_failed_commit_drops_committing_and_staged_changes() {
        let cache = DocumentCache::for_empty_generation(Limits::default().document_cache_bytes);
        cache.stage(set(&[("a", "{\"v\":1}")], &[]));
        cache.begin_commit();
        cache.stage(set(&[("b", "{\"v\":1}")], &[]));
        let epoch = cache.epoch();
        cache.clear();
        assert_eq!(cache.epoch(), epoch + 1, "instances that saw the dropped batches must be replaced");
        assert_eq!(cache.get("c", "a"), None, "after a clear only the store knows");
        assert_eq!(cache.get("c", "b"), None, "batches staged on top of a failed commit are dropped too");
        assert!(cache.begin_commit().is_empty());
    }

    #[test]
    fn an_empty_generation_knows_what_is_absent_until_it_evicts() {
        let cache = DocumentCache::for_empty_generation(Limits::default().document_cache_bytes);
        assert_eq!(cache.get("c", "never-written"), Some(None));
        for i in 0..CACHED_DOCUMENTS {
            cache.remember("c", &i.to_string(), None);
        }
        assert_eq!(cache.get("c", "0"), Some(None));
        let epoch = cache.epoch();
        cache.remember("c", "one more", None);
        assert_eq!(cache.epoch(), epoch, "evicting committed documents discards no projected work");
        assert_eq!(cache.get("c", "0"), None, "the full cache was cleared and is no longer complete");
        assert_eq!(cache.get("c", "one more"), Some(None));
    }

    /// A plugin calling `get` with distinct 1 MiB ids drove the host to
    /// 1.06 GB: the cache counted entries, 50,000 of them. Now what it holds
    /// stays within its byte budget, whatever the sizes.
    #[test]
    fn the_byte_bound_holds_under_distinct_large_ids_and_documents() {
        const BUDGET: u64 = 4 << 20;
        let cache = DocumentCache::new(BUDGET);
        let mut inserted = 0;
        for i in 0..200 {
            // Distinct 64 KiB ids that are absent, then 256 KiB documents.
            let id = format!("{i}-{}", "k".repeat(64 << 10));
            cache.remember("c", &id, None);
            inserted += id.len() as u64;
            assert!(cache.committed_bytes() <= BUDGET, "{} bytes after id {i}", cache.committed_bytes());
            assert_eq!(cache.get("c", &id), Some(None), "the newest entry is kept");
            let body = "x".repeat(256 << 10);
            cache.remember("d", &i.to_string(), Some(body.clone()));
            inserted += body.len() as u64;
            assert!(cache.committed_bytes() <= BUDGET, "{} bytes after document {i}", cache.committed_bytes());
            assert_eq!(cache.get("d", &i.to_string()), Some(Some(body)), "the newest entry is kept");
        }
        assert!(inserted > 10 * BUDGET, "the bound was tested: {inserted} bytes went through");
        let expected = entry_cost(1, &Some("x".repeat(256 << 10)));
        assert_eq!(expected, (1 + (256 << 10)) as u64 + ENTRY_OVERHEAD, "ids and bodies are what is counted");
    }

    #[test]
    fn the_default_budget_is_the_limit() {
        assert_eq!(DocumentCache::default().budget, 64 << 20);
        assert_eq!(DocumentCache::default().budget, Limits::default().document_cache_bytes);
    }

    /// Evicting for bytes keeps the rules the module docs state.
    #[test]
    fn eviction_for_bytes_keeps_the_rules() {
        let budget = 10 * (ENTRY_OVERHEAD + 1 + 100);
        let doc = |n: usize| Some("x".repeat(n));
        // An empty generation knows what is absent until it evicts.
        let cache = DocumentCache::for_empty_generation(budget);
        cache.stage(set(&[("s", "{}")], &[]));
        cache.committed(&set(&[("a", "{}")], &[]));
        let epoch = cache.epoch();
        for i in 0..10 {
            cache.remember("c", &i.to_string(), doc(100));
        }
        assert_eq!(cache.epoch(), epoch, "evicting committed documents discards no projected work");
        assert_eq!(cache.get("c", "never-written"), None, "no longer complete: only the store knows");
        assert_eq!(cache.get("c", "a"), None, "evicted with the rest");
        assert_eq!(cache.get("c", "9"), Some(doc(100)));
        assert_eq!(cache.get("c", "s"), Some(Some("{}".to_string())), "staged changes are never evicted");

        // An entry larger than the whole budget is not kept, and hides no
        // older version of itself.
        let cache = DocumentCache::for_empty_generation(budget);
        cache.committed(&set(&[("big", "{\"v\":1}")], &[]));
        assert_eq!(cache.get("c", "big"), Some(Some("{\"v\":1}".to_string())));
        cache.committed(&set(&[("big", &"x".repeat(budget as usize))], &[]));
        assert_eq!(cache.get("c", "big"), None, "not the stale version, and not `absent`: ask the store");
        assert_eq!(cache.get("c", "other"), None, "a cache that skipped an entry is not complete");
        assert_eq!(cache.committed_bytes(), 0);

        // Replacing an entry counts only its new size.
        let cache = DocumentCache::new(budget);
        cache.remember("c", "a", doc(100));
        cache.remember("c", "a", doc(10));
        assert_eq!(cache.committed_bytes(), entry_cost(1, &doc(10)));
        cache.committed(&set(&[], &["a"]));
        assert_eq!(cache.committed_bytes(), entry_cost(1, &None));
        assert_eq!(cache.get("c", "a"), Some(None));
    }

    #[test]
    fn staged_changes_survive_eviction() {
        let cache = DocumentCache::default();
        cache.stage(set(&[("s", "{}")], &[]));
        for i in 0..=CACHED_DOCUMENTS {
            cache.remember("c", &i.to_string(), None);
        }
        assert_eq!(cache.get("c", "s"), Some(Some("{}".to_string())));
    }
}
