//! Redis metrics from `INFO ALL` and a timed `PING`, named like the OpenTelemetry
//! Collector's redis receiver (`redis.clients.connected`, `redis.keyspace.hits`, ...).

use std::collections::HashMap;
use std::time::Instant;

use super::server::{Identity, Scraper, ServerCollector, SetupError, instance_password};
use crate::config::InstanceConfig;
use crate::model::{BatchBuilder, MetricDesc, MetricKind};

/// Builds the collector of one Redis instance.
pub fn collector(
    config: &InstanceConfig,
    host: String,
) -> Result<ServerCollector<RedisScraper>, SetupError> {
    let mut info: redis::ConnectionInfo =
        redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
            .map_err(|e| SetupError::url("redis", config, e))?;
    if let Some(secret) = instance_password("redis", config)? {
        let settings = info.redis_settings().clone().set_password(secret.expose());
        info = info.set_redis_settings(settings);
    }
    let client = redis::Client::open(info).map_err(|e| SetupError::Client {
        kind: "redis",
        name: config.name.clone(),
        reason: e.to_string(),
    })?;
    let who = Identity::new("redis", config, 6379);
    Ok(ServerCollector::new(
        RedisScraper {
            client,
            connection: None,
            top_n: config.top_n(),
        },
        who,
        config,
        host,
    ))
}

/// Reads one Redis server.
pub struct RedisScraper {
    client: redis::Client,
    connection: Option<redis::aio::MultiplexedConnection>,
    top_n: usize,
}

use MetricKind::{Counter, Gauge, UpDownCounter};

/// (INFO field, metric, unit, kind, description) of the plain numeric fields exported.
const FIELDS: &[(&str, &str, &str, MetricKind, &str)] = &[
    (
        "connected_clients",
        "redis.clients.connected",
        "{client}",
        UpDownCounter,
        "Client connections",
    ),
    (
        "blocked_clients",
        "redis.clients.blocked",
        "{client}",
        UpDownCounter,
        "Clients blocked on a blocking call",
    ),
    (
        "used_memory",
        "redis.memory.used",
        "By",
        Gauge,
        "Memory allocated by Redis",
    ),
    (
        "used_memory_peak",
        "redis.memory.peak",
        "By",
        Gauge,
        "Peak memory allocated by Redis",
    ),
    (
        "used_memory_rss",
        "redis.memory.rss",
        "By",
        Gauge,
        "Resident set size of the Redis process",
    ),
    (
        "used_memory_lua",
        "redis.memory.lua",
        "By",
        Gauge,
        "Memory used by the Lua engine",
    ),
    (
        "mem_fragmentation_ratio",
        "redis.memory.fragmentation_ratio",
        "1",
        Gauge,
        "RSS divided by used memory",
    ),
    (
        "maxmemory",
        "redis.maxmemory",
        "By",
        Gauge,
        "The maxmemory setting (0: no limit)",
    ),
    (
        "keyspace_hits",
        "redis.keyspace.hits",
        "{hit}",
        Counter,
        "Successful key lookups",
    ),
    (
        "keyspace_misses",
        "redis.keyspace.misses",
        "{miss}",
        Counter,
        "Failed key lookups",
    ),
    (
        "evicted_keys",
        "redis.keys.evicted",
        "{key}",
        Counter,
        "Keys evicted by the maxmemory policy",
    ),
    (
        "expired_keys",
        "redis.keys.expired",
        "{event}",
        Counter,
        "Key expiration events",
    ),
    (
        "total_commands_processed",
        "redis.commands.processed",
        "{command}",
        Counter,
        "Commands processed",
    ),
    (
        "instantaneous_ops_per_sec",
        "redis.commands",
        "{ops}/s",
        Gauge,
        "Commands per second right now",
    ),
    (
        "total_connections_received",
        "redis.connections.received",
        "{connection}",
        Counter,
        "Connections accepted",
    ),
    (
        "rejected_connections",
        "redis.connections.rejected",
        "{connection}",
        Counter,
        "Connections rejected (maxclients)",
    ),
    (
        "total_net_input_bytes",
        "redis.net.input",
        "By",
        Counter,
        "Bytes read from the network",
    ),
    (
        "total_net_output_bytes",
        "redis.net.output",
        "By",
        Counter,
        "Bytes written to the network",
    ),
    (
        "connected_slaves",
        "redis.slaves.connected",
        "{replica}",
        UpDownCounter,
        "Connected replicas",
    ),
    (
        "master_repl_offset",
        "redis.replication.offset",
        "By",
        Gauge,
        "The server's replication offset",
    ),
    (
        "rdb_changes_since_last_save",
        "redis.rdb.changes_since_last_save",
        "{change}",
        UpDownCounter,
        "Changes since the last RDB save",
    ),
    (
        "rdb_bgsave_in_progress",
        "redis.persistence.rdb.bgsave_in_progress",
        "1",
        Gauge,
        "1 while an RDB save runs",
    ),
    (
        "rdb_last_save_time",
        "redis.persistence.rdb.last_save_time",
        "s",
        Gauge,
        "Unix time of the last RDB save",
    ),
    (
        "aof_enabled",
        "redis.persistence.aof.enabled",
        "1",
        Gauge,
        "1 when the append-only file is on",
    ),
    (
        "aof_rewrite_in_progress",
        "redis.persistence.aof.rewrite_in_progress",
        "1",
        Gauge,
        "1 while an AOF rewrite runs",
    ),
    (
        "loading",
        "redis.persistence.loading",
        "1",
        Gauge,
        "1 while loading a dump",
    ),
    (
        "latest_fork_usec",
        "redis.latest_fork",
        "us",
        Gauge,
        "Duration of the latest fork",
    ),
    (
        "uptime_in_seconds",
        "redis.uptime",
        "s",
        Counter,
        "Time since the server started",
    ),
];

