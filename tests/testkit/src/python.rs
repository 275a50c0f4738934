//! Python plugins (`plugins/python/NAME/app.py`) built into components by
//! `plugins/build-python.sh` with componentize-py. The first use installs componentize-py
//! into a virtualenv under the target directory (PyPI must be reachable, or `.ci/run`
//! must have run); each plugin then takes ~10 s to build and is kept until its source
//! or the WIT changes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The WIT directory, relative to the repository, the Python plugins are built against.
pub const WIT: &str = "wit";

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the Python plugins (once per test process) and returns the path of
/// `py-NAME.wasm`, the component built from `plugins/python/NAME`.
pub fn plugin(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if built.is_none() {
        let output = Command::new("bash")
            .arg(repo().join("plugins/build-python.sh"))
            .env("CARGO_TARGET_DIR", env!("VIGIL_TARGET_DIR"))
            .env("VIGIL_WIT", repo().join(WIT))
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "plugins/build-python.sh failed (it needs python3 with venv and PyPI, or run .ci/run first):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let out = stdout.lines().last().unwrap_or_default().trim();
        *built = Some(PathBuf::from(out));
    }
    let dir = built.as_ref().map(PathBuf::clone).unwrap_or_default();
    let wasm = dir.join(format!("py-{name}.wasm"));
    anyhow::ensure!(
        wasm.exists(),
        "{} is missing: is there a plugins/python/{name}/app.py?",
        wasm.display()
    );
    Ok(wasm)
}
