//! Test fixture: what a hostile plugin does to the host's memory. For each
//! `GetFlood` event it reads 64 distinct documents with the longest ids
//! the host accepts (each read is cached by the host); for each `LogFlood`
//! event it logs five 4 MiB messages. Used to measure the host's peak RSS
//! under both floods (BENCHMARKS.md).

use refract_sdk::{Context, Error, Event, LogLevel, Manifest, Projection};

#[derive(Default)]
struct Flood;

/// The host's longest document id, in bytes.
const ID_BYTES: usize = 512;

impl Projection for Flood {
    fn manifest() -> Manifest {
        Manifest::new("flood", "1.0.0").event_types(["GetFlood", "LogFlood"]).collection("items", [] as [&str; 0])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        match event.event_type.as_str() {
            "GetFlood" => {
                for i in 0..64 {
                    let prefix = format!("{}-{i}-", event.position);
                    let id = prefix.clone() + &"x".repeat(ID_BYTES - prefix.len());
                    let _: Option<serde_json::Value> = ctx.get("items", &id)?;
                }
            }
            _ => {
                let message = "y".repeat(4 << 20);
                for _ in 0..5 {
                    ctx.log(LogLevel::Info, &message);
                }
            }
        }
        Ok(())
    }
}

refract_sdk::export!(Flood);
