//! End to end: what a newcomer sees in the first minute of `vigil run`: the first export
//! failure says what to do (once), a second Ctrl-C exits at once while the first waits
//! for the graceful shutdown, and `[export.debug]` prints what is collected on stdout.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr, output_text, vigil};
use vigil_testkit::otlp::OtlpReceiver;
use vigil_testkit::plugins::THRESHOLD;
use vigil_testkit::redis::OwnRedis;
use vigil_testkit::servers::{redis_conn, redis_set};
use vigil_testkit::silent::SilentServer;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const HINT: &str = "To see the data:";
const RETRYING: &str = "retrying with back-off";

/// Waits up to 60 s until the agent's log holds `text` at least `times` times; the log.
fn wait_for_log(agent: &AgentProcess, text: &str, times: usize) -> String {
    let started = Instant::now();
    loop {
        let log = agent.log();
        if log.matches(text).count() >= times {
            return log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent did not log {text:?} {times} time(s) within 60 s; its log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send_signal(agent: &AgentProcess, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &agent.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_export_failure_says_what_to_do_and_only_once() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let receiver_addr = free_local_addr()?;
    let status_addr = free_local_addr()?;
    let config = ws.write_config(&ws.config_for(
        &format!("http://{receiver_addr}"),
        "grpc",
        "200ms",
        &format!("[export.queue]\nmax_backoff = \"400ms\"\n\n[http]\nlisten = \"{status_addr}\"\n"),
    ))?;
    let agent = AgentProcess::start(VIGIL, &config)?;

    // No collector listens: the first failure's warning says what to do.
    let log = wait_for_log(&agent, RETRYING, 1);
    let warning = log
        .lines()
        .find(|line| line.contains(RETRYING))
        .unwrap_or_default();
    for expected in [
        HINT,
        "otelcol",
        &format!("port {}", receiver_addr.port()),
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "[export.debug]",
        &format!("http://{status_addr}/"),
    ] {
        assert!(
            warning.contains(expected),
            "the first export warning lacks {expected:?}:\n{warning}"
        );
    }

    // A collector comes up, then goes away again: the second outage's warning has no hint.
    let receiver = OtlpReceiver::grpc_on(receiver_addr).await?;
    wait_for_log(&agent, "OTLP export works again", 1);
    drop(receiver);
    let log = wait_for_log(&agent, RETRYING, 2);
    assert_eq!(
        log.matches(HINT).count(),
        1,
        "the hint is given once, with the first failure only; the log:\n{log}"
    );
    Ok(())
}

/// As with the embedded default on a machine without the package: no plugin directory
/// and no collector. The plugin directory gets one info line, so the first warning the
/// newcomer sees is the export failure with its hint.
#[test]
fn without_a_plugin_directory_the_first_warning_is_the_export_hint() -> anyhow::Result<()> {
    let ws = Workspace::new()?;
    let (receiver_addr, status_addr) = (free_local_addr()?, free_local_addr()?);
    let config = ws.write_config(&format!(
        "[collect.system]\ninterval = \"200ms\"\n\n[plugins]\ndir = \"not-created-yet\"\ncache_dir = \"\"\n\n\
         [export.otlp]\nendpoint = \"http://{receiver_addr}\"\ninterval = \"200ms\"\n\n[http]\nlisten = \"{status_addr}\"\n"
    ))?;
    let agent = AgentProcess::start(VIGIL, &config)?;
    let log = wait_for_log(&agent, RETRYING, 1);
    let first_problem = log
        .lines()
        .find(|line| line.contains("WARN") || line.contains("ERROR"))
        .unwrap_or_default();
    assert!(
        first_problem.contains(RETRYING) && first_problem.contains(HINT),
        "the first warning is not the export hint; the log:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("not-created-yet does not exist")),
        "{log}"
    );
    Ok(())
}

#[test]
fn a_second_ctrl_c_exits_at_once_while_the_first_waits_for_the_graceful_shutdown()
-> anyhow::Result<()> {
    // A collector that accepts and never answers, and a long shutdown deadline: the
    // graceful shutdown after the first SIGINT waits for the unanswered export.
    let silent = SilentServer::start()?;
    let ws = Workspace::new()?;
    let config = ws.write_config(&format!(
        r#"
[agent]
shutdown_timeout = "300s"

[collect.system]
interval = "200ms"

[plugins]
dir = "plugins"
cache_dir = ""

[export.otlp]
endpoint = "http://{}"
interval = "200ms"
timeout = "300s"

[http]
enabled = false
"#,
        silent.addr
    ))?;
    let mut agent = AgentProcess::start(VIGIL, &config)?;
    assert!(
        silent.wait_for_connection(Duration::from_secs(60)),
        "the agent never connected to the collector; its log:\n{}",
        agent.log()
    );

    send_signal(&agent, "-INT");
    wait_for_log(&agent, "press Ctrl-C again to exit at once", 1);
    wait_for_log(&agent, "stopping:", 1);
    assert!(
        agent.wait_exit(Duration::from_secs(3))?.is_none(),
        "after one SIGINT the agent waits for its unanswered export (shutdown_timeout 300s); its log:\n{}",
        agent.log()
    );

    send_signal(&agent, "-INT");
    let status = agent.wait_exit(Duration::from_secs(60))?;
    let log = agent.log();
    let status = status.unwrap_or_else(|| panic!("a second SIGINT did not end the agent:\n{log}"));
    assert_eq!(
        status.code(),
        Some(130),
        "exit status {status}; log:\n{log}"
    );
    assert_eq!(
        log.matches("interrupted again (second Ctrl-C): exiting at once with code 130")
            .count(),
        1,
        "{log}"
    );
    assert!(
        !log.contains("stopped"),
        "the graceful shutdown did not finish; log:\n{log}"
    );
    Ok(())
}

/// The value `INFO SECTION` shows for `field` (e.g. `maxmemory`, or `db0` for its text).
fn info_field(url: &str, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut redis_conn(url))
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}:\n{info}"))
        .trim()
        .to_owned()
}

/// The value printed on the `[export.debug]` line of `metric` whose attributes include `attribute`.
fn printed_value(stdout: &str, metric: &str, attribute: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("  {metric}{{")) && l.contains(attribute))
        .unwrap_or_else(|| panic!("no line for {metric} with {attribute}:\n{stdout}"));
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value at the end of {line:?}"))
}

