//! The versions of the projection contract: a component built against the
//! frozen `refract:projection@0.1.0` world still loads and projects, and a
//! component of the current world reports the search fields it declares.

use crate::common;

use common::cli::{refract, succeed};
use common::*;
use refract::{CollectionSpec, PluginRuntime};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// `refract run` over imported bank events, with only the 0.1.0 build of
/// account-summary in its plugins folder: every account comes out as the
/// test computes it. The fixture reads its documents back through the
/// 0.1.0 `get` import across batches, so a broken import shows as wrong
/// balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_0_component_still_loads_and_projects_with_refract_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugins = plugins_dir(dir.path(), &["account_summary_v0_1"]);
    let events = bank_events(40, 2_000, 11);
    let file = dir.path().join("events.jsonl");
    write_jsonl(&file, &events);
    succeed(refract(&data).arg("import").arg(&file));
    succeed(
        refract(&data)
            .args(["run", "--exit-when-caught-up", "--no-http", "--batch-size", "100", "--plugins"])
            .arg(&plugins),
    );

    let status = succeed(refract(&data).args(["status"]));
    let line = status.lines().find(|l| l.starts_with("account-summary-v0-1")).unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains("2000"), "caught up to the last event: {line}");

    let stores = Stores::open(&data).await;
    let docs = all_documents(stores.models_dyn().as_ref(), "account-summary-v0-1", "accounts").await;
    let expected = expected_accounts(&events);
    assert_eq!(docs.len(), expected.len());
    assert_accounts(&docs, &expected);
}

/// The runtime converts both worlds to one manifest: a 0.1.0 collection has
/// no search fields, a 0.2.0 one (order-summary, built with the SDK's
/// `.search`) has the ones it declared.
#[test]
fn each_world_version_loads_into_one_manifest_with_its_search_fields() {
    let runtime = PluginRuntime::new().unwrap();
    let old = runtime.load(&plugin("account_summary_v0_1")).unwrap();
    assert_eq!(old.wit_version(), "0.1.0");
    assert_eq!(
        old.manifest().collections,
        [CollectionSpec {
            name: "accounts".into(),
            indexes: strings(&["balance", "owner", "status", "transactions"]),
            search: vec![],
        }]
    );

    let current = runtime.load(&plugin("order_summary")).unwrap();
    assert_eq!(current.wit_version(), "0.2.0");
    assert_eq!(
        current.manifest().collections,
        [
            CollectionSpec {
                name: "orders".into(),
                indexes: strings(&["customer", "status", "total"]),
                search: strings(&["customer"]),
            },
            CollectionSpec {
                name: "customers".into(),
                indexes: strings(&["order_count", "total_spent"]),
                search: vec![],
            },
        ]
    );
}
