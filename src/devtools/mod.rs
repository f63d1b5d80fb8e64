//! Product tools that stand in for the outside world, always labelled as such: the offline
//! Realtime simulator, `caly simulate` (acts as Exotel), `caly replay`, and the signal
//! generators and WAV I/O they use. Production call paths never reach them.

pub mod realtime_sim;
pub mod replay;
pub mod signal;
pub mod simulate;
pub mod wav;
