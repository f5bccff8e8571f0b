//! ductd's built-in sources, one module per family, each registered under
//! Duct's dotted name so that an existing `duct.yml` runs unchanged.

pub mod accept;
pub mod agent;
pub mod exec;
#[doc(hidden)]
pub mod fuzzing;
pub mod generator;
pub mod lines;
pub mod linux;
pub mod logs;
pub mod nats;
pub mod network;
pub mod number_proxy;
pub mod riemann;
pub mod services;
pub mod sflow;
pub mod snmp;

use duct_core::Registry;

/// Adds every built-in source to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source(generator::spec());
    registry.add_source(agent::spec());
    linux::register(registry);
    registry.add_source(number_proxy::spec());
    registry.set_plugins(exec::plugins());
    registry.add_source(nats::spec());
    registry.add_source(riemann::spec());
    registry.add_source(riemann::udp::spec());
    network::register(registry);
    services::register(registry);
    logs::register(registry);
    snmp::register(registry);
    sflow::register(registry);
}

#[cfg(test)]
pub(crate) mod testing {
    //! A context for calling a source's `get` directly in unit tests.

    use std::sync::{Arc, Mutex};

    use duct_core::{Event, EventSink, SourceContext, SourceSettings, Telemetry};

    #[derive(Default)]
    pub struct Collect(pub Mutex<Vec<Event>>);

    impl EventSink for Collect {
        fn publish(&self, events: Vec<Event>) {
            self.0.lock().unwrap().extend(events);
        }
    }

    pub fn context(service: &str) -> (SourceContext, Arc<Collect>) {
        let sink = Arc::new(Collect::default());
        let ctx = SourceContext::new(
            Arc::new(SourceSettings::for_service(service, "test-host")),
            sink.clone(),
            Telemetry::new(),
        );
        (ctx, sink)
    }
}
