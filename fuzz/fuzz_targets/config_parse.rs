//! Any text given as a config is parsed, validated and the OTel variables applied
//! without a panic: it is accepted or refused with an error. The body is
//! `vigil::fuzzing::config_parse`, which `cargo test` also runs on the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vigil::fuzzing::config_parse(data));
