//! Export of batches, alert events and self-telemetry. The exporter knows nothing
//! about plugins: it sees only [`Batch`]es and [`AlertEvent`]s.

pub mod alertmanager;
pub mod debug;
pub mod otlp;
pub mod proto;
pub mod queue;
pub mod start_time;
pub mod store;
pub mod transport;

pub use otlp::{ExportStats, OtlpExporter};

/// Why export could not be set up or flushed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot set up the OTLP {signal} exporter for {endpoint}: {reason}")]
    Setup {
        signal: &'static str,
        endpoint: String,
        reason: String,
    },
    #[error(
        "OTLP {signal} export to {endpoint} failed: {reason} (is a collector listening there? the data stays queued and is retried)"
    )]
    Send {
        signal: &'static str,
        endpoint: String,
        reason: String,
    },
}
