//! Duct-compatible configuration (docs/configuration.md): a `duct.yml` with its includes
//! and blueprints becomes global settings plus source and output blocks,
//! every problem reported with its file position.

pub mod de;
pub mod diag;
pub mod load;
pub mod node;
pub mod seconds;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use seconds::Zero;

pub use de::{field_names, from_node, from_node_quiet, Context, DeError};
pub use diag::{did_you_mean, suggest, Diagnostic, Diagnostics, Severity};
pub use load::Block;
pub use node::{Mark, Node, Style, Value};

/// The file name shown for positions in the embedded default configuration.
pub const EMBEDDED_NAME: &str = "<embedded default>";

/// Global settings, with Duct's defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct Globals {
    /// Default source interval (s).
    pub interval: f64,
    /// Default event TTL (s).
    pub ttl: f64,
    /// Spacing of source start times (s).
    pub stagger: f64,
    /// Log every tick's events.
    pub debug: bool,
    /// Output name for sources without `route`.
    pub default_route: Option<String>,
    /// Directory of user plugins (exec sources).
    pub base_path: PathBuf,
    /// ductd extension: default `hostname` for every source (a DaemonSet
    /// sets `hostname: ${NODE_NAME}` once here).
    pub hostname: Option<String>,
    /// Legacy default Riemann output (used when `outputs` is absent).
    pub server: Option<String>,
    pub port: u16,
    pub proto: String,
    pub ssh_username: Option<String>,
    pub ssh_key: Option<String>,
    pub ssh_keyfile: Option<String>,
    pub ssh_keypass: Option<String>,
    pub ssh_password: Option<String>,
    pub ssh_port: u16,
    pub ssh_knownhosts_file: Option<String>,
    /// ductd extension: record the key of an SSH host not yet in
    /// `ssh_knownhosts_file` instead of refusing it (docs/remote-checks.md).
    pub ssh_accept_new: bool,
    /// ductd extension: how long shutdown may spend flushing outputs (s).
    pub shutdown_timeout: f64,
    /// ductd extension: the most sources a configuration may have, its
    /// `sources` and what its blueprints expand to together. Checked before
    /// expanding, so that a small file cannot ask for 10^10 sources.
    pub max_sources: usize,
    /// ductd extension: the HTTP health endpoint, off unless configured.
    pub health: Option<HealthOptions>,
}

/// `health: {listen: "127.0.0.1:9091"}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HealthOptions {
    /// Address and port the endpoint listens on.
    pub listen: String,
}

impl Default for Globals {
    fn default() -> Self {
        Globals {
            interval: 60.0,
            ttl: 60.0,
            stagger: 0.2,
            debug: false,
            default_route: None,
            base_path: PathBuf::from("/var/lib/duct"),
            hostname: None,
            server: None,
            port: 5555,
            proto: "tcp".into(),
            ssh_username: None,
            ssh_key: None,
            ssh_keyfile: None,
            ssh_keypass: None,
            ssh_password: None,
            ssh_port: 22,
            ssh_knownhosts_file: Some("/var/lib/duct/known_hosts".into()),
            ssh_accept_new: false,
            shutdown_timeout: 10.0,
            max_sources: load::DEFAULT_MAX_SOURCES,
            health: None,
        }
    }
}

/// Top-level keys consumed before the globals are read.
const STRUCTURE_KEYS: &[&str] = &["sources", "outputs", "toolbox", "blueprint", "include", "include_path"];

/// A loaded configuration: globals and the blocks still to be given types
/// by the registry of sources and outputs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file, or `None` for the embedded default.
    pub path: Option<PathBuf>,
    pub globals: Globals,
    /// The merged top-level map (for positions of global keys).
    pub root: Node,
    pub sources: Vec<Block>,
    pub outputs: Vec<Block>,
    /// Problems found while loading: warnings, and errors too when loaded
    /// with [`Config::read`] (planning then fails, having reported the
    /// problems of every block as well).
    pub problems: Vec<Diagnostic>,
}

