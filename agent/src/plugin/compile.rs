//! Compiling plugin components outside the agent.
//!
//! Cranelift's peak while compiling an interpreter-sized component (an 18 MB Python
//! plugin: ~10 s, ~350 MB) would stay in the agent's RSS for good, and a compiler
//! crash on a hostile file would take the agent down. So the agent runs itself as a
//! short-lived child (`vigil __compile-plugin`, see [`run_child`]) under a memory
//! limit (`RLIMIT_DATA`) and a CPU limit (`RLIMIT_CPU`), with a wall-clock timeout
//! enforced by the parent, which kills it. The child writes the compiled artifact as
//! a compile-cache entry ([`super::cache::write_entry`]) and exits; the agent maps
//! that entry from the file.
//!
//! Tests and benches that use the library in-process may keep compiling in-process
//! ([`Compiler::InProcess`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::config::PluginsConfig;

/// The hidden subcommand of `vigil` that compiles one component (see [`run_child`]).
pub const CHILD_SUBCOMMAND: &str = "__compile-plugin";

/// Exit code of the child: the input is not a valid component.
const EXIT_INVALID: i32 = 2;
/// Exit code of the child: it ran out of memory under its limit.
const EXIT_MEMORY: i32 = 3;
/// Exit code of the child: the artifact could not be written.
const EXIT_OUTPUT: i32 = 4;
/// Exit code of the child: it was started wrong (arguments, limits).
const EXIT_USAGE: i32 = 5;

/// How often the parent looks whether the child is done.
const POLL: Duration = Duration::from_millis(10);
/// Most bytes of the child's stderr kept for an error message.
const STDERR_KEPT: usize = 4096;

/// Where plugin components are compiled.
#[derive(Debug, Clone, PartialEq)]
pub enum Compiler {
    /// In the calling process (library use: unit tests, benches).
    InProcess,
    /// In a short-lived child process (the `vigil` CLI).
    Child(ChildCompiler),
}

/// How to run the compiler child and what it may use.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildCompiler {
    /// The `vigil` executable (it has the hidden compile subcommand).
    pub exe: PathBuf,
    /// Memory limit of the child, in MiB (`plugins.compile_memory_mib`).
    pub memory_mib: u64,
    /// Wall-clock limit of one compilation (`plugins.compile_timeout`).
    pub timeout: Duration,
}

impl ChildCompiler {
    /// The child `exe` under the limits of a `[plugins]` section.
    pub fn from_config(exe: PathBuf, config: &PluginsConfig) -> Self {
        ChildCompiler {
            exe,
            memory_mib: config.compile_memory_mib,
            timeout: config.compile_timeout,
        }
    }

    /// The child that is this very executable (`std::env::current_exe`).
    pub fn current_exe(config: &PluginsConfig) -> std::io::Result<Self> {
        Ok(Self::from_config(std::env::current_exe()?, config))
    }

    /// CPU seconds the child may use: enough for every core to work through the whole
    /// timeout, so only a child the parent can no longer kill ever meets it.
    fn cpu_seconds(&self) -> u64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        self.timeout.as_secs().max(1).saturating_mul(cores) + 1
    }

    /// Compiles `bytes` in a child that writes the compile-cache entry `output`; waits
    /// at most the timeout, then kills it.
    pub fn compile(&self, bytes: &[u8], output: &Path) -> Result<(), CompileError> {
        // The agent and its child are at their joint peak while the child compiles: the
        // agent's start-up pages go first (see crate::resident).
        if let Err(e) = crate::resident::release_executable_pages() {
            tracing::debug!("the agent's start-up pages stay resident during the compile: {e}");
        }
        let mut child = Command::new(&self.exe)
            .arg(CHILD_SUBCOMMAND)
            .arg("--output")
            .arg(output)
            .arg("--memory-mib")
            .arg(self.memory_mib.to_string())
            .arg("--cpu-seconds")
            .arg(self.cpu_seconds().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| CompileError::Spawn {
                exe: self.exe.clone(),
                error,
            })?;
        let started = Instant::now();
        // The input goes in and the messages come out on threads of their own, so the
        // timeout holds whatever the child does with its pipes; the input is lent to
        // its thread, not copied. Once the child is gone its pipes are closed and both end.
        let (waited, stderr) = std::thread::scope(|scope| {
            let stdin = child.stdin.take().map(|mut pipe| {
                // A child that dies early closes the pipe: its exit status says why.
                scope.spawn(move || drop(pipe.write_all(bytes)))
            });
            let stderr = child.stderr.take().map(|pipe| scope.spawn(|| tail(pipe)));
            let waited = wait_or_kill(&mut child, started + self.timeout);
            if let Some(writer) = stdin {
                let _ = writer.join();
            }
            let stderr = stderr
                .and_then(|reader| reader.join().ok())
                .unwrap_or_default();
            (waited, stderr)
        });
        let (status, timed_out) = waited.map_err(CompileError::Wait)?;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, %status, "compiler child finished");
        if timed_out {
            return Err(CompileError::Timeout {
                timeout: self.timeout,
            });
        }
        self.classify(status, &stderr)
    }

    /// What the child's exit status and last words mean.
    fn classify(&self, status: ExitStatus, stderr: &str) -> Result<(), CompileError> {
        use std::os::unix::process::ExitStatusExt;
        let said = last_error(stderr);
        let memory = || CompileError::Memory {
            limit_mib: self.memory_mib,
        };
        match (status.code(), status.signal()) {
            (Some(0), _) => Ok(()),
            (Some(EXIT_INVALID), _) => Err(CompileError::Invalid { reason: said }),
            (Some(EXIT_MEMORY), _) => Err(memory()),
            (Some(code), _) => Err(CompileError::Failed { code, reason: said }),
            // Rust aborts when an allocation fails under the limit.
            (None, Some(libc::SIGABRT)) if stderr.contains("memory allocation of") => Err(memory()),
            (None, Some(libc::SIGXCPU)) => Err(CompileError::Cpu {
                seconds: self.cpu_seconds(),
            }),
            (None, Some(signal)) => Err(CompileError::Crashed {
                signal,
                name: signal_name(signal),
            }),
            (None, None) => Err(CompileError::Failed {
                code: -1,
                reason: said,
            }),
        }
    }
}

