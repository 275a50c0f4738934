//! The `ewma-anomaly` rule in every plugin language (Rust, Python, JavaScript, and C when
//! `plugins/c/` has it), built from source by `plugins/build.sh`, run through the agent's
//! own plugin runtime over the same batches: every language must report exactly the
//! findings the Rust reference reports, after every batch. Also measures what each
//! language costs (printed; run with `--nocapture` to see the table), and checks that
//! a build from the same source gives the same bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use vigil::model::{Batch, BatchBuilder, Finding, MetricDesc, MetricKind, attrs};
use vigil::plugin::{PluginInstance, PluginLimits, PluginRuntime};
use vigil_testkit::guest::{self, Lang};

/// The settings every language runs with: a short warmup so a spike can fire early.
const SETTINGS: &str = r#"{"metric":"test.latency","alpha":0.3,"k":3.0,"warmup":3,"severity":"critical","for_ms":60000}"#;

/// The limits `agent/src/plugin/instance.rs` tests use.
fn limits() -> PluginLimits {
    PluginLimits {
        deadline: Duration::from_secs(5),
        memory_bytes: 64 << 20,
        max_findings: 100,
    }
}

fn runtime(cache: &Path) -> PluginRuntime {
    PluginRuntime::new(limits())
        .unwrap()
        .with_cache_dir(cache, 1 << 30)
}

/// The languages whose `ewma-anomaly` exists here (C only once `plugins/c` has it).
fn languages() -> Vec<Lang> {
    Lang::ALL
        .into_iter()
        .filter(|lang| guest::exists(*lang, "ewma-anomaly"))
        .collect()
}

/// Twelve batches from two sources, `app` (8 batches) and `db` (4): a wobble around a
/// level per series; a spike on `app` during warmup (must not fire), spikes after warmup
/// on the other series (must fire), a series that appears on the 4th `app` batch and spikes later, and a
/// series without attributes on `db`. The runtime sends each source's table only when it
/// changed, so later batches exercise the plugins' kept tables.
fn fixture() -> Vec<Batch> {
    let latency = MetricDesc::new("test.latency", "ms", MetricKind::Gauge, "");
    let other = MetricDesc::new("test.other", "1", MetricKind::Gauge, "");
    let wobble = |round: usize, series: usize| ((round * 7 + series * 3) % 5) as f64 * 0.25;
    let mut batches = Vec::new();
    let (mut app, mut db) = (0, 0);
    for i in 0..12 {
        if i % 3 == 2 {
            let mut b = BatchBuilder::new("db", "h");
            let spike = if db == 3 { 500.0 } else { 0.0 };
            b.point(&latency, attrs([]), 40.0 + wobble(db, 0) + spike);
            db += 1;
            batches.push(b.build());
            continue;
        }
        let mut b = BatchBuilder::new("app", "h");
        b.point(&other, attrs([("host", "a")]), 1e9);
        let a = 10.0 + wobble(app, 0) + if app == 1 { 90.0 } else { 0.0 };
        b.point(&latency, attrs([("host", "a"), ("route", "/x")]), a);
        let spike_b = if app == 6 { -50.0 } else { 0.0 };
        b.point(
            &latency,
            attrs([("host", "b"), ("route", "/x")]),
            20.0 + wobble(app, 1) + spike_b,
        );
        if app >= 3 {
            let spike_c = if app == 7 { 30.0 } else { 0.0 };
            b.point(
                &latency,
                attrs([("host", "c")]),
                5.0 + wobble(app, 2) + spike_c,
            );
        }
        app += 1;
        batches.push(b.build());
    }
    batches
}

/// The findings of one plugin after each batch (`None`: the batch had nothing for it).
fn run(plugin: &mut PluginInstance, batches: &[Batch]) -> Vec<Option<Vec<Finding>>> {
    batches
        .iter()
        .enumerate()
        .map(|(i, batch)| {
            plugin
                .evaluate(batch)
                .unwrap_or_else(|e| panic!("{}: batch {i}: {e}", plugin.path().display()))
        })
        .collect()
}

