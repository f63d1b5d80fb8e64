//! The engine: what a pipeline is made of and how it runs. It knows no stage kind, no
//! provider and no store; everything above builds on it.

pub mod bus; // the per-call telemetry bus (lossy broadcast: nothing that steers a call)
pub mod edge; // ring ends typed by format, a task's inlet, the control lane
pub mod format; // what an edge carries (formats, caps) and sample/duration arithmetic
pub mod frame; // Frame (what moves on an edge), Event, Control (the out-of-band lane)
pub mod graph; // Graph::compile: inputs, cycles, formats per edge, fusion into tasks, rings
pub mod pipeline; // Pipeline: one running call (tasks, supervisor, bus, control lane)
pub mod registry; // StageKind and the Registry of kinds
pub mod ring; // Ring: bounded lock-free SPSC queue with block / drop_oldest / drop_newest
pub mod spec; // PipelineSpec: the TOML file parsed, with file:line for every problem
pub mod stage; // Stage, TaskStage, Output, and the errors of each phase
