//! Test fixture: a well-formed component that targets `refract-test:other`
//! instead of `refract:projection/projector`, so the host must reject it.

wit_bindgen::generate!({
    path: "wit",
    world: "other",
});

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
