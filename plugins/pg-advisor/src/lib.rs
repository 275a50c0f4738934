//! `pg-advisor`: an example tuning policy that proposes PostgreSQL maintenance: VACUUM and
//! ANALYZE of tables that need it, and indexes for the slowest statements. It replaces the
//! `pg-seqscan` rule's advice (which could point at a table, not at an index).
//!
//! **Watches**, per PostgreSQL instance (series with `vigil.instance = NAME`):
//! `postgresql.rows` (live and dead rows per table), `postgresql.table.modifications_since_analyze`,
//! and, with pg_stat_statements, `postgresql.query.mean_time` / `postgresql.query.calls` with
//! the statement's normalized text (`db.query.text`) and id (`postgresql.query.id`).
//!
//! **Proposes**
//! - `postgres-vacuum` of a table with at least `vacuum_dead_rows` dead rows that are at
//!   least `vacuum_dead_ratio` of its rows (a `VACUUM (ANALYZE)`, so no ANALYZE besides);
//! - else `postgres-analyze` of a table with at least `analyze_changed_rows` rows changed
//!   since its last ANALYZE, at least `analyze_changed_ratio` of its live rows;
//! - `postgres-create-index` for the columns the `slowest_statements` slowest statements
//!   (by mean time, called at least `min_calls` times, at least `min_mean_ms` on average)
//!   compare in WHERE and JOIN conditions: each column alone, and per table the first two
//!   together (equalities first). The extraction is simple on purpose: the host verifies
//!   every proposed index with HypoPG (a hypothetical index, the statements' generic plans
//!   EXPLAINed with and without it) and refuses those that do not cut the cost enough.
//!
//! Like every policy it changes nothing itself: the operator's allowlist
//! (`[[tuning.allow]] target = "postgres-maintenance"`) and the policy's mode decide.
//!
//! **Settings** (`[plugins.settings.pg-advisor]`, all optional):
//!
//! ```toml
//! instance = "main"            # only this instance (default: every instance)
//! vacuum_dead_rows = 1000
//! vacuum_dead_ratio = 0.2
//! analyze_changed_rows = 1000
//! analyze_changed_ratio = 0.2
//! slowest_statements = 5
//! min_calls = 10
//! min_mean_ms = 0
//! max_index_proposals = 10     # per batch
//! ```
//!
//! The logic is in [`decide`] and [`columns`]; its tests run natively:
//! `cd plugins && cargo test -p pg-advisor`.

pub mod columns;
pub mod decide;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use vigil_plugin_kit::policy::settings_once;
use vigil_plugin_kit::policy_bindings::{
    Batch, CurrentSetting, FiringAlert, Guest, PluginInfo, Proposal,
};
use vigil_plugin_kit::{Frame, instance};

use decide::{CALLS, MEAN_TIME, MODIFIED, ROWS, Settings, Statement, TableStats};

/// The settings, parsed once per instance (new settings start a new instance).
fn settings() -> Result<&'static Settings, String> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    settings_once(&SETTINGS, Settings::parse)
}

/// What one batch says about one instance.
#[derive(Default)]
struct Seen {
    tables: BTreeMap<(String, String), TableStats>,
    statements: BTreeMap<String, Statement>,
}

struct Advisor;

impl Guest for Advisor {
    fn describe() -> Result<PluginInfo, String> {
        settings()?;
        Ok(PluginInfo {
            name: "pg-advisor".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            interests: [ROWS, MODIFIED, MEAN_TIME, CALLS]
                .map(String::from)
                .to_vec(),
        })
    }

    fn propose(
        batch: Batch,
        _firing: Vec<FiringAlert>,
        _current: Vec<CurrentSetting>,
    ) -> Result<Vec<Proposal>, String> {
        let s = settings()?;
        let frame = Frame::new(batch)?;
        let mut by_instance: BTreeMap<String, Seen> = BTreeMap::new();
        for point in frame.points() {
            let name = instance(&frame.batch.source, point.attributes);
            if !s.watches(name) {
                continue;
            }
            let seen = by_instance.entry(name.to_owned()).or_default();
            match point.metric {
                ROWS | MODIFIED => {
                    let schema = point.attr("postgresql.schema.name").to_owned();
                    let table = point.attr("postgresql.table.name").to_owned();
                    let stats = seen
                        .tables
                        .entry((schema.clone(), table.clone()))
                        .or_insert_with(|| TableStats {
                            schema,
                            table,
                            ..TableStats::default()
                        });
                    match (point.metric, point.attr("state")) {
                        (ROWS, "live") => stats.live = point.value,
                        (ROWS, "dead") => stats.dead = point.value,
                        (MODIFIED, _) => stats.changed = point.value,
                        _ => {}
                    }
                }
                MEAN_TIME | CALLS => {
                    let id = point.attr("postgresql.query.id").to_owned();
                    let statement =
                        seen.statements
                            .entry(id.clone())
                            .or_insert_with(|| Statement {
                                id,
                                text: point.attr("db.query.text").to_owned(),
                                ..Statement::default()
                            });
                    if point.metric == MEAN_TIME {
                        statement.mean_s = point.value;
                    } else {
                        statement.calls = point.value;
                    }
                }
                _ => {}
            }
        }
        let mut proposals = Vec::new();
        for (name, seen) in by_instance {
            let tables: Vec<TableStats> = seen.tables.into_values().collect();
            let statements: Vec<Statement> = seen.statements.into_values().collect();
            proposals.extend(decide::maintenance(s, &name, &tables));
            proposals.extend(decide::indexes(s, &name, &statements, &tables));
        }
        proposals.truncate(100);
        Ok(proposals)
    }
}

vigil_plugin_kit::export_policy!(Advisor);
