//! The guide's first sources: a constant, a value that remembers the last
//! one, and several events at once.

use duct_core::config::Diagnostic;
use duct_core::{NoOptions, Poll, Source, SourceArgs, SourceContext, SourceSpec};

/// `hello.HelloWorld`: every tick, `ok`, "Hello world!", 0.
pub struct HelloWorld;

impl Source for HelloWorld {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        let event = ctx.create_event("ok", "Hello world!", 0);
        Box::pin(std::future::ready(Ok(vec![event])))
    }
}

pub fn hello_world() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "hello.HelloWorld",
        "The guide's hello world: ok, \"Hello world!\", 0",
        &["(service): always 0"],
        |_: &SourceArgs<'_>| -> Result<Box<dyn Source>, Diagnostic> { Ok(Box::new(HelloWorld)) },
    )
}

/// `hello.FlipFlop`: 1.0, 0.0, 1.0, … — the state lives in the struct.
pub struct FlipFlop {
    bit: bool,
}

impl Source for FlipFlop {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        self.bit = !self.bit;
        let value = if self.bit { 0.0 } else { 1.0 };
        Box::pin(std::future::ready(Ok(vec![ctx.create_event(
            "ok",
            "Hello world!",
            value,
        )])))
    }
}

pub fn flip_flop() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "hello.FlipFlop",
        "The guide's flip-flop: alternates 0.0 and 1.0 from state kept between ticks",
        &["(service): 0.0 and 1.0 in turn"],
        |_: &SourceArgs<'_>| -> Result<Box<dyn Source>, Diagnostic> { Ok(Box::new(FlipFlop { bit: false })) },
    )
}

/// `hello.Several`: a list of events from one tick, each under its own
/// service suffix.
pub struct Several;

impl Source for Several {
    fn get<'a>(&'a mut self, ctx: &'a SourceContext) -> Poll<'a> {
        let events = ["one", "two", "three"]
            .iter()
            .zip(1..)
            .map(|(name, n)| ctx.create_event_prefixed(name, "ok", format!("Number {name}"), n))
            .collect();
        Box::pin(std::future::ready(Ok(events)))
    }
}

pub fn several() -> SourceSpec {
    SourceSpec::new::<NoOptions>(
        "hello.Several",
        "Returns a list of events: (service).one, .two, .three = 1, 2, 3",
        &["(service).one, (service).two, (service).three"],
        |_: &SourceArgs<'_>| -> Result<Box<dyn Source>, Diagnostic> { Ok(Box::new(Several)) },
    )
}
