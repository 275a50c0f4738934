//! On-disk cache of compiled components, keyed by the file's content hash and the
//! engine's compatibility hash: restarting with many plugins deserializes them in
//! milliseconds instead of recompiling. Each entry carries a SHA-256 of its payload,
//! so a corrupt or truncated entry is detected and recompiled, never loaded.
//!
//! The cache is bounded: after each new entry is written, the least recently used
//! entries (oldest modification time; a hit touches its entry) are removed until the
//! directory holds at most the configured number of bytes.

use crate::sync::LockExt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// What the cache did for one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded a valid entry.
    Hit,
    /// Compiled and stored a new entry.
    Miss,
    /// Found a corrupt or incompatible entry, compiled and replaced it.
    Replaced,
    /// No cache directory: compiled.
    Disabled,
}

/// Default size limit of the cache, in bytes (`plugins.cache_max_mib` = 256).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// File name extension of cache entries.
const ENTRY_EXTENSION: &str = "cwasm";

/// The compile cache (or none).
#[derive(Debug)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    /// Most bytes the entries may take together.
    max_bytes: u64,
    /// Entries removed to stay under `max_bytes`, since start.
    evictions: Arc<AtomicU64>,
    /// Entries being written in the background (a reload does not wait for the disk).
    writes: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Hex SHA-256 of `bytes`: a plugin file's identity.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl CompileCache {
    /// A cache in `dir`, created if missing; without a usable directory, no cache.
    pub fn new(dir: Option<PathBuf>) -> Self {
        let dir = dir.and_then(|dir| match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "plugin compile cache disabled: cannot create the directory: {e}");
                None
            }
        });
        CompileCache {
            dir,
            max_bytes: DEFAULT_MAX_BYTES,
            evictions: Arc::default(),
            writes: std::sync::Mutex::default(),
        }
    }

    /// A cache that never stores anything.
    pub fn disabled() -> Self {
        CompileCache::new(None)
    }

    /// The same cache, holding at most `max_bytes` of entries.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Entries removed so far to stay under the size limit.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Waits until every entry written in the background is on disk.
    pub fn finish_writes(&self) {
        let pending = std::mem::take(&mut *self.writes.locked());
        for write in pending {
            let _ = write.join();
        }
    }

    /// The component for `bytes`: from the cache when a valid entry exists, else compiled (and stored).
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((
                Component::from_binary(engine, bytes)?,
                CacheOutcome::Disabled,
            ));
        };
        let mut engine_hash = DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let path = dir.join(format!(
            "{}-{:016x}.{ENTRY_EXTENSION}",
            content_hash(bytes),
            engine_hash.finish()
        ));

        let mut outcome = CacheOutcome::Miss;
        if let Ok(entry) = std::fs::read(&path) {
            match verified_payload(&entry) {
                Some(payload) => {
                    // SAFETY: the payload's SHA-256 matches the one written beside it by
                    // `store` below, so these are exactly the bytes `Component::serialize`
                    // produced for this engine configuration.
                    match unsafe { Component::deserialize(engine, payload) } {
                        Ok(component) => {
                            touch(&path);
                            return Ok((component, CacheOutcome::Hit));
                        }
                        Err(e) => {
                            tracing::warn!(entry = %path.display(), "plugin cache entry unusable, recompiling: {e}")
                        }
                    }
                }
                None => {
                    tracing::warn!(entry = %path.display(), "plugin cache entry is corrupt, recompiling")
                }
            }
            outcome = CacheOutcome::Replaced;
        }
        let component = Component::from_binary(engine, bytes)?;
        let for_disk = component.clone();
        let (dir, max_bytes, evictions) = (dir.clone(), self.max_bytes, self.evictions.clone());
        let write = std::thread::Builder::new()
            .name("vigil-cache-write".into())
            .spawn(move || match for_disk.serialize() {
                Ok(payload) => {
                    store(&path, &payload);
                    let evicted = evict(&dir, max_bytes);
                    if evicted > 0 {
                        let total = evictions.fetch_add(evicted, Ordering::Relaxed) + evicted;
                        tracing::debug!(dir = %dir.display(), evicted, total, max_bytes, "plugin compile cache: least recently used entries removed to stay under plugins.cache_max_mib");
                    }
                }
                Err(e) => tracing::warn!("cannot serialize a compiled plugin for the cache: {e}"),
            });
        match write {
            Ok(handle) => {
                let mut writes = self.writes.locked();
                writes.retain(|w| !w.is_finished());
                writes.push(handle);
            }
            Err(e) => tracing::warn!("cannot start writing the plugin cache entry: {e}"),
        }
        Ok((component, outcome))
    }
}

