//! The `ductd` command line (README.md, docs/operations.md), as a library so that a downstream
//! crate can build its own ductd with extra sources:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let mut registry = ductd::builtin_registry();
//!     // registry.add_source(my_crate::my_source_spec());
//!     ductd::run(registry)
//! }
//! ```

mod health;
mod logging;
mod memory;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use duct_core::config::{self, Config, Diagnostics};
use duct_core::{plan, Plan, Registry, Telemetry};
use duct_runtime::once::{run_once, OnceOutcome};
use duct_runtime::Agent;

/// The configuration `ductd` runs when given no `-c`.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.yml");

/// Exit codes: 0 ok, 1 bad configuration, 2 bad usage (clap's own), 3 a
/// source failed in `ductd once`.
const EXIT_CONFIG: u8 = 1;
const EXIT_SOURCE_FAILED: u8 = 3;

/// Every built-in source and output.
pub fn builtin_registry() -> Registry {
    let mut registry = Registry::new();
    duct_sources::register(&mut registry);
    duct_outputs::register(&mut registry);
    registry
}

#[derive(Debug, Parser)]
#[command(
    name = "ductd",
    version,
    about = "A monitoring agent: polls sources, routes events, delivers them to outputs",
    long_about = "A monitoring agent: polls sources, routes events, delivers them to outputs.\n\nRuns Duct's duct.yml unchanged. Without -c it runs its embedded default configuration."
)]
struct Cli {
    /// Configuration file (default: the embedded configuration)
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// More logging: -v for debug (other crates info), -vv for trace; DUCTD_LOG=crate=level,… per crate
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log line format (logs go to standard error)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default)
    Run,
    /// Validate the configuration: exit 0, or print every problem and exit 1
    Check {
        /// Treat warnings (unknown options, missing include directories) as errors
        #[arg(long)]
        strict: bool,
    },
    /// Run every polling source once and print its events as JSON lines
    Once {
        /// Longest pause between the two ticks of a rate source (seconds)
        #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
        rate_wait: f64,
    },
    /// List every built-in source and output with its options and metrics
    List,
    /// Ask a running agent's health endpoint (the configured `health.listen`,
    /// or ADDR); exit 0 when it answers 200. For container health checks.
    Health {
        /// Address of the endpoint, e.g. 127.0.0.1:9091
        #[arg(long, value_name = "ADDR")]
        address: Option<String>,
    },
}

/// Parses the process arguments and runs the command.
pub fn run(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.log_format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run_agent(cli.config.as_deref(), &registry),
        Command::Check { strict } => check(cli.config.as_deref(), &registry, strict),
        Command::Once { rate_wait } => once(cli.config.as_deref(), &registry, rate_wait),
        Command::List => {
            print!("{}", list(&registry));
            ExitCode::SUCCESS
        }
        Command::Health { address } => health::check(cli.config.as_deref(), address),
    }
}

/// Loads and plans the configuration at `path` (or the embedded one).
fn load(path: Option<&Path>, registry: &Registry, host: &str) -> Result<Plan, Diagnostics> {
    let config = match path {
        Some(p) => Config::read(p, &config::process_env)?,
        None => Config::read_embedded(DEFAULT_CONFIG, &config::process_env)?,
    };
    plan::plan(&config, registry, host)
}

fn config_name(path: Option<&Path>) -> String {
    path.map_or_else(|| config::EMBEDDED_NAME.to_string(), |p| p.display().to_string())
}

fn print_problems(diags: &Diagnostics) {
    for d in &diags.0 {
        eprintln!("{}", d.with_excerpt());
    }
}

/// Logs configuration problems each at its own level: a warning found
/// while a reload is refused for an error is still a warning.
fn log_problems(problems: &[config::Diagnostic]) {
    for d in problems {
        if d.is_error() {
            tracing::error!("{d}");
        } else {
            tracing::warn!("{}", d.to_string().replacen("warning: ", "", 1));
        }
    }
}

fn check(path: Option<&Path>, registry: &Registry, strict: bool) -> ExitCode {
    let name = config_name(path);
    match load(path, registry, &duct_core::host::fqdn()) {
        Err(diags) => {
            print_problems(&diags);
            let errors = diags.errors().count();
            eprintln!("{name}: {errors} error(s)");
            ExitCode::from(EXIT_CONFIG)
        }
        Ok(plan) => {
            print_problems(&Diagnostics(plan.warnings.clone()));
            if strict && !plan.warnings.is_empty() {
                eprintln!("{name}: {} warning(s), refused by --strict", plan.warnings.len());
                return ExitCode::from(EXIT_CONFIG);
            }
            println!(
                "{name}: ok ({} sources, {} outputs{})",
                plan.sources.len(),
                plan.outputs.len(),
                if plan.warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {} warnings", plan.warnings.len())
                }
            );
            ExitCode::SUCCESS
        }
    }
}

