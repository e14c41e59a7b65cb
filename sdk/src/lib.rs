//! Write refract projections in Rust.
//!
//! A projection turns events into JSON documents of a read model. With this
//! crate you implement [`Projection`] on a plain type and call [`export!`]
//! once; the crate takes care of the WebAssembly component glue
//! (`refract:projection/projector` world).
//!
//! ```
//! use refract_sdk::{Context, Error, Event, Manifest, Projection};
//! use serde::{Deserialize, Serialize};
//!
//! /// Counts how often each counter stream was incremented.
//! #[derive(Default)]
//! struct Counters;
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter {
//!     value: i64,
//! }
//!
//! #[derive(Deserialize)]
//! struct Incremented {
//!     by: i64,
//! }
//!
//! impl Projection for Counters {
//!     fn manifest() -> Manifest {
//!         Manifest::new("counters", "1.0.0")
//!             .event_types(["Incremented"])
//!             .stream_prefix("counter-")
//!             .collection("counters", ["value"])
//!     }
//!
//!     fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
//!         let Incremented { by } = event.payload()?;
//!         ctx.update("counters", &event.stream_id, |counter: &mut Counter| {
//!             counter.value += by;
//!         })
//!     }
//! }
//!
//! refract_sdk::export!(Counters);
//! ```
//!
//! Build the plugin as a `cdylib` for `wasm32-wasip2`
//! (`cargo build --release --target wasm32-wasip2`); the resulting `.wasm`
//! file is the component the host loads.
#![deny(missing_docs)]

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use __bindings::exports::refract::projection::projection as wit_export;
use __bindings::refract::projection::{host, types as wit};

/// Generated WIT bindings; used by [`export!`], not part of the public API.
#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        // The SDK carries its own copy of the contract, so that it builds when
        // published; tests/all/packaging.rs keeps it equal to the root `wit/`.
        path: "wit",
        world: "projector",
        // The export macro is expanded in the plugin crate, so it must be
        // public and find these bindings through the SDK's path.
        pub_export_macro: true,
        default_bindings_module: "refract_sdk::__bindings",
    });
}

/// A projection: turns events, one at a time and in global order, into
/// changes of its read model.
///
/// The host creates the value with [`Default`] the first time a batch arrives
/// and keeps it for later batches of the same component instance, but it may
/// re-instantiate the component at any time (after an error, a restart, a
/// rebuild, or when it discards batches it projected but could not commit).
/// Keep real state in the read model (through [`Context`]), and use fields
/// only for caches that can be rebuilt.
pub trait Projection: Default + 'static {
    /// Whether [`Context::update`] keeps documents decoded between batches
    /// (the default), instead of reading and decoding them again through
    /// the host. Set it to `false` for a document type that does not come
    /// back equal from its own JSON (a `#[serde(skip)]` field, say), since a
    /// kept document is not re-decoded.
    const KEEP_DOCUMENTS: bool = true;

    /// Describes the projection: its name, the events it receives and the
    /// collections it writes. Called when the host loads the component.
    fn manifest() -> Manifest;

    /// Projects one event. Returning an error fails the whole batch: none of
    /// its changes are applied and the host reports the error with this
    /// event's position.
    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error>;
}

/// One event read from the event store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Gapless global position of the event, starting at 1.
    pub position: u64,
    /// Identifier of the stream the event belongs to, e.g. `account-42`.
    pub stream_id: String,
    /// Version of the stream after this event, starting at 1.
    pub stream_version: u64,
    /// Event type name, e.g. `MoneyDeposited`.
    pub event_type: String,
    /// Time the event was appended, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Event body as JSON text.
    pub payload: String,
    /// Event metadata as JSON text (`{}` when the writer gave none).
    pub metadata: String,
}

