//! `pdtf-agent`: the PDTF Edge daemon and its operator commands.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pdtf_agent::{config, opcua_cli, Agent};
use std::path::PathBuf;

mod batch_command;

/// `f64::hypot` (the analytics' Givens rotations, in linfa-linalg) calls the C library's
/// `hypot`, and glibc 2.35 gave that symbol a new version: a binary linked on a newer glibc
/// would then need 2.35 where the package promises 2.34 (`cross/package-deb.sh` checks). This
/// definition in the binary satisfies the reference instead, with libm's port of musl's hypot.
// The third allowed unsafe item (see the workspace lints): an exported symbol, no unsafe
// operation; it computes the same function the C library would.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn hypot(x: f64, y: f64) -> f64 {
    libm::hypot(x, y)
}
mod man_pages;
mod model_command;
use std::process::ExitCode;
use std::time::Duration;

/// `--version`: the release, and what this binary was built from.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("PDTF_GIT_COMMIT"),
    "\ntarget: ",
    env!("PDTF_TARGET"),
    "\nfeatures: ",
    env!("PDTF_FEATURES")
);

/// Where a packaged agent keeps its configuration; every command that reads one defaults to it.
const DEFAULT_CONFIG: &str = "/etc/pdtf/agent.toml";

/// PDTF Edge agent: plant-floor tags in, batch-aware alarms and records out, nothing lost.
#[derive(Parser)]
#[command(version, long_version = LONG_VERSION, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent with a configuration file until SIGTERM or Ctrl-C. The tag maps reload
    /// live on SIGHUP (`systemctl reload`) or when a watched .toml file changes; an invalid
    /// edit, or a change outside the tags, is refused and the running configuration stays.
    Run {
        /// Agent TOML file (its `include` patterns are relative to it).
        #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a configuration: prints every error with its file and TOML path.
    /// Exits 0 when valid, 2 when not.
    Validate {
        /// Agent TOML file.
        #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check the journal offline: sequence continuity, checksums and the audit hash chain.
    /// Names the first bad record. Exits 0 when intact, 1 when not. Stop the agent first.
    Verify {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Migrate the journal to this agent's record format ahead of a start (the agent does it
    /// at start otherwise), with progress in the log. Streaming and resumable: an interrupted
    /// migration continues where it stopped. Prints the records and the peak memory.
    /// Stop the agent first. Exits 0 when done, 2 on an error.
    Migrate {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Run the whole job on this machine: embedded MQTT broker, a simulated fluid-bed
    /// granulator with injected faults, and the agent, with a live status line.
    /// (Not in the production build: built with the `demo` feature, the default.)
    #[cfg(feature = "demo")]
    Demo {
        /// Stop after this many seconds and print the summary (default: until Ctrl-C).
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
        /// Demo configuration (broker addresses in it are replaced by the embedded broker).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where the demo's journal goes (default: a fresh directory under the system temp dir).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Batches a stopped agent recorded: list them, show one (phases, materials, alarms,
    /// summary), export its records. Reads the journal (`--state-dir`, or
    /// `agent.state_dir` of --config); a running agent serves the same on its HTTP API.
    Batch {
        #[command(subcommand)]
        command: batch_command::BatchCommand,
    },
    /// Batch analytics: train a multivariate monitoring and quality-forecast model from
    /// historical batches, and evaluate one on batches it has not seen.
    Model {
        #[command(subcommand)]
        command: model_command::ModelCommand,
    },
    /// OPC UA servers: browse the address space, trust a server certificate.
    Opcua {
        #[command(subcommand)]
        command: OpcuaCommand,
    },
    /// Print a shell completion script, e.g. `pdtf-agent completions bash >
    /// /usr/share/bash-completion/completions/pdtf-agent` (the Debian package installs them).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page per command (pdtf-agent.1, pdtf-agent-run.1, ...) into DIR; the
    /// packaging does this.
    #[command(hide = true)]
    Manpages {
        /// Directory to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// The journal's directory: `--state-dir`, or `agent.state_dir` of `--config`.
#[derive(clap::Args, Clone)]
struct StateArgs {
    /// The agent's state directory, holding journal.redb (default: `agent.state_dir` of
    /// --config).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Agent TOML file whose `agent.state_dir` to use when --state-dir is not given.
    #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG, conflicts_with = "state_dir")]
    config: PathBuf,
}

impl StateArgs {
    /// The directory, or exit code 2 after the error was printed. Reads only
    /// `agent.state_dir`: no secrets needed to check or migrate the journal.
    fn dir(self) -> Result<PathBuf, ExitCode> {
        match self.state_dir {
            Some(d) => Ok(d),
            None => config::state_dir(&self.config).map_err(|e| {
                eprintln!("{e}");
                ExitCode::from(2)
            }),
        }
    }
}

/// Which server: `--config FILE --server NAME` uses that server's security, identity and
/// PKI; `--endpoint URL` connects with security None, anonymously.
#[derive(clap::Args)]
struct ServerArgs {
    /// Agent TOML file holding the server's `[opcua_servers.NAME]`.
    #[arg(
        long,
        short,
        value_name = "FILE",
        requires = "server",
        conflicts_with = "endpoint"
    )]
    config: Option<PathBuf>,
    /// NAME of `[opcua_servers.NAME]` in --config.
    #[arg(long, value_name = "NAME", requires = "config")]
    server: Option<String>,
    /// `opc.tcp://host:port/path` (security None, anonymous).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
}

#[derive(Subcommand)]
enum OpcuaCommand {
    /// Print the address space under a node (objects and variables, with the tag-map
    /// value_type each variable's data type allows), or with --toml a tag-map skeleton.
    Browse {
        #[command(flatten)]
        server: ServerArgs,
        /// Start node (default: the Objects folder).
        #[arg(long, value_name = "NODE_ID", default_value = "i=85")]
        node: String,
        /// Levels below the start node.
        #[arg(long, value_name = "N", default_value_t = 3)]
        depth: usize,
        /// Print `[[tags]]` for every variable found, with `source = SOURCE_ID`. Node ids use
        /// `nsu=` (namespace URI) so the map survives namespace reordering.
        #[arg(long, value_name = "SOURCE_ID")]
        toml: Option<String>,
    },
    /// Show the server's certificate (subject, thumbprint); with --yes put it in the PKI
    /// directory's trusted/ folder, so the agent accepts the server. Exits 1 without --yes.
    Trust {
        #[command(flatten)]
        server: ServerArgs,
        /// Trust it (after comparing the thumbprint with the server's).
        #[arg(long)]
        yes: bool,
    },
}

fn load_or_report(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|errs| {
        for e in &errs {
            eprintln!("{e}");
        }
        eprintln!(
            "{} configuration error(s); nothing was started.",
            errs.len()
        );
        ExitCode::from(2)
    })
}

/// SIGTERM and SIGINT, caught from the moment this is made: a stop requested while the
/// agent is still starting (systemd stopping a unit that is coming up) is not a kill.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

/// SIGHUP: reload the configuration (`systemctl reload`).
struct Hangup {
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Hangup {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                hup: signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next SIGHUP (never, where there are no signals).
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            self.hup.recv().await;
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    }
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn wait(&mut self) -> anyhow::Result<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Ok("SIGTERM"),
                _ = self.int.recv() => Ok("SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            Ok("Ctrl-C")
        }
    }
}

async fn run(path: PathBuf) -> anyhow::Result<ExitCode> {
    let c = match load_or_report(&path) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let mut signals = StopSignals::install()?;
    let mut hangup = Hangup::install()?;
    let mut agent = match Agent::start(&c) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{}: cannot start: {e}", c.file);
            eprintln!("Nothing was started.");
            return Ok(ExitCode::from(2));
        }
    };
    // Give back what parsing the tag maps freed.
    pdtf_agent::memory::trim_off_runtime().await;
    // Tag-map reloads: a changed file in a watched directory, or SIGHUP.
    let (changed_tx, mut changed) = tokio::sync::mpsc::channel(1);
    let mut watcher = watch_config(&c, &changed_tx);
    let code = loop {
        let trigger = tokio::select! {
            signal = signals.wait() => {
                tracing::info!(signal = signal?, "Shutting down: draining sources and committing.");
                break ExitCode::SUCCESS;
            }
            why = agent.failure() => {
                agent.record_failure(&why).await;
                break ExitCode::from(EXIT_TASK_FAILED);
            }
            _ = hangup.next() => "SIGHUP: reloading the configuration.",
            Some(()) = changed.recv() => {
                // Let a multi-file write settle, then take every change at once.
                tokio::time::sleep(pdtf_agent::reload::SETTLE).await;
                while changed.try_recv().is_ok() {}
                "Configuration files changed: reloading."
            }
        };
        tracing::info!("{trigger}");
        let stopped = reload(&mut agent, &path, &mut watcher, &changed_tx, &mut signals).await;
        // Give back what parsing the files again freed.
        pdtf_agent::memory::trim_off_runtime().await;
        if let Some(signal) = stopped {
            tracing::info!(
                signal = signal?,
                "Shutting down during a reload: draining sources and committing."
            );
            break ExitCode::SUCCESS;
        }
    };
    pdtf_agent::systemd::stopping();
    // Bounded, so a stop always ends the process inside systemd's TimeoutStopSec (30 s).
    if tokio::time::timeout(STOP_LIMIT, agent.shutdown(Duration::from_secs(5)))
        .await
        .is_err()
    {
        tracing::error!(limit_s = STOP_LIMIT.as_secs(), "Shutdown did not finish in time; exiting anyway. Records not yet committed were not acknowledged to anyone.");
        return Ok(ExitCode::from(EXIT_TASK_FAILED));
    }
    Ok(code)
}