/// A batch of `n` series of `test.latency` from source `bench`.
fn big_batch(n: usize, round: usize) -> Batch {
    let latency = MetricDesc::new("test.latency", "ms", MetricKind::Gauge, "");
    let mut b = BatchBuilder::new("bench", "h");
    for i in 0..n {
        let value = 100.0 + ((i * 13 + round * 7) % 11) as f64;
        b.point(&latency, attrs([("s", &i.to_string())]), value);
    }
    b.build()
}

/// What one language costs.
struct Cost {
    lang: Lang,
    size: u64,
    cold: Duration,
    cached: Duration,
    eval_10k: Duration,
    memory: usize,
}

#[test]
fn every_language_reports_what_the_rust_reference_reports() {
    let batches = fixture();
    let mut reference: Option<Vec<Option<Vec<Finding>>>> = None;
    let mut costs = Vec::new();
    for lang in languages() {
        let wasm = guest::plugin(lang, "ewma-anomaly").unwrap();
        let cache = tempfile::tempdir().unwrap();

        // Cold: compiled (and the compiled form written to the cache), started, described.
        let cold_runtime = runtime(cache.path());
        let started = Instant::now();
        let mut plugin =
            PluginInstance::load(&cold_runtime, &wasm, "ewma-anomaly", SETTINGS.into()).unwrap();
        let cold = started.elapsed();
        assert_eq!(plugin.info().name, "ewma-anomaly", "{lang:?}");
        assert_eq!(plugin.info().version, "0.1.0", "{lang:?}");
        assert_eq!(plugin.info().interests, ["test.latency"], "{lang:?}");

        let found = run(&mut plugin, &batches);
        match &reference {
            None => {
                assert_eq!(lang, Lang::Rust, "Rust is the reference");
                check_reference(&found);
                reference = Some(found);
            }
            Some(expected) => {
                for (i, (got, want)) in found.iter().zip(expected).enumerate() {
                    assert_eq!(got, want, "{lang:?} differs from Rust after batch {i}");
                }
            }
        }
        cold_runtime.cache().finish_writes();

        // Cached: a new runtime loads the compiled form from the cache.
        let warm_runtime = runtime(cache.path());
        let started = Instant::now();
        let mut plugin =
            PluginInstance::load(&warm_runtime, &wasm, "ewma-anomaly", SETTINGS.into()).unwrap();
        let cached = started.elapsed();
        // 10 000 series: the first batch sends the table and seeds the state; then timed.
        plugin.evaluate(&big_batch(10_000, 0)).unwrap();
        let rounds = 5;
        let mut total = Duration::ZERO;
        for round in 1..=rounds {
            let batch = big_batch(10_000, round);
            let started = Instant::now();
            plugin.evaluate(&batch).unwrap();
            total += started.elapsed();
        }
        costs.push(Cost {
            lang,
            size: std::fs::metadata(&wasm).unwrap().len(),
            cold,
            cached,
            eval_10k: total / rounds as u32,
            memory: plugin.memory_bytes(),
        });
    }
    assert!(costs.len() >= 3, "Rust, Python and JavaScript all ran");
    println!(
        "| language | component | cold compile+load | cached load | evaluate 10k series | linear memory |"
    );
    println!("|---|---|---|---|---|---|");
    for c in &costs {
        println!(
            "| {} | {:.2} MB | {:.2} s | {:.1} ms | {:.1} ms | {:.1} MB |",
            c.lang.name(),
            c.size as f64 / 1e6,
            c.cold.as_secs_f64(),
            c.cached.as_secs_f64() * 1e3,
            c.eval_10k.as_secs_f64() * 1e3,
            c.memory as f64 / (1 << 20) as f64,
        );
    }
}

