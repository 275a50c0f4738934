//! Test fixture: a tuning policy (`vigil:plugin@0.4.0`, world `tuning-policy`) that
//! proposes whatever its settings list, to test the host's side of the world. Its logic is
//! in `echo.rs`, which plugins/contract-v0-3 builds against 0.3.0 as well.
//!
//! Settings (every key optional):
//! ```json
//! {
//!   "interests": ["test.*"],
//!   "mode": "echo",
//!   "count": 3,
//!   "proposals": [
//!     {"action": "redis-config-set", "instance": "cache", "parameter": "maxmemory",
//!      "value": "256mb", "reason": "evictions rising",
//!      "revert_if": {"metric": "redis.keys.evicted", "attributes": {"db": "0"},
//!                    "worse": "rises", "limit": 10, "window_ms": 60000}}
//!   ]
//! }
//! ```
//! - `interests`: the metrics it asks for (default `["*"]`, every metric).
//! - `mode`: `echo` (default) answers `proposals` verbatim; `trap` traps (a Rust panic);
//!   `fail` returns an error; `inputs` answers one proposal per firing alert it was shown
//!   (`redis-config-set` on instance `firing`, parameter = the rule, value = the key, reason
//!   = every field) and one per current setting (the same setting and value, reason
//!   `current <target>`); `count` answers one proposal whose reason is `n=N`, N counting
//!   its calls in the host's state.
//! - `count`: the answer is the first proposal repeated `count` times.
//! - `action`: `redis-config-set`, `postgres-set`, `mysql-set-global` (with `instance`,
//!   `parameter`, `value`) or `collector-interval` (with `collector`, `interval_ms`); and
//!   (0.4.0) `postgres-vacuum`, `postgres-analyze` (with `instance`, `schema`, `table`),
//!   `postgres-create-index` (also `columns`, `statements`), `postgres-drop-index` (with
//!   `instance`, `schema`, `index`).
//!   `limit` may be a string, to say `"NaN"` or `"inf"`.

/// Guest bindings of the vigil:plugin@0.4.0 tuning-policy world.
mod bindings {
    #![allow(clippy::too_many_arguments)] // generated code
    wit_bindgen::generate!({ world: "tuning-policy", path: "../../wit" });
}

mod echo;