/// Watches the configuration's directories; without a watcher, `SIGHUP` still reloads.
fn watch_config(
    c: &pdtf_agent::config::Config,
    changed: &tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    match pdtf_agent::reload::watch(c, changed.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "Configuration files are not watched; `systemctl reload` (SIGHUP) still reloads them.");
            None
        }
    }
}

/// Reloads the configuration, or returns the stop signal that came first. A reload waits
/// for the pipeline to commit the change; while storage is failing that wait has no end, and
/// a `systemctl stop` must still be heard (before, it was read only once the disk came back,
/// and systemd killed the agent after `TimeoutStopSec`).
async fn reload(
    agent: &mut Agent,
    path: &std::path::Path,
    watcher: &mut Option<notify::RecommendedWatcher>,
    changed: &tokio::sync::mpsc::Sender<()>,
    signals: &mut StopSignals,
) -> Option<anyhow::Result<&'static str>> {
    pdtf_agent::systemd::reloading();
    let outcome = tokio::select! {
        outcome = agent.reload(path) => outcome,
        signal = signals.wait() => return Some(signal),
    };
    if let pdtf_agent::reload::Outcome::Applied { .. } = outcome {
        // The tag maps may come from other directories now.
        *watcher = watch_config(agent.config(), changed);
    }
    pdtf_agent::systemd::reloaded();
    None
}

