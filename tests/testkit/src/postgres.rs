//! A PostgreSQL cluster of a test's own (initdb into a temporary directory, a free port,
//! `pg_stat_statements` preloaded), for tests that need server settings or extensions the
//! machine's shared server does not have. Stopped and removed when dropped.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::redis::free_port;

/// A private PostgreSQL cluster; stopped (and its directory removed) when dropped.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl PrivatePostgres {
    /// Creates a cluster with `pg_stat_statements` preloaded and starts it on a free port.
    /// Panics with what failed (a test helper).
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").exists())
            .expect("initdb is installed");
        let dir = tempfile::tempdir().expect("a temporary directory");
        if is_root() {
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .ok();
        }
        let own = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
        };
        let data = own.dir.path().join("data");
        let status = own
            .as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements -c fsync=off -c autovacuum=off",
            own.port,
            own.dir.path().display()
        );
        let status = own
            .as_postgres("pg_ctl")
            .args(["-w", "-D"])
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(own.dir.path().join("log"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl start failed");
        own
    }

    /// The URL of database `db` as user postgres.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    fn as_postgres(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        // PostgreSQL refuses to run as root: run it as the postgres user then.
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .status();
    }
}