/// Waits for `child` until `deadline`, then kills it; returns its exit status and
/// whether it was killed for the deadline.
fn wait_or_kill(
    child: &mut std::process::Child,
    deadline: Instant,
) -> std::io::Result<(ExitStatus, bool)> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status, false)),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                return Ok((child.wait()?, true));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
}

/// Why a component could not be compiled. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "not a valid WebAssembly component ({reason}); rebuild it with `cargo build --target wasm32-wasip2` or your toolchain's component step"
    )]
    Invalid { reason: String },
    #[error(
        "compiler child exceeded its memory limit of {limit_mib} MiB (plugins.compile_memory_mib); raise it for a plugin this large"
    )]
    Memory { limit_mib: u64 },
    #[error(
        "compiler child was killed after {}s (plugins.compile_timeout); raise it for a plugin this large",
        timeout.as_secs_f64()
    )]
    Timeout { timeout: Duration },
    #[error(
        "compiler child exceeded its CPU limit of {seconds} CPU seconds (derived from plugins.compile_timeout)"
    )]
    Cpu { seconds: u64 },
    #[error(
        "compiler child crashed: signal {signal} ({name}); the file may be hostile or hit a compiler bug"
    )]
    Crashed { signal: i32, name: &'static str },
    #[error("compiler child failed (exit code {code}): {reason}")]
    Failed { code: i32, reason: String },
    #[error("cannot start the compiler child {exe}: {error}; is the vigil executable still there?")]
    Spawn { exe: PathBuf, error: std::io::Error },
    #[error("cannot wait for the compiler child: {0}")]
    Wait(std::io::Error),
    #[error("cannot load what the compiler child wrote: {0}")]
    Load(String),
}

/// The last `STDERR_KEPT` bytes `pipe` carries, as text.
fn tail(mut pipe: impl Read) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buffer) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..n]);
        if kept.len() > 2 * STDERR_KEPT {
            kept.drain(..kept.len() - STDERR_KEPT);
        }
    }
    if kept.len() > STDERR_KEPT {
        kept.drain(..kept.len() - STDERR_KEPT);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The child's error line (`error: ...`), or its last line.
fn last_error(stderr: &str) -> String {
    let lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines
        .clone()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .or_else(|| lines.clone().next_back())
        .unwrap_or("no message");
    line.chars().take(500).collect()
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL: its CPU limit or the kernel's out-of-memory killer",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "unexpected signal",
    }
}

/// What the compiler child is told on its command line.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    /// Where to write the compile-cache entry.
    pub output: PathBuf,
    /// Memory limit in MiB.
    pub memory_mib: u64,
    /// CPU limit in seconds.
    pub cpu_seconds: u64,
}

/// The compiler child: limits itself, reads a component from stdin, compiles it with
/// the agent's engine configuration and writes the compile-cache entry. Returns the
/// exit code the parent understands; errors go to stderr as one `error: ...` line.
pub fn run_child(args: &ChildArgs) -> i32 {
    if let Err(e) = limit_self(args) {
        eprintln!("error: cannot limit the compiler child: {e}");
        return EXIT_USAGE;
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("error: cannot read the component from stdin: {e}");
        return EXIT_USAGE;
    }
    let engine = match wasmtime::Engine::new(&super::runtime::compiler_child_config()) {
        Ok(engine) => engine,
        Err(e) => return report(&e, EXIT_USAGE),
    };
    // `precompile_component` produces the serialized artifact directly: no executable
    // copy of the code is made here.
    let payload = match engine.precompile_component(&bytes) {
        Ok(payload) => payload,
        Err(e) => return report(&e, EXIT_INVALID),
    };
    drop(bytes);
    match super::cache::write_entry(&args.output, &payload) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "error: cannot write the compiled plugin to {}: {e}",
                args.output.display()
            );
            if is_out_of_memory(&e) {
                EXIT_MEMORY
            } else {
                EXIT_OUTPUT
            }
        }
    }
}

