//! Numbers with units, the way each target writes them, turned into base units (bytes,
//! milliseconds, or a plain number) so values, limits and steps compare.
//!
//! - Redis: `b`, `k` = 1000, `kb` = 1024, `m`, `mb`, `g`, `gb` (any case).
//! - PostgreSQL: memory `B`, `kB`, `MB`, `GB`, `TB` (×1024), time `us`, `ms`, `s`, `min`,
//!   `h`, `d`; a bare number is in the parameter's own unit (`pg_settings.unit`, e.g. `8kB`).
//! - MySQL/MariaDB: bare numbers, or a `K`/`M`/`G`/`T` suffix (×1024).
//! - Collector intervals: bare milliseconds, or a duration like `30s`.

use super::action::Target;

/// What kind of quantity a number is, in its base unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dim {
    Bytes,
    Millis,
    Plain,
}

/// `text` in the base unit of `target` (bytes, milliseconds or a plain number), or `None`
/// when it is not a number there. `pg_unit` is the PostgreSQL parameter's `pg_settings.unit`
/// (ignored by other targets; `None` when unknown).
pub fn parse(target: Target, text: &str, pg_unit: Option<&str>) -> Option<f64> {
    let text = text.trim();
    let (number, suffix) = split_number(text)?;
    let value = match target {
        Target::Redis => number * redis_factor(suffix)?,
        Target::Mysql => number * mysql_factor(suffix)?,
        Target::Postgres => return postgres(number, suffix, pg_unit),
        Target::PostgresMaintenance => return None,
        Target::Collector => {
            if suffix.is_empty() {
                number
            } else {
                humantime::parse_duration(text).ok()?.as_secs_f64() * 1000.0
            }
        }
    };
    value.is_finite().then_some(value)
}

/// Splits `-12.5kb` into `(-12.5, "kb")`.
fn split_number(text: &str) -> Option<(f64, &str)> {
    let end = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '-' || *c == '+'))))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(end);
    let number: f64 = number.parse().ok()?;
    Some((number, suffix.trim()))
}

fn redis_factor(suffix: &str) -> Option<f64> {
    Some(match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" => 1e3,
        "kb" => 1024.0,
        "m" => 1e6,
        "mb" => 1024.0 * 1024.0,
        "g" => 1e9,
        "gb" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

fn mysql_factor(suffix: &str) -> Option<f64> {
    Some(match suffix.to_ascii_uppercase().as_str() {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

/// A PostgreSQL unit's dimension and size in base units.
fn pg_unit_factor(unit: &str) -> Option<(Dim, f64)> {
    const K: f64 = 1024.0;
    Some(match unit.to_ascii_lowercase().as_str() {
        "b" => (Dim::Bytes, 1.0),
        "kb" => (Dim::Bytes, K),
        "mb" => (Dim::Bytes, K * K),
        "gb" => (Dim::Bytes, K * K * K),
        "tb" => (Dim::Bytes, K * K * K * K),
        "us" => (Dim::Millis, 0.001),
        "ms" => (Dim::Millis, 1.0),
        "s" => (Dim::Millis, 1000.0),
        "min" => (Dim::Millis, 60_000.0),
        "h" => (Dim::Millis, 3_600_000.0),
        "d" => (Dim::Millis, 86_400_000.0),
        _ => return None,
    })
}

/// A parameter unit as pg_settings writes it: `kB`, `8kB`, `16MB`, `ms`, `s`, `min`.
fn pg_parameter_unit(unit: &str) -> Option<(Dim, f64)> {
    let unit = unit.trim();
    if unit.is_empty() {
        return Some((Dim::Plain, 1.0));
    }
    let (count, name) = match split_number(unit) {
        Some((count, name)) => (count, name),
        None => (1.0, unit),
    };
    let (dim, factor) = pg_unit_factor(name)?;
    Some((dim, count * factor))
}

fn postgres(number: f64, suffix: &str, pg_unit: Option<&str>) -> Option<f64> {
    let parameter = pg_unit.map(pg_parameter_unit);
    let value = if suffix.is_empty() {
        match parameter {
            Some(Some((_, factor))) => number * factor,
            Some(None) | None => number,
        }
    } else {
        let (dim, factor) = pg_unit_factor(suffix)?;
        if let Some(Some((parameter_dim, _))) = parameter
            && parameter_dim != dim
        {
            return None;
        }
        number * factor
    };
    value.is_finite().then_some(value)
}

/// Whether `a` and `b` name the same value of a setting of `target`: numerically equal
/// when both are numbers there, else equal text (ignoring ASCII case).
pub fn same_value(target: Target, a: &str, b: &str, pg_unit: Option<&str>) -> bool {
    match (parse(target, a, pg_unit), parse(target, b, pg_unit)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0),
        _ => a.trim().eq_ignore_ascii_case(b.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_units() {
        let r = |t| parse(Target::Redis, t, None);
        assert_eq!(r("64mb"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(r("64MB"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(r("1k"), Some(1000.0));
        assert_eq!(r("1kb"), Some(1024.0));
        assert_eq!(r("2g"), Some(2e9));
        assert_eq!(r("1gb"), Some(1073741824.0));
        assert_eq!(r("536870912"), Some(536870912.0));
        assert_eq!(r("-2"), Some(-2.0));
        assert_eq!(r("allkeys-lru"), None);
        assert_eq!(r("12xb"), None);
        assert!(same_value(Target::Redis, "512mb", "536870912", None));
        assert!(same_value(
            Target::Redis,
            "allkeys-LRU",
            "allkeys-lru",
            None
        ));
    }

    #[test]
    fn postgres_units_follow_the_parameter() {
        let p = |t, u| parse(Target::Postgres, t, u);
        assert_eq!(p("4096", Some("kB")), Some(4096.0 * 1024.0));
        assert_eq!(p("4MB", Some("kB")), Some(4.0 * 1024.0 * 1024.0));
        assert_eq!(p("1024", Some("8kB")), Some(8.0 * 1024.0 * 1024.0));
        assert_eq!(p("8MB", Some("8kB")), p("1024", Some("8kB")));
        assert_eq!(p("60", Some("s")), Some(60_000.0));
        assert_eq!(p("1min", Some("s")), Some(60_000.0));
        assert_eq!(p("1h", None), Some(3_600_000.0));
        assert_eq!(p("500us", Some("ms")), Some(0.5));
        assert_eq!(p("200", Some("")), Some(200.0));
        assert_eq!(p("200", None), Some(200.0));
        assert_eq!(p("5s", Some("kB")), None, "a time is not a memory size");
        assert_eq!(p("on", Some("")), None);
        assert!(same_value(Target::Postgres, "64MB", "65536", Some("kB")));
    }

    #[test]
    fn mysql_and_collector_units() {
        assert_eq!(parse(Target::Mysql, "16M", None), Some(16.0 * 1048576.0));
        assert_eq!(parse(Target::Mysql, "1k", None), Some(1024.0));
        assert_eq!(parse(Target::Mysql, "64", None), Some(64.0));
        assert_eq!(parse(Target::Mysql, "ON", None), None);
        assert_eq!(parse(Target::Collector, "30000", None), Some(30_000.0));
        assert_eq!(parse(Target::Collector, "30s", None), Some(30_000.0));
        assert_eq!(parse(Target::Collector, "1m 30s", None), Some(90_000.0));
        assert_eq!(parse(Target::Collector, "soon", None), None);
    }
}
