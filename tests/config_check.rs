//! `ductd check` against configurations that are wrong in many places at
//! once, or hostile: every problem is reported, each with its position,
//! and no configuration can make `check` run away with time or memory.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ductd, TempDir};

/// How long `check` may take on any of these files: hostile ones used to
/// run for minutes, so the run is killed rather than waited for.
const CHECK_DEADLINE: Duration = Duration::from_secs(20);

/// Runs `ductd check` on `text` within [`CHECK_DEADLINE`]: (exit code,
/// stdout, stderr).
fn check(tag: &str, text: &str) -> (i32, String, String) {
    let dir = TempDir::new(tag);
    let path = dir.write("duct.yml", text);
    let mut child = ductd(&["check", "-c", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ductd");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let readers = (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ductd") {
            break status;
        }
        if started.elapsed() > CHECK_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{tag}: ductd check still running after {CHECK_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (readers.0.join().unwrap(), readers.1.join().unwrap());
    (status.code().unwrap_or(-1), out, err)
}

/// Runs `ductd check` on `text`; asserts it is refused and returns stderr.
fn refused(tag: &str, text: &str) -> String {
    let (code, _, err) = check(tag, text);
    assert_eq!(code, 1, "{tag} should be refused; stderr:\n{err}");
    err
}

#[test]
fn check_reports_every_problem_in_every_block() {
    let err = refused(
        "every-problem",
        "\
ttl: soon
outputs:
  - output: duct.outputs.null.Null
    name: riemann
sources:
  - service: a
    source: duct.sources.generator.Function
    critical:
      a: \"> 1 and\"
    route: [riemann, nope]
  - service: web
    source: duct.sources.network.HTTP
    url: \"ftp://example.com/\"
  - service: web2
    source: duct.sources.network.HTTP
    interval: often
    url: \"gopher://example.com/\"
",
    );
    for expected in [
        ":1:6: ttl: expected a number",
        ":9:18: sources[0].critical.a: bad expression `> 1 and`",
        ":10:22: sources[0].route: no output is named `nope`",
        ":13:10: sources[1].url: `ftp://example.com/` is not an http:// or https:// URL",
        ":16:15: sources[2].interval: expected a number",
        ":17:10: sources[2].url: `gopher://example.com/`",
        "6 error(s)",
    ] {
        assert!(err.contains(expected), "`{expected}` missing from:\n{err}");
    }
}

#[test]
fn an_alias_bomb_is_refused_at_the_alias_that_goes_too_far() {
    // 500 bytes that alias expansion would make 9^9 values.
    let mut text = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_string();
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let err = refused("alias-bomb", &text);
    assert!(
        err.contains(":6:10: invalid YAML: aliases expand to more than 100000 copied values"),
        "{err}"
    );
}

#[test]
fn nesting_thousands_deep_is_refused_not_a_crash() {
    let text: String = (0..3000).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
    let err = refused("deep", &text);
    assert!(
        err.contains(":65:130: invalid YAML: lists and maps are nested more than 64 levels deep"),
        "{err}"
    );
}

#[test]
fn a_blueprint_of_ten_to_the_ten_sources_is_refused_before_expanding() {
    let mut text = "\
outputs:
  - output: duct.outputs.null.Null
toolbox:
  t:
    sources:
      - {service: s, source: duct.sources.generator.Function}
blueprint:
  - toolbox: t
    sets:
"
    .to_string();
    for k in 0..10 {
        text.push_str(&format!("      k{k}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"));
    }
    let err = refused("blueprint-bomb", &text);
    assert!(
        err.contains(":9:5: blueprint[0]: expands to 10000000000 sources"),
        "{err}"
    );
    assert!(err.contains("more than max_sources (100000)"), "{err}");
}

#[test]
fn durations_out_of_range_are_refused_and_tiny_intervals_raised() {
    let source = |interval: &str| {
        format!(
            "outputs:\n  - output: duct.outputs.null.Null\nsources:\n  - service: a\n    source: duct.sources.generator.Function\n    interval: {interval}\n"
        )
    };
    // Passed check and then panicked converting it to a Duration at start.
    let err = refused("interval-huge", &source("1e20"));
    assert!(
        err.contains(":6:15: sources[0].interval: 1e20 seconds is too long: at most 31536000 (365 days)"),
        "{err}"
    );
    let (code, out, err) = check("interval-tiny", &source("1e-9"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 warnings"), "{out}");
    assert!(
        err.contains(
            ":6:15: warning: sources[0].interval: 1e-9 seconds is shorter than the shortest interval, 0.001 s; using 0.001 s"
        ),
        "{err}"
    );
}

#[test]
fn dangling_symlinks_in_an_include_directory_warn() {
    let dir = TempDir::new("include-dangling");
    std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("conf.d/gone.yml"), dir.path().join("conf.d/web.yml")).unwrap();
    let path = dir.write(
        "duct.yml",
        "include: conf.d\noutputs:\n  - output: duct.outputs.null.Null\n",
    );
    let (code, out, err) = common::ductd_output(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 warnings"), "{out}");
    assert!(err.contains(":1:10: warning: cannot follow "), "{err}");
    assert!(err.contains("conf.d/web.yml (No such file or directory"), "{err}");
    let (code, _, _) = common::ductd_output(&["check", "--strict", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "--strict refuses it");
}

#[test]
fn nested_defaults_are_expanded() {
    let dir = TempDir::new("nested-defaults");
    let path = dir.write(
        "duct.yml",
        "sources:\n  - service: wave\n    source: duct.sources.generator.Function\n    hostname: ${DUCT_TEST_NODE:-${DUCT_TEST_HOST:-fallback}}\n    ttl: ${DUCT_TEST_UNSET:-${DUCT_TEST_UNSET2:-30}}\n",
    );
    let once = |vars: &[(&str, &str)]| {
        let mut cmd = ductd(&["once", "-c", path.to_str().unwrap()]);
        cmd.env_remove("DUCT_TEST_NODE").env_remove("DUCT_TEST_HOST");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let ev = once(&[("DUCT_TEST_HOST", "host-7")]);
    assert_eq!(ev["host"], "host-7");
    assert_eq!(ev["ttl"], 30.0);
    assert_eq!(once(&[])["host"], "fallback");
    assert_eq!(once(&[("DUCT_TEST_NODE", "n"), ("DUCT_TEST_HOST", "h")])["host"], "n");
}

#[test]
fn a_refused_reload_logs_its_warnings_as_warnings() {
    let dir = TempDir::new("reload-levels");
    let good = "outputs:\n  - output: duct.outputs.null.Null\nsources:\n  - service: a\n    source: duct.sources.generator.Function\n";
    let path = dir.write("duct.yml", good);
    let agent = common::Running::start(&["-c", path.to_str().unwrap()]);
    assert!(
        agent.wait_for_log("starting ductd", Duration::from_secs(10)),
        "{}",
        agent.stderr()
    );
    // One error (a bad interval) and one warning (an unknown option).
    let bad = good.replace(
        "generator.Function\n",
        "generator.Function\n    interval: -1\n    fucntion: x\n",
    );
    std::fs::write(&path, bad).unwrap();
    agent.signal(libc::SIGHUP);
    assert!(
        agent.wait_for_log("reload refused", Duration::from_secs(10)),
        "{}",
        agent.stderr()
    );
    let log = agent.stderr();
    let line_of = |text: &str| {
        log.lines()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no `{text}` in:\n{log}"))
            .to_string()
    };
    let warning = line_of("unknown option `fucntion`");
    assert!(warning.contains(" WARN ") && !warning.contains("ERROR"), "{warning}");
    assert!(line_of("sources[0].interval: must be a positive").contains("ERROR"));
    let (code, _) = agent.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[test]
fn a_kinds_own_durations_are_range_checked_too() {
    // Each of these made `ductd check` itself panic in Duration::from_secs_f64.
    let err = refused(
        "kind-durations",
        "\
outputs:
  - output: duct.outputs.riemann.RiemannTCP
    server: localhost
    ack_timeout: 1e20
sources:
  - service: p
    source: duct.sources.network.Ping
    destination: localhost
    count: 1
    timeout: 1e20
  - service: r
    source: duct.sources.riemann.RiemannTCP
    idle_timeout: 1e20
  - service: n
    source: duct.sources.network.NumberProxy
    first_message_timeout: 1e19
",
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.matches("sources[0].timeout").count(), 1, "said once: {err}");
    for expected in [
        ":4:18: outputs[0].ack_timeout: 1e20 seconds is too long",
        ":10:14: sources[0].timeout: 1e20 seconds is too long",
        ":13:19: sources[1].idle_timeout: 1e20 seconds is too long",
        ":16:28: sources[2].first_message_timeout: 1e19 seconds is too long",
    ] {
        assert!(err.contains(expected), "`{expected}` missing from:\n{err}");
    }
}