/// Parses `INFO` output into `field -> value` (all sections).
pub fn parse_info(text: &str) -> HashMap<&str, &str> {
    // `INFO everything` has a few hundred fields: room for them at once, no regrowing.
    let mut fields = HashMap::with_capacity(512);
    fields.extend(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.trim_end_matches('\r').split_once(':')),
    );
    fields
}

/// Parses `k1=v1,k2=v2` (keyspace and commandstats lines).
fn parse_pairs(text: &str) -> HashMap<&str, &str> {
    text.split(',').filter_map(|p| p.split_once('=')).collect()
}

impl RedisScraper {
    async fn connection(&mut self) -> Result<&mut redis::aio::MultiplexedConnection, String> {
        if self.connection.is_none() {
            let connection = self
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            self.connection = Some(connection);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| "no connection".to_owned())
    }
}

impl Scraper for RedisScraper {
    async fn scrape<'a>(
        &'a mut self,
        batch: &'a mut BatchBuilder,
        who: &'a Identity,
    ) -> Result<(), String> {
        let top_n = self.top_n;
        let connection = self.connection().await?;
        let started = Instant::now();
        let _: String = redis::cmd("PING")
            .query_async(connection)
            .await
            .map_err(|e| format!("PING failed: {e}"))?;
        let latency = started.elapsed();
        let text: String = redis::cmd("INFO")
            .arg("ALL")
            .query_async(connection)
            .await
            .map_err(|e| format!("INFO failed: {e}"))?;
        let info = parse_info(&text);
        let base = who.attributes();

        batch.point(
            &MetricDesc::new("redis.latency", "s", Gauge, "Round trip of a PING"),
            base.clone(),
            latency.as_secs_f64(),
        );
        for (field, name, unit, kind, description) in FIELDS {
            if let Some(value) = info.get(field).and_then(|v| v.parse::<f64>().ok()) {
                batch.point(
                    &MetricDesc::new(name, unit, *kind, description),
                    base.clone(),
                    value,
                );
            }
        }
        if let Some(status) = info.get("rdb_last_bgsave_status") {
            let ok = if *status == "ok" { 1.0 } else { 0.0 };
            batch.point(
                &MetricDesc::new(
                    "redis.persistence.rdb.last_bgsave_ok",
                    "1",
                    Gauge,
                    "1 when the last RDB save succeeded",
                ),
                base.clone(),
                ok,
            );
        }

        let keys = MetricDesc::new("redis.db.keys", "{key}", Gauge, "Keys in a database");
        let expires = MetricDesc::new(
            "redis.db.expires",
            "{key}",
            Gauge,
            "Keys with an expiration in a database",
        );
        let avg_ttl = MetricDesc::new(
            "redis.db.avg_ttl",
            "ms",
            Gauge,
            "Average TTL of keys with an expiration",
        );
        for (field, value) in &info {
            if let Some(db) = field
                .strip_prefix("db")
                .filter(|d| d.parse::<u32>().is_ok())
            {
                let stats = parse_pairs(value);
                let attrs = who.with(&[("db", db)]);
                for (metric, key) in [
                    (&keys, "keys"),
                    (&expires, "expires"),
                    (&avg_ttl, "avg_ttl"),
                ] {
                    if let Some(v) = stats.get(key).and_then(|v| v.parse::<f64>().ok()) {
                        batch.point(metric, attrs.clone(), v);
                    }
                }
            }
        }

        // Per-command stats, the most called first.
        let mut commands: Vec<(&str, HashMap<&str, &str>)> = info
            .iter()
            .filter_map(|(field, value)| {
                field
                    .strip_prefix("cmdstat_")
                    .map(|cmd| (cmd, parse_pairs(value)))
            })
            .collect();
        let calls_of = |stats: &HashMap<&str, &str>| {
            stats
                .get("calls")
                .and_then(|c| c.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        commands.sort_by(|a, b| calls_of(&b.1).total_cmp(&calls_of(&a.1)).then(a.0.cmp(b.0)));
        let calls = MetricDesc::new("redis.cmd.calls", "{call}", Counter, "Calls of a command");
        let usec = MetricDesc::new("redis.cmd.usec", "us", Counter, "Time spent in a command");
        let per_call = MetricDesc::new(
            "redis.cmd.usec_per_call",
            "us",
            Gauge,
            "Average time per call of a command",
        );
        for (cmd, stats) in commands.into_iter().take(top_n) {
            let attrs = who.with(&[("cmd", cmd)]);
            for (metric, key) in [
                (&calls, "calls"),
                (&usec, "usec"),
                (&per_call, "usec_per_call"),
            ] {
                if let Some(v) = stats.get(key).and_then(|v| v.parse::<f64>().ok()) {
                    batch.point(metric, attrs.clone(), v);
                }
            }
        }
        Ok(())
    }

    fn disconnect(&mut self) {
        self.connection = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_pairs_parse() {
        let info = parse_info(
            "# Stats\r\nkeyspace_hits:12\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ncmdstat_get:calls=5,usec=10,usec_per_call=2.00\r\n",
        );
        assert_eq!(info["keyspace_hits"], "12");
        assert_eq!(parse_pairs(info["db0"])["keys"], "3");
        assert_eq!(parse_pairs(info["cmdstat_get"])["usec_per_call"], "2.00");
    }
}
