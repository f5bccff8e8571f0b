//! The command line as a user meets it: `check`, `once`, `list`,
//! `--version`, and the errors a broken `duct.yml` gets.

mod common;

use common::{ductd_output, TempDir};

const VALID: &str = "\
interval: 1.0
outputs:
  - output: duct.outputs.logger.Logger
    name: log
sources:
  - service: wave
    source: duct.sources.generator.Function
    function: sin(x) + 1
    route: log
    critical:
      wave: \"> 1.5\"
";

#[test]
fn version_and_help() {
    let (code, out, _) = ductd_output(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ductd "), "{out}");
    let (code, out, _) = ductd_output(&["--help"]);
    assert_eq!(code, 0);
    for word in ["check", "once", "list", "--config"] {
        assert!(out.contains(word), "help lacks {word}: {out}");
    }
}

#[test]
fn bad_usage_exits_2() {
    let (code, _, err) = ductd_output(&["frobnicate"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = ductd_output(&["check", "--no-such-flag"]);
    assert_eq!(code, 2);
}

#[test]
fn check_accepts_a_valid_file_and_the_embedded_default() {
    let dir = TempDir::new("check-ok");
    let path = dir.write("duct.yml", VALID);
    let (code, out, err) = ductd_output(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok (1 sources, 1 outputs)"), "{out}");
    let (code, out, err) = ductd_output(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("<embedded default>: ok"), "{out}");
}

/// Checks `text` and returns stderr, asserting exit 1.
fn rejected(tag: &str, text: &str) -> String {
    let dir = TempDir::new(tag);
    let path = dir.write("duct.yml", text);
    let (code, _, err) = ductd_output(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{tag} should be refused; stderr:\n{err}");
    let prefix = format!("{}:", path.display());
    assert!(err.contains(&prefix), "{tag}: no file position in:\n{err}");
    err
}

#[test]
fn check_rejects_bad_yaml_with_its_position() {
    let err = rejected("yaml", "sources:\n  - service: a\n    source: [unclosed\n");
    assert!(err.contains("invalid YAML"), "{err}");
}

#[test]
fn check_rejects_a_wrong_type_naming_key_line_and_column() {
    let err = rejected(
        "type",
        "sources:\n  - service: a\n    source: duct.sources.generator.Function\n    interval: often\n",
    );
    assert!(
        err.contains(":4:15: sources[0].interval: expected a number, found `often`"),
        "{err}"
    );
    // The offending line is shown with a caret under the value.
    assert!(err.contains("4 |     interval: often"), "{err}");
    assert!(err.contains("  |               ^"), "{err}");
}

#[test]
fn check_rejects_an_unknown_source_with_a_suggestion() {
    let err = rejected(
        "unknown",
        "sources:\n  - service: a\n    source: duct.sources.generator.Fucntion\n",
    );
    assert!(
        err.contains(":3:13: sources[0].source: unknown source `duct.sources.generator.Fucntion`"),
        "{err}"
    );
    assert!(err.contains("did you mean `duct.sources.generator.Function`?"), "{err}");
}

#[test]
fn check_rejects_a_bad_regex_and_a_bad_expression() {
    let err = rejected(
        "triggers",
        "sources:\n  - service: a\n    source: duct.sources.generator.Function\n    critical:\n      \"a(\": \"> 1\"\n    warning:\n      a: \"> 1 and\"\n",
    );
    assert!(
        err.contains(":5:7: sources[0].critical: `a(` is not a valid regular expression"),
        "{err}"
    );
    assert!(err.contains("sources[0].warning.a: bad expression `> 1 and`"), "{err}");
    assert!(err.contains("2 error(s)"), "{err}");
}

#[test]
fn check_rejects_a_route_to_a_missing_output() {
    let err = rejected(
        "route",
        "outputs:\n  - output: duct.outputs.null.Null\n    name: riemann\nsources:\n  - service: a\n    source: duct.sources.generator.Function\n    route: [riemann, reimann2]\n",
    );
    assert!(
        err.contains(":7:22: sources[0].route: no output is named `reimann2`"),
        "{err}"
    );
}

#[test]
fn unknown_options_warn_and_fail_only_under_strict() {
    let dir = TempDir::new("strict");
    let path = dir.write(
        "duct.yml",
        "outputs:\n  - output: duct.outputs.null.Null\nsources:\n  - service: a\n    source: duct.sources.generator.Function\n    fucntion: x\n",
    );
    let p = path.to_str().unwrap();
    let (code, out, err) = ductd_output(&["check", "-c", p]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 warnings"), "{out}");
    assert!(err.contains("warning: sources[0]: unknown option `fucntion`"), "{err}");
    assert!(err.contains("did you mean `function`?"), "{err}");
    let (code, _, err) = ductd_output(&["check", "--strict", "-c", p]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = rejected(
        "many",
        "ttl: soon\nsources:\n  - service: a\n    source: nope\n  - service: b\n    source: duct.sources.generator.Function\n    interval: -1\n",
    );
    assert!(err.contains("ttl: expected a number"), "{err}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, _, err) = ductd_output(&["check", "-c", "/nonexistent/duct.yml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read configuration file /nonexistent/duct.yml"),
        "{err}"
    );
}

#[test]
fn once_prints_events_as_json_lines_with_states() {
    let dir = TempDir::new("once");
    let path = dir.write(
        "duct.yml",
        "sources:\n  - service: high\n    source: duct.sources.generator.Function\n    function: x * 10\n    critical: {high: \"> 0.5\"}\n    tags: \"a, b\"\n    attributes: {rack: 12}\n",
    );
    let (code, out, err) = ductd_output(&["once", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{out}");
    let ev = &lines[0];
    assert_eq!(ev["service"], "high");
    assert_eq!(ev["state"], "critical");
    assert_eq!(ev["metric"], 1.0);
    assert_eq!(ev["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(ev["attributes"], serde_json::json!({"rack": "12"}));
    assert!(ev["host"].as_str().is_some_and(|h| !h.is_empty()));
}

/// Duct's Function source is Python: `abs(-5)` is an `int`, and so is `x`
/// with an integer `dx`; `x / 2` and the default float `dx` give floats.
#[test]
fn function_results_keep_pythons_integer_type() {
    let dir = TempDir::new("once-int");
    let block = |service: &str, function: &str, dx: &str| {
        format!("  - service: {service}\n    source: duct.sources.generator.Function\n    function: {function}\n{dx}")
    };
    let config = [
        "sources:\n".to_string(),
        block("abs", "abs(-5)", ""),
        block("counter", "x * 2", "    dx: 1\n"),
        block("half", "x / 2", "    dx: 1\n"),
        block("float step", "x * 2", "    dx: 1.0\n"),
        block("floored", "floor(x * 10)", ""),
    ]
    .concat();
    let path = dir.write("duct.yml", &config);
    let (code, out, err) = ductd_output(&["once", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let metric = |service: &str| -> String {
        let line = out
            .lines()
            .find(|l| l.contains(&format!(r#""service":"{service}""#)))
            .unwrap_or_else(|| panic!("no {service} in {out}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["metric"].to_string()
    };
    assert_eq!(metric("abs"), "5");
    assert_eq!(metric("counter"), "2");
    assert_eq!(metric("half"), "0.5");
    assert_eq!(metric("float step"), "2.0");
    assert_eq!(metric("floored"), "1");
}

#[test]
fn once_exits_3_when_a_source_fails() {
    let dir = TempDir::new("once-fail");
    let path = dir.write(
        "duct.yml",
        "sources:\n  - service: bad\n    source: duct.sources.generator.Function\n    function: log(x - 0.1)\n  - service: good\n    source: duct.sources.generator.Function\n",
    );
    let (code, out, err) = ductd_output(&["once", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("bad (duct.sources.generator.Function): failed"), "{err}");
    assert!(
        out.contains(r#""service":"good""#),
        "the other source still reports: {out}"
    );
}

#[test]
fn list_names_sources_outputs_and_options() {
    let (code, out, _) = ductd_output(&["list"]);
    assert_eq!(code, 0);
    for needle in [
        "duct.sources.generator.Function",
        "options: function, dx",
        "duct.sources.Duct",
        "duct.outputs.logger.Logger",
        "options: logfile",
        "duct.outputs.null.Null",
        "Common source options: service, source, interval",
    ] {
        assert!(out.contains(needle), "list lacks {needle}:\n{out}");
    }
}

#[test]
fn environment_variables_fill_values() {
    let dir = TempDir::new("env");
    let path = dir.write(
        "duct.yml",
        "sources:\n  - service: wave\n    source: duct.sources.generator.Function\n    hostname: ${DUCT_TEST_NODE}\n    ttl: ${DUCT_TEST_TTL:-30}\n",
    );
    let out = common::ductd(&["once", "-c", path.to_str().unwrap()])
        .env("DUCT_TEST_NODE", "node-42")
        .output()
        .unwrap();
    assert!(out.status.success());
    let ev: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ev["host"], "node-42");
    assert_eq!(ev["ttl"], 30.0);
    let (code, _, err) = ductd_output(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("environment variable DUCT_TEST_NODE is not set"), "{err}");
}
