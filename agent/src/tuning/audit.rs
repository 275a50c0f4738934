//! The audit file: append-only JSON lines, one object per line, each written with one
//! `write_all` (O_APPEND) and `sync_data`, under an exclusive file lock (the CLI may write
//! while the agent runs).
//!
//! Decision ids are sequential (the largest id in the file + 1, found under the lock). A
//! change is two lines with the same id: `applying` (with the value before, fsync'd before
//! the server is touched), then `applied`, `failed` or `refused`. A watch that ends without
//! a revert adds a `kept` line. A torn last line (a crash mid-write) is skipped by readers
//! and cut off by the next writer (with one warning).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::action::{RevertCondition, Target};
use super::decision::{DecisionKind, Restore};
use crate::config::PolicyMode;

/// A line's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// About to change the server (an outcome line follows unless the agent stopped).
    Applying,
    Applied,
    Failed,
    DryRun,
    Refused,
    Unchanged,
    /// The watch of a change with `revert_if` ended without the metric getting worse.
    Kept,
}

impl Status {
    /// The audit file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Applying => "applying",
            Status::Applied => "applied",
            Status::Failed => "failed",
            Status::DryRun => "dry-run",
            Status::Refused => "refused",
            Status::Unchanged => "unchanged",
            Status::Kept => "kept",
        }
    }
}

/// One line of the audit file. The first line of a decision carries what was decided;
/// follow-up lines (same id) carry the outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    /// RFC 3339.
    pub time: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DecisionKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// The value proposed (for reverts: the value restored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The policy's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why this verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PolicyMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// How to restore `before` exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Restore>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_if: Option<RevertCondition>,
    /// An index proposal's hypothetical verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<super::pg_verify::Verification>,
}

impl Entry {
    /// A line of `status` for decision `id`, stamped now, with nothing else.
    pub fn new(id: u64, status: Status) -> Self {
        Entry {
            id,
            time: now_rfc3339(),
            status,
            kind: None,
            policy: None,
            target: None,
            instance: None,
            parameter: None,
            value: None,
            reason: None,
            verdict: None,
            mode: None,
            before: None,
            restore: None,
            after: None,
            error: None,
            reverts: None,
            revert_if: None,
            verification: None,
        }
    }
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `time` as RFC 3339 with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// The audit file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the audit file {path}: {source}; set tuning.audit_file to a writable file")]
pub struct AuditError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The writer's memory of the file: where the last complete line ended, and the largest id.
#[derive(Debug, Default)]
struct Tail {
    len: u64,
    max_id: u64,
    warned_torn: bool,
}

/// The audit file. Cheap to clone; every write opens, locks, appends, syncs and closes.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
    tail: Arc<Mutex<Tail>>,
}

impl AuditLog {
    /// The audit file at `path` (created with its directory on first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditLog {
            path: path.into(),
            tail: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the first line of a new decision, giving it the next id (returned).
    pub fn record(&self, entry: &mut Entry) -> Result<u64, AuditError> {
        self.write(entry, true)
    }

    /// Appends a follow-up line of decision `entry.id`.
    pub fn append(&self, entry: &Entry) -> Result<(), AuditError> {
        let mut entry = entry.clone();
        self.write(&mut entry, false).map(|_| ())
    }

    fn write(&self, entry: &mut Entry, new_id: bool) -> Result<u64, AuditError> {
        let fail = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        let mut tail = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(fail)?;
        file.lock().map_err(fail)?;
        let result = (|| {
            self.catch_up(&mut file, &mut tail)?;
            if new_id {
                entry.id = tail.max_id + 1;
            }
            let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
            line.push(b'\n');
            file.write_all(&line)?;
            file.sync_data()?;
            tail.len += line.len() as u64;
            tail.max_id = tail.max_id.max(entry.id);
            Ok(entry.id)
        })();
        let _ = file.unlock();
        result.map_err(fail)
    }

