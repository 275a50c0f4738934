//! Export of batches, alert events and self-telemetry. The exporter knows nothing
//! about plugins: it sees only [`Batch`]es and [`AlertEvent`]s.

pub mod alertmanager;
pub mod debug;
pub mod gzip;
pub mod otlp;
pub mod proto;
pub mod queue;
pub mod start_time;
pub mod store;
pub mod transport;
pub mod wire;

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

/// `error` and its causes, `: `-separated (reqwest and tonic put the TLS or connection
/// problem in a cause, not in the top error's text).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