impl Event {
    /// Decodes the JSON payload.
    ///
    /// ```
    /// # use refract_sdk::Event;
    /// #[derive(serde::Deserialize)]
    /// struct MoneyDeposited { amount: i64 }
    ///
    /// # fn f(event: &Event) -> Result<(), refract_sdk::Error> {
    /// let MoneyDeposited { amount } = event.payload()?;
    /// # Ok(()) }
    /// ```
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.decode("payload", &self.payload)
    }

    /// Decodes the JSON metadata.
    pub fn metadata<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.decode("metadata", &self.metadata)
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, json: &str) -> Result<T, Error> {
        serde_json::from_str(json).map_err(|err| {
            Error::msg(format!(
                "cannot decode {what} of {} event at position {}: {err}",
                self.event_type, self.position
            ))
        })
    }
}

impl From<wit::Event> for Event {
    fn from(event: wit::Event) -> Self {
        Event {
            position: event.position,
            stream_id: event.stream_id,
            stream_version: event.stream_version,
            event_type: event.event_type,
            timestamp: event.timestamp,
            payload: event.payload,
            metadata: event.metadata,
        }
    }
}

/// What a projection is, what it reads and what it writes.
///
/// ```
/// # use refract_sdk::Manifest;
/// let manifest = Manifest::new("order-summary", "1.0.0")
///     .event_types(["OrderPlaced", "OrderShipped"])
///     .stream_prefix("order-")
///     .collection("orders", ["customer", "status"])
///     .search(["customer"])
///     .collection("customers", ["order_count"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    name: String,
    version: String,
    event_types: Vec<String>,
    stream_prefixes: Vec<String>,
    collections: Vec<Collection>,
}

/// A collection declared by [`Manifest::collection`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Collection {
    name: String,
    indexes: Vec<String>,
    search: Vec<String>,
}

impl Manifest {
    /// Starts a manifest that receives every event and writes no collection.
    ///
    /// `name` must be unique in a host (lowercase ASCII letters, digits, `-`
    /// and `_`); `version` is a free-form version of the projection's logic.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Manifest {
            name: name.into(),
            version: version.into(),
            event_types: Vec::new(),
            stream_prefixes: Vec::new(),
            collections: Vec::new(),
        }
    }

    /// Adds event types to receive. Without any, every type is received.
    pub fn event_types<I>(mut self, types: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Adds a stream-id prefix to receive. Without any, every stream is
    /// received. An event is delivered when it matches both filters.
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefixes.push(prefix.into());
        self
    }

    /// Declares a collection the projection writes, with the JSON field paths
    /// (e.g. `balance`, `owner.name`) the host indexes for queries.
    pub fn collection<I>(mut self, name: impl Into<String>, indexes: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let indexes = indexes.into_iter().map(Into::into).collect();
        self.collections.push(Collection { name: name.into(), indexes, search: Vec::new() });
        self
    }

    /// Declares JSON field paths (e.g. `owner`, `note.text`) of the
    /// collection declared last whose text the host indexes for full-text
    /// search, so queries can search the collection with `search=`.
    ///
    /// ```
    /// # use refract_sdk::Manifest;
    /// let manifest = Manifest::new("account-notes", "1.0.0")
    ///     .collection("accounts", ["balance"])
    ///     .search(["owner", "note"]);
    /// ```
    ///
    /// # Panics
    ///
    /// When no collection is declared before it: there is nothing to search.
    /// The panic happens in `describe`, so the host refuses the plugin at load.
    pub fn search<I>(mut self, fields: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let Some(collection) = self.collections.last_mut() else {
            panic!("Manifest::search: declare a collection (Manifest::collection) before its search fields");
        };
        collection.search.extend(fields.into_iter().map(Into::into));
        self
    }
}

impl From<Manifest> for wit::Manifest {
    fn from(manifest: Manifest) -> Self {
        wit::Manifest {
            name: manifest.name,
            version: manifest.version,
            event_types: manifest.event_types,
            stream_prefixes: manifest.stream_prefixes,
            collections: manifest
                .collections
                .into_iter()
                .map(|Collection { name, indexes, search }| wit::CollectionSpec { name, indexes, search })
                .collect(),
        }
    }
}

/// Severity of a [`Context::log`] message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics useful while developing.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the projection recovered from.
    Warn,
    /// Something failed.
    Error,
}

