//! `pg-seqscan`: the "index recommendation": fires for each table that is read mostly
//! by sequential scans of many rows, with the table and the numbers in the finding.
//!
//! It judges what happened in a window of at least `window_s` seconds, from the
//! differences of the cumulative counters between the batches at its ends (kept in
//! the host's key/value state per table): a table whose scans stop is judged quiet by
//! the next window and its alert resolves. The verdict of the last complete window
//! holds until the next one is complete; a counter that goes down (statistics reset,
//! server restart) starts a new window.
//!
//! Settings: `min_seq_scans` (sequential scans in a window, default 100),
//! `min_rows_per_scan` (default 1000), `max_index_share` (index scans / all scans
//! below which it fires, default 0.1), `window_s` (default 300), `severity`
//! (default `info`).

use serde::{Deserialize, Serialize};
use vigil_plugin_kit::bindings::vigil::plugin::host;
use vigil_plugin_kit::bindings::{Batch, Finding, Guest, PluginInfo};
use vigil_plugin_kit::{Point, finding, points_of, settings, severity, update_state};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_scans")]
    min_seq_scans: f64,
    #[serde(default = "default_rows")]
    min_rows_per_scan: f64,
    #[serde(default = "default_share")]
    max_index_share: f64,
    #[serde(default = "default_window")]
    window_s: f64,
    #[serde(default = "default_severity")]
    severity: String,
}

fn default_scans() -> f64 {
    100.0
}
fn default_rows() -> f64 {
    1000.0
}
fn default_share() -> f64 {
    0.1
}
fn default_window() -> f64 {
    300.0
}
fn default_severity() -> String {
    "info".into()
}

const TABLE_ATTRS: [&str; 4] = [
    "vigil.instance",
    "db.namespace",
    "postgresql.schema.name",
    "postgresql.table.name",
];

fn same_table(a: &Point, b: &Point) -> bool {
    TABLE_ATTRS.iter().all(|k| a.attr(k) == b.attr(k))
}

/// Sequential scans, rows they read, and index scans of a table (cumulative).
type Counters = [f64; 3];

/// What a window of one table saw: sequential scans, rows per scan, index scans.
type Verdict = (f64, f64, f64);

/// One table's window, as kept in the host's state.
#[derive(Serialize, Deserialize)]
struct Window {
    base: Counters,
    started_ns: u64,
    last: Counters,
    /// The numbers of the last complete window, when it called for an index.
    heavy: Option<Verdict>,
}

impl Window {
    fn new(counters: Counters, now: u64) -> Self {
        Window {
            base: counters,
            started_ns: now,
            last: counters,
            heavy: None,
        }
    }

    /// Takes the counters of a new batch; judges the window once it is long enough.
    fn advance(&mut self, counters: Counters, now: u64, s: &Settings) {
        if counters.iter().zip(&self.last).any(|(c, l)| c < l) {
            self.base = counters;
            self.started_ns = now;
        }
        self.last = counters;
        if (now.saturating_sub(self.started_ns) as f64) < s.window_s * 1e9 {
            return;
        }
        let [scans, rows, index_scans] = [0, 1, 2].map(|i| counters[i] - self.base[i]);
        self.base = counters;
        self.started_ns = now;
        self.heavy = None;
        if scans < s.min_seq_scans || scans <= 0.0 {
            return;
        }
        let rows_per_scan = rows / scans;
        let index_share = index_scans / (index_scans + scans);
        if rows_per_scan >= s.min_rows_per_scan && index_share <= s.max_index_share {
            self.heavy = Some((scans, rows_per_scan, index_scans));
        }
    }
}

struct SeqScan;

impl Guest for SeqScan {
    fn describe() -> Result<PluginInfo, String> {
        let s: Settings = settings("pg-seqscan")?;
        severity(&s.severity)?;
        Ok(PluginInfo {
            name: "pg-seqscan".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: vec![
                "postgresql.sequential_scans".into(),
                "postgresql.table.seq_rows_read".into(),
                "postgresql.table.index_scans".into(),
            ],
        })
    }

    fn evaluate(batch: Batch) -> Result<Vec<Finding>, String> {
        let batch = vigil_plugin_kit::Frame::new(batch)?;
        let s: Settings = settings("pg-seqscan")?;
        let now = host::now_ns();
        let mut findings = Vec::new();
        for scans in points_of(&batch, "postgresql.sequential_scans") {
            let rows = points_of(&batch, "postgresql.table.seq_rows_read")
                .find(|p| same_table(p, &scans))
                .map_or(0.0, |p| p.value);
            let index_scans = points_of(&batch, "postgresql.table.index_scans")
                .find(|p| same_table(p, &scans))
                .map_or(0.0, |p| p.value);
            let table = format!(
                "{}.{}",
                scans.attr("postgresql.schema.name"),
                scans.attr("postgresql.table.name")
            );
            let db = scans.attr("db.namespace");
            let instance = scans.attr("vigil.instance");
            let key = format!("instance={instance},db={db},table={table}");
            let counters = [scans.value, rows, index_scans];
            let window = update_state(
                &key,
                || Window::new(counters, now),
                |window: &mut Window| window.advance(counters, now, &s),
            )?;
            let Some((scans, rows_per_scan, index_scans)) = window.heavy else {
                continue;
            };
            findings.push(finding(
                "pg-seqscan-heavy",
                key,
                severity(&s.severity)?,
                format!(
                    "table {table} in {db}: {scans} sequential scans in the last {}s reading {rows_per_scan:.0} rows each, {index_scans} index scans; consider an index on the columns it is filtered by",
                    s.window_s
                ),
                scans,
                &[
                    ("db.namespace", db.to_owned()),
                    ("postgresql.table.name", table),
                    ("seq_scans", scans.to_string()),
                    ("rows_per_scan", format!("{rows_per_scan:.0}")),
                    ("index_scans", index_scans.to_string()),
                ],
            ));
        }
        Ok(findings)
    }
}

vigil_plugin_kit::bindings::export!(SeqScan with_types_in vigil_plugin_kit::bindings);
