//! `ductd check` against configurations that are wrong in many places at
//! once, or hostile: every problem is reported, each with its position,
//! and no configuration can make `check` run away with time or memory.

mod common;

use common::{ductd_output, TempDir};

/// Runs `ductd check` on `text`; asserts it is refused and returns stderr.
fn refused(tag: &str, text: &str) -> String {
    let dir = TempDir::new(tag);
    let path = dir.write("duct.yml", text);
    let (code, _, err) = ductd_output(&["check", "-c", path.to_str().unwrap()]);
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
