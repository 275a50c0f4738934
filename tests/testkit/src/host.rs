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
