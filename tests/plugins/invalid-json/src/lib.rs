//! Test fixture: returns a document body that is not JSON (`invalid
//! document`). The SDK only writes serialized values, so this fixture
//! implements the world with wit-bindgen directly.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "projector",
});

use exports::refract::projection::projection::{Change, Event, Guest, Manifest, ProjectionError};
use refract::projection::types::{CollectionSpec, Document};

struct InvalidJson;

impl Guest for InvalidJson {
    fn describe() -> Manifest {
        Manifest {
            name: "invalid-json".into(),
            version: "1.0.0".into(),
            event_types: Vec::new(),
            stream_prefixes: Vec::new(),
            collections: vec![CollectionSpec { name: "docs".into(), indexes: Vec::new(), search: Vec::new() }],
        }
    }

    fn handle(batch: Vec<Event>) -> Result<Vec<Change>, ProjectionError> {
        Ok(batch
            .into_iter()
            .map(|e| Change::Upsert(Document { collection: "docs".into(), id: e.stream_id, body: "{not json".into() }))
            .collect())
    }
}

export!(InvalidJson);
