//! Embeds the `vigil plugin new` templates (agent/templates/LANG/WORLD/...) and the plugin
//! contract's WIT files (wit/*.wit) in the binary: writes `templates.rs` into OUT_DIR with
//! one `(path, bytes)` entry per file, sorted by path. Release builds also link the agent's
//! hot functions first (see [`link_hot_functions_first`]).

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    link_hot_functions_first(&manifest);
    let templates = manifest.join("templates");
    let wit = manifest.join("../wit");
    println!("cargo:rerun-if-changed={}", templates.display());
    println!("cargo:rerun-if-changed={}", wit.display());

    let mut files = Vec::new();
    walk(&templates, &templates, &mut files);
    files.sort();
    let mut wit_files: Vec<PathBuf> = std::fs::read_dir(&wit)
        .expect("read wit/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wit"))
        .collect();
    wit_files.sort();

    let entry = |name: &str, path: &Path| {
        let path = path.canonicalize().expect("a template file exists");
        format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        )
    };
    let mut out = String::from(
        "/// Template files: (path under agent/templates, bytes).\npub static TEMPLATES: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &files {
        out.push_str(&entry(name, path));
    }
    out.push_str("];\n/// The contract's WIT files: (file name, bytes).\npub static WIT: &[(&str, &[u8])] = &[\n");
    for path in &wit_files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 file name");
        out.push_str(&entry(name, path));
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    std::fs::write(out_dir.join("templates.rs"), out).expect("write templates.rs");
}

/// Release builds of `vigil` for x86_64 Linux (linked by LLD, Rust's default linker there)
/// place the functions listed in link/hot-functions.txt first, in that order: the code the
/// agent's rounds run then sits on a few contiguous pages instead of being spread over
/// the whole text, which is most of the agent's steady RSS. bench/hot-functions writes the
/// list from profiles; names the build does not have are skipped.
fn link_hot_functions_first(manifest: &Path) {
    let order = manifest.join("link/hot-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = std::env::var("TARGET").unwrap_or_default();
    if release && target == "x86_64-unknown-linux-gnu" && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=vigil=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=vigil=-Wl,--no-warn-symbol-ordering");
    }
}

/// Every file under `dir`, as (path relative to `root` with `/`, absolute path).
fn walk(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("read a templates directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).expect("under the root");
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.push((name, path));
        }
    }
}
