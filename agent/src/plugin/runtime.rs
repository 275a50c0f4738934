//! The wasmtime engine every plugin shares, its epoch ticker, and where components
//! are compiled (in-process or in a child, see [`super::compile`]).

use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings::{v0_1, v0_2, v0_3, v0_4};
use super::cache::{CacheOutcome, CompiledEntryError};
use super::compile::{CompileError, Compiler};
use super::epoch::EpochTicker;
use super::host::PluginState;
use super::limits::PluginLimits;
use crate::config::PluginsConfig;

/// The engine, the linker with every host import, and the limits: shared by all plugins.
pub struct PluginRuntime {
    cache: super::cache::CompileCache,
    compiler: Compiler,
    engine: Engine,
    linker: Linker<PluginState>,
    limits: PluginLimits,
    ticker: EpochTicker,
}

impl PluginRuntime {
    /// Creates the engine (epoch interruption on) and links WASI (empty: no files,
    /// sockets, environment) and the vigil host interface of every accepted contract version.
    /// Components are compiled in-process until [`PluginRuntime::with_compiler`] says otherwise.
    pub fn new(limits: PluginLimits) -> wasmtime::Result<Self> {
        let engine = Engine::new(&agent_config()?)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        // A tuning-policy world imports the very interfaces its version's alert-rule world
        // does (the same `types` and `host`): linking them once serves both.
        v0_4::AlertRule::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
        v0_3::AlertRule::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
        v0_2::AlertRule::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
        v0_1::AlertRule::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;

        let ticker = EpochTicker::start(&engine)
            .map_err(|e| wasmtime::format_err!("cannot start the epoch ticker thread: {e}"))?;

        Ok(PluginRuntime {
            cache: super::cache::CompileCache::disabled(),
            compiler: Compiler::InProcess,
            engine,
            linker,
            limits,
            ticker,
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

    /// Compiles components with `compiler`.
    pub fn with_compiler(mut self, compiler: Compiler) -> Self {
        self.compiler = compiler;
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

    /// The epoch ticker plugin calls mark themselves in flight with (their deadlines
    /// count its ticks).
    pub fn ticker(&self) -> &EpochTicker {
        &self.ticker
    }

    /// The linker holding WASI and the vigil host interface.
    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    /// The compile cache (by content hash).
    pub fn cache(&self) -> &super::cache::CompileCache {
        &self.cache
    }

    /// The compiled component for `bytes`: from the compile cache, else compiled where
    /// this runtime's [`Compiler`] says. Errors are [`CompileError`]s.
    pub fn component(&self, bytes: &[u8]) -> wasmtime::Result<(Component, CacheOutcome)> {
        let compiled = match &self.compiler {
            Compiler::InProcess => {
                self.cache
                    .component(&self.engine, bytes)
                    .map_err(|e| CompileError::Invalid {
                        reason: format!("{e:#}").replace('\n', " "),
                    })
            }
            Compiler::Child(child) => self
                .cache
                .component_compiled_by(&self.engine, bytes, |entry| child.compile(bytes, entry))
                .map_err(|e| match e {
                    CompiledEntryError::Compile(e) => e,
                    CompiledEntryError::Load(reason) => CompileError::Load(reason),
                }),
        };
        Ok(compiled?)
    }
}

/// The engine configuration the agent and its compiler child share: one definition, so
/// what the child compiles is what the agent can load (the compile cache's entry names
/// carry the engine's compatibility hash, and wasmtime checks it again on load).
fn engine_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    config
}

/// The agent's engine configuration: [`engine_config`] with Cranelift's compiled
/// functions kept in memory for the next version of a plugin (worth it in a long-lived
/// process that compiles; it changes nothing in what is compiled).
pub fn agent_config() -> wasmtime::Result<wasmtime::Config> {
    let mut config = engine_config();
    config.enable_incremental_compilation(Arc::new(
        super::function_cache::FunctionCache::default(),
    ))?;
    Ok(config)
}

/// The engine configuration of the compiler child: [`engine_config`] compiling one
/// function at a time. Cranelift's parallel compilation keeps a function in flight (and
/// a malloc arena) per core; one at a time lowers the child's peak memory, which adds
/// to the agent's at a cold start, for a longer wall time of the same CPU time. It
/// changes nothing in what is compiled.
pub fn compiler_child_config() -> wasmtime::Config {
    let mut config = engine_config();
    config.parallel_compilation(false);
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{DefaultHasher, Hash, Hasher};

    fn compatibility(engine: &Engine) -> u64 {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn the_compiler_childs_engine_makes_what_the_agents_loads() {
        let agent = Engine::new(&agent_config().unwrap()).unwrap();
        let child = Engine::new(&compiler_child_config()).unwrap();
        assert_eq!(compatibility(&agent), compatibility(&child));
        let bytes = wat::parse_str("(component)").unwrap();
        let artifact = child.precompile_component(&bytes).unwrap();
        // SAFETY: `artifact` was just produced by wasmtime for a compatible engine.
        assert!(unsafe { Component::deserialize(&agent, &artifact) }.is_ok());
    }
}
