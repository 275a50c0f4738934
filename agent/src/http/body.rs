//! Request bodies. No endpoint needs one, but a client may send one anyway: it is read
//! and thrown away within `[http] max_body_bytes` and `body_timeout`, so an oversized
//! body gets `413` and a body that trickles in gets `408`, instead of a reset or a
//! connection held open.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

/// Bytes past the limit still read before answering `413`: a client that sends a
/// moderately oversized body at once then reads the answer instead of a reset (closing
/// a socket with unread data resets it).
const DRAIN_EXTRA: u64 = 1024 * 1024;

/// The limits a body is read within.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Most bytes accepted.
    pub max_bytes: u64,
    /// Time to receive the whole body.
    pub timeout: Duration,
}

/// What reading a body found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No body, or one within the limits (read and discarded).
    Acceptable,
    /// Larger than `max_bytes` (by its `Content-Length` or as it streamed in).
    TooLarge,
    /// Not complete within the timeout.
    TooSlow,
}

/// Reads and discards `body` (of `declared` length, when the request said) within `limits`.
pub async fn consume(mut body: Incoming, declared: Option<u64>, limits: BodyLimits) -> Verdict {
    if body.is_end_stream() {
        return Verdict::Acceptable;
    }
    let drain_limit = limits.max_bytes.saturating_add(DRAIN_EXTRA);
    if declared.is_some_and(|length| length > drain_limit) {
        // Not read at all: a client waiting for `100 Continue` never sends it.
        return Verdict::TooLarge;
    }
    let deadline = Instant::now() + limits.timeout;
    let mut received: u64 = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) if received > limits.max_bytes => return Verdict::TooLarge,
            Err(_) => return Verdict::TooSlow,
            // The stream ended (or broke off): judge what arrived.
            Ok(None | Some(Err(_))) => break,
            Ok(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            received = received.saturating_add(data.len() as u64);
        }
        if received > drain_limit {
            break;
        }
    }
    if received > limits.max_bytes || declared.is_some_and(|length| length > limits.max_bytes) {
        Verdict::TooLarge
    } else {
        Verdict::Acceptable
    }
}
