//! The WebAssembly plugin runtime: alert-rule and tuning-policy components run under
//! wasmtime, sandboxed (no files, sockets or environment), with a CPU deadline and a
//! memory cap per call.
//!
//! - [`limits`]: the deadline, memory cap and findings cap of a call, and the store limiter.
//! - [`runtime`]: the engine, the linker and where components are compiled.
//! - [`epoch`]: the epoch ticker that counts plugin deadlines, running only during calls.
//! - [`bindings`]: the contract versions the agent accepts (0.4.0 and 0.3.0 alert rules and
//!   tuning policies, 0.2.0 alert rules, and 0.1.0 alert rules; [`legacy`] adapts the old ones).
//! - [`host`]: the `vigil:plugin/host` functions plugins import; [`output`]: their captured stdout/stderr.
//! - [`instance`]: one loaded plugin and its long-lived instance.
//! - [`convert`]: batches into WIT values (a series table only when it changed), findings back out (validated).
//! - [`proposal`]: firing alerts and settings into WIT values, a policy's proposals back out (validated).
//! - [`compile`]: compiling components in a short-lived child process (or in-process).
//! - [`cache`], [`function_cache`]: compiled components and functions reused across runs and versions.
//! - [`evaluation`]: what the set reports: an evaluation's outcome (findings or
//!   proposals), what policies are shown beside a batch, a plugin's status.
//! - [`slot`]: one installed version of a plugin, under its own lock, with its health.
//! - [`lane`]: the batches waiting for one plugin, drained by one worker per plugin.
//! - [`registry`]: every plugin of a directory, published lock-free and evaluated side by side.

pub mod bindings;
pub mod cache;
pub mod compile;
pub mod convert;
pub mod epoch;
pub mod evaluation;
pub mod function_cache;
pub mod host;
pub mod instance;
pub mod lane;
pub mod legacy;
pub mod limits;
pub mod output;
pub mod proposal;
pub mod registry;
pub mod runtime;
pub mod slot;

use std::path::PathBuf;

pub use compile::{ChildCompiler, Compiler};
pub use evaluation::{Evaluation, Output, PluginKind, PluginStatus, PolicyInputs};
pub use instance::{PluginInfo, PluginInstance};
pub use limits::PluginLimits;
pub use registry::PluginRegistry;
pub use runtime::PluginRuntime;

/// Why a plugin file could not be loaded. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {path}: cannot read the file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Compiling failed; `reason` says why and what to do ([`compile::CompileError`]).
    #[error("plugin {path}: {reason}")]
    Compile { path: PathBuf, reason: String },
    #[error(
        "plugin {path}: does not implement the vigil:plugin/alert-rule world or the vigil:plugin/tuning-policy world of a contract version the agent accepts (alert-rule: 0.4.0, 0.3.0, 0.2.0, 0.1.0; tuning-policy: 0.4.0, 0.3.0): {reason}; generate its bindings from the agent's wit/ directory (`vigil plugin versions` lists what it accepts)"
    )]
    WrongWorld { path: PathBuf, reason: String },
    #[error("plugin {path}: failed to start: {reason}")]
    Instantiate { path: PathBuf, reason: String },
    #[error("plugin {path}: describe() failed: {reason}")]
    Describe { path: PathBuf, reason: String },
}

impl LoadError {
    /// Short cause label for self-telemetry.
    pub fn cause(&self) -> &'static str {
        match self {
            LoadError::Read { .. } => "read",
            LoadError::Compile { .. } => "compile",
            LoadError::WrongWorld { .. } => "wrong-world",
            LoadError::Instantiate { .. } => "instantiate",
            LoadError::Describe { .. } => "describe",
        }
    }
}

/// Why one evaluation by a plugin failed. The plugin is skipped for that batch only.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("plugin {plugin}: exceeded its CPU deadline of {deadline_ms} ms")]
    Deadline { plugin: String, deadline_ms: u128 },
    #[error("plugin {plugin}: exceeded its memory limit of {limit_mib} MiB")]
    Memory { plugin: String, limit_mib: u64 },
    #[error("plugin {plugin}: trapped: {reason}")]
    Trap { plugin: String, reason: String },
    #[error("plugin {plugin}: returned invalid output: {reason}")]
    InvalidOutput { plugin: String, reason: String },
    #[error("plugin {plugin}: reported an error: {reason}")]
    Reported { plugin: String, reason: String },
    #[error("plugin {plugin}: could not be restarted after a failure: {reason}")]
    Restart { plugin: String, reason: String },
    /// The agent called the plugin wrongly (e.g. `evaluate` on a tuning policy): a bug in
    /// the agent, not the plugin's fault.
    #[error("plugin {plugin}: internal error in the agent: {reason}")]
    Internal { plugin: String, reason: String },
}

impl EvalError {
    /// Short cause label for self-telemetry.
    pub fn cause(&self) -> &'static str {
        match self {
            EvalError::Deadline { .. } => "deadline",
            EvalError::Memory { .. } => "memory",
            EvalError::Trap { .. } => "trap",
            EvalError::InvalidOutput { .. } => "invalid-output",
            EvalError::Reported { .. } => "plugin-error",
            EvalError::Restart { .. } => "restart",
            EvalError::Internal { .. } => "internal",
        }
    }
}