/// The reference itself fires where the fixture means it to, and nowhere else.
fn check_reference(found: &[Option<Vec<Finding>>]) {
    let keys: Vec<Vec<&str>> = found
        .iter()
        .map(|f| {
            f.as_ref()
                .expect("every batch holds test.latency")
                .iter()
                .map(|f| f.key.as_str())
                .collect()
        })
        .collect();
    let mut expected: Vec<Vec<&str>> = vec![Vec::new(); 12];
    // app batches are 0 1 3 4 6 7 9 10 (its rounds 0..8), db batches 2 5 8 11.
    // The spike on host a in app round 1 (batch 1) is inside the warmup: nothing. Round 6
    // (batch 9): host b drops; round 7 (batch 10): host c, which appeared in round 3;
    // db's 4th batch (batch 11): its series without attributes.
    expected[9] = vec!["host=b,route=/x"];
    expected[10] = vec!["host=c"];
    expected[11] = vec![""];
    assert_eq!(keys, expected);
    let first = &found[9].as_ref().unwrap()[0];
    assert_eq!(first.rule, "ewma-anomaly");
    assert_eq!(first.summary, "test.latency is outside its usual range");
    assert_eq!(first.severity, vigil::model::Severity::Critical);
    assert_eq!(first.hold_for, Duration::from_secs(60));
    assert!(first.labels.is_empty());
}

#[test]
fn invalid_settings_are_refused_naming_the_setting_in_every_language() {
    for lang in languages() {
        let wasm = guest::plugin(lang, "ewma-anomaly").unwrap();
        let runtime = runtime(Path::new(""));
        for (settings, name) in [
            (r#"{"alpha":0.5}"#, "metric"),
            (r#"{"metric":"m","k":-1}"#, "k"),
        ] {
            let err = match PluginInstance::load(&runtime, &wasm, "ewma-anomaly", settings.into()) {
                Ok(_) => panic!("{lang:?} accepted {settings}"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(&format!("setting {name}")), "{lang:?}: {err}");
        }
    }
}

/// Copies what a plugin build reads (plugins/ without build outputs, and wit/) to `to`.
fn copy_checkout(to: &Path) {
    let repo = guest::repo();
    for dir in ["plugins", "wit"] {
        copy_dir(&repo.join(dir), &to.join(dir));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if ["target", "node_modules"].contains(&name.to_str().unwrap_or_default()) {
            continue;
        }
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `plugins/build.sh` from the same source gives the same bytes, wherever the checkout is:
/// Rust (and C) from scratch in a fresh target dir; Python and JavaScript (whose tools
/// snapshot an interpreter heap that differs per run) by keeping a component whose input
/// digest is unchanged, a digest that does not depend on the checkout's location.
#[test]
fn the_plugin_build_gives_the_same_bytes_from_the_same_source() {
    let langs = languages();
    let here = tempfile::tempdir().unwrap();
    let first = here.path().join("first");
    let build = |repo: &Path, out: &Path, rust_target: &Path| -> String {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(repo.join("plugins/build.sh"))
            .arg(out)
            .env("CARGO_TARGET_DIR", guest::target_dir())
            .env("VIGIL_RUST_TARGET_DIR", rust_target)
            .env("VIGIL_RUST_PACKAGES", "ewma-anomaly")
            .env("VIGIL_WIT", repo.join("wit"))
            .env(
                "VIGIL_LANGS",
                langs.iter().map(|l| l.name()).collect::<Vec<_>>().join(" "),
            );
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
        ] {
            cmd.env_remove(var);
        }
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "plugins/build.sh failed:\n{stderr}"
        );
        stderr
    };
    let shared_rust_target = guest::target_dir().join("wasm-plugins");
    build(&guest::repo(), &first, &shared_rust_target);

    // The same source at another path, a fresh Rust target dir, the Python/JS outputs of
    // the first build (with their input digests) already in place.
    let checkout = here.path().join("elsewhere");
    copy_checkout(&checkout);
    let second = here.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    for lang in [Lang::Python, Lang::Js] {
        let file = lang.file_name("ewma-anomaly");
        std::fs::copy(first.join(&file), second.join(&file)).unwrap();
        let inputs = format!("{file}.inputs");
        std::fs::copy(first.join(&inputs), second.join(&inputs)).unwrap();
    }
    let log = build(&checkout, &second, &here.path().join("rust-target"));
    assert!(
        !log.contains("ewma-anomaly.wasm from"),
        "an unchanged Python/JS source was rebuilt from another checkout path:\n{log}"
    );
    for lang in &langs {
        let file = lang.file_name("ewma-anomaly");
        let (a, b) = (sha256(&first.join(&file)), sha256(&second.join(&file)));
        assert!(!a.is_empty(), "{file} was not built");
        assert_eq!(a, b, "{file}: two builds of the same source differ");
    }

    // A changed source is rebuilt.
    let app = checkout.join("plugins/python/ewma-anomaly/app.py");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{text}\n# changed\n")).unwrap();
    let log = build(&checkout, &second, &here.path().join("rust-target"));
    assert!(
        log.contains("py-ewma-anomaly.wasm"),
        "a changed app.py was not rebuilt:\n{log}"
    );
}

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// Runs `program args` in `dir` with `env`; panics with its output when it fails.
fn run_in(dir: &Path, program: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).current_dir(dir);
    for (key, value) in env {
        cmd.env(key, value);
    }
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} in {}:\n{text}",
        dir.display()
    );
    text
}

