//! `duct.outputs.null.Null`: accepts and discards everything (benchmarks,
//! and sources kept only for their side effects).

use duct_core::{Batch, BoxFuture, NoOptions, Output, OutputArgs, OutputError, OutputSpec};

pub fn spec() -> OutputSpec {
    OutputSpec::new::<NoOptions>("duct.outputs.null.Null", "Discards every event", false, build)
}

fn build(_: &OutputArgs<'_>) -> Result<Box<dyn Output>, duct_core::config::Diagnostic> {
    Ok(Box::new(Null))
}

pub struct Null;

impl Output for Null {
    fn send<'a>(&'a mut self, _: &'a Batch) -> BoxFuture<'a, Result<(), OutputError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}
