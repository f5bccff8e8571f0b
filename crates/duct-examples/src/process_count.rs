//! `hello.ProcessCount`: the guide's asynchronous example — run `/bin/ps
//! -e` with `fork` and count the lines it prints (the header line included,
//! as the guide's code counted it). `fork` kills the process past its
//! timeout; the tick never blocks the thread.

use std::time::Duration;

use duct_core::config::Diagnostic;
use duct_core::{NoOptions, Poll, Source, SourceArgs, SourceContext, SourceSpec};

pub struct ProcessCount;

impl Source for ProcessCount {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        Box::pin(async move {
            let out = ctx.fork("/bin/ps", &["-e"], Duration::from_secs(10)).await?;
            let count = out.stdout.trim_end_matches('\n').split('\n').count();
            Ok(vec![ctx.create_event("ok", format!("Process count {count}"), count)])
        })
    }
}

pub fn spec() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "hello.ProcessCount",
        "Counts the lines of `/bin/ps -e`, run with fork",
        &["(service): number of lines `ps -e` prints"],
        |_: &SourceArgs<'_>| -> Result<Box<dyn Source>, Diagnostic> { Ok(Box::new(ProcessCount)) },
    )
}
