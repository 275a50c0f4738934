//! `pg-seqscan`: the "index recommendation": fires for each table that is read mostly
//! by sequential scans of many rows, with the table and the numbers in the finding.
//!
//! Settings: `min_seq_scans` (default 100), `min_rows_per_scan` (default 1000),
//! `max_index_share` (index scans / all scans below which it fires, default 0.1),
//! `severity` (default `info`).

use serde::Deserialize;
use vigil_plugin_kit::bindings::{Batch, Finding, Guest, PluginInfo};
use vigil_plugin_kit::{Point, finding, points_of, settings, severity};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_scans")]
    min_seq_scans: f64,
    #[serde(default = "default_rows")]
    min_rows_per_scan: f64,
    #[serde(default = "default_share")]
    max_index_share: f64,
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
        let s: Settings = settings("pg-seqscan")?;
        let mut findings = Vec::new();
        for scans in points_of(&batch, "postgresql.sequential_scans") {
            let rows = points_of(&batch, "postgresql.table.seq_rows_read")
                .find(|p| same_table(p, &scans))
                .map_or(0.0, |p| p.value);
            let index_scans = points_of(&batch, "postgresql.table.index_scans")
                .find(|p| same_table(p, &scans))
                .map_or(0.0, |p| p.value);
            if scans.value < s.min_seq_scans || scans.value <= 0.0 {
                continue;
            }
            let rows_per_scan = rows / scans.value;
            let index_share = index_scans / (index_scans + scans.value);
            if rows_per_scan >= s.min_rows_per_scan && index_share <= s.max_index_share {
                let table = format!(
                    "{}.{}",
                    scans.attr("postgresql.schema.name"),
                    scans.attr("postgresql.table.name")
                );
                let db = scans.attr("db.namespace");
                findings.push(finding(
                    "pg-seqscan-heavy",
                    format!("instance={},db={db},table={table}", scans.attr("vigil.instance")),
                    severity(&s.severity)?,
                    format!(
                        "table {table} in {db}: {} sequential scans reading {rows_per_scan:.0} rows each, {index_scans} index scans; consider an index on the columns it is filtered by",
                        scans.value
                    ),
                    scans.value,
                    &[
                        ("db.namespace", db.to_owned()),
                        ("postgresql.table.name", table),
                        ("seq_scans", scans.value.to_string()),
                        ("rows_per_scan", format!("{rows_per_scan:.0}")),
                        ("index_scans", index_scans.to_string()),
                    ],
                ));
            }
        }
        Ok(findings)
    }
}

vigil_plugin_kit::bindings::export!(SeqScan with_types_in vigil_plugin_kit::bindings);
