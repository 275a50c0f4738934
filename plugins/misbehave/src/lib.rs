//! Test fixture: an alert rule that misbehaves on purpose, as its settings say.
//!
//! Settings: `{"mode": "...", "when": "describe" | "evaluate" | "always"}`, where `evaluate` (the
//! default) misbehaves on batches with data only, `always` on every evaluation, `describe` in
//! `describe`; and mode is
//! `loop` (never returns), `trap` (unreachable), `panic` (prints a line to stdout, then panics
//! with the message in `message`: the panic message goes to stderr, then the guest traps), `oom` (allocates until the memory cap),
//! `garbage` (returns findings the host must reject), `flood` (returns 2,000 findings, over the host's default cap of 1,000),
//! `fail` (returns an error), `count` (counts evaluations in the host state and reports the
//! count as the finding's key `n=N`), `flaky` (returns an error on its first `failures`
//! evaluations, counted in the host state, then reports one finding per batch) or `ok`
//! (reports one finding per batch).

use serde::Deserialize;

/// Guest bindings of the vigil:plugin/alert-rule world.
mod bindings {
    #![allow(clippy::too_many_arguments)] // generated code
    wit_bindgen::generate!({ world: "alert-rule", path: "../../wit", pub_export_macro: true });
}

use bindings::{Batch, Finding, PluginInfo};
use bindings::{Guest, vigil};

use vigil::plugin::host;
use vigil::plugin::types::Severity;

#[derive(Deserialize)]
struct Settings {
    mode: String,
    #[serde(default)]
    when: Option<String>,
    /// Evaluations that fail in `flaky` mode before it recovers.
    #[serde(default)]
    failures: u64,
    /// What `panic` mode panics with.
    #[serde(default)]
    message: String,
}

fn settings() -> Settings {
    serde_json::from_str(&host::config()).unwrap_or(Settings {
        mode: "ok".into(),
        when: None,
        failures: 0,
        message: String::new(),
    })
}

fn finding(rule: &str) -> Finding {
    Finding {
        rule: rule.into(),
        key: String::new(),
        severity: Severity::Info,
        summary: "misbehave fixture".into(),
        value: None,
        labels: Vec::new(),
        for_ms: 0,
    }
}

/// Counts this evaluation in the host's key/value state (which outlives reloads and
/// restarts after a trap) and returns the count, 1 for the first.
fn count_evaluation() -> Result<u64, String> {
    let n = host::state_get("n")
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
        + 1;
    host::state_set("n", &n.to_le_bytes())?;
    Ok(n)
}

/// Does what the mode says; returns the findings for the modes that return.
fn misbehave(settings: &Settings) -> Result<Vec<Finding>, String> {
    match settings.mode.as_str() {
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "trap" => core::arch::wasm32::unreachable(),
        "panic" => {
            println!("misbehave: about to panic");
            panic!("{}", settings.message)
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "garbage" => Ok(vec![finding(""), finding(&"x".repeat(100_000))]),
        "flood" => Ok((0..2_000).map(|i| finding(&format!("flood-{i}"))).collect()),
        "fail" => Err("misbehave fixture failed on purpose".into()),
        "count" => {
            let n = count_evaluation()?;
            let mut f = finding("count");
            f.key = format!("n={n}");
            f.value = Some(n as f64);
            Ok(vec![f])
        }
        "flaky" => {
            let n = count_evaluation()?;
            if n <= settings.failures {
                Err(format!(
                    "misbehave fixture fails evaluation {n} of {} on purpose",
                    settings.failures
                ))
            } else {
                Ok(vec![finding("misbehave-ok")])
            }
        }
        _ => Ok(vec![finding("misbehave-ok")]),
    }
}

struct Misbehave;

impl Guest for Misbehave {
    fn describe() -> Result<PluginInfo, String> {
        let settings = settings();
        if settings.when.as_deref() == Some("describe") {
            misbehave(&settings)?;
        }
        Ok(PluginInfo {
            name: "misbehave".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: vec!["*".into()],
        })
    }

    fn evaluate(batch: Batch) -> Result<Vec<Finding>, String> {
        let settings = settings();
        let quiet = match settings.when.as_deref() {
            Some("describe") => true,
            Some("always") => false,
            _ => batch.values.is_empty(),
        };
        if quiet {
            return Ok(Vec::new());
        }
        misbehave(&settings)
    }
}

bindings::export!(Misbehave with_types_in bindings);
