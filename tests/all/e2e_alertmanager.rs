//! End to end against real Prometheus Alertmanager processes (Debian's
//! `prometheus-alertmanager`, started by each test on a free loopback port): the `threshold`
//! plugin's firing alert reaches Alertmanager with its labels and annotations, a silence
//! marks it silenced, a cleared condition resolves it, every Alertmanager of a pair
//! receives it, and an Alertmanager that is down neither stops the agent nor loses the alert.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr, memory_rule};
use vigil_testkit::alertmanager::{Alertmanager, BASIC_AUTH};
use vigil_testkit::otlp::{OtlpReceiver, Received};
use vigil_testkit::plugins::THRESHOLD;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const WAIT: Duration = Duration::from_secs(60);
const HOST: &str = "vigil-e2e-host";
const RULE: &str = "memory-in-use";

/// The `threshold` rule: memory in use `>= limit` (always true for 0, never for 2).
fn rule(limit: f64) -> String {
    memory_rule(RULE, limit, "critical")
}

/// A config with host [`HOST`] and its status endpoint on `http`, exporting to `receiver`
/// and posting alerts to `urls` (plus `more` keys), with the rule at `limit`.
fn config_with(
    ws: &Workspace,
    receiver: &OtlpReceiver,
    http: SocketAddr,
    urls: &[&str],
    limit: f64,
    more: &str,
) -> String {
    let urls = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let extra = format!(
        r#"{}
[http]
listen = "{http}"

[export.alertmanager]
urls = [{urls}]
timeout = "1s"
resend_interval = "1s"
extra_labels = {{ team = "ops" }}
{more}
"#,
        rule(limit)
    );
    let text = ws.config_for(&receiver.endpoint, "grpc", "200ms", &extra);
    assert!(text.contains("[agent]\n"), "{text}");
    text.replacen("[agent]\n", &format!("[agent]\nhost = \"{HOST}\"\n"), 1)
}

struct Setup {
    ws: Workspace,
    receiver: OtlpReceiver,
    http: SocketAddr,
    agent: AgentProcess,
}

impl Setup {
    /// This agent's config with the rule at `limit`.
    fn config(&self, urls: &[&str], limit: f64) -> String {
        config_with(&self.ws, &self.receiver, self.http, urls, limit, "")
    }
}

async fn start_agent(urls: &[&str]) -> Setup {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let http = free_local_addr().unwrap();
    let path = ws
        .write_config(&config_with(&ws, &receiver, http, urls, 0.0, ""))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    Setup {
        ws,
        receiver,
        http,
        agent,
    }
}

/// What to show when a wait fails: whether the agent still runs, its log and the Alertmanagers' logs.
fn report(agent: &mut AgentProcess, ams: &[&Alertmanager]) -> String {
    let mut text = format!(
        "agent running: {}\nagent log:\n{}",
        agent.is_running(),
        agent.log()
    );
    for am in ams {
        text.push_str(&format!("\nalertmanager {} log:\n{}", am.url, am.log()));
    }
    text
}

fn label<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or_default()
}

fn state(alert: &Value) -> &str {
    alert["status"]["state"].as_str().unwrap_or_default()
}