/// Where environment variables come from; tests pass their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Loads `path` with its includes and blueprints; any error fails.
    pub fn load(path: &Path, env: Env<'_>) -> Result<Config, Diagnostics> {
        Self::read(path, env)?.without_errors()
    }

    /// Loads configuration text held in memory (the embedded default).
    pub fn load_embedded(text: &str, env: Env<'_>) -> Result<Config, Diagnostics> {
        Self::read_embedded(text, env)?.without_errors()
    }

    /// Like [`Config::load`], but fails only when there is no tree to plan
    /// (an unreadable file, invalid YAML); other errors are kept in
    /// [`Config::problems`] so that `ductd check` can plan every block and
    /// report all that is wrong at once.
    pub fn read(path: &Path, env: Env<'_>) -> Result<Config, Diagnostics> {
        let mut diags = Diagnostics::default();
        let tree = load::load_file(path, env, &mut diags);
        Self::finish(tree, Some(path.to_path_buf()), diags)
    }

    /// [`Config::read`] for text held in memory.
    pub fn read_embedded(text: &str, env: Env<'_>) -> Result<Config, Diagnostics> {
        let mut diags = Diagnostics::default();
        let base = std::env::current_dir().unwrap_or_default();
        let tree = load::load_text(text, Arc::from(Path::new(EMBEDDED_NAME)), &base, env, &mut diags);
        Self::finish(tree, None, diags)
    }

    fn without_errors(self) -> Result<Config, Diagnostics> {
        if self.problems.iter().any(Diagnostic::is_error) {
            return Err(Diagnostics(self.problems));
        }
        Ok(self)
    }

    fn finish(tree: Option<load::Tree>, path: Option<PathBuf>, mut diags: Diagnostics) -> Result<Config, Diagnostics> {
        let Some(tree) = tree else {
            return Err(diags);
        };
        let warnings = RefCell::new(Vec::new());
        let ctx = Context {
            owner: "",
            path: "",
            check_top: true,
            also_known: STRUCTURE_KEYS,
            warnings: &warnings,
        };
        let mut globals = match from_node::<Globals>(&tree.root, &ctx) {
            Ok(g) => g,
            Err(e) => {
                diags.push(e.into_diagnostic(""));
                Globals::default()
            }
        };
        diags.extend(warnings.into_inner().into_iter().map(|mut w| {
            // Unknown top-level keys: Duct accepted anything here, so say so
            // plainly rather than as a source option.
            w.message = w.message.replace("unknown option", "unknown global key");
            w
        }));
        check_globals(&mut globals, &tree.root, &mut diags);
        Ok(Config {
            path,
            globals,
            root: tree.root,
            sources: tree.sources,
            outputs: tree.outputs,
            problems: diags.0,
        })
    }

    /// The position of a global key's value, for messages about it.
    pub fn mark_of(&self, key: &str) -> Option<Mark> {
        self.root.get(key).map(|n| n.mark.clone())
    }
}

/// Checks the global settings' values, raising a too-short `interval` to
/// the floor (see [`seconds`]).
fn check_globals(g: &mut Globals, root: &Node, diags: &mut Diagnostics) {
    let at = |key: &str| root.get(key).map(|n| n.mark.clone());
    let seconds = |key: &str, value: f64, zero: Zero, diags: &mut Diagnostics| {
        if let Err(m) = seconds::check_seconds(value, zero) {
            diags.push(Diagnostic::error(at(key), format!("{key}: {m}")));
        }
    };
    match seconds::check_interval(g.interval) {
        Ok((used, warning)) => {
            g.interval = used;
            if let Some(w) = warning {
                diags.push(Diagnostic::warning(at("interval"), format!("interval: {w}")));
            }
        }
        Err(m) => diags.push(Diagnostic::error(at("interval"), format!("interval: {m}"))),
    }
    seconds("ttl", g.ttl, Zero::Allowed, diags);
    seconds("stagger", g.stagger, Zero::Allowed, diags);
    seconds("shutdown_timeout", g.shutdown_timeout, Zero::Allowed, diags);
    if let Some(h) = &g.health {
        if h.listen.parse::<std::net::SocketAddr>().is_err() {
            let mark = root.get("health").and_then(|n| n.get("listen")).map(|n| n.mark.clone());
            diags.push(Diagnostic::error(
                mark,
                format!(
                    "health.listen: `{}` is not an address and port such as 127.0.0.1:9091",
                    h.listen
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn globals_default_to_ducts_values() {
        let c = Config::load_embedded("sources: []\n", &no_env).unwrap();
        assert_eq!(c.globals, Globals::default());
        assert_eq!(c.globals.interval, 60.0);
        assert_eq!(c.globals.stagger, 0.2);
        assert_eq!(c.globals.base_path, PathBuf::from("/var/lib/duct"));
    }

    #[test]
    fn globals_are_typed_and_checked() {
        let c = Config::load_embedded("interval: 0.5\nttl: 30\ndebug: 1\n", &no_env).unwrap();
        assert_eq!(c.globals.interval, 0.5);
        assert_eq!(c.globals.ttl, 30.0);
        assert!(c.globals.debug);
        let e = Config::load_embedded("interval: -1\n", &no_env).unwrap_err();
        assert!(e.to_string().contains("interval: must be a positive"), "{e}");
        let e = Config::load_embedded("\nttl: soon\n", &no_env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "<embedded default>:2:6: ttl: expected a number, found `soon`"
        );
    }

    #[test]
    fn unknown_global_keys_warn() {
        let c = Config::load_embedded("intervall: 5\n", &no_env).unwrap();
        assert_eq!(c.problems.len(), 1);
        assert!(c.problems[0]
            .message
            .contains("unknown global key `intervall` (did you mean `interval`?)"));
    }
}
