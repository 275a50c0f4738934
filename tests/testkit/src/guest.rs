//! Plugins written in languages other than Rust, built from `plugins/` by `plugins/build.sh`:
//! Python (`plugins/python/NAME/app.py` → `py-NAME.wasm`, componentize-py), JavaScript
//! (`plugins/js/NAME/` → `js-NAME.wasm`, componentize-js) and C (`plugins/c/NAME/` →
//! `c-NAME.wasm`, its own `plugins/c/build.sh`). The first use installs the pinned tools under
//! the target directory (PyPI and npm must be reachable, or `.ci/run` must have run); a
//! component is rebuilt only when its inputs change (10-40 s each).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The WIT directory, relative to the repository, the plugins are built against.
pub const WIT: &str = "wit";

/// A plugin language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl Lang {
    /// Every language, Rust first.
    pub const ALL: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C];

    /// Its name in `plugins/build.sh` (`VIGIL_LANGS`) and in `vigil plugin new --lang`.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }

    /// Where the source of plugin `name` lives, relative to the repository.
    pub fn source_dir(self, name: &str) -> String {
        match self {
            Lang::Rust => format!("plugins/{name}"),
            Lang::Python => format!("plugins/python/{name}"),
            Lang::Js => format!("plugins/js/{name}"),
            Lang::C => format!("plugins/c/{name}"),
        }
    }

    /// The file name `plugins/build.sh` gives the component of plugin `name`.
    pub fn file_name(self, name: &str) -> String {
        match self {
            Lang::Rust => format!("{}.wasm", name.replace('-', "_")),
            Lang::Python => format!("py-{name}.wasm"),
            Lang::Js => format!("js-{name}.wasm"),
            Lang::C => format!("c-{name}.wasm"),
        }
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target directory the tests build in (it keeps the tools and the components).
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("VIGIL_TARGET_DIR"))
}

/// Where the test builds put the components.
pub fn out_dir() -> PathBuf {
    target_dir().join(format!("guest-plugins-{WIT}"))
}

/// Whether plugin `name` has a source in `lang` (e.g. the C version may not exist yet).
pub fn exists(lang: Lang, name: &str) -> bool {
    repo().join(lang.source_dir(name)).is_dir()
        && (lang != Lang::C || repo().join("plugins/c/build.sh").is_file())
}

/// Runs `plugins/build.sh` for `langs` into `out`, with the test target dir; returns its stderr.
pub fn run_build(
    langs: &[Lang],
    out: &std::path::Path,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<String> {
    let names: Vec<&str> = langs.iter().map(|l| l.name()).collect();
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("plugins/build.sh"))
        .arg(out)
        .env("CARGO_TARGET_DIR", env!("VIGIL_TARGET_DIR"))
        .env("VIGIL_WIT", repo().join(WIT))
        .env("VIGIL_LANGS", names.join(" "));
    for (key, value) in extra_env {
        cmd.env(key, value);
    }
    // Settings meant for the outer (host) build must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd.output()?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "plugins/build.sh ({}) failed (it needs python3 with venv and PyPI, node/npm and the npm registry, or run .ci/run first):\n{stderr}",
        names.join(" ")
    );
    Ok(stderr)
}

/// Builds the plugins of `lang` (once per test process) and returns the path of plugin
/// `name`'s component. Rust plugins come from the constants in [`crate::plugins`].
pub fn plugin(lang: Lang, name: &str) -> anyhow::Result<PathBuf> {
    if lang == Lang::Rust {
        let constant = name.replace('-', "_").to_uppercase();
        return crate::plugins::ALL
            .iter()
            .find(|(c, _)| *c == constant)
            .map(|(_, path)| PathBuf::from(path))
            .ok_or_else(|| anyhow::anyhow!("no Rust plugin {name} in plugins/Cargo.toml"));
    }
    static BUILT: Mutex<Option<HashSet<Lang>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let built = built.get_or_insert_with(HashSet::new);
    if !built.contains(&lang) {
        run_build(&[lang], &out_dir(), &[])?;
        built.insert(lang);
    }
    let wasm = out_dir().join(lang.file_name(name));
    anyhow::ensure!(
        wasm.exists(),
        "{} is missing: is there a {}?",
        wasm.display(),
        lang.source_dir(name)
    );
    Ok(wasm)
}
