//! From a loaded configuration to what the runtime starts: every source
//! and output block given its kind, typed settings, triggers and routes,
//! and an instance built (which validates the kind's own options).
//!
//! Planning is all of `ductd check`: it collects every problem in the
//! configuration, each with its position, before anything runs.
//!
//! [`settings`] holds the common options every source and output shares,
//! [`sources`] and [`outputs`] plan one block each, and [`rules`] reads a
//! source's triggers, routes and attributes.

mod outputs;
mod rules;
mod settings;
mod sources;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::seconds::{check_interval, check_seconds, Zero};
use crate::config::{did_you_mean, Block, Config, Diagnostic, Diagnostics, Globals, Mark, Node, Severity};
use crate::registry::{invalid_at, Registry};

use outputs::plan_output;
use sources::plan_source;

pub use outputs::{OutputRecipe, PlannedOutput};
pub use settings::{
    common_output_options, common_source_options, stagger_offset, Buffer, DiskBufferSettings, OutputSettings,
    SourceSettings, SshTarget, StringList, WhenFull,
};
pub use sources::{PlannedSource, SourceRecipe};

/// What a block is, position aside: its options and the global settings it
/// inherits, hashed. Two blocks with the same identity run the same way, so
/// a reload leaves them running. A hash rather than the text because a
/// poller of many thousand sources keeps one per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity(u128);

impl Identity {
    fn of(node: &Node, globals: &str) -> Identity {
        use std::hash::{Hash, Hasher};
        let text = node.canonical();
        // Two differently keyed SipHashes: 128 bits, so that two different
        // blocks never pass for the same one.
        let half = |key: u64| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            text.hash(&mut h);
            globals.hash(&mut h);
            h.finish()
        };
        Identity((u128::from(half(0x9e37_79b9_7f4a_7c15)) << 64) | u128::from(half(0xc2b2_ae3d_27d4_eb4f)))
    }
}

/// Everything the configuration asks for.
pub struct Plan {
    pub globals: Arc<Globals>,
    pub sources: Vec<PlannedSource>,
    pub outputs: Vec<PlannedOutput>,
    /// Non-fatal problems (unknown options, missing include directories).
    pub warnings: Vec<Diagnostic>,
}

/// Plans `config`: resolves every block against `registry`. `default_host`
/// is the machine's name for sources that set none.
pub fn plan(config: &Config, registry: &Registry, default_host: &str) -> Result<Plan, Diagnostics> {
    let mut diags = Diagnostics::default();
    diags.extend(config.problems.iter().cloned());
    let globals = Arc::new(config.globals.clone());
    let globals_identity = format!("{:?}", config.globals);

    let mut alike = Alike::default();
    let suggestions = Suggestions::default();
    let mut outputs = Vec::new();
    for (index, block) in config.outputs.iter().enumerate() {
        let from = diags.0.len();
        if let Some(o) = plan_output(
            index,
            block,
            &globals,
            registry,
            &globals_identity,
            &suggestions,
            &mut diags,
        ) {
            if let Some(d) = shared_buffer(&outputs, &o, block) {
                diags.push(d);
            } else {
                outputs.push(o);
            }
        }
        alike.fold(&mut diags, from, block);
    }
    // Routes are checked against the names written, so that an output with
    // a problem of its own still counts as present.
    let names: Vec<&str> = config
        .outputs
        .iter()
        .filter_map(|b| b.node.get("name").and_then(Node::as_str))
        .collect();
    let outputs_complete = config
        .outputs
        .iter()
        .all(|b| b.node.get("name").is_none_or(|n| n.as_str().is_some()));

    if let Some(default) = &globals.default_route {
        if outputs_complete && !names.contains(&default.as_str()) {
            diags.push(Diagnostic::error(
                config.mark_of("default_route"),
                format!(
                    "default_route: no output is named `{default}`{}",
                    did_you_mean(default, names.iter().copied())
                ),
            ));
        }
    }

    let mut sources = Vec::new();
    let base_path: Arc<std::path::Path> = Arc::from(globals.base_path.as_path());
    for (index, block) in config.sources.iter().enumerate() {
        let ctx = PlanContext {
            globals: &globals,
            base_path: base_path.clone(),
            registry,
            default_host,
            output_names: &names,
            outputs_complete,
            globals_identity: &globals_identity,
            suggestions: &suggestions,
        };
        let from = diags.0.len();
        if let Some(s) = plan_source(index, block, &ctx, &mut diags) {
            sources.push(s);
        }
        alike.fold(&mut diags, from, block);
    }
    alike.finish(&mut diags);
    if config.outputs.is_empty() && !config.sources.is_empty() {
        diags.push(Diagnostic::warning(
            None,
            "no outputs are configured: events will be discarded",
        ));
    }
    let diags = without_repeats(diags, &config.problems);
    if diags.has_errors() {
        return Err(diags);
    }
    Ok(Plan {
        globals,
        sources,
        outputs,
        warnings: diags.0,
    })
}

