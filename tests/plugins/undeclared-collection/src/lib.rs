//! Test fixture: writes to a collection its manifest does not declare
//! (`undeclared collection`). The SDK refuses such writes itself, so this
//! fixture implements the world with wit-bindgen directly.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "projector",
});

use exports::refract::projection::projection::{Change, Event, Guest, Manifest, ProjectionError};
use refract::projection::types::{CollectionSpec, Document};

struct UndeclaredCollection;

impl Guest for UndeclaredCollection {
    fn describe() -> Manifest {
        Manifest {
            name: "undeclared-collection".into(),
            version: "1.0.0".into(),
            event_types: Vec::new(),
            stream_prefixes: Vec::new(),
            collections: vec![CollectionSpec { name: "mine".into(), indexes: Vec::new(), search: Vec::new() }],
        }
    }

    fn handle(batch: Vec<Event>) -> Result<Vec<Change>, ProjectionError> {
        // `accounts` belongs to another projection; it must stay out of
        // reach, for reading as for writing.
        for e in &batch {
            match refract::projection::host::get("accounts", &e.stream_id) {
                Err(refract::projection::types::GetError::UnknownCollection(_)) => {}
                other => {
                    return Err(ProjectionError {
                        position: e.position,
                        message: format!("get reached another projection's collection: {other:?}"),
                    });
                }
            }
        }
        Ok(batch
            .into_iter()
            .map(|e| Change::Upsert(Document { collection: "accounts".into(), id: e.stream_id, body: "{}".into() }))
            .collect())
    }
}

export!(UndeclaredCollection);
