//! The one event path: ring buffers → decode → enrich (process cache) → sinks.

pub mod cache;
pub mod event;
pub mod run;
pub mod sink;
pub mod text;

pub use event::{decode, DecodeError, Event, Header, Payload};