impl From<LogLevel> for wit::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => wit::LogLevel::Trace,
            LogLevel::Debug => wit::LogLevel::Debug,
            LogLevel::Info => wit::LogLevel::Info,
            LogLevel::Warn => wit::LogLevel::Warn,
            LogLevel::Error => wit::LogLevel::Error,
        }
    }
}

/// Why an event could not be projected: a human-readable message.
///
/// ```
/// # use refract_sdk::Error;
/// let err = Error::msg("amount must be positive");
/// assert_eq!(err.to_string(), "amount must be positive");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// Creates an error with the given message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error { message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::msg(err.to_string())
    }
}

impl From<wit::GetError> for Error {
    fn from(err: wit::GetError) -> Self {
        Error::msg(match err {
            wit::GetError::UnknownCollection(name) => format!("unknown collection `{name}`"),
            wit::GetError::Unavailable(reason) => format!("read model unavailable: {reason}"),
        })
    }
}

/// Reads and writes the read model while a batch of events is projected.
///
/// The host only sees what was committed before the batch, so the context
/// keeps the batch's own writes and answers [`get`](Context::get) from them
/// first: a read-modify-write sees the changes of earlier events of the same
/// batch. All writes are applied together when the batch succeeds.
pub struct Context {
    /// Collections declared in the manifest; the only ones the host lets the
    /// projection touch, so writes elsewhere are caught here, near their cause.
    collections: Rc<[String]>,
    /// Latest write per document in this batch, by collection then id;
    /// `None` marks a deletion. It is also what the batch returns: the host
    /// keeps only the last change per document, so earlier writes to the
    /// same document need not cross the boundary.
    writes: Map<String, Map<String, Option<String>>>,
    /// Documents [`update`](Context::update) wrote, kept decoded for later
    /// batches; `None` when the projection opted out ([`Projection::KEEP_DOCUMENTS`]).
    kept: Option<Kept>,
}

/// The context's maps are keyed by ids the events choose and hashed a few
/// times per event, where std's SipHash took a tenth of the guest's time.
/// foldhash is several times faster on short ids; seeded from std's random
/// keys (the host's random source), ids cannot be picked to collide.
type Map<K, V> = HashMap<K, V, Seeded>;

/// Builds foldhash hashers from a seed drawn once per instance.
#[derive(Clone)]
struct Seeded(foldhash::fast::SeedableRandomState);

impl Default for Seeded {
    fn default() -> Self {
        static SHARED: OnceLock<foldhash::SharedSeed> = OnceLock::new();
        let random = RandomState::new();
        let shared = SHARED.get_or_init(|| foldhash::SharedSeed::from_u64(random.hash_one(0_u64)));
        Seeded(foldhash::fast::SeedableRandomState::with_seed(random.hash_one(1_u64), shared))
    }
}

impl BuildHasher for Seeded {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// Most JSON bytes of documents [`Kept`] holds before it starts over, so a
/// projection with large or many documents stays far from its memory limit.
const KEPT_BYTES: usize = 4 << 20;

/// The decoded documents `update` wrote, by collection then id, each with
/// the length of its JSON (the memory bound is counted in those bytes).
///
/// Sound because the host replaces the instance, and with it this map,
/// whenever it discards a batch the instance projected (a failed batch,
/// refused changes, a failed commit): what is kept is always what the
/// host holds. Reading a kept document skips the `get` import and the
/// decoding, which were a fifth of the CPU of a read-modify-write projection.
#[derive(Default)]
struct Kept {
    docs: Map<String, Map<String, KeptDoc>>,
    bytes: usize,
}

/// A decoded document and the length of its JSON.
type KeptDoc = (Box<dyn Any>, usize);

/// Runs `f` on the per-id map of `collection`, created on first use; looked
/// up by `&str` first so that the collection name is copied once, not per write.
fn in_collection<V, R>(
    maps: &mut Map<String, Map<String, V>>,
    collection: &str,
    f: impl FnOnce(&mut Map<String, V>) -> R,
) -> R {
    match maps.get_mut(collection) {
        Some(docs) => f(docs),
        None => f(maps.entry(collection.to_owned()).or_default()),
    }
}

impl Kept {
    /// Applies `f` to the kept document if there is one of type `T` and
    /// returns its new JSON; gives `f` back otherwise.
    fn update<T, F>(&mut self, collection: &str, id: &str, f: F) -> Result<Result<String, serde_json::Error>, F>
    where
        T: Serialize + 'static,
        F: FnOnce(&mut T),
    {
        let Some((doc, len)) = self.docs.get_mut(collection).and_then(|docs| docs.get_mut(id)) else {
            return Err(f);
        };
        let Some(doc) = doc.downcast_mut::<T>() else {
            return Err(f);
        };
        f(doc);
        let body = serde_json::to_string(doc);
        if let Ok(body) = &body {
            self.bytes = self.bytes - *len + body.len();
            *len = body.len();
        }
        Ok(body)
    }

