//! `--watch`: run the test files again whenever one of them, a batch file they read or
//! the plugin they test is written (one run per save: writes are coalesced until the
//! path has been quiet for [`crate::watch::QUIET`], and a plugin file cut short is
//! waited on like the agent's plugin watch does).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use notify::{Event, RecursiveMode, Watcher};

use crate::watch::{Completeness, INCOMPLETE_WAIT, QUIET, completeness, is_write};

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot start watching files: {0}")]
    Start(notify::Error),
    #[error("cannot watch directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: notify::Error },
    #[error("the file watcher stopped")]
    Stopped,
}

/// The files a test file depends on: itself, its plugin and its batch files (only
/// itself when it does not parse).
pub fn watched_paths(file: &Path) -> Vec<PathBuf> {
    let mut paths = vec![file.to_owned()];
    let Ok(text) = std::fs::read_to_string(file) else {
        return paths;
    };
    let Ok(parsed) = super::spec::parse(file, &text) else {
        return paths;
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    paths.push(dir.join(parsed.plugin.get_ref()));
    for case in &parsed.cases {
        for step in &case.get_ref().steps {
            paths.extend(step.get_ref().batch_path(dir));
        }
    }
    paths
}

/// Calls `run` now and again after every change to what `files` depend on, until the
/// process is stopped (Ctrl-C). Blocks.
pub fn watch_and_rerun(files: &[PathBuf], mut run: impl FnMut()) -> Result<(), WatchError> {
    let (tx, rx) = channel::<PathBuf>();
    let handler = move |result: notify::Result<Event>| match result {
        Ok(event) if is_write(&event.kind) || event.need_rescan() => {
            for path in event.paths {
                let _ = tx.send(absolute(&path));
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("file watch error: {e}"),
    };
    let mut watcher = notify::recommended_watcher(handler).map_err(WatchError::Start)?;
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    loop {
        run();
        let targets: BTreeSet<PathBuf> = files
            .iter()
            .flat_map(|f| watched_paths(f))
            .map(|p| absolute(&p))
            .collect();
        // Watch directories, not files: editors replace a file, which ends a watch on it.
        for target in &targets {
            let dir = target.parent().unwrap_or(Path::new("/")).to_owned();
            if dir.is_dir() && !dirs.contains(&dir) {
                watcher
                    .watch(&dir, RecursiveMode::NonRecursive)
                    .map_err(|source| WatchError::Dir {
                        dir: dir.clone(),
                        source,
                    })?;
                dirs.insert(dir);
            }
        }
        eprintln!(
            "watching {} files for changes (Ctrl-C to stop)",
            targets.len()
        );
        let changed = next_change(&rx, &targets)?;
        wait_until_complete(&changed);
    }
}

/// Waits for a write of one of `targets`, then until writes have been quiet for
/// [`QUIET`]; returns what was written.
fn next_change(
    rx: &Receiver<PathBuf>,
    targets: &BTreeSet<PathBuf>,
) -> Result<BTreeSet<PathBuf>, WatchError> {
    let mut changed = BTreeSet::new();
    while changed.is_empty() {
        let path = rx.recv().map_err(|_| WatchError::Stopped)?;
        if targets.contains(&path) {
            changed.insert(path);
        }
    }
    loop {
        match rx.recv_timeout(QUIET) {
            Ok(path) => {
                if targets.contains(&path) {
                    changed.insert(path);
                }
            }
            Err(RecvTimeoutError::Timeout) => return Ok(changed),
            Err(RecvTimeoutError::Disconnected) => return Err(WatchError::Stopped),
        }
    }
}

/// Waits (up to [`INCOMPLETE_WAIT`]) while a written plugin file is a WebAssembly binary
/// cut short: its writer is not done yet.
fn wait_until_complete(changed: &BTreeSet<PathBuf>) {
    let until = Instant::now() + INCOMPLETE_WAIT;
    for path in changed
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
    {
        while Instant::now() < until
            && std::fs::read(path).is_ok_and(|bytes| completeness(&bytes) == Completeness::CutShort)
        {
            std::thread::sleep(QUIET.max(Duration::from_millis(20)));
        }
    }
}

/// `path` with its directory resolved (`..`, symlinks), so every spelling of it is one path.
fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (path.parent().map(std::fs::canonicalize), path.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => path,
    }
}
