//! Any text given to `vigil plugin test --batch` is parsed into a batch or refused. The
//! body is `vigil::fuzzing::batch_fixture`, which `cargo test` also runs on the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vigil::fuzzing::batch_fixture(data));