    /// Reads what others appended since our last write (ids), and cuts a torn last line.
    fn catch_up(&self, file: &mut File, tail: &mut Tail) -> std::io::Result<()> {
        let len = file.metadata()?.len();
        if len < tail.len {
            // Replaced or truncated by someone else: start over.
            *tail = Tail {
                warned_torn: tail.warned_torn,
                ..Tail::default()
            };
        }
        if len == tail.len {
            return Ok(());
        }
        file.seek(SeekFrom::Start(tail.len))?;
        let mut bytes = Vec::with_capacity((len - tail.len) as usize);
        file.take(len - tail.len).read_to_end(&mut bytes)?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for line in bytes[..complete].split(|b| *b == b'\n') {
            if let Some(id) = line_id(line) {
                tail.max_id = tail.max_id.max(id);
            }
        }
        if complete < bytes.len() {
            let cut = tail.len + complete as u64;
            if !tail.warned_torn {
                tail.warned_torn = true;
                tracing::warn!(
                    file = %self.path.display(),
                    "the audit file ends in an incomplete line ({} bytes, from a crash mid-write); cutting it off before appending",
                    bytes.len() - complete
                );
            }
            file.set_len(cut)?;
            tail.len = cut;
        } else {
            tail.len = len;
        }
        Ok(())
    }
}

/// The id of one line, if it is an entry.
fn line_id(line: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Id {
        id: u64,
    }
    serde_json::from_slice::<Id>(line).ok().map(|i| i.id)
}

/// Every complete, valid line of the audit file at `path` (none when it does not exist).
/// Lines that do not parse (a torn last line) are skipped; their count is returned.
pub fn read_entries(path: &Path) -> std::io::Result<(Vec<Entry>, usize)> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    let mut skipped = 0;
    for line in text.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Entry>(line) {
            Ok(entry) => entries.push(entry),
            Err(_) => skipped += 1,
        }
    }
    Ok((entries, skipped))
}

/// One decision, its lines folded together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The first line (what was decided), with the final status.
    #[serde(flatten)]
    pub entry: Entry,
    /// The final status (`applying` when no outcome followed: the agent stopped while
    /// applying); in JSON it is the row's `status`.
    #[serde(skip)]
    pub outcome: Status,
    /// The watch ended without a revert (`kept` line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    /// The applied revert that undid this change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverted_by: Option<u64>,
}

impl Row {
    /// The outcome as `actions list` shows it.
    pub fn outcome_text(&self) -> &'static str {
        match self.outcome {
            Status::Applying => "unknown (the agent stopped while applying)",
            other => other.as_str(),
        }
    }

    /// Whether this row is a change that is in effect on the server (applied, not reverted).
    pub fn is_applied_change(&self) -> bool {
        self.outcome == Status::Applied
    }
}

