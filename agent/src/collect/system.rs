//! Host metrics from the operating system (`sysinfo`), named by the OpenTelemetry
//! system semantic conventions.

use crate::sync::LockExt;
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, System};

use super::net_dev;

use super::{CollectError, CollectFuture, Collector, Round};
use crate::config::SystemCollectorConfig;
use crate::model::{Batch, BatchBuilder, MetricDesc, MetricKind, attrs};

/// The metric descriptions this collector emits.
pub mod metrics {
    use super::{MetricDesc, MetricKind::*};

    pub fn cpu_utilization() -> MetricDesc {
        MetricDesc::new(
            "system.cpu.utilization",
            "1",
            Gauge,
            "Busy share of CPU time since the last round (0..1); per core with cpu.logical_number",
        )
    }
    pub fn cpu_logical_count() -> MetricDesc {
        MetricDesc::new(
            "system.cpu.logical.count",
            "{cpu}",
            UpDownCounter,
            "Number of logical CPUs",
        )
    }
    pub fn memory_usage() -> MetricDesc {
        MetricDesc::new(
            "system.memory.usage",
            "By",
            UpDownCounter,
            "Memory in use by state; used + free + cached = system.memory.limit",
        )
    }
    pub fn memory_utilization() -> MetricDesc {
        MetricDesc::new(
            "system.memory.utilization",
            "1",
            Gauge,
            "Share of memory by state (0..1)",
        )
    }
    pub fn memory_limit() -> MetricDesc {
        MetricDesc::new("system.memory.limit", "By", UpDownCounter, "Total memory")
    }
    pub fn memory_available() -> MetricDesc {
        MetricDesc::new(
            "system.linux.memory.available",
            "By",
            UpDownCounter,
            "Memory available for new work without swapping (MemAvailable)",
        )
    }
    pub fn paging_usage() -> MetricDesc {
        MetricDesc::new(
            "system.paging.usage",
            "By",
            UpDownCounter,
            "Swap space by state",
        )
    }
    pub fn paging_utilization() -> MetricDesc {
        MetricDesc::new(
            "system.paging.utilization",
            "1",
            Gauge,
            "Share of swap space by state (0..1)",
        )
    }
    pub fn load_average(window: &str) -> MetricDesc {
        MetricDesc::new(
            &format!("system.cpu.load_average.{window}"),
            "{thread}",
            Gauge,
            "Load average",
        )
    }
    pub fn filesystem_usage() -> MetricDesc {
        MetricDesc::new(
            "system.filesystem.usage",
            "By",
            UpDownCounter,
            "Filesystem space by state",
        )
    }
    pub fn filesystem_utilization() -> MetricDesc {
        MetricDesc::new(
            "system.filesystem.utilization",
            "1",
            Gauge,
            "Share of filesystem space used (0..1)",
        )
    }
    pub fn disk_io() -> MetricDesc {
        MetricDesc::new(
            "system.disk.io",
            "By",
            Counter,
            "Bytes read from and written to a disk",
        )
    }
    pub fn network_io() -> MetricDesc {
        MetricDesc::new(
            "system.network.io",
            "By",
            Counter,
            "Bytes received and transmitted by an interface",
        )
    }
    pub fn network_packets() -> MetricDesc {
        MetricDesc::new(
            "system.network.packets",
            "{packet}",
            Counter,
            "Packets received and transmitted by an interface",
        )
    }
    pub fn network_errors() -> MetricDesc {
        MetricDesc::new(
            "system.network.errors",
            "{error}",
            Counter,
            "Errors on receive and transmit by an interface",
        )
    }
    pub fn process_count() -> MetricDesc {
        MetricDesc::new(
            "system.process.count",
            "{process}",
            UpDownCounter,
            "Number of processes",
        )
    }
    pub fn uptime() -> MetricDesc {
        MetricDesc::new("system.uptime", "s", Gauge, "Time since boot")
    }
}

/// Long-lived `sysinfo` state: one `System`, refreshed only for what is exported.
struct Probe {
    system: System,
    disks: Disks,
    last_cpu_refresh: Instant,
    /// Whether a round has run since the first CPU sample.
    sampled: bool,
    /// Whether listing /proc failed in the last round (logged once per failure spell).
    process_count_failed: bool,
    /// Whether reading /proc/net/dev failed in the last round (logged once per spell).
    network_failed: bool,
}

