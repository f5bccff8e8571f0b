//! Finding the peers the scenarios compare ductd with, and installing them
//! on request (`--install-peers`): Duct 2.2.1 from PyPI into a virtualenv
//! the harness owns, collectd and node_exporter from Debian's packages.
//! A peer that is missing is skipped with a message, never an error.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::agents::Programs;

/// The Duct release the figures are compared with.
pub const DUCT_VERSION: &str = "2.2.1";

/// The harness's own virtualenv for Duct.
pub fn default_venv() -> PathBuf {
    std::env::temp_dir().join(format!("ductd-bench-duct-{DUCT_VERSION}"))
}

fn on_path(name: &str, also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(also.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Whether `python` has ducted at the wanted version.
fn has_duct(python: &Path) -> bool {
    let probe = format!("import importlib.metadata as m; assert m.version('ducted') == '{DUCT_VERSION}'");
    Command::new(python)
        .args(["-c", &probe])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Locates every peer; `duct_python` overrides the virtualenv.
pub fn find(ductd: PathBuf, duct_python: Option<PathBuf>, venv: &Path) -> Programs {
    let duct_python = duct_python
        .or_else(|| Some(venv.join("bin/python")))
        .filter(|p| has_duct(p));
    Programs {
        ductd,
        duct_python,
        collectd: on_path("collectd", &["/usr/sbin/collectd"]),
        node_exporter: on_path("prometheus-node-exporter", &["/usr/bin/prometheus-node-exporter"]),
        nats_server: on_path("nats-server", &["/usr/sbin/nats-server"]),
        mtail: on_path("mtail", &["/usr/bin/mtail"]),
    }
}

/// Says which peers are missing, and how to get them.
pub fn report_missing(p: &Programs) {
    if p.duct_python.is_none() {
        eprintln!(
            "peer skipped: Duct {DUCT_VERSION} is not installed (run with --install-peers, or pass --duct-python)"
        );
    }
    if p.collectd.is_none() {
        eprintln!(
            "peer skipped: collectd is not installed (run with --install-peers, or apt-get install collectd-core)"
        );
    }
    if p.node_exporter.is_none() {
        eprintln!("peer skipped: prometheus-node-exporter is not installed (run with --install-peers)");
    }
    if p.mtail.is_none() {
        eprintln!("peer skipped: mtail is not installed (run with --install-peers, or apt-get install mtail)");
    }
}

fn run(what: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("installing: {what}");
    let status = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {status}"))
    }
}

/// Installs whatever peer is missing.
pub fn install(venv: &Path) -> Result<(), String> {
    if on_path("collectd", &["/usr/sbin/collectd"]).is_none()
        || on_path("prometheus-node-exporter", &["/usr/bin/prometheus-node-exporter"]).is_none()
        || on_path("nats-server", &["/usr/sbin/nats-server"]).is_none()
        || on_path("mtail", &["/usr/bin/mtail"]).is_none()
    {
        run("apt-get update", Command::new("apt-get").args(["update", "-qq"]))?;
        run(
            "collectd-core, prometheus-node-exporter, nats-server and mtail",
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(["collectd-core", "prometheus-node-exporter", "nats-server", "mtail"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if !has_duct(&venv.join("bin/python")) {
        let python = on_path("python3.11", &[])
            .or_else(|| on_path("python3", &[]))
            .ok_or("no python3 to make Duct's virtualenv with")?;
        run(
            "a virtualenv for Duct",
            Command::new(python).args(["-m", "venv"]).arg(venv),
        )?;
        run(
            &format!("ducted=={DUCT_VERSION}"),
            Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .arg(format!("ducted=={DUCT_VERSION}")),
        )?;
    }
    Ok(())
}
