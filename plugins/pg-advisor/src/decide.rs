//! The advisor's logic, free of host calls (built and tested natively): settings, what a
//! batch says about one instance's tables and statements, and the proposals.

use serde::Deserialize;
use vigil_plugin_kit::bindings::vigil::plugin::types::{Action, IndexProposal, Proposal, TableRef};

use crate::columns::{Candidate, candidates};

/// Live and dead rows of a table (`state` attribute).
pub const ROWS: &str = "postgresql.rows";
/// Rows changed since the table's last ANALYZE.
pub const MODIFIED: &str = "postgresql.table.modifications_since_analyze";
/// Mean execution time of a normalized statement (seconds).
pub const MEAN_TIME: &str = "postgresql.query.mean_time";
/// Calls of a normalized statement.
pub const CALLS: &str = "postgresql.query.calls";

/// The settings as the config writes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    instance: Option<String>,
    #[serde(default = "default_dead_rows")]
    vacuum_dead_rows: f64,
    #[serde(default = "default_ratio")]
    vacuum_dead_ratio: f64,
    #[serde(default = "default_dead_rows")]
    analyze_changed_rows: f64,
    #[serde(default = "default_ratio")]
    analyze_changed_ratio: f64,
    #[serde(default = "default_slowest")]
    slowest_statements: usize,
    #[serde(default = "default_min_calls")]
    min_calls: f64,
    #[serde(default)]
    min_mean_ms: f64,
    #[serde(default = "default_max_indexes")]
    max_index_proposals: usize,
}

fn default_dead_rows() -> f64 {
    1000.0
}
fn default_ratio() -> f64 {
    0.2
}
fn default_slowest() -> usize {
    5
}
fn default_min_calls() -> f64 {
    10.0
}
fn default_max_indexes() -> usize {
    10
}

/// The advisor's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Only this instance (all when `None`).
    pub instance: Option<String>,
    /// VACUUM when a table has at least this many dead rows ...
    pub vacuum_dead_rows: f64,
    /// ... and they are at least this share of its rows.
    pub vacuum_dead_ratio: f64,
    /// ANALYZE when at least this many rows changed since the last one ...
    pub analyze_changed_rows: f64,
    /// ... and they are at least this share of its live rows.
    pub analyze_changed_ratio: f64,
    /// Index candidates come from this many statements, the slowest by mean time.
    pub slowest_statements: usize,
    /// Statements called fewer times are left out.
    pub min_calls: f64,
    /// Statements faster on average are left out.
    pub min_mean_ms: f64,
    /// Most index proposals per batch.
    pub max_index_proposals: usize,
}

impl Settings {
    /// Parses and checks the plugin's settings (JSON from the host).
    pub fn parse(json: &str) -> Result<Settings, String> {
        let raw: Raw =
            serde_json::from_str(json).map_err(|e| format!("invalid pg-advisor settings: {e}"))?;
        for (name, ratio) in [
            ("vacuum_dead_ratio", raw.vacuum_dead_ratio),
            ("analyze_changed_ratio", raw.analyze_changed_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(format!(
                    "invalid pg-advisor settings: {name} must be between 0 and 1"
                ));
            }
        }
        Ok(Settings {
            instance: raw.instance,
            vacuum_dead_rows: raw.vacuum_dead_rows,
            vacuum_dead_ratio: raw.vacuum_dead_ratio,
            analyze_changed_rows: raw.analyze_changed_rows,
            analyze_changed_ratio: raw.analyze_changed_ratio,
            slowest_statements: raw.slowest_statements,
            min_calls: raw.min_calls,
            min_mean_ms: raw.min_mean_ms,
            max_index_proposals: raw.max_index_proposals,
        })
    }

    /// Whether the advisor looks at `instance`.
    pub fn watches(&self, instance: &str) -> bool {
        self.instance.as_deref().is_none_or(|i| i == instance)
    }
}

/// What a batch says about one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableStats {
    pub schema: String,
    pub table: String,
    pub live: f64,
    pub dead: f64,
    pub changed: f64,
}

/// What a batch says about one normalized statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statement {
    /// Its `postgresql.query.id`.
    pub id: String,
    pub text: String,
    pub mean_s: f64,
    pub calls: f64,
}

fn table_ref(instance: &str, schema: &str, table: &str) -> TableRef {
    TableRef {
        instance: instance.to_owned(),
        schema: schema.to_owned(),
        table: table.to_owned(),
    }
}

/// VACUUM for tables with enough dead rows, else ANALYZE for tables changed enough since
/// their last ANALYZE (a VACUUM (ANALYZE) does both).
pub fn maintenance(s: &Settings, instance: &str, tables: &[TableStats]) -> Vec<Proposal> {
    let mut out = Vec::new();
    for t in tables {
        let rows = t.live + t.dead;
        if t.dead >= s.vacuum_dead_rows && rows > 0.0 && t.dead / rows >= s.vacuum_dead_ratio {
            out.push(Proposal {
                action: Action::PostgresVacuum(table_ref(instance, &t.schema, &t.table)),
                reason: format!(
                    "{}.{} has {} dead rows, {:.0} % of its rows",
                    t.schema,
                    t.table,
                    t.dead,
                    t.dead / rows * 100.0
                ),
                revert_if: None,
            });
        } else if t.changed >= s.analyze_changed_rows
            && t.changed >= s.analyze_changed_ratio * t.live
        {
            out.push(Proposal {
                action: Action::PostgresAnalyze(table_ref(instance, &t.schema, &t.table)),
                reason: format!(
                    "{} rows of {}.{} changed since its last ANALYZE ({} live)",
                    t.changed, t.schema, t.table, t.live
                ),
                revert_if: None,
            });
        }
    }
    out
}

