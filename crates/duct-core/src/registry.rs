//! The table of built-in sources and outputs, by Duct's names.
//!
//! The binary fills a [`Registry`] with the built-ins; a downstream crate
//! adds its own specs before handing the registry to the library's `run`,
//! which is how a user builds their own ductd with extra sources.

use std::cell::RefCell;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::config::seconds::{check_duration, Zero};
use crate::config::{field_names, from_node, Block, Context, Diagnostic, Globals};
use crate::output::Output;
use crate::plan::{OutputSettings, SourceSettings};
use crate::source::Source;

/// Builds a source from its configuration; side-effect free (nothing is
/// bound or connected until the source starts), so `ductd check` can call it.
pub type SourceBuild = fn(&SourceArgs<'_>) -> Result<Box<dyn Source>, Diagnostic>;

/// Builds an output's transport from its configuration; side-effect free.
pub type OutputBuild = fn(&OutputArgs<'_>) -> Result<Box<dyn Output>, Diagnostic>;

/// A source kind: its name, documentation and constructor.
#[derive(Clone, Copy)]
pub struct SourceSpec {
    /// Duct's dotted class path, e.g. `duct.sources.linux.basic.CPU`.
    pub name: &'static str,
    /// One line for `ductd list`.
    pub summary: &'static str,
    /// The metrics it emits, relative to `service`, for `ductd list`.
    pub metrics: &'static [&'static str],
    /// Its own option names (besides the common ones).
    pub options: fn() -> &'static [&'static str],
    pub build: SourceBuild,
    /// It can observe another host over SSH (`use_ssh: true`): its reads
    /// and commands go through the connection its settings name.
    pub remote: bool,
}

impl SourceSpec {
    /// A spec whose options are the fields of `T`.
    pub fn new<T: DeserializeOwned>(
        name: &'static str,
        summary: &'static str,
        metrics: &'static [&'static str],
        build: SourceBuild,
    ) -> Self {
        SourceSpec {
            name,
            summary,
            metrics,
            options: field_names::<T>,
            build,
            remote: false,
        }
    }

    /// Marks the kind as able to run over SSH (`use_ssh: true`).
    pub fn over_ssh(mut self) -> Self {
        self.remote = true;
        self
    }
}

/// An output kind: its name, documentation and constructor.
#[derive(Clone, Copy)]
pub struct OutputSpec {
    /// Duct's dotted class path, e.g. `duct.outputs.logger.Logger`.
    pub name: &'static str,
    pub summary: &'static str,
    pub options: fn() -> &'static [&'static str],
    /// Log events are not sent to metric-only outputs (Riemann).
    pub metrics_only: bool,
    /// `maxrate` when the block sets none (Duct's per-output defaults,
    /// e.g. 100 for OpenTSDB); 0 is no limit.
    pub default_maxrate: f64,
    pub build: OutputBuild,
}

impl OutputSpec {
    pub fn new<T: DeserializeOwned>(
        name: &'static str,
        summary: &'static str,
        metrics_only: bool,
        build: OutputBuild,
    ) -> Self {
        OutputSpec {
            name,
            summary,
            options: field_names::<T>,
            metrics_only,
            default_maxrate: 0.0,
            build,
        }
    }

    /// Sets the `maxrate` used when a block sets none.
    pub fn with_default_maxrate(mut self, maxrate: f64) -> Self {
        self.default_maxrate = maxrate;
        self
    }
}

/// No options beyond the common ones.
#[derive(Debug, Default, serde::Deserialize)]
pub struct NoOptions {}

/// What a constructor reads its options from: the block, its resolved
/// common settings (`S`: [`SourceSettings`] or [`OutputSettings`]) and the
/// global ones. Sources and outputs read their own options the same way.
pub struct BuildArgs<'a, S> {
    pub settings: &'a S,
    pub globals: &'a Globals,
    pub block: &'a Block,
    /// The kind's name, for messages about nested unknown options.
    pub(crate) owner: &'static str,
    /// Where [`BuildArgs::warn`] and the options' reader put warnings.
    pub(crate) warnings: &'a RefCell<Vec<Diagnostic>>,
}

/// What a source constructor reads its options from.
pub type SourceArgs<'a> = BuildArgs<'a, SourceSettings>;

/// What an output constructor reads its options from.
pub type OutputArgs<'a> = BuildArgs<'a, OutputSettings>;