fn once(path: Option<&Path>, registry: &Registry, rate_wait: f64) -> ExitCode {
    let plan = match load(path, registry, &duct_core::host::fqdn()) {
        Ok(p) => p,
        Err(diags) => {
            print_problems(&diags);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    log_problems(&plan.warnings);
    let wait = Duration::from_secs_f64(rate_wait.clamp(0.0, 3600.0));
    let results = actix_rt::System::new().block_on(run_once(plan, wait));
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for r in results {
        match r.outcome {
            OnceOutcome::Events(events) => {
                for ev in events {
                    use std::io::Write;
                    let _ = writeln!(out, "{}", ev.to_json());
                }
            }
            OnceOutcome::Skipped(why) => eprintln!("{} ({}): skipped: {why}", r.service, r.source),
            OnceOutcome::Failed(why) => {
                failed = true;
                eprintln!("{} ({}): failed: {why}", r.service, r.source);
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_SOURCE_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_agent(path: Option<&Path>, registry: &Registry) -> ExitCode {
    let host = duct_core::host::fqdn();
    let plan = match load(path, registry, &host) {
        Ok(p) => p,
        Err(diags) => {
            print_problems(&diags);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    log_problems(&plan.warnings);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config_name(path),
        host = %host,
        "starting ductd"
    );
    let system = actix_rt::System::new();
    let result = system.block_on(supervise(plan, path, registry, &host));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT; SIGHUP reloads the configuration.
async fn supervise(plan: Plan, path: Option<&Path>, registry: &Registry, host: &str) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("cannot watch SIGHUP: {e}"))?;

    let telemetry = Telemetry::new();
    // The server answers as long as its handle lives: through the drain,
    // when /ready says "stopping", until this function returns.
    let (health, _health_server) = match &plan.globals.health {
        Some(h) => {
            let state = health::HealthState::new(telemetry.clone());
            let listen = h
                .listen
                .parse()
                .map_err(|e| format!("health.listen {}: {e}", h.listen))?;
            let server = health::serve(listen, state.clone())
                .map_err(|e| format!("cannot serve the health endpoint on {}: {e}", h.listen))?;
            (Some(state), Some(server))
        }
        None => (None, None),
    };
    let health_listen = plan.globals.health.as_ref().map(|h| h.listen.clone());
    let mut agent = Agent::start(plan, telemetry);
    if let Some(h) = &health {
        h.running(agent.probe());
    }
    memory::release_startup_code_soon();
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                match load(path, registry, host) {
                    Ok(plan) => {
                        log_problems(&plan.warnings);
                        if plan.globals.health.as_ref().map(|h| &h.listen) != health_listen.as_ref() {
                            tracing::warn!("the health endpoint's address changes only with a restart");
                        }
                        let s = agent.reload(plan).await;
                        memory::release_startup_code_soon();
                        if let Some(h) = &health {
                            h.running(agent.probe());
                        }
                        tracing::info!(
                            sources_kept = s.sources_kept,
                            sources_started = s.sources_started,
                            sources_stopped = s.sources_stopped,
                            outputs_kept = s.outputs_kept,
                            outputs_started = s.outputs_started,
                            outputs_stopped = s.outputs_stopped,
                            "configuration reloaded"
                        );
                    }
                    Err(diags) => {
                        log_problems(&diags.0);
                        tracing::error!("reload refused: the configuration has errors; the previous one keeps running");
                    }
                }
            }
        }
    }
    if let Some(h) = &health {
        h.stopping();
    }
    // A second signal during the drain means "now" — unless it comes
    // within a second of the first: GNU `timeout` and service managers
    // signal the process and then its group, and that is one request.
    let asked = std::time::Instant::now();
    let shutdown = agent.shutdown();
    tokio::pin!(shutdown);
    loop {
        let which = tokio::select! {
            _ = &mut shutdown => break,
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if asked.elapsed() < SAME_STOP_REQUEST {
            tracing::info!("{which} again within a second: the same stop request; the flush goes on");
        } else {
            tracing::warn!("{which} again: exiting without finishing the flush");
            break;
        }
    }
    Ok(())
}

/// A stop signal repeated within this long of the first is the same
/// request (see the end of [`supervise`]).
const SAME_STOP_REQUEST: Duration = Duration::from_secs(1);

/// `ductd list`: every source and output with its options and metrics.
pub fn list(registry: &Registry) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Common source options: {}",
        plan::common_source_options().join(", ")
    );
    let _ = writeln!(
        out,
        "Common output options: {}",
        plan::common_output_options().join(", ")
    );
    let _ = writeln!(out, "\nSources:");
    let mut sources: Vec<_> = registry.sources().iter().collect();
    sources.sort_by_key(|s| s.name);
    for s in sources {
        let _ = writeln!(out, "\n  {}\n    {}", s.name, s.summary);
        let options = (s.options)();
        if !options.is_empty() {
            let _ = writeln!(out, "    options: {}", options.join(", "));
        }
        if s.remote {
            let _ = writeln!(
                out,
                "    runs on another host with use_ssh: true (docs/remote-checks.md)"
            );
        }
        for m in s.metrics {
            let _ = writeln!(out, "    metric {m}");
        }
    }
    let _ = writeln!(out, "\nOutputs:");
    let mut outputs: Vec<_> = registry.outputs().iter().collect();
    outputs.sort_by_key(|s| s.name);
    for o in outputs {
        let _ = writeln!(out, "\n  {}\n    {}", o.name, o.summary);
        let options = (o.options)();
        if !options.is_empty() {
            let _ = writeln!(out, "    options: {}", options.join(", "));
        }
        if o.metrics_only {
            let _ = writeln!(out, "    metric events only (log events are not sent)");
        }
    }
    out
}
