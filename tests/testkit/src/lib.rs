//! Test support for vigil's end-to-end tests and benchmarks.
//!
//! - [`plugins`]: paths of the plugin components built from `plugins/` by `build.rs`.
//! - [`otlp`]: an in-process OTLP receiver (gRPC and HTTP/protobuf) built on the
//!   server side of `opentelemetry-proto`, with helpers to read what arrived.
//! - [`agent`]: writing configs and running the `vigil` binary.
//! - [`http`]: requests to the agent's status endpoint.

pub mod agent;
pub mod http;
pub mod otlp;

/// Plugin components built from source.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}
