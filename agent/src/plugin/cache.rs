//! On-disk cache of compiled components, keyed by the file's content hash and the
//! engine's compatibility hash: restarting with many plugins deserializes them in
//! milliseconds instead of recompiling. Each entry is the artifact wasmtime serialized
//! followed by a SHA-256 of it, so a corrupt or truncated entry is detected and
//! recompiled, never loaded; a valid entry is mapped from the file
//! (`Component::deserialize_file`), so its code pages are file-backed and shared with
//! the page cache instead of copied into the agent's heap.
//!
//! The cache is bounded: after each new entry is written, the least recently used
//! entries (oldest modification time; a hit touches its entry) are removed until the
//! directory holds at most the configured number of bytes.
//!
//! Why not wasmtime's own compile cache (`Config::cache`)? Measured on the 18 MB Python
//! plugin (componentize-py, 35 MB compiled; release build, one process per load, warm
//! page cache): wasmtime's cache hit takes 132 ms and leaves 43 MB RSS (37 MB anonymous:
//! it decompresses zstd into the heap), peak 93 MB; this cache, mapping the entry with
//! `deserialize_file`, takes 39 ms (5 ms of loading, 34 ms of checksum) and leaves 11.5 MB
//! RSS (2.3 MB anonymous, the rest file-backed and shared with the page cache), peak
//! 11.5 MB; `Component::deserialize` of the same bytes: 50 ms, 43 MB, peak 77 MB.
//! Compiling in-process: 15 s, 330 MB, peak 348 MB. Its entries are 3x smaller on disk
//! (12 MB), but this cache also lets the compiler child write the entry the agent then
//! maps, and bounds the directory by least recent use.
//!
//! Entries are written by whoever compiled: the compiler child (see
//! [`super::compile`]) writes the entry itself before it exits, so `vigil check` and
//! `vigil plugin test` leave a warm cache behind; in-process compilation (tests,
//! benches) writes it in the background.

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

    /// The entry `bytes` compiled for `engine` would be stored in (none without a cache).
    pub fn entry_path(&self, engine: &Engine, bytes: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut engine_hash = DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        Some(dir.join(format!(
            "{}-{:016x}.{ENTRY_EXTENSION}",
            content_hash(bytes),
            engine_hash.finish()
        )))
    }

    /// The component of the valid entry at `path`, if there is one; `Err` when an
    /// entry exists but is corrupt or unusable (logged).
    fn cached(&self, engine: &Engine, path: &Path) -> Result<Option<Component>, ()> {
        match load_entry(engine, path) {
            Ok(component) => {
                touch(path);
                Ok(Some(component))
            }
            Err(EntryProblem::Missing) => Ok(None),
            Err(problem) => {
                tracing::warn!(entry = %path.display(), "plugin cache entry {problem}, recompiling");
                Err(())
            }
        }
    }

    /// The component for `bytes`: from the cache when a valid entry exists, else
    /// compiled in this process (and stored in the background).
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(path) = self.entry_path(engine, bytes) else {
            return Ok((
                Component::from_binary(engine, bytes)?,
                CacheOutcome::Disabled,
            ));
        };
        let outcome = match self.cached(engine, &path) {
            Ok(Some(component)) => return Ok((component, CacheOutcome::Hit)),
            Ok(None) => CacheOutcome::Miss,
            Err(()) => CacheOutcome::Replaced,
        };
        let component = Component::from_binary(engine, bytes)?;
        let for_disk = component.clone();
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let (max_bytes, evictions) = (self.max_bytes, self.evictions.clone());
        let write = std::thread::Builder::new()
            .name("vigil-cache-write".into())
            .spawn(move || match for_disk.serialize() {
                Ok(payload) => {
                    if let Err(e) = write_entry(&path, &payload) {
                        tracing::warn!(entry = %path.display(), "cannot write plugin cache entry: {e}");
                    }
                    evict_counted(&dir, max_bytes, &evictions);
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

    /// The component for `bytes`: from the cache when a valid entry exists, else
    /// `compile(entry)` writes the entry (with [`write_entry`]) and it is loaded from
    /// there. Without a cache directory the entry is a temporary file, removed once loaded.
    pub fn component_compiled_by<E>(
        &self,
        engine: &Engine,
        bytes: &[u8],
        compile: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<(Component, CacheOutcome), CompiledEntryError<E>> {
        let Some(path) = self.entry_path(engine, bytes) else {
            let temporary = TemporaryEntry::new();
            compile(&temporary.0).map_err(CompiledEntryError::Compile)?;
            let component = load_entry(engine, &temporary.0)
                .map_err(|problem| CompiledEntryError::Load(problem.to_string()))?;
            return Ok((component, CacheOutcome::Disabled));
        };
        let outcome = match self.cached(engine, &path) {
            Ok(Some(component)) => return Ok((component, CacheOutcome::Hit)),
            Ok(None) => CacheOutcome::Miss,
            Err(()) => CacheOutcome::Replaced,
        };
        compile(&path).map_err(CompiledEntryError::Compile)?;
        let component = load_entry(engine, &path)
            .map_err(|problem| CompiledEntryError::Load(problem.to_string()))?;
        if let Some(dir) = path.parent() {
            evict_counted(dir, self.max_bytes, &self.evictions);
        }
        Ok((component, outcome))
    }
}

/// Why a component compiled into an entry could not be had.
#[derive(Debug)]
pub enum CompiledEntryError<E> {
    /// The compiler failed.
    Compile(E),
    /// The entry it wrote cannot be loaded.
    Load(String),
}

/// A path for a compiled entry outside any cache, removed when dropped.
struct TemporaryEntry(PathBuf);

impl TemporaryEntry {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TemporaryEntry(std::env::temp_dir().join(format!(
            "vigil-plugin-{}-{n}.{ENTRY_EXTENSION}",
            std::process::id()
        )))
    }
}

impl Drop for TemporaryEntry {
    fn drop(&mut self) {
        // A mapped file stays readable after it is removed.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why an entry was not loaded.
#[derive(Debug)]
enum EntryProblem {
    Missing,
    Unreadable(std::io::Error),
    Corrupt,
    Unusable(wasmtime::Error),
}

impl std::fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryProblem::Missing => write!(f, "is missing"),
            EntryProblem::Unreadable(e) => write!(f, "cannot be read: {e}"),
            EntryProblem::Corrupt => write!(f, "is corrupt (checksum mismatch)"),
            EntryProblem::Unusable(e) => write!(f, "is unusable: {e:#}"),
        }
    }
}

/// Loads the entry at `path`: checks its SHA-256 (streamed, so the agent's heap does
/// not hold the artifact), then maps the artifact from the file.
fn load_entry(engine: &Engine, path: &Path) -> Result<Component, EntryProblem> {
    match verify_file(path) {
        Ok(true) => {}
        Ok(false) => return Err(EntryProblem::Corrupt),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(EntryProblem::Missing),
        Err(e) => return Err(EntryProblem::Unreadable(e)),
    }
    // SAFETY: the file's SHA-256 matches the one `write_entry` appended, so it holds
    // exactly the bytes wasmtime serialized for this engine configuration (the file
    // name carries the engine's compatibility hash, and wasmtime checks it again). The
    // trailing checksum lies outside every ELF section, so wasmtime never reads it.
    // Entries are replaced by rename, never rewritten in place, so the mapping stays valid.
    unsafe { Component::deserialize_file(engine, path) }.map_err(EntryProblem::Unusable)
}

/// Whether the file at `path` ends with the SHA-256 of what precedes it.
fn verify_file(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let Some(mut payload_left) = len.checked_sub(CHECKSUM_BYTES as u64) else {
        return Ok(false);
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    while payload_left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(payload_left).unwrap_or(usize::MAX));
        let got = file.read(&mut buffer[..want])?;
        if got == 0 {
            return Ok(false);
        }
        hasher.update(&buffer[..got]);
        payload_left -= got as u64;
    }
    let mut sum = [0u8; CHECKSUM_BYTES];
    file.read_exact(&mut sum)?;
    Ok(hasher.finalize().as_slice() == sum)
}

/// Bytes of the checksum after the artifact.
const CHECKSUM_BYTES: usize = 32;

/// Marks an entry as just used (its modification time orders eviction).
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// [`evict`], counted in `evictions` and logged.
fn evict_counted(dir: &Path, max_bytes: u64, evictions: &AtomicU64) {
    let evicted = evict(dir, max_bytes);
    if evicted > 0 {
        let total = evictions.fetch_add(evicted, Ordering::Relaxed) + evicted;
        tracing::debug!(dir = %dir.display(), evicted, total, max_bytes, "plugin compile cache: least recently used entries removed to stay under plugins.cache_max_mib");
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

/// Writes the entry for `payload` (a serialized component) at `path` atomically: a
/// temporary file beside it, then a rename, so a reader sees the whole entry or none.
pub fn write_entry(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let result = std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(payload)?;
            file.write_all(&Sha256::digest(payload))
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
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
