//! The settings and the per-series arithmetic, free of bindings (tested natively).

use serde_json::{Map, Value};

/// The rule's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub metric: String,
    pub alpha: f64,
    pub k: f64,
    pub warmup: f64,
    pub severity: String,
    pub for_ms: u64,
}

impl Settings {
    /// Parses and checks the settings JSON; an error names the setting at fault.
    pub fn parse(json: &str) -> Result<Settings, String> {
        let value: Value = serde_json::from_str(if json.trim().is_empty() { "{}" } else { json })
            .map_err(|e| format!("settings are not valid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err("settings must be a JSON object".into());
        };
        let metric = match map.get("metric") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            _ => return Err("setting metric is required (a metric name)".into()),
        };
        let alpha = number(&map, "alpha", 0.3)?;
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err("setting alpha must be > 0 and <= 1".into());
        }
        let k = number(&map, "k", 3.0)?;
        if k <= 0.0 {
            return Err("setting k must be > 0".into());
        }
        let warmup = number(&map, "warmup", 5.0)?;
        if !(warmup >= 1.0 && warmup.fract() == 0.0) {
            return Err("setting warmup must be an integer >= 1".into());
        }
        let severity = match map.get("severity") {
            None => "warning".to_owned(),
            Some(Value::String(s)) if ["info", "warning", "critical"].contains(&s.as_str()) => {
                s.clone()
            }
            Some(_) => return Err("setting severity must be info, warning or critical".into()),
        };
        let for_ms = number(&map, "for_ms", 0.0)?;
        if !(for_ms >= 0.0 && for_ms.fract() == 0.0 && for_ms <= u64::MAX as f64) {
            return Err("setting for_ms must be an integer >= 0".into());
        }
        Ok(Settings {
            metric,
            alpha,
            k,
            warmup,
            severity,
            for_ms: for_ms as u64,
        })
    }
}

fn number(map: &Map<String, Value>, name: &str, default: f64) -> Result<f64, String> {
    match map.get(name) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("setting {name} must be a number")),
    }
}

/// One series' moving mean, variance and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    pub mean: f64,
    pub var: f64,
    pub count: f64,
}

impl Ewma {
    /// The state after a series' first value.
    pub fn first(x: f64) -> Ewma {
        Ewma {
            mean: x,
            var: 0.0,
            count: 1.0,
        }
    }

    /// The next state after value `x`, and whether `x` is anomalous.
    pub fn update(self, x: f64, s: &Settings) -> (Ewma, bool) {
        let d = x - self.mean;
        let anomalous = self.count >= s.warmup && d * d > s.k * s.k * self.var;
        let next = Ewma {
            mean: self.mean + s.alpha * d,
            var: (1.0 - s.alpha) * (self.var + s.alpha * d * d),
            count: self.count + 1.0,
        };
        (next, anomalous)
    }

    /// 24 bytes: mean, var, count as little-endian f64.
    pub fn to_bytes(self) -> Vec<u8> {
        [self.mean, self.var, self.count]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    /// The state from its 24 bytes (`None` when the length is wrong).
    pub fn from_bytes(bytes: &[u8]) -> Option<Ewma> {
        if bytes.len() != 24 {
            return None;
        }
        let f = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            f64::from_le_bytes(b)
        };
        Some(Ewma {
            mean: f(0),
            var: f(1),
            count: f(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_and_errors_name_the_setting() {
        let s = Settings::parse(r#"{"metric":"m"}"#).unwrap();
        assert_eq!((s.alpha, s.k, s.warmup, s.for_ms), (0.3, 3.0, 5.0, 0));
        assert_eq!(s.severity, "warning");
        for (json, name) in [
            ("{}", "metric"),
            (r#"{"metric":"m","alpha":0}"#, "alpha"),
            (r#"{"metric":"m","alpha":1.5}"#, "alpha"),
            (r#"{"metric":"m","k":0}"#, "k"),
            (r#"{"metric":"m","warmup":0}"#, "warmup"),
            (r#"{"metric":"m","warmup":2.5}"#, "warmup"),
            (r#"{"metric":"m","severity":"loud"}"#, "severity"),
            (r#"{"metric":"m","for_ms":-1}"#, "for_ms"),
        ] {
            let err = Settings::parse(json).unwrap_err();
            assert!(err.contains(name), "{json}: {err}");
        }
    }

    #[test]
    fn a_spike_is_anomalous_only_after_warmup() {
        let s = Settings::parse(r#"{"metric":"m","warmup":3}"#).unwrap();
        let mut e = Ewma::first(10.0);
        for x in [10.5, 9.5] {
            let (next, anomalous) = e.update(x, &s);
            assert!(!anomalous);
            e = next;
        }
        let (_, spike) = e.update(100.0, &s);
        assert!(spike);
        let (_, calm) = e.update(10.2, &s);
        assert!(!calm);
        assert_eq!(Ewma::from_bytes(&e.to_bytes()), Some(e));
    }
}
