//! Everything the host reads back from a plugin: what `describe` returns (validated as
//! at load, then its interests), the findings of `evaluate` (validated, then through the
//! alert state machine and out as JSON), the key/value state it writes, and a tuning
//! policy's proposals (validated as the host does, then previewed by the tuning gate of an
//! offline engine, no server touched). Nothing a plugin returns may panic the host. The body is `vigil::fuzzing::plugin_output`, which
//! `cargo test` also runs on the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vigil::fuzzing::plugin_output(data));
