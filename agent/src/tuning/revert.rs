//! Undoing an applied change: the exact previous value restored through the target
//! module, audited first like any change (`applying` before the server is touched).
//! Reverts are not subject to the rate limit or the cool-down: undo is always allowed.

use std::time::SystemTime;

use super::action::{Action, Maintenance, MaintenanceOp, SettingKey};
use super::audit::{AuditLog, Entry, Row, Status};
use super::decision::Restore;
use super::decision::{Decision, DecisionKind, Verdict};
use super::target::{TargetError, Targets};
use super::units;

/// The setting a row changed, if the row names one.
pub fn row_key(row: &Row) -> Option<SettingKey> {
    let entry = &row.entry;
    Some(SettingKey {
        target: entry.target?,
        instance: entry.instance.clone()?,
        parameter: entry.parameter.clone()?,
    })
}

/// What a revert request concerns: the change, who asks, and why.
pub struct RevertRequest<'a> {
    pub original: &'a Row,
    pub kind: DecisionKind,
    /// `operator` for the CLI, the policy for automatic reverts.
    pub policy: String,
    pub reason: String,
    /// Restore even when the setting was changed since.
    pub force: bool,
}

/// Reverts `request.original`. `Err` when there is nothing to revert (no previous value
/// recorded, not an applied change, already reverted): nothing is touched or audited.
/// Every other outcome is an audited decision.
pub async fn revert(
    targets: &Targets,
    audit: &AuditLog,
    request: RevertRequest<'_>,
) -> Result<Decision, String> {
    let original = request.original;
    let id = original.entry.id;
    let (Some(key), Some(restore), Some(before_change)) = (
        row_key(original),
        original.entry.restore.clone(),
        original.entry.before.clone(),
    ) else {
        return Err(format!(
            "decision {id} records no previous value to restore"
        ));
    };
    if restore == Restore::Nothing {
        return Err(format!(
            "decision {id} was a VACUUM or ANALYZE: there is nothing to undo"
        ));
    }
    let unknown = original.outcome == Status::Applying;
    if original.outcome != Status::Applied && !(unknown && request.force) {
        let hint = if unknown {
            "; if it took effect, --force restores the value before it"
        } else {
            ""
        };
        return Err(format!(
            "decision {id} is not an applied change (it is {}){hint}",
            original.outcome_text()
        ));
    }
    if let Some(by) = original.reverted_by {
        return Err(format!(
            "decision {id} was already reverted by decision {by}"
        ));
    }
    let mut decision = Decision {
        id: None,
        time: SystemTime::now(),
        kind: request.kind,
        policy: request.policy,
        action: Action {
            setting: key.clone(),
            value: before_change.clone(),
            maintenance: None,
        },
        reason: request.reason,
        verdict: Verdict::Refused,
        verdict_reason: String::new(),
        mode: None,
        before: None,
        after: None,
        reverts: Some(id),
        revert_if: None,
        repeat: false,
        verification: None,
    };
    let refuse = |mut d: Decision, why: String| {
        d.verdict = Verdict::Refused;
        d.verdict_reason = why;
        d
    };
    let set_by_change = original
        .entry
        .after
        .clone()
        .or_else(|| original.entry.value.clone())
        .unwrap_or_default();
    if let Restore::DropIndex { schema, index } = &restore {
        decision.action = Maintenance {
            op: MaintenanceOp::DropIndex,
            schema: schema.clone(),
            name: index.clone(),
            columns: Vec::new(),
            statements: Vec::new(),
        }
        .into_action(key.instance.clone());
    }
    let read = match &restore {
        Restore::DropIndex { schema, index } => targets.read_index(&key, schema, index).await,
        _ => targets.read(&key).await,
    };
    let reading = match read {
        Ok(reading) => reading,
        Err(e) => {
            decision = refuse(decision, format!("cannot read the current value: {e}"));
            if matches!(e, TargetError::Failed(_)) {
                decision.verdict = Verdict::Failed;
            }
            return Ok(audit_one(audit, decision, None).await);
        }
    };
    decision.before = Some(reading.value.clone());
    let unit = reading.pg_unit.as_deref();
    if !request.force && !units::same_value(key.target, &reading.value, &set_by_change, unit) {
        let why = format!(
            "{key} is now {}, not {set_by_change} as decision {id} left it: it was changed since; use --force to restore {before_change} anyway",
            reading.value
        );
        return Ok(audit_one(audit, refuse(decision, why), None).await);
    }
    decision.verdict_reason = match &restore {
        Restore::DropIndex { schema, index } => {
            format!("drop index {schema}.{index}, created by decision {id}")
        }
        _ => format!("restore {before_change}, the value before decision {id}"),
    };
    let mut entry = entry_of(&decision, Status::Applying);
    entry.restore = Some(reading.restore.clone());
    let log = audit.clone();
    let recorded =
        tokio::task::spawn_blocking(move || log.record(&mut entry).map(|id| (id, entry))).await;
    let new_id = match recorded {
        Ok(Ok((new_id, _))) => new_id,
        Ok(Err(e)) => return Ok(refuse(decision, e.to_string())),
        Err(e) => {
            return Ok(refuse(
                decision,
                format!("cannot write the audit file: {e}"),
            ));
        }
    };
    decision.id = Some(new_id);
    let result = targets.restore(&key, &restore, &before_change).await;
    let mut outcome = match &result {
        Ok(after) => {
            decision.verdict = Verdict::Applied;
            decision.after = Some(after.clone());
            let mut e = Entry::new(new_id, Status::Applied);
            e.after = Some(after.clone());
            e
        }
        Err(e) => {
            decision.verdict = match e {
                TargetError::Refused(_) => Verdict::Refused,
                TargetError::Failed(_) => Verdict::Failed,
            };
            decision.verdict_reason = e.to_string();
            let mut entry = Entry::new(
                new_id,
                if decision.verdict == Verdict::Refused {
                    Status::Refused
                } else {
                    Status::Failed
                },
            );
            entry.error = Some(e.to_string());
            entry
        }
    };
    outcome.time = super::audit::now_rfc3339();
    let log = audit.clone();
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || log.append(&outcome)).await {
        tracing::error!("revert {new_id} of {key}: {e}");
    }
    Ok(decision)
}

