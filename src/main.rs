//! `ductd`: the agent with its built-in sources and outputs.

// Events are allocated by the thread that decodes or produces them and
// freed by the output's thread once delivered. Profiled under load, glibc's
// malloc spent half the agent's CPU on that pattern (arena locking,
// `malloc_consolidate`); mimalloc's thread-local free lists do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ductd::run(ductd::builtin_registry())
}
