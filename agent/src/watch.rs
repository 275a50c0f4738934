//! Watches the plugin directory and the config file (`notify`, full event kinds) and
//! reports what changed, once per change, when the file is ready to be read.
//!
//! Only writes count: create, modify (data or name), close-after-write and remove of
//! the config file or of a `*.wasm` file of the plugin directory. Reads, opens and
//! attribute changes are ignored, so the agent reading a file never triggers a reload.
//! Events are coalesced per path until the path has been quiet for [`QUIET`]; a plugin
//! file must also parse as a complete WebAssembly binary. A file cut short (a writer
//! still at work) is waited on, up to [`INCOMPLETE_WAIT`] after its last write, and then
//! reported anyway so the load reports what is wrong with it, once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::Instant;

/// Quiet time after the last write of a path before it is looked at.
pub const QUIET: Duration = Duration::from_millis(50);

/// Longest wait, after its last write, for a plugin file that is cut short to be completed.
pub const INCOMPLETE_WAIT: Duration = Duration::from_secs(2);

/// Something to reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// A `*.wasm` file in the plugin directory was written, added or removed.
    Plugin(PathBuf),
    /// The config file changed.
    Config,
}

/// Keeps the watch alive; dropping it stops watching.
pub struct Watch {
    _watcher: RecommendedWatcher,
    coalescer: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.coalescer.abort();
    }
}

/// Why a watch could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot start watching files: {0}")]
    Start(notify::Error),
    #[error("cannot watch {what} {}: {source}; check that it exists and is readable", dir.display())]
    Dir {
        what: &'static str,
        dir: PathBuf,
        source: notify::Error,
    },
}

/// The paths a watch cares about.
#[derive(Debug, Clone)]
struct Targets {
    plugin_dir: PathBuf,
    config_file: Option<PathBuf>,
}

impl Targets {
    /// The change a write of `path` means, if any.
    fn change_of(&self, path: &Path) -> Option<Change> {
        let path = absolute(path);
        if Some(&path) == self.config_file.as_ref() {
            Some(Change::Config)
        } else if path.parent() == Some(self.plugin_dir.as_path())
            && crate::plugin::registry::plugin_name(&path).is_some()
        {
            Some(Change::Plugin(path))
        } else {
            None
        }
    }
}

/// Whether an event of `kind` is a write (as opposed to a read, an open or an attribute change).
pub fn is_write(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Watches `plugin_dir` (if it exists) and, if given, `config_file`; sends each change
/// to `changes`.
/// Must be called inside a tokio runtime (the coalescing runs as a task).
pub fn watch(
    plugin_dir: &Path,
    config_file: Option<&Path>,
    changes: UnboundedSender<Change>,
) -> Result<Watch, WatchError> {
    let targets = Targets {
        plugin_dir: absolute(plugin_dir),
        config_file: config_file.map(absolute),
    };
    let (writes_tx, writes) = unbounded_channel();
    let for_events = targets.clone();
    let handler = move |result: notify::Result<Event>| match result {
        Ok(event) => {
            if event.need_rescan() {
                // The kernel dropped events: look at everything again.
                tracing::warn!(
                    "file watch overflowed; looking at the config file and every plugin file again"
                );
                let mut all: Vec<Change> = for_events
                    .config_file
                    .iter()
                    .map(|_| Change::Config)
                    .collect();
                all.extend(
                    crate::plugin::registry::plugin_files(&for_events.plugin_dir)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(_, path)| Change::Plugin(path)),
                );
                for change in all {
                    let _ = writes_tx.send(change);
                }
                return;
            }
            if !is_write(&event.kind) {
                return;
            }
            for path in &event.paths {
                if let Some(change) = for_events.change_of(path) {
                    let _ = writes_tx.send(change);
                }
            }
        }
        Err(e) => tracing::warn!("file watch error: {e}"),
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(WatchError::Start)?;
    // A plugin directory that does not exist yet is not watched (the config file still
    // is); the supervisor says so at start.
    if plugin_dir.exists() {
        watcher
            .watch(plugin_dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Dir {
                what: "plugin directory",
                dir: plugin_dir.to_owned(),
                source,
            })?;
    }
    if let Some(config) = &targets.config_file {
        // Watch the directory: editors replace the file, which ends a watch on the file itself.
        let dir = config.parent().unwrap_or(Path::new("/"));
        if dir != targets.plugin_dir {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Dir {
                    what: "config directory",
                    dir: dir.to_owned(),
                    source,
                })?;
        }
    }
    let coalescer = tokio::spawn(coalesce(writes, changes));
    Ok(Watch {
        _watcher: watcher,
        coalescer,
    })
}

/// A path written lately, not yet reported.
#[derive(Debug)]
struct Pending {
    /// When to look at it next.
    due: Instant,
    /// When it was last written.
    last_write: Instant,
}

