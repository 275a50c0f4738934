//! The wasmtime engine every plugin shares, its epoch ticker, and per-store limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, ResourceLimiter};

use super::bindings::AlertRule;
use super::host::PluginState;
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

/// Stops the epoch ticker thread when dropped.
#[derive(Debug)]
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The engine, the linker with every host import, and the limits: shared by all plugins.
pub struct PluginRuntime {
    pub(crate) cache: super::cache::CompileCache,
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<PluginState>,
    pub(crate) limits: PluginLimits,
    _ticker: Ticker,
}

impl PluginRuntime {
    /// Creates the engine (epoch interruption on) and links WASI (empty: no files,
    /// sockets, environment) and the vigil host interface.
    pub fn new(limits: PluginLimits) -> wasmtime::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.enable_incremental_compilation(Arc::new(
            super::function_cache::FunctionCache::default(),
        ))?;
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        AlertRule::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("vigil-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| wasmtime::format_err!("cannot start the epoch ticker thread: {e}"))?;

        Ok(PluginRuntime {
            cache: super::cache::CompileCache::disabled(),
            engine,
            linker,
            limits,
            _ticker: Ticker { stop },
        })
    }

    /// Caches compiled components in `dir` (none when `dir` is empty), at most `max_bytes`.
    pub fn with_cache_dir(mut self, dir: &std::path::Path, max_bytes: u64) -> Self {
        self.cache = if dir.as_os_str().is_empty() {
            super::cache::CompileCache::disabled()
        } else {
            super::cache::CompileCache::new(Some(dir.to_owned())).with_max_bytes(max_bytes)
        };
        self
    }

    /// The runtime a `[plugins]` section describes: its limits and compile cache.
    pub fn from_config(config: &PluginsConfig) -> wasmtime::Result<Self> {
        Ok(
            Self::new(PluginLimits::from_config(config))?.with_cache_dir(
                &config.cache_dir,
                config.cache_max_mib.saturating_mul(1 << 20),
            ),
        )
    }

    /// The limits plugins run under.
    pub fn limits(&self) -> PluginLimits {
        self.limits
    }
}
