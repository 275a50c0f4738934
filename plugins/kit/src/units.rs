//! Sizes and durations as settings and servers write them (`64mb`, `4MB`, `10s`). Pure
//! functions: they build and are tested on the host target too.

use std::time::Duration;

const KIB: u64 = 1024;

/// Parses a size in bytes: digits and an optional unit, case-insensitive, spaces allowed
/// between them. `kb`/`kib`, `mb`/`mib`, `gb`/`gib`, `tb`/`tib` are powers of 1024 (as
/// PostgreSQL's `kB`/`MB` and Redis' `kb`/`mb`), `k`, `m`, `g` are powers of 1000 (as
/// Redis reads them) and `b` is bytes. A bare number counts `default_unit` bytes each
/// (1 for Redis' `maxmemory`, 1024 for PostgreSQL's `work_mem`).
pub fn parse_size(text: &str, default_unit: u64) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "size {text:?} does not start with a number (write e.g. 64mb or 4MB)"
        ));
    }
    let number: u64 = number.parse().map_err(|e| format!("size {text:?}: {e}"))?;
    let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
        "" => default_unit,
        "b" => 1,
        "k" => 1_000,
        "kb" | "kib" => KIB,
        "m" => 1_000_000,
        "mb" | "mib" => KIB.pow(2),
        "g" => 1_000_000_000,
        "gb" | "gib" => KIB.pow(3),
        "tb" | "tib" => KIB.pow(4),
        other => {
            return Err(format!(
                "size {text:?} has unit {other:?}; use b, kb, mb, gb or tb"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Writes `bytes` as PostgreSQL writes memory settings: the largest of `TB`, `GB`, `MB`,
/// `kB` that divides it exactly (`8MB`, `1536kB`), else plain bytes (`100B`).
pub fn pg_size(bytes: u64) -> String {
    for (unit, size) in [
        ("TB", KIB.pow(4)),
        ("GB", KIB.pow(3)),
        ("MB", KIB.pow(2)),
        ("kB", KIB),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// Writes `bytes` for a human (audit reasons, logs): `320 MiB`, `1.5 GiB`, `512 B`.
pub fn human_size(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 {
            return trim_float(value, unit);
        }
        value /= 1024.0;
    }
    trim_float(value, "TiB")
}

fn trim_float(value: f64, unit: &str) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

/// Parses a duration (`10s`, `1m 30s`, `500ms`) or a bare number of milliseconds
/// (`10000`, as collectors' `interval-ms` settings are reported), into milliseconds.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let duration: Duration = humantime::parse_duration(text)
        .map_err(|e| format!("duration {text:?}: {e} (write e.g. 10s, 1m or 500ms)"))?;
    u64::try_from(duration.as_millis()).map_err(|_| format!("duration {text:?} is too long"))
}

/// Writes milliseconds for a human: `20s`, `1m 30s`, `250ms`.
pub fn human_millis(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// The longest revert window the host accepts: one day, in milliseconds.
pub const MAX_REVERT_WINDOW_MS: u64 = 86_400_000;

/// Parses a policy's `revert_window` setting (`10m`) into milliseconds: above 0 and at most
/// a day (the host refuses longer ones). Errors name the setting `revert_window`.
pub fn parse_revert_window(text: &str) -> Result<u64, String> {
    let ms = parse_millis(text).map_err(|e| format!("revert_window: {e}"))?;
    if ms == 0 || ms > MAX_REVERT_WINDOW_MS {
        return Err(format!(
            "revert_window ({text}) must be above 0 and at most a day"
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_redis_and_postgres_syntax() {
        assert_eq!(parse_size("64mb", 1), Ok(64 << 20));
        assert_eq!(parse_size("4MB", 1024), Ok(4 << 20));
        assert_eq!(parse_size("256MB", 1024), Ok(256 << 20));
        assert_eq!(parse_size("1gb", 1), Ok(1 << 30));
        assert_eq!(parse_size("512 kB", 1), Ok(512 << 10));
        assert_eq!(parse_size("2m", 1), Ok(2_000_000));
        assert_eq!(parse_size("100b", 1024), Ok(100));
        assert_eq!(parse_size(" 268435456 ", 1), Ok(268_435_456));
        assert_eq!(parse_size("4096", 1024), Ok(4 << 20), "bare work_mem is kB");
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        assert!(
            parse_size("", 1)
                .unwrap_err()
                .contains("does not start with a number")
        );
        assert!(
            parse_size("mb", 1)
                .unwrap_err()
                .contains("does not start with a number")
        );
        assert!(parse_size("-1mb", 1).is_err());
        assert!(
            parse_size("1.5gb", 1)
                .unwrap_err()
                .contains("unit \".5gb\"")
        );
        assert!(
            parse_size("64 furlongs", 1)
                .unwrap_err()
                .contains("use b, kb")
        );
        assert!(
            parse_size("99999999999tb", 1)
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn postgres_sizes_use_the_largest_exact_unit() {
        assert_eq!(pg_size(8 << 20), "8MB");
        assert_eq!(pg_size(1536 << 10), "1536kB");
        assert_eq!(pg_size(1 << 30), "1GB");
        assert_eq!(pg_size(100), "100B");
        assert_eq!(pg_size(0), "0B");
        for bytes in [4 << 20, 64 << 10, 3 << 30, 1536 << 10] {
            assert_eq!(parse_size(&pg_size(bytes), 1024), Ok(bytes), "round trip");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(320 << 20), "320 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(512), "512 B");
    }

    #[test]
    fn durations_and_bare_milliseconds() {
        assert_eq!(parse_millis("10s"), Ok(10_000));
        assert_eq!(parse_millis("1m 30s"), Ok(90_000));
        assert_eq!(parse_millis("10000"), Ok(10_000));
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert!(parse_millis("soon").unwrap_err().contains("write e.g. 10s"));
        assert_eq!(human_millis(20_000), "20s");
    }

    #[test]
    fn revert_windows_are_above_zero_and_at_most_a_day() {
        assert_eq!(parse_revert_window("10m"), Ok(600_000));
        assert_eq!(parse_revert_window("24h"), Ok(MAX_REVERT_WINDOW_MS));
        assert_eq!(
            parse_revert_window("25h"),
            Err("revert_window (25h) must be above 0 and at most a day".into())
        );
        assert!(parse_revert_window("0s").is_err());
        assert!(
            parse_revert_window("soon")
                .unwrap_err()
                .starts_with("revert_window: ")
        );
    }
}
