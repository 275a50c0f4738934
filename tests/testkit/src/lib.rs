//! Test support for vigil's end-to-end tests and benchmarks.
//!
//! - [`plugins`]: paths of the plugin components built from `plugins/` by `build.rs`.
//! - [`otel_sdk`]: an application sending OTLP metrics with the official OpenTelemetry
//!   Python SDK (a virtualenv made once, packages pinned), driven by the test.
//! - [`otlp`]: an in-process OTLP receiver (gRPC and HTTP/protobuf) built on the
//!   server side of `opentelemetry-proto`, with helpers to read what arrived.
//! - [`certs`]: a test CA, server and client certificates made with `rcgen`, as PEM files
//!   and rustls configs (the OTLP receivers serve TLS with them: `grpc_tls`, `http_tls`).
//! - [`agent`]: writing configs and running the `vigil` binary.
//! - [`alertmanager`]: a real Prometheus Alertmanager started, stopped and queried by the test.
//! - [`http`]: requests to the agent's status endpoint.
//! - [`host`]: facts about this machine and processes from `/proc`.
//! - [`guest`]: Python, JavaScript and C plugins built from `plugins/` by `plugins/build.sh`
//!   (one function for every language: [`guest::plugin`]); [`python`] is its Python shorthand.
//! - [`prometheus`]: a Python application serving `/metrics` with the official `prometheus_client`.
//! - [`postgres`]: [`postgres::PrivatePostgres`], a PostgreSQL cluster of a test's own.
//! - [`servers`]: the machine's Redis, PostgreSQL and MariaDB: settings read, and guards
//!   that put a changed setting back on drop.
//! - [`silent`]: a TCP server that accepts and never answers (a hung receiver or server).

pub mod agent;
pub mod alertmanager;
pub mod certs;
pub mod guest;
pub mod host;
pub mod http;
pub mod otel_sdk;
pub mod otlp;
pub mod postgres;
pub mod prometheus;
pub mod python;
pub mod redis;
pub mod servers;
pub mod silent;

/// Plugin components built from source.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}
