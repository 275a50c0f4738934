//! Cranelift's incremental compilation cache, in memory: compiled functions keyed by
//! their content. A new version of a plugin mostly repeats the old one's functions
//! (the standard library, the bindings, the WASI adapter), so a hot reload compiles
//! only the functions that changed.

use crate::sync::LockExt;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most bytes of compiled code kept; past it the cache starts over.
const CAPACITY_BYTES: usize = 64 << 20;

/// Compiled functions by cache key, shared by every plugin of one engine.
#[derive(Debug, Default)]
pub struct FunctionCache {
    entries: Mutex<Entries>,
}

/// The entries and their total size in bytes.
#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let entries = self.entries.locked();
        entries.by_key.get(key).map(|v| Cow::Owned(v.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let mut entries = self.entries.locked();
        if entries.bytes + value.len() > CAPACITY_BYTES {
            entries.by_key.clear();
            entries.bytes = 0;
        }
        entries.bytes += value.len();
        entries.by_key.insert(key.to_owned(), value);
        true
    }
}
