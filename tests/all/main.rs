//! Every integration test of the agent in one binary (linked once, like wasmtime's
//! `tests/all`): end-to-end tests that run the real `vigil` binary against real
//! servers, plugins built from source and the testkit's OTLP receiver, plus the replay
//! of the fuzz corpora. Run one module with `cargo test --test all e2e_reload::`.

mod e2e_advisor;
mod e2e_alertmanager;
mod e2e_big_plugin;
mod e2e_cli;
mod e2e_compile;
mod e2e_contract;
mod e2e_export;
mod e2e_export_queue;
mod e2e_first_minute;
mod e2e_languages;
mod e2e_otel_env;
mod e2e_plugin_test;
mod e2e_policies;
mod e2e_prometheus;
mod e2e_receive;
mod e2e_reload;
mod e2e_sandbox;
mod e2e_servers;
mod e2e_status;
mod e2e_tls;
mod e2e_tuning;
mod fuzz_replay;
