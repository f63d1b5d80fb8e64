//! Stage kinds that exist only to test the engine: registered by [`super::registry`], never by
//! `call::registry()`, so `caly serve` and `caly pipeline check` refuse a pipeline naming one.

pub mod fail_after;
pub mod hang_up;
pub mod offer_tools;
pub mod say_lines;
pub mod slow_sink;
pub mod turn_model;
