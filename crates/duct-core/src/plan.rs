//! From a loaded configuration to what the runtime starts: every source
//! and output block given its kind, typed settings, triggers and routes,
//! and an instance built (which validates the kind's own options).
//!
//! Planning is all of `ductd check`: it collects every problem in the
//! configuration, each with its position, before anything runs.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::{
    did_you_mean, field_names, from_node_quiet, Block, Config, Diagnostic, Diagnostics, Globals, Node, Style, Value,
};
use crate::expr::Trigger;
use crate::output::Output;
use crate::pipeline::{Route, SourceRules, TriggerRule};
use crate::registry::{invalid_at, OutputArgs, OutputSpec, Registry, SourceArgs, SourceSpec};
use crate::source::Source;

/// A source's resolved common options.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub service: String,
    /// The `source:` name as written.
    pub source: String,
    /// Position among all sources (after blueprint expansion).
    pub index: usize,
    /// Seconds between ticks.
    pub interval: f64,
    pub ttl: f32,
    pub hostname: String,
    pub tags: Vec<String>,
    pub attributes: Vec<(String, String)>,
    /// Log every tick's events.
    pub debug: bool,
    /// Recreate the source when it has produced nothing for 10 intervals.
    pub watchdog: bool,
    /// Seconds before the first tick; `None` uses the stagger rule.
    pub start_delay: Option<f64>,
    /// Seconds a tick may take before it is abandoned.
    pub timeout: f64,
    /// Extra directory to look for exec plugins in.
    pub path: Option<PathBuf>,
    /// Shared by every source of a configuration.
    pub base_path: Arc<std::path::Path>,
}

impl SourceSettings {
    /// Seconds before the first tick: `start_delay`, else
    /// `(index × stagger) mod interval` so that start-up is spread out but
    /// no source waits longer than one interval.
    pub fn first_tick_delay(&self, stagger: f64) -> f64 {
        match self.start_delay {
            Some(d) => d,
            None => stagger_offset(self.index, stagger, self.interval),
        }
    }

    /// Settings for a source made outside any configuration (tests, the
    /// examples' own harness).
    pub fn for_service(service: &str, hostname: &str) -> Self {
        SourceSettings {
            service: service.to_string(),
            source: String::new(),
            index: 0,
            interval: 60.0,
            ttl: 60.0,
            hostname: hostname.to_string(),
            tags: Vec::new(),
            attributes: Vec::new(),
            debug: false,
            watchdog: false,
            start_delay: None,
            timeout: 60.0,
            path: None,
            base_path: Arc::from(std::path::Path::new("/var/lib/duct")),
        }
    }
}

/// The stagger rule of SPEC §2.
pub fn stagger_offset(index: usize, stagger: f64, interval: f64) -> f64 {
    if interval <= 0.0 || stagger <= 0.0 {
        return 0.0;
    }
    (index as f64 * stagger) % interval
}

/// An output's resolved common options.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    /// The `output:` name as written.
    pub output: String,
    /// The routing name, if any.
    pub name: Option<String>,
    /// What logs and the agent's own metrics call it: the name, else the
    /// class name and position (`Logger#1`).
    pub label: String,
    pub index: usize,
    pub context: String,
    /// Seconds between flushes.
    pub interval: f64,
    /// Most events queued; beyond it the oldest are dropped.
    pub maxsize: usize,
    /// Most events per second delivered (0 = no limit).
    pub maxrate: f64,
    /// Drop queued events older than their TTL.
    pub expire: bool,
    /// Send events that have no metric.
    pub allow_nan: bool,
    pub debug: bool,
    /// Most events handed to the transport in one `send`.
    pub batch: usize,
    /// Queued events above which listener sources wait before taking more
    /// input, while the output is delivering; 0: never (see
    /// [`crate::telemetry::Backlog`]).
    pub pushback: usize,
    /// Longest wait between retries of a failing destination (s).
    pub backoff_max: f64,
    /// Log events are not queued (Riemann and other metric stores).
    pub metrics_only: bool,
}

