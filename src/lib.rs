//! Caly: a real-time voice-agent engine. Each phone call runs as a stream graph defined in TOML.
//!
//! The crate map, lowest layer first; a module imports only from modules above it in this list
//! (CI checks there are no cycles):

pub mod app; // `caly serve`: build, run and shut down the HTTP server
pub mod backoff; // exponential backoff with jitter, for every retry loop
pub mod call; // the call controller: barge-in, the turn ledger, the call's record and end
pub mod codec; // G.711 tables and Opus (pure-Rust by default, system libopus behind `libopus`)
pub mod commerce; // agents (one catalog, the guarded action path) and shop/ (Shopify GraphQL client)
pub mod devtools; // labelled offline tools: the Realtime simulator, `caly simulate`, `caly replay`, signals
pub mod engine; // frames, formats, specs, rings, the registry, graphs and pipelines: knows no stage
pub mod http; // the HTTP edges: health, metrics, the Exotel stream, webhooks, REST
pub mod intent; // caller transcripts → intent, confidence and entities (Hindi, Hinglish, English)
pub mod logging; // log format (JSON or text) and the one place phone numbers and transcripts are redacted
pub mod metrics; // the server's counters, rendered at /metrics
pub mod settings; // process settings from flags and environment
pub mod stages; // every built-in stage kind: the `stages!` list
pub mod store; // call records: SQLite or PostgreSQL, the write-behind recorder, API keys
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod transport; // telephony providers: Exotel AgentStream
pub mod vocab; // the words every layer shares: intents, entities, agent names, action statuses, phone numbers // test-only: the single-stage Harness, test stage kinds, a fake Shopify, fuzz entry points
