//! The examples of Duct's guide to writing sources (`seed/sources.rst`),
//! written as ductd Rust sources. Each is registered under the name the
//! guide gives it, or a name in the same spirit, and has a configuration in
//! `config/examples/seed/`:
//!
//! | name | guide section |
//! |---|---|
//! | `hello.HelloWorld` | "Hello world": one `ok` event |
//! | `hello.FlipFlop` | state kept between ticks |
//! | `hello.Several` | returning a list of events |
//! | `hello.Background` | returning nothing and calling `queue_back` |
//! | `hello.ProcessCount` | running a process with `fork` |
//! | `hello.NumberProxy` | thinking outside the box: a listener |
//!
//! A source is a struct implementing [`duct_core::Source`], a `spec()`
//! naming it and saying how to build it from its configuration block, and
//! one `registry.add_source(spec())` before `ductd::run`.

pub mod background;
pub mod hello;
pub mod number_proxy;
pub mod process_count;

use duct_core::Registry;

/// Adds every example source to `registry`.
pub fn register(registry: &mut Registry) {
    registry
        .add_source(hello::hello_world())
        .add_source(hello::flip_flop())
        .add_source(hello::several())
        .add_source(background::spec())
        .add_source(process_count::spec())
        .add_source(number_proxy::spec());
}