/// The payload of an entry whose checksum matches.
fn verified_payload(entry: &[u8]) -> Option<&[u8]> {
    let (sum, payload) = entry.split_at_checked(32)?;
    (Sha256::digest(payload).as_slice() == sum).then_some(payload)
}

/// Marks an entry as just used (its modification time orders eviction).
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Removes the least recently used entries of `dir` until the rest take at most
/// `max_bytes`; returns how many were removed.
fn evict(dir: &Path, max_bytes: u64) -> u64 {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut entries: Vec<(SystemTime, u64, PathBuf)> = listing
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == ENTRY_EXTENSION))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    let mut removed = 0;
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                total = total.saturating_sub(len);
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(entry = %path.display(), "cannot remove a plugin compile cache entry: {e}")
            }
        }
    }
    removed
}

/// Writes an entry atomically (temporary file, then rename).
fn store(path: &Path, payload: &[u8]) {
    let mut entry = Sha256::digest(payload).to_vec();
    entry.extend_from_slice(payload);
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let result =
        std::fs::write(&temporary, &entry).and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temporary);
        tracing::warn!(entry = %path.display(), "cannot write plugin cache entry: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_entries_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let path = dir.path().join(format!("{name}.{ENTRY_EXTENSION}"));
            std::fs::write(&path, vec![0u8; 1000]).unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(old + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        std::fs::write(dir.path().join("other.txt"), vec![0u8; 5000]).unwrap();
        // "a" is the oldest, but was just used.
        touch(&dir.path().join(format!("a.{ENTRY_EXTENSION}")));
        assert_eq!(evict(dir.path(), 2000), 1);
        let left: std::collections::BTreeSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            ["a.cwasm", "c.cwasm", "other.txt"].map(String::from).into()
        );
        assert_eq!(evict(dir.path(), 2000), 0);
        assert_eq!(evict(dir.path(), 0), 2);
    }

    const COMPONENT: &str = "(component)";

    #[test]
    fn second_load_hits_and_corruption_is_recompiled() {
        let engine = Engine::default();
        let bytes = wat::parse_str(COMPONENT).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(Some(dir.path().to_owned()));
        assert_eq!(
            cache.component(&engine, &bytes).unwrap().1,
            CacheOutcome::Miss
        );
        cache.finish_writes();
        assert_eq!(
            cache.component(&engine, &bytes).unwrap().1,
            CacheOutcome::Hit
        );
        let entry = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut corrupt = std::fs::read(&entry).unwrap();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        std::fs::write(&entry, corrupt).unwrap();
        assert_eq!(
            cache.component(&engine, &bytes).unwrap().1,
            CacheOutcome::Replaced
        );
        cache.finish_writes();
        assert_eq!(
            cache.component(&engine, &bytes).unwrap().1,
            CacheOutcome::Hit
        );
        std::fs::write(&entry, b"short").unwrap();
        assert_eq!(
            cache.component(&engine, &bytes).unwrap().1,
            CacheOutcome::Replaced
        );
        assert_eq!(
            CompileCache::disabled()
                .component(&engine, &bytes)
                .unwrap()
                .1,
            CacheOutcome::Disabled
        );
    }
}
