//! TLS end to end with certificates made in the test (`rcgen`, testkit `certs`): OTLP
//! export over https (gRPC and HTTP/protobuf) to the testkit's TLS receivers, mutual TLS,
//! a real Alertmanager serving https (its `tls_server_config`), the status endpoint over
//! https with `vigil reload` against it, certificate rotation at a reload with the config
//! text unchanged, and `insecure_skip_verify`.

use std::path::Path;
use std::time::{Duration, Instant};

use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr, memory_rule};
use vigil_testkit::alertmanager::Alertmanager;
use vigil_testkit::certs::TestCa;
use vigil_testkit::otlp::{OtlpReceiver, Received};
use vigil_testkit::plugins::THRESHOLD;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const WAIT: Duration = Duration::from_secs(30);

/// Whether a system metric with points arrived (decoded by the receiver).
fn has_points(received: &Received) -> bool {
    !received.latest_points("system.memory.usage").is_empty()
}

/// Polls `condition` every 100 ms until it holds or `timeout` passes.
async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    condition()
}

fn sighup(agent: &AgentProcess) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &agent.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Log lines of level WARN or ERROR containing `text`.
fn problem_lines(log: &str, text: &str) -> usize {
    log.lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains(text))
        .count()
}

/// Waits until the agent logged a warning or error containing `text`; panics with
/// `context` and the log if none comes.
async fn await_problem(agent: &AgentProcess, text: &str, context: &str) {
    let logged = wait_until(WAIT, || problem_lines(&agent.log(), text) > 0).await;
    assert!(
        logged,
        "{context}: no problem naming {text:?}:\n{}",
        agent.log()
    );
}

/// A config exporting to `receiver` every 200 ms with `tls` as `[export.otlp.tls]`
/// (paths relative to the config file) and `extra` appended.
fn config(ws: &Workspace, receiver: &OtlpReceiver, tls: &str, extra: &str) -> String {
    ws.config_for(
        &receiver.endpoint,
        receiver.protocol,
        "200ms",
        &format!("[http]\nenabled = false\n\n[export.otlp.tls]\n{tls}\n{extra}"),
    )
}

/// The workspace's directory (where the config file is).
fn dir(ws: &Workspace) -> std::path::PathBuf {
    ws.plugins().parent().unwrap().to_owned()
}