    fn insert(&mut self, collection: &str, id: &str, doc: Box<dyn Any>, len: usize) {
        self.remove(collection, id);
        if self.bytes + len > KEPT_BYTES {
            self.docs.clear();
            self.bytes = 0;
        }
        self.bytes += len;
        in_collection(&mut self.docs, collection, |docs| docs.insert(id.to_owned(), (doc, len)));
    }

    fn remove(&mut self, collection: &str, id: &str) {
        if let Some((_, len)) = self.docs.get_mut(collection).and_then(|docs| docs.remove(id)) {
            self.bytes -= len;
        }
    }
}

impl Context {
    fn new(collections: Rc<[String]>, keep: bool) -> Self {
        Context { collections, writes: Map::default(), kept: keep.then(Kept::default) }
    }

    /// Reads a document, including the changes made earlier in this batch.
    /// Returns `None` when it does not exist.
    pub fn get<T: DeserializeOwned>(&self, collection: &str, id: &str) -> Result<Option<T>, Error> {
        self.check_collection(collection)?;
        let decode = |body: &str| {
            serde_json::from_str(body)
                .map_err(|err| Error::msg(format!("cannot decode document `{id}` of `{collection}`: {err}")))
        };
        match self.writes.get(collection).and_then(|docs| docs.get(id)) {
            Some(written) => written.as_deref().map(decode).transpose(),
            None => host::get(collection, id)?.as_deref().map(decode).transpose(),
        }
    }

    /// Inserts a document, or replaces it if its id exists.
    pub fn upsert<T: Serialize>(&mut self, collection: &str, id: &str, doc: &T) -> Result<(), Error> {
        self.check_collection(collection)?;
        let body = serde_json::to_string(doc)?;
        self.forget(collection, id);
        self.write(collection, id, Some(body));
        Ok(())
    }

    /// Loads a document (or `T::default()` when it does not exist), lets `f`
    /// modify it and upserts the result.
    ///
    /// The document stays decoded in the instance for later batches, so the
    /// next `update` of it neither asks the host nor parses JSON. That is
    /// only the same as reading it back if `T` comes back equal from its
    /// own JSON; for a type that does not, see [`Projection::KEEP_DOCUMENTS`].
    ///
    /// ```
    /// # use refract_sdk::{Context, Error};
    /// #[derive(Default, serde::Serialize, serde::Deserialize)]
    /// struct Account { balance: i64 }
    ///
    /// # fn f(ctx: &mut Context) -> Result<(), Error> {
    /// ctx.update("accounts", "account-7", |account: &mut Account| account.balance += 10)?;
    /// # Ok(()) }
    /// ```
    pub fn update<T>(&mut self, collection: &str, id: &str, f: impl FnOnce(&mut T)) -> Result<(), Error>
    where
        T: Default + Serialize + DeserializeOwned + 'static,
    {
        self.check_collection(collection)?;
        let f = match &mut self.kept {
            Some(kept) => match kept.update(collection, id, f) {
                Ok(body) => {
                    self.write(collection, id, Some(body?));
                    return Ok(());
                }
                Err(f) => f,
            },
            None => f,
        };
        let mut doc: T = self.get(collection, id)?.unwrap_or_default();
        f(&mut doc);
        let body = serde_json::to_string(&doc)?;
        if let Some(kept) = &mut self.kept {
            kept.insert(collection, id, Box::new(doc), body.len());
        }
        self.write(collection, id, Some(body));
        Ok(())
    }

