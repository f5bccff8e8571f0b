//! The heart of ductd, with no actor runtime: the event model, configuration
//! loading and planning, trigger expressions, aggregators, and the traits
//! that sources and outputs implement.

pub mod civil;
pub mod config;
pub mod event;
pub mod expr;
pub mod host;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod registry;
pub mod source;
pub mod telemetry;
pub mod throttle;

pub use event::{Aggregation, Event, EventKind, Metric};
pub use output::{Batch, EventQueue, Output, OutputError, Receipt, StoredAt};
pub use plan::{OutputSettings, Plan, SourceSettings};
pub use registry::{NoOptions, OutputArgs, OutputSpec, Registry, SourceArgs, SourceSpec};
pub use source::{
    BoxFuture, EventSink, ForkOutput, IntoMetric, Poll, Schedule, Source, SourceContext, SourceError, Workers,
};
pub use telemetry::{OutputStats, Telemetry};
