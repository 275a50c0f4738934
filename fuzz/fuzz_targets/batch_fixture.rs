//! Any text given to `vigil plugin test --batch` is parsed into a batch or refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::fixture::BatchFixture;

fuzz_target!(|text: &str| {
    if let Ok(fixture) = BatchFixture::parse(text, "fuzz.json") {
        let batch = fixture.to_batch();
        let _ = batch.points().count();
    }
});