/// Collects host metrics.
pub struct SystemCollector {
    probe: Arc<Mutex<Probe>>,
    host: String,
    config: SystemCollectorConfig,
}

impl SystemCollector {
    /// Creates the collector and takes the first CPU sample (utilization needs two).
    pub fn new(config: SystemCollectorConfig, host: String) -> Result<Self, CollectError> {
        let mut system =
            System::new().map_err(|e| failed(format!("cannot read system information: {e}")))?;
        system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        let disks = Disks::new_with_refreshed_list()
            .map_err(|e| failed(format!("cannot list disks: {e}")))?;
        Ok(SystemCollector {
            probe: Arc::new(Mutex::new(Probe {
                system,
                disks,
                last_cpu_refresh: Instant::now(),
                sampled: false,
                process_count_failed: false,
                network_failed: false,
            })),
            host,
            config,
        })
    }

    /// Collects one round synchronously. The first round waits until the CPU sample
    /// taken at creation is old enough for a meaningful utilization (sysinfo's minimum).
    pub fn collect_blocking(&self) -> Result<Batch, CollectError> {
        let mut probe = self.probe.locked_as("system collector");
        let since = probe.last_cpu_refresh.elapsed();
        if !probe.sampled && since < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL - since);
        }
        probe.sampled = true;
        let mut batch = BatchBuilder::new("system", self.host.clone());
        probe.collect_cpu(&mut batch, self.config.per_cpu);
        probe.collect_memory(&mut batch);
        collect_load_and_uptime(&mut batch);
        probe.collect_filesystems_and_disks(&mut batch);
        probe.collect_networks(&mut batch);
        probe.collect_processes(&mut batch);
        Ok(batch.build())
    }
}

fn failed(message: String) -> CollectError {
    CollectError::Failed {
        collector: "system".into(),
        message,
    }
}

impl Probe {
    fn collect_cpu(&mut self, batch: &mut BatchBuilder, per_cpu: bool) {
        self.system
            .refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        self.last_cpu_refresh = Instant::now();
        let utilization = metrics::cpu_utilization();
        batch.point(
            &utilization,
            Vec::new(),
            f64::from(self.system.global_cpu_usage()) / 100.0,
        );
        if per_cpu {
            for (i, cpu) in self.system.cpus().iter().enumerate() {
                batch.point(
                    &utilization,
                    attrs([("cpu.logical_number", &i.to_string())]),
                    f64::from(cpu.usage()) / 100.0,
                );
            }
        }
        batch.point(
            &metrics::cpu_logical_count(),
            Vec::new(),
            self.system.cpus().len() as f64,
        );
    }

    fn collect_memory(&mut self, batch: &mut BatchBuilder) {
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::everything());
        let s = &self.system;
        let total = s.total_memory() as f64;
        let free = s.free_memory() as f64;
        let available = s.available_memory() as f64;
        // sysinfo: used = total - available. The reclaimable rest (available - free)
        // is reported as `cached`, so the three states add up to the total.
        let used = s.used_memory() as f64;
        let cached = (total - used - free).max(0.0);
        let states = [("used", used), ("free", free), ("cached", cached)];
        emit_states(
            batch,
            "system.memory.state",
            &states,
            total,
            metrics::memory_usage(),
            metrics::memory_utilization(),
        );
        batch.point(&metrics::memory_limit(), Vec::new(), total);
        batch.point(&metrics::memory_available(), Vec::new(), available);