/// Exit code after a supervised task failed (systemd's `Restart=` restarts the agent).
const EXIT_TASK_FAILED: u8 = 3;

/// Longest orderly shutdown before the process exits regardless.
const STOP_LIMIT: Duration = Duration::from_secs(20);

fn validate(path: PathBuf) -> ExitCode {
    match load_or_report(&path) {
        Ok(c) => {
            println!(
                "{}: valid ({} tags, {} sources, lines: {}, alerts: {}, upstream: {})",
                path.display(),
                c.tags.len(),
                c.sources.len(),
                c.lines()
                    .iter()
                    .map(|l| l.name().to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
                c.sinks.alerts.as_ref().map_or("off", |a| a.broker.as_str()),
                c.sinks
                    .upstream
                    .as_ref()
                    .map_or("off", |u| u.broker.as_str()),
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn verify(state_dir: &std::path::Path) -> ExitCode {
    let started = std::time::Instant::now();
    let mut last_report = started;
    let result = pdtf_agent::journal::verify_offline(state_dir, |seq| {
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!("verified through seq {seq} ...");
            last_report = std::time::Instant::now();
        }
    });
    match result {
        Ok(r) if r.records == 0 => {
            println!(
                "OK: journal is empty (next seq {}), chain anchor {}",
                r.first, r.head
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            if let Some(v) = r.older_format {
                println!("NOTE: records are in format {v}, written by an earlier release; they were verified in that format, and the agent migrates them at its next start (or run `pdtf-agent migrate`).");
            }
            if r.recovered_copy {
                println!("NOTE: the journal file needed recovery after an unclean stop (crash, kill or power loss); a recovered copy was verified, the file itself is unchanged (the agent recovers it at its next start).");
            }
            println!(
                "OK: {} records, seq {}..={} contiguous, checksums and audit chain intact, head {} ({:.1} s)",
                r.records,
                r.first,
                r.last,
                r.head,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(pdtf_models::JournalError::Corrupt { seq, reason }) => {
            println!("FAILED: first bad record is seq {seq}: {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn migrate(state_dir: &std::path::Path) -> ExitCode {
    let started = std::time::Instant::now();
    let engine = if state_dir.join("journal.sled").is_dir() {
        config::Engine::Sled
    } else {
        config::Engine::Redb
    };
    match pdtf_agent::journal::open(engine, state_dir) {
        Ok(j) => {
            let (first, last) = (
                j.first_seq().map(|s| s.0).unwrap_or(0),
                j.last_seq().map(|s| s.0).unwrap_or(0),
            );
            println!(
                "OK: journal in record format {}, seq {first}..={last} ({:.1} s, peak RSS {} KiB)",
                pdtf_models::record::FORMAT_VERSION,
                started.elapsed().as_secs_f64(),
                peak_rss_kib().map_or("unknown".into(), |k| k.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let result = match cli.command {
        Command::Validate { config } => return validate(config),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "pdtf-agent", &mut script);
            // Into a buffer first: a closed pipe (`| head`) is not a panic.
            return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing the completion script: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Manpages { out } => man_pages::write::<Cli>(&out).map(|n| {
            println!("wrote {n} man pages to {}", out.display());
            ExitCode::SUCCESS
        }),
        Command::Verify { state } => {
            return state.dir().map_or_else(|code| code, |d| verify(&d));
        }
        Command::Batch { command } => return batch_command::run(command),
        Command::Model { command } => return model_command::run(command),
        Command::Migrate { state } => {
            pdtf_agent::logging::init("info");
            return state.dir().map_or_else(|code| code, |d| migrate(&d));
        }
        Command::Opcua { command } => {
            // Our errors say what happened and what to do; the library's own log lines
            // (every failed attempt, at ERROR) would only bury them. RUST_LOG shows them.
            pdtf_agent::logging::init("warn,opcua_client=off,opcua_core=off,opcua_crypto=off");
            let target = |a: ServerArgs| opcua_cli::Target {
                config: a.config,
                server: a.server,
                endpoint: a.endpoint,
            };
            rt().context("starting runtime")
                .and_then(|rt| match command {
                    OpcuaCommand::Browse {
                        server,
                        node,
                        depth,
                        toml,
                    } => rt.block_on(opcua_cli::browse(
                        target(server),
                        &node,
                        depth,
                        toml.as_deref(),
                    )),
                    OpcuaCommand::Trust { server, yes } => {
                        rt.block_on(opcua_cli::trust(target(server), yes))
                    }
                })
        }
        Command::Run { config } => {
            pdtf_agent::logging::init("info,rumqttd=warn,opcua_client=off,opcua_core=off");
            rt().context("starting runtime").and_then(|rt| {
                let r = rt.block_on(run(config));
                // A journal call stuck in a blocking thread (a dead disk) must not keep the
                // process alive past its stop: dropping the runtime would wait for it.
                rt.shutdown_timeout(Duration::from_secs(2));
                r
            })
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            duration,
            config,
            state_dir,
        } => {
            // The embedded broker logs every closed connection as an error; not the operator's concern here.
            pdtf_agent::logging::init(
                "warn,rumqttd=off,opcua_client=off,opcua_core=off,opcua_server=off",
            );
            let args = pdtf_agent::demo::DemoArgs {
                duration: duration.map(Duration::from_secs),
                config,
                state_dir,
            };
            rt().context("starting runtime")
                .and_then(|rt| rt.block_on(pdtf_agent::demo::run(args)))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
