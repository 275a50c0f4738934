//! Any text given as a config is parsed, validated and the OTel variables applied
//! without a panic: it is accepted or refused with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil::config::Config;

fuzz_target!(|text: &str| {
    if let Ok(mut config) = Config::parse(text, "fuzz.toml") {
        let _ = config.apply_otel_env(|_| None);
        let _ = config.plugins.settings_json("threshold");
        let _ = config.export.otlp.effective_endpoint();
    }
});
