//! The `vigil` command line. Only argument handling lives here; the work is in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use vigil::check::check;
use vigil::config::Config;
use vigil::fixture::BatchFixture;
use vigil::plugin::compile::{ChildArgs, run_child};
use vigil::plugin::{
    ChildCompiler, Compiler, Output, PluginInstance, PluginKind, PluginRuntime, PolicyInputs,
};
use vigil::supervisor::Supervisor;

/// vigil: a WebAssembly-extensible observability agent.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Collect, evaluate plugins and export, until SIGINT/SIGTERM.
    Run {
        /// Config file (TOML); without it the embedded default runs.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Collect one round, evaluate, export, flush and exit.
        #[arg(long)]
        once: bool,
    },
    /// Ask a running agent to reload its config and rescan its plugins (`POST /reload`
    /// on the address and with the token of `[http]` in the config).
    Reload {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config and every plugin in its plugin directory.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Work with plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// The tuning audit trail: list decisions, revert an applied change.
    Actions {
        #[command(subcommand)]
        command: ActionsCommand,
    },
    /// Show what the advisor policy proposes now, verified on the server, applying nothing.
    Advise {
        #[command(subcommand)]
        command: AdviseCommand,
    },
    /// Internal: compile the component on stdin into a compile-cache entry, under
    /// limits (the agent runs this as a short-lived child).
    #[command(name = vigil::plugin::compile::CHILD_SUBCOMMAND, hide = true)]
    CompilePlugin {
        #[arg(long)]
        output: PathBuf,
        #[arg(long)]
        memory_mib: u64,
        #[arg(long)]
        cpu_seconds: u64,
    },
}

