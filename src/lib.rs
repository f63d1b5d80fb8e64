//! Caly: a real-time voice-agent engine. Each phone call runs as a stream graph defined in TOML.
//!
//! The crate map, one line per module:

pub mod backoff; // exponential backoff with jitter, for every retry loop
pub mod codec; // G.711 tables and Opus (pure-Rust by default, system libopus behind `libopus`)
pub mod format; // what an edge carries (formats, caps) and sample/duration arithmetic
pub mod frame; // Frame (what moves on an edge), Event, Control (the out-of-band lane)
pub mod fuzzing; // entry points of the fuzz targets (fuzz/) and their regression test
pub mod graph; // Graph::compile: inputs, cycles, formats per edge, fusion into tasks, rings
pub mod intent; // caller transcripts → intent, confidence and entities (Hindi, Hinglish, English)
pub mod logging; // log format (JSON or text) and the one place phone numbers and transcripts are redacted
pub mod metrics; // the server's counters, rendered at /metrics
pub mod pipeline; // Pipeline: one running call (tasks, supervisor, bus, control lane)
pub mod registry; // StageKind, Registry, and the compliance tests every kind gets
pub mod replay; // `caly replay`: a WAV or an Exotel capture offline through a pipeline
pub mod ring; // Ring: bounded lock-free SPSC queue with block / drop_oldest / drop_newest
pub mod simulate; // `caly simulate`: a load generator that acts as Exotel
pub mod spec; // PipelineSpec: the TOML file parsed, with file:line for every problem
pub mod stage; // Stage, TaskStage, Output, and the errors of each phase
pub mod stages; // every built-in stage kind: the `stages!` list
pub mod telephony; // provider wire formats (Exotel AgentStream)
pub mod testing; // signal generators, WAV I/O, a single-stage Harness

pub mod agents; // store actions per call: orchestrator, confirmation, idempotency
pub mod app; // `caly serve`: build, run and shut down the HTTP server
pub mod http; // the HTTP edges: health, metrics, the Exotel stream
pub mod settings; // process settings from flags and environment
pub mod shopify; // the store: Shopify GraphQL Admin client (throttle, retries, breaker) and a fake
pub mod store; // call records: SQLite or PostgreSQL, the write-behind recorder, API keys
