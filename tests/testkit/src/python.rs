//! Python plugins (`plugins/python/NAME/app.py`) built into components by
//! `plugins/build.sh` with componentize-py; see [`crate::guest`].

use std::path::PathBuf;

pub use crate::guest::WIT;

/// Builds the Python plugins (once per test process) and returns the path of
/// `py-NAME.wasm`, the component built from `plugins/python/NAME`.
pub fn plugin(name: &str) -> anyhow::Result<PathBuf> {
    crate::guest::plugin(crate::guest::Lang::Python, name)
}
