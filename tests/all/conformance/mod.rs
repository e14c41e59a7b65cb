//! One conformance suite per store trait, run against every backend: the
//! SQLite files and PostgreSQL (`DATABASE_URL`, a fresh schema per test).

mod admin;
mod aggregates;
mod events;
mod models;
mod search;

use std::sync::Arc;

use refract::{EventStore, ReadModelStore};

/// Opens fresh stores; the temp dir or schema lives as long as the test.
struct Fresh {
    _dir: Option<tempfile::TempDir>,
    _schema: Option<crate::common::pg::Schema>,
    url: String,
}

async fn sqlite(file: &str) -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join(file).display());
    Fresh { _dir: Some(dir), _schema: None, url }
}

async fn postgres() -> Fresh {
    let schema = crate::common::pg::fresh_schema().await;
    Fresh { _dir: None, url: schema.url.clone(), _schema: Some(schema) }
}

async fn events_store(fresh: &Fresh) -> Arc<dyn EventStore> {
    refract::open_events(&fresh.url).await.unwrap()
}

async fn models_store(fresh: &Fresh) -> Arc<dyn ReadModelStore> {
    refract::open_models(&fresh.url).await.unwrap()
}

/// Two handles on one read-model store, as two nodes sharing it.
async fn two_nodes(fresh: &Fresh) -> [Arc<dyn ReadModelStore>; 2] {
    [models_store(fresh).await, models_store(fresh).await]
}

/// Registers `sqlite::NAME` and `postgres::NAME` for each suite function.
macro_rules! conformance {
    ($($name:ident => $suite:path, $open:ident, $file:literal;)*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fresh = super::sqlite($file).await;
                    $suite(super::$open(&fresh).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fresh = super::postgres().await;
                    $suite(super::$open(&fresh).await).await;
                }
            )*
        }
    };
}

conformance! {
    admin_pause_and_reset => crate::conformance::admin::pause_and_reset, models_store, "models.db";
    events_read_stream => crate::conformance::admin::read_stream, events_store, "events.db";
    events_append_and_conflict => crate::conformance::events::append_and_conflict, events_store, "events.db";
    events_atomic_multi_stream_append => crate::conformance::events::atomic_multi_stream_append, events_store, "events.db";
    events_read_with_subscriptions => crate::conformance::events::read_with_subscriptions, events_store, "events.db";
    events_sparse_reads_over_a_long_range => crate::conformance::events::sparse_reads_over_a_long_range, events_store, "events.db";
    events_concurrent_appends_are_gapless => crate::conformance::events::concurrent_appends_are_gapless, events_store, "events.db";
    models_generation_lifecycle => crate::conformance::models::generation_lifecycle, models_store, "models.db";
    models_commit_is_atomic => crate::conformance::models::commit_is_atomic, models_store, "models.db";
    models_queries => crate::conformance::models::queries, models_store, "models.db";
    models_dead_letters => crate::conformance::models::dead_letters, models_store, "models.db";
    models_storage_names_cannot_collide => crate::conformance::models::storage_names_cannot_collide, models_store, "models.db";
    models_change_log_of_batched_commits => crate::conformance::models::change_log_of_batched_commits, models_store, "models.db";
    models_leases_fence_every_write => crate::conformance::models::leases_fence_every_write, two_nodes, "models.db";
    aggregates_match_independent_results => crate::conformance::aggregates::aggregates_match_independent_results, models_store, "models.db";
    aggregates_bad_input_is_refused => crate::conformance::aggregates::bad_aggregates_are_refused, models_store, "models.db";
    aggregates_reads_stop_at_the_time_limit => crate::conformance::aggregates::reads_stop_at_the_time_limit, models_store, "models.db";
    search_matches_independent_results => crate::conformance::search::search_matches_independent_results, models_store, "models.db";
    search_bad_input_is_refused => crate::conformance::search::bad_searches_are_refused, models_store, "models.db";
}

/// The event-store suite on JetStream (`NATS_URL`, a fresh stream per
/// test), which appends one event per call (see `Batches::OneEvent`).
mod jetstream {
    use std::sync::Arc;

    use super::events::{self, Batches};
    use crate::jetstream::FreshStream;
    use refract::EventStore;