/// Drops what would be said twice: a planning error about a value loading
/// already found wrong (a value left as `${PORT}` by a failed interpolation
/// is not also "not a number"; loading points inside the value, at the
/// `${`, planning at its start, so an echo is on the same line, at or before
/// the load error), and a problem found both by the planner and by the kind
/// (a kind's own `timeout` check of the common option).
fn without_repeats(diags: Diagnostics, loaded: &[Diagnostic]) -> Diagnostics {
    let load_errors: Vec<&Mark> = loaded
        .iter()
        .filter(|d| d.is_error())
        .filter_map(|d| d.mark.as_ref())
        .collect();
    let echoes = |m: &Mark| {
        load_errors
            .iter()
            .any(|l| l.file == m.file && l.line == m.line && m.col <= l.col)
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(diags.0.len());
    for (i, d) in diags.0.into_iter().enumerate() {
        let planned = i >= loaded.len();
        if planned && d.is_error() && d.mark.as_ref().is_some_and(echoes) {
            continue;
        }
        if seen.insert((d.mark.clone(), d.message.clone())) {
            out.push(d);
        }
    }
    Diagnostics(out)
}

/// Folds the problems that many blocks share into one: every source a
/// blueprint makes from one toolbox source has the same unknown option or
/// bad value, at the same position, and 100,000 copies of it would bury
/// everything else (and take minutes to print). The first is kept, saying
/// how many more blocks have it.
#[derive(Default)]
struct Alike {
    /// Position, severity and message without the block's name, to the
    /// index of the kept diagnostic.
    first: HashMap<(Option<Mark>, bool, String), usize>,
    /// Index of a kept diagnostic to the number of blocks folded into it.
    more: HashMap<usize, usize>,
}

impl Alike {
    /// Folds what planning `block` added to `diags` from index `from` on.
    fn fold(&mut self, diags: &mut Diagnostics, from: usize, block: &Block) {
        let added: Vec<Diagnostic> = diags.0.drain(from..).collect();
        for d in added {
            let Some(rest) = d.message.strip_prefix(block.context.as_str()) else {
                diags.push(d);
                continue;
            };
            let key = (d.mark.clone(), d.is_error(), rest.to_string());
            match self.first.get(&key) {
                Some(&kept) => *self.more.entry(kept).or_default() += 1,
                None => {
                    self.first.insert(key, diags.0.len());
                    diags.push(d);
                }
            }
        }
    }

    fn finish(self, diags: &mut Diagnostics) {
        for (kept, more) in self.more {
            let noun = if more == 1 { "block" } else { "blocks" };
            diags.0[kept]
                .message
                .push_str(&format!(" (and the same in {more} more {noun})"));
        }
    }
}

struct PlanContext<'a> {
    globals: &'a Arc<Globals>,
    /// `base_path`, once for every source.
    base_path: Arc<std::path::Path>,
    registry: &'a Registry,
    default_host: &'a str,
    output_names: &'a [&'a str],
    /// False when some output failed to plan: routes to its name would be
    /// reported as missing when the real problem is elsewhere.
    outputs_complete: bool,
    globals_identity: &'a str,
    suggestions: &'a Suggestions,
}

