//! End to end: plugins are compiled by a short-lived `vigil` child that writes the
//! compile cache, so `vigil plugin test` and `vigil check` leave it warm; the child's
//! failures are reported as the plugin's load error.

use std::process::Stdio;

use vigil_testkit::agent::{Workspace, vigil};
use vigil_testkit::plugins::THRESHOLD;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

const RULE: &str = vigil_testkit::agent::THRESHOLD_HIGH_MEMORY;

/// Runs `vigil ARGS` with debug logs; returns whether it succeeded and stdout + stderr.
fn run_debug(args: &[&str]) -> (bool, String) {
    let output = vigil(VIGIL)
        .args(args)
        .env("RUST_LOG", "info,vigil=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The file names in `dir`.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|listing| {
            listing
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn plugin_test_and_check_leave_the_compile_cache_warm() {
    let ws = Workspace::new().unwrap();
    let plugin = ws.add_plugin("threshold", THRESHOLD).unwrap();
    let config = ws
        .write_config(&format!(
            "[plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n{RULE}"
        ))
        .unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/fixtures/memory-high.json"
    );
    let (plugin, config) = (plugin.to_str().unwrap(), config.to_str().unwrap());
    let test = [
        "plugin", "test", plugin, "--batch", fixture, "--config", config,
    ];

    // The first run compiles (in a child) and the entry is on disk when it exits.
    let (ok, text) = run_debug(&test);
    assert!(ok, "{text}");
    assert!(text.contains("cache=Miss"), "{text}");
    let cache = ws.dir.path().join("cache");
    let entries = files(&cache);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].ends_with(".cwasm"), "{entries:?}");

    // The second run and `vigil check` load it from there.
    let (ok, text) = run_debug(&test);
    assert!(ok, "{text}");
    assert!(text.contains("cache=Hit"), "{text}");
    let (ok, text) = run_debug(&["check", "--config", config]);
    assert!(ok, "{text}");
    assert!(text.contains("cache=Hit"), "{text}");
    assert_eq!(files(&cache), entries);
}

#[test]
fn without_a_cache_the_child_leaves_no_file_behind() {
    let ws = Workspace::new().unwrap();
    let plugin = ws.add_plugin("threshold", THRESHOLD).unwrap();
    let tmp = ws.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let config = ws
        .write_config(&format!(
            "[plugins]\ndir = \"plugins\"\ncache_dir = \"\"\n{RULE}"
        ))
        .unwrap();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/fixtures/memory-high.json"
    );
    let output = vigil(VIGIL)
        .args(["plugin", "test"])
        .arg(&plugin)
        .args(["--batch", fixture, "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,vigil=debug")
        .env("NO_COLOR", "1")
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("cache=Disabled"), "{text}");
    assert_eq!(files(&tmp), Vec::<String>::new());
}

#[test]
fn an_invalid_component_is_reported_by_the_child() {
    let ws = Workspace::new().unwrap();
    ws.write_plugin("broken", b"\0asm\x0d\0\x01\0garbage")
        .unwrap();
    let config = ws
        .write_config("[plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n")
        .unwrap();
    let (ok, text) = run_debug(&["check", "--config", config.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("broken.wasm: not a valid WebAssembly component"),
        "{text}"
    );
    assert_eq!(files(&ws.dir.path().join("cache")), Vec::<String>::new());
}
