//! Product tools that stand in for the outside world, always labelled as such: the offline
//! Realtime simulator, the demo store (acts as Shopify), `caly simulate` (acts as Exotel),
//! `caly replay`, and the signal generators and WAV I/O they use. Production call paths never
//! reach them: `caly serve` starts the simulator and the demo store only when the real
//! service is not configured, and says so.

pub mod demo_store;
pub mod realtime_sim;
pub mod replay;
pub mod signal;
pub mod simulate;
pub mod wav;
