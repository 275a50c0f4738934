//! `vigil advise postgres --instance NAME`: one collection round of the instance, the
//! advisor policy run on it, and each of its PostgreSQL maintenance proposals inspected on
//! the server as the gate would (index proposals verified with HypoPG), printed as a
//! table. Nothing is applied and nothing is audited.

use std::io::Write;
use std::path::Path;

use super::action::{MaintenanceOp, Proposal, SettingKey, Target};
use super::target::{TargetError, Targets};
use crate::collect::build_server;
use crate::config::{AllowEntry, Config, ServerKind};
use crate::plugin::{Output, PluginInstance, PluginRuntime, PolicyInputs};

/// One proposal and what the server says about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Advice {
    pub operation: String,
    pub object: String,
    /// The pg_stat_statements ids an index is meant for.
    pub statements: Vec<String>,
    pub cost_before: Option<f64>,
    pub cost_after: Option<f64>,
    /// Share of the cost the index removes, 0..1.
    pub reduction: Option<f64>,
    /// `would apply` (allowlisted and passing), `not allowlisted`, `refused`, `nothing to do`.
    pub status: String,
    /// The policy's reason, or why it is refused or unchanged.
    pub detail: String,
}

/// Why `vigil advise` could not run.
#[derive(Debug, thiserror::Error)]
pub enum AdviseError {
    #[error(
        "no [[collect.postgres]] instance named {0:?} in the config; `vigil advise postgres --instance NAME` takes one of its names"
    )]
    NoInstance(String),
    #[error("cannot collect from {instance}: {reason}")]
    Collect { instance: String, reason: String },
    #[error("cannot load the policy {path}: {reason} (build it, or name another with --policy)")]
    Policy { path: String, reason: String },
    #[error("the policy {0} failed on the batch: {1}")]
    Propose(String, String),
}

/// The allowlist entry for `key` that admits `policy`, or a default one (for the minimum
/// cost reduction and timeouts) when there is none.
fn entry_for(config: &Config, policy: &str, key: &SettingKey) -> (AllowEntry, bool) {
    match super::gate::allow_entry(&config.tuning, policy, key) {
        Ok(entry) => (entry.clone(), true),
        Err(_) => {
            let default: AllowEntry = toml::from_str(&format!(
                "target = \"postgres-maintenance\"\ninstance = {:?}\nparameter = {:?}\ntables = [\"*\"]",
                key.instance, key.parameter
            ))
            .expect("a default allowlist entry parses");
            (default, false)
        }
    }
}

/// Collects one round of `instance`, runs policy `policy_path` on it and inspects each
/// maintenance proposal for that instance on the server.
pub async fn advise(
    config: &Config,
    runtime: &PluginRuntime,
    instance: &str,
    policy_path: &Path,
) -> Result<Vec<Advice>, AdviseError> {
    let server = config
        .collect
        .instances(ServerKind::Postgres)
        .iter()
        .find(|i| i.name == instance)
        .ok_or_else(|| AdviseError::NoInstance(instance.to_owned()))?;
    let collect_error = |reason: String| AdviseError::Collect {
        instance: instance.to_owned(),
        reason,
    };
    let mut collector = build_server(
        ServerKind::Postgres,
        server,
        crate::pipeline::host_name(config),
    )
    .map_err(|e| collect_error(e.to_string()))?;
    let round = collector
        .collect()
        .await
        .map_err(|e| collect_error(e.to_string()))?;
    if let Some(failure) = round.failure {
        return Err(collect_error(failure));
    }
    let name = policy_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut policy = PluginInstance::load(
        runtime,
        policy_path,
        &name,
        config.plugins.settings_json(&name),
    )
    .map_err(|e| AdviseError::Policy {
        path: policy_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let proposals = match policy.run(&round.batch, &PolicyInputs::default()) {
        Ok(Some(Output::Proposals(proposals))) => proposals,
        Ok(_) => Vec::new(),
        Err(e) => return Err(AdviseError::Propose(name, e.to_string())),
    };
    let targets = Targets::new(config.collect.clone(), None);
    let mut advice = Vec::new();
    for proposal in proposals {
        if let Some(a) = inspect(config, &targets, instance, &proposal).await {
            advice.push(a);
        }
    }
    Ok(advice)
}

async fn inspect(
    config: &Config,
    targets: &Targets,
    instance: &str,
    proposal: &Proposal,
) -> Option<Advice> {
    let key = &proposal.action.setting;
    let m = proposal.action.maintenance.as_ref()?;
    if key.target != Target::PostgresMaintenance || key.instance != instance {
        return None;
    }
    let (entry, allowlisted) = entry_for(config, &proposal.policy, key);
    let mut advice = Advice {
        operation: m.op.as_str().to_owned(),
        object: proposal.action.value.clone(),
        statements: m.statements.clone(),
        cost_before: None,
        cost_after: None,
        reduction: None,
        status: String::new(),
        detail: proposal.reason.clone(),
    };
    let covered = m.op == MaintenanceOp::DropIndex || entry.covers_table(&m.schema, &m.name);
    match targets.inspect(key, &entry, m).await {
        Err(TargetError::Refused(why) | TargetError::Failed(why)) => {
            advice.status = "refused".into();
            advice.detail = why;
        }
        Ok(inspection) => {
            if let Some(Ok(v)) = &inspection.verification {
                advice.cost_before = Some(v.cost_before);
                advice.cost_after = Some(v.cost_after);
                advice.reduction = Some(v.reduction());
            }
            if let Some(Err(why)) = &inspection.verification {
                advice.status = "unverified".into();
                advice.detail = why.clone();
            } else if let Some(refusal) = inspection.reading.refusal {
                advice.status = "refused".into();
                advice.detail = refusal;
            } else if let Some(why) = inspection.unchanged {
                advice.status = "nothing to do".into();
                advice.detail = why;
            } else if !allowlisted || !covered {
                advice.status = "not allowlisted".into();
            } else {
                advice.status = "would apply".into();
            }
        }
    }
    Some(advice)
}

/// Prints `advice` as a table (or one JSON object per line).
pub fn print(advice: &[Advice], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        for a in advice {
            writeln!(out, "{}", serde_json::to_string(a).unwrap_or_default())?;
        }
        return Ok(());
    }
    if advice.is_empty() {
        return writeln!(out, "no proposals");
    }
    let cost = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.1}"));
    let rows: Vec<[String; 7]> = advice
        .iter()
        .map(|a| {
            [
                a.operation.clone(),
                a.object.clone(),
                cost(a.cost_before),
                cost(a.cost_after),
                a.reduction
                    .map_or("-".to_owned(), |r| format!("{:.0} %", r * 100.0)),
                a.status.clone(),
                a.detail.clone(),
            ]
        })
        .collect();
    let header = [
        "OPERATION",
        "OBJECT",
        "COST BEFORE",
        "COST AFTER",
        "REDUCTION",
        "STATUS",
        "DETAIL",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        text
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}
