// Write refract projections in JavaScript (the role `refract-sdk` plays for Rust).
//
// A projection is an object with a `manifest` and a `handle(event, ctx)`
// function; `exportProjection` turns it into the component's `projection`
// export:
//
//   import { exportProjection } from "../sdk/refract.js";
//
//   export const projection = exportProjection({
//     manifest: {
//       name: "counters", version: "1.0.0",
//       eventTypes: ["Incremented"], streamPrefixes: ["counter-"],
//       collections: { counters: ["value"] },
//     },
//     handle(event, ctx) {
//       const { by } = event.payload();
//       ctx.update("counters", event.streamId, (c) => ({ ...c, value: (c.value ?? 0) + by }));
//     },
//   });
//
// The manifest can also be built with `Manifest`, whose `.search(fields)`
// declares text fields of the collection declared last for the host's
// full-text search:
//
//   manifest: new Manifest("notes", "1.0.0").collection("notes", ["edits"]).search(["owner", "note"]),
//
// Build with `npm run build` (jco componentize --bundle): the bundler inlines
// this file, and `refract:projection/host@0.2.0` is the host import.
import { get as hostGet, log as hostLog } from "refract:projection/host@0.2.0";

/** What a projection is, what it reads and what it writes. `options` takes
 * `eventTypes`, `streamPrefixes` and `collections` (`{ name: [indexed field
 * paths] }`), like the plain-object manifest. */
export class Manifest {
  #collections = new Map(); // name -> { indexes, search }, in declaration order

  constructor(name, version, { eventTypes = [], streamPrefixes = [], collections = {} } = {}) {
    this.name = name;
    this.version = version;
    this.eventTypes = [...eventTypes];
    this.streamPrefixes = [...streamPrefixes];
    for (const [collection, indexes] of Object.entries(collections)) this.collection(collection, indexes);
  }

  /** Declares a collection the projection writes, with the JSON field paths
   * (e.g. `balance`, `owner.name`) the host indexes for queries. */
  collection(name, indexes = []) {
    this.#collections.set(name, { indexes: [...indexes], search: [] });
    return this;
  }

  /** Declares JSON field paths of the collection declared last whose text
   * the host indexes for full-text search (queries' `search=`). */
  search(fields) {
    const last = [...this.#collections.values()].at(-1);
    if (!last) throw new Error("Manifest.search: declare a collection (Manifest.collection) before its search fields");
    last.search.push(...fields);
    return this;
  }

  /** The names of the declared collections. */
  collectionNames() {
    return new Set(this.#collections.keys());
  }

  /** The WIT `manifest` record. */
  toWit() {
    return {
      name: this.name,
      version: this.version,
      eventTypes: this.eventTypes,
      streamPrefixes: this.streamPrefixes,
      collections: [...this.#collections].map(([name, { indexes, search }]) => ({ name, indexes, search })),
    };
  }
}

/** Fails the event being handled, and so the whole batch. */
export class ProjectionError extends Error {}

/** One event; `payload()` and `metadata()` decode its JSON. Positions,
 * versions and timestamps are plain numbers (exact below 2^53). */
export class Event {
  constructor(e) {
    this.position = Number(e.position);
    this.streamId = e.streamId;
    this.streamVersion = Number(e.streamVersion);
    this.eventType = e.eventType;
    this.timestamp = Number(e.timestamp);
    this.rawPayload = e.payload;
    this.rawMetadata = e.metadata;
  }
  payload() {
    return this.#decode("payload", this.rawPayload);
  }
  metadata() {
    return this.#decode("metadata", this.rawMetadata);
  }
  #decode(what, text) {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new ProjectionError(
        `cannot decode ${what} of ${this.eventType} event at position ${this.position}: ${err.message}`,
      );
    }
  }
}

/** Reads and writes the read model during one batch. The host only sees what
 * was committed before the batch, so writes are kept in a batch-local overlay
 * that `get` answers from first: read-modify-write sees the changes of
 * earlier events of the same batch. */