        let swap_total = s.total_swap() as f64;
        let swap = [
            ("used", s.used_swap() as f64),
            ("free", s.free_swap() as f64),
        ];
        emit_states(
            batch,
            "system.paging.state",
            &swap,
            swap_total,
            metrics::paging_usage(),
            metrics::paging_utilization(),
        );
    }

    fn collect_filesystems_and_disks(&mut self, batch: &mut BatchBuilder) {
        self.disks.refresh_specifics(
            true,
            DiskRefreshKind::nothing().with_storage().with_io_usage(),
        );
        let usage = metrics::filesystem_usage();
        let utilization = metrics::filesystem_utilization();
        let io = metrics::disk_io();
        let mut devices_seen = HashSet::new();
        for disk in self.disks.iter() {
            let device = disk.name().to_string_lossy().into_owned();
            let mountpoint = disk.mount_point().to_string_lossy().into_owned();
            let fs_type = disk.file_system().to_string_lossy().into_owned();
            let total = disk.total_space() as f64;
            let free = disk.available_space() as f64;
            let used = (total - free).max(0.0);
            let fs_attrs = |state: Option<&str>| {
                let mut a = attrs([
                    ("system.device", device.as_str()),
                    ("system.filesystem.mountpoint", mountpoint.as_str()),
                    ("system.filesystem.type", fs_type.as_str()),
                ]);
                if let Some(state) = state {
                    a.push(("system.filesystem.state".into(), state.into()));
                }
                a
            };
            batch.point(&usage, fs_attrs(Some("used")), used);
            batch.point(&usage, fs_attrs(Some("free")), free);
            if total > 0.0 {
                batch.point(&utilization, fs_attrs(None), used / total);
            }
            // The same device can be mounted several times (bind mounts): count its I/O once.
            if devices_seen.insert(device.clone()) {
                let disk_usage = disk.usage();
                for (direction, bytes) in [
                    ("read", disk_usage.total_read_bytes),
                    ("write", disk_usage.total_written_bytes),
                ] {
                    batch.point(
                        &io,
                        attrs([
                            ("system.device", device.as_str()),
                            ("disk.io.direction", direction),
                        ]),
                        bytes as f64,
                    );
                }
            }
        }
    }

    /// Per interface and direction: bytes, packets and errors, from /proc/net/dev.
    fn collect_networks(&mut self, batch: &mut BatchBuilder) {
        let interfaces = match net_dev::read(Path::new(net_dev::PROC_NET_DEV)) {
            Ok(interfaces) => {
                self.network_failed = false;
                interfaces
            }
            Err(e) => {
                if !std::mem::replace(&mut self.network_failed, true) {
                    tracing::warn!(
                        "system collector: {e}; system.network.* are not reported until it can be read (is /proc mounted?)"
                    );
                }
                return;
            }
        };
        let (io, packets, errors) = (
            metrics::network_io(),
            metrics::network_packets(),
            metrics::network_errors(),
        );
        for interface in &interfaces {
            let (received, transmitted) = (interface.received, interface.transmitted);
            let per_direction = [
                (&io, received.bytes, transmitted.bytes),
                (&packets, received.packets, transmitted.packets),
                (&errors, received.errors, transmitted.errors),
            ];
            for (metric, received, transmitted) in per_direction {
                for (direction, value) in [("receive", received), ("transmit", transmitted)] {
                    batch.point(
                        metric,
                        attrs([
                            ("network.interface.name", interface.name.as_str()),
                            ("network.io.direction", direction),
                        ]),
                        value as f64,
                    );
                }
            }
        }
    }

    /// The process count, from the /proc listing alone: no per-process file is read.
    fn collect_processes(&mut self, batch: &mut BatchBuilder) {
        match count_processes(Path::new(PROC)) {
            Ok(count) => {
                self.process_count_failed = false;
                batch.point(&metrics::process_count(), Vec::new(), count as f64);
            }
            Err(e) => {
                if !std::mem::replace(&mut self.process_count_failed, true) {
                    tracing::warn!(
                        "system collector: cannot list {PROC} ({e}); system.process.count is not reported until it can (is /proc mounted?)"
                    );
                }
            }
        }
    }
}

/// Where the kernel lists processes.
const PROC: &str = "/proc";

/// The number of processes: the directories of `proc` named by a PID. Threads other
/// than a process's main thread are not listed there, so each process counts once
/// (what `ls /proc | grep -c '^[0-9]'` says). sysinfo's process table, counted here
/// before, also listed every thread as a process.
fn count_processes(proc: &Path) -> std::io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(proc)? {
        // An entry that vanished while listing is a process that exited: not counted.
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let is_pid = !name.is_empty() && name.as_bytes().iter().all(u8::is_ascii_digit);
        if is_pid && entry.file_type().is_ok_and(|t| t.is_dir()) {
            count += 1;
        }
    }
    Ok(count)
}

