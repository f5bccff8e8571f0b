//! `ductd-examples`: ductd with the seed guide's sources compiled in. This
//! is all it takes to build your own ductd with extra sources.

fn main() -> std::process::ExitCode {
    let mut registry = ductd::builtin_registry();
    duct_examples::register(&mut registry);
    ductd::run(registry)
}
