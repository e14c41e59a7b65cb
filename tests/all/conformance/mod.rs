//! One conformance suite per store trait, run against every backend: the
//! SQLite files and PostgreSQL (`DATABASE_URL`, a fresh schema per test).

mod events;
mod models;

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
    events_append_and_conflict => crate::conformance::events::append_and_conflict, events_store, "events.db";
    events_atomic_multi_stream_append => crate::conformance::events::atomic_multi_stream_append, events_store, "events.db";
    events_read_with_subscriptions => crate::conformance::events::read_with_subscriptions, events_store, "events.db";
    events_sparse_reads_over_a_long_range => crate::conformance::events::sparse_reads_over_a_long_range, events_store, "events.db";
    events_concurrent_appends_are_gapless => crate::conformance::events::concurrent_appends_are_gapless, events_store, "events.db";
    models_generation_lifecycle => crate::conformance::models::generation_lifecycle, models_store, "models.db";
    models_commit_is_atomic => crate::conformance::models::commit_is_atomic, models_store, "models.db";
    models_queries => crate::conformance::models::queries, models_store, "models.db";
    models_dead_letters => crate::conformance::models::dead_letters, models_store, "models.db";
}