/// Emits usage and utilization per state (utilization only when the total is known).
fn emit_states(
    batch: &mut BatchBuilder,
    state_key: &str,
    states: &[(&str, f64)],
    total: f64,
    usage: MetricDesc,
    utilization: MetricDesc,
) {
    for (state, bytes) in states {
        batch.point(&usage, attrs([(state_key, state)]), *bytes);
        if total > 0.0 {
            batch.point(&utilization, attrs([(state_key, state)]), bytes / total);
        }
    }
}

fn collect_load_and_uptime(batch: &mut BatchBuilder) {
    if let Ok(load) = System::load_average() {
        for (window, value) in [("1m", load.one), ("5m", load.five), ("15m", load.fifteen)] {
            batch.point(&metrics::load_average(window), Vec::new(), value);
        }
    }
    if let Ok(uptime) = System::uptime() {
        batch.point(&metrics::uptime(), Vec::new(), uptime as f64);
    }
}

impl Collector for SystemCollector {
    fn name(&self) -> &str {
        "system"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn collect(&mut self) -> CollectFuture<'_> {
        let this = SystemCollector {
            probe: self.probe.clone(),
            host: self.host.clone(),
            config: self.config.clone(),
        };
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.collect_blocking())
                .await
                .map_err(|e| failed(format!("collection task failed: {e}")))?
                .map(Round::ok)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_states_add_up_to_the_total() {
        let collector = SystemCollector::new(SystemCollectorConfig::default(), "h".into()).unwrap();
        let batch = collector.collect_blocking().unwrap();
        let value = |name: &str, state: Option<&str>| -> f64 {
            batch
                .points()
                .filter(|(m, a, _)| {
                    m.name == name && state.is_none_or(|s| a.iter().any(|(_, v)| v == s))
                })
                .map(|(_, _, v)| v)
                .sum()
        };
        let total = value("system.memory.limit", None);
        assert!(total > 0.0);
        let sum = value("system.memory.usage", None);
        assert!((sum - total).abs() < 1.0, "{sum} vs {total}");
        let cpu = value("system.cpu.utilization", None);
        assert!(cpu >= 0.0);
        assert!(value("system.uptime", None) > 0.0);
    }

    /// `ls /proc | grep -c '^[0-9]'`, not counting the `ls` itself.
    fn ls_count() -> usize {
        let ls = std::process::Command::new("ls")
            .arg("/proc")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let own_pid = ls.id().to_string();
        let out = ls.wait_with_output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|name| name.starts_with(|c: char| c.is_ascii_digit()) && *name != own_pid)
            .count()
    }

    /// What sysinfo's process table counts after a full refresh without threads.
    fn sysinfo_count() -> usize {
        let mut system = System::new().unwrap();
        system.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::All,
            true,
            sysinfo::ProcessRefreshKind::nothing().without_tasks(),
        );
        system.processes().len()
    }

    #[test]
    fn the_process_count_is_what_ls_and_sysinfo_count() {
        let collector = SystemCollector::new(SystemCollectorConfig::default(), "h".into()).unwrap();
        // Processes start and exit on a busy machine: look for a round during which the
        // ground truth did not move (same count before and after).
        let mut seen = Vec::new();
        for _ in 0..50 {
            let before = ls_count();
            let batch = collector.collect_blocking().unwrap();
            let sysinfo = sysinfo_count();
            let after = ls_count();
            let reported: Vec<f64> = batch
                .points()
                .filter(|(m, _, _)| m.name == "system.process.count")
                .map(|(_, _, v)| v)
                .collect();
            assert_eq!(reported.len(), 1, "one system.process.count point");
            if before == after {
                assert!(before > 1);
                if reported[0] == before as f64 && sysinfo == before {
                    return;
                }
            }
            seen.push((before, reported[0], sysinfo, after));
        }
        panic!("never agreed with ls and sysinfo (ls before, vigil, sysinfo, ls after): {seen:?}");
    }

    #[test]
    fn only_directories_named_by_a_pid_are_processes() {
        let proc = tempfile::tempdir().unwrap();
        for dir in ["1", "42", "31337", "self", "sys", "1a", "net"] {
            std::fs::create_dir(proc.path().join(dir)).unwrap();
        }
        for file in ["7", "uptime"] {
            std::fs::write(proc.path().join(file), "").unwrap();
        }
        assert_eq!(count_processes(proc.path()).unwrap(), 3);
    }

    #[test]
    fn a_missing_proc_is_an_error_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert!(count_processes(&dir.path().join("absent")).is_err());
    }
}
