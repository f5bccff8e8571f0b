//! `ductd`: the agent with its built-in sources and outputs.

fn main() -> std::process::ExitCode {
    ductd::run(ductd::builtin_registry())
}
