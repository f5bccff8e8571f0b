//! `ductd-bench`: runs the scenarios of `docs/performance.md` and prints
//! one JSON line per figure on stdout (progress on stderr).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use ductd_bench::agents::Scratch;
use ductd_bench::peers;
use ductd_bench::report::Figure;
use ductd_bench::scenarios::{footprint, latency, logs, network, scale, throughput, Env};

#[derive(Debug, Parser)]
#[command(
    name = "ductd-bench",
    about = "ductd's benchmarks, side by side with Duct, collectd, node_exporter and mtail"
)]
struct Cli {
    /// The ductd binary to measure (default: build and use target/release/ductd)
    #[arg(long, global = true, value_name = "PATH")]
    ductd: Option<PathBuf>,

    /// Install the missing peers first (Duct into a virtualenv, collectd and
    /// node_exporter with apt-get)
    #[arg(long, global = true)]
    install_peers: bool,

    /// A Python that has ducted 2.2.1 (default: the harness's virtualenv)
    #[arg(long, global = true, value_name = "PATH")]
    duct_python: Option<PathBuf>,

    /// Measure ductd alone
    #[arg(long, global = true)]
    no_peers: bool,

    /// Keep the scratch directory (configurations and logs)
    #[arg(long, global = true)]
    keep: bool,

    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// 1: listener → router (triggers) → an output → its receiver (Riemann's acking sink with the memory queue, a disk buffer and end_to_end; stand-ins; nats-server), and listener → Null
    Throughput {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Unacknowledged messages per connection
        #[arg(long, default_value_t = 128)]
        window: usize,
        /// The variants, comma-separated: riemann, riemann_disk,
        /// riemann_disk_end_to_end, null, graphite, influxdb, influxdb3,
        /// opentsdb, bosun, elasticsearch, remote_write, nats, or `outputs`
        /// for every push output (default: the four Riemann and Null ones)
        #[arg(long, value_name = "LIST")]
        only: Option<String>,
    },
    /// 2: six host sources at 1 s beside collectd and node_exporter
    Footprint {
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        #[arg(long, default_value_t = 5.0)]
        warmup: f64,
    },
    /// 3: 10,000 sources in one process
    Scale {
        #[arg(long, default_value_t = 10_000)]
        sources: usize,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
    },
    /// 4: write-to-sink latency at 1,000 events/s
    Latency {
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// The output's flush interval (s)
        #[arg(long, default_value_t = 0.1)]
        flush_interval: f64,
    },
    /// 6: nginx access logs: a pre-written log read through, and a live log
    /// followed, beside Duct and mtail
    Logs {
        /// Size of the pre-written log (GiB)
        #[arg(long, default_value_t = 1.0)]
        gib: f64,
        /// Longest time Duct is given on the pre-written log (s)
        #[arg(long, default_value_t = 60.0)]
        duct_seconds: f64,
        /// Lines per second written to the live log
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        /// Measured window on the live log (s)
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        #[arg(long, default_value_t = 5.0)]
        warmup: f64,
        /// Only one part: `bulk` or `live`
        #[arg(long, value_parser = ["bulk", "live"])]
        only: Option<String>,
    },
    /// 7: a central poller: SNMP devices on snmpsimd and an sFlow stream
    Network {
        #[arg(long, default_value_t = 2000)]
        sources: usize,
        /// Seconds between two polls of a device
        #[arg(long, default_value_t = 60.0)]
        interval: f64,
        /// Intervals the SNMP runs last
        #[arg(long, default_value_t = 3)]
        intervals: u32,
        /// Interfaces of each simulated switch
        #[arg(long, default_value_t = 8)]
        interfaces: u32,
        /// Loopback addresses snmpsimd answers on (communities make up the rest)
        #[arg(long, default_value_t = 50)]
        addresses: usize,
        /// sFlow datagrams per second
        #[arg(long, default_value_t = 10_000.0)]
        datagrams: f64,
        #[arg(long, default_value_t = 50)]
        sflow_agents: usize,
        /// Seconds of the sFlow-only run
        #[arg(long, default_value_t = 20.0)]
        sflow_seconds: f64,
        /// Devices walked by net-snmp for the reference cost
        #[arg(long, default_value_t = 200)]
        reference_walks: usize,
    },
    /// Every scenario with its defaults
    All,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The release ductd, built now unless a binary was given.
fn ductd_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let root = workspace_root();
    eprintln!("building the release ductd (cargo build --release --bin ductd)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "--bin", "ductd"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building ductd failed".into());
    }
    Ok(root.join("target/release/ductd"))
}