impl<S> BuildArgs<'_, S> {
    /// The kind's own options as `T`.
    pub fn options<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        let ctx = Context {
            owner: self.owner,
            path: &self.block.context,
            // Top-level keys are checked by the planner against the common
            // options and this spec's own; nested maps are checked here.
            check_top: false,
            also_known: &[],
            warnings: self.warnings,
        };
        from_node(&self.block.node, &ctx).map_err(|e| e.into_diagnostic(&self.block.context))
    }

    /// A problem with the value of `key` (or the block, if it is absent).
    pub fn invalid(&self, key: &str, message: impl std::fmt::Display) -> Diagnostic {
        invalid_at(self.block, key, message)
    }

    /// Reports something odd about `key` that does not stop the kind
    /// (shown by `ductd check`, an error under `--strict`).
    pub fn warn(&self, key: &str, message: impl std::fmt::Display) {
        let mut d = invalid_at(self.block, key, message);
        d.severity = crate::config::Severity::Warning;
        self.warnings.borrow_mut().push(d);
    }

    /// The option `key`, a number of seconds, checked for sign and range
    /// (see [`crate::config::seconds`]) and made a [`Duration`].
    pub fn duration(&self, key: &str, value: f64, zero: Zero) -> Result<Duration, Diagnostic> {
        check_duration(value, zero).map_err(|m| self.invalid(key, m))
    }
}

pub(crate) fn invalid_at(block: &Block, key: &str, message: impl std::fmt::Display) -> Diagnostic {
    let mark = block
        .node
        .get(key)
        .map(|n| n.mark.clone())
        .unwrap_or_else(|| block.node.mark.clone());
    Diagnostic::error(mark, format!("{}.{key}: {message}", block.context))
}

/// Finds the executable for a plugin name in the given directories, or says
/// what it looked for.
pub type PluginLocate = fn(name: &str, dirs: &[&std::path::Path]) -> Result<std::path::PathBuf, String>;

/// The source that runs user plugins: used for every `source:` that names
/// no built-in (docs/writing-sources.md, *Exec plugins*).
#[derive(Clone, Copy)]
pub struct PluginSpec {
    pub spec: SourceSpec,
    pub locate: PluginLocate,
}

/// The built-in and user-added sources and outputs.
#[derive(Clone, Default)]
pub struct Registry {
    sources: Vec<SourceSpec>,
    outputs: Vec<OutputSpec>,
    plugins: Option<PluginSpec>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces, by name) a source kind.
    pub fn add_source(&mut self, spec: SourceSpec) -> &mut Self {
        self.sources.retain(|s| s.name != spec.name);
        self.sources.push(spec);
        self
    }

    /// Adds (or replaces, by name) an output kind.
    pub fn add_output(&mut self, spec: OutputSpec) -> &mut Self {
        self.outputs.retain(|s| s.name != spec.name);
        self.outputs.push(spec);
        self
    }

    /// The source called `name`; Tensor's `tensor.` names (Duct's former
    /// name) are accepted for `duct.`.
    pub fn source(&self, name: &str) -> Option<&SourceSpec> {
        let name = canonical_name(name);
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        let name = canonical_name(name);
        self.outputs.iter().find(|s| s.name == name)
    }

    /// Sets the source that runs user plugins.
    pub fn set_plugins(&mut self, plugins: PluginSpec) -> &mut Self {
        self.plugins = Some(plugins);
        self
    }

    pub fn plugins(&self) -> Option<&PluginSpec> {
        self.plugins.as_ref()
    }

    pub fn sources(&self) -> &[SourceSpec] {
        &self.sources
    }

    pub fn outputs(&self) -> &[OutputSpec] {
        &self.outputs
    }
}

/// Duct's name for a Tensor-era name: `tensor.X` became `duct.X`, except
/// Tensor's agent source `tensor.sources.Tensor`, which Duct renamed
/// `duct.sources.Duct`.
fn canonical_name(name: &str) -> std::borrow::Cow<'_, str> {
    match name.strip_prefix("tensor.") {
        Some("sources.Tensor") => "duct.sources.Duct".into(),
        Some(rest) => format!("duct.{rest}").into(),
        None => name.into(),
    }
}

#[cfg(test)]
mod canonical_name_tests {
    use super::canonical_name;

    #[test]
    fn tensor_names_map_to_ducts() {
        assert_eq!(canonical_name("tensor.sources.Tensor"), "duct.sources.Duct");
        assert_eq!(
            canonical_name("tensor.sources.linux.basic.CPU"),
            "duct.sources.linux.basic.CPU"
        );
        assert_eq!(canonical_name("duct.sources.Duct"), "duct.sources.Duct");
    }
}
