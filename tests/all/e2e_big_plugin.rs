//! End to end with an interpreter-sized plugin (the Python threshold rule, an ~18 MB
//! component built with componentize-py): it compiles in a child process, so the
//! agent's RSS grows by little more than the plugin's linear memory and `/status`
//! answers while it compiles; a compiler child that runs out of memory or time leaves
//! the running version in place and is logged once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr, run_to_end};
use vigil_testkit::host::process_status_bytes;
use vigil_testkit::http::{get_until, request};
use vigil_testkit::plugins::THRESHOLD;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
/// Generous: a cold compile of the Python component takes ~10 s on a quiet machine.
const COMPILE_WAIT: Duration = Duration::from_secs(240);
const MIB: u64 = 1 << 20;

/// A config with the status endpoint on `addr`, system metrics every 300 ms, no export,
/// the plugin directory and compile cache of this workspace, and `extra` TOML.
fn config(addr: SocketAddr, plugins_extra: &str, extra: &str) -> String {
    format!(
        r#"
[agent]
shutdown_timeout = "3s"

[collect.system]
interval = "300ms"

[plugins]
dir = "plugins"
cache_dir = "cache"
memory_limit_mib = 256
deadline = "2s"
{plugins_extra}

[export.otlp]
enabled = false

[http]
listen = "{addr}"

{extra}
"#
    )
}

/// A rule for plugin `name` that holds while memory is in use (always).
fn memory_rule(name: &str) -> String {
    format!(
        r#"
[[plugins.settings.{name}.rules]]
name = "memory-in-use"
metric = "system.memory.utilization"
op = ">="
value = 0.0
match = {{ "system.memory.state" = "used" }}
"#
    )
}

/// Copies `source` into the plugin directory as `NAME.wasm` in one step (a rename), so
/// the agent never sees half a file.
fn install(ws: &Workspace, name: &str, source: &Path) {
    let staged = ws.plugins().join(format!(".{name}.staged"));
    std::fs::copy(source, &staged).unwrap();
    std::fs::rename(&staged, ws.plugins().join(format!("{name}.wasm"))).unwrap();
}

/// `/status` as JSON; panics if the endpoint does not answer within 10 s.
async fn status(addr: SocketAddr) -> Value {
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        request(addr, "GET", "/status", None),
    )
    .await
    .expect("/status answers")
    .expect("/status request");
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

/// The entry of plugin `name` in a `/status` document.
fn plugin<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

fn sha256_hex(path: &str) -> String {
    vigil::plugin::cache::content_hash(&std::fs::read(path).unwrap())
}