    /// Removes a document if it exists.
    pub fn delete(&mut self, collection: &str, id: &str) -> Result<(), Error> {
        self.check_collection(collection)?;
        self.forget(collection, id);
        self.write(collection, id, None);
        Ok(())
    }

    /// Drops the decoded copy of a document written some other way than `update`.
    fn forget(&mut self, collection: &str, id: &str) {
        if let Some(kept) = &mut self.kept {
            kept.remove(collection, id);
        }
    }

    /// Records the latest state of a document.
    fn write(&mut self, collection: &str, id: &str, body: Option<String>) {
        in_collection(&mut self.writes, collection, |docs| match docs.get_mut(id) {
            Some(slot) => *slot = body,
            None => {
                docs.insert(id.to_owned(), body);
            }
        });
    }

    /// The batch's net changes, one per document written; the context is
    /// left ready for the next batch. The maps keep their capacity, so the
    /// next batch does not grow them again.
    fn take_changes(&mut self) -> Vec<wit::Change> {
        let mut changes = Vec::with_capacity(self.writes.values().map(Map::len).sum());
        for (collection, docs) in &mut self.writes {
            for (id, body) in docs.drain() {
                let collection = collection.clone();
                changes.push(match body {
                    Some(body) => wit::Change::Upsert(wit::Document { collection, id, body }),
                    None => wit::Change::Delete(wit::DocumentKey { collection, id }),
                });
            }
        }
        changes
    }

    /// Writes a message to the host's log, tagged with the projection's name.
    pub fn log(&self, level: LogLevel, message: &str) {
        host::log(level.into(), message);
    }

