//! What one plugin call may use: the CPU deadline (counted in epoch ticks), the memory
//! cap of an instance and the most findings an evaluation may return, and the
//! [`Limiter`] that enforces the memory cap in a store.

use std::time::Duration;

use wasmtime::ResourceLimiter;

use crate::config::PluginsConfig;

/// How often the engine's epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits every plugin call runs under.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PluginLimits {
    /// CPU-time budget of one call.
    pub deadline: Duration,
    /// Linear-memory cap of one instance, in bytes.
    pub memory_bytes: usize,
    /// Most findings one evaluation may return.
    pub max_findings: usize,
}

impl PluginLimits {
    /// The limits a `[plugins]` section sets.
    pub fn from_config(config: &PluginsConfig) -> Self {
        PluginLimits {
            deadline: config.deadline,
            memory_bytes: (config.memory_limit_mib as usize).saturating_mul(1 << 20),
            max_findings: config.max_findings,
        }
    }

    /// The deadline in epoch ticks (at least one).
    pub fn deadline_ticks(&self) -> u64 {
        (self.deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
    }
}

/// Caps memory, tables and instances of one store, and remembers whether the cap was hit.
#[derive(Debug)]
pub struct Limiter {
    memory_bytes: usize,
    /// Set when a memory growth was refused.
    pub memory_exceeded: bool,
    /// Linear memory granted so far (the largest memory's size).
    pub memory_in_use: usize,
}

impl Limiter {
    /// A limiter allowing `memory_bytes` of linear memory.
    pub fn new(memory_bytes: usize) -> Self {
        Limiter {
            memory_bytes,
            memory_exceeded: false,
            memory_in_use: 0,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            wasmtime::bail!(
                "memory growth to {desired} bytes refused: the limit is {} bytes",
                self.memory_bytes
            );
        }
        self.memory_in_use = self.memory_in_use.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        8
    }
}
