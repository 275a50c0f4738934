//! End to end: the HTTP endpoint (health, readiness, `/status`, `/metrics`, the bearer
//! token, `vigil reload`), the status page in headless Chromium, and secrets that never
//! reach logs, status, `/metrics` or exports.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr, memory_rule, vigil};
use vigil_testkit::host::mem_total_bytes;
use vigil_testkit::http::{get_until, request};
use vigil_testkit::otlp::OtlpReceiver;
use vigil_testkit::plugins::THRESHOLD;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const TOKEN: &str = "tok-S3cret-91ab";
const TOKEN_VAR: &str = "VIGIL_TEST_HTTP_TOKEN";

/// Starts an agent with the threshold plugin, the status endpoint on a free port with
/// a token, exporting to `receiver`; `extra` TOML is appended.
fn start_agent(
    ws: &Workspace,
    receiver: &OtlpReceiver,
    extra: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (AgentProcess, SocketAddr, std::path::PathBuf) {
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let addr = free_local_addr().unwrap();
    let config = ws
        .write_config(&ws.config_for(
            &receiver.endpoint,
            receiver.protocol,
            "300ms",
            &format!(
                "{}\n[http]\nlisten = \"{addr}\"\ntoken_env = \"{TOKEN_VAR}\"\n\n{extra}",
                memory_rule("memory-in-use", 0.0, "warning")
            ),
        ))
        .unwrap();
    let mut env = env.to_vec();
    env.push((TOKEN_VAR, TOKEN));
    let agent = AgentProcess::start_with(VIGIL, &config, &env, args).unwrap();
    (agent, addr, config)
}

async fn status_json(addr: SocketAddr) -> serde_json::Value {
    let answer = get_until(addr, "/status", Some(TOKEN), Duration::from_secs(15), |a| {
        a.status == 200
            && serde_json::from_str::<serde_json::Value>(&a.body).is_ok_and(|s| {
                s["firing_alerts"].as_array().is_some_and(|a| !a.is_empty())
                    && s["export"]["healthy"] == true
            })
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_endpoint_serves_health_status_metrics_and_reload_behind_a_token() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let (agent, addr, config) = start_agent(&ws, &receiver, "", &[], &[]);

    let ready = get_until(addr, "/readyz", None, Duration::from_secs(15), |a| {
        a.status == 200
    })
    .await
    .unwrap();
    assert_eq!(ready.status, 200, "{}", agent.log());
    assert_eq!(
        request(addr, "GET", "/healthz", None).await.unwrap().status,
        200
    );

    // The token guards the data, not the health checks.
    for path in ["/status", "/metrics"] {
        let answer = request(addr, "GET", path, None).await.unwrap();
        assert_eq!(answer.status, 401, "{path} without a token");
        let answer = request(addr, "GET", path, Some("wrong")).await.unwrap();
        assert_eq!(answer.status, 401, "{path} with a wrong token");
    }
    assert_eq!(
        request(addr, "POST", "/reload", None).await.unwrap().status,
        401
    );

    let status = status_json(addr).await;
    assert_eq!(status["collectors"]["system"]["up"], true, "{status:#}");
    assert!(status["collectors"]["system"]["rounds"].as_u64().unwrap() >= 1);
    let plugin = &status["plugins"][0];
    assert_eq!(plugin["name"], "threshold");
    assert_eq!(plugin["quarantined"], false);
    let alert = &status["firing_alerts"][0];
    assert_eq!(alert["key"]["rule"], "memory-in-use", "{status:#}");
    assert_eq!(alert["severity"], "warning");
    let since = alert["firing_since"].as_str().unwrap_or_default();
    assert!(
        since.len() == 24 && since.ends_with('Z'),
        "firing_since is RFC 3339 text: {since:?}"
    );
    assert_eq!(status["export"]["queue"]["metrics"]["capacity"], 100_000);
    let labels: Vec<&str> = status["sparklines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["label"].as_str())
        .collect();
    assert!(labels.contains(&"CPU utilization"), "{labels:?}");

    let metrics = request(addr, "GET", "/metrics", Some(TOKEN)).await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .content_type
            .starts_with("application/openmetrics-text")
    );
    let value_of = |line_start: &str| -> Vec<f64> {
        metrics
            .body
            .lines()
            .filter(|l| l.starts_with(line_start))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect()
    };
    let memory: f64 = value_of("system_memory_usage_bytes{").iter().sum();
    let total = mem_total_bytes();
    assert!(
        (memory - total).abs() / total < 0.05,
        "memory states sum to {memory}, MemTotal is {total}"
    );
    assert_eq!(
        value_of("vigil_alerts_firing{vigil_alert_severity=\"warning\"}"),
        [1.0],
        "{}",
        metrics.body
    );
    assert!(metrics.body.ends_with("# EOF\n"));

    // `vigil reload` finds the agent through the config's [http] section.
    let output = vigil(VIGIL)
        .args(["reload", "--config"])
        .arg(&config)
        .env(TOKEN_VAR, TOKEN)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let started = std::time::Instant::now();
    while !agent.log().contains("reload requested") && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agent.log().contains("reload requested"), "{}", agent.log());
}

fn chromium() -> &'static str {
    let path = "/usr/bin/chromium";
    assert!(
        Path::new(path).exists(),
        "headless Chromium is needed: apt-get install chromium (bash .ci/run does)"
    );
    path
}

/// Headless Chromium with what this closed network needs (no background connections).
fn headless(profile: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=4000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// The text inside the element with `id` in a DOM dump (up to its closing tag).
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    let end = rest.find("</section>").unwrap_or(rest.len());
    &rest[..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium_shows_the_firing_alert_and_plugin_health() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let (agent, addr, _) = start_agent(&ws, &receiver, "", &[], &[]);
    status_json(addr).await;

    let url = format!("http://{addr}/#token={TOKEN}");
    let profile = tempfile::tempdir().unwrap();
    let output = headless(profile.path())
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let alerts = element_text(&dom, "alerts");
    assert!(alerts.contains("memory-in-use"), "{alerts}");
    assert!(alerts.contains("warning"), "{alerts}");
    let plugins = element_text(&dom, "plugins");
    assert!(
        plugins.contains("threshold") && plugins.contains("healthy"),
        "{plugins}"
    );
    let collectors = element_text(&dom, "collectors");
    assert!(
        collectors.contains("system") && collectors.contains(">up<"),
        "{collectors}"
    );
    assert!(
        element_text(&dom, "sparklines").contains("<polyline"),
        "{dom}"
    );

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let output = headless(profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,900")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "screenshot at {}",
        shot.display()
    );
    println!("status page screenshot: {}", shot.display());
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_status_metrics_or_exports() {
    const PASSWORD: &str = "pg-S3cret-7f1c";
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    // Servers that refuse these logins, so the error paths run with the secrets in hand.
    let servers = r#"
[[collect.postgres]]
name = "pg"
url = "postgres://vigil_no_such_role@127.0.0.1:5432/test"
password_env = "VIGIL_TEST_DB_PASSWORD"
interval = "300ms"

[[collect.mysql]]
name = "maria"
url = "mysql://root@127.0.0.1:3306/test"
password_env = "VIGIL_TEST_DB_PASSWORD"
interval = "300ms"

[[collect.redis]]
name = "cache"
url = "redis://127.0.0.1:6379"
password_env = "VIGIL_TEST_DB_PASSWORD"
interval = "300ms"
"#;
    let (agent, addr, config) = start_agent(
        &ws,
        &receiver,
        servers,
        &[
            ("VIGIL_TEST_DB_PASSWORD", PASSWORD),
            ("RUST_LOG", "vigil=debug,info"),
        ],
        &["--log-format", "json"],
    );
    status_json(addr).await;
    let (_, received) = receiver
        .wait_for(Duration::from_secs(10), |r| {
            ["postgresql.up", "mysql.up", "redis.up"]
                .iter()
                .all(|m| r.latest_points(m).first().is_some_and(|p| p.value == 0.0))
        })
        .await;
    for metric in ["postgresql.up", "mysql.up", "redis.up"] {
        assert_eq!(
            received.latest_points(metric).first().map(|p| p.value),
            Some(0.0),
            "{metric}: the login must be refused for this test to mean anything:\n{}",
            agent.log()
        );
    }
    let status = request(addr, "GET", "/status", Some(TOKEN)).await.unwrap();
    let metrics = request(addr, "GET", "/metrics", Some(TOKEN)).await.unwrap();
    let check = vigil(VIGIL)
        .args(["check", "--config"])
        .arg(&config)
        .env("VIGIL_TEST_DB_PASSWORD", PASSWORD)
        .env(TOKEN_VAR, TOKEN)
        .output()
        .unwrap();
    let log = agent.log();
    assert!(
        log.contains("vigil_no_such_role") || log.contains("postgres"),
        "the refused login is logged:\n{log}"
    );
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("--log-format json writes JSON lines ({e}): {line}"));
        assert!(
            parsed["level"].is_string() && parsed["fields"].is_object(),
            "{line}"
        );
    }
    let places = [
        ("the log", log),
        ("/status", status.body),
        ("/metrics", metrics.body),
        ("the OTLP export", receiver.received().all_text()),
        (
            "vigil check",
            format!(
                "{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            ),
        ),
    ];
    for (place, text) in &places {
        for secret in [PASSWORD, TOKEN] {
            assert!(
                !text.contains(secret),
                "{place} shows the secret {secret}:\n{text}"
            );
        }
    }
}

/// Sum of the `/metrics` samples of `name` whose labels include every `(key, value)` of `with`.
fn scraped(body: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            with.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Plugin calls are counted once, in self-telemetry: the same counters on `/metrics` and
/// over OTLP, no histogram of their own, and a batch the plugin does not want (Redis) is
/// no call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_calls_are_counted_once_and_shown_on_metrics_and_over_otlp() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let redis = "[[collect.redis]]\nname = \"cache\"\nurl = \"redis://127.0.0.1:6379\"\ninterval = \"300ms\"\n";
    let (agent, addr, _) = start_agent(&ws, &receiver, redis, &[], &[]);
    status_json(addr).await;
    let rounds = |body: &str, collector: &str| {
        scraped(
            body,
            "vigil_collector_rounds_total",
            &[("vigil_collector", collector)],
        )
    };
    let metrics = get_until(
        addr,
        "/metrics",
        Some(TOKEN),
        Duration::from_secs(20),
        |a| {
            a.status == 200
                && rounds(&a.body, "redis:cache") >= 3.0
                && rounds(&a.body, "system") >= 3.0
        },
    )
    .await
    .unwrap();
    let body = &metrics.body;
    assert!(
        rounds(body, "redis:cache") >= 3.0,
        "{body}\n{}",
        agent.log()
    );
    let calls = scraped(
        body,
        "vigil_plugin_evaluations_total",
        &[("vigil_plugin", "threshold"), ("result", "ok")],
    );
    let system = rounds(body, "system");
    // The round in flight may be counted before its evaluation is.
    assert!(
        calls <= system && calls >= system - 1.0 && calls >= 1.0,
        "threshold is called once per system batch and never for a Redis batch: {calls} calls, {system} system rounds\n{body}"
    );
    assert!(
        scraped(
            body,
            "vigil_plugin_evaluation_time_seconds_total",
            &[("vigil_plugin", "threshold")]
        ) > 0.0,
        "{body}"
    );

    // The same counters arrive over OTLP (they catch up with the scrape by the next export).
    let otlp_calls = |r: &vigil_testkit::otlp::Received| {
        r.latest_points("vigil.plugin.evaluations")
            .into_iter()
            .find(|p| {
                p.attributes.get("vigil.plugin").map(String::as_str) == Some("threshold")
                    && p.attributes.get("result").map(String::as_str) == Some("ok")
            })
            .map_or(0.0, |p| p.value)
    };
    let (ok, received) = receiver
        .wait_for(Duration::from_secs(15), |r| {
            otlp_calls(r) >= calls && r.metric_names().contains("vigil.plugin.evaluation.time")
        })
        .await;
    assert!(
        ok,
        "{} calls over OTLP, {calls} on /metrics; {:?}",
        otlp_calls(&received),
        received.metric_names()
    );
    assert!(
        !received
            .metric_names()
            .contains("vigil.plugin.evaluation.duration"),
        "one path: no histogram beside the counters"
    );
}
