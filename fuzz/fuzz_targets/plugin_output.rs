//! Everything the host reads back from a plugin: what `describe` returns (validated as
//! at load, then its interests), the findings of `evaluate` (validated, then through the
//! alert state machine and out as JSON) and the key/value state it writes. Nothing a
//! plugin returns may panic the host. The body is `vigil::fuzzing::plugin_output`, which
//! `cargo test` also runs on the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vigil::fuzzing::plugin_output(data));