/// Everything needed to build a source again (after a panic, for the
/// watchdog).
pub struct SourceRecipe {
    pub settings: Arc<SourceSettings>,
    pub spec: SourceSpec,
    pub block: Block,
    pub globals: Arc<Globals>,
}

impl SourceRecipe {
    /// A fresh instance.
    pub fn build(&self) -> Result<Box<dyn Source>, Diagnostic> {
        let warnings = RefCell::new(Vec::new());
        (self.spec.build)(&SourceArgs {
            settings: &self.settings,
            globals: &self.globals,
            block: &self.block,
            spec: &self.spec,
            warnings: &warnings,
        })
    }
}

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

/// A source ready to start.
pub struct PlannedSource {
    pub recipe: Arc<SourceRecipe>,
    pub rules: Arc<SourceRules>,
    /// Equal identities mean an unchanged source across a reload.
    pub identity: Identity,
    /// Built during planning; taken by the runtime when it starts.
    pub instance: Option<Box<dyn Source>>,
}

impl PlannedSource {
    pub fn settings(&self) -> &Arc<SourceSettings> {
        &self.recipe.settings
    }
}

/// Everything needed to build an output's transport again (after a panic).
pub struct OutputRecipe {
    pub settings: Arc<OutputSettings>,
    pub spec: OutputSpec,
    pub block: Block,
    pub globals: Arc<Globals>,
}

impl OutputRecipe {
    pub fn build(&self) -> Result<Box<dyn Output>, Diagnostic> {
        let warnings = RefCell::new(Vec::new());
        (self.spec.build)(&OutputArgs {
            settings: &self.settings,
            globals: &self.globals,
            block: &self.block,
            spec: &self.spec,
            warnings: &warnings,
        })
    }
}

/// An output ready to start.
pub struct PlannedOutput {
    pub recipe: Arc<OutputRecipe>,
    /// Equal identities mean an unchanged output across a reload.
    pub identity: Identity,
    /// Built during planning; taken by the runtime when it starts.
    pub instance: Option<Box<dyn Output>>,
}

impl PlannedOutput {
    pub fn settings(&self) -> &Arc<OutputSettings> {
        &self.recipe.settings
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

/// Common source options read with serde; `route`, `critical`, `warning`
/// and `attributes` are read from their nodes to keep positions.
#[derive(Debug, Deserialize)]
struct CommonSourceOptions {
    service: String,
    source: String,
    interval: Option<f64>,
    ttl: Option<f64>,
    hostname: Option<String>,
    tags: Option<StringList>,
    debug: Option<bool>,
    watchdog: Option<bool>,
    start_delay: Option<f64>,
    timeout: Option<f64>,
    path: Option<String>,
    use_ssh: Option<bool>,
}

/// Read from their nodes to keep positions.
const SOURCE_NODE_KEYS: &[&str] = &["route", "critical", "warning", "attributes"];

/// Per-source SSH overrides: accepted so Duct configurations load, refused
/// with `use_ssh: true` until remote checks exist.
const SSH_KEYS: &[&str] = &[
    "ssh_host",
    "ssh_username",
    "ssh_key",
    "ssh_keyfile",
    "ssh_keypass",
    "ssh_password",
    "ssh_port",
    "ssh_knownhosts_file",
];

#[derive(Debug, Deserialize)]
struct CommonOutputOptions {
    output: String,
    name: Option<String>,
    interval: Option<f64>,
    maxsize: Option<usize>,
    maxrate: Option<f64>,
    expire: Option<bool>,
    allow_nan: Option<bool>,
    debug: Option<bool>,
    batch: Option<usize>,
    pushback: Option<usize>,
    backoff_max: Option<f64>,
}

/// A comma-separated string or a list: `tags: "a, b"` or `tags: [a, b]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            One(String),
            Many(Vec<String>),
        }
        Ok(StringList(match Either::deserialize(d)? {
            Either::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect(),
            Either::Many(v) => v,
        }))
    }
}