/// Reports each written path once it has been quiet for [`QUIET`] and, for a plugin
/// file, parses completely (or [`INCOMPLETE_WAIT`] has passed since its last write).
async fn coalesce(mut writes: UnboundedReceiver<Change>, changes: UnboundedSender<Change>) {
    let mut pending: HashMap<Change, Pending> = HashMap::new();
    loop {
        let next = pending.values().map(|p| p.due).min();
        tokio::select! {
            write = writes.recv() => {
                let Some(change) = write else { return };
                let now = Instant::now();
                pending.insert(change, Pending { due: now + QUIET, last_write: now });
            }
            () = sleep_until(next) => {
                let now = Instant::now();
                let due: Vec<Change> = pending
                    .iter()
                    .filter(|(_, p)| p.due <= now)
                    .map(|(c, _)| c.clone())
                    .collect();
                for change in due {
                    let ready = match &change {
                        Change::Config => true,
                        Change::Plugin(path) => {
                            let ready = plugin_ready(path).await;
                            ready || pending.get(&change).is_none_or(|p| now >= p.last_write + INCOMPLETE_WAIT)
                        }
                    };
                    if ready {
                        pending.remove(&change);
                        if changes.send(change).is_err() {
                            return;
                        }
                    } else if let Some(p) = pending.get_mut(&change) {
                        // Cut short: wait for the rest (a write brings it forward).
                        p.due = p.last_write + INCOMPLETE_WAIT;
                    }
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Whether the plugin file at `path` can be loaded now: gone (an unload), or a
/// WebAssembly binary that is not cut short.
async fn plugin_ready(path: &Path) -> bool {
    match tokio::fs::read(path).await {
        Ok(bytes) => completeness(&bytes) != Completeness::CutShort,
        // Gone or unreadable: the reload unloads it or says what is wrong.
        Err(_) => true,
    }
}

/// What parsing a WebAssembly binary found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Parses to its end.
    Complete,
    /// Everything there parses, but it ends in the middle: a writer may not be done.
    CutShort,
    /// Not WebAssembly (more bytes cannot fix it).
    Invalid,
}

/// Parses `bytes` as a WebAssembly module or component (structure only, cheap; no
/// validation) and says whether it is complete, cut short, or invalid.
pub fn completeness(bytes: &[u8]) -> Completeness {
    if wasmparser::Parser::new(0)
        .parse_all(bytes)
        .all(|payload| payload.is_ok())
    {
        return Completeness::Complete;
    }
    // Parse again as a stream that may go on: running out of data without an error means cut short.
    let mut stack = Vec::new();
    let mut parser = wasmparser::Parser::new(0);
    let mut rest = bytes;
    loop {
        match parser.parse(rest, false) {
            Err(_) => return Completeness::Invalid,
            Ok(wasmparser::Chunk::NeedMoreData(_)) => return Completeness::CutShort,
            Ok(wasmparser::Chunk::Parsed { consumed, payload }) => {
                rest = rest.get(consumed..).unwrap_or_default();
                match payload {
                    wasmparser::Payload::ModuleSection { parser: nested, .. }
                    | wasmparser::Payload::ComponentSection { parser: nested, .. } => {
                        stack.push(std::mem::replace(&mut parser, nested))
                    }
                    wasmparser::Payload::End(_) => match stack.pop() {
                        Some(outer) => parser = outer,
                        // Parsed to the end after all (cannot happen when parse_all failed).
                        None => return Completeness::Invalid,
                    },
                    _ => {}
                }
            }
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_short_binaries_are_told_from_invalid_ones() {
        let module = wat::parse_str(
            "(module (func (export \"f\") (result i32) i32.const 1) (memory 1) (data (i32.const 0) \"hello\"))",
        )
        .unwrap();
        assert_eq!(completeness(&module), Completeness::Complete);
        for cut in [1, 4, 9, module.len() / 2, module.len() - 1] {
            assert_eq!(
                completeness(&module[..cut]),
                Completeness::CutShort,
                "cut at {cut}"
            );
        }
        assert_eq!(completeness(b"not wasm at all"), Completeness::Invalid);
        let component = wat::parse_str("(component (core module (func)))").unwrap();
        assert_eq!(completeness(&component), Completeness::Complete);
        assert_eq!(
            completeness(&component[..component.len() - 2]),
            Completeness::CutShort
        );
    }

    #[test]
    fn reads_opens_and_attribute_changes_are_not_writes() {
        use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};
        assert!(is_write(&EventKind::Create(CreateKind::File)));
        assert!(is_write(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(is_write(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(is_write(&EventKind::Remove(RemoveKind::File)));
        assert!(is_write(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_write(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_write(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_write(&EventKind::Access(AccessKind::Read)));
        assert!(!is_write(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
    }
}