    async fn store(fresh: &FreshStream) -> Arc<dyn EventStore> {
        refract::open_events(&fresh.url).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_append_and_conflict() {
        let fresh = FreshStream::new();
        events::append_and_conflict_in(store(&fresh).await, Batches::OneEvent).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_several_events_are_refused_whole() {
        let fresh = FreshStream::new();
        events::several_events_are_refused_whole(store(&fresh).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_read_with_subscriptions() {
        let fresh = FreshStream::new();
        events::read_with_subscriptions(store(&fresh).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_sparse_reads_over_a_long_range() {
        let fresh = FreshStream::new();
        events::sparse_reads_over_a_long_range_in(store(&fresh).await, Batches::OneEvent).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_concurrent_appends_are_gapless() {
        let fresh = FreshStream::new();
        events::concurrent_appends_are_gapless_in(store(&fresh).await, Batches::OneEvent).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_read_stream() {
        let fresh = FreshStream::new();
        crate::conformance::admin::read_stream(store(&fresh).await).await;
    }
}

/// Runs `sql` on the database behind `fresh`, as a foreign tool (or an
/// older refract) would, bypassing the store.
async fn raw_sql(fresh: &Fresh, statements: &[&str]) {
    use sqlx::{Connection, Executor};
    if let Some(path) = fresh.url.strip_prefix("sqlite://") {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}")).await.unwrap();
        for s in statements {
            conn.execute(sqlx::AssertSqlSafe(*s)).await.unwrap();
        }
    } else {
        let mut conn = sqlx::PgConnection::connect(&fresh.url).await.unwrap();
        for s in statements {
            conn.execute(sqlx::AssertSqlSafe(*s)).await.unwrap();
        }
    }
}

/// Checkpoint 0 means empty tables: a new generation starts empty even when
/// a stale table of its name exists (left by a foreign or older registry),
/// on every backend, both when a module is registered and on a rebuild.
async fn stale_tables_start_empty(fresh: Fresh) {
    let store = models_store(&fresh).await;
    raw_sql(
        &fresh,
        &[
            r#"CREATE TABLE "rm:p:g1:items" (id TEXT PRIMARY KEY, doc TEXT NOT NULL)"#,
            r#"INSERT INTO "rm:p:g1:items" (id, doc) VALUES ('ghost', '{"balance": 1}')"#,
            r#"CREATE TABLE "rm:p:g2:items" (id TEXT PRIMARY KEY, doc TEXT NOT NULL)"#,
            r#"INSERT INTO "rm:p:g2:items" (id, doc) VALUES ('ghost', '{"balance": 2}')"#,
        ],
    )
    .await;
    let r = store.register(&models::manifest("p"), "h1", "p.wasm").await.unwrap();
    assert_eq!((r.target.key.generation, r.target.checkpoint), (1, 0));
    assert_eq!(store.get_document("p", "items", "ghost").await.unwrap(), None, "registered generation is empty");
    let rebuilt = store.request_rebuild("p").await.unwrap();
    assert_eq!(rebuilt.key.generation, 2);
    store.activate(&rebuilt.key).await.unwrap();
    assert_eq!(store.get_document("p", "items", "ghost").await.unwrap(), None, "rebuilt generation is empty");
}

/// A store written by refract before collision-free names is migrated on
/// open: its tables are renamed and their documents kept.
async fn legacy_table_names_are_migrated(fresh: Fresh) {
    let store = models_store(&fresh).await;
    store.register(&models::manifest("p"), "h1", "p.wasm").await.unwrap();
    let mut changes = refract::ChangeSet::default();
    changes.collections.insert(
        "items".into(),
        refract::CollectionChanges { upserts: vec![("kept".into(), r#"{"balance": 7}"#.into())], deletes: vec![] },
    );
    store.commit(&refract::ModelKey { projection: "p".into(), generation: 1 }, &changes, 0, 5).await.unwrap();
    drop(store);
    // Put the store back as an older refract left it.
    raw_sql(&fresh, &[r#"ALTER TABLE "rm:p:g1:items" RENAME TO "rm_p_g1__items""#, "DELETE FROM refract_meta"]).await;
    let store = models_store(&fresh).await;
    assert_eq!(store.tables("p").await.unwrap(), ["rm:p:g1:items", "rm:p:g1:other"]);
    let doc: serde_json::Value =
        serde_json::from_str(&store.get_document("p", "items", "kept").await.unwrap().unwrap()).unwrap();
    assert_eq!(doc["balance"], 7);
    assert_eq!(store.projection("p").await.unwrap().checkpoint, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stale_tables_start_empty() {
    stale_tables_start_empty(sqlite("models.db").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stale_tables_start_empty() {
    stale_tables_start_empty(postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_legacy_table_names_are_migrated() {
    legacy_table_names_are_migrated(sqlite("models.db").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_legacy_table_names_are_migrated() {
    legacy_table_names_are_migrated(postgres().await).await;
}