/// The common source option names (for unknown-option checks and `ductd list`).
pub fn common_source_options() -> Vec<&'static str> {
    field_names::<CommonSourceOptions>()
        .iter()
        .chain(SOURCE_NODE_KEYS)
        .chain(SSH_KEYS)
        .copied()
        .collect()
}

/// The common output option names.
pub fn common_output_options() -> &'static [&'static str] {
    field_names::<CommonOutputOptions>()
}

/// Plans `config`: resolves every block against `registry`. `default_host`
/// is the machine's name for sources that set none.
pub fn plan(config: &Config, registry: &Registry, default_host: &str) -> Result<Plan, Diagnostics> {
    let mut diags = Diagnostics::default();
    diags.extend(config.warnings.iter().cloned());
    let globals = Arc::new(config.globals.clone());
    let globals_identity = format!("{:?}", config.globals);

    let mut outputs = Vec::new();
    for (index, block) in config.outputs.iter().enumerate() {
        if let Some(o) = plan_output(index, block, &globals, registry, &globals_identity, &mut diags) {
            outputs.push(o);
        }
    }
    let names: Vec<&str> = outputs
        .iter()
        .filter_map(|o: &PlannedOutput| o.settings().name.as_deref())
        .collect();
    let outputs_complete = outputs.len() == config.outputs.len();

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
        };
        if let Some(s) = plan_source(index, block, &ctx, &mut diags) {
            sources.push(s);
        }
    }
    if config.outputs.is_empty() && !config.sources.is_empty() {
        diags.push(Diagnostic::warning(
            None,
            "no outputs are configured: events will be discarded",
        ));
    }
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

/// Warns about keys that neither the common options nor the kind know.
fn check_unknown_keys(block: &Block, owner: &str, known: &[&str], diags: &mut Diagnostics) {
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
                    did_you_mean(name, known.iter().copied())
                ),
            ));
        }
    }
}