fn has_tcp_check(ductd: &PathBuf) -> bool {
    Command::new(ductd)
        .arg("list")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("duct.sources.network.TCP"))
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Other work on the machine skews every figure: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    serde_json::json!({
        "machine": {
            "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "cpu": cpu,
            "kernel": kernel.trim(),
            "loadavg_at_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            "unix_time": ductd_bench::agents::wall_now().round(),
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let venv = peers::default_venv();
    if cli.install_peers {
        if let Err(e) = peers::install(&venv) {
            eprintln!("installing peers failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    let ductd = match ductd_binary(cli.ductd) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let tcp = has_tcp_check(&ductd);
    let mut programs = peers::find(ductd, cli.duct_python, &venv);
    if cli.no_peers {
        programs.duct_python = None;
        programs.collectd = None;
        programs.node_exporter = None;
        programs.mtail = None;
    } else {
        peers::report_missing(&programs);
    }
    let scratch = match Scratch::new(cli.keep) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot make a scratch directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = Env { programs, scratch };
    println!("{}", machine());
    let mut figures: Vec<Figure> = Vec::new();
    let mut failed = false;
    let mut report = |r: std::io::Result<Vec<Figure>>, name: &str| match r {
        Ok(f) => {
            for fig in &f {
                fig.print();
            }
            figures.extend(f);
        }
        Err(e) => {
            eprintln!("{name} failed: {e}");
            failed = true;
        }
    };
    match cli.scenario {
        Scenario::Throughput {
            seconds,
            warmup,
            connections,
            window,
            only,
        } => {
            let variants = match only.as_deref().map(throughput::Variant::parse_list) {
                None => throughput::Options::default().variants,
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    eprintln!("--only: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = throughput::Options {
                seconds,
                warmup,
                connections,
                window,
                variants,
            };
            report(Ok(throughput::run(&env, &opts)), "throughput");
        }
        Scenario::Footprint { seconds, warmup } => {
            report(
                footprint::run(&env, &footprint::Options { seconds, warmup }),
                "footprint",
            );
        }
        Scenario::Scale { sources, seconds } => {
            report(Ok(scale::run(&env, &scale::Options { sources, seconds }, tcp)), "scale");
        }
        Scenario::Latency {
            rate,
            seconds,
            flush_interval,
        } => {
            let opts = latency::Options {
                rate,
                seconds,
                flush_interval,
                ..latency::Options::default()
            };
            report(latency::run(&env, &opts), "latency");
        }
        Scenario::Logs {
            gib,
            duct_seconds,
            rate,
            seconds,
            warmup,
            only,
        } => {
            let opts = logs::Options {
                gib,
                duct_seconds,
                rate,
                seconds,
                warmup,
                only,
            };
            report(logs::run(&env, &opts), "logs");
        }
        Scenario::Network {
            sources,
            interval,
            intervals,
            interfaces,
            addresses,
            datagrams,
            sflow_agents,
            sflow_seconds,
            reference_walks,
        } => {
            let opts = network::Options {
                sources,
                interval,
                intervals,
                interfaces,
                addresses,
                datagrams,
                sflow_agents,
                sflow_seconds,
                reference_walks,
            };
            report(network::run(&env, &opts), "network");
        }
        Scenario::All => {
            report(Ok(throughput::run(&env, &throughput::Options::default())), "throughput");
            report(footprint::run(&env, &footprint::Options::default()), "footprint");
            report(Ok(scale::run(&env, &scale::Options::default(), tcp)), "scale");
            report(latency::run(&env, &latency::Options::default()), "latency");
            report(logs::run(&env, &logs::Options::default()), "logs");
            report(network::run(&env, &network::Options::default()), "network");
        }
    }
    let missed: Vec<&str> = figures
        .iter()
        .filter(|f| f.met() == Some(false))
        .map(|f| f.name.as_str())
        .collect();
    if !missed.is_empty() {
        eprintln!("targets missed: {}", missed.join(", "));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