/// Folds lines by id into one row per decision, in id order.
pub fn fold(entries: Vec<Entry>) -> Vec<Row> {
    let mut rows: BTreeMap<u64, Row> = BTreeMap::new();
    for entry in entries {
        match rows.get_mut(&entry.id) {
            None => {
                let outcome = entry.status;
                rows.insert(
                    entry.id,
                    Row {
                        entry,
                        outcome,
                        kept: None,
                        reverted_by: None,
                    },
                );
            }
            Some(row) => match entry.status {
                Status::Kept => row.kept = Some(entry.verdict.unwrap_or_default()),
                status => {
                    row.outcome = status;
                    row.entry.status = status;
                    if entry.after.is_some() {
                        row.entry.after = entry.after;
                    }
                    if entry.error.is_some() {
                        row.entry.error = entry.error;
                    }
                    if entry.verdict.is_some() {
                        row.entry.verdict = entry.verdict;
                    }
                }
            },
        }
    }
    let reverted: Vec<(u64, u64)> = rows
        .values()
        .filter(|r| r.outcome == Status::Applied)
        .filter_map(|r| Some((r.entry.reverts?, r.entry.id)))
        .collect();
    for (original, by) in reverted {
        if let Some(row) = rows.get_mut(&original) {
            row.reverted_by = Some(by);
        }
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(status: Status) -> Entry {
        let mut e = Entry::new(0, status);
        e.kind = Some(DecisionKind::Proposal);
        e.policy = Some("p".into());
        e.target = Some(Target::Redis);
        e.instance = Some("main".into());
        e.parameter = Some("hz".into());
        e.value = Some("20".into());
        e
    }

    #[test]
    fn ids_are_sequential_and_lines_fold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/actions.jsonl");
        let log = AuditLog::new(&path);
        let mut first = decision(Status::DryRun);
        assert_eq!(log.record(&mut first).unwrap(), 1);
        let mut change = decision(Status::Applying);
        change.before = Some("10".into());
        let id = log.record(&mut change).unwrap();
        assert_eq!(id, 2);
        let mut done = Entry::new(id, Status::Applied);
        done.after = Some("20".into());
        log.append(&done).unwrap();
        // Another writer (the CLI) appends meanwhile: ids continue after its.
        let other = AuditLog::new(&path);
        let mut stalled = decision(Status::Applying);
        assert_eq!(other.record(&mut stalled).unwrap(), 3);
        assert_eq!(log.record(&mut decision(Status::Refused)).unwrap(), 4);
        let mut revert = decision(Status::Applying);
        revert.kind = Some(DecisionKind::Revert);
        revert.reverts = Some(2);
        let rid = other.record(&mut revert).unwrap();
        other.append(&Entry::new(rid, Status::Applied)).unwrap();

        let (entries, skipped) = read_entries(&path).unwrap();
        assert_eq!((entries.len(), skipped), (7, 0));
        let rows = fold(entries);
        let ids: Vec<u64> = rows.iter().map(|r| r.entry.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(rows[1].outcome, Status::Applied);
        assert_eq!(rows[1].entry.before.as_deref(), Some("10"));
        assert_eq!(rows[1].entry.after.as_deref(), Some("20"));
        assert_eq!(rows[1].reverted_by, Some(5));
        assert_eq!(
            rows[2].outcome_text(),
            "unknown (the agent stopped while applying)"
        );
        assert_eq!(rows[3].outcome, Status::Refused);
    }

    #[test]
    fn a_torn_last_line_is_skipped_then_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actions.jsonl");
        let log = AuditLog::new(&path);
        log.record(&mut decision(Status::DryRun)).unwrap();
        log.record(&mut decision(Status::DryRun)).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"id\":3,\"time\":\"2026-11-26T0")
            .unwrap();
        drop(file);
        let (entries, skipped) = read_entries(&path).unwrap();
        assert_eq!((entries.len(), skipped), (2, 1));
        // A fresh writer (a restarted agent) cuts the torn line and continues at 3.
        let restarted = AuditLog::new(&path);
        assert_eq!(restarted.record(&mut decision(Status::Refused)).unwrap(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.ends_with('\n'));
        let (entries, skipped) = read_entries(&path).unwrap();
        assert_eq!((entries.len(), skipped), (3, 0));
    }

    #[test]
    fn concurrent_writers_never_share_an_id_or_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actions.jsonl");
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let log = AuditLog::new(&path);
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| log.record(&mut decision(Status::DryRun)).unwrap())
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut ids: Vec<u64> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=200).collect::<Vec<u64>>());
        let (entries, skipped) = read_entries(&path).unwrap();
        assert_eq!((entries.len(), skipped), (200, 0));
    }

    #[test]
    fn an_unwritable_file_is_an_error_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        let log = AuditLog::new(dir.path());
        let err = log.record(&mut decision(Status::DryRun)).unwrap_err();
        assert!(err.to_string().contains("tuning.audit_file"), "{err}");
    }
}
