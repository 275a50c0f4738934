//! End to end: the HTTP endpoint (health, readiness, `/status`, `/metrics`, the bearer
//! token, `vigil reload`), the status page in headless Chromium, and secrets that never
//! reach logs, status, `/metrics` or exports; the endpoint's limits (out of file
//! descriptors, idle connections, oversized bodies), `enabled = false` and a taken address.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr, memory_rule, vigil};
use vigil_testkit::alertmanager::{Alertmanager, BASIC_AUTH, BearerGate};
use vigil_testkit::host::{mem_total_bytes, open_fds, process_cpu_time};
use vigil_testkit::http::{get_until, request};
use vigil_testkit::otlp::OtlpReceiver;
use vigil_testkit::plugins::{ECHO_POLICY, THRESHOLD};
use vigil_testkit::silent::SilentServer;

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

    // The agent's own series (vigil_*) are refreshed at each export tick: wait for the
    // one after the alert fired.
    let firing_line = "vigil_alerts_firing{vigil_alert_severity=\"warning\"} 1";
    let metrics = get_until(
        addr,
        "/metrics",
        Some(TOKEN),
        Duration::from_secs(10),
        |a| a.body.contains(firing_line),
    )
    .await
    .unwrap();
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
    while !agent.log().contains("reload requested") && started.elapsed() < Duration::from_secs(20) {
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

/// Starts an agent exporting to `receiver` every second with the status endpoint on a
/// free port (no token) and `extra` TOML appended to `[http]`.
fn start_plain_agent(
    ws: &Workspace,
    receiver: &OtlpReceiver,
    http_extra: &str,
) -> (AgentProcess, SocketAddr) {
    let addr = free_local_addr().unwrap();
    let config = ws
        .write_config(&ws.config_for(
            &receiver.endpoint,
            receiver.protocol,
            "1s",
            &format!("[http]\nlisten = \"{addr}\"\n{http_extra}\n"),
        ))
        .unwrap();
    (AgentProcess::start(VIGIL, &config).unwrap(), addr)
}

/// Polls `condition` every 50 ms for up to `timeout`; whether it came true.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while !condition() {
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_idles_logs_once_and_recovers() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let (agent, addr) = start_plain_agent(&ws, &receiver, "");
    let health = get_until(addr, "/healthz", None, Duration::from_secs(20), |a| {
        a.status == 200
    })
    .await
    .unwrap();
    assert_eq!(health.status, 200, "{}", agent.log());

    // Leave the agent a few free descriptors (new ones take the lowest free numbers),
    // fewer than its connection limit, then hold far more connections than that.
    let pid = agent.id();
    let original = nofile_limits(pid);
    let limit = open_fds(pid).unwrap() + 8;
    // Only the soft limit: raising it back needs no privilege.
    let hard = original.split(':').nth(1).unwrap_or("unlimited").to_owned();
    set_nofile(pid, &format!("{limit}:{hard}"));
    // (100: more than the free descriptors, fewer than the listen backlog of 128, so
    // every connect() completes at once.)
    let held: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let failing = wait_until(Duration::from_secs(20), || {
        agent.log().contains("cannot accept connections") || agent_busy(pid)
    });
    assert!(
        failing,
        "the agent never ran out of descriptors:\n{}",
        agent.log()
    );

    // Out of descriptors with connections waiting: the agent must idle, not spin.
    let before = process_cpu_time(pid).unwrap();
    let window = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let used = process_cpu_time(pid).unwrap() - before;
    let share = used.as_secs_f64() / window.elapsed().as_secs_f64();
    assert!(
        share < 0.3,
        "the agent used {:.0}% of a core while accept() failed:\n{}",
        share * 100.0,
        agent.log()
    );
    let log = agent.log();
    assert_eq!(
        lines_with(&log, "cannot accept connections"),
        1,
        "one line per kind of accept error:\n{log}"
    );
    assert!(log.contains("Too many open files"), "{log}");

    // The connections go and the operator gives the descriptors back: no more accept
    // errors from here on, on a machine however loaded.
    drop(held);
    set_nofile(pid, &original);
    let health = get_until(addr, "/healthz", None, Duration::from_secs(20), |a| {
        a.status == 200
    })
    .await;
    assert!(
        health.is_ok_and(|a| a.status == 200),
        "/healthz after the connections were released:\n{}",
        agent.log()
    );
    // The outage ends after 30 s without accept errors: one line says so.
    let recovered = wait_until(Duration::from_secs(60), || {
        agent.log().contains("accepts connections again")
    });
    let log = agent.log();
    assert!(recovered, "recovery is logged:\n{log}");
    assert_eq!(
        lines_with(&log, "cannot accept connections"),
        1,
        "one outage, one line:\n{log}"
    );
}

