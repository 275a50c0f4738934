//! End to end: the export queue. Data produced while the OTLP receiver is down is
//! queued (bounded) and delivered once it is up; what a full queue pushes out is
//! counted exactly; SIGTERM stops the agent gracefully with everything flushed, and
//! within its deadline when the receiver hangs.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_testkit::agent::{AgentProcess, Workspace, free_local_addr};
use vigil_testkit::http::get_until;
use vigil_testkit::otlp::{OtlpReceiver, Received};
use vigil_testkit::plugins::MISBEHAVE;
use vigil_testkit::silent::SilentServer;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Waits until the agent's `/status` (at `http`) counts dropped items in the export queue
/// of `signal` (`metrics` or `logs`): the outage has lasted long enough to overflow it.
async fn until_dropped(http: std::net::SocketAddr, signal: &str, agent: &AgentProcess) {
    let dropped = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body).ok()?["export"]["queue"][signal]["dropped"]
            .as_u64()
    };
    let answer = get_until(http, "/status", None, Duration::from_secs(90), |a| {
        dropped(&a.body).is_some_and(|d| d > 0)
    })
    .await
    .map(|a| a.body)
    .unwrap_or_else(|e| e.to_string());
    assert!(
        dropped(&answer).is_some_and(|d| d > 0),
        "the {signal} queue never overflowed: {answer}\n{}",
        agent.log()
    );
}

/// Datapoints in one metrics snapshot of `config` on this host: the largest of the first
/// three snapshots a running agent sends to a receiver of its own.
async fn points_per_snapshot(config: &str, ws: &Workspace) -> usize {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let path = ws.dir.path().join("measure.toml");
    std::fs::write(&path, config.replace("http://MEASURE", &receiver.endpoint)).unwrap();
    let agent = AgentProcess::start(VIGIL, &path).unwrap();
    let (ok, received) = receiver
        .wait_for(Duration::from_secs(60), |r| r.snapshots().len() >= 3)
        .await;
    assert!(ok, "no snapshots to measure:\n{}", agent.log());
    received
        .snapshots()
        .iter()
        .map(|s| s.points)
        .max()
        .unwrap_or(0)
}

/// The last exported value of `name{signal}`.
fn export_counter(received: &Received, name: &str, signal: &str) -> Option<f64> {
    received
        .latest_points(name)
        .into_iter()
        .find(|p| p.attributes.get("signal").map(String::as_str) == Some(signal))
        .map(|p| p.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_queued_while_the_receiver_is_down_is_delivered_within_its_bound() {
    let addr = free_local_addr().unwrap();
    let http = free_local_addr().unwrap();
    let ws = Workspace::new().unwrap();
    // The queue bound is sized from what this host produces: room for three snapshots
    // (the host may have any number of CPUs, disks and interfaces), so at least two
    // outage snapshots fit and a long enough outage overflows it.
    let measure = ws.config_for("http://MEASURE", "grpc", "200ms", "");
    let per_snapshot = points_per_snapshot(&measure, &ws).await;
    assert!(per_snapshot > 0, "the agent exported no datapoints");
    let max_points = 3 * per_snapshot;
    let config = ws
        .write_config(&ws.config_for(
            &format!("http://{addr}"),
            "grpc",
            "200ms",
            &format!(
                "[export.queue]\nmax_metric_points = {max_points}\nmax_backoff = \"400ms\"\n\n[http]\nlisten = \"{http}\"\n"
            ),
        ))
        .unwrap();
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();
    // The outage lasts until the queue overflowed, however long that takes here.
    until_dropped(http, "metrics", &agent).await;
    assert!(agent.is_running(), "{}", agent.log());
    let receiver_started = unix_nanos_now();
    let receiver = OtlpReceiver::grpc_on(addr).await.unwrap();

    let (delivered, received) = receiver
        .wait_for(Duration::from_secs(60), |r| {
            r.snapshots()
                .iter()
                .any(|s| s.earliest_unix_nanos > receiver_started)
                && export_counter(r, "vigil.export.dropped", "metrics").is_some_and(|d| d > 0.0)
        })
        .await;
    assert!(
        delivered,
        "no fresh snapshot and drop count after the outage: snapshots {:?}, started at {receiver_started}, dropped {:?}\n{}",
        received.snapshots(),
        export_counter(&received, "vigil.export.dropped", "metrics"),
        agent.log()
    );
    // Snapshots taken before the first request arrived were all in the queue at once
    // when the agent got through: the backlog of the outage.
    let first_arrival = received.snapshots()[0].arrived_unix_nanos;
    let backlog: Vec<_> = received
        .snapshots()
        .into_iter()
        .filter(|s| s.earliest_unix_nanos < first_arrival)
        .collect();
    let backlog_points: usize = backlog.iter().map(|s| s.points).sum();
    assert!(
        backlog.len() >= 2,
        "data from the outage must be delivered ({per_snapshot} points per snapshot, queue {max_points}), got {backlog:?} of {:?}\n{}",
        received.snapshots(),
        agent.log()
    );
    // One round more may be collected while the first request is in flight: it too is
    // older than that request's arrival without having waited in the queue.
    assert!(
        backlog_points <= max_points + per_snapshot,
        "the queue holds at most {max_points} datapoints ({per_snapshot} per snapshot), {backlog_points} arrived from the outage"
    );
    // The outage did not fit: the oldest snapshots were dropped and counted.
    let dropped = export_counter(&received, "vigil.export.dropped", "metrics").unwrap_or(0.0);
    assert!(dropped > 0.0, "the overflow must be counted");
    assert_eq!(
        export_counter(&received, "vigil.export.queue.capacity", "metrics"),
        Some(max_points as f64)
    );
    let warnings = agent
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("export to"))
        .count();
    assert_eq!(warnings, 1, "one warning per outage:\n{}", agent.log());
    assert!(
        agent.log().contains("OTLP export works again"),
        "{}",
        agent.log()
    );
}

/// The `count` fixture reports one finding per evaluation, keyed `n=N`: every
/// evaluation N fires `n=N` and resolves `n=N-1`, so after M evaluations exactly
/// 2M-1 alert records were produced, and which ones are missing is known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_queue_counts_exactly_what_it_dropped_and_sigterm_flushes_the_rest() {
    const MAX_RECORDS: u64 = 10;
    let addr = free_local_addr().unwrap();
    let http = free_local_addr().unwrap();
    let ws = Workspace::new().unwrap();
    ws.add_plugin("counter", MISBEHAVE).unwrap();
    let config = ws
        .write_config(&ws.config_for(
            &format!("http://{addr}"),
            "http/protobuf",
            "100ms",
            &format!(
                "[plugins.settings.counter]\nmode = \"count\"\n\n[export.queue]\nmax_log_records = {MAX_RECORDS}\nmax_backoff = \"300ms\"\n\n[http]\nlisten = \"{http}\"\n"
            ),
        ))
        .unwrap();
    let mut agent = AgentProcess::start(VIGIL, &config).unwrap();
    until_dropped(http, "logs", &agent).await;
    let receiver = OtlpReceiver::http_on(addr).await.unwrap();
    let (arrived, _) = receiver
        .wait_for(Duration::from_secs(15), |r| r.records().len() > 20)
        .await;
    assert!(arrived, "records after the outage:\n{}", agent.log());

    // Stop while rounds are in flight (one every 100 ms): everything must be flushed.
    let status = agent.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "exit status {status:?}:\n{}", agent.log());
    let received = receiver.received();

    let evaluations = received
        .latest_points("vigil.plugin.evaluations")
        .into_iter()
        .find(|p| p.attributes.get("vigil.plugin").map(String::as_str) == Some("counter"))
        .map(|p| p.value as u64)
        .expect("final evaluation count exported at shutdown");
    let records: BTreeSet<(String, String)> = received
        .records()
        .into_iter()
        .filter(|r| r.attributes.get("vigil.alert.rule").map(String::as_str) == Some("count"))
        .map(|r| {
            (
                r.attributes["vigil.alert.state"].clone(),
                r.attributes["vigil.alert.key"].clone(),
            )
        })
        .collect();
    let last_key = format!("n={evaluations}");
    assert!(
        records.contains(&("firing".to_owned(), last_key.clone())),
        "the last evaluation's alert ({last_key}) must be flushed at shutdown"
    );
    let produced = 2 * evaluations - 1;
    let lost = produced - records.len() as u64;
    assert!(
        lost > 0,
        "the outage overflowed the {MAX_RECORDS}-record queue"
    );
    let dropped = export_counter(&received, "vigil.export.dropped", "logs");
    assert_eq!(
        dropped,
        Some(lost as f64),
        "{produced} records produced, {} received",
        records.len()
    );
    assert!(
        agent.log().contains("stopped"),
        "graceful stop is logged:\n{}",
        agent.log()
    );
}

