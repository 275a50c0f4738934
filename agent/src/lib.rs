//! vigil: a WebAssembly-extensible observability agent.
//!
//! Data flows one way: collectors produce [`model::Batch`]es, alert-rule plugins
//! ([`plugin`]) turn them into findings, the [`alert`] state machine turns findings
//! into alert events, and [`export`] sends batches, events and self-telemetry over OTLP.
//! [`pipeline`] turns batches into exports and alert events, [`supervisor`] runs the
//! tasks and applies reloads ([`reload`] says what a new config changes), [`status`]
//! collects what the stages report, and [`http`] serves health, status and `/metrics`.
//! See docs/architecture.md.

pub mod alert;
pub mod backoff;
pub mod check;
pub mod collect;
pub mod config;
pub mod export;
pub mod fixture;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod model;
pub mod pipeline;
pub mod plugin;
pub mod receive;
pub mod reload;
pub mod resident;
pub mod rule_test;
pub mod scaffold;
pub mod secret;
pub mod service;
pub mod status;
pub mod supervisor;
pub mod sync;
pub mod telemetry;
pub mod tls;
pub mod tuning;
pub mod watch;
