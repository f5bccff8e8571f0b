//! The configuration loader: YAML text through `${VAR}` interpolation,
//! includes, blueprints and the legacy output into a configuration, then
//! planned against every built-in source and output, as `ductd check`
//! does.
#![no_main]

use std::sync::LazyLock;

use duct_core::config::Config;
use duct_core::{plan, Registry};
use libfuzzer_sys::fuzz_target;

static REGISTRY: LazyLock<Registry> = LazyLock::new(ductd::builtin_registry);

/// Two variables set, any other unset (`${VAR:-default}` applies).
fn env(name: &str) -> Option<String> {
    match name {
        "HOST" => Some("fuzz-host".into()),
        "PORT" => Some("5555".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::read_embedded(text, &env) {
        let _ = plan::plan(&config, &REGISTRY, "fuzz-host");
    }
});