export class Context {
  #collections;
  #overlay = new Map(); // "collection\0id" -> JSON text, or null for a deletion
  changes = [];

  constructor(collections) {
    this.#collections = collections;
  }

  /** The document (an object), or undefined when it does not exist. */
  get(collection, id) {
    this.#check(collection);
    const key = collection + "\0" + id;
    let body;
    if (this.#overlay.has(key)) {
      body = this.#overlay.get(key);
    } else {
      try {
        body = hostGet(collection, id);
      } catch (err) {
        throw new ProjectionError(getErrorMessage(err));
      }
    }
    return body == null ? undefined : JSON.parse(body);
  }

  /** Inserts the document, or replaces it if its id exists. */
  upsert(collection, id, doc) {
    this.#check(collection);
    const body = JSON.stringify(doc);
    this.#overlay.set(collection + "\0" + id, body);
    this.changes.push({ tag: "upsert", val: { collection, id, body } });
  }

  /** Loads the document (or a copy of `defaults`, else `{}`), passes it to
   * `f` and upserts what `f` returns (or the object itself if it returns
   * undefined). */
  update(collection, id, f, defaults = {}) {
    const doc = this.get(collection, id) ?? structuredClone(defaults);
    const result = f(doc);
    this.upsert(collection, id, result === undefined ? doc : result);
  }

  /** Removes the document if it exists. */
  delete(collection, id) {
    this.#check(collection);
    this.#overlay.set(collection + "\0" + id, null);
    this.changes.push({ tag: "delete", val: { collection, id } });
  }

  /** Writes to the host's log: "trace", "debug", "info", "warn" or "error". */
  log(level, message) {
    hostLog(level, message);
  }

  #check(collection) {
    if (!this.#collections.has(collection)) {
      throw new ProjectionError(`collection \`${collection}\` is not declared in the manifest`);
    }
  }
}

function getErrorMessage(err) {
  const e = err?.payload ?? err;
  if (e?.tag === "unknown-collection") return `unknown collection \`${e.val}\``;
  if (e?.tag === "unavailable") return `read model unavailable: ${e.val}`;
  return String(err);
}

/**
 * ` (app.js:12)`: the innermost frame of the projection's own code in the
 * error's stack, so an error points at the user's line, not at this helper.
 * Only the file's name: a build path is nobody's business at run time.
 */
function where(err) {
  const stack = typeof err?.stack === "string" ? err.stack : "";
  for (const line of stack.split("\n")) {
    const at = /([^/\\@\s()]+\.[cm]?js):(\d+)(?::\d+)?\)?\s*$/.exec(line);
    if (at && at[1] !== "refract.js") return ` (${at[1]}:${at[2]})`;
  }
  return "";
}

/** The `projection` export for a projection `{ manifest, handle, init? }`;
 * `manifest` is a `Manifest` or a plain object of the same fields.
 * `init()` (optional) creates per-instance state, passed as `this`; it is
 * created on the first batch and dropped after an error. */
export function exportProjection(p) {
  // A plain object is the same manifest without search fields.
  const m = p.manifest instanceof Manifest ? p.manifest : new Manifest(p.manifest.name, p.manifest.version, p.manifest);
  const collections = m.collectionNames();
  let state = null;
  return {
    describe() {
      return m.toWit();
    },
    handle(batch) {
      state ??= p.init ? p.init() : {};
      const ctx = new Context(collections);
      for (const e of batch) {
        const event = new Event(e);
        try {
          p.handle.call(state, event, ctx);
        } catch (err) {
          state = null;
          const what = err instanceof ProjectionError ? err.message : `${err?.name ?? "Error"}: ${err?.message ?? err}`;
          const message = what + where(err);
          // jco turns a thrown value into the `err` case of the result.
          throw { position: e.position, message };
        }
      }
      return ctx.changes;
    },
  };
}
