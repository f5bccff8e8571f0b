//! Planning one source block: its kind (built-in or plugin), common
//! settings, rules, and a first instance.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use super::rules::{read_attributes, read_route, read_triggers};
use super::settings::{common_source_options, CommonSourceOptions, SourceSettings, SshTarget};
use super::{build_guarded, check_unknown_keys, required_name, Identity, OptionChecks, PlanContext};
use crate::config::seconds::Zero;
use crate::config::{did_you_mean, from_node_quiet, Block, Diagnostic, Diagnostics, Globals, Node};
use crate::pipeline::{Route, SourceRules};
use crate::registry::{SourceArgs, SourceSpec};
use crate::source::Source;

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
        self.build_reporting(&RefCell::new(Vec::new()))
    }

    /// A fresh instance; the kind's warnings go to `warnings`.
    fn build_reporting(&self, warnings: &RefCell<Vec<Diagnostic>>) -> Result<Box<dyn Source>, Diagnostic> {
        (self.spec.build)(&SourceArgs {
            settings: &self.settings,
            globals: &self.globals,
            block: &self.block,
            owner: self.spec.name,
            warnings,
        })
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

pub(super) fn plan_source(
    index: usize,
    block: &Block,
    ctx: &PlanContext<'_>,
    diags: &mut Diagnostics,
) -> Option<PlannedSource> {
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
    check_unknown_keys(block, spec.name, &known, ctx.suggestions, diags);

    // A common option of the wrong type is reported, and the kind is still
    // built on the defaults so that its own problems are reported too.
    let (common, common_ok) = match from_node_quiet::<CommonSourceOptions>(&block.node) {
        Ok(c) => (c, true),
        Err(e) => {
            diags.push(e.into_diagnostic(&block.context));
            let service = block.node.get("service").and_then(Node::as_str).unwrap_or_default();
            let fallback = CommonSourceOptions {
                service: service.to_string(),
                source: name.to_string(),
                ..CommonSourceOptions::default()
            };
            (fallback, false)
        }
    };
    let g = ctx.globals;
    let mut checks = OptionChecks::new(block, diags);
    checks.ok = common_ok;
    let interval = checks.interval("interval", common.interval.unwrap_or(g.interval));
    let ttl = checks.seconds("ttl", common.ttl.unwrap_or(g.ttl), Zero::Allowed);
    // Unset, it is the interval, already checked.
    let timeout = common
        .timeout
        .map_or(interval, |t| checks.seconds("timeout", t, Zero::Refused));
    let start_delay = common
        .start_delay
        .map(|d| checks.seconds("start_delay", d, Zero::Allowed));
    let remote = if common.use_ssh == Some(true) {
        ssh_target(&common, &spec, ctx, &mut checks).map(Arc::new)
    } else {
        None
    };
    let ok = checks.ok;
    let attributes = read_attributes(block, diags);
    let warning = read_triggers(block, "warning", diags);
    let critical = read_triggers(block, "critical", diags);
    let route = read_route(block, ctx, diags);
    // Rules that failed are left empty for now: the kind is built anyway
    // so that `ductd check` reports its problems as well.
    let rules_ok = attributes.is_some() && warning.is_some() && critical.is_some() && route.is_some();

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
        attributes: attributes.unwrap_or_default(),
        debug: common.debug.unwrap_or(g.debug),
        watchdog: common.watchdog.unwrap_or(false),
        start_delay,
        timeout,
        path: common.path.map(PathBuf::from),
        base_path: ctx.base_path.clone(),
        remote,
    });
    let rules = Arc::new(SourceRules {
        service: common.service,
        warning: warning.unwrap_or_default(),
        critical: critical.unwrap_or_default(),
        route: route.unwrap_or(Route::All),
        debug: settings.debug,
    });
    let recipe = SourceRecipe {
        settings,
        spec,
        block: block.clone(),
        globals: ctx.globals.clone(),
    };
    let warnings = RefCell::new(Vec::new());
    let built = build_guarded(block, || recipe.build_reporting(&warnings));
    diags.extend(warnings.into_inner());
    match built {
        Ok(_) if !(ok && rules_ok) => None,
        Ok(instance) => Some(PlannedSource {
            recipe: Arc::new(recipe),
            rules,
            identity: Identity::of(&block.node, ctx.globals_identity),
            instance: Some(instance),
        }),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

/// The SSH login of a `use_ssh: true` source: its own `ssh_*` options over
/// the global ones. `None`, after an error, when the kind cannot run
/// remotely or no `ssh_host` is given.
fn ssh_target(
    common: &CommonSourceOptions,
    spec: &SourceSpec,
    ctx: &PlanContext<'_>,
    checks: &mut OptionChecks<'_>,
) -> Option<SshTarget> {
    if !spec.remote {
        let mut remote: Vec<&str> = ctx
            .registry
            .sources()
            .iter()
            .filter(|s| s.remote)
            .filter_map(|s| s.name.rsplit('.').next())
            .collect();
        remote.sort_unstable();
        remote.dedup();
        checks.fail(
            "use_ssh",
            format!(
                "`{}` cannot run over SSH: it does not read the host's files or run its commands; \
                 sources that can: {} (docs/remote-checks.md)",
                spec.name,
                remote.join(", ")
            ),
        );
        return None;
    }
    let Some(host) = common.ssh_host.clone().filter(|h| !h.trim().is_empty()) else {
        checks.fail("use_ssh", "`use_ssh: true` needs `ssh_host`, the host to log in to");
        return None;
    };
    let g = ctx.globals;
    let port = common.ssh_port.unwrap_or(g.ssh_port);
    if port == 0 {
        checks.fail("ssh_port", "must be a port number, 1 to 65535");
    }
    let or_global = |own: &Option<String>, global: &Option<String>| own.clone().or_else(|| global.clone());
    let knownhosts = or_global(&common.ssh_knownhosts_file, &g.ssh_knownhosts_file)
        .unwrap_or_else(|| "/var/lib/duct/known_hosts".into());
    Some(SshTarget {
        host,
        port,
        username: or_global(&common.ssh_username, &g.ssh_username),
        key: or_global(&common.ssh_key, &g.ssh_key),
        keyfile: or_global(&common.ssh_keyfile, &g.ssh_keyfile).map(PathBuf::from),
        keypass: or_global(&common.ssh_keypass, &g.ssh_keypass),
        password: or_global(&common.ssh_password, &g.ssh_password),
        knownhosts_file: PathBuf::from(knownhosts),
        accept_new: common.ssh_accept_new.unwrap_or(g.ssh_accept_new),
    })
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

#[cfg(test)]
mod tests {
    use super::super::testing::plan_text;

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
    fn ssh_options_resolve_per_source_over_global() {
        let p = plan_text(
            "ssh_username: ops\nssh_keyfile: /k\nssh_port: 2222\nsources:\n  - {service: a, source: duct.sources.test.Test, use_ssh: true, ssh_host: h1}\n  - {service: b, source: duct.sources.test.Test, use_ssh: true, ssh_host: h2, ssh_port: 22, ssh_username: root, ssh_password: pw, ssh_accept_new: true, ssh_knownhosts_file: /kh}\n  - {service: c, source: duct.sources.test.Test, use_ssh: false, ssh_host: h3}\n",
        )
        .unwrap();
        let a = p.sources[0].settings().remote.clone().expect("remote");
        assert_eq!(
            (a.host.as_str(), a.port, a.username.as_deref()),
            ("h1", 2222, Some("ops"))
        );
        assert_eq!(a.keyfile.as_deref(), Some(std::path::Path::new("/k")));
        assert_eq!(a.knownhosts_file, std::path::Path::new("/var/lib/duct/known_hosts"));
        assert!(!a.accept_new);
        let b = p.sources[1].settings().remote.clone().expect("remote");
        assert_eq!(
            (b.port, b.username.as_deref(), b.password.as_deref()),
            (22, Some("root"), Some("pw"))
        );
        assert!(b.accept_new);
        assert_eq!(b.knownhosts_file, std::path::Path::new("/kh"));
        assert!(!format!("{b:?}").contains("pw"), "no secrets in Debug");
        assert!(p.sources[2].settings().remote.is_none());
    }

    #[test]
    fn use_ssh_is_refused_where_it_cannot_work() {
        let err =
            plan_text("sources:\n  - {service: a, source: duct.sources.test.Panics, use_ssh: true, ssh_host: h}\n")
                .err()
                .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("sources[0].use_ssh: `duct.sources.test.Panics` cannot run over SSH"),
            "{text}"
        );
        assert!(text.contains("sources that can: Test"), "{text}");
        let err = plan_text("sources:\n  - {service: a, source: duct.sources.test.Test, use_ssh: true}\n")
            .err()
            .unwrap();
        assert!(err.to_string().contains("needs `ssh_host`"), "{err}");
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
    fn durations_are_checked_for_range_at_their_key() {
        let err = plan_text("sources:\n  - service: a\n    source: duct.sources.test.Test\n    interval: 1e20\n")
            .err()
            .unwrap();
        let e = err.errors().next().unwrap();
        assert!(
            e.message.contains("sources[0].interval: 1e20 seconds is too long"),
            "{}",
            e.message
        );
        let m = e.mark.as_ref().unwrap();
        assert_eq!((m.line, m.col), (4, 15));
        for (key, value) in [("timeout", "1e12"), ("start_delay", "4e7"), ("ttl", "1e30")] {
            let err = plan_text(&format!(
                "sources:\n  - {{service: a, source: duct.sources.test.Test, {key}: {value}}}\n"
            ))
            .err()
            .unwrap_or_else(|| panic!("{key}: {value} accepted"));
            assert!(err.to_string().contains(&format!("sources[0].{key}: ")), "{err}");
        }
    }

    #[test]
    fn an_interval_below_the_floor_is_raised_with_a_warning() {
        let p = plan_text("sources:\n  - {service: a, source: duct.sources.test.Test, interval: 1e-9}\n").unwrap();
        assert_eq!(p.sources[0].settings().interval, 0.001);
        assert_eq!(
            p.sources[0].settings().timeout,
            0.001,
            "timeout defaults to the interval used"
        );
        assert!(
            p.warnings
                .iter()
                .any(|w| w.message.contains("sources[0].interval: 1e-9 seconds is shorter")),
            "{:?}",
            p.warnings
        );
        let p = plan_text("interval: 1e-6\nsources:\n  - {service: a, source: duct.sources.test.Test}\n").unwrap();
        assert_eq!(p.sources[0].settings().interval, 0.001);
        assert!(
            p.warnings.iter().any(|w| w.message.starts_with("interval: ")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn a_constructor_that_panics_is_an_error_of_its_block() {
        let err = plan_text(
            "sources:\n  - {service: a, source: duct.sources.test.Panics}\n  - {service: b, source: duct.sources.test.Test, level: -1}\n",
        )
        .err()
        .unwrap();
        let messages: Vec<&str> = err.errors().map(|d| d.message.as_str()).collect();
        assert!(
            messages[0].starts_with("sources[0]: the constructor panicked (index out of bounds)"),
            "{messages:?}"
        );
        assert!(
            messages[1].starts_with("sources[1].level"),
            "the others are still planned: {messages:?}"
        );
    }
}