fn required_name<'a>(block: &'a Block, key: &str, diags: &mut Diagnostics) -> Option<&'a str> {
    match block.node.get(key) {
        Some(n) => match n.as_str() {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                diags.push(Diagnostic::error(
                    n.mark.clone(),
                    format!("{}.{key}: expected a name, found {}", block.context, n.describe()),
                ));
                None
            }
        },
        None => {
            diags.push(Diagnostic::error(
                block.node.mark.clone(),
                format!("{}: missing required option `{key}`", block.context),
            ));
            None
        }
    }
}

/// The problems of one block's common options, each located at its key:
/// the reading that sources and outputs share.
struct OptionChecks<'a> {
    block: &'a Block,
    diags: &'a mut Diagnostics,
    /// False once any error was found.
    ok: bool,
}

impl<'a> OptionChecks<'a> {
    fn new(block: &'a Block, diags: &'a mut Diagnostics) -> Self {
        OptionChecks { block, diags, ok: true }
    }

    fn fail(&mut self, key: &str, message: impl std::fmt::Display) {
        self.diags.push(invalid_at(self.block, key, message));
        self.ok = false;
    }

    /// An error found by the caller (of a nested option).
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
        self.ok = false;
    }

    fn warn(&mut self, key: &str, message: impl std::fmt::Display) {
        let mut d = invalid_at(self.block, key, message);
        d.severity = Severity::Warning;
        self.diags.push(d);
    }

    /// A number of seconds checked by [`check_seconds`]; on error a
    /// placeholder, so that the kind can still be built (and its own
    /// problems reported) on valid settings.
    fn seconds(&mut self, key: &str, value: f64, zero: Zero) -> f64 {
        check_seconds(value, zero).unwrap_or_else(|m| {
            self.fail(key, m);
            PLACEHOLDER_SECONDS
        })
    }

    /// An interval, raised to the floor with a warning if shorter.
    fn interval(&mut self, key: &str, value: f64) -> f64 {
        match check_interval(value) {
            Ok((used, warning)) => {
                if let Some(w) = warning {
                    self.warn(key, w);
                }
                used
            }
            Err(m) => {
                self.fail(key, m);
                PLACEHOLDER_SECONDS
            }
        }
    }
}

/// An error if `o`'s disk buffer directory is already another output's:
/// two queues in one directory would delete each other's segments.
fn shared_buffer(outputs: &[PlannedOutput], o: &PlannedOutput, block: &Block) -> Option<Diagnostic> {
    let Buffer::Disk(mine) = &o.settings().buffer else {
        return None;
    };
    let other = outputs
        .iter()
        .find(|p| matches!(&p.settings().buffer, Buffer::Disk(d) if d.path == mine.path))?;
    let mark = block.node.get("buffer").map(|n| n.mark.clone());
    Some(Diagnostic::error(
        mark,
        format!(
            "{}.buffer.path: {} is already the disk buffer of {} ({})",
            block.context,
            mine.path.display(),
            other.settings().label,
            other.settings().context
        ),
    ))
}

/// What a refused duration is replaced with while the rest of its block is
/// checked: any valid value would do.
const PLACEHOLDER_SECONDS: f64 = 1.0;

/// Runs a kind's constructor, turning a panic into an error of its block:
/// a constructor must refuse bad options, but one that does not must not
/// take `ductd check` (or a reload) down with it.
fn build_guarded<T>(block: &Block, build: impl FnOnce() -> Result<T, Diagnostic>) -> Result<T, Diagnostic> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)).unwrap_or_else(|payload| {
        Err(Diagnostic::error(
            block.node.mark.clone(),
            format!(
                "{}: the constructor panicked ({}); this is a bug in ductd, please report it with this block",
                block.context,
                crate::source::panic_message(payload.as_ref())
            ),
        ))
    })
}