    fn check_collection(&self, collection: &str) -> Result<(), Error> {
        if self.collections.iter().any(|name| name == collection) {
            Ok(())
        } else {
            Err(Error::msg(format!("collection `{collection}` is not declared in the manifest")))
        }
    }
}

/// Exports a [`Projection`] as the component's `refract:projection/projection`
/// implementation. Call it exactly once per plugin crate, at module level;
/// see the [crate documentation](crate) for a complete example.
#[macro_export]
macro_rules! export {
    ($projection:ty) => {
        const _: () = {
            // The generated export macro only accepts an identifier.
            type __RefractExport = $crate::__Export<$projection>;
            // Component export names (`ns:pkg/iface@ver#func`) are not valid
            // native symbol names, so the exports only exist on wasm; native
            // builds (e.g. `cargo test --workspace`) still type-check the glue.
            #[cfg(target_arch = "wasm32")]
            $crate::__bindings::export! { __RefractExport with_types_in $crate::__bindings }
            #[cfg(not(target_arch = "wasm32"))]
            $crate::__check_export::<__RefractExport>();
        };
    };
}

/// Lets [`export!`] type-check the glue where it cannot export it.
#[doc(hidden)]
pub const fn __check_export<G: wit_export::Guest>() {}

/// Implements the WIT `projection` interface for a [`Projection`]; named by
/// [`export!`], not part of the public API.
#[doc(hidden)]
pub struct __Export<P>(PhantomData<P>);

/// The projection value of this instance and its context, which keeps
/// decoded documents between batches; created on first use.
struct Instance<P> {
    projection: P,
    ctx: Context,
}

thread_local! {
    // A component exports one projection, so one untyped slot is enough; the
    // type is only known in the generic glue.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

impl<P: Projection> __Export<P> {
    fn handle_batch(
        instance: &mut Instance<P>,
        batch: Vec<wit::Event>,
    ) -> Result<Vec<wit::Change>, wit::ProjectionError> {
        for event in batch {
            let event = Event::from(event);
            instance
                .projection
                .handle(&event, &mut instance.ctx)
                .map_err(|err| wit::ProjectionError { position: event.position, message: err.to_string() })?;
        }
        Ok(instance.ctx.take_changes())
    }
}

impl<P: Projection> wit_export::Guest for __Export<P> {
    fn describe() -> wit::Manifest {
        P::manifest().into()
    }

    fn handle(batch: Vec<wit::Event>) -> Result<Vec<wit::Change>, wit::ProjectionError> {
        INSTANCE.with_borrow_mut(|slot| {
            let instance = slot
                .get_or_insert_with(|| {
                    let collections = P::manifest().collections.into_iter().map(|c| c.name).collect();
                    Box::new(Instance { projection: P::default(), ctx: Context::new(collections, P::KEEP_DOCUMENTS) })
                })
                .downcast_mut::<Instance<P>>()
                .expect("a component exports a single projection type");
            let result = Self::handle_batch(instance, batch);
            if result.is_err() {
                // The host discards the failed batch and will redeliver it;
                // drop the fields and kept documents too, since earlier
                // events of the batch may have changed them.
                *slot = None;
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Serialize, Debug, PartialEq)]
    struct Doc {
        n: u32,
    }

    #[test]
    fn search_fields_belong_to_the_collection_declared_before_them() {
        let manifest: wit::Manifest = Manifest::new("p", "1")
            .collection("accounts", ["balance"])
            .search(["owner"])
            .search(["note.text"])
            .collection("plain", ["n"])
            .into();
        let collections: Vec<(&str, &[String], &[String])> =
            manifest.collections.iter().map(|c| (c.name.as_str(), &c.indexes[..], &c.search[..])).collect();
        let s = |v: &[&str]| v.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        assert_eq!(
            collections,
            [("accounts", &s(&["balance"])[..], &s(&["owner", "note.text"])[..]), ("plain", &s(&["n"])[..], &[][..]),]
        );
    }

    #[test]
    #[should_panic(expected = "declare a collection (Manifest::collection) before its search fields")]
    fn search_without_a_collection_panics() {
        let _ = Manifest::new("p", "1").search(["owner"]);
    }

    #[test]
    fn kept_documents_are_updated_in_place_and_counted_in_json_bytes() {
        let mut kept = Kept::default();
        assert!(kept.update("c", "a", |d: &mut Doc| d.n += 1).is_err(), "nothing kept yet: f comes back");
        kept.insert("c", "a", Box::new(Doc { n: 1 }), 7);
        let body = kept.update("c", "a", |d: &mut Doc| d.n += 41).ok().unwrap().unwrap();
        assert_eq!(body, r#"{"n":42}"#);
        assert_eq!(kept.bytes, body.len());
        assert!(kept.update("c", "a", |_: &mut String| ()).is_err(), "another type is not this document");
        assert!(kept.update("other", "a", |d: &mut Doc| d.n += 1).is_err(), "collections are separate");
        kept.remove("c", "a");
        assert_eq!(kept.bytes, 0);
        assert!(kept.update("c", "a", |d: &mut Doc| d.n += 1).is_err());
    }

    #[test]
    fn kept_documents_start_over_past_the_byte_bound() {
        let mut kept = Kept::default();
        let len = KEPT_BYTES / 4;
        for id in ["a", "b", "c", "d"] {
            kept.insert("c", id, Box::new(Doc::default()), len);
        }
        assert_eq!(kept.bytes, KEPT_BYTES);
        kept.insert("c", "a", Box::new(Doc::default()), len);
        assert_eq!(kept.bytes, KEPT_BYTES, "replacing a document does not count it twice");
        kept.insert("c", "e", Box::new(Doc::default()), 1);
        assert_eq!(kept.bytes, 1, "over the bound: everything else is dropped");
        assert!(kept.update("c", "b", |d: &mut Doc| d.n += 1).is_err());
        assert!(kept.update("c", "e", |d: &mut Doc| d.n += 1).is_ok());
    }
}
