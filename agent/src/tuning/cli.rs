//! `vigil actions list` and `vigil actions revert`: the audit trail as a table (or JSON
//! lines), and an operator's undo of one applied change.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use super::action::Target;
use super::audit::{self, Row};
use super::decision::{Decision, DecisionKind};
use super::revert::{self, RevertRequest};
use super::target::Targets;
use crate::config::Config;

/// `--since`: a duration back from now (`1h`) or an RFC 3339 time.
pub fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| {
        format!("--since {text:?} is neither a duration (1h, 30m) nor an RFC 3339 time (2026-11-26T08:00:00Z)")
    })
}

/// The decisions in the audit file at `path` made at or after `since`, one row each.
pub fn rows(path: &Path, since: Option<SystemTime>) -> Result<Vec<Row>, String> {
    let (entries, skipped) = audit::read_entries(path)
        .map_err(|e| format!("cannot read the audit file {}: {e}", path.display()))?;
    if skipped > 0 {
        tracing::warn!(
            "{skipped} line(s) of {} are not complete entries (a crash mid-write) and are skipped",
            path.display()
        );
    }
    Ok(audit::fold(entries)
        .into_iter()
        .filter(|row| {
            since.is_none_or(|since| {
                humantime::parse_rfc3339_weak(&row.entry.time).is_ok_and(|t| t >= since)
            })
        })
        .collect())
}

/// Writes `rows` as a table, or as one JSON object per line with `json`.
pub fn print(rows: &[Row], json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    if json {
        for row in rows {
            serde_json::to_writer(&mut *out, row)?;
            out.write_all(b"\n")?;
        }
        return Ok(());
    }
    let table: Vec<[String; 7]> = rows.iter().map(columns).collect();
    let header = [
        "ID",
        "TIME",
        "POLICY",
        "ACTION",
        "VERDICT",
        "BEFORE -> AFTER",
        "REASON",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    if rows.is_empty() {
        writeln!(out, "(no decisions)")?;
    }
    Ok(())
}

fn columns(row: &Row) -> [String; 7] {
    let e = &row.entry;
    let time = e.time.get(..19).unwrap_or(&e.time).replace('T', " ");
    let action = format!(
        "{} {} {} = {}",
        e.target.map(Target::as_str).unwrap_or("?"),
        e.instance.as_deref().unwrap_or("?"),
        e.parameter.as_deref().unwrap_or("?"),
        e.value.as_deref().unwrap_or("?")
    );
    let mut verdict = row.outcome_text().to_owned();
    match e.kind {
        Some(DecisionKind::Revert) | Some(DecisionKind::AutoRevert) => {
            let kind = e.kind.map(DecisionKind::as_str).unwrap_or_default();
            verdict = format!("{verdict} ({kind} of {})", e.reverts.unwrap_or_default());
        }
        _ => {}
    }
    let values = match (&e.before, &e.after) {
        (Some(b), Some(a)) => format!("{b} -> {a}"),
        (Some(b), None) => b.clone(),
        (None, Some(a)) => format!("? -> {a}"),
        (None, None) => String::new(),
    };
    let mut reason = e
        .error
        .clone()
        .or_else(|| e.verdict.clone())
        .unwrap_or_default();
    if let Some(by) = row.reverted_by {
        reason.push_str(&format!("; reverted by {by}"));
    }
    if let Some(kept) = &row.kept {
        reason.push_str(&format!("; {kept}"));
    }
    [
        e.id.to_string(),
        time,
        e.policy.clone().unwrap_or_default(),
        action,
        verdict,
        values,
        reason,
    ]
}

/// `vigil actions revert ID`: restores the value before decision `id` on the server,
/// audited in the config's audit file. Refused when the setting changed since (unless
/// `force`) and for collector intervals (they live in the running agent).
pub async fn revert_decision(config: &Config, id: u64, force: bool) -> Result<Decision, String> {
    let path = &config.tuning.audit_file;
    let rows = rows(path, None)?;
    let original = rows
        .iter()
        .find(|r| r.entry.id == id)
        .ok_or_else(|| format!("there is no decision {id} in {}", path.display()))?;
    if original.entry.target == Some(Target::Collector) {
        return Err(format!(
            "decision {id} changed a collector interval, which lives in the running agent: it cannot be changed from another process. Collector intervals return to the configured interval when the agent restarts; a change with revert_if is reverted by the agent itself"
        ));
    }
    let targets = Targets::new(config.collect.clone(), None);
    let request = RevertRequest {
        original,
        kind: DecisionKind::Revert,
        policy: "operator".to_owned(),
        reason: format!(
            "vigil actions revert {id}{}",
            if force { " --force" } else { "" }
        ),
        force,
    };
    revert::revert(&targets, &audit::AuditLog::new(path), request).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = humantime::parse_rfc3339("2026-11-26T10:00:00Z").unwrap();
        assert_eq!(
            parse_since("1h", now).unwrap(),
            now - Duration::from_secs(3600)
        );
        assert_eq!(
            parse_since("2026-11-26T08:00:00Z", now).unwrap(),
            humantime::parse_rfc3339("2026-11-26T08:00:00Z").unwrap()
        );
        assert!(
            parse_since("yesterday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
    }
}
