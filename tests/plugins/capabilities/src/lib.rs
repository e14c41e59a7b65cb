//! Test fixture: tries to reach what projections must not. The event type
//! picks the attempt: `ReadFile`, `ReadEnv` or `OpenSocket`. Every attempt
//! must fail; the plugin then returns an error (`capability denied`). Were
//! one to succeed, it would write an `escaped` document for the test to see.
//! `ReadArgs` succeeds quietly unless the host passed arguments.

use refract_sdk::{Context, Error, Event, Manifest, Projection};

#[derive(Default)]
struct Capabilities;

impl Projection for Capabilities {
    fn manifest() -> Manifest {
        Manifest::new("capabilities", "1.0.0").collection("escaped", ["what"])
    }

    fn handle(&mut self, event: &Event, ctx: &mut Context) -> Result<(), Error> {
        let attempt = match event.event_type.as_str() {
            "ReadFile" => std::fs::read_to_string("/etc/hostname").map(|_| ()).map_err(|e| e.to_string()),
            "ReadEnv" => match std::env::var("PATH") {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            "ReadArgs" if std::env::args().count() == 0 => return Ok(()),
            "ReadArgs" => Ok(()),
            "OpenSocket" => std::net::TcpStream::connect("127.0.0.1:9").map(|_| ()).map_err(|e| e.to_string()),
            _ => return Ok(()),
        };
        match attempt {
            Ok(()) => ctx.upsert("escaped", &event.event_type, &serde_json::json!({ "what": event.event_type })),
            Err(e) => Err(Error::msg(format!("{} failed: {e}", event.event_type))),
        }
    }
}

refract_sdk::export!(Capabilities);
