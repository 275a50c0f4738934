//! What the engine decided about one proposal (or revert): the verdict and its reason,
//! the values before and after, and the audit id.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::action::{Action, RevertCondition};
use super::pg_verify::Verification;
use crate::config::PolicyMode;

/// Why a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    /// A policy proposed it.
    Proposal,
    /// An operator ran `vigil actions revert`.
    Revert,
    /// A watched metric got worse after a change with `revert_if`.
    AutoRevert,
}

impl DecisionKind {
    /// The audit file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Proposal => "proposal",
            DecisionKind::Revert => "revert",
            DecisionKind::AutoRevert => "auto-revert",
        }
    }
}

/// The outcome of a decision (the audit file's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Changed on the server (read back).
    Applied,
    /// Passed the gate, but the policy is not set to enforce: nothing changed.
    DryRun,
    /// Stopped by the gate (or refused by the server); nothing changed.
    Refused,
    /// The setting already has that value.
    Unchanged,
    /// Passed the gate but the change failed on the server.
    Failed,
    /// Preview only (`vigil plugin test`): the gate passes and the policy enforces, so the
    /// agent would apply it.
    WouldApply,
}

impl Verdict {
    /// The audit file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Applied => "applied",
            Verdict::DryRun => "dry-run",
            Verdict::Refused => "refused",
            Verdict::Unchanged => "unchanged",
            Verdict::Failed => "failed",
            Verdict::WouldApply => "would-apply",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to put a setting back exactly as it was before a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Restore {
    /// Set it to this value (Redis, MySQL, collectors; PostgreSQL when
    /// `postgresql.auto.conf` had this entry).
    Set(String),
    /// PostgreSQL: `ALTER SYSTEM RESET` (there was no entry in `postgresql.auto.conf`).
    Reset,
    /// PostgreSQL maintenance: drop the index the change created.
    #[serde(rename = "drop-index")]
    DropIndex { schema: String, index: String },
    /// PostgreSQL maintenance: a VACUUM or ANALYZE, which has nothing to undo.
    Nothing,
}

/// One decision, as audited and handed to the decision sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The audit id; `None` when nothing was audited (a repeat, a preview, or the audit
    /// file could not be written).
    pub id: Option<u64>,
    #[serde(serialize_with = "crate::model::time_as_rfc3339")]
    pub time: SystemTime,
    pub kind: DecisionKind,
    /// The policy (for `revert`: `operator`).
    pub policy: String,
    pub action: Action,
    /// The policy's reason (for reverts: what is reverted and why).
    pub reason: String,
    pub verdict: Verdict,
    /// Why this verdict, in one line (the refusal reason, what would have changed, ...).
    pub verdict_reason: String,
    /// The policy's mode (none for reverts).
    pub mode: Option<PolicyMode>,
    /// The value before (when it was read).
    pub before: Option<String>,
    /// The value read back after applying.
    pub after: Option<String>,
    /// The decision a revert undoes.
    pub reverts: Option<u64>,
    pub revert_if: Option<RevertCondition>,
    /// Same verdict as the previous decision on the same (policy, action): counted, not
    /// audited, not logged.
    pub repeat: bool,
    /// An index proposal's hypothetical verification (planner cost without and with it).
    pub verification: Option<Verification>,
}

impl Decision {
    /// Whether the decision is in the audit file.
    pub fn audited(&self) -> bool {
        self.id.is_some()
    }

    /// One line for a log record's body: `tuning redis main hz = 20: applied (set ...)`.
    pub fn summary(&self) -> String {
        format!(
            "tuning {}: {} ({})",
            self.action, self.verdict, self.verdict_reason
        )
    }

    /// The decision as log-record attributes (`vigil.tuning.*`; absent values left out).
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let setting = &self.action.setting;
        let mut attrs = vec![
            ("vigil.tuning.kind", self.kind.as_str().to_owned()),
            ("vigil.tuning.policy", self.policy.clone()),
            ("vigil.tuning.target", setting.target.as_str().to_owned()),
            ("vigil.tuning.instance", setting.instance.clone()),
            ("vigil.tuning.parameter", setting.parameter.clone()),
            ("vigil.tuning.value", self.action.value.clone()),
            ("vigil.tuning.verdict", self.verdict.as_str().to_owned()),
            ("vigil.tuning.verdict_reason", self.verdict_reason.clone()),
            ("vigil.tuning.reason", self.reason.clone()),
        ];
        let optional = [
            ("vigil.tuning.id", self.id.map(|id| id.to_string())),
            (
                "vigil.tuning.mode",
                self.mode.map(|m| m.as_str().to_owned()),
            ),
            ("vigil.tuning.before", self.before.clone()),
            ("vigil.tuning.after", self.after.clone()),
            (
                "vigil.tuning.cost_before",
                self.verification
                    .as_ref()
                    .map(|v| v.cost_before.to_string()),
            ),
            (
                "vigil.tuning.cost_after",
                self.verification.as_ref().map(|v| v.cost_after.to_string()),
            ),
            (
                "vigil.tuning.reverts",
                self.reverts.map(|id| id.to_string()),
            ),
        ];
        attrs.extend(
            optional
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?))),
        );
        attrs
    }
}
