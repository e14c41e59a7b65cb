//! Keys in `entries`, one document per stream: `KeySet` creates or updates
//! it, `KeyRemoved` deletes it, and `KeyStamped` writes the wall-clock time
//! into it — the one non-deterministic thing a projection should not do,
//! which `refract verify` must catch.

use refract_sdk::{Context, Error, Event, Manifest, Projection};
use serde::{Deserialize, Serialize};

const ENTRIES: &str = "entries";

#[derive(Default)]
struct Kv;

#[derive(Default, Serialize, Deserialize)]
struct Entry {
    value: i64,
    /// How many times the key was set since it was last created.
    sets: u64,
    /// Nanoseconds since the Unix epoch when it was last stamped.
    #[serde(skip_serializing_if = "Option::is_none")]
    stamped_at: Option<u128>,
}

#[derive(Deserialize)]
struct KeySet {
    value: i64,
}

impl Projection for Kv {
    fn manifest() -> Manifest {
        Manifest::new("kv", "1.0.0")
            .event_types(["KeySet", "KeyRemoved", "KeyStamped"])
            .stream_prefix("key-")
            .collection(ENTRIES, ["value"])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        let id = event.stream_id.as_str();
        match event.event_type.as_str() {
            "KeySet" => {
                let KeySet { value } = event.payload()?;
                ctx.update(ENTRIES, id, |e: &mut Entry| {
                    e.value = value;
                    e.sets += 1;
                })
            }
            "KeyRemoved" => ctx.delete(ENTRIES, id),
            "KeyStamped" => {
                let now =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
                ctx.update(ENTRIES, id, |e: &mut Entry| e.stamped_at = Some(now))
            }
            _ => Ok(()),
        }
    }
}

refract_sdk::export!(Kv);