/// Prints `error` as the child's error line; running out of memory has its own code.
fn report(error: &wasmtime::Error, code: i32) -> i32 {
    let text = format!("{error:#}").replace('\n', " ");
    eprintln!("error: {text}");
    let out_of_memory = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(is_out_of_memory)
    }) || text.contains("Cannot allocate memory");
    if out_of_memory { EXIT_MEMORY } else { code }
}

fn is_out_of_memory(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOMEM)
}

/// Dies with the parent, and caps memory (`RLIMIT_DATA`: heap and private writable
/// mappings, which is what Cranelift grows; address space reserved but not writable,
/// such as thread arenas and guard regions, is not counted) and CPU time.
fn limit_self(args: &ChildArgs) -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let memory = args.memory_mib.saturating_mul(1 << 20);
    set_limit(libc::RLIMIT_DATA, memory, memory)?;
    // SIGXCPU at the soft limit, SIGKILL a second later.
    set_limit(
        libc::RLIMIT_CPU,
        args.cpu_seconds,
        args.cpu_seconds.saturating_add(1),
    )
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid rlimit that lives across the call.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A compiler "child" that is the shell script `body` (given the usual arguments).
    fn fake(dir: &Path, body: &str, timeout: Duration) -> ChildCompiler {
        let exe = dir.join("fake-vigil");
        std::fs::write(&exe, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        ChildCompiler {
            exe,
            memory_mib: 64,
            timeout,
        }
    }

    fn outcome(body: &str, timeout: Duration) -> Result<(), CompileError> {
        let dir = tempfile::tempdir().unwrap();
        let child = fake(dir.path(), body, timeout);
        child.compile(b"component bytes", &dir.path().join("out.cwasm"))
    }

    #[test]
    fn the_childs_end_becomes_the_error() {
        let second = Duration::from_secs(30);
        assert!(outcome("cat >/dev/null; exit 0", second).is_ok());
        let text = |r: Result<(), CompileError>| r.unwrap_err().to_string();
        assert_eq!(
            text(outcome("echo 'error: bad magic' >&2; exit 2", second)),
            "not a valid WebAssembly component (bad magic); rebuild it with `cargo build --target wasm32-wasip2` or your toolchain's component step"
        );
        assert!(
            text(outcome(
                "echo 'memory allocation of 1024 bytes failed' >&2; kill -ABRT $$",
                second
            ))
            .starts_with(
                "compiler child exceeded its memory limit of 64 MiB (plugins.compile_memory_mib)"
            )
        );
        assert!(
            text(outcome("exit 3", second))
                .starts_with("compiler child exceeded its memory limit of 64 MiB")
        );
        assert!(
            text(outcome("kill -SEGV $$", second))
                .starts_with("compiler child crashed: signal 11 (SIGSEGV)")
        );
        assert!(
            text(outcome("kill -XCPU $$", second))
                .starts_with("compiler child exceeded its CPU limit")
        );
        assert_eq!(
            text(outcome("echo 'error: disk full' >&2; exit 4", second)),
            "compiler child failed (exit code 4): disk full"
        );
    }

    #[test]
    fn a_child_past_its_timeout_is_killed() {
        // It neither reads its input nor writes: the timeout holds anyway.
        let error = outcome("exec sleep 30", Duration::from_millis(300)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "compiler child was killed after 0.3s (plugins.compile_timeout); raise it for a plugin this large"
        );
    }

    #[test]
    fn a_missing_executable_is_named() {
        let child = ChildCompiler {
            exe: PathBuf::from("/nonexistent/vigil"),
            memory_mib: 64,
            timeout: Duration::from_secs(1),
        };
        let error = child.compile(b"", Path::new("/tmp/x")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot start the compiler child /nonexistent/vigil:"),
            "{error}"
        );
    }

    #[test]
    fn the_child_is_limited_like_it_is_told() {
        let args = ChildArgs {
            output: PathBuf::new(),
            memory_mib: 512,
            cpu_seconds: 7,
        };
        // In a forked copy of this test process, so the limits stay there.
        // SAFETY: the child only calls async-signal-safe functions (setrlimit,
        // getrlimit, prctl, _exit) before it exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = limit_self(&args).is_ok() && {
                let mut data = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                let mut cpu = data;
                // SAFETY: both point at valid rlimit structs.
                unsafe {
                    libc::getrlimit(libc::RLIMIT_DATA, &mut data);
                    libc::getrlimit(libc::RLIMIT_CPU, &mut cpu);
                }
                data.rlim_cur == 512 << 20 && cpu.rlim_cur == 7 && cpu.rlim_max == 8
            };
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
