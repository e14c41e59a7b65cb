//! Test fixture: a replica of synced tables. Every `RowUpserted` event's
//! payload (the row) becomes the document `<stream id>` of the collection
//! `rows`, and every `RowDeleted` removes it, so the read model is the
//! table as the source saw it, row for row.

use refract_sdk::{Context, Error, Event, Manifest, Projection};

#[derive(Default)]
struct Copy;

impl Projection for Copy {
    fn manifest() -> Manifest {
        Manifest::new("copy", "1.0.0").event_types(["RowUpserted", "RowDeleted"]).collection("rows", ["id"])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        if event.event_type == "RowDeleted" {
            return ctx.delete("rows", &event.stream_id);
        }
        let row: serde_json::Value = event.payload()?;
        ctx.upsert("rows", &event.stream_id, &row)
    }
}

refract_sdk::export!(Copy);