/// The soft and hard open-file limits of process `pid`, as `SOFT:HARD` for `prlimit`.
fn nofile_limits(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", fields[3], fields[4])
}

/// Sets the open-file limits of process `pid` (`SOFT:HARD`).
fn set_nofile(pid: u32, limits: &str) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limits}")])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit --nofile={limits} failed");
}

/// Whether the process uses more than half a core over 300 ms (the old accept loop spun
/// without logging anything).
fn agent_busy(pid: u32) -> bool {
    let before = process_cpu_time(pid).unwrap_or_default();
    std::thread::sleep(Duration::from_millis(300));
    let used = process_cpu_time(pid).unwrap_or_default() - before;
    used > Duration::from_millis(150)
}

/// Reads from `stream` until the peer closes it (EOF or reset); returns when, or `None`
/// if it is still open after `limit`.
async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> Option<std::time::Instant> {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(std::time::Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(10); // the default
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let (agent, addr) = start_plain_agent(&ws, &receiver, "");
    let health = get_until(addr, "/healthz", None, Duration::from_secs(20), |a| {
        a.status == 200
    })
    .await
    .unwrap();
    assert_eq!(health.status, 200, "{}", agent.log());

    let opened = std::time::Instant::now();
    // One connection never sends a byte, one sends half a header, one stays idle
    // after a keep-alive request.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let limit = HEADER_TIMEOUT * 3;
    for (name, stream) in [
        ("silent", &mut silent),
        ("partial header", &mut partial),
        ("idle keep-alive", &mut idle),
    ] {
        let closed = closed_within(stream, limit).await;
        let Some(closed) = closed else {
            panic!("the {name} connection is still open after {limit:?}");
        };
        let open_for = closed - opened;
        assert!(
            open_for >= HEADER_TIMEOUT - Duration::from_millis(500),
            "the {name} connection was closed after only {open_for:?}"
        );
    }
    assert!(agent.log().contains("vigil started"));
}

/// Sends `head` (and `body`) on a new connection and returns the response's status line.
async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    match read {
        Ok(Ok(_)) => text.lines().next().unwrap_or_default().to_owned(),
        Ok(Err(e)) => format!("error after {text:?}: {e}"),
        Err(_) => format!("no answer within 30 s, got {text:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let (agent, addr, _) = start_agent(&ws, &receiver, "", &[], &[]);
    let health = get_until(addr, "/healthz", None, Duration::from_secs(20), |a| {
        a.status == 200
    })
    .await
    .unwrap();
    assert_eq!(health.status, 200, "{}", agent.log());
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");

    // A declared length over the limit (64 KiB by default): refused before the body.
    let status = raw_request(
        addr,
        &format!("POST /reload HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 10485760\r\n\r\n"),
        b"",
    )
    .await;
    assert!(
        status.starts_with("HTTP/1.1 413"),
        "declared 10 MiB: {status}"
    );

    // A chunked body that streams past the limit.
    let chunk = vec![b'x'; 16 * 1024];
    let mut body = Vec::new();
    for _ in 0..13 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let status = raw_request(
        addr,
        &format!(
            "POST /reload HTTP/1.1\r\nHost: {addr}\r\n{auth}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ),
        &body,
    )
    .await;
    assert!(
        status.starts_with("HTTP/1.1 413"),
        "208 KiB chunked: {status}"
    );

    // A small body is read and ignored.
    let status = raw_request(
        addr,
        &format!(
            "POST /reload HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 5\r\nConnection: close\r\n\r\n"
        ),
        b"hello",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 202"), "5-byte body: {status}");
    // 202 means queued: the agent logs the request when its loop takes it.
    wait_until(Duration::from_secs(20), || {
        lines_with(&agent.log(), "reload requested") >= 1
    });
    assert_eq!(
        lines_with(&agent.log(), "reload requested"),
        1,
        "only the acceptable request reloads:\n{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_every_collector_finished_a_round() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let hung = SilentServer::start().unwrap();
    let ws = Workspace::new().unwrap();
    let addr = free_local_addr().unwrap();
    let config = ws
        .write_config(&ws.config_for(
            &receiver.endpoint,
            receiver.protocol,
            "1s",
            &format!(
                "[[collect.redis]]\nname = \"hung\"\nurl = \"redis://{}/0\"\ninterval = \"1m\"\ntimeout = \"8s\"\n\n[http]\nlisten = \"{addr}\"\n",
                hung.addr
            ),
        ))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    let health = get_until(addr, "/healthz", None, Duration::from_secs(20), |a| {
        a.status == 200
    })
    .await
    .unwrap();
    assert_eq!(health.status, 200, "{}", agent.log());
    assert!(
        hung.wait_for_connection(Duration::from_secs(10)),
        "the redis collector never connected"
    );
    let ready = request(addr, "GET", "/readyz", None).await.unwrap();
    assert_eq!(
        ready.status, 503,
        "the redis round is still waiting for its server: {}",
        ready.body
    );
    assert!(ready.body.contains("not ready"), "{}", ready.body);
    // The round ends at its timeout (as a failure): then every collector finished one.
    let ready = get_until(addr, "/readyz", None, Duration::from_secs(30), |a| {
        a.status == 200
    })
    .await
    .unwrap();
    assert_eq!(ready.status, 200, "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_disabled_means_no_listener() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let (agent, addr) = start_plain_agent(&ws, &receiver, "enabled = false");
    let (exported, _) = receiver
        .wait_for(Duration::from_secs(20), |r| {
            r.metric_names().contains("system.memory.usage")
        })
        .await;
    assert!(exported, "the agent runs and exports:\n{}", agent.log());
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "nothing listens on {addr} with enabled = false"
    );
    assert!(
        !agent.log().contains("status endpoint on"),
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_listen_address_is_a_warning_naming_it_and_the_agent_runs_on() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = ws
        .write_config(&ws.config_for(
            &receiver.endpoint,
            receiver.protocol,
            "1s",
            &format!("[http]\nlisten = \"{addr}\"\n"),
        ))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &config).unwrap();
    let (exported, _) = receiver
        .wait_for(Duration::from_secs(20), |r| {
            r.metric_names().contains("system.memory.usage")
        })
        .await;
    assert!(exported, "the agent runs and exports:\n{}", agent.log());
    let log = agent.log();
    let warning = log
        .lines()
        .find(|l| l.contains("cannot listen on"))
        .unwrap_or_else(|| panic!("no warning about the taken address:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&addr.to_string()), "{warning}");
    assert!(warning.contains("Address already in use"), "{warning}");
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
    // Plugins load in the background: rounds before the plugin was there are no calls.
    let loaded = request(addr, "GET", "/metrics", Some(TOKEN)).await.unwrap();
    let before_load = rounds(&loaded.body, "system");
    let metrics = get_until(
        addr,
        "/metrics",
        Some(TOKEN),
        Duration::from_secs(20),
        |a| {
            a.status == 200
                && rounds(&a.body, "redis:cache") >= 3.0
                && rounds(&a.body, "system") >= before_load + 3.0
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
    // The round in flight may be counted before its evaluation is; the rounds before
    // the plugin loaded (at most `before_load`) were no calls.
    assert!(
        calls <= system && calls >= system - before_load - 1.0 && calls >= 1.0,
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

/// A tuning policy's decisions show in `/status` (its kind, the `tuning` object: audit
/// file, mode, counts) and in self-telemetry, on `/metrics` and over OTLP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuning_decisions_show_in_status_metrics_and_otlp() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("echo", ECHO_POLICY).unwrap();
    let tuning = r#"
[plugins.settings.echo]
interests = ["system.*"]
proposals = [{ action = "collector-interval", collector = "system", interval_ms = 1500, reason = "status test" }]

[tuning]
audit_file = "audit/actions.jsonl"

[tuning.policies.echo]
mode = "dry-run"

[tuning.policies.absent]
mode = "enforce"

[[tuning.allow]]
target = "collector"
instance = "system"
parameter = "interval-ms"
min = "100ms"
max = "1h"
"#;
    let (agent, addr, config) = start_agent(&ws, &receiver, tuning, &[], &[]);
    // The same proposal on every batch: one dry-run decision, then repeats.
    let answer = get_until(addr, "/status", Some(TOKEN), Duration::from_secs(30), |a| {
        serde_json::from_str::<serde_json::Value>(&a.body).is_ok_and(|s| {
            s["tuning"]["counts"]["repeats"].as_u64() >= Some(2)
                && s["plugins"].as_array().is_some_and(|p| p.len() == 2)
        })
    })
    .await
    .unwrap();
    let status: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let tuning = &status["tuning"];
    assert!(
        tuning["counts"]["repeats"].as_u64() >= Some(2),
        "{status:#}\n{}",
        agent.log()
    );
    let audit = config.parent().unwrap().join("audit/actions.jsonl");
    assert_eq!(tuning["audit_file"], audit.to_str().unwrap(), "{tuning:#}");
    assert_eq!(tuning["allow_entries"], 1, "{tuning:#}");
    assert_eq!(
        tuning["policies"],
        serde_json::json!({
            "absent": {"mode": "enforce", "loaded": false},
            "echo": {"mode": "dry-run", "loaded": true},
        })
    );
    assert_eq!(
        tuning["counts"]["decisions"],
        serde_json::json!({"echo": {"dry-run": 1}}),
        "{tuning:#}"
    );
    assert_eq!(tuning["counts"]["dropped"], 0);
    assert_eq!(tuning["counts"]["throttled"], 0);
    assert_eq!(tuning["counts"]["watching"], 0);
    let kinds: Vec<(&str, &str)> = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["kind"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("echo", "tuning-policy")), "{kinds:?}");
    assert!(kinds.contains(&("threshold", "alert-rule")), "{kinds:?}");
    let repeats_seen = tuning["counts"]["repeats"].as_u64().unwrap() as f64;

    // The status page shows the same.
    let profile = tempfile::tempdir().unwrap();
    let output = headless(profile.path())
        .arg("--dump-dom")
        .arg(format!("http://{addr}/#token={TOKEN}"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    let page = element_text(&dom, "tuning");
    assert!(
        page.contains("echo")
            && page.contains("dry-run 1")
            && page.contains("not loaded")
            && page.contains("actions.jsonl"),
        "{page}"
    );
    let plugins = element_text(&dom, "plugins");
    assert!(plugins.contains("tuning-policy"), "{plugins}");

    let decisions = |body: &str| {
        scraped(
            body,
            "vigil_tuning_decisions_total",
            &[
                ("vigil_plugin", "echo"),
                ("vigil_tuning_verdict", "dry-run"),
            ],
        )
    };
    // Points without attributes: `name{} value`.
    let scalar = |body: &str, name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{}} ")))
            .and_then(|v| v.parse::<f64>().ok())
    };
    // `/metrics` shows the last self-telemetry batch, which may trail `/status` by an export interval.
    let repeated = |body: &str| scalar(body, "vigil_tuning_proposals_repeated_total");
    let metrics = get_until(
        addr,
        "/metrics",
        Some(TOKEN),
        Duration::from_secs(10),
        |a| decisions(&a.body) == 1.0 && repeated(&a.body) >= Some(repeats_seen),
    )
    .await
    .unwrap();
    let body = metrics.body.as_str();
    assert_eq!(decisions(body), 1.0, "{body}");
    assert!(repeated(body) >= Some(repeats_seen), "{body}");
    for zero in [
        "vigil_tuning_proposals_dropped_total",
        "vigil_tuning_proposals_throttled_total",
        "vigil_tuning_watches",
    ] {
        assert_eq!(scalar(body, zero), Some(0.0), "{zero}:\n{body}");
    }

    let otlp = |r: &vigil_testkit::otlp::Received| {
        r.latest_points("vigil.tuning.decisions")
            .into_iter()
            .find(|p| {
                p.attributes.get("vigil.plugin").map(String::as_str) == Some("echo")
                    && p.attributes.get("vigil.tuning.verdict").map(String::as_str)
                        == Some("dry-run")
            })
            .map(|p| (p.unit, p.value))
    };
    let (ok, received) = receiver
        .wait_for(Duration::from_secs(15), |r| {
            otlp(r).is_some() && !r.latest_points("vigil.tuning.watches").is_empty()
        })
        .await;
    assert!(ok, "{:?}", received.metric_names());
    assert_eq!(otlp(&received), Some(("{decision}".to_owned(), 1.0)));
    let repeated = received.latest_points("vigil.tuning.proposals.repeated");
    assert!(
        repeated.len() == 1 && repeated[0].value >= 1.0,
        "{repeated:?}"
    );
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
