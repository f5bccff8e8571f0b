//! A registry with one test source and one test output, shared by the
//! planning tests.

use serde::Deserialize;

use super::{plan, Plan};
use crate::config::{Config, Diagnostics};
use crate::output::Output;
use crate::output::{Batch, OutputError};
use crate::registry::{OutputSpec, Registry, SourceSpec};
use crate::source::Source;
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
    r.add_source(
        SourceSpec::new::<TestOptions>("duct.sources.test.Test", "test", &[], |args| {
            let o: TestOptions = args.options()?;
            if o.level < 0 {
                return Err(args.invalid("level", "must not be negative"));
            }
            Ok(Box::new(TestSource))
        })
        .over_ssh(),
    );
    r.add_source(SourceSpec::new::<crate::registry::NoOptions>(
        "duct.sources.test.Panics",
        "a constructor with a bug",
        &[],
        |_| panic!("index out of bounds"),
    ));
    r.add_output(OutputSpec::new::<crate::registry::NoOptions>(
        "duct.outputs.test.Test",
        "test",
        false,
        |_| Ok(Box::new(TestOutput)),
    ));
    r
}

pub(super) fn plan_text(text: &str) -> Result<Plan, Diagnostics> {
    let config = Config::read_embedded(text, &|_| None)?;
    plan(&config, &registry(), "machine")
}

pub(super) const OUTPUTS: &str = "outputs:\n  - {output: duct.outputs.test.Test, name: a}\n  - {output: duct.outputs.test.Test, name: b}\n  - {output: duct.outputs.test.Test}\n";