fn plan_source(index: usize, block: &Block, ctx: &PlanContext<'_>, diags: &mut Diagnostics) -> Option<PlannedSource> {
    let name = required_name(block, "source", diags)?;
    let spec = match ctx.registry.source(name) {
        Some(spec) => *spec,
        None => match locate_plugin(name, block, ctx) {
            Ok(spec) => spec,
            Err(looked) => {
                let at = block.node.get("source").map(|n| n.mark.clone());
                diags.push(Diagnostic::error(
                    at,
                    format!(
                        "{}.source: unknown source `{name}`{}{looked}",
                        block.context,
                        did_you_mean(name, ctx.registry.sources().iter().map(|s| s.name))
                    ),
                ));
                return None;
            }
        },
    };
    let mut known = common_source_options();
    known.extend((spec.options)());
    check_unknown_keys(block, spec.name, &known, diags);

    let common: CommonSourceOptions = match from_node_quiet(&block.node) {
        Ok(c) => c,
        Err(e) => {
            diags.push(e.into_diagnostic(&block.context));
            return None;
        }
    };
    let g = ctx.globals;
    let interval = common.interval.unwrap_or(g.interval);
    let mut ok = true;
    let mut bad = |key: &str, msg: &str| {
        diags.push(invalid_at(block, key, msg));
        ok = false;
    };
    if !(interval > 0.0 && interval.is_finite()) {
        bad("interval", "must be a positive number of seconds");
    }
    let ttl = common.ttl.unwrap_or(g.ttl);
    if !(ttl >= 0.0 && ttl.is_finite()) {
        bad("ttl", "must be zero or a positive number of seconds");
    }
    let timeout = common.timeout.unwrap_or(interval);
    if !(timeout > 0.0 && timeout.is_finite()) {
        bad("timeout", "must be a positive number of seconds");
    }
    if let Some(d) = common.start_delay {
        if !(d >= 0.0 && d.is_finite()) {
            bad("start_delay", "must be zero or a positive number of seconds");
        }
    }
    if common.use_ssh == Some(true) {
        bad(
            "use_ssh",
            "remote checks over SSH are not available in this version of ductd; run ductd on the host itself",
        );
    }
    let attributes = read_attributes(block, diags);
    let warning = read_triggers(block, "warning", diags);
    let critical = read_triggers(block, "critical", diags);
    let route = read_route(block, ctx, diags);
    let (Some(attributes), Some(warning), Some(critical), Some(route)) = (attributes, warning, critical, route) else {
        return None;
    };
    if !ok {
        return None;
    }

    let settings = Arc::new(SourceSettings {
        service: common.service.clone(),
        source: common.source.clone(),
        index,
        interval,
        ttl: ttl as f32,
        hostname: common
            .hostname
            .clone()
            .or_else(|| g.hostname.clone())
            .unwrap_or_else(|| ctx.default_host.to_string()),
        tags: common.tags.map(|t| t.0).unwrap_or_default(),
        attributes,
        debug: common.debug.unwrap_or(g.debug),
        watchdog: common.watchdog.unwrap_or(false),
        start_delay: common.start_delay,
        timeout,
        path: common.path.map(PathBuf::from),
        base_path: ctx.base_path.clone(),
    });
    let rules = Arc::new(SourceRules {
        service: common.service,
        warning,
        critical,
        route,
        debug: settings.debug,
    });
    let mut planned = PlannedSource {
        recipe: Arc::new(SourceRecipe {
            settings,
            spec,
            block: block.clone(),
            globals: ctx.globals.clone(),
        }),
        rules,
        identity: Identity::of(&block.node, ctx.globals_identity),
        instance: None,
    };
    let warnings = RefCell::new(Vec::new());
    let built = (spec.build)(&SourceArgs {
        settings: &planned.recipe.settings,
        globals: ctx.globals,
        block,
        spec: &spec,
        warnings: &warnings,
    });
    diags.extend(warnings.into_inner());
    match built {
        Ok(instance) => {
            planned.instance = Some(instance);
            Some(planned)
        }
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

/// A name that is no built-in is a user plugin if one is found in the
/// source's `path` or in `base_path`; `Err` says where it looked. Duct's own
/// names (`duct.…`) are never plugins: a typo there is an unknown source.
fn locate_plugin(name: &str, block: &Block, ctx: &PlanContext<'_>) -> Result<SourceSpec, String> {
    let Some(plugins) = ctx.registry.plugins() else {
        return Err(String::new());
    };
    if name.starts_with("duct.") || name.starts_with("tensor.") {
        return Err(String::new());
    }
    let own = block.node.get("path").and_then(Node::as_str).map(std::path::Path::new);
    let dirs: Vec<&std::path::Path> = own.into_iter().chain([ctx.globals.base_path.as_path()]).collect();
    (plugins.locate)(name, &dirs)
        .map(|_| plugins.spec)
        .map_err(|looked| format!("; no plugin found either ({looked})"))
}

fn read_attributes(block: &Block, diags: &mut Diagnostics) -> Option<Vec<(String, String)>> {
    let Some(node) = block.node.get("attributes") else {
        return Some(Vec::new());
    };
    if node.is_null() {
        return Some(Vec::new());
    }
    let Some(entries) = node.as_map() else {
        diags.push(Diagnostic::error(
            node.mark.clone(),
            format!(
                "{}.attributes: expected a map of names to values, found {}",
                block.context,
                node.describe()
            ),
        ));
        return None;
    };
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match (k.as_str(), scalar_text(v)) {
            (Some(k), Some(v)) => out.push((k.to_string(), v)),
            _ => {
                diags.push(Diagnostic::error(
                    v.mark.clone(),
                    format!(
                        "{}.attributes: values must be strings, found {}",
                        block.context,
                        v.describe()
                    ),
                ));
                return None;
            }
        }
    }
    Some(out)
}

fn scalar_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Scalar(s, _) => Some(s.clone()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

/// `critical: {regex: expression}`: each regex must match the whole
/// service name; each expression is parsed now.
fn read_triggers(block: &Block, key: &str, diags: &mut Diagnostics) -> Option<Vec<TriggerRule>> {
    let Some(node) = block.node.get(key) else {
        return Some(Vec::new());
    };
    if node.is_null() {
        return Some(Vec::new());
    }
    let Some(entries) = node.as_map() else {
        diags.push(Diagnostic::error(
            node.mark.clone(),
            format!(
                "{}.{key}: expected a map of service patterns to expressions (e.g. `cpu: \"> 0.9\"`), found {}",
                block.context,
                node.describe()
            ),
        ));
        return None;
    };
    let mut rules = Vec::new();
    let mut ok = true;
    for (k, v) in entries {
        let pattern = k.as_str().unwrap_or_default();
        let regex = match regex::Regex::new(&format!("^(?:{pattern})$")) {
            Ok(r) => Some(r),
            Err(e) => {
                diags.push(Diagnostic::error(
                    k.mark.clone(),
                    format!(
                        "{}.{key}: `{pattern}` is not a valid regular expression: {}",
                        block.context,
                        first_line(&e.to_string())
                    ),
                ));
                ok = false;
                None
            }
        };
        let Some(text) = scalar_text(v) else {
            diags.push(Diagnostic::error(
                v.mark.clone(),
                format!(
                    "{}.{key}.{pattern}: expected an expression such as \"> 0.5\", found {}",
                    block.context,
                    v.describe()
                ),
            ));
            ok = false;
            continue;
        };
        match Trigger::parse(&text) {
            Ok(trigger) => {
                if let Some(regex) = regex {
                    rules.push(TriggerRule {
                        pattern: regex,
                        trigger,
                    });
                }
            }
            Err(e) => {
                let quoted = matches!(v.value, Value::Scalar(_, Style::Quoted));
                diags.push(Diagnostic::error(
                    v.mark.shifted(e.offset + usize::from(quoted)),
                    format!(
                        "{}.{key}.{pattern}: bad expression `{text}`: {}",
                        block.context, e.message
                    ),
                ));
                ok = false;
            }
        }
    }
    ok.then_some(rules)
}

fn first_line(s: &str) -> String {
    // The regex crate's messages draw a multi-line picture; the last line
    // says what is wrong.
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

/// `route: name`, `route: [a, b]`, `route: "*"`; else `default_route`,
/// else every output.
fn read_route(block: &Block, ctx: &PlanContext<'_>, diags: &mut Diagnostics) -> Option<Route> {
    let Some(node) = block.node.get("route") else {
        return Some(match &ctx.globals.default_route {
            Some(name) => Route::Named(vec![name.clone()]),
            None => Route::All,
        });
    };
    let items: Vec<&Node> = match &node.value {
        Value::Null => return Some(Route::All),
        Value::Scalar(..) => vec![node],
        Value::Seq(items) => items.iter().collect(),
        Value::Map(_) => {
            diags.push(Diagnostic::error(
                node.mark.clone(),
                format!(
                    "{}.route: expected an output name or a list of names, found a map",
                    block.context
                ),
            ));
            return None;
        }
    };
    let mut names = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(name) = item.as_str() else {
            diags.push(Diagnostic::error(
                item.mark.clone(),
                format!(
                    "{}.route: expected an output name, found {}",
                    block.context,
                    item.describe()
                ),
            ));
            ok = false;
            continue;
        };
        if name == "*" {
            return ok.then_some(Route::All);
        }
        if ctx.outputs_complete && !ctx.output_names.contains(&name) {
            let known = if ctx.output_names.is_empty() {
                " (no output has a `name`)".to_string()
            } else {
                did_you_mean(name, ctx.output_names.iter().copied())
            };
            diags.push(Diagnostic::error(
                item.mark.clone(),
                format!("{}.route: no output is named `{name}`{known}", block.context),
            ));
            ok = false;
            continue;
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    ok.then_some(Route::Named(names))
}

fn plan_output(
    index: usize,
    block: &Block,
    globals: &Arc<Globals>,
    registry: &Registry,
    globals_identity: &str,
    diags: &mut Diagnostics,
) -> Option<PlannedOutput> {
    let name = required_name(block, "output", diags)?;
    let Some(spec) = registry.output(name).copied() else {
        let at = block.node.get("output").map(|n| n.mark.clone());
        diags.push(Diagnostic::error(
            at,
            format!(
                "{}.output: unknown output `{name}`{}",
                block.context,
                did_you_mean(name, registry.outputs().iter().map(|s| s.name))
            ),
        ));
        return None;
    };
    let known: Vec<&str> = common_output_options()
        .iter()
        .chain((spec.options)())
        .copied()
        .collect();
    check_unknown_keys(block, spec.name, &known, diags);
    let common: CommonOutputOptions = match from_node_quiet(&block.node) {
        Ok(c) => c,
        Err(e) => {
            diags.push(e.into_diagnostic(&block.context));
            return None;
        }
    };
    let interval = common.interval.unwrap_or(1.0);
    let maxrate = common.maxrate.unwrap_or(0.0);
    // Big enough that a fast destination is not held up by waiting for
    // the last acknowledgement of each batch (profiled: at 1,000 events a
    // batch, a Riemann output spent most of its time waiting).
    let maxsize = common.maxsize.unwrap_or(250_000);
    // A batch larger than the queue could never fill.
    let batch = common
        .batch
        .unwrap_or(if maxsize > 0 { maxsize.min(10_000) } else { 10_000 });
    // One batch in flight and the next one ready keep the destination
    // busy; more only costs memory. Never beyond maxsize, where dropping
    // would start first.
    let pushback = common.pushback.unwrap_or_else(|| {
        let p = batch.saturating_mul(2);
        if maxsize > 0 {
            p.min(maxsize)
        } else {
            p
        }
    });
    let backoff_max = common.backoff_max.unwrap_or(30.0);
    let mut ok = true;
    let mut bad = |key: &str, msg: &str| {
        diags.push(invalid_at(block, key, msg));
        ok = false;
    };
    if !(interval > 0.0 && interval.is_finite()) {
        bad("interval", "must be a positive number of seconds");
    }
    if !(maxrate >= 0.0 && maxrate.is_finite()) {
        bad(
            "maxrate",
            "must be zero (no limit) or a positive number of events per second",
        );
    }
    if batch == 0 {
        bad("batch", "must be at least 1");
    }
    if !(backoff_max > 0.0 && backoff_max.is_finite()) {
        bad("backoff_max", "must be a positive number of seconds");
    }
    if !ok {
        return None;
    }
    let short = spec.name.rsplit('.').next().unwrap_or(spec.name);
    let settings = Arc::new(OutputSettings {
        output: common.output,
        label: common.name.clone().unwrap_or_else(|| format!("{short}#{index}")),
        name: common.name,
        index,
        context: block.context.clone(),
        interval,
        maxsize,
        maxrate,
        expire: common.expire.unwrap_or(false),
        allow_nan: common.allow_nan.unwrap_or(true),
        debug: common.debug.unwrap_or(globals.debug),
        batch,
        pushback,
        backoff_max,
        metrics_only: spec.metrics_only,
    });
    let warnings = RefCell::new(Vec::new());
    let built = (spec.build)(&OutputArgs {
        settings: &settings,
        globals,
        block,
        spec: &spec,
        warnings: &warnings,
    });
    diags.extend(warnings.into_inner());
    match built {
        Ok(instance) => Some(PlannedOutput {
            recipe: Arc::new(OutputRecipe {
                settings,
                spec,
                block: block.clone(),
                globals: globals.clone(),
            }),
            identity: Identity::of(&block.node, globals_identity),
            instance: Some(instance),
        }),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Batch, OutputError};
    use crate::source::{BoxFuture, Poll, SourceContext};

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct TestOptions {
        level: i32,
    }

    struct TestSource;

    impl Source for TestSource {
        fn get<'a>(&'a mut self, _: &'a SourceContext) -> Poll<'a> {
            Box::pin(std::future::ready(Ok(Vec::new())))
        }
    }

    struct TestOutput;

    impl Output for TestOutput {
        fn send<'a>(&'a mut self, _: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
            Box::pin(std::future::ready(Ok(())))
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.add_source(SourceSpec::new::<TestOptions>(
            "duct.sources.test.Test",
            "test",
            &[],
            |args| {
                let o: TestOptions = args.options()?;
                if o.level < 0 {
                    return Err(args.invalid("level", "must not be negative"));
                }
                Ok(Box::new(TestSource))
            },
        ));
        r.add_output(OutputSpec::new::<crate::registry::NoOptions>(
            "duct.outputs.test.Test",
            "test",
            false,
            |_| Ok(Box::new(TestOutput)),
        ));
        r
    }

    fn plan_text(text: &str) -> Result<Plan, Diagnostics> {
        let config = Config::load_embedded(text, &|_| None)?;
        plan(&config, &registry(), "machine")
    }

    const OUTPUTS: &str = "outputs:\n  - {output: duct.outputs.test.Test, name: a}\n  - {output: duct.outputs.test.Test, name: b}\n  - {output: duct.outputs.test.Test}\n";

    fn route_of(extra: &str, source: &str) -> Route {
        let text = format!("{OUTPUTS}{extra}sources:\n  - {{service: s, source: duct.sources.test.Test{source}}}\n");
        let p = plan_text(&text).unwrap_or_else(|d| panic!("{d}"));
        p.sources[0].rules.route.clone()
    }

    #[test]
    fn routes_resolve_names_lists_star_and_defaults() {
        assert_eq!(route_of("", ", route: a"), Route::Named(vec!["a".into()]));
        assert_eq!(
            route_of("", ", route: [b, a, b]"),
            Route::Named(vec!["b".into(), "a".into()])
        );
        assert_eq!(route_of("", ", route: \"*\""), Route::All);
        assert_eq!(route_of("", ""), Route::All);
        assert_eq!(route_of("default_route: b\n", ""), Route::Named(vec!["b".into()]));
        assert_eq!(
            route_of("default_route: b\n", ", route: a"),
            Route::Named(vec!["a".into()])
        );
    }

    #[test]
    fn a_route_to_a_missing_output_is_a_located_error() {
        let text =
            format!("{OUTPUTS}sources:\n  - service: s\n    source: duct.sources.test.Test\n    route: [a, c]\n");
        let err = plan_text(&text).err().unwrap();
        let e = err.errors().next().unwrap();
        assert!(e.message.contains("no output is named `c`"), "{}", e.message);
        let m = e.mark.as_ref().unwrap();
        assert_eq!((m.line, m.col), (8, 16));
        let err = plan_text(&format!("{OUTPUTS}default_route: nope\n")).err().unwrap();
        assert!(
            err.to_string().contains("default_route: no output is named `nope`"),
            "{err}"
        );
    }

    #[test]
    fn stagger_spreads_starts_within_one_interval() {
        assert_eq!(stagger_offset(0, 0.2, 60.0), 0.0);
        assert!((stagger_offset(5, 0.2, 60.0) - 1.0).abs() < 1e-9);
        // Duct would wait 2000 s for source 10,000; ductd wraps at the interval.
        let late = stagger_offset(10_000, 0.2, 60.0);
        assert!((0.0..60.0).contains(&late), "{late}");
        assert!((stagger_offset(3, 0.2, 0.5) - 0.1).abs() < 1e-9);
        assert_eq!(stagger_offset(7, 0.0, 10.0), 0.0);
    }

    #[test]
    fn common_options_resolve_with_global_defaults() {
        let p = plan_text(
            "interval: 5\nttl: 9\nhostname: global-host\nsources:\n  - {service: a, source: duct.sources.test.Test, tags: \"x, y ,z\"}\n  - {service: b, source: duct.sources.test.Test, interval: 0.5, hostname: own, tags: [p], start_delay: 2, timeout: 0.25}\n",
        )
        .unwrap();
        let a = p.sources[0].settings();
        assert_eq!(a.interval, 5.0);
        assert_eq!(a.timeout, 5.0, "timeout defaults to the interval");
        assert_eq!(a.ttl, 9.0);
        assert_eq!(a.hostname, "global-host");
        assert_eq!(a.tags, ["x", "y", "z"]);
        assert_eq!(a.first_tick_delay(0.2), 0.0);
        let b = p.sources[1].settings();
        assert_eq!((b.interval, b.timeout, b.hostname.as_str()), (0.5, 0.25, "own"));
        assert_eq!(b.first_tick_delay(0.2), 2.0);
        let p = plan_text("sources:\n  - {service: a, source: duct.sources.test.Test}\n").unwrap();
        assert_eq!(p.sources[0].settings().hostname, "machine");
    }

    #[test]
    fn kind_options_are_typed_and_validated_by_the_kind() {
        let err = plan_text("sources:\n  - {service: a, source: duct.sources.test.Test, level: -1}\n")
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("sources[0].level: must not be negative"),
            "{err}"
        );
        let p = plan_text("sources:\n  - {service: a, source: tensor.sources.test.Test, levle: 1}\n").unwrap();
        let w = &p.warnings[0];
        assert!(w.message.contains("unknown option `levle`"), "{}", w.message);
        assert!(w.message.contains("did you mean `level`?"), "{}", w.message);
    }

    #[test]
    fn identities_change_only_with_the_block() {
        let a = plan_text("sources:\n  - {service: a, source: duct.sources.test.Test}\n").unwrap();
        let b = plan_text("# moved\n\nsources:\n  - service: a\n    source: duct.sources.test.Test\n").unwrap();
        let c = plan_text("sources:\n  - {service: a, source: duct.sources.test.Test, level: 2}\n").unwrap();
        assert_eq!(a.sources[0].identity, b.sources[0].identity);
        assert_ne!(a.sources[0].identity, c.sources[0].identity);
    }

    #[test]
    fn output_settings_have_ducts_defaults() {
        let p = plan_text(OUTPUTS).unwrap();
        let o = p.outputs[2].settings();
        assert_eq!(o.interval, 1.0);
        assert_eq!(o.maxsize, 250_000);
        assert_eq!(o.maxrate, 0.0);
        assert!(o.allow_nan && !o.expire);
        assert_eq!(o.label, "Test#2");
        assert_eq!(p.outputs[0].settings().label, "a");
        assert_eq!((o.batch, o.pushback), (10_000, 20_000));
    }

    #[test]
    fn batch_and_pushback_stay_within_maxsize() {
        let batch_pushback = |opts: &str| {
            let p = plan_text(&format!("outputs:\n  - {{output: duct.outputs.test.Test{opts}}}\n")).unwrap();
            let s = p.outputs[0].settings().clone();
            (s.batch, s.pushback)
        };
        assert_eq!(batch_pushback(", maxsize: 3000"), (3000, 3000));
        assert_eq!(batch_pushback(", maxsize: 0"), (10_000, 20_000));
        assert_eq!(batch_pushback(", batch: 100"), (100, 200));
        assert_eq!(batch_pushback(", batch: 100, pushback: 0"), (100, 0));
    }
}