/// Sum of the latest points of `metric` whose attributes include every `(key, value)` of `with`.
fn metric(r: &Received, metric: &str, with: &[(&str, &str)]) -> f64 {
    r.latest_points(metric)
        .iter()
        .filter(|p| {
            with.iter()
                .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|p| p.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_alert_appears_in_alertmanager_with_labels_and_annotations() {
    let am = Alertmanager::start().await.unwrap();
    let mut s = start_agent(&[&am.url]).await;

    let (ok, alerts) = am.wait_for(RULE, WAIT, |a| !a.is_empty()).await;
    assert!(
        ok,
        "no alert reached Alertmanager\n{}",
        report(&mut s.agent, &[&am])
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    for (name, value) in [
        ("alertname", RULE),
        ("severity", "critical"),
        ("instance", HOST),
        ("vigil_plugin", "threshold"),
        ("vigil_key", "system.memory.state=used"),
        ("system_memory_state", "used"),
        ("metric", "system.memory.utilization"),
        ("team", "ops"),
    ] {
        assert_eq!(label(alert, name), value, "label {name}: {alert:#}");
    }
    assert_eq!(
        alert["labels"].as_object().unwrap().len(),
        8,
        "no other labels: {alert:#}"
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("system.memory.utilization{system.memory.state=used} = "),
        "{summary}"
    );
    let value: f64 = alert["annotations"]["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..=1.0).contains(&value), "{value}");
    assert_eq!(alert["annotations"]["source"], "system");
    assert_eq!(
        alert["generatorURL"],
        format!("http://{HOST}:{}/", s.http.port()),
        "the status page of the agent"
    );
    assert_eq!(state(alert), "active", "{alert:#}");
    let starts_at =
        humantime::parse_rfc3339_weak(alert["startsAt"].as_str().unwrap().trim_end_matches('Z'))
            .unwrap();
    let age = std::time::SystemTime::now()
        .duration_since(starts_at)
        .unwrap_or_default();
    assert!(age < WAIT, "startsAt is when it began firing: {alert:#}");

    // Re-sent while firing: Alertmanager's `updatedAt` moves on, the alert stays one.
    let updated = alert["updatedAt"].as_str().unwrap().to_owned();
    let (ok, alerts) = am
        .wait_for(RULE, WAIT, |a| {
            a.len() == 1 && a[0]["updatedAt"].as_str() != Some(updated.as_str())
        })
        .await;
    assert!(ok, "never re-sent: {alerts:#?}\n{}", s.agent.log());
    assert_eq!(alerts[0]["startsAt"], alert["startsAt"]);

    let (ok, r) = s
        .receiver
        .wait_for(WAIT, |r| {
            metric(r, "vigil.alertmanager.sent", &[("url.full", &am.url)]) >= 2.0
        })
        .await;
    assert!(ok, "{:?}", r.latest_points("vigil.alertmanager.sent"));
    assert_eq!(
        metric(&r, "vigil.alertmanager.failed", &[]),
        0.0,
        "{}",
        s.agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_created_in_alertmanager_marks_the_alert_silenced() {
    let am = Alertmanager::start().await.unwrap();
    let mut s = start_agent(&[&am.url]).await;
    let (ok, alerts) = am
        .wait_for(RULE, WAIT, |a| a.len() == 1 && state(&a[0]) == "active")
        .await;
    assert!(ok, "{alerts:#?}\n{}", report(&mut s.agent, &[&am]));

    let id = am
        .silence(&[("alertname", RULE), ("instance", HOST)])
        .await
        .unwrap();
    let (ok, alerts) = am
        .wait_for(RULE, WAIT, |a| a.len() == 1 && state(&a[0]) == "suppressed")
        .await;
    assert!(ok, "not silenced: {alerts:#?}");
    assert_eq!(alerts[0]["status"]["silencedBy"], serde_json::json!([id]));

    // Still silenced after the agent re-sent it.
    let updated = alerts[0]["updatedAt"].clone();
    let (ok, alerts) = am
        .wait_for(RULE, WAIT, |a| a.len() == 1 && a[0]["updatedAt"] != updated)
        .await;
    assert!(ok, "{alerts:#?}");
    assert_eq!(state(&alerts[0]), "suppressed", "{alerts:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleared_condition_resolves_the_alert_in_alertmanager() {
    let am = Alertmanager::start().await.unwrap();
    let mut s = start_agent(&[&am.url]).await;
    let (ok, alerts) = am.wait_for(RULE, WAIT, |a| a.len() == 1).await;
    assert!(ok, "{alerts:#?}\n{}", report(&mut s.agent, &[&am]));

    // A limit memory use never reaches: the agent reloads the rule, the alert resolves.
    s.ws.write_config(&s.config(&[&am.url], 2.0)).unwrap();
    let (ok, alerts) = am.wait_for(RULE, WAIT, |a| a.is_empty()).await;
    assert!(
        ok,
        "still active in Alertmanager: {alerts:#?}\n{}",
        report(&mut s.agent, &[&am])
    );
    let log = s.agent.log();
    assert!(log.contains("alert resolved"), "{log}");
    // Resolved means resolved: it does not come back with the next re-sends.
    let (back, alerts) = am
        .wait_for(RULE, Duration::from_secs(3), |a| !a.is_empty())
        .await;
    assert!(!back, "the resolved alert came back: {alerts:#?}");
    // ... and Alertmanager answered all along: "no alert" is its answer, not silence.
    let alerts = am.alerts_named(RULE).await.unwrap();
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alertmanager_of_a_pair_receives_the_alert() {
    let (a, b) = (
        Alertmanager::start().await.unwrap(),
        Alertmanager::start().await.unwrap(),
    );
    let mut s = start_agent(&[&a.url, &b.url]).await;
    for am in [&a, &b] {
        let (ok, alerts) = am.wait_for(RULE, WAIT, |x| x.len() == 1).await;
        assert!(
            ok,
            "{} got {alerts:#?}\n{}",
            am.url,
            report(&mut s.agent, &[&a, &b])
        );
        assert_eq!(label(&alerts[0], "instance"), HOST);
        assert_eq!(label(&alerts[0], "team"), "ops");
    }
    let (ok, r) = s
        .receiver
        .wait_for(WAIT, |r| {
            [&a, &b]
                .iter()
                .all(|am| metric(r, "vigil.alertmanager.sent", &[("url.full", &am.url)]) >= 1.0)
        })
        .await;
    assert!(ok, "{:?}", r.latest_points("vigil.alertmanager.sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_keeps_running_while_alertmanager_is_down_and_delivers_when_it_returns() {
    let mut am = Alertmanager::start().await.unwrap();
    let mut b = Alertmanager::start().await.unwrap();
    am.stop();
    let mut s = start_agent(&[&am.url, &b.url]).await;
    let url = am.url.clone();

    // The alert fires and is delivered to the live Alertmanager while the other is down;
    // failures are counted, and collection, evaluation and OTLP export go on.
    let (ok, alerts) = b.wait_for(RULE, WAIT, |x| x.len() == 1).await;
    assert!(
        ok,
        "one dead Alertmanager held up the other: {alerts:#?}\n{}",
        report(&mut s.agent, &[&b])
    );
    let (ok, r) = s
        .receiver
        .wait_for(WAIT, |r| {
            metric(
                r,
                "vigil.alertmanager.failed",
                &[("url.full", &url), ("error.type", "connect")],
            ) >= 3.0
                && metric(r, "vigil.alertmanager.pending", &[("url.full", &url)]) >= 1.0
                && r.records()
                    .iter()
                    .any(|x| x.attributes.get("vigil.alert.rule").map(String::as_str) == Some(RULE))
        })
        .await;
    assert!(
        ok,
        "failed: {:?}\npending: {:?}\nagent log:\n{}",
        r.latest_points("vigil.alertmanager.failed"),
        r.latest_points("vigil.alertmanager.pending"),
        s.agent.log()
    );
    let rounds = metric(
        &r,
        "vigil.collector.rounds",
        &[("vigil.collector", "system")],
    );
    let (ok, _) = s
        .receiver
        .wait_for(WAIT, |r| {
            metric(
                r,
                "vigil.collector.rounds",
                &[("vigil.collector", "system")],
            ) >= rounds + 5.0
        })
        .await;
    assert!(ok, "collection stalled while Alertmanager was down");
    assert!(s.agent.is_running(), "{}", s.agent.log());
    let log = s.agent.log();
    assert_eq!(
        log.matches("cannot deliver alerts to Alertmanager").count(),
        1,
        "one warning per outage, not one per retry:\n{log}"
    );

    // Back on the same port: the alert is delivered without any new transition.
    am.resume().await.unwrap();
    let (ok, alerts) = am.wait_for(RULE, WAIT, |x| x.len() == 1).await;
    assert!(ok, "{alerts:#?}\n{}", report(&mut s.agent, &[&am]));
    assert_eq!(label(&alerts[0], "vigil_plugin"), "threshold");
    let (ok, r) = s
        .receiver
        .wait_for(WAIT, |r| {
            metric(r, "vigil.alertmanager.pending", &[("url.full", &url)]) == 0.0
                && metric(r, "vigil.alertmanager.sent", &[("url.full", &url)]) >= 1.0
        })
        .await;
    assert!(ok, "{:?}", r.latest_points("vigil.alertmanager.pending"));
    let log = s.agent.log();
    assert!(log.contains("accepts alerts again"), "{log}");

    // The live one is unaffected throughout.
    assert_eq!(b.alerts_named(RULE).await.unwrap().len(), 1);
    b.stop();
    assert!(s.agent.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_password_comes_from_a_file_and_a_refusal_is_counted() {
    let am = Alertmanager::start_with_basic_auth().await.unwrap();
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let password = ws.dir.path().join("am-password");
    // Relative to the config file.
    let auth = format!(
        "basic_auth = {{ username = {:?}, password_file = \"am-password\" }}",
        BASIC_AUTH.0
    );

    // A wrong password: Alertmanager answers 401, counted as status_4xx; nothing arrives.
    std::fs::write(&password, "wrong\n").unwrap();
    let path = ws
        .write_config(&config_with(
            &ws,
            &receiver,
            free_local_addr().unwrap(),
            &[&am.url],
            0.0,
            &auth,
        ))
        .unwrap();
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    let (ok, r) = receiver
        .wait_for(WAIT, |r| {
            metric(
                r,
                "vigil.alertmanager.failed",
                &[("url.full", &am.url), ("error.type", "status_4xx")],
            ) >= 1.0
        })
        .await;
    assert!(
        ok,
        "{:?}\n{}",
        r.latest_points("vigil.alertmanager.failed"),
        agent.log()
    );
    let log = agent.log();
    assert!(log.contains("401"), "{log}");
    assert!(
        !log.contains("wrong"),
        "the password must never be logged:\n{log}"
    );
    assert!(am.alerts_named(RULE).await.unwrap().is_empty());
    drop(agent);

    // The right one, with the file's trailing newline: delivered.
    std::fs::write(&password, format!("{}\n", BASIC_AUTH.1)).unwrap();
    let mut agent = AgentProcess::start(VIGIL, &path).unwrap();
    let (ok, alerts) = am.wait_for(RULE, WAIT, |a| a.len() == 1).await;
    assert!(ok, "{alerts:#?}\n{}", report(&mut agent, &[&am]));
    assert!(!agent.log().contains(BASIC_AUTH.1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_waits_for_alertmanager_to_accept_its_alerts_before_exiting() {
    let mut am = Alertmanager::start().await.unwrap();
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("threshold", THRESHOLD).unwrap();
    let config = config_with(
        &ws,
        &receiver,
        free_local_addr().unwrap(),
        &[&am.url],
        0.0,
        "",
    )
    .replacen("shutdown_timeout = \"3s\"", "shutdown_timeout = \"30s\"", 1);
    assert!(config.contains("\"30s\""), "{config}");
    let path = ws.write_config(&config).unwrap();

    // Alertmanager is down when the round ends: the agent keeps retrying until it is back.
    am.stop();
    let log_path = ws.dir.path().join("once.log");
    let mut child = vigil_testkit::agent::vigil(VIGIL)
        .args(["run", "--once", "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let started = std::time::Instant::now();
    while !log().contains("cannot deliver alerts to Alertmanager") {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited without delivering:\n{}",
            log()
        );
        assert!(started.elapsed() < WAIT, "{}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    am.resume().await.unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{}", log());
    // Already there: the agent exited only after Alertmanager accepted it.
    let alerts = am.alerts_named(RULE).await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:#?}\n{}", log());
    assert_eq!(label(&alerts[0], "instance"), HOST);
    assert!(log().contains("accepts alerts again"), "{}", log());
}
