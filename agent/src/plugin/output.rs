//! What a plugin writes to its stdout and stderr: captured in memory, capped per call,
//! and handed to the host after each call (logged at debug, shown by `vigil plugin test`,
//! and quoted in a trap's error).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::sync::LockExt;

/// Most bytes of output kept per call; the rest is counted and dropped.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// The bytes written so far and how many were dropped past the cap.
#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

/// One plugin instance's stdout and stderr (both streams go to the same buffer, in order).
#[derive(Debug, Clone, Default)]
pub struct GuestOutput {
    captured: Arc<Mutex<Captured>>,
}

impl GuestOutput {
    /// Takes what was written since the last call, as text (invalid UTF-8 replaced), with a
    /// note of how much was dropped; `None` when nothing was written.
    pub fn take(&self) -> Option<String> {
        let captured = std::mem::take(&mut *self.captured.locked_as("plugin output"));
        if captured.bytes.is_empty() && captured.dropped == 0 {
            return None;
        }
        let mut text = String::from_utf8_lossy(&captured.bytes).into_owned();
        if captured.dropped > 0 {
            text.push_str(&format!(
                "\n[{} more bytes dropped: the limit is {MAX_OUTPUT_BYTES} per call]",
                captured.dropped
            ));
        }
        Some(text)
    }

    fn append(&self, bytes: &[u8]) {
        let mut captured = self.captured.locked_as("plugin output");
        let room = MAX_OUTPUT_BYTES.saturating_sub(captured.bytes.len());
        let kept = bytes.len().min(room);
        captured.bytes.extend_from_slice(&bytes[..kept]);
        captured.dropped += bytes.len() - kept;
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: output past the cap is dropped, never refused (a refusal would
        // make some guests spin or trap).
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_and_taken_once() {
        let output = GuestOutput::default();
        assert_eq!(output.take(), None);
        output.append(b"hello ");
        output.append(b"world");
        assert_eq!(output.take().as_deref(), Some("hello world"));
        assert_eq!(output.take(), None);
        output.append(&vec![b'x'; MAX_OUTPUT_BYTES + 10]);
        let text = output.take().unwrap();
        assert!(text.starts_with(&"x".repeat(MAX_OUTPUT_BYTES)));
        assert!(text.ends_with("[10 more bytes dropped: the limit is 16384 per call]"));
    }
}
