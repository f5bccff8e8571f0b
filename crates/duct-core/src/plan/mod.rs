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

use std::sync::Arc;

use crate::config::{did_you_mean, Block, Config, Diagnostic, Diagnostics, Globals, Node};
use crate::registry::Registry;

use outputs::plan_output;
use sources::plan_source;

pub use outputs::{OutputRecipe, PlannedOutput};
pub use settings::{
    common_output_options, common_source_options, stagger_offset, OutputSettings, SourceSettings, StringList, WhenFull,
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
}
