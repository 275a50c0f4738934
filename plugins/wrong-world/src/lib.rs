//! Test fixture: a valid component built for a world that is not a vigil plugin world.

wit_bindgen::generate!({ world: "other", path: "wit" });

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