#[test]
fn export_debug_prints_the_collected_values_and_alert_events() -> anyhow::Result<()> {
    let redis = OwnRedis::start_free();
    let url = redis.url();
    let mut conn = redis_conn(&url);
    for key in ["a", "b", "c"] {
        let _: () = redis::cmd("SET").arg(key).arg("1").query(&mut conn)?;
    }
    let _: () = redis::cmd("EXPIRE").arg("a").arg(3600).query(&mut conn)?;
    redis_set(&url, "maxmemory", "12345678");

    let ws = Workspace::new()?;
    ws.add_plugin("threshold", THRESHOLD)?;
    let config = ws.write_config(&format!(
        r#"
[collect.system]
enabled = false

[[collect.redis]]
name = "mine"
url = "{url}"

[plugins]
dir = "plugins"
cache_dir = "cache"

[[plugins.settings.threshold.rules]]
name = "has-keys"
metric = "redis.db.keys"
op = ">="
value = 1.0
severity = "warning"

[export.otlp]
enabled = false

[export.debug]
verbosity = "normal"
"#
    ))?;
    let output = vigil(VIGIL)
        .args(["run", "--once", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()?;
    let text = output_text(&output);
    assert!(output.status.success(), "vigil run --once failed:\n{text}");
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("batch source=redis:mine ")),
        "no batch line for redis:mine:\n{stdout}"
    );
    let keyspace = info_field(&url, "keyspace", "db0");
    let keys: f64 = keyspace
        .split(',')
        .find_map(|kv| kv.strip_prefix("keys="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no keys= in {keyspace}"));
    assert_eq!(keys, 3.0);
    assert_eq!(printed_value(&stdout, "redis.db.keys", "db=\"0\""), keys);
    let expires: f64 = keyspace
        .split(',')
        .find_map(|kv| kv.strip_prefix("expires="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no expires= in {keyspace}"));
    assert_eq!(
        printed_value(&stdout, "redis.db.expires", "db=\"0\""),
        expires
    );
    let maxmemory: f64 = info_field(&url, "memory", "maxmemory").parse()?;
    assert_eq!(maxmemory, 12_345_678.0);
    assert_eq!(
        printed_value(&stdout, "redis.maxmemory", "vigil.instance=\"mine\""),
        maxmemory
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("alert firing plugin=threshold rule=has-keys ")),
        "no alert event line:\n{stdout}"
    );
    Ok(())
}
