//! ductd's actors: a [`SourceActor`](source_actor::SourceActor)
//! per source ticking on its timer, a [`Router`](router::Router) shard per
//! worker thread that aggregates, triggers and routes, and an
//! [`OutputActor`](output_actor::OutputActor) per output that queues,
//! batches and retries. [`Agent`] starts them from a plan, reloads and shuts
//! them down; [`once::run_once`] runs sources once without actors.

pub mod agent;
pub mod disk_buffer;
pub mod guard;
pub mod once;
pub mod output_actor;
pub mod router;
pub mod sink;
pub mod source_actor;

pub use agent::{Agent, Probe, ReloadSummary};
