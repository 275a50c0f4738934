//! The wasmtime engine every plugin shares and its epoch ticker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

use super::bindings::{v0_1, v0_2};
use super::host::PluginState;
use super::limits::{EPOCH_TICK, PluginLimits};
use crate::config::PluginsConfig;

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
    cache: super::cache::CompileCache,
    engine: Engine,
    linker: Linker<PluginState>,
    limits: PluginLimits,
    _ticker: Ticker,
}

impl PluginRuntime {
    /// Creates the engine (epoch interruption on) and links WASI (empty: no files,
    /// sockets, environment) and the vigil host interface of every accepted contract version.
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
        v0_2::AlertRule::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
        v0_1::AlertRule::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;

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

    /// The engine every plugin is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker holding WASI and the vigil host interface.
    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    /// The compile cache (by content hash).
    pub fn cache(&self) -> &super::cache::CompileCache {
        &self.cache
    }
}