/// `vigil plugin new` makes a project per language and world that builds with the pinned
/// tools and passes its own tests (`test.sh`: `vigil plugin test test/NAME.toml`).
#[test]
fn a_new_plugin_project_builds_and_passes_its_test_in_every_language() {
    let here = tempfile::tempdir().unwrap();
    let target = guest::target_dir();
    for (lang, world) in [
        ("rust", "alert-rule"),
        ("python", "alert-rule"),
        ("js", "alert-rule"),
        ("c", "alert-rule"),
        ("rust", "tuning-policy"),
        ("python", "tuning-policy"),
        ("js", "tuning-policy"),
        ("c", "tuning-policy"),
    ] {
        let name = format!("{lang}-{world}");
        let out = run_in(
            here.path(),
            VIGIL,
            &[
                "plugin", "new", &name, "--lang", lang, "--world", world, "--dir", ".",
            ],
            &[],
        );
        assert!(out.contains("created"), "{out}");
        let project = here.path().join(&name);
        for file in [
            "README.md",
            "build.sh",
            "test.sh",
            "fixtures/batch.json",
            "wit/worlds.wit",
        ] {
            assert!(project.join(file).is_file(), "{name}: {file} is missing");
        }
        // The same pinned tools the plugin build uses, kept under the target dir.
        let rust_target = target.join("scaffold-rust");
        let venv = target.join("python/venv");
        // C: the clang chain and the cargo-installed tools plugins/c/build.sh put there.
        let tools = target.join("tools");
        let env: Vec<(&str, &Path)> = vec![
            ("CARGO_TARGET_DIR", &rust_target),
            ("VENV", &venv),
            ("TOOLS", &tools),
        ];
        run_in(&project, "bash", &["build.sh"], &env);
        assert!(
            project.join(format!("{name}.wasm")).is_file(),
            "{name}: no {name}.wasm"
        );
        let out = run_in(
            &project,
            "bash",
            &["test.sh"],
            &[("VIGIL", Path::new(VIGIL))],
        );
        assert!(
            out.contains("PASS") && out.contains("0 failed"),
            "{name}: {out}"
        );
    }
    // Asking again for the same project is refused, and an unknown pair is explained.
    let out = std::process::Command::new(VIGIL)
        .args([
            "plugin",
            "new",
            "rust-alert-rule",
            "--lang",
            "rust",
            "--dir",
        ])
        .arg(here.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn the_rust_reference_is_the_component_the_testkit_built() {
    assert_eq!(
        guest::plugin(Lang::Rust, "ewma-anomaly").unwrap(),
        std::path::PathBuf::from(vigil_testkit::plugins::EWMA_ANOMALY)
    );
}
