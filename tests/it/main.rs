//! The one integration test binary: real pipelines, real rings, real sockets on 127.0.0.1.

// Test helpers outside `#[test]` functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod actions;
mod agents;
mod alloc;
mod backpressure;
mod console;
mod conversation;
mod exotel;
mod faults;
mod fuzz_inputs;
mod helpers;
mod isolation;
mod leak;
mod limits;
mod observability;
mod pipelines;
mod privacy;
mod realtime;
mod records;
mod replay;
mod serve;
mod shopify;
mod vad_accuracy;
