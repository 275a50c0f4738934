//! Replays every committed fuzz input, the seed corpora under `fuzz/corpus/TARGET/` and the
//! crash inputs libFuzzer left under `fuzz/artifacts/TARGET/`, through the entry function the
//! fuzz target calls (`vigil::fuzzing`). A crash found by `.ci/fuzz` and committed stays a
//! regression test of the normal `cargo test`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use vigil::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn entry(target: &str) -> Option<vigil::fuzzing::Entry> {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, entry)| *entry)
}

/// The files of every `fuzz/KIND/TARGET/` directory, by target.
fn inputs(kind: &str) -> Vec<(String, PathBuf)> {
    let dir = fuzz_dir().join(kind);
    let Ok(targets) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for target in targets {
        let target = target.unwrap().path();
        assert!(
            target.is_dir(),
            "{} is not a target directory",
            target.display()
        );
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        for file in std::fs::read_dir(&target).unwrap() {
            let file = file.unwrap().path();
            if file.is_file() {
                out.push((name.clone(), file));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_fuzz_target_calls_its_shared_entry_function() {
    let mut targets: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    let mut known: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    known.sort();
    assert_eq!(
        targets, known,
        "vigil::fuzzing::TARGETS lists every fuzz target"
    );
    for name in &targets {
        let source =
            std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(
            source.contains(&format!("vigil::fuzzing::{name}(data)")),
            "fuzz_targets/{name}.rs must call vigil::fuzzing::{name}, the function this replay runs:\n{source}"
        );
    }
}

#[test]
fn every_target_has_a_seed_corpus() {
    let corpus = inputs("corpus");
    for (name, _) in TARGETS {
        let seeds = corpus.iter().filter(|(t, _)| t == name).count();
        assert!(seeds > 0, "fuzz/corpus/{name}/ has no seed input");
    }
}

#[test]
fn corpus_and_crash_artifacts_replay_without_a_panic() {
    let mut all = inputs("corpus");
    all.extend(inputs("artifacts"));
    assert!(!all.is_empty());
    let mut failed = Vec::new();
    for (target, file) in &all {
        let entry =
            entry(target).unwrap_or_else(|| panic!("{}: no fuzz target {target}", file.display()));
        let data = std::fs::read(file).unwrap();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| entry(&data))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failed.push(format!("{target} {}: {message}", file.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "inputs that panic:\n{}",
        failed.join("\n")
    );
    println!("replayed {} fuzz inputs", all.len());
}