/// "Did you mean" for unknown options, by kind and option: the sources a
/// blueprint makes share their unknown options, and finding the closest
/// known name for each of 100,000 copies took minutes.
#[derive(Default)]
struct Suggestions(RefCell<HashMap<(&'static str, String), String>>);

impl Suggestions {
    fn for_option(&self, owner: &'static str, name: &str, known: &[&str]) -> String {
        let key = (owner, name.to_string());
        if let Some(s) = self.0.borrow().get(&key) {
            return s.clone();
        }
        let s = did_you_mean(name, known.iter().copied());
        self.0.borrow_mut().insert(key, s.clone());
        s
    }
}

/// Warns about keys that neither the common options nor the kind know.
fn check_unknown_keys(
    block: &Block,
    owner: &'static str,
    known: &[&str],
    suggestions: &Suggestions,
    diags: &mut Diagnostics,
) {
    let Some(entries) = block.node.as_map() else {
        return;
    };
    for (key, _) in entries {
        let name = key.as_str().unwrap_or_default();
        if !known.contains(&name) {
            diags.push(Diagnostic::warning(
                key.mark.clone(),
                format!(
                    "{}: unknown option `{name}` for {owner}{}",
                    block.context,
                    suggestions.for_option(owner, name, known)
                ),
            ));
        }
    }
}

#[cfg(test)]
mod testing;

#[cfg(test)]
mod tests {
    use super::testing::plan_text;

    #[test]
    fn identities_change_only_with_the_block() {
        let a = plan_text("sources:\n  - {service: a, source: duct.sources.test.Test}\n").unwrap();
        let b = plan_text("# moved\n\nsources:\n  - service: a\n    source: duct.sources.test.Test\n").unwrap();
        let c = plan_text("sources:\n  - {service: a, source: duct.sources.test.Test, level: 2}\n").unwrap();
        assert_eq!(a.sources[0].identity, b.sources[0].identity);
        assert_ne!(a.sources[0].identity, c.sources[0].identity);
    }

    #[test]
    fn every_problem_is_reported_however_many_there_are() {
        // A bad global, a bad expression and a route error in one source, a
        // kind's own error in that source and in another, a bad common
        // option hiding nothing: all are reported.
        let text = "\
ttl: soon
outputs:
  - {output: duct.outputs.test.Test, name: a, interval: often}
sources:
  - service: s
    source: duct.sources.test.Test
    level: -1
    critical:
      s: \"> 1 and\"
    route: [a, nope]
  - {service: t, source: duct.sources.test.Test, level: -2, interval: soon}
  - {service: u, source: duct.sources.test.Test, timeout: -1, route: a}
";
        let err = plan_text(text).err().unwrap();
        let messages: Vec<&str> = err.errors().map(|d| d.message.as_str()).collect();
        for expected in [
            "ttl: expected a number",
            "outputs[0].interval: expected a number",
            "sources[0].level: must not be negative",
            "sources[0].critical.s: bad expression",
            "sources[0].route: no output is named `nope`",
            "sources[1].interval: expected a number",
            "sources[1].level: must not be negative",
            "sources[2].timeout: must be a positive number",
        ] {
            assert!(
                messages.iter().any(|m| m.starts_with(expected)),
                "{expected} missing from {messages:#?}"
            );
        }
        assert_eq!(messages.len(), 8, "{messages:#?}");
    }

    #[test]
    fn a_failed_interpolation_is_reported_once() {
        let err = plan_text("outputs:\n  - {output: duct.outputs.test.Test, maxsize: \"${NOPE}\"}\n")
            .err()
            .unwrap();
        assert_eq!(err.errors().count(), 1, "{err}");
        assert!(err.to_string().contains("NOPE is not set"), "{err}");
    }

    #[test]
    fn problems_shared_by_many_blueprint_sources_are_said_once() {
        let text = "\
toolbox:
  t:
    sources:
      - {service: s, source: duct.sources.test.Test, levle: 1}
blueprint:
  - toolbox: t
    sets:
      hostname: [a, b, c]
      level: [-1, -2]
";
        let err = plan_text(text).err().unwrap();
        let warnings: Vec<&str> = err
            .warnings()
            .map(|d| d.message.as_str())
            .filter(|m| m.contains("levle"))
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].ends_with("(and the same in 5 more blocks)"), "{warnings:?}");
        // Each level value is at its own position: two errors, each for
        // the three hosts.
        let errors: Vec<&str> = err.errors().map(|d| d.message.as_str()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors.iter().all(|e| e.contains(".level: must not be negative")),
            "{errors:?}"
        );
        assert!(
            errors.iter().all(|e| e.ends_with("(and the same in 2 more blocks)")),
            "{errors:?}"
        );
    }
}
