//! Facts about this machine read straight from `/proc`, to check exported values against.

/// Total memory in bytes (`MemTotal` of `/proc/meminfo`).
pub fn mem_total_bytes() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo is readable");
    let kib: f64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("MemTotal value");
    kib * 1024.0
}

/// A field of `/proc/meminfo` in bytes (e.g. `MemFree`, `MemAvailable`).
pub fn meminfo_bytes(field: &str) -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo is readable");
    let prefix = format!("{field}:");
    let kib: f64 = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/meminfo"));
    kib * 1024.0
}

/// CPU time process `pid` has used so far (user + system), from `/proc/PID/stat`.
pub fn process_cpu_time(pid: u32) -> anyhow::Result<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat: {stat}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    let per_second: u64 = String::from_utf8_lossy(&output.stdout).trim().parse()?;
    Ok(std::time::Duration::from_secs_f64(
        ticks as f64 / per_second as f64,
    ))
}

/// How many file descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> anyhow::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// A field of `/proc/PID/status` in bytes (e.g. `VmRSS`, `VmHWM`, `RssFile`).
pub fn process_status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let prefix = format!("{field}:");
    let kib: u64 = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}
