//! A source's rules, read from their nodes so that every problem keeps its
//! position: `attributes`, `warning`/`critical` triggers and `route`.

use super::PlanContext;
use crate::config::{did_you_mean, Block, Diagnostic, Diagnostics, Node, Style, Value};
use crate::expr::Trigger;
use crate::pipeline::{Route, TriggerRule};

pub(super) fn read_attributes(block: &Block, diags: &mut Diagnostics) -> Option<Vec<(String, String)>> {
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
pub(super) fn read_triggers(block: &Block, key: &str, diags: &mut Diagnostics) -> Option<Vec<TriggerRule>> {
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
pub(super) fn read_route(block: &Block, ctx: &PlanContext<'_>, diags: &mut Diagnostics) -> Option<Route> {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{plan_text, OUTPUTS};
    use crate::pipeline::Route;

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
}