/// The first audit line of `decision` with `status`.
pub fn entry_of(decision: &Decision, status: Status) -> Entry {
    let mut entry = Entry::new(0, status);
    entry.time = super::audit::rfc3339(decision.time);
    entry.kind = Some(decision.kind);
    entry.policy = Some(decision.policy.clone());
    entry.target = Some(decision.action.setting.target);
    entry.instance = Some(decision.action.setting.instance.clone());
    entry.parameter = Some(decision.action.setting.parameter.clone());
    entry.value = Some(decision.action.value.clone());
    entry.reason = Some(decision.reason.clone());
    entry.verdict = (!decision.verdict_reason.is_empty()).then(|| decision.verdict_reason.clone());
    entry.mode = decision.mode;
    entry.before = decision.before.clone();
    entry.after = decision.after.clone();
    entry.reverts = decision.reverts;
    entry.revert_if = decision.revert_if.clone();
    entry.verification = decision.verification.clone();
    entry
}

/// The audit status of a one-line verdict.
pub fn status_of(verdict: Verdict) -> Status {
    match verdict {
        Verdict::Applied => Status::Applied,
        Verdict::DryRun | Verdict::WouldApply => Status::DryRun,
        Verdict::Refused => Status::Refused,
        Verdict::Unchanged => Status::Unchanged,
        Verdict::Failed => Status::Failed,
    }
}

/// Audits `decision` as one line (with `restore` when given); returns it with its id.
pub async fn audit_one(
    audit: &AuditLog,
    mut decision: Decision,
    restore: Option<super::decision::Restore>,
) -> Decision {
    let mut entry = entry_of(&decision, status_of(decision.verdict));
    entry.restore = restore;
    let log = audit.clone();
    match tokio::task::spawn_blocking(move || log.record(&mut entry)).await {
        Ok(Ok(id)) => decision.id = Some(id),
        Ok(Err(e)) => tracing::warn!("decision not audited: {e}"),
        Err(e) => tracing::warn!("decision not audited: {e}"),
    }
    decision
}