/// Waits until `/readyz` says every collector finished a round, then a little more for
/// the first rounds' allocations to settle, and returns the agent's RSS.
async fn steady_rss(agent: &AgentProcess, addr: SocketAddr) -> u64 {
    let ready = get_until(addr, "/readyz", None, Duration::from_secs(20), |a| {
        a.status == 200
    })
    .await
    .unwrap();
    assert_eq!(ready.status, 200, "{}", agent.log());
    let mut rss = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss = rss.max(process_status_bytes(agent.id(), "VmRSS").unwrap());
    }
    rss
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_plugin_compiles_outside_the_agent_while_status_answers() {
    let python = vigil_testkit::python::plugin("threshold").unwrap();
    let ws = Workspace::new().unwrap();
    let addr = free_local_addr().unwrap();
    let config = ws
        .write_config(&config(addr, "", &memory_rule("big")))
        .unwrap();
    let mut agent = AgentProcess::start_with(
        VIGIL,
        &config,
        &[("RUST_LOG", "info,vigil=debug"), ("NO_COLOR", "1")],
        &[],
    )
    .unwrap();
    let before = steady_rss(&agent, addr).await;

    // Hot-load it; every poll of /status is answered while it compiles.
    install(&ws, "big", &python);
    let started = Instant::now();
    let mut answered_while_compiling = 0;
    let loaded = loop {
        let status = status(addr).await;
        if let Some(loaded) = plugin(&status, "big") {
            break loaded.clone();
        }
        assert!(
            status["plugin_load_failures"].get("big").is_none(),
            "{status}"
        );
        assert!(started.elapsed() < COMPILE_WAIT, "{}", agent.log());
        answered_while_compiling += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(answered_while_compiling > 0);
    assert_eq!(loaded["version"], "0.1.0", "{loaded}");
    assert!(agent.log().contains("cache=Miss"), "{}", agent.log());

    // It evaluates: its finding fires.
    let fired = get_until(addr, "/status", None, Duration::from_secs(30), |a| {
        a.body.contains("memory-in-use")
    })
    .await
    .unwrap();
    assert!(fired.body.contains("memory-in-use"), "{}", agent.log());

    // The agent grew by the plugin's linear memory and little else.
    let after = steady_rss(&agent, addr).await;
    let status = status(addr).await;
    let memory = plugin(&status, "big").unwrap()["memory_bytes"]
        .as_u64()
        .unwrap();
    eprintln!(
        "agent RSS: {} MiB without the plugin, {} MiB with it (linear memory {} MiB)",
        before / MIB,
        after / MIB,
        memory / MIB
    );
    assert!(
        after <= before + memory + 64 * MIB,
        "RSS {} MiB > {} MiB before + {} MiB linear memory + 64 MiB",
        after / MIB,
        before / MIB,
        memory / MIB
    );
    assert!(agent.is_running());
}

/// Runs the Rust threshold rule as `rule`, then puts the Python component in its place
/// under `limit` (a `[plugins]` line): the compiler child fails with `expected`, the
/// agent keeps running the old version and says so once.
async fn second_version_is_refused(limit: &str, expected: &str) {
    let python = vigil_testkit::python::plugin("threshold").unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("rule", THRESHOLD).unwrap();
    let addr = free_local_addr().unwrap();
    // `vigil check` without the limit puts the running version in the compile cache,
    // so under the limit only the second version compiles.
    let unlimited = ws
        .write_config(&config(addr, "", &memory_rule("rule")))
        .unwrap();
    let checked = run_to_end(VIGIL, &["check", "--config", unlimited.to_str().unwrap()]).unwrap();
    assert!(checked.status.success(), "{checked:?}");
    let config = ws
        .write_config(&config(addr, limit, &memory_rule("rule")))
        .unwrap();
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();
    let old_hash = sha256_hex(THRESHOLD);
    let running = get_until(addr, "/status", None, Duration::from_secs(30), |a| {
        a.body.contains(&old_hash)
    })
    .await
    .unwrap();
    assert!(running.body.contains(&old_hash), "{}", agent.log());

    install(&ws, "rule", &python);
    let started = Instant::now();
    while !agent.log().contains(expected) {
        assert!(started.elapsed() < COMPILE_WAIT, "{}", agent.log());
        assert!(agent.is_running(), "{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The same file again, then another plugin: once that one is loaded, the plugin
    // worker has seen the repeated file, and said nothing more about it.
    install(&ws, "rule", &python);
    ws.add_plugin("other", THRESHOLD).unwrap();
    let other = get_until(addr, "/status", None, COMPILE_WAIT, |a| {
        a.body.contains("\"other\"")
    })
    .await
    .unwrap();
    assert!(other.body.contains("\"other\""), "{}", agent.log());
    let log = agent.log();
    assert_eq!(log.matches(expected).count(), 1, "{log}");
    assert!(log.contains("rule.wasm"), "{log}");
    assert!(log.contains("the running version stays"), "{log}");

    let status = status(addr).await;
    let rule = plugin(&status, "rule").unwrap();
    assert_eq!(rule["content_hash"], old_hash.as_str(), "{status}");
    let failure = status["plugin_load_failures"]["rule"].as_str().unwrap();
    assert!(failure.contains(expected), "{failure}");
    assert!(agent.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compiler_child_out_of_memory_leaves_the_running_version() {
    second_version_is_refused(
        "compile_memory_mib = 64",
        "compiler child exceeded its memory limit of 64 MiB (plugins.compile_memory_mib)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compiler_child_out_of_time_leaves_the_running_version() {
    second_version_is_refused(
        "compile_timeout = \"1s\"",
        "compiler child was killed after 1s (plugins.compile_timeout)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_while_the_plugin_directory_loads_at_start() {
    let python = vigil_testkit::python::plugin("threshold").unwrap();
    let ws = Workspace::new().unwrap();
    install(&ws, "big", &python);
    let addr = free_local_addr().unwrap();
    let config = ws
        .write_config(&config(addr, "", &memory_rule("big")))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();

    // A cold cache: the plugin compiles while /status answers and says it is loading.
    let first = get_until(addr, "/status", None, Duration::from_secs(30), |a| {
        a.status == 200
    })
    .await
    .unwrap();
    assert_eq!(first.status, 200, "{}", agent.log());
    let started = Instant::now();
    let mut seen_loading = false;
    loop {
        let status = status(addr).await;
        if plugin(&status, "big").is_some() {
            assert_eq!(status["plugins_loading"], 0, "{status}");
            break;
        }
        seen_loading |= status["plugins_loading"] == 1;
        assert!(started.elapsed() < COMPILE_WAIT, "{}", agent.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_loading, "{}", agent.log());
    assert!(
        agent.log().contains("plugin directory loaded"),
        "{}",
        agent.log()
    );
}
