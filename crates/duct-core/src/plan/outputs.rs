//! Planning one output block: its kind, common settings and a first
//! transport.

use std::cell::RefCell;
use std::sync::Arc;

use super::settings::{
    common_output_options, Buffer, BufferOptions, CommonOutputOptions, DiskBufferSettings, OutputSettings, WhenFull,
};
use super::{build_guarded, check_unknown_keys, required_name, Identity, OptionChecks, Suggestions};
use crate::config::seconds::Zero;
use crate::config::{did_you_mean, from_node_quiet, Block, Diagnostic, Diagnostics, Globals, Node};
use crate::output::Output;
use crate::registry::{OutputArgs, OutputSpec, Registry};

/// Everything needed to build an output's transport again (after a panic).
pub struct OutputRecipe {
    pub settings: Arc<OutputSettings>,
    pub spec: OutputSpec,
    pub block: Block,
    pub globals: Arc<Globals>,
}

impl OutputRecipe {
    /// A fresh transport.
    pub fn build(&self) -> Result<Box<dyn Output>, Diagnostic> {
        self.build_reporting(&RefCell::new(Vec::new()))
    }

    /// A fresh transport; the kind's warnings go to `warnings`.
    fn build_reporting(&self, warnings: &RefCell<Vec<Diagnostic>>) -> Result<Box<dyn Output>, Diagnostic> {
        (self.spec.build)(&OutputArgs {
            settings: &self.settings,
            globals: &self.globals,
            block: &self.block,
            owner: self.spec.name,
            warnings,
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

pub(super) fn plan_output(
    index: usize,
    block: &Block,
    globals: &Arc<Globals>,
    registry: &Registry,
    globals_identity: &str,
    suggestions: &Suggestions,
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
    check_unknown_keys(block, spec.name, &known, suggestions, diags);
    // As for sources: a bad common option does not hide the kind's own.
    let (common, common_ok) = match from_node_quiet::<CommonOutputOptions>(&block.node) {
        Ok(c) => (c, true),
        Err(e) => {
            diags.push(e.into_diagnostic(&block.context));
            let fallback = CommonOutputOptions {
                output: name.to_string(),
                name: block.node.get("name").and_then(Node::as_str).map(String::from),
                ..CommonOutputOptions::default()
            };
            (fallback, false)
        }
    };
    let mut checks = OptionChecks::new(block, diags);
    checks.ok = common_ok;
    let interval = checks.interval("interval", common.interval.unwrap_or(1.0));
    let maxrate = common.maxrate.unwrap_or(spec.default_maxrate);
    // Big enough that a fast destination is not held up by waiting for
    // the last acknowledgement of each batch (profiled: at 1,000 events a
    // batch, a Riemann output spent most of its time waiting).
    let maxsize = common.maxsize.unwrap_or(250_000);
    let buffer = match &common.buffer {
        None => Buffer::Memory,
        Some(options) => buffer_settings(options, block, &globals.base_path, &mut checks),
    };
    // A batch larger than the queue could never fill.
    let batch = common
        .batch
        .unwrap_or(if maxsize > 0 { maxsize.min(10_000) } else { 10_000 });
    // One batch in flight and the next one ready keep the destination
    // busy; more only costs memory. Never beyond maxsize, where dropping
    // would start first.
    // A disk buffer absorbs what the destination cannot take: listeners
    // are not held back for it unless `pushback` says so.
    let disk = matches!(buffer, Buffer::Disk(_));
    let pushback = common.pushback.unwrap_or_else(|| {
        if disk {
            return 0;
        }
        let p = batch.saturating_mul(2);
        if maxsize > 0 {
            p.min(maxsize)
        } else {
            p
        }
    });
    let backoff_max = checks.seconds("backoff_max", common.backoff_max.unwrap_or(30.0), Zero::Refused);
    if !(maxrate >= 0.0 && maxrate.is_finite()) {
        checks.fail(
            "maxrate",
            "must be zero (no limit) or a positive number of events per second",
        );
    }
    if batch == 0 {
        checks.fail("batch", "must be at least 1");
    }
    let when_full = match common.when_full.as_deref() {
        None => WhenFull::default(),
        Some(text) => WhenFull::parse(text).unwrap_or_else(|| {
            checks.fail("when_full", "must be `block` or `drop_oldest`");
            WhenFull::default()
        }),
    };
    let ok = checks.ok;
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
        when_full,
        metrics_only: spec.metrics_only,
        buffer,
    });
    let recipe = OutputRecipe {
        settings,
        spec,
        block: block.clone(),
        globals: globals.clone(),
    };
    let warnings = RefCell::new(Vec::new());
    let built = build_guarded(block, || recipe.build_reporting(&warnings));
    diags.extend(warnings.into_inner());
    match built {
        Ok(_) if !ok => None,
        Ok(instance) => Some(PlannedOutput {
            recipe: Arc::new(recipe),
            identity: Identity::of(&block.node, globals_identity),
            instance: Some(instance),
        }),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

/// The smallest `max_bytes`: a few segments of the smallest size.
const MIN_BUFFER_BYTES: u64 = 1 << 20;
/// The options of `buffer:`.
const BUFFER_KEYS: &[&str] = &["type", "path", "max_bytes", "sync_interval"];
/// `max_bytes` unless given.
const DEFAULT_BUFFER_BYTES: u64 = 1 << 30;

/// Checks `buffer:`; on error, a memory buffer (the block is refused).
fn buffer_settings(
    options: &BufferOptions,
    block: &Block,
    base_path: &std::path::Path,
    checks: &mut OptionChecks<'_>,
) -> Buffer {
    let node = block.node.get("buffer");
    for (key, _) in node.and_then(Node::as_map).unwrap_or_default() {
        let name = key.as_str().unwrap_or_default();
        if !BUFFER_KEYS.contains(&name) {
            checks.push(Diagnostic::error(
                Some(key.mark.clone()),
                format!(
                    "{}.buffer.{name}: unknown option{}",
                    block.context,
                    did_you_mean(name, BUFFER_KEYS.iter().copied())
                ),
            ));
        }
    }
    let mut fail = |key: &str, message: &str| {
        let mark = node.and_then(|b| b.get(key)).or(node).map(|n| n.mark.clone());
        checks.push(Diagnostic::error(
            mark,
            format!("{}.buffer.{key}: {message}", block.context),
        ));
    };
    match options.kind.as_str() {
        "memory" => {
            if options.path.is_some() || options.max_bytes.is_some() || options.sync_interval.is_some() {
                fail("type", "`path`, `max_bytes` and `sync_interval` are for `type: disk`");
            }
            return Buffer::Memory;
        }
        "disk" => {}
        _ => {
            fail("type", "must be `memory` or `disk`");
            return Buffer::Memory;
        }
    }
    let Some(path) = options.path.as_deref().filter(|p| !p.is_empty()) else {
        fail("path", "a disk buffer needs the directory to keep its files in");
        return Buffer::Memory;
    };
    let max_bytes = options.max_bytes.unwrap_or(DEFAULT_BUFFER_BYTES);
    if max_bytes < MIN_BUFFER_BYTES {
        fail("max_bytes", &format!("must be at least {MIN_BUFFER_BYTES} (1 MiB)"));
        return Buffer::Memory;
    }
    let sync_interval = options.sync_interval.unwrap_or(1.0);
    if !(sync_interval > 0.0 && sync_interval <= 3600.0) {
        fail("sync_interval", "must be a positive number of seconds, at most 3600");
        return Buffer::Memory;
    }
    // Relative to `base_path`, as the agent's other state files.
    let path = base_path.join(path);
    Buffer::Disk(DiskBufferSettings {
        path,
        max_bytes,
        sync_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{plan_text, OUTPUTS};

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

    #[test]
    fn when_full_blocks_by_default_and_is_checked() {
        use super::WhenFull;
        let when_full = |opts: &str| {
            plan_text(&format!("outputs:\n  - {{output: duct.outputs.test.Test{opts}}}\n"))
                .map(|p| p.outputs[0].settings().when_full)
        };
        assert_eq!(when_full("").unwrap(), WhenFull::Block);
        assert_eq!(when_full(", when_full: block").unwrap(), WhenFull::Block);
        assert_eq!(when_full(", when_full: drop_oldest").unwrap(), WhenFull::DropOldest);
        let err = when_full(", when_full: drop_newest").unwrap_err().to_string();
        assert!(err.contains("when_full") && err.contains("drop_oldest"), "{err}");
    }

    #[test]
    fn output_durations_are_range_checked() {
        let err = plan_text("outputs:\n  - {output: duct.outputs.test.Test, backoff_max: 1e20}\n")
            .err()
            .unwrap();
        assert!(err.to_string().contains("outputs[0].backoff_max: "), "{err}");
        let p = plan_text("outputs:\n  - {output: duct.outputs.test.Test, interval: 0}\n")
            .err()
            .unwrap();
        assert!(
            p.to_string().contains("outputs[0].interval: must be a positive number"),
            "{p}"
        );
        let p = plan_text("outputs:\n  - {output: duct.outputs.test.Test, interval: 1e-5}\n").unwrap();
        assert_eq!(p.outputs[0].settings().interval, 0.001);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }
}