#[derive(Subcommand)]
enum AdviseCommand {
    /// Collect one round of a PostgreSQL instance, run the advisor policy on it and print
    /// its proposals (VACUUM, ANALYZE, indexes with their HypoPG-verified cost reductions)
    /// as a table. Nothing is applied or audited.
    Postgres {
        /// The `[[collect.postgres]]` instance name.
        #[arg(long)]
        instance: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The policy component (default: pg-advisor.wasm in the config's plugin directory).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// One JSON object per proposal and line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ActionsCommand {
    /// Show the decisions in the audit file (`[tuning] audit_file` of the config).
    List {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only decisions since then: a duration back from now (`1h`) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// One JSON object per decision and line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Restore the value a change replaced (audited like any change).
    Revert {
        /// The decision id (from `vigil actions list`).
        id: u64,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Restore even when the setting was changed since the decision, or when the
        /// agent stopped while applying it (outcome unknown).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Run test files (`vigil plugin test FILE.toml...` or `--tests FILE...`): print
    /// PASS/FAIL per case, with a diff per failed step; exit 0 when all pass, 1 when one
    /// fails, 2 when a file cannot be run. Or evaluate a plugin on one batch fixture
    /// (`--batch`) and print its findings as JSON, or, for a tuning policy, its proposals
    /// as JSON, one per line (what the plugin wrote to stdout/stderr goes to stderr).
    Test {
        /// The plugin component (.wasm) for `--batch`, or test files (.toml).
        #[arg(value_name = "PLUGIN|FILE.toml")]
        plugin: Vec<PathBuf>,
        /// Test files (TOML; see `examples/tests/`).
        #[arg(long, num_args = 1.., conflicts_with = "batch")]
        tests: Vec<PathBuf>,
        /// With test files: run them again whenever they, their batch files or their
        /// plugin change, until Ctrl-C.
        #[arg(long, conflicts_with = "batch")]
        watch: bool,
        /// The batch fixture (JSON; see the README).
        #[arg(long)]
        batch: Option<PathBuf>,
        /// Config whose [plugins.settings.NAME] and limits apply (and, for a tuning
        /// policy, whose [tuning] gate judges its proposals).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Tuning policies: the alerts firing now (JSON list; see the README).
        #[arg(long)]
        firing: Option<PathBuf>,
        /// Tuning policies: the current values of settings (JSON list; see the README).
        #[arg(long)]
        settings: Option<PathBuf>,
    },
    /// Print the plugin contract versions (`vigil:plugin@VERSION`) this agent loads, each
    /// with the worlds it loads of it.
    Versions,
    /// Create a plugin project NAME (in DIR/NAME) that builds as is: sources, the contract's
    /// WIT files, build.sh, a batch fixture, a test file run by test.sh, and a README.
    New {
        /// The plugin's name (lower-case letters, digits and `-`).
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: NewLang,
        /// The kind of plugin.
        #[arg(long, value_enum, default_value_t = NewWorld::AlertRule)]
        world: NewWorld,
        /// Where to create the project directory (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum NewLang {
    Rust,
    Python,
    Js,
    C,
}

#[derive(Clone, Copy, ValueEnum)]
enum NewWorld {
    AlertRule,
    TuningPolicy,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::CompilePlugin {
        output,
        memory_mib,
        cpu_seconds,
    } = cli.command
    {
        // No logging set up: the parent reads the one `error:` line on stderr.
        let code = run_child(&ChildArgs {
            output,
            memory_mib,
            cpu_seconds,
        });
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run { config, once } => run(config.as_deref(), once),
        Command::Check { config } => Ok(run_check(config.as_deref())),
        Command::Reload { config } => request_reload(config.as_deref()),
        Command::Plugin {
            command:
                PluginCommand::Test {
                    plugin,
                    tests,
                    watch,
                    batch,
                    config,
                    firing,
                    settings,
                },
        } => match batch {
            Some(batch) => match plugin.as_slice() {
                [plugin] => plugin_test(
                    plugin,
                    TestInputs {
                        batch: &batch,
                        firing: firing.as_deref(),
                        settings: settings.as_deref(),
                    },
                    config.as_deref(),
                ),
                _ => Err(anyhow::anyhow!(
                    "--batch evaluates one plugin: vigil plugin test PLUGIN.wasm --batch FIXTURE"
                )),
            },
            None => {
                if let Some(other) = plugin.iter().find(|p| !vigil::rule_test::is_test_file(p)) {
                    eprintln!(
                        "error: {} is not a test file (.toml): give --batch FIXTURE to evaluate a plugin on one batch",
                        other.display()
                    );
                    return ExitCode::from(2);
                }
                let files: Vec<PathBuf> = plugin.into_iter().chain(tests).collect();
                rule_tests(&files, watch, config.as_deref())
            }
        },
        Command::Plugin {
            command: PluginCommand::Versions,
        } => {
            for (version, worlds) in vigil::plugin::bindings::ACCEPTED_WORLDS {
                println!("vigil:plugin@{version} ({})", worlds.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            command:
                PluginCommand::New {
                    name,
                    lang,
                    world,
                    dir,
                },
        } => plugin_new(&name, lang, world, &dir),
        Command::Actions {
            command:
                ActionsCommand::List {
                    config,
                    since,
                    json,
                },
        } => actions_list(config.as_deref(), since.as_deref(), json),
        Command::Actions {
            command: ActionsCommand::Revert { id, config, force },
        } => actions_revert(config.as_deref(), id, force),
        Command::Advise {
            command:
                AdviseCommand::Postgres {
                    instance,
                    config,
                    policy,
                    json,
                },
        } => advise_postgres(config.as_deref(), &instance, policy.as_deref(), json),
        Command::CompilePlugin { .. } => Ok(ExitCode::FAILURE),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let mut config = Config::load_or_default(path)?;
    config.apply_otel_env(|k| std::env::var(k).ok())?;
    Ok(config)
}

fn run(config_path: Option<&Path>, once: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let compiler = child_compiler(&config)?;
        let (agent, mut collectors) = Supervisor::start(&config, config_path, compiler).await?;
        tracing::info!(
            metrics = %config.export.settings.metrics.url,
            logs = %config.export.settings.logs.url,
            collectors = collectors.len(),
            "vigil started"
        );
        if once {
            agent.load_plugins().await;
            agent.run_once(&mut collectors).await;
        } else {
            let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
            forward_sighup(reload_tx.clone());
            let stop = shutdown_signal();
            if config.http.enabled {
                match vigil::http::serve(&config.http, agent.clone(), reload_tx).await {
                    Ok(served) => {
                        tracing::info!("status endpoint on {}", served.url());
                        if let Some(tls) = served.tls {
                            agent.on_config_read(Box::new(move |config: &Config| {
                                reload_status_tls(&tls, config)
                            }));
                        }
                    }
                    Err(e) => tracing::warn!("{e}; running without it"),
                }
            }
            agent.run_until(collectors, reload_rx, stop).await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// At a reload: the status endpoint's certificate files read again, used if they changed.
fn reload_status_tls(tls: &vigil::tls::ServerTls, config: &Config) {
    // Turning [http.tls] on or off needs a restart (the reload says so).
    let Some(settings) = &config.http.tls else {
        return;
    };
    match tls.reload(settings) {
        Ok(true) => tracing::info!(
            "[http.tls] files changed: the status endpoint uses them for new connections"
        ),
        Ok(false) => {}
        Err(e) => tracing::error!(
            "{e}; the status endpoint keeps its current certificate (fix the file and reload)"
        ),
    }
}

/// Sends a reload request per SIGHUP: reload the config and rescan the plugin directory.
fn forward_sighup(tx: tokio::sync::mpsc::UnboundedSender<()>) {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP: {e}"),
    }
}

/// `vigil reload`: `POST /reload` to the agent the config describes.
fn request_reload(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    anyhow::ensure!(
        config.http.enabled,
        "[http] is disabled in this config, so the agent cannot be asked to reload over HTTP: send it SIGHUP instead"
    );
    let token = config.http.token().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let addr = config.http.listen;
    let (status, body) = runtime.block_on(vigil::http::client::post(
        addr,
        "/reload",
        token.as_ref().map(|t| t.expose()),
        config.http.tls.as_ref(),
    ))?;
    let scheme = if config.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if status == 202 {
        println!("reload requested from the agent at {scheme}://{addr}");
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "the agent at {scheme}://{addr} answered {status}: {}",
            body.trim()
        )
    }
}

/// `vigil actions list`.
fn actions_list(
    config_path: Option<&Path>,
    since: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let since = since
        .map(|s| vigil::tuning::cli::parse_since(s, std::time::SystemTime::now()))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let rows =
        vigil::tuning::cli::rows(&config.tuning.audit_file, since).map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    vigil::tuning::cli::print(&rows, json, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// `vigil advise postgres --instance NAME`.
fn advise_postgres(
    config_path: Option<&Path>,
    instance: &str,
    policy: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let policy = policy.map_or_else(
        || config.plugins.dir.join("pg-advisor.wasm"),
        Path::to_owned,
    );
    let runtime = PluginRuntime::from_config(&config.plugins)
        .map_err(|e| anyhow::anyhow!("cannot start the plugin runtime: {e}"))?
        .with_compiler(child_compiler(&config)?);
    let tokio = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let advice = tokio.block_on(vigil::tuning::advise::advise(
        &config, &runtime, instance, &policy,
    ))?;
    let mut out = std::io::stdout().lock();
    vigil::tuning::advise::print(&advice, json, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

/// `vigil actions revert ID`.
fn actions_revert(config_path: Option<&Path>, id: u64, force: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let decision = runtime
        .block_on(vigil::tuning::cli::revert_decision(&config, id, force))
        .map_err(anyhow::Error::msg)?;
    let audited = match decision.id {
        Some(new) => format!(" (decision {new})"),
        None => String::new(),
    };
    if decision.verdict == vigil::tuning::Verdict::Applied {
        println!(
            "reverted decision {id}: {} is {} again{audited}",
            decision.action.setting,
            decision.after.as_deref().unwrap_or("?")
        );
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "decision {id} not reverted ({}): {}{audited}",
            decision.verdict,
            decision.verdict_reason
        )
    }
}

/// Listens for SIGINT and SIGTERM now (so a signal that comes before the returned future
/// is first polled is not missed); the future completes on the first of them. From then
/// on a further SIGINT (a second Ctrl-C) exits at once with code 130 instead of waiting
/// for the graceful shutdown.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    /// The next delivery of `signal` (never, when it could not be listened for).
    async fn next(signal: &mut Option<Signal>) {
        match signal {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let listen = |kind: SignalKind, name: &str| {
        signal(kind)
            .map_err(|e| tracing::warn!("cannot listen for {name}: {e}"))
            .ok()
    };
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            _ = next(&mut interrupt) => tracing::info!(
                "interrupted (Ctrl-C): shutting down gracefully; press Ctrl-C again to exit at once"
            ),
            _ = next(&mut terminate) => {},
        }
        if let Some(mut interrupt) = interrupt {
            tokio::spawn(async move {
                if interrupt.recv().await.is_some() {
                    tracing::warn!(
                        "interrupted again (second Ctrl-C): exiting at once with code 130, without waiting for the graceful shutdown; what is still queued is not sent"
                    );
                    std::process::exit(EXIT_INTERRUPTED);
                }
            });
        }
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The exit code of a process ended by SIGINT (128 + 2), as shells report it.
#[cfg(unix)]
const EXIT_INTERRUPTED: i32 = 130;

/// Compiles plugins in a child process that is this executable, under the config's limits.
fn child_compiler(config: &Config) -> anyhow::Result<Compiler> {
    let child = ChildCompiler::current_exe(&config.plugins)
        .context("cannot find the vigil executable to compile plugins with")?;
    Ok(Compiler::Child(child))
}

fn run_check(config_path: Option<&Path>) -> ExitCode {
    let report = check(config_path, |plugins| {
        ChildCompiler::current_exe(plugins).map(Compiler::Child)
    });
    for line in &report.ok {
        println!("ok: {line}");
    }
    for line in &report.warnings {
        println!("warning: {line}");
    }
    for line in &report.errors {
        eprintln!("error: {line}");
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `vigil plugin test FILE.toml...`: runs the test files (again on every change with
/// `watch`); exit 0 when all pass, 1 when a case fails, 2 when a file cannot be run.
fn rule_tests(
    files: &[PathBuf],
    watch: bool,
    config_path: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use vigil::rule_test::{Runner, Verdict, run_files};
    if files.is_empty() {
        eprintln!("error: no test file: vigil plugin test FILE.toml (or --tests FILE...)");
        return Ok(ExitCode::from(2));
    }
    let mut config = match load_config(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    if config_path.is_none() {
        // No config: cache compiled plugins in the user's cache, so a re-run is fast.
        config.plugins.cache_dir = vigil::rule_test::default_cache_dir().unwrap_or_default();
    }
    let runtime = PluginRuntime::from_config(&config.plugins)
        .map_err(|e| anyhow::anyhow!("cannot start the plugin runtime: {e}"))?
        .with_compiler(child_compiler(&config)?);
    let runner = Runner::new(&runtime, &config);
    let run_once = || {
        let verdict = run_files(
            &runner,
            files,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
        runtime.cache().finish_writes();
        verdict
    };
    if watch {
        vigil::rule_test::watch_and_rerun(files, || {
            if let Err(e) = run_once() {
                eprintln!("error: cannot print the report: {e}");
            }
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let verdict = run_once().context("cannot print the report")?;
    Ok(ExitCode::from(match verdict {
        Verdict::Passed => 0,
        Verdict::Failed => 1,
        Verdict::Broken => 2,
    }))
}

/// What `vigil plugin test` runs a plugin on.
struct TestInputs<'a> {
    batch: &'a Path,
    firing: Option<&'a Path>,
    settings: Option<&'a Path>,
}

/// Reads fixture `path` and parses it with `parse` (which names the file in its errors).
fn read_fixture<T>(
    path: &Path,
    what: &str,
    parse: impl FnOnce(&str, &str) -> Result<T, String>,
) -> anyhow::Result<T> {
    let json = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} fixture {}", path.display()))?;
    parse(&json, &path.display().to_string()).map_err(anyhow::Error::msg)
}

fn plugin_new(name: &str, lang: NewLang, world: NewWorld, dir: &Path) -> anyhow::Result<ExitCode> {
    use vigil::scaffold::{Lang, World};
    let lang = match lang {
        NewLang::Rust => Lang::Rust,
        NewLang::Python => Lang::Python,
        NewLang::Js => Lang::Js,
        NewLang::C => Lang::C,
    };
    let world = match world {
        NewWorld::AlertRule => World::AlertRule,
        NewWorld::TuningPolicy => World::TuningPolicy,
    };
    let root = vigil::scaffold::create(dir, name, lang, world)?;
    println!(
        "created {} ({} {})",
        root.display(),
        lang.name(),
        world.name()
    );
    println!(
        "next: cd {} && ./build.sh && ./test.sh   (see its README.md)",
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn plugin_test(
    plugin: &Path,
    inputs: TestInputs<'_>,
    config_path: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let fixture = read_fixture(inputs.batch, "batch", BatchFixture::parse)?;
    let firing = match inputs.firing {
        Some(path) => read_fixture(path, "firing-alerts", vigil::fixture::firing_alerts)?,
        None => Vec::new(),
    };
    let settings = match inputs.settings {
        Some(path) => read_fixture(path, "settings", vigil::fixture::current_settings)?,
        None => Vec::new(),
    };
    let name = plugin
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let runtime = PluginRuntime::from_config(&config.plugins)
        .map_err(|e| anyhow::anyhow!("cannot start the plugin runtime: {e}"))?
        .with_compiler(child_compiler(&config)?);
    let mut instance =
        PluginInstance::load(&runtime, plugin, &name, config.plugins.settings_json(&name))?;
    let policy_inputs = PolicyInputs {
        firing: firing.into(),
        settings: settings.clone().into(),
    };
    let evaluated = instance.run(&fixture.to_batch(), &policy_inputs);
    if let Some(output) = instance.last_output() {
        eprintln!("plugin output:\n{}", output.trim_end());
    }
    match evaluated? {
        Some(Output::Proposals(proposals)) => {
            // The gate's verdict under this config, touching no server and auditing nothing.
            let mut gate = vigil::tuning::TuningEngine::offline(&config);
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            for proposal in proposals {
                let decision = runtime.block_on(gate.preview(proposal.clone(), &settings));
                let line = serde_json::json!({
                    "policy": proposal.policy,
                    "action": proposal.action,
                    "reason": proposal.reason,
                    "revert_if": proposal.revert_if,
                    "verdict": decision.verdict.as_str(),
                    "verdict_reason": decision.verdict_reason,
                    "before": decision.before,
                });
                println!("{line}");
            }
        }
        Some(Output::Findings(findings)) => {
            println!("{}", serde_json::to_string_pretty(&findings)?);
        }
        None if instance.kind() == PluginKind::TuningPolicy => {}
        None => println!("[]"),
    }
    Ok(ExitCode::SUCCESS)
}
