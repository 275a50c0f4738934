//! The `vigil:plugin/host` interface (every contract version): what a plugin may ask of
//! the agent, and the per-instance state behind it.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{v0_1, v0_2, v0_3, v0_4};
use super::limits::Limiter;
use super::output::GuestOutput;

/// Longest log message kept; the rest is cut.
pub const MAX_LOG_BYTES: usize = 4096;
/// Longest state key.
pub const MAX_STATE_KEY_BYTES: usize = 256;
/// Total bytes of keys and values one plugin may keep in its state.
pub const STATE_QUOTA_BYTES: usize = 1 << 20;

/// A plugin's key/value state. Lives in the host so it outlives instance restarts.
#[derive(Debug, Default, Clone)]
pub struct PluginKv {
    entries: HashMap<String, Vec<u8>>,
    bytes: usize,
}

impl PluginKv {
    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Vec<u8>> {
        self.entries.get(key)
    }

    /// Stores `value` under `key` if the key and quota allow it.
    pub fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if key.len() > MAX_STATE_KEY_BYTES {
            return Err(format!(
                "state key is {} bytes; the limit is {MAX_STATE_KEY_BYTES}",
                key.len()
            ));
        }
        let old = self.entries.get(&key).map_or(0, |v| key.len() + v.len());
        let new_total = self.bytes - old + key.len() + value.len();
        if new_total > STATE_QUOTA_BYTES {
            return Err(format!(
                "state would grow to {new_total} bytes; the quota is {STATE_QUOTA_BYTES}"
            ));
        }
        self.bytes = new_total;
        self.entries.insert(key, value);
        Ok(())
    }
}

/// Cuts `text` to at most `max_bytes` (at a character boundary) and marks the cut with
/// ` [cut]`; shorter text is left alone.
pub fn cut_to(text: &mut String, max_bytes: usize) {
    if text.len() > max_bytes {
        text.truncate(text.floor_char_boundary(max_bytes));
        text.push_str(" [cut]");
    }
}

/// Everything a plugin's store holds: its identity, settings, state, limits and a WASI
/// context that grants nothing but captured stdout/stderr.
pub struct PluginState {
    plugin: String,
    settings_json: String,
    kv: PluginKv,
    limiter: Limiter,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl PluginState {
    /// State for plugin `plugin` with its settings (JSON), prior key/value state and memory cap.
    /// The WASI context grants nothing: no preopened directories, environment, arguments or
    /// network; stdout and stderr go to `output`.
    pub fn new(
        plugin: String,
        settings_json: String,
        kv: PluginKv,
        memory_bytes: usize,
        output: GuestOutput,
    ) -> Self {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(output.clone())
            .stderr(output)
            .build();
        PluginState {
            plugin,
            settings_json,
            kv,
            limiter: Limiter::new(memory_bytes),
            wasi,
            table: ResourceTable::new(),
        }
    }
}

impl PluginState {
    /// The store's memory limiter (what the store's `limiter` callback hands wasmtime).
    pub fn limiter_mut(&mut self) -> &mut Limiter {
        &mut self.limiter
    }

    /// The store's memory limiter, to read what it granted or refused.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// The key/value state, handed on when the store is dropped.
    pub fn into_kv(self) -> PluginKv {
        self.kv
    }

    /// Logs a plugin's message at `level`, cut to [`MAX_LOG_BYTES`].
    fn log_message(&self, level: tracing::Level, mut message: String) {
        cut_to(&mut message, MAX_LOG_BYTES);
        let plugin = self.plugin.as_str();
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
        }
    }

    fn now_ns() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Implements one contract version's `host` interface on [`PluginState`]; the versions
/// differ only in their generated types. (A tuning-policy world shares its alert rule's
/// interfaces, and 0.3.0 and 0.2.0 share 0.4.0's `types`, so none needs more.)
macro_rules! host_interface {
    ($version:ident) => {
        impl $version::vigil::plugin::host::Host for PluginState {
            fn log(&mut self, level: $version::vigil::plugin::host::LogLevel, message: String) {
                use $version::vigil::plugin::host::LogLevel;
                let level = match level {
                    LogLevel::Trace => tracing::Level::TRACE,
                    LogLevel::Debug => tracing::Level::DEBUG,
                    LogLevel::Info => tracing::Level::INFO,
                    LogLevel::Warn => tracing::Level::WARN,
                    LogLevel::Error => tracing::Level::ERROR,
                };
                self.log_message(level, message);
            }

            fn config(&mut self) -> String {
                self.settings_json.clone()
            }

            fn state_get(&mut self, key: String) -> Option<Vec<u8>> {
                self.kv.get(&key).cloned()
            }

            fn state_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
                self.kv.set(key, value)
            }

            fn now_ns(&mut self) -> u64 {
                PluginState::now_ns()
            }
        }
    };
}

impl v0_4::vigil::plugin::types::Host for PluginState {}
impl v0_1::vigil::plugin::types::Host for PluginState {}
host_interface!(v0_4);
host_interface!(v0_3);
host_interface!(v0_2);
host_interface!(v0_1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_enforces_key_length_and_quota() {
        let mut kv = PluginKv::default();
        kv.set("a".into(), vec![1; 10]).unwrap();
        assert_eq!(kv.get("a"), Some(&vec![1; 10]));
        assert!(kv.set("k".repeat(300), vec![]).is_err());
        assert!(kv.set("big".into(), vec![0; STATE_QUOTA_BYTES]).is_err());
        // Replacing a value frees the old one's bytes.
        kv.set("a".into(), vec![0; STATE_QUOTA_BYTES - 1]).unwrap();
        assert!(kv.set("b".into(), vec![0; 10]).is_err());
    }
}