/// A receiver that accepts connections and never answers (as a SIGSTOPped collector):
/// SIGTERM still ends the agent within `agent.shutdown_timeout` (plus a second), and
/// what could not be sent is counted in the log — over gRPC and over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_the_shutdown_deadline_when_the_receiver_hangs() {
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
    for protocol in ["grpc", "http/protobuf"] {
        let hung = SilentServer::start().unwrap();
        let ws = Workspace::new().unwrap();
        let config = ws
            .write_config(&format!(
                r#"
[agent]
shutdown_timeout = "{}s"

[collect.system]
interval = "200ms"

[plugins]
dir = "plugins"
cache_dir = ""

[export.otlp]
protocol = "{protocol}"
endpoint = "http://{}"
interval = "200ms"
timeout = "10s"

[http]
enabled = false
"#,
                SHUTDOWN_TIMEOUT.as_secs(),
                hung.addr
            ))
            .unwrap();
        let mut agent = AgentProcess::start(VIGIL, &config).unwrap();
        assert!(
            hung.wait_for_connection(Duration::from_secs(20)),
            "{protocol}: the agent never connected to the receiver:\n{}",
            agent.log()
        );
        // An export request is now waiting for an answer that never comes.
        let signalled = std::time::Instant::now();
        let status = agent.terminate(SHUTDOWN_TIMEOUT + Duration::from_secs(30));
        let took = signalled.elapsed();
        let log = agent.log();
        let status = status.unwrap_or_else(|e| panic!("{protocol}: {e}\n{log}"));
        assert!(
            status.success(),
            "{protocol}: exit status {status:?}:\n{log}"
        );
        assert!(
            took <= SHUTDOWN_TIMEOUT + Duration::from_secs(1),
            "{protocol}: SIGTERM took {took:?} with a {SHUTDOWN_TIMEOUT:?} shutdown_timeout:\n{log}"
        );
        let dropped = log
            .lines()
            .find(|l| l.contains("shutdown deadline reached"))
            .unwrap_or_else(|| panic!("{protocol}: the drop is not logged:\n{log}"));
        let points: u64 = dropped
            .split("reached: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{protocol}: no count in {dropped:?}"));
        assert!(
            points > 0,
            "{protocol}: queued datapoints are counted: {dropped}"
        );
    }
}
