//! The one event path: ring buffers → decode → enrich (process cache) → detect → sinks.

pub mod cache;
pub mod detect;
pub mod drain;
pub mod event;
pub mod process_json;
pub mod run;
pub mod sink;
pub mod table;

pub use event::{decode, DecodeError, Event, Header, Payload};