/// The schema and table a statement's table name (`schema.table` or `table`) means: a
/// qualified name as written; a bare one in the schema the batch has it in (`public`
/// when the batch does not have it, or has it in several).
fn qualify(name: &str, tables: &[TableStats]) -> (String, String) {
    if let Some((schema, table)) = name.split_once('.') {
        return (schema.to_owned(), table.to_owned());
    }
    let mut schemas = tables.iter().filter(|t| t.table == name);
    match (schemas.next(), schemas.next()) {
        (Some(only), None) => (only.schema.clone(), name.to_owned()),
        _ => ("public".to_owned(), name.to_owned()),
    }
}

/// A proposed index: schema, table, columns.
type IndexKey = (String, String, Vec<String>);

/// Index proposals for the slowest statements' compared columns, one per (table,
/// columns), naming every statement it is meant for.
pub fn indexes(
    s: &Settings,
    instance: &str,
    statements: &[Statement],
    tables: &[TableStats],
) -> Vec<Proposal> {
    let mut slow: Vec<&Statement> = statements
        .iter()
        .filter(|st| st.calls >= s.min_calls && st.mean_s * 1000.0 >= s.min_mean_ms)
        .collect();
    slow.sort_by(|a, b| b.mean_s.total_cmp(&a.mean_s).then(a.id.cmp(&b.id)));
    slow.truncate(s.slowest_statements);
    // (schema, table, columns), the statement ids, the slowest mean.
    let mut found: Vec<(IndexKey, Vec<String>, f64)> = Vec::new();
    for st in slow {
        for Candidate { table, columns } in candidates(&st.text) {
            let (schema, table) = qualify(&table, tables);
            let key = (schema, table, columns);
            match found.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, ids, _)) => {
                    if !ids.contains(&st.id) {
                        ids.push(st.id.clone());
                    }
                }
                None => found.push((key, vec![st.id.clone()], st.mean_s)),
            }
        }
    }
    found.truncate(s.max_index_proposals);
    found
        .into_iter()
        .map(|((schema, table, columns), mut ids, mean)| {
            ids.sort();
            Proposal {
                reason: format!(
                    "{} of {schema}.{table} is compared by {} slow statement(s) (up to {:.1} ms each)",
                    columns.join(", "),
                    ids.len(),
                    mean * 1000.0
                ),
                action: Action::PostgresCreateIndex(IndexProposal {
                    table: table_ref(instance, &schema, &table),
                    columns,
                    statements: ids,
                }),
                revert_if: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::parse("{}").unwrap()
    }

    fn table(name: &str, live: f64, dead: f64, changed: f64) -> TableStats {
        TableStats {
            schema: "app".into(),
            table: name.into(),
            live,
            dead,
            changed,
        }
    }

    #[test]
    fn settings_have_defaults_and_are_checked() {
        let s = settings();
        assert_eq!(s.vacuum_dead_rows, 1000.0);
        assert_eq!(s.slowest_statements, 5);
        assert!(s.watches("any"));
        assert!(Settings::parse(r#"{"vacuum_dead_ratio": 2}"#).is_err());
        assert!(Settings::parse(r#"{"unknown": 1}"#).is_err());
        assert!(
            !Settings::parse(r#"{"instance": "a"}"#)
                .unwrap()
                .watches("b")
        );
    }

    #[test]
    fn vacuum_for_dead_rows_analyze_for_changes() {
        let tables = [
            table("bloated", 1500.0, 1000.0, 3000.0),
            table("few_dead", 100_000.0, 1000.0, 0.0),
            table("changed", 1000.0, 0.0, 5000.0),
            table("quiet", 1000.0, 10.0, 10.0),
        ];
        let out = maintenance(&settings(), "main", &tables);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[0].action,
            Action::PostgresVacuum(table_ref("main", "app", "bloated"))
        );
        assert!(
            out[0].reason.contains("1000 dead rows, 40 %"),
            "{}",
            out[0].reason
        );
        assert_eq!(
            out[1].action,
            Action::PostgresAnalyze(table_ref("main", "app", "changed"))
        );
    }

    fn statement(id: &str, text: &str, mean_ms: f64, calls: f64) -> Statement {
        Statement {
            id: id.into(),
            text: text.into(),
            mean_s: mean_ms / 1000.0,
            calls,
        }
    }

    #[test]
    fn index_proposals_come_from_the_slowest_statements() {
        let tables = [table("orders", 1e5, 0.0, 0.0)];
        let statements = [
            statement(
                "1",
                "SELECT * FROM orders WHERE customer_id = $1",
                20.0,
                50.0,
            ),
            statement(
                "2",
                "SELECT count(*) FROM orders WHERE customer_id = $1",
                30.0,
                50.0,
            ),
            statement("3", "SELECT * FROM orders WHERE status = $1", 1.0, 5.0),
        ];
        let out = indexes(&settings(), "main", &statements, &tables);
        assert_eq!(out.len(), 1, "statement 3 is called too rarely: {out:?}");
        let Action::PostgresCreateIndex(index) = &out[0].action else {
            panic!("{out:?}");
        };
        assert_eq!(index.table, table_ref("main", "app", "orders"));
        assert_eq!(index.columns, ["customer_id"]);
        assert_eq!(index.statements, ["1", "2"]);
    }

    #[test]
    fn a_qualified_table_keeps_its_schema_and_an_unknown_one_is_public() {
        assert_eq!(qualify("s.t", &[]), ("s".into(), "t".into()));
        assert_eq!(qualify("t", &[]), ("public".into(), "t".into()));
        assert_eq!(
            qualify("t", &[table("t", 0.0, 0.0, 0.0)]),
            ("app".into(), "t".into())
        );
    }
}