async fn exports_with_ca_file(protocol: &str) {
    let ca = TestCa::new("vigil e2e CA").unwrap();
    let tls = ca.server_cert().unwrap().server_config(None, &[]).unwrap();
    let receiver = match protocol {
        "grpc" => OtlpReceiver::grpc_tls(tls).await.unwrap(),
        _ => OtlpReceiver::http_tls(tls).await.unwrap(),
    };
    assert!(receiver.endpoint.starts_with("https://"));
    let ws = Workspace::new().unwrap();
    ca.write(&dir(&ws).join("ca.crt")).unwrap();
    let path = ws
        .write_config(&config(&ws, &receiver, "ca_file = \"ca.crt\"", ""))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    let (ok, received) = receiver.wait_for(WAIT, has_points).await;
    assert!(
        ok,
        "{protocol}: nothing decoded over https: {received:?}\n{}",
        agent.log()
    );
    assert_eq!(problem_lines(&agent.log(), "export"), 0, "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_export_over_https_with_ca_file() {
    exports_with_ca_file("grpc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_export_over_https_with_ca_file() {
    exports_with_ca_file("http/protobuf").await;
}

/// The CA from `OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE` (no `[export.otlp.tls]` in the
/// file): the metrics reach the https receiver, and `vigil check` names the variable as
/// the certificate's origin.
#[tokio::test(flavor = "multi_thread")]
async fn the_certificate_variable_supplies_the_ca() {
    let ca = TestCa::new("vigil e2e CA").unwrap();
    let tls = ca.server_cert().unwrap().server_config(None, &[]).unwrap();
    let receiver = OtlpReceiver::grpc_tls(tls).await.unwrap();
    let ws = Workspace::new().unwrap();
    let ca_path = dir(&ws).join("env-ca.crt");
    ca.write(&ca_path).unwrap();
    let ca_text = ca_path.to_str().unwrap();
    let path = ws
        .write_config(&ws.config_for(
            &receiver.endpoint,
            receiver.protocol,
            "200ms",
            "[http]\nenabled = false\n",
        ))
        .unwrap();
    let env = [("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", ca_text)];
    let agent = AgentProcess::start_with(VIGIL, &path, &env, &[]).unwrap();
    let (ok, received) = receiver.wait_for(WAIT, has_points).await;
    assert!(
        ok,
        "nothing decoded over https: {received:?}\n{}",
        agent.log()
    );
    let check = vigil_testkit::agent::vigil(VIGIL)
        .args(["check", "--config", path.to_str().unwrap()])
        .envs(env)
        .output()
        .unwrap();
    let text = vigil_testkit::agent::output_text(&check);
    assert!(
        text.lines()
            .any(|l| l.contains(ca_text) && l.contains("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE")),
        "{text}"
    );
}

/// Without `ca_file` the receiver's private CA is unknown: one warning names the problem
/// and the setting to fix, nothing arrives, and the data stays queued: once `ca_file`
/// is added and the agent reloads, what was collected before the reload arrives too.
#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_receiver_is_reported_once_and_the_data_waits_for_ca_file() {
    let ca = TestCa::new("vigil e2e CA").unwrap();
    let tls = ca.server_cert().unwrap().server_config(None, &[]).unwrap();
    let receiver = OtlpReceiver::http_tls(tls).await.unwrap();
    let ws = Workspace::new().unwrap();
    ca.write(&dir(&ws).join("ca.crt")).unwrap();
    let path = ws.write_config(&config(&ws, &receiver, "", "")).unwrap();
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    await_problem(&agent, "invalid peer certificate", "export").await;
    // Several failed attempts later, still one line.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = agent.log();
    assert_eq!(problem_lines(&log, "invalid peer certificate"), 1, "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("invalid peer certificate"))
        .unwrap();
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert!(line.contains("export.otlp.tls.ca_file"), "{line}");
    assert!(receiver.received().metrics.is_empty());

    let before_reload = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ws.write_config(&config(&ws, &receiver, "ca_file = \"ca.crt\"", ""))
        .unwrap();
    sighup(&agent);
    let (ok, received) = receiver
        .wait_for(WAIT, |r| {
            r.snapshots()
                .iter()
                .any(|s| s.earliest_unix_nanos < before_reload)
        })
        .await;
    assert!(
        ok,
        "the data queued before the reload did not arrive: {received:?}\n{}",
        agent.log()
    );
    assert!(
        agent.log().contains("[export.otlp.tls] files changed"),
        "{}",
        agent.log()
    );
}

/// A receiver requiring client certificates refuses an agent without one (the agent
/// says what to set), and takes the data of an agent with `cert_file`/`key_file`.
async fn mutual_tls(protocol: &str) {
    let ca = TestCa::new("vigil e2e CA").unwrap();
    let tls = ca
        .server_cert()
        .unwrap()
        .server_config(Some(&ca), &[])
        .unwrap();
    let receiver = match protocol {
        "grpc" => OtlpReceiver::grpc_tls(tls).await.unwrap(),
        _ => OtlpReceiver::http_tls(tls).await.unwrap(),
    };
    let ws = Workspace::new().unwrap();
    let dir = dir(&ws);
    ca.write(&dir.join("ca.crt")).unwrap();
    ca.client_cert("vigil agent")
        .unwrap()
        .write(&dir, "client")
        .unwrap();

    let path = ws
        .write_config(&config(&ws, &receiver, "ca_file = \"ca.crt\"", ""))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    await_problem(&agent, "export.otlp.tls.cert_file", protocol).await;
    assert!(receiver.received().metrics.is_empty());
    assert!(
        !receiver.received().handshake_failures.is_empty(),
        "the receiver refused no handshake"
    );
    drop(agent);

    let path = ws
        .write_config(&config(
            &ws,
            &receiver,
            "ca_file = \"ca.crt\"\ncert_file = \"client.crt\"\nkey_file = \"client.key\"",
            "",
        ))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    let (ok, received) = receiver.wait_for(WAIT, has_points).await;
    assert!(
        ok,
        "{protocol}: nothing over mutual TLS: {received:?}\n{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_mutual_tls_needs_the_client_certificate() {
    mutual_tls("grpc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_mutual_tls_needs_the_client_certificate() {
    mutual_tls("http/protobuf").await;
}

/// Certificate rotation: the receiver comes back with a certificate of a new CA, the CA
/// file is replaced (the config text stays the same), a reload reads it again and the
/// export works with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_reads_rotated_certificate_files() {
    let old_ca = TestCa::new("vigil e2e CA 1").unwrap();
    let addr = free_local_addr().unwrap();
    let tls = old_ca
        .server_cert()
        .unwrap()
        .server_config(None, &[])
        .unwrap();
    let receiver = OtlpReceiver::grpc_tls_on(addr, tls).await.unwrap();
    let ws = Workspace::new().unwrap();
    let ca_file = dir(&ws).join("ca.crt");
    old_ca.write(&ca_file).unwrap();
    let path = ws
        .write_config(&config(&ws, &receiver, "ca_file = \"ca.crt\"", ""))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    let (ok, _) = receiver.wait_for(WAIT, has_points).await;
    assert!(ok, "{}", agent.log());
    drop(receiver);

    let new_ca = TestCa::new("vigil e2e CA 2").unwrap();
    let tls = new_ca
        .server_cert()
        .unwrap()
        .server_config(None, &[])
        .unwrap();
    // The old receiver closes its listener in the background.
    let started = Instant::now();
    let receiver = loop {
        match OtlpReceiver::grpc_tls_on(addr, tls.clone()).await {
            Ok(receiver) => break receiver,
            Err(e) if started.elapsed() > WAIT => panic!("cannot listen on {addr} again: {e:#}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    await_problem(
        &agent,
        "UnknownIssuer",
        "the old CA should not trust the new receiver",
    )
    .await;
    assert!(receiver.received().metrics.is_empty());
    new_ca.write(&ca_file).unwrap();
    sighup(&agent);
    let (ok, received) = receiver.wait_for(WAIT, has_points).await;
    assert!(ok, "rotated CA not used: {received:?}\n{}", agent.log());
    assert!(
        agent.log().contains("[export.otlp.tls] files changed"),
        "{}",
        agent.log()
    );
}

/// `insecure_skip_verify` exports to an untrusted receiver, and says loudly that it does:
/// in the agent's log and in `vigil check`.
#[tokio::test(flavor = "multi_thread")]
async fn insecure_skip_verify_works_and_warns() {
    let ca = TestCa::new("vigil e2e CA").unwrap();
    let tls = ca.server_cert().unwrap().server_config(None, &[]).unwrap();
    let receiver = OtlpReceiver::grpc_tls(tls).await.unwrap();
    let ws = Workspace::new().unwrap();
    let path = ws
        .write_config(&config(&ws, &receiver, "insecure_skip_verify = true", ""))
        .unwrap();
    let check =
        vigil_testkit::agent::run_to_end(VIGIL, &["check", "--config", path.to_str().unwrap()])
            .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("insecure_skip_verify")),
        "{}",
        vigil_testkit::agent::output_text(&check)
    );
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    let (ok, received) = receiver.wait_for(WAIT, has_points).await;
    assert!(ok, "{received:?}\n{}", agent.log());
    assert_eq!(
        problem_lines(&agent.log(), "insecure_skip_verify = true"),
        1,
        "{}",
        agent.log()
    );
}

/// A real Alertmanager serving https and requiring client certificates: without
/// `[export.alertmanager.tls]` delivery fails with the certificate problem named; with
/// `ca_file`, `cert_file` and `key_file` (applied by a reload) the alert arrives.
#[tokio::test(flavor = "multi_thread")]
async fn alertmanager_over_mutual_tls() {
    let ca = TestCa::new("vigil e2e CA").unwrap();
    let am = Alertmanager::start_with_tls(&ca, true).await.unwrap();
    assert!(am.url.starts_with("https://"), "{}", am.url);
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let dir = dir(&ws);
    ca.write(&dir.join("ca.crt")).unwrap();
    ca.client_cert("vigil agent")
        .unwrap()
        .write(&dir, "client")
        .unwrap();
    let config = |tls: &str| {
        ws.config_for(
            &receiver.endpoint,
            "grpc",
            "200ms",
            &format!(
                "{}\n[http]\nenabled = false\n\n[export.alertmanager]\nurls = [\"{}\"]\ntimeout = \"1s\"\nresend_interval = \"1s\"\n\n[export.alertmanager.tls]\n{tls}\n",
                memory_rule("tls-rule", 0.0, "critical"),
                am.url
            ),
        )
    };
    let path = ws.write_config(&config("")).unwrap();
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    await_problem(&agent, "invalid peer certificate", "export").await;
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("invalid peer certificate"))
        .unwrap();
    assert!(line.contains("export.alertmanager.tls.ca_file"), "{line}");
    assert!(am.alerts_named("tls-rule").await.unwrap().is_empty());

    ws.write_config(&config(
        "ca_file = \"ca.crt\"\ncert_file = \"client.crt\"\nkey_file = \"client.key\"",
    ))
    .unwrap();
    sighup(&agent);
    let (ok, alerts) = am.wait_for("tls-rule", WAIT, |a| !a.is_empty()).await;
    assert!(ok, "{alerts:?}\n{}\n{}", agent.log(), am.log());
    assert_eq!(alerts[0]["labels"]["severity"], "critical", "{alerts:?}");
}

/// Writes a server certificate of `ca` (its chain up to `ca`) and key where `[http.tls]`
/// points.
fn write_status_cert(ca: &TestCa, dir: &Path) {
    let server = ca.server_cert().unwrap();
    std::fs::write(
        dir.join("status.crt"),
        format!("{}{}", server.cert_pem, ca.cert_pem),
    )
    .unwrap();
    std::fs::write(dir.join("status.key"), &server.key_pem).unwrap();
}

fn vigil_reload(config: &Path) -> std::process::Output {
    vigil_testkit::agent::vigil(VIGIL)
        .args(["reload", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// `[http.tls]`: the status endpoint answers /healthz over https to a client trusting
/// the CA (and not over plain http), `vigil reload` works against it, and a reload
/// switches it to rotated certificate files.
#[tokio::test(flavor = "multi_thread")]
async fn the_status_endpoint_serves_https_and_rotates_its_certificate() {
    let ca = TestCa::new("vigil e2e CA 1").unwrap();
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    let dir = dir(&ws);
    write_status_cert(&ca, &dir);
    let http = free_local_addr().unwrap();
    let text = ws.config_for(
        &receiver.endpoint,
        "grpc",
        "200ms",
        &format!(
            "[http]\nlisten = \"{http}\"\n\n[http.tls]\ncert_file = \"status.crt\"\nkey_file = \"status.key\"\n"
        ),
    );
    let path = ws.write_config(&text).unwrap();
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    let healthz = |ca: &TestCa| {
        let tls = ca.client_config(None).unwrap();
        async move { vigil_testkit::http::request_tls(http, tls, "GET", "/healthz").await }
    };
    let started = Instant::now();
    let answer = loop {
        match healthz(&ca).await {
            Ok(answer) => break answer,
            Err(e) if started.elapsed() > WAIT => panic!("{e:#}\n{}", agent.log()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!((answer.status, answer.body.as_str()), (200, "ok\n"));
    assert!(
        vigil_testkit::http::request(http, "GET", "/healthz", None)
            .await
            .is_err(),
        "plain http must not be answered"
    );
    let output = vigil_reload(&path);
    assert!(
        output.status.success(),
        "{}",
        vigil_testkit::agent::output_text(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("https://{http}")),
        "{}",
        vigil_testkit::agent::output_text(&output)
    );

    let new_ca = TestCa::new("vigil e2e CA 2").unwrap();
    write_status_cert(&new_ca, &dir);
    sighup(&agent);
    let started = Instant::now();
    loop {
        match healthz(&new_ca).await {
            Ok(answer) if answer.status == 200 => break,
            other if started.elapsed() > WAIT => panic!("{other:?}\n{}", agent.log()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        healthz(&ca).await.is_err(),
        "the old certificate is still served"
    );
    let output = vigil_reload(&path);
    assert!(
        output.status.success(),
        "{}",
        vigil_testkit::agent::output_text(&output)
    );
}
