//! End to end: the HTTP endpoint (health, readiness, `/status`, `/metrics`, the bearer
//! token, `vigil reload`), the status page in headless Chromium, and secrets that never
//! reach logs, status, `/metrics` or exports.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr, memory_rule, vigil};
use vigil_testkit::alertmanager::{Alertmanager, BASIC_AUTH, BearerGate};
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

/// How the Alertmanager credential of one run of the secrets test is given.
#[derive(Debug, Clone, Copy)]
enum AmAuth {
    BearerEnv,
    BearerFile,
    BasicEnv,
    BasicFile,
}

/// One run of the secrets test: every secret the config accepts, given through the
/// environment or a file, with servers that refuse the database logins and an
/// Alertmanager that requires (and receives) the credential.
async fn secrets_run(case: usize, am_auth: AmAuth) {
    let from_file = case % 2 == 1;
    let secret = |kind: &str| format!("{kind}-S3cret-{case}-7f1c");
    let (pg_pw, my_pw, redis_pw, http_token) =
        (secret("pg"), secret("my"), secret("redis"), secret("http"));
    let bearer = secret("am");
    let basic = matches!(am_auth, AmAuth::BasicEnv | AmAuth::BasicFile);
    let am_secret = if basic {
        BASIC_AUTH.1.to_owned()
    } else {
        bearer.clone()
    };

    // The servers are up: a refused login below is the server's answer, not a closed port.
    for port in [5432, 3306, 6379] {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("the server on 127.0.0.1:{port} must be up: {e}"));
    }
    let am = if basic {
        Alertmanager::start_with_basic_auth().await.unwrap()
    } else {
        Alertmanager::start().await.unwrap()
    };
    let gate = BearerGate::start(&am.url, &bearer).await.unwrap();
    let am_url = if basic {
        am.url.clone()
    } else {
        gate.url.clone()
    };

    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let mut env: Vec<(String, String)> = vec![("RUST_LOG".into(), "debug".into())];
    // `KEY = ...` of a secret: `KEY_env` naming a variable, or `KEY_file` naming a file.
    let mut source = |key: &str, value: &str, file: bool| {
        let name = format!("VIGIL_TEST_{}", key.to_uppercase().replace('.', "_"));
        if file {
            let path = ws.dir.path().join(name.to_lowercase());
            std::fs::write(&path, format!("{value}\n")).unwrap();
            format!("{key}_file = {:?}", path.display().to_string())
        } else {
            env.push((name.clone(), value.to_owned()));
            format!("{key}_env = \"{name}\"")
        }
    };
    let pg = source("pg_password", &pg_pw, from_file).replacen("pg_password", "password", 1);
    let my = source("my_password", &my_pw, !from_file).replacen("my_password", "password", 1);
    let redis =
        source("redis_password", &redis_pw, from_file).replacen("redis_password", "password", 1);
    let token = source("http_token", &http_token, from_file).replacen("http_token", "token", 1);
    let am_auth_key = match am_auth {
        AmAuth::BearerEnv => source("bearer_token", &bearer, false),
        AmAuth::BearerFile => source("bearer_token", &bearer, true),
        AmAuth::BasicEnv | AmAuth::BasicFile => format!(
            "basic_auth = {{ username = {:?}, {} }}",
            BASIC_AUTH.0,
            source(
                "password",
                BASIC_AUTH.1,
                matches!(am_auth, AmAuth::BasicFile)
            )
        ),
    };
    let addr = free_local_addr().unwrap();
    let extra = format!(
        r#"{rule}
[http]
listen = "{addr}"
{token}

[[collect.postgres]]
name = "pg"
url = "postgres://vigil_no_such_role@127.0.0.1:5432/test"
{pg}
interval = "300ms"

[[collect.mysql]]
name = "maria"
url = "mysql://root@127.0.0.1:3306/test"
{my}
interval = "300ms"

[[collect.redis]]
name = "cache"
url = "redis://127.0.0.1:6379"
{redis}
interval = "300ms"

[export.alertmanager]
urls = ["{am_url}"]
timeout = "2s"
resend_interval = "1s"
{am_auth_key}
"#,
        rule = memory_rule("memory-in-use", 0.0, "warning"),
    );
    let config = ws
        .write_config(&ws.config_for(&receiver.endpoint, receiver.protocol, "300ms", &extra))
        .unwrap();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let agent =
        AgentProcess::start_with(VIGIL, &config, &env_refs, &["--log-format", "json"]).unwrap();
    let context = || format!("case {case} ({am_auth:?}):\n{}", agent.log());

    // The logins ran and were refused by the servers themselves.
    let (_, received) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            ["postgresql.up", "mysql.up", "redis.up"]
                .iter()
                .all(|m| r.latest_points(m).first().is_some_and(|p| p.value == 0.0))
        })
        .await;
    for metric in ["postgresql.up", "mysql.up", "redis.up"] {
        assert_eq!(
            received.latest_points(metric).first().map(|p| p.value),
            Some(0.0),
            "{metric}: the login must be refused for this test to mean anything\n{}",
            context()
        );
    }
    let refusals = [
        // Trust authentication: the server refuses the unknown role at login.
        (
            "PostgreSQL",
            "role \\\"vigil_no_such_role\\\" does not exist",
        ),
        // The password was sent, and refused.
        ("MariaDB", "(using password: YES)"),
        // AUTH was sent and refused (the server has no password).
        ("Redis", "Password authentication failed"),
    ];
    let started = std::time::Instant::now();
    while !refusals.iter().all(|(_, text)| agent.log().contains(text)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "missing login refusals {:?}\n{}",
            refusals
                .iter()
                .filter(|(_, text)| !agent.log().contains(text))
                .collect::<Vec<_>>(),
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !agent.log().to_lowercase().contains("connection refused"),
        "{}",
        context()
    );

    // Alertmanager accepted the alert: the credential was sent, and right.
    let (ok, alerts) = am
        .wait_for("memory-in-use", Duration::from_secs(60), |a| a.len() == 1)
        .await;
    assert!(ok, "{alerts:#?}\n{}\n{}", am.log(), context());
    if !basic {
        let seen = gate.seen();
        assert!(!seen.is_empty());
        let expected = format!("Bearer {bearer}");
        for request in &seen {
            assert_eq!(
                request.header("authorization"),
                Some(expected.as_str()),
                "{} {}",
                request.method,
                request.path
            );
        }
    }

    let status = request(addr, "GET", "/status", Some(&http_token))
        .await
        .unwrap();
    assert_eq!(status.status, 200, "the token from {token} guards /status");
    assert_eq!(
        request(addr, "GET", "/status", None).await.unwrap().status,
        401
    );
    let metrics = request(addr, "GET", "/metrics", Some(&http_token))
        .await
        .unwrap();
    let mut check = vigil(VIGIL);
    check.args(["check", "--config"]).arg(&config);
    for (k, v) in &env {
        check.env(k, v);
    }
    let check = check.output().unwrap();
    let log = agent.log();
    assert!(log.contains("\"level\":\"DEBUG\""), "RUST_LOG=debug: {log}");
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") && !l.contains("\"target\":\"vigil")),
        "other crates log at debug too:\n{log}"
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
        ("Alertmanager's alerts", format!("{alerts:?}")),
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
        for secret in [&pg_pw, &my_pw, &redis_pw, &http_token, &am_secret] {
            assert!(
                !text.contains(secret.as_str()),
                "case {case} ({am_auth:?}): {place} shows the secret {secret}:\n{text}"
            );
        }
    }
}

/// Every kind of secret the config accepts (database `password_env`/`password_file`, the
/// HTTP `token_env`/`token_file`, Alertmanager `bearer_token_env`/`_file` and
/// `basic_auth` `password_env`/`_file`), with every crate logging at debug in JSON: each
/// was used (the servers refused the logins, Alertmanager accepted the credential) and
/// none appears in the log, `/status`, `/metrics`, the export or `vigil check`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_status_metrics_or_exports() {
    for (case, am_auth) in [
        AmAuth::BearerEnv,
        AmAuth::BearerFile,
        AmAuth::BasicEnv,
        AmAuth::BasicFile,
    ]
    .into_iter()
    .enumerate()
    {
        secrets_run(case, am_auth).await;
    }
}
